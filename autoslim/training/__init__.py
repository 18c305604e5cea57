"""Training: the one loop and what runs in it.

- :mod:`~autoslim.training.trainer`: the one training loop (run directory, resume, checkpoints, stops);
- :mod:`~autoslim.training.sandwich`: the sandwich-rule step and subnet sampling;
- :mod:`~autoslim.training.optim`: the optimizer and learning-rate schedules;
- :mod:`~autoslim.training.calibrate`: BatchNorm recalibration and evaluation;
- :mod:`~autoslim.training.settings`: ``TrainSettings``, resolved from a space's recipe;
- :mod:`~autoslim.training.supernet_training`: ``train_supernet`` (the train-supernet command's library half);
- :mod:`~autoslim.training.retraining`: ``retrain``, with :mod:`~autoslim.training.retrain_setup` (its settings,
  configs and networks) and :mod:`~autoslim.training.joint` (several configs trained as one network).
"""

from .settings import (TrainSettings, resolve_settings, load_settings, save_settings, settings_from_dict, RUNTIME_KEYS,
                       IDENTITY_KEYS, SCHEDULES, space_reference, recipe_settings, FULL_RUN_EPOCHS)
from .optim import WarmupCosine, OneCycle, lr_factor, build_optimizer
from .sandwich import subnet_rng, sandwich_configs, distillation_loss, sandwich_step, train_step
from .calibrate import recalibrate, evaluate, batchnorm_layers
from .trainer import DivergedError, Report, RunKind, open_run, check_settings, Trainer, OUTPUTS
from .supernet_training import train_supernet, TrainResult
from .retrain_setup import (BASELINES, RetrainSettings, resolve_retrain, load_configs, build_network, uniform_baseline,
                            read_retrained, load_retrained)
from .retraining import RetrainResult, retrain
from .joint import SwitchableBatchNorm2d, JointNetwork

__all__ = ["TrainSettings", "resolve_settings", "load_settings", "save_settings", "settings_from_dict", "RUNTIME_KEYS",
           "IDENTITY_KEYS", "SCHEDULES", "space_reference", "recipe_settings", "FULL_RUN_EPOCHS", "WarmupCosine", "OneCycle", "lr_factor", "build_optimizer",
           "subnet_rng", "sandwich_configs", "distillation_loss", "sandwich_step", "train_step", "recalibrate",
           "evaluate", "batchnorm_layers", "DivergedError", "Report", "RunKind", "open_run", "check_settings",
           "Trainer", "OUTPUTS", "train_supernet", "TrainResult", "BASELINES", "RetrainSettings", "resolve_retrain",
           "load_configs", "build_network", "uniform_baseline", "read_retrained", "load_retrained", "RetrainResult",
           "retrain", "SwitchableBatchNorm2d", "JointNetwork"]

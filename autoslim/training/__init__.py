"""Training: the one loop and what runs in it.

- :mod:`~autoslim.training.trainer`: the one training loop (run directory, resume, checkpoints, stops);
- :mod:`~autoslim.training.sandwich`: the sandwich-rule step and subnet sampling;
- :mod:`~autoslim.training.optim`: the optimizer and learning-rate schedules;
- :mod:`~autoslim.training.calibrate`: BatchNorm recalibration and evaluation;
- :mod:`~autoslim.training.settings`: ``TrainSettings``, resolved from a space's recipe;
- :mod:`~autoslim.training.supernet_training`: ``train_supernet`` (the train-supernet command's library half);
- :mod:`~autoslim.training.retraining`: ``retrain``, with :mod:`~autoslim.training.retrain_setup` (its settings,
  configs and networks) and :mod:`~autoslim.training.joint` (several configs trained as one network);
- :mod:`~autoslim.training.warm_start`: starting from trained weights (a supernet from a trained network, a
  network sliced from a supernet).

Names are imported from their modules on first use, so that reading a space's recipe
(:mod:`~autoslim.training.settings`) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainSettings": "settings",
    "resolve_settings": "settings",
    "load_settings": "settings",
    "save_settings": "settings",
    "settings_from_dict": "settings",
    "RUNTIME_KEYS": "settings",
    "IDENTITY_KEYS": "settings",
    "SCHEDULES": "settings",
    "space_reference": "settings",
    "recipe_settings": "settings",
    "FULL_RUN_EPOCHS": "settings",
    "FINE_TUNE_FRACTION": "settings",
    "FINE_TUNE_LR_SCALE": "settings",
    "WarmupCosine": "optim",
    "OneCycle": "optim",
    "lr_factor": "optim",
    "build_optimizer": "optim",
    "subnet_rng": "sandwich",
    "sandwich_configs": "sandwich",
    "distillation_loss": "sandwich",
    "sandwich_step": "sandwich",
    "train_step": "sandwich",
    "recalibrate": "calibrate",
    "evaluate": "calibrate",
    "batchnorm_layers": "calibrate",
    "DivergedError": "trainer",
    "Report": "trainer",
    "RunKind": "trainer",
    "open_run": "trainer",
    "check_settings": "trainer",
    "Trainer": "trainer",
    "OUTPUTS": "trainer",
    "train_supernet": "supernet_training",
    "TrainResult": "supernet_training",
    "BASELINES": "retrain_setup",
    "supernet_run": "retrain_setup",
    "RetrainSettings": "retrain_setup",
    "resolve_retrain": "retrain_setup",
    "load_configs": "retrain_setup",
    "build_network": "retrain_setup",
    "uniform_baseline": "retrain_setup",
    "read_retrained": "retrain_setup",
    "load_retrained": "retrain_setup",
    "RetrainResult": "retraining",
    "retrain": "retraining",
    "SwitchableBatchNorm2d": "joint",
    "JointNetwork": "joint",
    "supernet_from_weights": "warm_start",
    "sliced_network": "warm_start",
    "check_init": "warm_start",
    "describe_init": "warm_start",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'autoslim.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value

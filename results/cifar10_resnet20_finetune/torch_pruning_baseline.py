"""The Torch-Pruning baseline of results/cifar10_resnet20_finetune (issue 21, part 4).

Prunes the trained network of a retrain directory (``--base``, the base stage's 1.0x ResNet-20) with Torch-Pruning
(the ``torch-pruning`` package: installed for this comparison only, not an autoslim dependency) to the MACs of an
AutoSlim pick, then fine-tunes it exactly as that pick was fine-tuned, and writes ``OUT/summary.json``.

    python torch_pruning_baseline.py --base RUNS/base/seed0 --like RUNS/finetune/flops-20M/seed0 \\
        --importance magnitude --out RUNS/torchpruning/magnitude/flops-20M/seed0

- The pick (``--like``: a finished ``autoslim retrain CONFIG --init supernet`` directory) gives the target, its MACs,
  and every fine-tuning setting: its ``run.yaml`` settings are used as they are (epochs, batch size, SGD with
  Nesterov momentum, the learning rate, schedule and warm-up, weight decay on conv and linear weights only, label
  smoothing, the seed and the data split), and the loop, data order and augmentation are autoslim's
  (:class:`autoslim.training.trainer.Trainer`, the loop of ``retrain``).
- Pruning: ``tp.pruner.MetaPruner`` with global ranking over every conv layer (``--scope local``: the same ratio
  in every layer) and the classifier's outputs kept,
  ``pruning_ratio=1.0`` reached linearly over ``--steps`` steps; it steps until the network has at most the pick's
  MACs. Importance ``magnitude`` is ``tp.importance.MagnitudeImportance(p=1)`` (L1 norm of the weights);
  ``taylor`` is ``tp.importance.TaylorImportance()`` on the gradients of ``--taylor-batches`` training batches,
  recomputed before every step (the network changes at each).
- MACs are counted with ``torch.utils.flop_counter.FlopCounterMode`` divided by two (one MAC of a conv or linear
  layer is two FLOPs); the script checks first that this gives autoslim's own count (``autoslim cost``, the MACs of
  conv and linear layers) on the unpruned network, so the pruned network's MACs compare with the pick's.
- After pruning, BatchNorm is recalibrated on training batches as ``retrain --init supernet`` does for a slice of
  the supernet (``calib_batches`` batches), and the pruned network's test accuracy is recorded (``init_accuracy``).

The summary holds accuracy, loss, MACs, params, the channels left in every conv, the pruning and fine-tuning
seconds (``prune_seconds``, ``seconds``) and their sum (``wall_seconds``). A finished OUT is left alone; an
interrupted one resumes from its last epoch (the pruned network is saved as ``pruned.pt`` before fine-tuning).
"""

from __future__ import annotations

import argparse
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="retrain directory of the trained network to prune")
    parser.add_argument("--like", required=True, help="finished `retrain --init supernet` directory of the AutoSlim "
                        "pick: its MACs are the target and its settings the fine-tune's")
    parser.add_argument("--importance", required=True, choices=["magnitude", "taylor"])
    parser.add_argument("--out", required=True, help="directory of this run")
    parser.add_argument("--scope", choices=["global", "local"], default="global", help="global (default): rank "
                        "every conv layer's channels together; local: prune every layer by the same ratio")
    parser.add_argument("--steps", type=int, default=200, help="iterative steps to a pruning ratio of 1.0 (default "
                        "200: each removes about 0.5%% of the channels)")
    parser.add_argument("--taylor-batches", type=int, default=4, help="training batches of gradients before each "
                        "Taylor step (default 4)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: the pick's)")
    parser.add_argument("--data-dir", help="where the pick's data lives now (default: as in its run)")
    args = parser.parse_args()
    try:
        import torch_pruning  # noqa: F401
    except ImportError:
        sys.exit("torch_pruning_baseline.py needs the torch-pruning package, which autoslim does not depend on: "
                 "pip install torch-pruning")
    run(args)


def run(args: argparse.Namespace) -> None:
    import json
    import math
    import time
    from dataclasses import replace
    from pathlib import Path

    import torch
    import torch.nn.functional as F
    import torch_pruning as tp
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    from autoslim.checkpoint import CHECKPOINT_NAME, read_state
    from autoslim.data.sources import load_dataset
    from autoslim.devices import resolve_device
    from autoslim.interrupt import StopRequest
    from autoslim.io import read_yaml, write_yaml
    from autoslim.seeds import derive_seed
    from autoslim.training.calibrate import evaluate, recalibrate
    from autoslim.training.retrain_setup import load_retrained
    from autoslim.training.retraining import METRIC_COLUMNS
    from autoslim.training.settings import settings_from_dict
    from autoslim.training.trainer import Trainer

    fmt = "autoslim-torch-pruning-baseline/1"
    base, like, out = Path(args.base).resolve(), Path(args.like).resolve(), Path(args.out)

    def fail(message: str) -> None:
        sys.exit(f"torch_pruning_baseline.py: {message}")

    def summary_of(path: Path) -> dict:
        if not (path / "summary.json").is_file():
            fail(f"{path} holds no summary.json: finish that run first")
        return json.loads((path / "summary.json").read_text())

    if (out / "summary.json").is_file() and json.loads((out / "summary.json").read_text()).get("finished"):
        print(f"{out}: finished already")
        return
    pick, base_summary = summary_of(like), summary_of(base)
    if not pick.get("finished") or not base_summary.get("finished"):
        fail(f"{like if not pick.get('finished') else base} is not finished: finish that run first")
    settings = settings_from_dict((read_yaml(like / "run.yaml") or {}).get("settings"), str(like / "run.yaml"))
    settings = replace(settings, init=str(base), **{key: value for key, value in
                                                    (("device", args.device), ("data_dir", args.data_dir)) if value})
    target = int(pick["macs"])
    importance_name = {"magnitude": "MagnitudeImportance(p=1)", "taylor": "TaylorImportance()"}[args.importance]
    facts = {"method": "torch-pruning", "importance": args.importance, "importance_class": importance_name,
             "scope": args.scope, "iterative_steps": args.steps,
             "taylor_batches": args.taylor_batches if args.importance == "taylor" else None,
             "target_macs": target, "like": str(like), "base": str(base), "base_accuracy": base_summary["accuracy"],
             "base_macs": base_summary["macs"], "base_params": base_summary["params"],
             "macs_counter": "FlopCounterMode / 2 (equal to autoslim's count on the base network, checked)",
             "torch_pruning": getattr(tp, "__version__", "unknown")}

    device = resolve_device(settings.device)
    data = load_dataset(settings.dataset, data_dir=settings.data_dir, seed=settings.seed,
                        search_size=settings.search_size)
    example = torch.zeros(1, data.in_channels, data.image_size, data.image_size, device=device)

    def cost(model: nn.Module) -> tuple[int, int]:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            training = model.training
            model.eval()
            model(example)
            model.train(training)
        return counter.get_total_flops() // 2, sum(p.numel() for p in model.parameters())

    def test(model: nn.Module) -> tuple[float, float]:
        size = min(settings.eval_batch_size, len(data.test))
        return evaluate(model, data.batches("test", size, device=device))

    checkpoint, pruned_path = out / CHECKPOINT_NAME, out / "pruned.pt"
    state = None
    if checkpoint.is_file() and pruned_path.is_file():  # an interrupted fine-tune: the same pruned network
        state = read_state(checkpoint, fmt, "Torch-Pruning baseline")
        saved = settings_from_dict(state["settings"], str(checkpoint))
        differences = saved.differences(settings)
        keys = ("importance", "scope", "target_macs", "base", "iterative_steps")
        if differences or {k: state["facts"].get(k) for k in keys} != {k: facts[k] for k in keys}:
            fail(f"{out} holds another run ({differences or 'other pruning'}): use another --out or remove it")
        model = torch.load(pruned_path, map_location=device, weights_only=False)
        facts = state["facts"]
    else:
        started = time.perf_counter()
        model = load_retrained(base, device=device)
        if cost(model)[0] != base_summary["macs"]:
            fail(f"FlopCounterMode/2 counts {cost(model)[0]:,} MACs on {base}, autoslim {base_summary['macs']:,}: "
                 "the counts are not comparable")
        classifiers = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == data.num_classes]
        importance = tp.importance.MagnitudeImportance(p=1) if args.importance == "magnitude" \
            else tp.importance.TaylorImportance()
        pruner = tp.pruner.MetaPruner(model, example, importance=importance, pruning_ratio=1.0,
                                      iterative_steps=args.steps, global_pruning=args.scope == "global",
                                      ignored_layers=classifiers)
        gradient_batches = []
        if args.importance == "taylor":
            generator = torch.Generator().manual_seed(derive_seed("taylor", settings.seed))
            batches = data.batches("train", settings.batch_size, shuffle=True, generator=generator, device=device)
            gradient_batches = [batch for _, batch in zip(range(args.taylor_batches), batches)]
        steps, macs = 0, cost(model)[0]
        while macs > target:
            if steps == args.steps:
                fail(f"{args.steps} steps left {macs:,} MACs, more than the target {target:,}")
            if gradient_batches:
                model.eval()  # gradients of the trained network as it is: BatchNorm statistics untouched
                model.zero_grad(set_to_none=True)
                for images, labels in gradient_batches:
                    F.cross_entropy(model(images), labels).backward()
            pruner.step()
            steps += 1
            macs = cost(model)[0]
        model.zero_grad(set_to_none=True)
        generator = torch.Generator().manual_seed(derive_seed("calibration", settings.seed))
        size = min(settings.eval_batch_size, len(data.train))
        recalibrate(model, data.batches("train", size, shuffle=True, generator=generator, device=device),
                    settings.calib_batches)
        accuracy, loss = test(model)
        facts.update(prune_steps=steps, prune_seconds=round(time.perf_counter() - started, 2),
                     init_accuracy=round(accuracy, 6), init_loss=round(loss, 6),
                     channels={name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)})
        out.mkdir(parents=True, exist_ok=True)
        torch.save(model, pruned_path)
    macs, params = cost(model)
    facts.update(macs=macs, params=params)

    class PrunedFineTune(Trainer):
        """The pruned network's fine-tune: cross-entropy with the pick's label smoothing, a test after every epoch."""

        format, metric_columns, loss_count = fmt, METRIC_COLUMNS, 1
        what = "fine-tune of the pruned network"

        def __init__(self) -> None:
            super().__init__(settings, out, device, data)
            self.model = self.network = model.to(device)
            self._setup(self.model)
            self.evaluation: tuple[float, float] | None = None

        def train_step(self, images, labels):
            with self._autocast():
                loss = F.cross_entropy(self.model(images), labels, label_smoothing=self.settings.label_smoothing)
            loss.backward()
            return loss.detach().float().reshape(1)

        def evaluate(self) -> None:
            with self._autocast():
                accuracy, loss = test(self.model)
            if not math.isfinite(loss):
                self._diverged(f"test loss {loss}")
            self.evaluation = (round(accuracy, 6), round(loss, 6))
            self.rows.append({"step": self.step, "epoch": self.epoch + 1, "kind": "eval", "network": "pruned",
                              "test_accuracy": self.evaluation[0], "test_loss": self.evaluation[1],
                              "seconds": round(self._elapsed(), 2)})

        def epoch_values(self):
            return {"pruned": self.evaluation[0]}

        def log_losses(self, losses):
            return [{"network": "pruned", "loss": round(losses[0], 5)}], {"loss": losses[0]}

        def checkpoint_fields(self):
            return {"facts": facts, "split": data.split_info(),
                    "evaluation": None if self.evaluation is None else list(self.evaluation)}

        def restore(self, state) -> None:
            if state["split"] != data.split_info():
                fail(f"{checkpoint}: the data splits differently now; remove {out} to start over")
            self._restore_training(state)
            self.evaluation = tuple(state["evaluation"]) if state["evaluation"] else None

        def summary(self):
            accuracy, loss = self.evaluation or (None, None)
            progress = self._progress()
            return {**facts, "accuracy": accuracy, "loss": loss, "dataset": data.name, **progress,
                    "wall_seconds": round(facts["prune_seconds"] + progress["seconds"], 2), "lr": self.settings.lr,
                    "seed": self.settings.seed, "device": str(self.device), "checkpoint": CHECKPOINT_NAME}

        def write_run_yaml(self) -> None:
            write_yaml(out / "run.yaml", {"settings": self.settings.to_dict(), **{k: v for k, v in facts.items()
                                                                                  if k != "channels"}},
                       header="torch_pruning_baseline.py: the pruning and the fine-tune settings (the pick's)")

    trainer = PrunedFineTune()
    trainer.begin(state, force=False)
    with StopRequest() as stop:
        interrupted = trainer.run(stop)
    result = trainer.summary()
    if interrupted:
        sys.exit(f"{out}: interrupted after epoch {trainer.epoch}; run the same command again to resume")
    print(f"{args.importance}: {result['macs']:,} MACs (target {target:,}), {result['params']:,} params, "
          f"{result['init_accuracy']:.4f} pruned -> {result['accuracy']:.4f} after {result['epochs']} epochs, "
          f"{result['wall_seconds']:.0f} s; saved in {out}")


if __name__ == "__main__":
    main()

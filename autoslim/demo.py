"""The whole pipeline on the bundled digits data: supernet, search, export, retrain beside the uniform baseline.

:func:`run_demo` is what ``autoslim demo`` runs: it trains a ``digits_cnn`` supernet, searches it at three
budgets (the MACs of the uniform 1.0x, 0.75x and 0.5x networks, so each searched network is compared with
the standard network of that cost), exports each config with its standalone TorchScript model, and
retrains each searched network and its uniform baseline (the widest uniform network with no more MACs than
the searched one) from scratch with the same recipe and seed. Every
stage writes into its own folder under ``out`` and resumes when re-run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

__all__ = ["DemoResult", "run_demo", "DEMO_WIDTHS"]

DEMO_WIDTHS = (1.0, 0.75, 0.5)


@dataclass
class DemoResult:
    out: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    pareto: Optional[Path] = None
    seconds: dict[str, float] = field(default_factory=dict)


def run_demo(out_dir: str | os.PathLike, *, epochs: int = 30, retrain_epochs: int = 30, seed: int = 0,
             device: str = "cpu", stage: Optional[Callable[[str, str], None]] = None,
             train_callback: Optional[Callable[[Any], None]] = None,
             search_step: Optional[Callable[[Any], None]] = None,
             retrain_callback: Optional[Callable[[str, Any], None]] = None) -> DemoResult:
    """Run the pipeline into ``out_dir`` (``run/``, ``search/``, ``models/``, ``retrain/``).

    Args:
        out_dir: where everything goes; re-running resumes each stage.
        epochs: supernet epochs.
        retrain_epochs: epochs of each from-scratch retraining.
        seed: seed of everything.
        device: ``cpu``, ``cuda`` or ``auto``.
        stage: called with (stage name, description) as each stage starts.
        train_callback, search_step, retrain_callback: progress callbacks of the three stages.
    """
    import time

    from .budget import format_count, parse_budget
    from .export import export_search
    from .io import write_json
    from .training.retraining import resolve_retrain, retrain
    from .search.targets import Target
    from .training.settings import resolve_settings
    from .search.runner import SearchSettings, search_run
    from .spaces import build_supernet, load_space
    from .training.supernet_training import train_supernet

    out = Path(out_dir)
    result = DemoResult(out=out)
    space = load_space("digits_cnn")
    supernet = build_supernet(space)
    # budgets: the uniform networks' MACs to three significant digits (labels like flops-1.78M)
    targets = [Target("flops", parse_budget(format_count(supernet.cost(supernet.uniform_config(w)).macs)))
               for w in DEMO_WIDTHS]

    def timed(name: str, description: str, work: Callable[[], Any]) -> Any:
        if stage:
            stage(name, description)
        started = time.perf_counter()
        value = work()
        result.seconds[name] = round(time.perf_counter() - started, 1)
        return value

    settings = resolve_settings(space, epochs=epochs, seed=seed, device=device)
    timed("train-supernet", f"training the digits_cnn supernet for {epochs} epochs",
          lambda: train_supernet(settings, out / "run", callback=train_callback))
    search = timed("search", "greedy search at " + ", ".join(t.label for t in targets),
                   lambda: search_run(SearchSettings(run=str(out / "run"), targets=tuple(t.label for t in targets),
                                                     seed=seed, device=device),
                                      out / "search", targets, on_step=search_step))
    result.pareto = out / "search" / "pareto.png"

    def export_all() -> None:
        for target in targets:
            export_search(out / "search", target=target, model=out / "models" / f"{target.label}.pt",
                          force=True)

    timed("export", "exporting configs and TorchScript models", export_all)
    for width, target in zip(DEMO_WIDTHS, targets):
        config_path = out / "search" / "configs" / f"{target.label}.yaml"
        settings = resolve_retrain(config_path, baseline="uniform", epochs=retrain_epochs, seed=seed, device=device)
        callback = (lambda name, report, label=target.label: retrain_callback(f"{label} {name}", report)) \
            if retrain_callback else None
        trained = timed(f"retrain {target.label}", f"retraining {target.label} and the uniform network, "
                        f"{retrain_epochs} epochs each",
                        lambda: retrain(settings, out / "retrain" / target.label, callback=callback))
        summary, baseline = trained.summary, trained.baseline or {}
        pick = search.picks[target.label]
        result.rows.append({
            "budget": target.label, "budget_width": width, "uniform_width": baseline.get("width"),
            "searched_accuracy": summary.get("accuracy"), "searched_macs": pick.macs, "searched_params": pick.params,
            "uniform_accuracy": baseline.get("accuracy"), "uniform_macs": baseline.get("macs"),
            "uniform_params": baseline.get("params"),
        })
    write_json(out / "summary.json", {"rows": result.rows, "seconds": result.seconds, "epochs": epochs,
                                      "retrain_epochs": retrain_epochs, "seed": seed, "pareto": str(result.pareto)})
    return result

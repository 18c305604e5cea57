"""The whole pipeline on the bundled digits data: supernet, search, export, retrain beside the uniform baseline.

:func:`run_demo` is what ``autoslim demo`` runs: it trains a ``digits_tiny`` supernet, picks three budgets where
width matters on this data, searches them with the default criterion, exports each config with its standalone
TorchScript model, and retrains each searched network and its uniform baseline (the widest uniform network with
no more MACs) from scratch with the same recipe, for several seeds.

The space is ``digits_tiny``, the digits CNN at 0.5x as the supernet with channel choices in steps of 2: the
bundled digits are easy, and only at that size does width cost accuracy. The budgets are fixed by a rule, before
any network is retrained: the uniform networks the search can reach are scored on the held-out split by the
supernet (the search's scorer), and the budgets are the MACs of the widest ones whose held-out accuracy is 1, 3
and 6 points (:data:`DEMO_DROPS`) below the widest one's: budgets where a width multiplier starts to cost
accuracy, so that a better choice of widths can show. Every stage writes into
its own folder under ``out`` and resumes when re-run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

__all__ = ["DemoResult", "run_demo", "choose_budgets", "DEMO_DROPS", "DEMO_SEEDS"]

DEMO_DROPS = (1.0, 3.0, 6.0)
"""Held-out accuracy points below the uniform 1.0x network at which the uniform networks set the budgets."""
DEMO_SEEDS = (0, 1, 2)


@dataclass
class DemoResult:
    out: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    uniform: list[dict[str, Any]] = field(default_factory=list)
    pareto: Optional[Path] = None
    seconds: dict[str, float] = field(default_factory=dict)


def choose_budgets(scores: list[dict[str, Any]], drops: tuple[float, ...] = DEMO_DROPS) -> list[dict[str, Any]]:
    """The budgets of the demo: for each drop, the widest uniform network whose held-out accuracy is at least
    that many points below the widest one's (the narrowest one if none is).

    Args:
        scores: uniform networks the search can reach, widest first: ``width``, ``macs``, ``accuracy`` (held-out,
            in [0, 1]).
        drops: points of accuracy.

    Returns:
        One ``{drop, width, macs, accuracy}`` per drop, without repeats.
    """
    reference = scores[0]["accuracy"]
    chosen: list[dict[str, Any]] = []
    for drop in drops:
        pick = next((s for s in scores[1:] if s["accuracy"] <= reference - drop / 100), scores[-1])
        if all(c["macs"] != pick["macs"] for c in chosen):
            chosen.append({"drop": drop, **pick})
    return chosen


def run_demo(out_dir: str | os.PathLike, *, epochs: int = 30, retrain_epochs: int = 30, seeds: tuple[int, ...] = DEMO_SEEDS,
             device: str = "cpu", stage: Optional[Callable[[str, str], None]] = None,
             train_callback: Optional[Callable[[Any], None]] = None,
             search_step: Optional[Callable[[Any], None]] = None,
             retrain_callback: Optional[Callable[[str, Any], None]] = None) -> DemoResult:
    """Run the pipeline into ``out_dir`` (``run/``, ``search/``, ``models/``, ``retrain/``).

    Args:
        out_dir: where everything goes; re-running resumes each stage.
        epochs: supernet epochs.
        retrain_epochs: epochs of each from-scratch retraining.
        seeds: the retraining seeds (the supernet and the search use the first).
        device: ``cpu``, ``cuda`` or ``auto``.
        stage: called with (stage name, description) as each stage starts.
        train_callback, search_step, retrain_callback: progress callbacks of the three stages.
    """
    import statistics
    import time

    import torch

    from .budget import format_count, parse_budget
    from .checkpoint import load_run
    from .export import export_search
    from .io import write_json
    from .search.runner import SearchSettings, search_run
    from .search.sliced import SlicedScorer
    from .search.targets import Target
    from .spaces import load_space
    from .training.retraining import resolve_retrain, retrain
    from .training.settings import resolve_settings
    from .training.supernet_training import train_supernet

    out = Path(out_dir)
    result = DemoResult(out=out)
    space = load_space("digits_tiny")
    seed = seeds[0]

    def timed(name: str, description: str, work: Callable[[], Any]) -> Any:
        if stage:
            stage(name, description)
        started = time.perf_counter()
        value = work()
        result.seconds[name] = round(time.perf_counter() - started, 1)
        return value

    settings = resolve_settings(space, epochs=epochs, seed=seed, device=device)
    timed("train-supernet", f"training the {space.name} supernet for {epochs} epochs",
          lambda: train_supernet(settings, out / "run", callback=train_callback))

    def score_uniform() -> list[dict[str, Any]]:
        run = load_run(out / "run")
        data = run.load_data()
        images, labels = next(iter(data.batches("search", len(data.split("search")))))
        scorer = SlicedScorer(run.supernet, images, labels)
        supernet = run.supernet
        floor = supernet.cost(supernet.smallest_config()).macs
        rows, seen = [], set()
        with torch.no_grad():
            for step in range(20, 0, -1):  # the supernet's width, 19/20 of it, ..., 1/20 of it
                width = round(supernet.width_mult * step / 20, 6)
                config = supernet.uniform_config(width)
                key = tuple(sorted(config.items()))
                macs = supernet.cost(config).macs
                if key in seen or macs < floor:  # below the smallest config: the search cannot reach it
                    continue
                seen.add(key)
                score = scorer(config, [(None, config)])[0]
                rows.append({"width": width, "macs": macs, "accuracy": score.accuracy})
        return rows

    result.uniform = timed("budgets", "scoring the uniform widths on the held-out images", score_uniform)
    budgets = choose_budgets(result.uniform)
    # budgets as labels like flops-1.23M: the uniform network's MACs to three significant digits
    targets = [Target("flops", parse_budget(format_count(b["macs"]))) for b in budgets]
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
    for budget, target in zip(budgets, targets):
        config_path = out / "search" / "configs" / f"{target.label}.yaml"
        searched, uniform = [], []
        for run_seed in seeds:
            settings = resolve_retrain(config_path, baseline="uniform", epochs=retrain_epochs, seed=run_seed,
                                       device=device)
            label = f"{target.label} seed {run_seed}"
            callback = (lambda name, report, label=label: retrain_callback(f"{label} {name}", report)) \
                if retrain_callback else None
            trained = timed(f"retrain {label}", f"retraining {target.label} and the uniform network, seed {run_seed}, "
                            f"{retrain_epochs} epochs each",
                            lambda: retrain(settings, out / "retrain" / target.label / f"seed{run_seed}",
                                            callback=callback))
            searched.append(trained.summary)
            uniform.append(trained.baseline or {})
        pick = search.picks[target.label]

        def spread(runs: list[dict[str, Any]]) -> tuple[float, float]:
            values = [100 * r["accuracy"] for r in runs]
            return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

        (mean_s, sd_s), (mean_u, sd_u) = spread(searched), spread(uniform)
        result.rows.append({
            "budget": target.label, "uniform_drop": budget["drop"], "budget_width": budget["width"],
            "uniform_width": uniform[0].get("width"), "seeds": len(seeds),
            "searched_accuracy": [r["accuracy"] for r in searched], "uniform_accuracy": [r["accuracy"] for r in uniform],
            "searched_mean": round(mean_s, 2), "searched_sd": round(sd_s, 2),
            "uniform_mean": round(mean_u, 2), "uniform_sd": round(sd_u, 2),
            "searched_macs": pick.macs, "searched_params": pick.params,
            "uniform_macs": uniform[0].get("macs"), "uniform_params": uniform[0].get("params"),
        })
    write_json(out / "summary.json", {"rows": result.rows, "uniform": result.uniform, "seconds": result.seconds,
                                      "epochs": epochs, "retrain_epochs": retrain_epochs, "seeds": list(seeds),
                                      "drops": list(DEMO_DROPS), "pareto": str(result.pareto)})
    return result

"""The search command's library half: greedy slimming of a trained run into SEARCH/ (AutoSlim section 3.3).

:func:`search_run` reopens a supernet training run, draws the held-out search batch, runs
:func:`autoslim.search.greedy_search` with a :class:`autoslim.search.scoring.BatchScorer`, appends every step to
``trajectory.csv`` as it is made, and writes the products: ``pareto.csv``, ``pareto.png``, one config per
target in ``configs/``, ``run.yaml`` and ``summary.json``. Re-running into the same SEARCH continues the
trajectory where it stopped (targets may change between runs: the trajectory does not depend on them).

Latency targets (``--latency 3ms``) use the run's latency model on the settings' device, runtime, batch and threads
(:func:`autoslim.latency.latency_model`: cached in ``RUN/latency/``, measured on demand): every step records its
predicted latency, steps weigh the milliseconds they save, and every pick is measured as a whole network at the end.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from ..budget import format_count
from ..channel_config import ChannelConfig, save_config
from ..io import atomic_write, read_yaml, write_json, write_text, write_yaml
from ..network.supernet import UNIFORM_WIDTHS, Supernet, uniform_within, widest_uniform
from .greedy import CRITERIA, SIGNALS, Step, choice_leads, greedy_search
from .sliced import CONFIDENCE, INDIFFERENCE, SLICE_SIZE
from .targets import Limits, Target, check_targets, pick, stop_limits
from .trajectory import append_step, pareto_front, read_trajectory

__all__ = ["SearchSettings", "SearchResult", "search_run"]

_TRAJECTORY_KEYS = ("run", "criterion", "signal", "eval_batch", "slice_size", "confidence", "indifference",
                    "calibration_batches", "seed", "latency_model")
# what a search file without the key was made with: autoslim 0.x (no bound), then the bound without a zone
_BEFORE_1_0 = {"signal": "top1", "slice_size": None, "confidence": None, "indifference": 0.0}


@dataclass(frozen=True)
class SearchSettings:
    """What a search was run with (saved as SEARCH/run.yaml).

    Only the fields in ``_TRAJECTORY_KEYS`` decide the trajectory; targets and the rest may change when a
    search is resumed.

    Attributes:
        criterion: how a step is chosen (:data:`autoslim.search.CRITERIA`).
        signal: what ``drop-per-cost`` measures (:data:`autoslim.search.SIGNALS`).
        eval_batch: held-out images scored (None: all of the held-out split).
        slice_size: at most this many images per forward pass and per set of BatchNorm statistics
            (:class:`autoslim.search.sliced.SlicedScorer`); None scores them as one batch (the scorer of autoslim 0.x,
            which measures no KL divergence).
        confidence: standard errors of the bound that stops scoring candidates that cannot win (None: score
            every candidate on every image).
        indifference: with ``confidence``, also stop scoring a candidate that cannot beat the leader by more than
            this fraction of the leader's drop per unit saved (0: no zone).
        latency_device, runtime, latency_batch, threads: what latency targets are measured on
            (:class:`autoslim.latency.LatencyKey`).
        latency_networks: whole networks timed to fit a latency model measured for this search.
        latency_model: the latency model the trajectory was made with (:attr:`autoslim.latency.LatencyModel.identity`;
            set by :func:`search_run` when a target is a latency, None otherwise).
    """

    run: str
    targets: tuple[str, ...] = ()
    criterion: str = "drop-per-cost"
    signal: str = "kl"
    eval_batch: Optional[int] = None
    slice_size: Optional[int] = SLICE_SIZE
    confidence: Optional[float] = CONFIDENCE
    indifference: float = INDIFFERENCE
    calibration_batches: int = 0
    reuse: bool = True
    to_smallest: bool = False
    seed: int = 0
    device: str = "cpu"
    latency_device: str = "cpu"
    runtime: str = "torch"
    latency_batch: int = 1
    threads: int = 1
    latency_networks: int = 24
    latency_model: Optional[str] = None

    @property
    def latency_key(self):
        """The :class:`autoslim.latency.LatencyKey` of latency targets."""
        from ..latency.timing import LatencyKey

        return LatencyKey(self.latency_device, self.runtime, self.latency_batch, self.threads)

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise ValueError(f"unknown criterion {self.criterion!r}; choose one of {', '.join(CRITERIA)}")
        if self.signal not in SIGNALS:
            raise ValueError(f"unknown signal {self.signal!r}; choose one of {', '.join(SIGNALS)}")
        if self.eval_batch is not None and self.eval_batch < 1:
            raise ValueError(f"--eval-batch must be at least 1, got {self.eval_batch}")
        if self.slice_size is not None and self.slice_size < 1:
            raise ValueError(f"--slice must be at least 1, got {self.slice_size}")
        if self.confidence is not None and self.confidence <= 0:
            raise ValueError(f"the confidence bound must be positive, got {self.confidence}")
        if not 0 <= self.indifference < 1:
            raise ValueError(f"--indifference must be at least 0 and below 1, got {self.indifference}")
        if self.slice_size is None and self.criterion == "drop-per-cost" and self.signal == "kl":
            raise ValueError("the KL signal needs the sliced scorer: give a slice size, or --signal top1")
        if self.calibration_batches < 0:
            raise ValueError(f"--calibration-batches must be >= 0, got {self.calibration_batches}")
        self.latency_key  # validates the device, runtime, batch and threads
        if self.latency_networks < 3:
            raise ValueError(f"a latency model needs at least 3 whole networks, got {self.latency_networks}")


@dataclass
class SearchResult:
    """What a search produced."""

    out: Path
    steps: list[Step]
    picks: dict[str, Step]
    uniform: list[dict[str, Any]]
    baselines: dict[str, dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)
    work: dict[str, Any] = field(default_factory=dict)
    latency: Optional[dict[str, Any]] = None  # the latency model used: key, description, file, status
    measured: dict[str, dict[str, Any]] = field(default_factory=dict)  # per pick: predicted and measured latency


def search_run(settings: SearchSettings, out_dir: str | os.PathLike, targets: Sequence[Target], *,
               data_dir: Optional[str] = None, force: bool = False,
               on_start: Optional[Callable[[dict[str, Any]], None]] = None,
               on_step: Optional[Callable[[Step], None]] = None,
               on_latency: Optional[Callable[[int, int, str], None]] = None,
               latency_timer: Any = None) -> SearchResult:
    """Search the run ``settings.run`` and write SEARCH to ``out_dir``.

    Args:
        settings: what to search with.
        out_dir: the SEARCH directory; an existing one with the same trajectory settings is resumed.
        targets: budgets; each takes the first trajectory point meeting it.
        data_dir: where the run's data lives now (default: where it was during training).
        force: start over in an ``out_dir`` whose trajectory came from other settings.
        on_start: called once with ``largest``/``smallest``/``stop``/``resumed`` facts (for progress bars).
        on_step: called with every new step.
        on_latency: called as a latency model is measured (``done, total, what``).
        latency_timer: what measures latency (default: :func:`autoslim.latency.make_timer` of the settings' key).

    Raises:
        ValueError: unreachable targets (with the reachable range), a SEARCH of other settings without
            ``force``, bad settings.
        RuntimeError: a latency runtime whose packages are missing.
    """
    from ..checkpoint import load_run
    from ..devices import resolve_device
    from .sliced import SlicedScorer
    from .scoring import BatchScorer

    out = Path(out_dir)
    device = resolve_device(settings.device)
    run = load_run(settings.run, device=device)
    supernet = run.supernet
    largest, smallest = supernet.largest_config(), supernet.smallest_config()
    largest_cost, smallest_cost = supernet.cost(largest), supernet.cost(smallest)
    if not targets and not settings.to_smallest:
        raise ValueError("give at least one target (--flops 300M, --params 2M, --latency 3ms) or --to-smallest")
    check_targets([t for t in targets if t.kind != "latency"], largest=tuple(largest_cost),
                  smallest=tuple(smallest_cost))
    predict, timer, latency, model = None, None, None, None
    if any(t.kind == "latency" for t in targets):
        from ..latency import latency_model, make_timer

        key = settings.latency_key
        timer = latency_timer if latency_timer is not None else make_timer(key)
        found = latency_model(run.path, supernet, key, timer=timer, networks=settings.latency_networks,
                              seed=settings.seed, on_progress=on_latency)
        model = found.model
        predict = model.bind(supernet)
        settings = dataclasses.replace(settings, latency_model=model.identity)
        latency = {**key.to_dict(), "described": key.describe(), "description": model.description,
                   "model": str(found.path), "identity": model.identity, "status": found.status}
        largest_cost, smallest_cost = (*largest_cost, predict(largest)), (*smallest_cost, predict(smallest))
        check_targets([t for t in targets if t.kind == "latency"], largest=largest_cost, smallest=smallest_cost)
    history = _open_search(out, settings, largest, force=force)

    data = run.load_data(data_dir=data_dir)
    size = min(settings.eval_batch or len(data.split("search")), len(data.split("search")))
    images, labels = next(iter(data.batches("search", size, shuffle=False, augment=False, device=device)))
    calibration = None
    if settings.calibration_batches:
        generator = torch.Generator().manual_seed(settings.seed)
        batch = min(run.settings.batch_size, len(data.split("train")))
        calibration = [b for _, b in zip(range(settings.calibration_batches),
                                          data.batches("train", batch, shuffle=True, augment=False,
                                                       generator=generator, device=device))]
    if settings.slice_size is None:
        scorer = BatchScorer(supernet, images, labels, reuse=settings.reuse, calibration=calibration)
    else:
        scorer = SlicedScorer(supernet, images, labels, slice_size=settings.slice_size, confidence=settings.confidence,
                              indifference=settings.indifference,
                              reuse=settings.reuse, calibration=calibration)
    limits = Limits() if settings.to_smallest else stop_limits(targets)
    choices = {unit.name: unit.choices for unit in supernet.slimmable_units}

    def cost(config):
        found = supernet.cost(config)
        return (found.macs, found.params) if predict is None else (found.macs, found.params, predict(config))

    if on_start:
        on_start({"largest": supernet.cost(largest), "smallest": supernet.cost(smallest), "stop_macs": limits.macs,
                  "stop_params": limits.params, "stop_latency": limits.latency,
                  "latency": (largest_cost[2], smallest_cost[2]) if predict else None, "resumed": len(history),
                  "batch": size, "candidates": sum(len(c) > 1 for c in choices.values())})
    trajectory = out / "trajectory.csv"
    steps = list(history)
    started = time.perf_counter()
    for step in greedy_search(largest, choices, cost, scorer, criterion=settings.criterion, signal=settings.signal,
                              stop_macs=limits.macs, stop_params=limits.params, stop_latency=limits.latency,
                              history=history):
        append_step(trajectory, step)
        steps.append(step)
        if on_step:
            on_step(step)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        uniform = _score_uniform(supernet, scorer)
    picks = {target.label: pick(steps, target) for target in targets}
    baselines, baseline_configs = {}, {}
    for target in targets:
        if target.kind == "latency":
            found = widest_uniform(supernet, lambda config: predict(config) <= target.value)
        else:
            found = uniform_within(supernet, **({"macs": target.value} if target.kind == "flops"
                                                else {"params": target.value}))
        if found is not None:
            width, config = found
            with torch.no_grad():
                score = scorer(config, [(None, config)])[0]
            baselines[target.label] = {"width": width, **supernet.cost(config)._asdict(),
                                       "accuracy": score.accuracy, "loss": score.loss}
            baseline_configs[target.label] = config
    measured = {}
    if predict is not None:  # every pick and baseline timed together, in interleaved rounds, beside the full network
        from ..latency import measure_configs

        configs = [step.config for step in picks.values()] + list(baseline_configs.values()) + [largest]
        *timed, full = [{"predicted_ms": predict(config), "measured_ms": ms}
                        for config, ms in zip(configs, measure_configs(supernet, configs, timer))]
        measured = dict(zip(picks, timed))
        for label, measured_latency in zip(baseline_configs, timed[len(picks):]):
            baselines[label]["latency"] = measured_latency
        drift = model.drift(full["measured_ms"])
        latency["drift"] = drift.to_dict() if drift else None
    result = SearchResult(out=out, steps=steps, picks=picks, uniform=uniform, baselines=baselines,
                          work={"seconds": seconds, "macs_executed": scorer.macs_executed,
                                "layer_calls": scorer.layer_calls, "reuse": settings.reuse, "batch": size,
                                "slices": len(getattr(scorer, "slices", [None])),
                                "candidates_dropped": getattr(scorer, "dropped", None)},
                          latency=latency, measured=measured)
    _write_products(result, run, settings, targets)
    return result


def _open_search(out: Path, settings: SearchSettings, start: dict[str, int], *, force: bool) -> list[Step]:
    """Steps already made in ``out`` (resume), after checking they come from the same settings."""
    saved_path, trajectory = out / "run.yaml", out / "trajectory.csv"
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory")
    if trajectory.exists():
        saved = read_yaml(saved_path) if saved_path.exists() else {}
        before = {k: saved.get(k, _BEFORE_1_0.get(k)) for k in _TRAJECTORY_KEYS}
        now = {k: getattr(settings, k) for k in _TRAJECTORY_KEYS}
        for values in (before, now):  # without a bound, the zone decides nothing
            if values["confidence"] is None or values["slice_size"] is None:
                values["indifference"] = None
        mismatched = [k for k in _TRAJECTORY_KEYS if str(before[k]) != str(now[k])]
        if mismatched and not force:
            changes = ", ".join(f"{k}: {saved.get(k)!r} -> {getattr(settings, k)!r}" for k in mismatched)
            raise ValueError(f"{out} holds a search with other settings ({changes}); use another --out or --force")
        if mismatched:
            trajectory.unlink()
        else:
            return read_trajectory(trajectory, start, repair=True)
    write_yaml(saved_path, dataclasses.asdict(settings), header="autoslim search settings")
    return []


def _score_uniform(supernet: Supernet, scorer) -> list[dict[str, Any]]:
    """The family's uniform-width networks within the supernet, scored the same way as the trajectory."""
    rows = []
    for width in UNIFORM_WIDTHS:
        if width > supernet.width_mult + 1e-9:
            continue
        config = supernet.uniform_config(width)
        score = scorer(config, [(None, config)])[0]
        rows.append({"width": width, **supernet.cost(config)._asdict(), "accuracy": score.accuracy, "loss": score.loss})
    return rows


def _write_products(result: SearchResult, run, settings: SearchSettings, targets: Sequence[Target]) -> None:
    out = result.out
    by_latency = any(t.kind == "latency" for t in targets)
    front = pareto_front(result.steps, (lambda s: s.latency_ms) if by_latency else (lambda s: s.macs))
    lines = ["step,macs,params,accuracy,loss,latency_ms"] + [
        f"{s.step},{s.macs},{s.params},{s.accuracy!r},{s.loss!r},{'' if s.latency_ms is None else repr(s.latency_ms)}"
        for s in front]
    write_text(out / "pareto.csv", "\n".join(lines) + "\n")
    space_options = dict(run.space_options)
    summary: dict[str, Any] = {"run": settings.run, "space": run.space.name, "criterion": settings.criterion,
                               "signal": _signal_of(settings), "decided_by": _decided_by(settings, result.work),
                               "steps": len(result.steps) - 1, "targets": {}, "uniform": result.uniform,
                               "work": result.work}
    if settings.criterion == "accuracy":
        summary["choices"] = choice_leads(result.steps, result.work["batch"])
    if result.latency is not None:
        summary["latency"] = result.latency
    for target in targets:
        step = result.picks[target.label]
        path = out / "configs" / f"{target.label}.yaml"
        cost = {"macs": step.macs, "params": step.params, "input_size": space_options.get("input_size")}
        latency = None
        if target.label in result.measured:
            latency = {**result.measured[target.label], **{k: result.latency[k] for k in
                                                            ("device", "runtime", "batch", "threads", "description")}}
            if result.latency.get("drift"):
                latency["drift_ratio"] = result.latency["drift"]["ratio"]
            cost["latency"] = latency
        save_config(path, ChannelConfig(
            space=run.settings.space, channels=step.config, space_options=space_options, cost=cost,
            source={"search": str(out), "run": settings.run, "step": step.step,
                    "target": {target.kind: target.value}, "score": step.accuracy}))
        summary["targets"][target.label] = {"config": str(path.relative_to(out)), "step": step.step, "macs": step.macs,
                                            "params": step.params, "accuracy": step.accuracy, "loss": step.loss,
                                            "uniform": result.baselines.get(target.label)}
        if latency is not None:
            summary["targets"][target.label]["latency"] = result.measured[target.label]
    result.summary = summary
    write_json(out / "summary.json", summary)
    _plot(out / "pareto.png", result, front, run.space.name)


def _signal_of(settings: SearchSettings) -> str:
    """The held-out signal the criterion follows."""
    return "top1" if settings.criterion in ("accuracy", "drop-per-mac") else settings.signal


def _decided_by(settings: SearchSettings, work: dict[str, Any]) -> str:
    """One sentence: how every step of this search was chosen."""
    signal = {"top1": "top-1 accuracy", "kl": "KL divergence from the largest config", "ce": "cross-entropy"}[
        _signal_of(settings)]
    bn = ("BatchNorm recalibrated on training batches" if settings.calibration_batches else
          f"BatchNorm batch statistics per slice of {work['batch'] // max(1, work['slices'])} images"
          if settings.slice_size else "BatchNorm batch statistics of the whole batch")
    if settings.criterion == "accuracy":
        rule = f"the highest held-out {signal}, whatever the step saves (the paper's rule)"
    else:
        per = "MAC saved" if settings.criterion == "drop-per-mac" else "unit of the targeted cost saved"
        rule = f"the least held-out {signal} lost per {per}, steps that lose nothing first"
    bounded = settings.confidence and settings.slice_size and settings.criterion != "accuracy"
    zone = (f" or unable to beat it by more than {settings.indifference:.0%}" if settings.indifference else "")
    bound = (f"; candidates losing more per unit saved than the leader{zone}, by {settings.confidence:g} standard "
             "errors of their per-image difference, were not scored on the remaining slices" if bounded else "")
    return f"{settings.criterion}: {rule}, on {work['batch']:,} held-out images with {bn}{bound}"


def _plot(path: Path, result: SearchResult, front: list[Step], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    axes.plot([s.macs / 1e6 for s in result.steps], [s.accuracy for s in result.steps], ".-", color="0.6",
              lw=1, ms=3, label="greedy trajectory")
    axes.plot([s.macs / 1e6 for s in front], [s.accuracy for s in front], "o", color="tab:blue", ms=4,
              label="Pareto front")
    if result.uniform:
        axes.plot([u["macs"] / 1e6 for u in result.uniform], [u["accuracy"] for u in result.uniform], "s--",
                  color="tab:orange", label="uniform width")
        for u in result.uniform:
            axes.annotate(f"{u['width']:g}x", (u["macs"] / 1e6, u["accuracy"]), textcoords="offset points",
                          xytext=(4, -10), fontsize=7, color="tab:orange")
    for label, step in result.picks.items():
        axes.plot([step.macs / 1e6], [step.accuracy], "*", color="tab:red", ms=12)
        axes.annotate(f"{label}\n{format_count(step.macs)} MACs, {step.accuracy:.3f}", (step.macs / 1e6, step.accuracy),
                      textcoords="offset points", xytext=(6, 6), fontsize=7, color="tab:red")
    axes.set_xlabel("MACs (millions; conv and linear layers)")
    axes.set_ylabel("held-out accuracy (search batch, batch-stat BN)")
    axes.set_title(f"autoslim search: {title}")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    try:
        atomic_write(path, lambda stream: figure.savefig(stream, format="png"))
    finally:
        plt.close(figure)

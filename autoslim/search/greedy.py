"""Greedy channel search over a trained slimmable supernet (AutoSlim section 3.3).

Starting from the largest config, every step scores each unit shrunk by one choice, keeps the best
candidate and records it. One pass yields the whole trajectory (:mod:`autoslim.search.trajectory` writes it,
one CSV row per step, flushed as it is made, so a killed search resumes from where it stopped); every budget
(:mod:`autoslim.search.targets`) then takes the first trajectory point that meets it.

This module is pure logic: the evaluator and the cost function are callables, so the search is tested
with fake evaluators and no data, and the model code lives elsewhere.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, NamedTuple, Optional, Sequence, Tuple

__all__ = ["CRITERIA", "SIGNALS", "Cost", "Evaluator", "Ranking", "Score", "Step", "choice_leads", "criterion_key",
           "greedy_search", "greedy_slim", "signal_value"]

CRITERIA = ("drop-per-cost", "accuracy", "drop-per-mac")
"""How a step is chosen: ``drop-per-cost`` (the default: the signal lost per unit of the targeted cost saved),
``accuracy`` (the paper's rule: the highest held-out accuracy, whatever the step saves) and ``drop-per-mac``
(top-1 lost per MAC saved, whatever the target: the rule of autoslim 0.x searches, kept so that they resume)."""
SIGNALS = ("kl", "top1", "ce")
"""What ``drop-per-cost`` measures on the held-out images: ``kl`` (the KL divergence from the largest config's
predictions, the default), ``top1`` (accuracy) or ``ce`` (cross-entropy with the labels)."""


@dataclass(frozen=True)
class Score:
    """What an evaluator returns for one config.

    Attributes:
        accuracy: top-1 accuracy on the search batch, in [0, 1].
        loss: mean cross-entropy on the same batch (breaks accuracy ties).
        kl: mean KL divergence from the largest config's predictions on the same images (None if not measured).
        complete: False when the evaluator stopped scoring this candidate early because it could not win
            (:class:`autoslim.search.scoring.SlicedScorer`); its figures are then those of the images it saw, and the
            search never picks it before a complete one.
    """

    accuracy: float
    loss: float
    kl: Optional[float] = None
    complete: bool = True


@dataclass(frozen=True)
class Step:
    """One point of the trajectory (one row of ``trajectory.csv``).

    Two steps compare equal when everything but their wall time matches.

    Attributes:
        step: 0 for the start (largest) config, then 1, 2, ...
        unit: the unit shrunk at this step (``None`` for step 0).
        channels: its new count (``None`` for step 0).
        macs: multiply-accumulates of the config after the step.
        params: parameters of the config after the step.
        accuracy: its accuracy.
        loss: its loss.
        score: the criterion value that chose it (the accuracy for ``accuracy``, the signal lost per unit of
            cost saved for ``drop-per-cost`` and ``drop-per-mac``, negative for a step that gains; 0 for step 0).
        candidates: how many candidates were scored at this step.
        seconds: wall time of this step.
        config: the full config (unit name -> count) after the step.
        runner_up: the criterion value of the second-best candidate (``None`` for step 0, a single
            candidate, or a trajectory written before it was recorded). Under ``accuracy`` the lead
            ``score - runner_up`` times the batch size is the number of held-out images the choice turned on.
        kl: the KL divergence from the largest config's predictions (``None`` if not measured).
        latency_ms: the predicted latency of the config (``None`` when the search had no latency model).
    """

    step: int
    unit: Optional[str]
    channels: Optional[int]
    macs: int
    params: int
    accuracy: float
    loss: float
    score: float
    candidates: int
    seconds: float = field(compare=False)
    config: dict[str, int] = field(hash=False)
    runner_up: Optional[float] = None
    kl: Optional[float] = None
    latency_ms: Optional[float] = None


Cost = Callable[[Mapping[str, int]], Tuple[float, ...]]
"""``cost(config) -> (macs, params)``, or ``(macs, params, latency_ms)`` when the search weighs latency."""

Evaluator = Callable[[Mapping[str, int], Sequence[Tuple[Optional[str], Mapping[str, int]]]], Sequence[Score]]
"""``evaluate(current, [(unit, candidate), ...]) -> [Score, ...]``, one score per candidate, same order.

All candidates of a step come at once, each with the unit it changes, so that an evaluator can reuse
the activations a candidate shares with the current network (everything upstream of that unit). For
step 0 the search calls ``evaluate(start, [(None, start)])``.
"""


class Ranking(NamedTuple):
    """What decides a ``drop-per-cost`` step, passed to an evaluator that sets ``accepts_ranking = True`` as a third
    argument, so that it can stop scoring candidates that cannot win (:class:`autoslim.search.sliced.SlicedScorer`).

    Attributes:
        signal: the signal lost (one of :data:`SIGNALS`).
        saved: the targeted cost each candidate saves, in the order of the candidates.
    """

    signal: str
    saved: tuple[float, ...]


def greedy_search(
    start: Mapping[str, int],
    choices: Mapping[str, Sequence[int]],
    cost: Cost,
    evaluate: Evaluator,
    *,
    criterion: str = "drop-per-cost",
    signal: str = "kl",
    stop_macs: Optional[int] = None,
    stop_params: Optional[int] = None,
    stop_latency: Optional[float] = None,
    history: Sequence[Step] = (),
) -> Iterator[Step]:
    """Shrink the network one unit by one choice at a time, yielding every step as it is made.

    At each step every unit whose count is above its smallest choice gives one candidate: that unit at
    the next lower choice. Candidates that do not reduce the targeted cost are skipped. The targeted cost is the
    first of latency, MACs and parameters whose limit is given and not yet met (MACs when no limit is given).
    Under a latency limit, when no candidate lowers the predicted latency (a latency model need not fall with
    every channel removed), the candidates that lower MACs are kept instead, so that the search goes on; they
    rank as saving nothing. The remaining candidates are scored together and the best is kept:

    - ``drop-per-cost``: the ``signal`` lost per unit of the targeted cost saved (:func:`criterion_key`): steps
      that lose nothing first, the one saving the most first (a ratio would prefer the smallest saving among
      free steps); then the smallest loss per unit saved; then lowest cross-entropy, then unit order;
    - ``accuracy`` (the paper's rule): highest accuracy, then lowest loss, then unit order (the order of ``start``);
    - ``drop-per-mac``: as ``drop-per-cost`` with ``signal='top1'``, always per MAC saved.

    A candidate the evaluator did not score completely (:attr:`Score.complete` False) is never kept before a
    complete one.

    The search stops once the current config meets every limit given (``macs <= stop_macs``,
    ``params <= stop_params`` and ``latency <= stop_latency``), when no unit can shrink, or when no candidate
    reduces the targeted cost. With no limit it runs to the smallest config.

    Args:
        start: the largest config, unit name -> count, in unit order.
        choices: unit name -> its allowed counts. Units absent from it, or with a single choice, are
            never changed.
        cost: ``cost(config) -> (macs, params)``, or ``(macs, params, latency_ms)`` (needed for ``stop_latency``;
            recorded as each step's ``latency_ms``).
        evaluate: the evaluator, see :data:`Evaluator`.
        criterion: one of :data:`CRITERIA`.
        signal: one of :data:`SIGNALS`, for ``drop-per-cost``.
        stop_macs: stop once the MACs are at or under this.
        stop_params: stop once the parameters are at or under this.
        stop_latency: stop once the predicted latency (the third value of ``cost``) is at or under this.
        history: steps already made (e.g. from :func:`read_trajectory`); the search continues after the
            last one without yielding them again or re-evaluating step 0.

    Yields:
        One :class:`Step` per step, starting with step 0 unless ``history`` is given.

    Raises:
        ValueError: on an unknown criterion or signal, choices naming units missing from ``start``, a history
            that does not begin at ``start`` (or lacks the signal), or an evaluator returning the wrong number of
            scores.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown search criterion {criterion!r}: use one of {', '.join(CRITERIA)}")
    if signal not in SIGNALS:
        raise ValueError(f"unknown search signal {signal!r}: use one of {', '.join(SIGNALS)}")
    if criterion == "drop-per-mac":
        signal = "top1"
    ladders = _ladders(start, choices)
    limits = (stop_macs, stop_params, stop_latency)

    def costs_of(config: Mapping[str, int]) -> tuple:
        found = tuple(cost(config))
        if stop_latency is not None and len(found) < 3:
            raise ValueError("a latency limit needs a cost function that returns (macs, params, latency_ms)")
        return found if len(found) >= 3 else (*found, None)

    if history:
        _check_history(history, start)
        last = history[-1]
        current = dict(last.config)
        spent = costs_of(current)  # the latency model may differ from the one that recorded the history
        now = Score(last.accuracy, last.loss, last.kl)
        if criterion == "drop-per-cost" and signal == "kl" and last.kl is None:
            raise ValueError("the trajectory records no KL divergence: resume it with the criterion and signal "
                             "it was made with")
        number = last.step
    else:
        began = time.perf_counter()
        spent = costs_of(start)
        (now,) = _scores(evaluate, start, [(None, dict(start))])
        current, number = dict(start), 0
        score = now.accuracy if criterion == "accuracy" else 0.0
        yield Step(0, None, None, spent[0], spent[1], now.accuracy, now.loss, score, 1,
                   time.perf_counter() - began, dict(current), kl=now.kl, latency_ms=spent[2])

    while not _meets(spent, limits):
        began = time.perf_counter()
        # Every step must lower the cost still aimed at: the first of latency, MACs and parameters not yet met
        # (drop-per-mac weighs the MACs saved whatever it aims at).
        aimed = _aimed(spent, limits)
        weighed = 0 if criterion == "drop-per-mac" else aimed
        lowered = {}  # the cost a candidate lowers -> [(unit, config, its costs)]
        for unit, ladder in ladders.items():
            lower = [count for count in ladder if count < current[unit]]
            if not lower:
                continue
            config = dict(current)
            config[unit] = lower[-1]
            candidate_cost = costs_of(config)
            for index in {aimed, 0}:
                if candidate_cost[index] < spent[index]:
                    lowered.setdefault(index, []).append((unit, config, candidate_cost))
        found = lowered.get(aimed) or (lowered.get(0) if aimed == 2 else None)
        if not found:
            return
        candidates = [(unit, config) for unit, config, _ in found]
        costs = [c for _, _, c in found]
        saved = [max(0.0, spent[weighed] - c[weighed]) for c in costs]
        ranking = None if criterion == "accuracy" else Ranking(signal, tuple(saved))
        scores = _scores(evaluate, current, candidates, ranking)
        if criterion == "accuracy":
            values = [s.accuracy for s in scores]
            keys = [(not s.complete, -s.accuracy, s.loss, i) for i, s in enumerate(scores)]
        else:
            drops = [signal_value(now, signal) - signal_value(s, signal) for s in scores]
            values = [d / g if g > 0 else math.inf for d, g in zip(drops, saved)]
            keys = [(not s.complete, *criterion_key(d, g), s.loss, i)
                    for i, (d, g, s) in enumerate(zip(drops, saved, scores))]
        ranked = sorted(keys)
        best = ranked[0][-1]
        runner_up = values[ranked[1][-1]] if len(ranked) > 1 else None
        unit, config = candidates[best]
        now = scores[best]
        number += 1
        current = config
        spent = costs[best]
        yield Step(number, unit, config[unit], spent[0], spent[1], now.accuracy, now.loss, values[best],
                   len(candidates), time.perf_counter() - began, dict(config), runner_up, kl=now.kl,
                   latency_ms=spent[2])


def greedy_slim(supernet, evaluate: Callable[[Mapping[str, int]], float], *, flops: Optional[int] = None,
                params: Optional[int] = None, criterion: str = "drop-per-cost") -> list[Step]:
    """The greedy search of a supernet scored by your own metric (mAP, pixel accuracy, ...).

    Each candidate config is scored by ``evaluate(config)``, higher is better (set the supernet to the config,
    recalibrate BatchNorm or use batch statistics, run your validation). Under ``drop-per-cost`` every step keeps
    the candidate that loses the least score per MAC saved (per parameter once only ``params`` is left to
    meet); under ``accuracy``, the highest score. The search stops once every limit given is met (with none, at
    the smallest config).

    Args:
        supernet: a :class:`autoslim.network.supernet.Supernet`; its config is restored afterwards.
        evaluate: ``config -> score``.
        flops: stop at or under this many MACs.
        params: stop at or under this many parameters.
        criterion: ``drop-per-cost`` or ``accuracy``.

    Returns:
        The trajectory: step 0 is the largest config; ``steps[-1].config`` meets the limits. Each step's
        ``accuracy`` holds your score.
    """
    if criterion not in ("drop-per-cost", "accuracy"):
        raise ValueError(f"greedy_slim takes criterion drop-per-cost or accuracy, not {criterion!r}")
    previous = supernet.config

    def scores(current, candidates):
        values = [float(evaluate(dict(config))) for _, config in candidates]
        return [Score(accuracy=value, loss=-value) for value in values]

    choices = {unit.name: unit.choices for unit in supernet.slimmable_units}
    try:
        return list(greedy_search(supernet.largest_config(), choices, lambda c: tuple(supernet.cost(c)), scores,
                                  criterion=criterion, signal="top1", stop_macs=flops, stop_params=params))
    finally:
        supernet.set_config(previous)


def signal_value(score: Score, signal: str) -> float:
    """The held-out signal of a score, oriented so that higher is better (accuracy, minus CE, minus KL)."""
    if signal == "top1":
        return score.accuracy
    if signal == "ce":
        return -score.loss
    if score.kl is None:
        raise ValueError("the evaluator gave no KL divergence: score with autoslim.search.sliced.SlicedScorer, "
                         "or choose --signal top1")
    return -score.kl


def criterion_key(drop: float, saved: float) -> tuple[int, float]:
    """The sort key of a candidate under ``drop-per-cost`` (lower is better).

    A candidate that loses nothing (``drop <= 0``) comes first, the one saving most first; the others follow
    by the smallest drop per unit saved; one that saves nothing comes last. The key never decreases as the
    drop grows, so a bound on the drop bounds the key (:class:`autoslim.search.scoring.SlicedScorer` relies on it).
    """
    if saved <= 0:
        return (2, math.inf)
    if drop <= 0:
        return (0, -saved)
    return (1, drop / saved)


def _ladders(start: Mapping[str, int], choices: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    """The sorted choices of every unit that may shrink, in the order of ``start``."""
    missing = [unit for unit in choices if unit not in start]
    if missing:
        raise ValueError(f"units {', '.join(missing)} have choices but no count in the start config: "
                         "give the start config every unit")
    ladders = {}
    for unit in start:
        ladder = sorted(choices.get(unit, ()))
        if len(ladder) > 1:
            ladders[unit] = ladder
    return ladders


def _check_history(history: Sequence[Step], start: Mapping[str, int]) -> None:
    """Raise ValueError unless ``history`` is a trajectory that begins at ``start``."""
    if history[0].step != 0 or dict(history[0].config) != dict(start):
        raise ValueError("the history does not begin at the start config: resume with the trajectory "
                         "of this search, or start a new one in an empty directory")
    for before, after in zip(history, history[1:]):
        if after.step != before.step + 1:
            raise ValueError(f"the history jumps from step {before.step} to step {after.step}: "
                             "resume with the whole trajectory")


def _scores(evaluate: Evaluator, current: Mapping[str, int],
            candidates: Sequence[tuple[Optional[str], Mapping[str, int]]], ranking: Optional[Ranking] = None) -> list[Score]:
    """Call the evaluator (with the ranking, if it accepts one) and check that it gave one score per candidate."""
    if ranking is not None and getattr(evaluate, "accepts_ranking", False):
        scores = list(evaluate(current, candidates, ranking))
    else:
        scores = list(evaluate(current, candidates))
    if len(scores) != len(candidates):
        raise ValueError(f"the evaluator returned {len(scores)} scores for {len(candidates)} candidates: "
                         "it must return one Score per candidate, in order")
    return scores


def _meets(spent: Sequence[Optional[float]], limits: Sequence[Optional[float]]) -> bool:
    """Whether ``(macs, params, latency)`` is within every limit given (never, when none is given)."""
    if all(limit is None for limit in limits):
        return False
    return all(limit is None or value <= limit for value, limit in zip(spent, limits))


def _aimed(spent: Sequence[Optional[float]], limits: Sequence[Optional[float]]) -> int:
    """The index in ``(macs, params, latency)`` of the cost a step must lower: the first of latency, MACs and
    parameters whose limit is given and not met (MACs when no limit is given)."""
    for index in (2, 0, 1):
        if limits[index] is not None and spent[index] > limits[index]:
            return index
    return 0


def choice_leads(steps: Sequence[Step], batch: int) -> Optional[dict[str, float]]:
    """How narrowly the greedy choices of an ``accuracy`` search were made, on a batch of ``batch`` images.

    Returns ``None`` if no step recorded a runner-up, else ``steps`` (the steps that had one), ``ties``
    (best and runner-up equally accurate: the loss decided), ``within_1pct`` (a lead of at most 1% of the
    batch) and ``median_images`` (the median lead, in images).
    """
    leads = [round((s.score - s.runner_up) * batch) for s in steps if s.runner_up is not None]
    if not leads:
        return None
    return {"steps": len(leads), "ties": leads.count(0), "within_1pct": sum(lead <= batch / 100 for lead in leads),
            "median_images": statistics.median(leads)}

"""Scoring candidates on every held-out image, slice by slice, dropping those that cannot win.

A step's choice turns on small differences between candidates, so the search scores them on all held-out images
(5,000 for CIFAR's default split), not on one batch of 2,048. :class:`SlicedScorer` splits the images into slices
(about 500 each; BatchNorm uses each slice's own statistics, the paper's large-batch trick per slice) and
scores the candidates one slice at a time, each slice with a :class:`autoslim.search.scoring.BatchScorer` that reuses the
activations candidates share. Under ``drop-per-cost`` it measures, per image, what each candidate loses against the
current network; after each slice, a candidate whose drop per unit saved exceeds the leader's by more than
``confidence`` standard errors of their per-image difference (a paired comparison: the images' own difficulty
cancels) cannot win and is not scored on the remaining slices. With an ``indifference`` zone, a candidate is also
dropped once the same bound shows it cannot beat the leader by more than that fraction of the leader's drop per unit
saved: near-ties are not worth the images it takes to split them. The winner is always scored on every image;
``confidence=None`` scores every candidate on every image (the exhaustive search).
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..network.supernet import Supernet
from .greedy import Ranking, Score, criterion_key
from .scoring import BatchScorer

__all__ = ["SlicedScorer", "SLICE_SIZE", "CONFIDENCE", "INDIFFERENCE"]

SLICE_SIZE = 512
"""The most held-out images per forward pass (and per set of BatchNorm batch statistics)."""

CONFIDENCE = 2.0
"""Standard errors of the paired bound that stops scoring a candidate that cannot win (benchmarks/README.md)."""

INDIFFERENCE = 0.1
"""How much better than the leader (a fraction of its drop per unit saved) a candidate must be able to be to stay."""


class SlicedScorer:
    """An evaluator for :func:`autoslim.search.greedy_search` over all held-out images, in slices.

    Args:
        supernet: the trained supernet.
        images: all held-out images.
        labels: their labels.
        slice_size: at most this many images per slice; the slices are of equal size (within one image).
        confidence: standard errors of the bound that drops candidates (None: score every candidate fully).
        indifference: with ``confidence``, also drop a candidate that cannot beat the leader by more than this
            fraction of the leader's drop per unit saved (0: only candidates that cannot win).
        reuse, calibration, cache_bytes: as for :class:`autoslim.search.scoring.BatchScorer` (``cache_bytes`` is shared
            equally by the slices; the default, 6 GiB, keeps the 5,000 held-out images of a 1.5x ResNet-20 between
            steps from the first step, a slice of 500 needing 0.55 GB at full width). With ``calibration``,
            BatchNorm statistics come from those batches and the images form one slice.

    Attributes:
        macs_executed: multiply-accumulates run so far (all slices), the measure of work.
        layer_calls: conv / linear layer calls made so far, each over one slice.
        image_scores: candidate-images scored so far (a candidate scored on 1,000 images counts 1,000).
        dropped: candidates dropped early so far.
    """

    accepts_ranking = True  # greedy_search passes what decides the step, so that losers can be dropped

    def __init__(self, supernet: Supernet, images: Tensor, labels: Tensor, *, slice_size: int = SLICE_SIZE,
                 confidence: Optional[float] = CONFIDENCE, indifference: float = INDIFFERENCE, reuse: bool = True, calibration: Optional[Sequence] = None,
                 cache_bytes: int = 6 << 30) -> None:
        if slice_size < 1:
            raise ValueError(f"slice size must be at least 1, got {slice_size}")
        count = 1 if calibration is not None else math.ceil(len(images) / slice_size)
        bounds = [round(i * len(images) / count) for i in range(count + 1)]
        self.supernet = supernet
        self.confidence = confidence
        self.indifference = indifference
        self.slices = [BatchScorer(supernet, images[a:b], labels[a:b], reuse=reuse, calibration=calibration,
                                   cache_bytes=cache_bytes // count) for a, b in zip(bounds, bounds[1:])]
        self.labels = [labels[a:b] for a, b in zip(bounds, bounds[1:])]
        self.images_total = len(images)
        self.image_scores = 0
        self.dropped = 0
        largest = supernet.largest_config()
        self._teacher = [scorer.logits(largest, [(None, largest)])[0].float().log_softmax(1) for scorer in self.slices]
        self._known: dict[tuple, list[dict[str, Tensor]]] = {}  # per-image values of the last step's candidates

    @property
    def macs_executed(self) -> int:
        return sum(scorer.macs_executed for scorer in self.slices)

    @property
    def layer_calls(self) -> int:
        return sum(scorer.layer_calls for scorer in self.slices)

    def __call__(self, current: Mapping[str, int], candidates: Sequence[tuple[Optional[str], Mapping[str, int]]],
                 ranking: Optional[Ranking] = None) -> list[Score]:
        bound = self.confidence if ranking is not None else None
        now = self._per_image_of(current) if bound is not None else None
        seen: list[list[dict[str, Tensor]]] = [[] for _ in candidates]
        active = list(range(len(candidates)))
        for index, scorer in enumerate(self.slices):
            outputs = scorer.logits(current, [candidates[i] for i in active])
            self.image_scores += len(active) * len(self.labels[index])
            for i, logits in zip(active, outputs):
                seen[i].append(self._values(logits, index))
            if bound is not None and index + 1 < len(self.slices) and len(active) > 1:
                active = self._survivors(active, seen, now, ranking, bound)
        self._known = {_key(config): seen[i] for i, (_, config) in enumerate(candidates)
                       if len(seen[i]) == len(self.slices)}
        return [_score(parts, complete=len(parts) == len(self.slices)) for parts in seen]

    # -- helpers ---------------------------------------------------------------------------------------

    def _values(self, logits: Tensor, index: int) -> dict[str, Tensor]:
        """Per-image top-1 (0/1), cross-entropy and KL divergence from the largest config, on slice ``index``."""
        logits = logits.float()
        labels = self.labels[index]
        teacher = self._teacher[index]
        log_p = logits.log_softmax(1)
        return {"top1": (logits.argmax(1) == labels).double(),
                "ce": F.cross_entropy(logits, labels, reduction="none").double(),
                "kl": (teacher.exp() * (teacher - log_p)).sum(1).double()}

    def _per_image_of(self, config: Mapping[str, int]) -> list[dict[str, Tensor]]:
        """The per-image values of ``config`` on every slice (remembered from the step that chose it)."""
        known = self._known.get(_key(config))
        if known is None:
            known = [self._values(scorer.logits(config, [(None, config)])[0], i) for i, scorer in enumerate(self.slices)]
            self.image_scores += self.images_total
        return known

    def _survivors(self, active: list[int], seen: list[list[dict[str, Tensor]]], now: list[dict[str, Tensor]],
                   ranking: Ranking, bound: float) -> list[int]:
        """The candidates that can still win: each is compared with the leader image by image.

        The leader is the candidate with the best key so far. Another candidate is dropped when, on the images seen,
        the mean over images of (its drop per unit saved minus the leader's) exceeds ``bound`` standard errors of
        that paired difference, so that the images' own difficulty, which moves both alike, cancels; with an
        indifference zone, when it exceeds minus ``indifference`` times the leader's mean drop per unit saved by
        as much (the candidate cannot be better than the leader by more than the zone). Because the
        key puts steps that lose nothing first (:func:`criterion_key`), a larger ratio alone does not lose when both
        drops may be negative: the candidate must also save no more than the leader, or one of the two drops must
        be positive by the same bound. A candidate that saves nothing is dropped when another saves something.
        """
        sign = 1.0 if ranking.signal == "top1" else -1.0  # top-1 is lost when it falls, CE and KL when they rise
        drops = {i: torch.cat([sign * (now[s][ranking.signal] - seen[i][s][ranking.signal])
                               for s in range(len(seen[i]))]) for i in active}
        saved = ranking.saved
        saving = [i for i in active if saved[i] > 0]
        if not saving:
            return active
        leader = min(saving, key=lambda i: criterion_key(float(drops[i].mean()), saved[i]))
        count = len(drops[leader])

        def surely_positive(values: Tensor) -> bool:
            return count > 1 and float(values.mean()) - bound * float(values.std()) / math.sqrt(count) > 0

        lead_ratio = drops[leader] / saved[leader]
        zone = self.indifference * abs(float(lead_ratio.mean()))
        kept = []
        for i in active:
            if i == leader:
                kept.append(i)
                continue
            if saved[i] <= 0:
                continue
            worse = surely_positive(drops[i] / saved[i] - lead_ratio + zone)
            if worse and (saved[i] <= saved[leader] or surely_positive(drops[i]) or surely_positive(drops[leader])):
                continue
            kept.append(i)
        self.dropped += len(active) - len(kept)
        return kept


def _key(config: Mapping[str, int]) -> tuple:
    return tuple(sorted(config.items()))


def _score(parts: list[dict[str, Tensor]], *, complete: bool) -> Score:
    values = {name: torch.cat([p[name] for p in parts]) for name in ("top1", "ce", "kl")}
    return Score(accuracy=float(values["top1"].mean()), loss=float(values["ce"].mean()), kl=float(values["kl"].mean()),
                 complete=complete)


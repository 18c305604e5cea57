"""The sliced scorer: every held-out image, slice by slice, with candidates that cannot win dropped early."""

import random

import pytest
import torch

from autoslim.search.greedy import Ranking, greedy_search
from autoslim.search.scoring import BatchScorer
from autoslim.search.sliced import SlicedScorer
from autoslim.spaces import build_supernet, load_space


@pytest.fixture(scope="module")
def supernet():
    torch.manual_seed(0)
    net = build_supernet(load_space("digits_cnn")).eval()
    with torch.no_grad():  # trained-looking weights: widths matter, so the candidates differ clearly
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(96, 1, 8, 8, generator=generator), torch.randint(0, 10, (96,), generator=generator)


def _search(supernet, scorer, **options):
    choices = {u.name: u.choices for u in supernet.slimmable_units}
    return list(greedy_search(supernet.largest_config(), choices, lambda c: tuple(supernet.cost(c)), scorer, **options))


def test_one_slice_scores_as_the_batch_scorer_does(supernet, batch):
    images, labels = batch
    config = supernet.sample_config(random.Random(3))
    largest = supernet.largest_config()
    sliced = SlicedScorer(supernet, images, labels, slice_size=len(images))(largest, [(None, config)])[0]
    plain = BatchScorer(supernet, images, labels)(largest, [(None, config)])[0]
    assert sliced.accuracy == pytest.approx(plain.accuracy, abs=1e-7)  # float32 mean against float64
    assert sliced.loss == pytest.approx(plain.loss, rel=1e-5)
    assert sliced.complete


def test_slices_use_their_own_batchnorm_statistics_and_average_per_image(supernet, batch):
    images, labels = batch
    config = supernet.smallest_config()
    largest = supernet.largest_config()
    whole = SlicedScorer(supernet, images, labels, slice_size=40)  # 96 images: three slices of 32
    assert [len(s.images) for s in whole.slices] == [32, 32, 32]
    score = whole(largest, [(None, config)])[0]
    parts = [BatchScorer(supernet, images[i:i + 32], labels[i:i + 32])(largest, [(None, config)])[0]
             for i in (0, 32, 64)]
    assert score.accuracy == pytest.approx(sum(p.accuracy for p in parts) / 3)
    assert score.loss == pytest.approx(sum(p.loss for p in parts) / 3, rel=1e-5)
    teacher = whole(largest, [(None, largest)])[0]
    assert teacher.kl == pytest.approx(0.0, abs=1e-6) and score.kl > 0


def test_the_bound_keeps_the_exhaustive_trajectory_with_less_work(supernet, batch):
    images, labels = batch
    exhaustive = SlicedScorer(supernet, images, labels, slice_size=24, confidence=None)
    bounded = SlicedScorer(supernet, images, labels, slice_size=24, confidence=3.0, indifference=0.0)
    full = _search(supernet, exhaustive)
    fast = _search(supernet, bounded)
    assert [s.config for s in fast] == [s.config for s in full]
    assert [(s.accuracy, s.loss, s.kl) for s in fast] == [(s.accuracy, s.loss, s.kl) for s in full]
    assert exhaustive.dropped == 0 < bounded.dropped
    assert bounded.image_scores < exhaustive.image_scores
    assert bounded.macs_executed < exhaustive.macs_executed


def test_dropped_candidates_are_marked_incomplete_and_never_win(supernet, batch):
    images, labels = batch
    scorer = SlicedScorer(supernet, images, labels, slice_size=24, confidence=0.01)  # a reckless bound drops most
    largest = supernet.largest_config()
    units = [u.name for u in supernet.slimmable_units]
    candidates = []
    for name in units:
        config = dict(largest)
        config[name] = sorted(supernet.unit(name).choices)[-2]
        candidates.append((name, config))
    saved = tuple(float(supernet.cost(largest).macs - supernet.cost(c).macs) for _, c in candidates)
    scores = scorer(largest, candidates, Ranking("kl", saved))
    assert any(not s.complete for s in scores) and any(s.complete for s in scores)

    returned = []

    class Recording:
        accepts_ranking = True

        def __call__(self, current, candidates, ranking=None):
            out = scorer(current, candidates, ranking) if ranking else scorer(current, candidates)
            returned.append(dict(zip((u for u, _ in candidates), out)))
            return out

    steps = _search(supernet, Recording(), stop_macs=supernet.cost(largest).macs - 1)
    assert any(not s.complete for s in returned[1].values())
    assert returned[1][steps[1].unit].complete  # the step keeps a candidate scored on every image


def test_signal_top1_and_ce_rank_by_their_own_drop(supernet, batch):
    images, labels = batch
    for signal in ("top1", "ce"):
        steps = _search(supernet, SlicedScorer(supernet, images, labels, slice_size=48), signal=signal)
        assert steps[-1].config == supernet.smallest_config()
        for before, after in zip(steps, steps[1:]):
            lost = (before.accuracy - after.accuracy) if signal == "top1" else (after.loss - before.loss)
            assert after.score == pytest.approx(lost / (before.macs - after.macs))


def _bare_scorer(indifference=0.0):
    scorer = SlicedScorer.__new__(SlicedScorer)  # only the bound: no supernet needed
    scorer.dropped, scorer.indifference = 0, indifference
    return scorer


def test_the_bound_compares_candidates_image_by_image():
    # Two candidates whose drops vary a lot from image to image but move together: each mean alone is uncertain,
    # their difference is not, so the one losing more per MAC is dropped; the same figures unpaired are kept.
    generator = torch.Generator().manual_seed(0)
    difficulty = torch.rand(400, generator=generator, dtype=torch.float64) * 10
    now = [{"kl": torch.zeros(400, dtype=torch.float64)}]
    seen = [[{"kl": difficulty}], [{"kl": difficulty * 1.05}]]
    ranking = Ranking("kl", (1.0, 1.0))
    assert _bare_scorer()._survivors([0, 1], seen, now, ranking, 3.0) == [0]
    shuffled = [[{"kl": difficulty}], [{"kl": difficulty[torch.randperm(400, generator=generator)] * 1.05}]]
    assert _bare_scorer()._survivors([0, 1], shuffled, now, ranking, 3.0) == [0, 1]


def test_the_indifference_zone_drops_a_near_tie_that_the_bound_keeps():
    # Candidate 1 loses 2% more per MAC than the leader, image by image, plus noise: the bound cannot tell them apart
    # (it keeps 1), but it can tell that 1 is not 10% better than the leader, so the zone drops it; a candidate as
    # good on average but far noisier stays, since it might still be 10% better.
    generator = torch.Generator().manual_seed(2)
    base = 1.0 + torch.rand(400, generator=generator, dtype=torch.float64)
    noise = torch.randn(400, generator=generator, dtype=torch.float64) * 0.5
    noise -= noise.mean()
    now = [{"kl": torch.zeros(400, dtype=torch.float64)}]
    seen = [[{"kl": base}], [{"kl": base * 1.02 + noise}], [{"kl": base + noise * 6}]]
    ranking = Ranking("kl", (1.0, 1.0, 1.0))
    assert _bare_scorer()._survivors([0, 1], seen, now, ranking, 2.0) == [0, 1]
    assert _bare_scorer(0.1)._survivors([0, 1], seen, now, ranking, 2.0) == [0]
    assert 2 in _bare_scorer(0.1)._survivors([0, 1, 2], seen, now, ranking, 2.0)


def test_the_bound_keeps_a_larger_saving_whose_drop_may_be_negative():
    # Steps that lose nothing rank by the saving: a candidate whose drop may be zero or less and that saves more
    # than the leader could still win, however its ratio compares.
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(400, generator=generator, dtype=torch.float64)
    now = [{"kl": torch.zeros(400, dtype=torch.float64)}]
    seen = [[{"kl": noise * 1e-3 - 1e-3}], [{"kl": noise * 1e-3}], [{"kl": noise * 1e-3}]]
    ranking = Ranking("kl", (1.0, 2.0, 0.5))  # 0 leads (it surely gains); 1 and 2 may gain, 1 saves more, 2 less
    scorer = _bare_scorer()
    assert scorer._survivors([0, 1, 2], seen, now, ranking, 3.0) == [0, 1]
    assert scorer.dropped == 1
    nothing = Ranking("kl", (1.0, 0.0, 1.0))  # a candidate that saves nothing cannot win against one that saves
    assert 1 not in _bare_scorer()._survivors([0, 1, 2], seen, now, nothing, 3.0)

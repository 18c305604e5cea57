"""Scoring candidates: the reuse path gives the plain loop's scores and trajectory with less work."""

import random

import pytest
import torch
from torch import nn

from autoslim.network.supernet import convert
from autoslim.search.greedy import greedy_search
from autoslim.search.scoring import BatchScorer, batch_statistics
from autoslim.spaces import build_supernet, load_space
from test_network_tracing import _EcaNet


class _GatedNet(nn.Module):
    """Residual blocks with in-place activations and a squeeze-and-excitation gate."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.a = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(inplace=True),
                               nn.Conv2d(24, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.se1 = nn.Conv2d(16, 8, 1)
        self.se2 = nn.Conv2d(8, 16, 1)
        self.b = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(inplace=True))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu_(x + self.a(x))
        x = x * torch.sigmoid(self.se2(torch.relu(self.se1(x.mean((2, 3), keepdim=True)))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.b(x), 1), 1))


class _ConcatNet(nn.Module):
    """Concatenations read by BatchNorm, a conv and a linear layer, a channels-last MLP, a flatten of a 2x2 map."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.norm = nn.BatchNorm2d(24)
        self.mix = nn.Conv2d(24, 16, 1)
        self.mlp1 = nn.Linear(16, 32)
        self.mlp2 = nn.Linear(32, 16)
        self.fc = nn.Linear(40 * 4, 10)

    def forward(self, x):
        x = self.stem(x)
        y = torch.cat([x, self.branch(x)], 1)
        x = self.mix(torch.relu(self.norm(y)))
        h = self.mlp2(nn.functional.gelu(self.mlp1(x.permute(0, 2, 3, 1))))
        x = x + h.permute(0, 3, 1, 2)
        z = torch.cat([x, y], dim=1)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(z, 2), 1))


def _trajectory(supernet, images, labels, reuse, **kwargs):
    scorer = BatchScorer(supernet, images, labels, reuse=reuse, **kwargs)
    choices = {u.name: u.choices for u in supernet.slimmable_units}
    steps = list(greedy_search(supernet.largest_config(), choices, lambda c: tuple(supernet.cost(c)), scorer,
                               criterion="accuracy"))
    return steps, scorer


@pytest.mark.parametrize("make", [
    lambda: build_supernet(load_space("digits_cnn")),
    lambda: convert(_GatedNet(), input_size=8, divisor=4),
    lambda: convert(_ConcatNet(), input_size=8, divisor=4),
    lambda: convert(_LayerScaleNet(scale=False), input_size=8, divisor=4),  # LayerNorm mixes channels: a reader
    lambda: convert(_EcaNet("circular"), input_size=8, divisor=4),  # so does a conv along the channels (ECA)
], ids=["digits_cnn", "gated", "concat", "layernorm", "eca"])
def test_reuse_and_plain_give_identical_trajectories(make):
    supernet = make().eval()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(48, supernet.in_channels, 8, 8, generator=generator)
    labels = torch.randint(0, 10, (48,), generator=generator)
    plain, plain_scorer = _trajectory(supernet, images, labels, reuse=False)
    reused, reuse_scorer = _trajectory(supernet, images, labels, reuse=True)
    uncached, _ = _trajectory(supernet, images, labels, reuse=True, cache_bytes=0)
    # the same choices and accuracies; losses bit-identical except where LayerNorm normalises a sliced activation,
    # whose sums may run in another order (about 1e-7 apart)
    fields = [[(s.step, s.unit, s.channels, s.macs, s.params, s.accuracy, s.config) for s in t]
              for t in (plain, reused, uncached)]
    assert fields[0] == fields[1] == fields[2]
    for a, b, c in zip(plain, reused, uncached):
        assert b.loss == pytest.approx(a.loss, rel=1e-5, abs=1e-7) and c.loss == pytest.approx(a.loss, rel=1e-5, abs=1e-7)
    if not any(isinstance(m, torch.nn.LayerNorm) for m in supernet.modules()):
        assert plain == reused == uncached
    assert plain[-1].config == supernet.smallest_config()
    assert reuse_scorer.macs_executed < plain_scorer.macs_executed


def test_plain_work_is_one_forward_per_candidate():
    supernet = build_supernet(load_space("digits_cnn"))
    images, labels = torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    scorer = BatchScorer(supernet, images, labels, reuse=False)
    config = supernet.smallest_config()
    scorer(config, [(None, config), (None, config)])
    assert scorer.macs_executed == 2 * 4 * supernet.cost(config).macs


def test_batch_statistics_leaves_running_stats_alone():
    supernet = build_supernet(load_space("digits_cnn"))
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    supernet.train()
    with batch_statistics(supernet), torch.no_grad():
        supernet(torch.randn(16, 1, 8, 8) * 5 + 3)
    assert supernet.training
    for key, value in supernet.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_scorer_restores_the_supernet_config():
    supernet = build_supernet(load_space("digits_cnn"))
    config = supernet.sample_config(random.Random(0))
    supernet.set_config(config)
    scorer = BatchScorer(supernet, torch.randn(8, 1, 8, 8), torch.zeros(8, dtype=torch.long))
    largest = supernet.largest_config()
    scorer(largest, [(None, largest)])
    assert supernet.config == config


class _LayerScaleNet(nn.Module):
    """ConvNeXt's pattern: a channels-last LayerNorm and MLP, and a per-channel scale parameter used in forward."""

    def __init__(self, scale=True):
        super().__init__()
        self.scale = scale
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.norm = nn.LayerNorm(16)
        self.up = nn.Linear(16, 32)
        self.down = nn.Linear(32, 16)
        self.layer_scale = nn.Parameter(torch.full((16, 1, 1), 0.5))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        h = self.down(nn.functional.gelu(self.up(self.norm(self.dw(x).permute(0, 2, 3, 1)))))
        h = h.permute(0, 3, 1, 2)
        x = x + (self.layer_scale * h if self.scale else h)
        return self.fc(x.mean((2, 3)))


def test_layer_scale_networks_are_scored_whole():
    supernet = convert(_LayerScaleNet(), input_size=8, divisor=4).eval()
    units = {u.name: u for u in supernet.slimmable_units}
    assert set(units) == {"stem", "up"}  # LayerNorm and the layer scale are sliced with the stem's unit
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(32, 3, 8, 8, generator=generator), torch.randint(0, 10, (32,), generator=generator)
    plain, plain_scorer = _trajectory(supernet, images, labels, reuse=False)
    reused, reuse_scorer = _trajectory(supernet, images, labels, reuse=True)
    assert not reuse_scorer.reuse and plain == reused
    assert plain[-1].config == supernet.smallest_config()
    supernet.set_config({"stem": 8, "up": 12})
    assert supernet.model.layer_scale.shape == (8, 1, 1) and supernet.model.norm.active == 8
    assert supernet.model._parameters["layer_scale"].shape == (16, 1, 1)  # the stored parameter stays whole


def test_reuse_is_exact_when_a_later_call_scores_candidates_the_cached_call_did_not():
    # The sliced scorer drops candidates on later slices, so a slice's scorer may see a unit start point at one
    # step that its previous call did not have; the cache must not serve tensors it never kept for it.
    supernet = convert(_GatedNet(), input_size=8, divisor=4).eval()
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(16, 3, 8, 8, generator=generator), torch.randint(0, 10, (16,), generator=generator)
    largest = supernet.largest_config()
    units = [u.name for u in supernet.slimmable_units]

    def shrunk(config, name):
        out = dict(config)
        out[name] = sorted(c for c in supernet.unit(name).choices if c < config[name])[-1]
        return out

    reuse, plain = BatchScorer(supernet, images, labels), BatchScorer(supernet, images, labels, reuse=False)
    last = units[-1]
    reuse.logits(largest, [(last, shrunk(largest, last))])  # only the deepest unit: a late start point cached
    current = shrunk(largest, last)
    candidates = [(name, shrunk(current, name)) for name in units]
    for a, b in zip(reuse.logits(current, candidates), plain.logits(current, candidates)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("cache_bytes", [0, 20_000, 60_000, 2 << 30])
def test_reuse_is_exact_over_steps_whatever_subsets_and_cache_budget(cache_bytes):
    # The sliced scorer calls each slice's scorer with a different subset of candidates every step, and a subset
    # whose kept tensors exceed the cache budget keeps none: whatever the sequence, reuse must equal the plain loop.
    supernet = convert(_GatedNet(), input_size=8, divisor=4).eval()
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(16, 3, 8, 8, generator=generator), torch.randint(0, 10, (16,), generator=generator)
    units = [u.name for u in supernet.slimmable_units]
    reuse = BatchScorer(supernet, images, labels, cache_bytes=cache_bytes)
    plain = BatchScorer(supernet, images, labels, reuse=False)
    rng = random.Random(1)
    current = supernet.largest_config()
    for _ in range(8):
        shrinkable = [n for n in units if any(c < current[n] for c in supernet.unit(n).choices)]
        if not shrinkable:
            break
        candidates = []
        for name in shrinkable:
            config = dict(current)
            config[name] = max(c for c in supernet.unit(name).choices if c < current[name])
            candidates.append((name, config))
        subset = rng.sample(candidates, rng.randint(1, len(candidates)))
        for a, b in zip(reuse.logits(current, subset), plain.logits(current, subset)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        current = rng.choice(subset)[1]

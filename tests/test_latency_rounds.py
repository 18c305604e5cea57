"""How timings are scheduled: layers in chunks and whole networks in groups that fit the memory, each part tied to
the first by an anchor."""

from __future__ import annotations

import pytest
from torch import nn

import autoslim.latency.rounds as rounds_module
from autoslim.latency import LatencyKey, TimingSettings, make_timer
from autoslim.latency.rounds import footprint, grouped_rounds, memory_groups


def _net(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, 10))


def test_the_footprint_counts_weights_and_every_activation_of_the_batch():
    net = _net(8)
    weights = 3 * 8 * 9 + 8 + 8 * 10 + 10
    written = 8 * 16 * 16 + 8 * 16 * 16 + 8 + 8 + 10  # conv, relu, pool, flatten, linear at batch 1
    assert footprint(net, (4, 3, 16, 16)) == 4 * (weights + 4 * written)


@pytest.mark.parametrize("footprints, budget, groups", [
    ([5, 5, 5], None, [[0, 1, 2]]),
    ([5, 5, 5], 15, [[0, 1, 2]]),
    ([5, 5, 5, 5], 12, [[0, 1], [0, 2], [0, 3]]),
    ([2, 3, 3, 3, 3], 9, [[0, 1, 2], [0, 3, 4]]),
    ([2, 20, 3], 9, [[0, 1], [0, 2]]),  # one too large for the budget still gets timed, beside the anchor
    ([7], 1, [[0]]),
])
def test_memory_groups_fit_the_budget_and_lead_with_the_anchor(footprints, budget, groups):
    assert memory_groups(footprints, budget) == groups


def test_grouped_timings_are_scaled_to_the_first_group_by_the_anchor(monkeypatch):
    monkeypatch.setattr(rounds_module, "footprint", lambda network, shape: 10)
    base = [1.0, 2.0, 3.0, 4.0, 5.0]
    networks = [nn.Identity() for _ in base]
    for network, ms in zip(networks, base):
        network.ms = ms
    seen, progress = [], []

    def time_group(group, timed):  # every group runs 1.5x slower than the one before it
        level = 1.5 ** len(seen)
        seen.append([base.index(n.ms) for n in group])
        for done in range(1, 2 * len(group) + 1):
            timed(done, 2 * len(group))
        return [[n.ms * level * 1.1, n.ms * level] for n in group]  # two rounds, the second the faster

    rounds = grouped_rounds(networks, (1, 3, 8, 8), time_group, lambda done, total: progress.append((done, total)),
                            budget=30)
    assert seen == [[0, 1, 2], [0, 3, 4]]
    assert [min(r) for r in rounds] == pytest.approx(base)  # the second group's 1.5x is divided out
    assert progress[-1] == (6, 6) and all(a <= b for (a, _), (b, _) in zip(progress, progress[1:]))


def test_a_timer_short_of_memory_times_every_network_in_groups(monkeypatch):
    monkeypatch.setattr(rounds_module, "available_memory", lambda: 2 * footprint(_net(16), (1, 3, 16, 16)))
    groups = []
    real = rounds_module.memory_groups
    monkeypatch.setattr(rounds_module, "memory_groups", lambda f, b: groups.append(real(f, b)) or groups[-1])
    timer = make_timer(LatencyKey(), TimingSettings(warmup=1, repeats=2, rounds=2))
    timed = timer.networks([_net(w) for w in (4, 8, 12, 16)], (1, 3, 16, 16))
    assert len(groups[0]) > 1 and all(group[0] == 0 for group in groups[0])
    assert len(timed) == 4 and all(ms > 0 for ms in timed)


def test_layer_chunks_are_scaled_to_the_first_by_its_slowest_layer(monkeypatch):
    monkeypatch.setattr(rounds_module, "CHUNK", 2)
    base = {"a": 1.0, "b": 3.0, "c": 2.0, "d": 0.5, "e": 4.0}  # ms of each layer; an empty call takes 0.25 ms
    chunks = []

    def prepare(layer, shape):
        return (getattr(layer, "name", "empty"), shape)

    def interleave(runs, timed):  # every chunk runs 1.2x slower than the one before it
        level = 1.2 ** len(chunks)
        chunks.append([name for name, _ in runs])
        timed(len(runs), len(runs))
        return [[(0.25 if name == "empty" else base[name]) * level] * 2 for name, _ in runs]

    layers = []
    for name, shape in zip(base, [(1, 4), (1, 4), (1, 8), (1, 8), (1, 4)]):
        layers.append((nn.Identity(), shape))
        layers[-1][0].name = name
    progress = []
    timed = rounds_module.layers_ms(layers, {}, prepare, interleave, lambda done, total: progress.append(done))
    assert chunks == [["empty", "a", "b"], ["empty", "c", "d", "b"], ["e", "b"]]  # b, the slowest, is the anchor
    assert timed == pytest.approx([ms - 0.25 for ms in base.values()])  # every chunk's 1.2x divided out
    assert progress[-1] == 5

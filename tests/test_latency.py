"""The latency model's plumbing with a fake timer (exact predictions), its cache keying and invalidation, latency
budgets and targets, and the greedy search under a latency limit."""

from __future__ import annotations

import dataclasses
import json
import random
import statistics

import pytest
from latency_fakes import NETWORK_FIXED_MS, NETWORK_SCALE, FakeTimer, NoTimer

from autoslim.budget import format_ms, parse_latency
from autoslim.latency import (LatencyKey, LatencyModel, LayerTable, Measured, LatencyComparison, TimingSettings,
                              build_latency_model, check_model, compare_latency, fit_configs, latency_model, load_model,
                              measure_config, model_path, random_configs, spearman)
from autoslim.latency.build import _fit
from autoslim.network.static import materialize
from autoslim.search.greedy import Score, Step, greedy_search
from autoslim.search.targets import Target, check_targets, parse_targets, pick, stop_limits
from autoslim.spaces import build_supernet, load_space


@pytest.fixture(scope="module")
def supernet():
    return build_supernet(load_space("digits_cnn")).eval()


@pytest.fixture(scope="module")
def model(supernet):
    return build_latency_model(supernet, FakeTimer(), networks=6)


def test_the_model_predicts_the_fake_timer_exactly(supernet, model):
    coefficients = model.coefficients
    assert coefficients["lookup"] == pytest.approx(NETWORK_SCALE, rel=1e-9)
    assert coefficients["activations"] == pytest.approx(0.0, abs=1e-9)
    assert coefficients["macs"] == pytest.approx(0.0, abs=1e-9)
    assert coefficients["intercept"] == pytest.approx(NETWORK_FIXED_MS, rel=1e-9)
    predict, timer = model.bind(supernet), FakeTimer()
    rng = random.Random(7)
    for config in [supernet.sample_config(rng) for _ in range(10)] + [supernet.uniform_config(0.5)]:
        assert predict(config) == pytest.approx(measure_config(supernet, config, timer), rel=1e-9)
    assert all(abs(error) < 1e-9 for error in model.fit_errors())


def test_every_layer_call_is_measured_once_per_shape(supernet):
    timer = FakeTimer()
    model = build_latency_model(supernet, timer, networks=4)
    convs = [c for c in supernet.trace.calls if c.kind in ("conv", "dwconv", "linear")]
    assert {t.module for t in model.layers} == {c.module for c in convs}
    cells = sum(len(t.inputs) * max(1, len(t.outputs)) for t in model.layers)
    assert 0 < timer.layer_calls <= cells and timer.network_calls == 4
    for table in model.layers:
        call = supernet.trace.calls[table.call]
        assert list(table.inputs) == sorted(table.inputs)
        if call.kind != "dwconv":
            assert table.outputs == list(supernet.units[call.out_unit].choices)


def test_the_lookup_interpolates_between_measured_counts():
    table = LayerTable(0, "conv", "conv", [8, 16], [4, 12], [[1.0, 3.0], [5.0, 7.0]])
    assert table.at(8, 4) == 1.0 and table.at(16, 12) == 7.0  # measured cells are exact
    assert table.at(12, 4) == pytest.approx(3.0) and table.at(8, 8) == pytest.approx(2.0)
    assert table.at(12, 8) == pytest.approx(4.0)
    assert table.at(4, 2) == 1.0 and table.at(32, 64) == 7.0  # clamped at the ends
    depthwise = LayerTable(1, "dw", "dwconv", [8, 16, 24], [], [[1.0], [2.0], [4.0]])
    assert depthwise.at(20, 20) == pytest.approx(3.0)


def test_the_fit_never_gives_a_negative_coefficient():
    # measured = 2 * lookup - 1 would need a negative intercept: the fit drops the intercept instead
    rows = [(1.0, 0.5), (2.0, 0.1), (3.0, 0.9), (4.0, 0.3)]
    a, b, c = _fit(rows, [2 * x - 1 for x, _ in rows])
    assert min(a, b, c) >= 0 and c == 0
    a, b, c = _fit(rows, [0.5 * x + 3 * y + 0.25 for x, y in rows])
    assert (a, b, c) == pytest.approx((0.5, 3.0, 0.25))
    rows = [(1.0, 0.5, 2.0), (2.0, 0.1, 1.0), (3.0, 0.9, 5.0), (4.0, 0.3, 3.0), (2.5, 0.2, 0.5)]
    assert _fit(rows, [0.5 * x + 0.1 * z + 0.25 for x, _, z in rows]) == pytest.approx((0.5, 0.0, 0.1, 0.25))


def test_an_interrupted_timing_is_left_out_of_the_fit(supernet):
    class Interrupted(FakeTimer):
        def networks(self, networks, shape, on_timed=None):
            ms = super().networks(networks, shape)
            return [10 * v if i == 2 else v for i, v in enumerate(ms)]  # the third network was descheduled

    model = build_latency_model(supernet, Interrupted(), networks=8)
    assert [bool(n.get("outlier")) for n in model.networks] == [False, False, True] + [False] * 5
    assert model.coefficients["lookup"] == pytest.approx(NETWORK_SCALE, rel=1e-9)
    assert model.coefficients["intercept"] == pytest.approx(NETWORK_FIXED_MS, rel=1e-9)
    assert len(model.fit_errors()) == 7 and max(map(abs, model.fit_errors())) < 1e-9


def test_fit_configs_span_the_space(supernet):
    configs = fit_configs(supernet, 12, seed=0)
    assert configs[0] == supernet.largest_config() and configs[1] == supernet.smallest_config()
    assert len(configs) == 12 and len({json.dumps(c, sort_keys=True) for c in configs}) == 12
    assert fit_configs(supernet, 12, seed=0) == configs


def test_random_configs_are_distinct_and_leave_out_what_they_are_told(supernet):
    fit = fit_configs(supernet, 6, seed=0)
    drawn = random_configs(supernet, 10, seed=1, exclude=fit)
    assert len(drawn) == 10 and all(c not in fit for c in drawn)
    assert len({json.dumps(c, sort_keys=True) for c in drawn}) == 10
    assert random_configs(supernet, 10, seed=1, exclude=fit) == drawn and random_configs(supernet, 10, seed=2) != drawn


def test_spearman_ranks_ties_by_their_mean_rank():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks 0, 1.5, 1.5, 3 against 0, 2, 1, 3: Pearson's correlation of the ranks
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.9486833, rel=1e-6)
    assert spearman([1, 1, 1], [1, 2, 3]) != spearman([1, 1, 1], [1, 2, 3])  # NaN: no ranking to correlate


def test_a_check_times_networks_the_model_has_not_seen(supernet, model):
    found = check_model(model, supernet, FakeTimer(), 8)
    assert len(found.configs) == 8 and all(c not in [n["config"] for n in model.networks] for c in found.configs)
    assert found.spearman == pytest.approx(1.0) and found.median_error < 1e-9  # the fake timer is predicted exactly
    assert found.drift.ratio == pytest.approx(1.0) and found.drift.warning is None
    slower = check_model(model, supernet, FakeTimer(offset_ms=1.0), 8)  # every network 1 ms slower than the model
    assert all(m == pytest.approx(p + 1.0) for p, m in zip(slower.predicted_ms, slower.measured_ms))
    assert slower.median_error == pytest.approx(statistics.median(1 / m for m in slower.measured_ms))
    assert slower.drift.ratio > 1 and slower.spearman == pytest.approx(1.0)
    assert slower.to_dict()["networks"][0]["measured_ms"] == slower.measured_ms[0]
    with pytest.raises(ValueError, match="at least 3 networks"):
        check_model(model, supernet, FakeTimer(), 2)


def test_drift_compares_the_full_network_with_its_timing_in_the_model(supernet, model):
    then = model.full_network_ms
    assert then == pytest.approx(FakeTimer().networks([materialize(supernet, supernet.largest_config())],
                                                      (1, supernet.in_channels, supernet.input_size, supernet.input_size))[0])
    assert model.drift(1.05 * then).warning is None and model.drift(0.95 * then).warning is None
    slow, fast = model.drift(1.3 * then), model.drift(0.8 * then)
    assert slow.ratio == pytest.approx(1.3) and "30% slower" in slow.warning and "--rebuild" in slow.warning
    assert fast.ratio == pytest.approx(0.8) and "20% faster" in fast.warning
    assert slow.to_dict() == {"full_network_ms_then": then, "full_network_ms_now": 1.3 * then, "ratio": slow.ratio,
                              "warning": slow.warning}
    assert dataclasses.replace(model, networks=[]).drift(then) is None


def test_a_model_of_another_architecture_is_refused(model):
    other = build_supernet(load_space("digits_tiny"))
    with pytest.raises(ValueError, match="another architecture"):
        model.bind(other)


def test_the_cache_is_keyed_and_invalidated(supernet, tmp_path):
    key = LatencyKey()
    first = latency_model(tmp_path, supernet, key, timer=FakeTimer(), networks=4)
    path = model_path(tmp_path, key)
    assert first.status == "measured" and first.path == path == tmp_path / "latency" / "cpu-torch-b1-t1.json"
    data = json.loads(path.read_text())
    assert data["format"] == "autoslim-latency/1" and data["key"] == key.to_dict()
    assert {"cpu", "torch"} <= set(data["description"])
    assert latency_model(tmp_path, supernet, key, timer=NoTimer()).status == "cached"

    other = LatencyKey(batch=32, threads=2)
    assert latency_model(tmp_path, supernet, other, timer=FakeTimer(other), networks=4).status == "measured"
    assert model_path(tmp_path, other).name == "cpu-torch-b32-t2.json" and path.exists()

    data["description"]["torch"] = "1.0.0"
    path.write_text(json.dumps(data))
    again = latency_model(tmp_path, supernet, key, timer=FakeTimer(), networks=4)
    assert again.status.startswith("remeasured: torch was '1.0.0'")
    assert load_model(path).description["torch"] != "1.0.0"

    path.write_text("{not json")
    assert latency_model(tmp_path, supernet, key, timer=FakeTimer(), networks=4).status.startswith(
        "remeasured: the cached file was unreadable")
    assert latency_model(tmp_path, supernet, key, timer=FakeTimer(), networks=4, rebuild=True).status == \
        "remeasured: asked to"


def test_a_model_from_another_supernet_is_remeasured(model, tmp_path):
    other = build_supernet(load_space("digits_tiny"))
    path = model_path(tmp_path, model.key)
    path.parent.mkdir()
    path.write_text(json.dumps(model.to_dict()))
    found = latency_model(tmp_path, other, model.key, timer=FakeTimer(), networks=4)
    assert found.status == "remeasured: the supernet's architecture changed"


def test_a_model_timed_in_one_round_is_remeasured(supernet, tmp_path):
    key = LatencyKey()
    latency_model(tmp_path, supernet, key, timer=FakeTimer(), networks=4)
    path = model_path(tmp_path, key)
    data = json.loads(path.read_text())
    data["timing"] = {"warmup": 5, "repeats": 15, "min_block_ms": 1.0, "statistic": "median", "clock": "wall"}
    path.write_text(json.dumps(data))
    assert latency_model(tmp_path, supernet, key, timer=FakeTimer(), networks=4).status.startswith(
        "remeasured: it was timed in one round per network")
    data["timing"]["rounds"] = 5
    path.write_text(json.dumps(data))
    assert latency_model(tmp_path, supernet, key, timer=NoTimer()).status == "cached"


def test_timings_interleave_in_rounds_and_keep_each_ones_least_round():
    from autoslim.latency.rounds import interleaved_ms

    calls, now = [], [0]

    def slow_stretch(name, ms):  # the machine is three times slower for the first 30 runs
        def run():
            calls.append(name)
            now[0] += ms * (3 if len(calls) <= 30 else 1)
        return run

    def clock(run, number):
        began = now[0]
        for _ in range(number):
            run()
        return (now[0] - began) / 1e3

    settings = TimingSettings(warmup=2, repeats=3, rounds=4, min_block_ms=0.0)
    done = []
    rounds = interleaved_ms([slow_stretch("a", 1.0), slow_stretch("b", 2.0)], settings, clock,
                             lambda d, t: done.append((d, t)))
    # sizing (warm-up and one run each), then per round: a's warm-up and repeats, then b's
    assert calls[:6] == ["a", "a", "a", "b", "b", "b"]
    assert calls[6:16] == ["a"] * 5 + ["b"] * 5 and calls[16:21] == ["a"] * 5
    assert len(calls) == 6 + 4 * 2 * 5 and done == [(i, 8) for i in range(1, 9)]
    # every round's median: the slow stretch covers rounds 1-2 and two of a's three timings in round 3
    assert rounds == [[3.0, 3.0, 3.0, 1.0], [6.0, 6.0, 2.0, 2.0]]
    assert [min(r) for r in rounds] == [1.0, 2.0]


def test_compare_latency_times_its_networks_together(supernet):
    timer = FakeTimer()
    config = supernet.uniform_config(0.5)
    compare_latency(supernet, config, timer, budget_ms=measure_config(supernet, config, FakeTimer()),
                    predict=lambda c: measure_config(supernet, c, FakeTimer()))
    assert timer.network_calls == 4  # one interleaved timing of the searched, two uniform and the full network


def test_the_model_round_trips_through_its_dict(supernet, model):
    back = LatencyModel.from_dict(json.loads(json.dumps(model.to_dict())))
    config = supernet.sample_config(random.Random(1))
    assert back.predict(supernet, config) == model.predict(supernet, config)
    assert back.identity == model.identity
    with pytest.raises(ValueError, match="not an autoslim latency model"):
        LatencyModel.from_dict({"format": "something else"}, "x.json")
    broken = model.to_dict()
    del broken["coefficients"]
    with pytest.raises(ValueError, match="x.json: malformed"):
        LatencyModel.from_dict(broken, "x.json")


@pytest.mark.parametrize("arguments,message", [
    (dict(runtime="tensorrt"), "unknown runtime 'tensorrt'"),
    (dict(device="tpu"), "unknown latency device"),
    (dict(batch=0), "batch must be a positive integer"),
    (dict(threads=0), "threads must be a positive integer"),
    (dict(device="cuda", runtime="onnxruntime"), "timed on the CPU"),
])
def test_latency_keys_are_checked(arguments, message):
    with pytest.raises(ValueError, match=message):
        LatencyKey(**arguments)


def test_a_key_names_its_file_and_describes_itself():
    assert LatencyKey().label == "cpu-torch-b1-t1"
    assert LatencyKey("cpu", "onnxruntime", 32, 4).describe() == "cpu, ONNX Runtime, batch 32, 4 threads"
    with pytest.raises(ValueError, match="statistic"):
        TimingSettings(statistic="mean")


@pytest.mark.parametrize("text,ms", [("3ms", 3.0), ("2.5ms", 2.5), ("800us", 0.8), ("0.01s", 10.0), ("4", 4.0),
                                     (" 1.5 ms ", 1.5), ("3e-1ms", 0.3)])
def test_parse_latency(text, ms):
    assert parse_latency(text) == pytest.approx(ms)


@pytest.mark.parametrize("text", ["fast", "3 minutes", "0ms", "-1ms", ""])
def test_parse_latency_rejects_what_it_cannot_read(text):
    with pytest.raises(ValueError):
        parse_latency(text)


def test_latency_targets_are_labelled_in_milliseconds():
    assert [t.label for t in parse_targets(["1M"], [], ["3ms", "800us", "2.5ms", "3.0ms"])] == [
        "flops-1M", "latency-3ms", "latency-0.8ms", "latency-2.5ms"]
    assert stop_limits(parse_targets(["1M"], [], ["3ms", "2ms"])) == (1_000_000, None, 2.0)
    assert format_ms(2.3456) == "2.346 ms" and format_ms(123.45) == "123.5 ms"


def test_an_unreachable_latency_names_the_reachable_range():
    largest, smallest = (300, 30, 4.0), (10, 3, 0.5)
    check_targets(parse_targets([], [], ["1ms"]), largest=largest, smallest=smallest)
    with pytest.raises(ValueError, match=r"latency-0.1ms is below .* reachable latency: 0.500 ms to 4.000 ms"):
        check_targets(parse_targets([], [], ["0.1ms"]), largest=largest, smallest=smallest)
    with pytest.raises(ValueError, match="already met by the largest"):
        check_targets(parse_targets([], [], ["5ms"]), largest=largest, smallest=smallest)


def test_a_latency_target_on_a_trajectory_without_latency_is_an_error():
    steps = [Step(0, None, None, 100, 10, 0.9, 0.1, 0.0, 1, 0.0, {"a": 8})]
    with pytest.raises(ValueError, match="records none: search with --latency"):
        pick(steps, Target("latency", 2.0))


START = {"a": 8, "b": 8, "c": 8}
CHOICES = {"a": (2, 4, 6, 8), "b": (2, 4, 6, 8), "c": (2, 4, 6, 8)}


def _evaluate(current, candidates):
    return [Score(accuracy=0.9 - 0.01 * (24 - sum(c.values())), loss=0.1, kl=0.01 * (24 - sum(c.values())))
            for _, c in candidates]


def _cost(latency):
    def cost(config):
        macs = 10 * config["a"] + 20 * config["b"] + 30 * config["c"]
        return macs, sum(config.values()), latency(config)
    return cost


def test_a_latency_limit_aims_every_step_at_latency():
    # latency falls most with a, which saves fewest MACs: a MAC search would shrink c first
    cost = _cost(lambda c: 0.5 * c["a"] + 0.1 * c["b"] + 0.05 * c["c"])
    steps = list(greedy_search(START, CHOICES, cost, _evaluate, stop_latency=3.0))
    assert steps[1].unit == "a" and steps[-1].latency_ms <= 3.0 < steps[-2].latency_ms
    assert all(b.latency_ms < a.latency_ms for a, b in zip(steps, steps[1:]))
    assert [s.latency_ms for s in steps] == [cost(s.config)[2] for s in steps]
    by_macs = list(greedy_search(START, CHOICES, cost, _evaluate, stop_macs=400))
    assert by_macs[1].unit == "c"


def test_the_search_goes_on_by_macs_when_no_candidate_lowers_latency():
    # only a at its smallest choice is fast: until then no single step lowers the latency
    cost = _cost(lambda c: 1.0 if c["a"] == 2 else 10.0)
    steps = list(greedy_search(START, CHOICES, cost, _evaluate, stop_latency=5.0))
    assert steps[-1].latency_ms == 1.0 and steps[-1].config["a"] == 2
    assert all(b.macs < a.macs for a, b in zip(steps, steps[1:]))


def test_a_latency_limit_needs_a_latency_cost():
    with pytest.raises(ValueError, match="latency_ms"):
        list(greedy_search(START, CHOICES, lambda c: (1, 1), _evaluate, stop_latency=1.0))


def test_compare_measures_the_uniform_networks_and_warns_honestly(supernet):
    timer = FakeTimer()
    config = supernet.uniform_config(0.5)
    comparison = compare_latency(supernet, config, timer)
    assert comparison.searched.measured_ms == pytest.approx(measure_config(supernet, config, timer))
    assert comparison.full.macs == supernet.cost(supernet.largest_config()).macs
    assert comparison.uniform_within.measured_ms <= comparison.budget_ms
    assert comparison.uniform_equal_macs.macs <= comparison.searched.macs
    assert comparison.warning is not None  # a uniform network is not faster than itself
    faster = LatencyComparison(Measured("searched", 100, 10, 1.0), 1.0, None, Measured("u", 100, 10, 1.5, 0.5),
                               Measured("full", 400, 40, 4.0))
    slower = LatencyComparison(Measured("searched", 100, 10, 2.0), 2.0, None, Measured("u", 90, 9, 1.5, 0.5),
                               Measured("full", 400, 40, 4.0))
    assert faster.warning is None and "not faster than the uniform 0.5x" in slower.warning
    assert "\n" not in slower.warning


def test_the_torch_timer_times_real_runs_and_restores_the_threads(supernet):
    import torch

    from autoslim.latency import TorchTimer

    before = torch.get_num_threads()
    timer = TorchTimer(LatencyKey(threads=2), TimingSettings(warmup=1, repeats=3, min_block_ms=0.2))
    assert timer.layer(torch.nn.Conv2d(16, 32, 3, padding=1), (1, 16, 32, 32)) > 0
    assert measure_config(supernet, supernet.smallest_config(), timer) > 0
    assert torch.get_num_threads() == before


def test_onnxruntime_times_the_layer_it_is_given(supernet):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import torch

    from autoslim.latency import OnnxRuntimeTimer
    from autoslim.latency.onnx_graph import one_node_onnx

    for layer, shape in [(torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), (2, 4, 9, 9)),
                         (torch.nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False), (1, 6, 5, 5)),
                         (torch.nn.Conv2d(3, 4, 4, padding="same"), (1, 3, 7, 7)),
                         (torch.nn.Linear(5, 3), (2, 5))]:
        session = onnxruntime.InferenceSession(one_node_onnx(layer, shape), providers=["CPUExecutionProvider"])
        x = torch.randn(shape)
        (out,) = session.run(None, {"x": x.numpy()})
        torch.testing.assert_close(torch.from_numpy(out), layer(x).detach(), rtol=1e-4, atol=1e-5)
    timer = OnnxRuntimeTimer(LatencyKey(runtime="onnxruntime"), TimingSettings(warmup=1, repeats=3, min_block_ms=0.2))
    assert timer.layer(torch.nn.Linear(5, 3), (1, 5)) >= 0  # less the session's own overhead: about nothing
    assert timer.layer(torch.nn.Conv2d(16, 32, 3, padding=1), (1, 16, 32, 32)) > 0


@pytest.mark.slow
def test_onnxruntime_times_the_exported_network(supernet):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from autoslim.latency import OnnxRuntimeTimer

    timer = OnnxRuntimeTimer(LatencyKey(runtime="onnxruntime"), TimingSettings(warmup=1, repeats=3, min_block_ms=0.2))
    assert measure_config(supernet, supernet.smallest_config(), timer) > 0


@pytest.mark.cuda
def test_cuda_is_timed_with_events(supernet):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from autoslim.latency import TorchTimer

    timer = TorchTimer(LatencyKey("cuda", batch=8), TimingSettings(warmup=2, repeats=3))
    assert timer.layer(torch.nn.Conv2d(4, 8, 3, padding=1), (8, 4, 8, 8)) > 0
    assert measure_config(supernet, supernet.smallest_config(), timer) > 0


def test_cuda_where_there_is_none_is_one_clear_error(monkeypatch):
    import torch

    from autoslim.latency import make_timer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available here"):
        make_timer(LatencyKey("cuda"))


def test_a_conv_along_the_channels_is_not_timed_and_the_model_still_predicts():
    from test_network_tracing import _EcaNet

    from autoslim.network.supernet import convert

    supernet = convert(_EcaNet("circular"), input_size=8, divisor=4).eval()  # two ECA gates: calls of kind "chconv"
    model = build_latency_model(supernet, FakeTimer(), networks=6)
    assert {t.module for t in model.layers} == {"stem.0", "body.0", "body.4", "head.0", "fc"}
    predict, timer = model.bind(supernet), FakeTimer()
    for config in [supernet.sample_config(random.Random(i)) for i in range(3)]:
        assert predict(config) == pytest.approx(measure_config(supernet, config, timer), rel=1e-9)

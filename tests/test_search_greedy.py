"""Tests of the greedy search (AutoSlim section 3.3) with fake costs and planted evaluators."""

from __future__ import annotations

import itertools

import pytest

from autoslim.budget import format_count
from autoslim.search.greedy import Score, Step, choice_leads, greedy_search
from autoslim.search.targets import Target, check_targets, parse_targets, pick, stop_limits
from autoslim.search.trajectory import TRAJECTORY_COLUMNS, append_step, pareto_front, read_trajectory, write_trajectory

# A chain image(3) -> a -> b -> c -> d -> head(10); "head" is the frozen classifier.
START = {"a": 8, "b": 8, "c": 8, "d": 8, "head": 10}
CHOICES = {"a": (2, 4, 6, 8), "b": (2, 4, 6, 8), "c": (2, 4, 6, 8), "d": (2, 4, 6, 8), "head": (10,)}
SMALLEST = {"a": 2, "b": 2, "c": 2, "d": 2, "head": 10}


def chain_cost(config):
    """MACs weight early layers by a larger feature map; params are the plain weight counts."""
    a, b, c, d, head = (config[k] for k in ("a", "b", "c", "d", "head"))
    macs = 16 * (3 * a + a * b) + 4 * (b * c + c * d) + d * head
    params = 3 * a + a * b + b * c + c * d + d * head
    return macs, params


def planted(penalties, calls=None):
    """An evaluator whose accuracy falls by ``penalties[unit]`` per channel removed; other units are free."""

    def evaluate(current, candidates):
        if calls is not None:
            calls.append([unit for unit, _ in candidates])
        scores = []
        for _, config in candidates:
            accuracy = 0.9 - sum(p * (START[u] - config[u]) for u, p in penalties.items())
            scores.append(Score(accuracy=accuracy, loss=1.0 - accuracy, kl=0.9 - accuracy))
        return scores

    return evaluate


EVALUATE = planted({"a": 0.01, "c": 0.02})


def run(**options):
    return list(greedy_search(START, CHOICES, chain_cost, EVALUATE, **options))


def test_step_zero_evaluates_the_start_config_alone():
    calls = []
    first = next(greedy_search(START, CHOICES, chain_cost, planted({}, calls)))
    assert calls == [[None]]
    assert (first.step, first.unit, first.channels, first.candidates) == (0, None, None, 1)
    assert first.config == START
    assert (first.macs, first.params) == chain_cost(START)


def test_free_units_are_shrunk_first():
    steps = run()
    shrunk = [s.unit for s in steps[1:]]
    assert set(shrunk[:6]) == {"b", "d"}
    assert steps[6].config["b"] == 2 and steps[6].config["d"] == 2
    assert steps[6].accuracy == pytest.approx(0.9)
    # then the cheaper of the costly units, a, before c
    assert shrunk[6:9] == ["a", "a", "a"]


def test_macs_fall_every_step_and_the_search_ends_at_the_smallest_config():
    steps = run()
    assert [s.step for s in steps] == list(range(len(steps)))
    assert all(after.macs < before.macs for before, after in zip(steps, steps[1:]))
    assert steps[-1].config == SMALLEST
    assert len(steps) == 1 + 4 * 3  # four units, three shrinks each
    assert "head" not in {s.unit for s in steps}
    # candidates: every unit above its smallest choice
    assert steps[1].candidates == 4 and steps[-1].candidates == 1


def test_step_records_the_change_and_its_cost():
    for before, after in zip(run(), run()[1:]):
        assert after.config[after.unit] == after.channels < before.config[after.unit]
        changed = {u for u in START if after.config[u] != before.config[u]}
        assert changed == {after.unit}
        assert (after.macs, after.params) == chain_cost(after.config)
        assert after.score == pytest.approx((after.kl - before.kl) / (before.macs - after.macs))  # KL gained per MAC saved
    for after in run(criterion="accuracy")[1:]:
        assert after.score == after.accuracy


def test_search_stops_at_the_stop_target():
    largest = chain_cost(START)[0]
    stop = largest // 2
    steps = run(stop_macs=stop)
    assert steps[-1].macs <= stop
    assert all(s.macs > stop for s in steps[:-1])
    assert steps[-1].config != SMALLEST


def test_search_stops_only_when_every_limit_is_met():
    macs_limit, params_limit = chain_cost(START)[0] - 1, 40
    steps = run(stop_macs=macs_limit, stop_params=params_limit)
    assert steps[-1].macs <= macs_limit and steps[-1].params <= params_limit
    assert all(s.macs > macs_limit or s.params > params_limit for s in steps[:-1])
    assert len(steps) > 2  # the MAC limit alone is met after one step


def test_every_target_takes_the_first_point_that_meets_it():
    targets = parse_targets(["900", "600"], ["60"])
    check_targets(targets, largest=chain_cost(START), smallest=chain_cost(SMALLEST))
    stop_macs, stop_params, stop_latency = stop_limits(targets)
    assert (stop_macs, stop_params, stop_latency) == (600, 60, None)
    steps = run(stop_macs=stop_macs, stop_params=stop_params)
    for target in targets:
        chosen = pick(steps, target)
        assert target.met_by(chosen.macs, chosen.params)
        earlier = steps[: steps.index(chosen)]
        assert earlier and not any(target.met_by(s.macs, s.params) for s in earlier)


def test_pick_fails_when_the_trajectory_never_meets_the_target():
    steps = run(stop_macs=900)
    with pytest.raises(ValueError, match="resume"):
        pick(steps, Target("flops", 100))


def test_params_only_target_reduces_params():
    steps = run(stop_params=100)
    assert steps[-1].params <= 100
    assert all(after.params < before.params for before, after in zip(steps, steps[1:]))


def test_candidates_that_save_no_macs_are_skipped():
    # "w" changes neither cost but is free: accuracy would pick it, the cost rule must not.
    start = dict(START, w=8)
    choices = dict(CHOICES, w=(4, 8))
    steps = list(greedy_search(start, choices, chain_cost, EVALUATE))
    assert "w" not in {s.unit for s in steps}
    assert steps[-1].config == dict(SMALLEST, w=8)  # stops when only w could shrink


def test_loss_breaks_accuracy_ties_then_unit_order():
    def evaluate(current, candidates):
        return [Score(0.5, 0.3 if unit == "c" else 0.4) for unit, _ in candidates]

    steps = list(itertools.islice(greedy_search(START, CHOICES, chain_cost, evaluate, criterion="accuracy"), 2))
    assert steps[1].unit == "c"

    def flat(current, candidates):
        return [Score(0.5, 0.4) for _ in candidates]

    steps = list(itertools.islice(greedy_search(START, CHOICES, chain_cost, flat, criterion="accuracy"), 2))
    assert steps[1].unit == "a"


def test_drop_per_mac_picks_differently_from_accuracy():
    start, choices = {"x": 2, "y": 2}, {"x": (1, 2), "y": (1, 2)}

    def cost(config):
        return 1000 * config["x"] + 10 * config["y"], config["x"] + config["y"]

    def evaluate(current, candidates):
        return [Score(0.9 - 0.02 * (2 - c["x"]) - 0.01 * (2 - c["y"]), 0.1) for _, c in candidates]

    by_accuracy = list(greedy_search(start, choices, cost, evaluate, criterion="accuracy"))
    by_drop = list(greedy_search(start, choices, cost, evaluate, criterion="drop-per-mac"))
    assert by_accuracy[1].unit == "y"  # loses 0.01 instead of 0.02
    assert by_drop[1].unit == "x"  # loses 0.02 for 1000 MACs instead of 0.01 for 10
    assert by_drop[1].score == pytest.approx(0.02 / 1000)


def test_drop_per_mac_takes_the_free_step_that_saves_most():
    # x and y both cost nothing in accuracy (y even gains a little): the ratio would pick y, which saves 10 MACs.
    start, choices = {"x": 2, "y": 2, "z": 2}, {"x": (1, 2), "y": (1, 2), "z": (1, 2)}

    def cost(config):
        return 1000 * config["x"] + 10 * config["y"] + 500 * config["z"], sum(config.values())

    def evaluate(current, candidates):
        return [Score(0.9 + 0.001 * (2 - c["y"]) - 0.05 * (2 - c["z"]), 0.1) for _, c in candidates]

    steps = list(greedy_search(start, choices, cost, evaluate, criterion="drop-per-mac"))
    assert [s.unit for s in steps[1:]] == ["x", "y", "z"]
    assert steps[1].score == 0.0 and steps[1].runner_up == pytest.approx(-0.001 / 10)


def test_unknown_criterion_and_bad_evaluator_are_errors():
    with pytest.raises(ValueError, match="drop-per-mac"):
        run(criterion="latency")
    with pytest.raises(ValueError, match="one Score per candidate"):
        list(greedy_search(START, CHOICES, chain_cost, lambda current, candidates: []))


def test_killed_and_resumed_search_equals_an_uninterrupted_one(tmp_path):
    path = tmp_path / "trajectory.csv"
    full = run()
    for step in itertools.islice(greedy_search(START, CHOICES, chain_cost, EVALUATE), 5):
        append_step(path, step)

    history = read_trajectory(path, START)
    assert history == full[:5]
    assert [s.config for s in history] == [s.config for s in full[:5]]

    calls = []
    rest = list(greedy_search(START, CHOICES, chain_cost, planted({"a": 0.01, "c": 0.02}, calls), history=history))
    assert [None] not in calls  # step 0 is not evaluated again
    assert history + rest == full
    assert rest[0].step == 5


def test_resume_from_a_finished_search_yields_nothing():
    steps = run(stop_macs=900)
    assert list(greedy_search(START, CHOICES, chain_cost, EVALUATE, stop_macs=900, history=steps)) == []


def test_resume_with_a_foreign_history_is_an_error():
    steps = run()[:3]
    with pytest.raises(ValueError, match="start config"):
        list(greedy_search(dict(START, a=6), CHOICES, chain_cost, EVALUATE, history=steps))


def test_trajectory_file_round_trips_exactly(tmp_path):
    path = tmp_path / "trajectory.csv"
    steps = run(criterion="drop-per-mac")
    for step in steps:
        append_step(path, step)
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(TRAJECTORY_COLUMNS)
    assert len(lines) == 1 + len(steps)
    back = read_trajectory(path, START)
    assert back == steps
    assert [s.seconds for s in back] == [s.seconds for s in steps]
    assert back[0].unit is None and back[0].channels is None


def test_truncated_last_line_is_dropped_and_can_be_repaired(tmp_path):
    path = tmp_path / "trajectory.csv"
    steps = run()
    for step in steps[:4]:
        append_step(path, step)
    with open(path, "a") as handle:
        handle.write("4,a,6,1234,56,0.8")  # killed mid-row: no newline, last number cut short

    assert read_trajectory(path, START) == steps[:4]
    with pytest.raises(ValueError, match="repair=True"):
        append_step(path, steps[4])

    assert read_trajectory(path, START, repair=True) == steps[:4]
    assert path.read_text().endswith("\n")
    assert not (tmp_path / "trajectory.csv.tmp").exists()
    for step in steps[4:]:
        append_step(path, step)
    assert read_trajectory(path, START) == steps


def test_truncated_header_reads_as_empty(tmp_path):
    path = tmp_path / "trajectory.csv"
    path.write_text("step,unit,chan")
    assert read_trajectory(path, START, repair=True) == []
    append_step(path, run()[0])
    assert read_trajectory(path, START) == run()[:1]


def test_malformed_trajectories_are_errors(tmp_path):
    path = tmp_path / "trajectory.csv"
    with pytest.raises(FileNotFoundError, match="run the search"):
        read_trajectory(path, START)
    write_trajectory(path, run()[:3])
    text = path.read_text()
    path.write_text(text.replace(",b,", ",zz,"))
    with pytest.raises(ValueError, match="'zz' is not in the start config"):
        read_trajectory(path, START)
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a trajectory"):
        read_trajectory(path, START)


@pytest.mark.parametrize(
    "flops, params, labels",
    [
        (["300M"], [], ["flops-300M"]),
        (["1.2G"], [], ["flops-1.2G"]),
        (["3e8"], [], ["flops-300M"]),
        (["450k"], ["2M"], ["flops-450k", "params-2M"]),
        ([], ["2.5M"], ["params-2.5M"]),
        (["300M", "300e6", "200M"], [], ["flops-300M", "flops-200M"]),
        (["950"], [], ["flops-950"]),
    ],
)
def test_parse_targets_labels(flops, params, labels):
    assert [t.label for t in parse_targets(flops, params)] == labels


def test_parse_targets_rejects_bad_budgets():
    with pytest.raises(ValueError, match="300M"):
        parse_targets(["lots"], [])
    with pytest.raises(ValueError, match="flops, params, latency"):
        Target("energy", 5)


def test_check_targets_rejects_unreachable_targets():
    largest, smallest = (300_000_000, 3_500_000), (40_000_000, 500_000)
    check_targets(parse_targets(["100M"], ["1M"]), largest=largest, smallest=smallest)

    with pytest.raises(ValueError) as error:
        check_targets(parse_targets(["10M"], []), largest=largest, smallest=smallest)
    message = str(error.value)
    assert "flops-10M" in message and "below the smallest" in message
    assert format_count(40_000_000) in message and format_count(300_000_000) in message

    with pytest.raises(ValueError) as error:
        check_targets(parse_targets([], ["100k"]), largest=largest, smallest=smallest)
    assert "params-100k" in str(error.value) and format_count(500_000) in str(error.value)


def test_check_targets_rejects_a_target_the_largest_already_meets():
    largest, smallest = (300_000_000, 3_500_000), (40_000_000, 500_000)
    for budget in ("300M", "400M"):
        with pytest.raises(ValueError) as error:
            check_targets(parse_targets([budget], []), largest=largest, smallest=smallest)
        message = str(error.value)
        assert "already met by the largest" in message
        assert format_count(40_000_000) in message and format_count(300_000_000) in message


def _point(macs, accuracy):
    return Step(0, None, None, macs, 0, accuracy, 0.0, accuracy, 1, 0.0, {})


def test_pareto_front_drops_dominated_points():
    points = [_point(100, 0.90), _point(80, 0.91), _point(60, 0.85), _point(50, 0.86), _point(40, 0.80),
              _point(50, 0.86)]
    front = pareto_front(points)
    assert [(p.macs, p.accuracy) for p in front] == [(40, 0.80), (50, 0.86), (80, 0.91)]


def test_pareto_front_of_a_trajectory_keeps_its_best_points():
    steps = run()
    front = pareto_front(steps)
    assert front[0].macs == steps[-1].macs
    assert all(x.macs < y.macs and x.accuracy < y.accuracy for x, y in zip(front, front[1:]))
    for step in steps:
        assert any(f.macs <= step.macs and f.accuracy >= step.accuracy for f in front)


def test_each_step_records_the_runner_up_of_its_criterion():
    # a costs 0.01 per channel, c 0.02, b and d nothing: from the start, b or d (0.9) lead; then b, d, a...
    steps = run(criterion="accuracy")
    assert steps[0].runner_up is None
    first = steps[1]
    assert first.unit == "b" and first.score == pytest.approx(0.9)
    assert first.runner_up == pytest.approx(0.9)  # d ties with b; the unit order decided
    once_free_units_are_gone = next(s for s in steps if s.unit == "a")
    assert once_free_units_are_gone.score == pytest.approx(once_free_units_are_gone.runner_up + 0.02)  # a over c


def test_choice_leads_count_ties_and_narrow_leads_in_images():
    steps = run(criterion="accuracy")
    leads = choice_leads(steps, batch=1000)
    with_runner_up = [s for s in steps if s.runner_up is not None]
    images = [round((s.score - s.runner_up) * 1000) for s in with_runner_up]
    assert leads["steps"] == len(with_runner_up) == len(steps) - 1 - sum(s.candidates == 1 for s in steps[1:])
    assert leads["ties"] == images.count(0) > 0
    assert leads["within_1pct"] == sum(i <= 10 for i in images)
    assert 0 < leads["within_1pct"] < leads["steps"]
    assert choice_leads(steps[:1], batch=1000) is None


def test_a_trajectory_without_the_runner_up_column_is_read_and_upgraded(tmp_path):
    path = tmp_path / "trajectory.csv"
    steps = run(criterion="drop-per-mac")[:4]
    old_columns = [c for c in TRAJECTORY_COLUMNS if c not in ("runner_up", "kl", "latency_ms")]
    rows = [",".join(old_columns)]
    for s in steps:
        row = dict(step=s.step, unit=s.unit or "", channels="" if s.channels is None else s.channels, macs=s.macs,
                   params=s.params, accuracy=s.accuracy, loss=s.loss, score=s.score, candidates=s.candidates,
                   seconds=s.seconds)
        rows.append(",".join(str(row[c]) for c in old_columns))
    path.write_text("\n".join(rows) + "\n")

    back = read_trajectory(path, START)
    assert [s.config for s in back] == [s.config for s in steps]
    assert all(s.runner_up is None for s in back)
    assert path.read_text().splitlines()[0] == ",".join(old_columns)  # untouched without repair

    back = read_trajectory(path, START, repair=True)
    assert path.read_text().splitlines()[0] == ",".join(TRAJECTORY_COLUMNS)
    rest = list(greedy_search(START, CHOICES, chain_cost, EVALUATE, history=back, criterion="drop-per-mac"))
    for step in rest:
        append_step(path, step)
    assert [s.config for s in read_trajectory(path, START)] == [s.config for s in run(criterion="drop-per-mac")]
    with pytest.raises(ValueError, match="no KL divergence"):  # the default signal needs what it never recorded
        next(greedy_search(START, CHOICES, chain_cost, EVALUATE, history=back))


def test_a_trajectory_without_the_latency_column_is_read_and_resumed(tmp_path):
    path = tmp_path / "trajectory.csv"
    whole = run(stop_macs=500)
    write_trajectory(path, whole[:3])
    lines = path.read_text().splitlines()
    assert lines[0].endswith(",kl,latency_ms")
    path.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")  # a search made before latency

    back = read_trajectory(path, START, repair=True)
    assert back == whole[:3] and all(s.latency_ms is None for s in back)
    assert path.read_text().splitlines()[0] == ",".join(TRAJECTORY_COLUMNS)
    for step in greedy_search(START, CHOICES, chain_cost, EVALUATE, history=back, stop_macs=500):
        append_step(path, step)
    assert read_trajectory(path, START) == whole


def test_latency_round_trips_through_the_trajectory_file(tmp_path):
    def cost(config):
        macs, params = chain_cost(config)
        return macs, params, macs / 1e3 + 0.1

    steps = list(greedy_search(START, CHOICES, cost, EVALUATE, stop_latency=0.6))
    assert steps[-1].latency_ms <= 0.6 and all(s.latency_ms is not None for s in steps)
    write_trajectory(tmp_path / "t.csv", steps)
    assert read_trajectory(tmp_path / "t.csv", START) == steps
    assert pick(steps, Target("latency", 0.8)) == next(s for s in steps if s.latency_ms <= 0.8)

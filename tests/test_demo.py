"""``autoslim demo`` end to end with a few epochs (slow: the whole pipeline)."""

import json

import pytest
from click.testing import CliRunner

from cli.main import cli


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "--out", str(out), "--epochs", "2", "--retrain-epochs", "1",
                                      "--seeds", "2"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert 1 <= len(summary["rows"]) <= 3 and summary["seeds"] == [0, 1]
    for row in summary["rows"]:
        assert len(row["searched_accuracy"]) == len(row["uniform_accuracy"]) == 2
        assert all(0 <= a <= 1 for a in row["searched_accuracy"] + row["uniform_accuracy"])
        assert row["uniform_macs"] <= row["searched_macs"]
        assert row["searched_sd"] >= 0 and row["uniform_sd"] >= 0
    uniform = summary["uniform"]
    assert [u["width"] for u in uniform] == sorted((u["width"] for u in uniform), reverse=True)
    assert (out / "search" / "pareto.png").is_file()
    assert len(list((out / "models").glob("*.pt"))) == len(summary["rows"])
    assert " ± " in result.output and "held-out pts" in result.output


def test_demo_budgets_follow_the_rule():
    from autoslim.demo import choose_budgets

    scores = [{"width": w, "macs": int(w * 1000), "accuracy": a}
              for w, a in ((0.5, 0.95), (0.45, 0.95), (0.4, 0.945), (0.3, 0.93), (0.2, 0.90), (0.1, 0.80))]
    picks = choose_budgets(scores, (1.0, 3.0, 6.0))
    assert [p["width"] for p in picks] == [0.3, 0.2, 0.1]
    assert [p["drop"] for p in picks] == [1.0, 3.0, 6.0]
    # no uniform network loses that much: the narrowest one, once
    assert [p["width"] for p in choose_budgets(scores[:3], (1.0, 3.0))] == [0.4]

"""``autoslim demo`` end to end with a few epochs (slow: the whole pipeline)."""

import json

import pytest
from click.testing import CliRunner

from cli.main import cli


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "--out", str(out), "--epochs", "2", "--retrain-epochs", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["rows"]) == 3
    for row in summary["rows"]:
        assert 0 <= row["searched_accuracy"] <= 1 and 0 <= row["uniform_accuracy"] <= 1
        assert row["uniform_macs"] <= row["searched_macs"]
    assert (out / "search" / "pareto.png").is_file()
    assert len(list((out / "models").glob("*.pt"))) == 3
    assert "AutoSlim acc" in result.output

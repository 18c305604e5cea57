"""``autoslim spaces`` and ``autoslim cost``: tables, JSON, and bad input as one line with a non-zero exit."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cli.main import cli


def _run(*args):
    result = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize("space,macs", [("mobilenet_v2", 300_774_272), ("resnet50", 4_089_184_256), ("mnasnet", 314_415_872)])
def test_cost_json(space, macs):
    result = _run("cost", space, "--width", "1.0", "--input-size", "224", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["macs"] == macs and isinstance(data["params"], int)


def test_cost_table_and_config_file(tmp_path):
    result = _run("cost", "resnet20_cifar", "--width", "1.0", "--json")
    channels = json.loads(result.output)["channels"]
    path = tmp_path / "c.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"format": "autoslim-config/1", "space": "resnet20_cifar", "channels": channels}))
    result = _run("cost", "resnet20_cifar", "--config", str(path))
    assert result.exit_code == 0, result.output
    assert "40,813,184" in result.output


def test_cost_saves_the_uniform_config(tmp_path):
    from autoslim.channel_config import load_config
    from autoslim.spaces import build_supernet, load_space

    path = tmp_path / "uniform.yaml"
    result = _run("cost", "resnet20_cifar", "--width", "0.41", "--save-config", str(path))
    assert result.exit_code == 0, result.output
    config = load_config(path)
    supernet = build_supernet(load_space("resnet20_cifar"))
    assert config.space == "resnet20_cifar" and config.source == {"uniform": 0.41}
    assert config.channels == supernet.uniform_config(0.41) and config.channels["layer3.0.conv2"] == 24
    assert config.cost["macs"] == supernet.cost(config.channels).macs == 8_941_808
    assert config.space_options == {"num_classes": 10, "input_size": 32, "in_channels": 3, "width_mult": 1.5}
    result = _run("cost", "resnet20_cifar", "--config", str(path))
    assert result.exit_code == 0 and "8,941,808" in result.output
    before = path.read_bytes()
    result = _run("cost", "resnet20_cifar", "--width", "1.0", "--save-config", str(path))
    assert result.exit_code == 2 and "--force" in result.output and path.read_bytes() == before
    assert _run("cost", "resnet20_cifar", "--width", "1.0", "--save-config", str(path), "--force").exit_code == 0
    assert load_config(path).channels == supernet.uniform_config(1.0)
    result = _run("cost", "resnet20_cifar", "--config", str(path), "--save-config", str(tmp_path / "x.yaml"))
    assert result.exit_code == 2 and "--width" in result.output and not (tmp_path / "x.yaml").exists()


@pytest.mark.parametrize("args,message", [
    (["cost", "nope", "--width", "1"], "known spaces"),
    (["cost", "mobilenet_v2", "--width", "2"], "outside the range (0, 1.5]"),
    (["cost", "mobilenet_v2", "--width", "0"], "outside the range"),
    (["cost", "resnet20_cifar", "--config", "missing.yaml"], "no such file"),
    (["spaces", "--units", "nope"], "known spaces"),
])
def test_bad_input_is_one_line(args, message):
    result = _run(*args)
    assert result.exit_code == 1
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bad_config_names_the_unit(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("format: autoslim-config/1\nspace: resnet20_cifar\nchannels: {conv1: 500}\n")
    result = _run("cost", "resnet20_cifar", "--config", str(path))
    assert result.exit_code == 1 and "conv1" in result.output and "1..24" in result.output
    path.write_text("format: autoslim-config/1\nspace: resnet20_cifar\nchannels: {conv1: [\n")
    result = _run("cost", "resnet20_cifar", "--config", str(path))
    assert result.exit_code == 1 and "c.yaml:" in result.output and "malformed YAML" in result.output


def test_usage_error_exit_2():
    result = _run("cost", "mobilenet_v2")
    assert result.exit_code == 2


def test_spaces_table_and_units():
    result = _run("spaces", "--units", "resnet20_cifar")
    assert result.exit_code == 0
    assert "layer1.0.conv1" in result.output and "image channels" in result.output
    assert "12 slimmable" in result.output


def test_help_does_not_import_torch():
    code = "import sys; from cli.main import cli; cli(['--help'], standalone_mode=False); print('torch' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip().splitlines()[-1] == "False"


def test_progress_prints_periodic_lines_when_not_a_terminal():
    import io

    from rich.console import Console

    from cli.console import _LoggedProgress

    now = [0.0]
    out = io.StringIO()
    bar = _LoggedProgress(console=Console(file=out, width=120), get_time=lambda: now[0])
    task = bar.add_task("epoch 1/3", total=100, info="")
    for step in range(1, 101):
        now[0] = step * 1.0  # one second per step: a line every 30 steps, and the last one
        bar.update(task, completed=step, info=f"loss {step}")
    lines = [line for line in out.getvalue().splitlines() if line.startswith("epoch 1/3:")]
    assert [line.split()[2] for line in lines] == ["1/100", "31/100", "61/100", "91/100", "100/100"]
    assert "eta" in lines[1] and "loss 31" in lines[1]


def test_progress_never_prints_a_line_twice_when_not_a_terminal():
    import io

    from rich.console import Console

    from cli.console import _LoggedProgress

    now = [0.0]
    out = io.StringIO()
    with _LoggedProgress(console=Console(file=out, width=120), get_time=lambda: now[0]) as bar:
        task = bar.add_task("search", total=10, info="")
        for step in range(1, 11):
            now[0] = step * 40.0
            bar.update(task, completed=step, info="same")
        for _ in range(3):  # callers update a finished task again (the last step, a final summary)
            now[0] += 40.0
            bar.update(task, completed=10, info="same")
    lines = out.getvalue().splitlines()
    assert len(lines) == len(set(lines)) == 10
    assert lines[-1].startswith("search: 10/10") and "eta" not in lines[-1]


def test_listing_the_spaces_does_not_import_torch():
    code = "import sys; from cli.main import cli; cli(['spaces'], standalone_mode=False); print('torch' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip().splitlines()[-1] == "False"
    assert "search spaces" in output and "digits" in output

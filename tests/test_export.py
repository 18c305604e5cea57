"""``autoslim export-config`` on a briefly trained digits supernet: config files, standalone models, checks."""

import csv
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from click.testing import CliRunner
from torch.testing import assert_close

from autoslim.channel_config import load_config, save_config
from autoslim.checkpoint import load_run
from autoslim.export import export_torchscript
from autoslim.network.static import materialize
from autoslim.search.targets import Target
from autoslim.seeds import derive_seed
from autoslim.spaces import load_space
from autoslim.training.calibrate import recalibrate
from autoslim.training.settings import resolve_settings
from autoslim.training.supernet_training import train_supernet
from cli.main import cli


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory):
    """A one-epoch digits supernet searched down to 1M MACs."""
    root = tmp_path_factory.mktemp("export")
    train_supernet(resolve_settings(load_space("digits_cnn"), epochs=1, batch_size=128, num_subnets=3, device="cpu"),
                   root / "run")
    result = CliRunner().invoke(cli, ["search", str(root / "run"), "--flops", "1M", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return root / "run" / "search"


def _export(*args):
    return CliRunner().invoke(cli, ["export-config", *map(str, args)])


def _trajectory_macs(search_dir):
    with open(search_dir / "trajectory.csv") as stream:
        return [int(row["macs"]) for row in csv.DictReader(stream)]


def _reference(run_dir, channels, images):
    """The supernet's outputs at ``channels``, BatchNorm recalibrated as training's evaluation does it (augmented)."""
    run = load_run(run_dir)
    data = run.load_data()
    run.supernet.set_config(channels)
    generator = torch.Generator().manual_seed(derive_seed("calibration", run.settings.seed))
    recalibrate(run.supernet, data.batches("train", min(run.settings.eval_batch_size, len(data.train)), shuffle=True,
                                           augment=True, generator=generator), run.settings.calib_batches)
    with torch.no_grad():
        return run.supernet.eval()(images)


def test_exported_model_runs_without_autoslim(search_dir, tmp_path):
    result = _export(search_dir, "--flops", "1M", "--out", tmp_path / "c.yaml", "--model", tmp_path / "model.pt")
    assert result.exit_code == 0, result.output
    assert "model.pt: torchscript, checked: its outputs equal the supernet's" in " ".join(result.output.split())
    result = _export(search_dir, "--flops", "1M", "--out", tmp_path / "c.yaml", "--model", tmp_path / "model.pt2")
    assert result.exit_code == 0, result.output
    channels = load_config(tmp_path / "c.yaml").channels
    run = load_run(search_dir.parent)
    images = next(iter(run.load_data().batches("test", 40)))[0]
    torch.save(images, tmp_path / "images.pt")
    torch.save(_reference(search_dir.parent, channels, images), tmp_path / "reference.pt")
    # -I: no user site, no cwd on sys.path; the blocker makes any import of the project fail loudly
    script = textwrap.dedent(f"""
        import importlib.abc, json, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('autoslim', 'cli', 'search_spaces'):
                    raise ImportError('blocked: ' + name)
        sys.meta_path.insert(0, Block())
        import torch
        torch.set_num_threads(1)
        images = torch.load({str(tmp_path / 'images.pt')!r})
        reference = torch.load({str(tmp_path / 'reference.pt')!r})
        extra = {{'autoslim.json': ''}}
        scripted = torch.jit.load({str(tmp_path / 'model.pt')!r}, _extra_files=extra)
        program = torch.export.load({str(tmp_path / 'model.pt2')!r}).module()
        with torch.no_grad():
            torch.testing.assert_close(scripted(images), reference, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(scripted(images[:3]), reference[:3], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(program(images), reference, rtol=1e-4, atol=1e-5)
        assert not any(m.split('.')[0] in ('autoslim', 'cli', 'search_spaces') for m in sys.modules)
        print(json.loads(extra['autoslim.json'])['channels'])
        """)
    done = subprocess.run([sys.executable, "-I", "-W", "ignore", "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str(channels)  # the file carries its config


def test_config_round_trips_and_matches_the_search(search_dir, tmp_path):
    result = _export(search_dir, "--flops", "1M", "--out", tmp_path / "a.yaml")
    assert result.exit_code == 0, result.output
    config = load_config(tmp_path / "a.yaml")
    save_config(tmp_path / "b.yaml", config)
    assert load_config(tmp_path / "b.yaml") == config
    searched = load_config(search_dir / "configs" / "flops-1M.yaml")
    assert config.channels == searched.channels and config.cost == searched.cost
    assert config.source["target"] == {"flops": 1_000_000} and config.source["step"] == searched.source["step"]
    run = load_run(search_dir.parent)
    assert run.supernet.cost(config.channels).macs == config.cost["macs"] <= 1_000_000
    assert config.space == "digits_cnn" and config.space_options == run.space_options


def test_a_target_the_search_was_not_given_takes_the_first_point_meeting_it(search_dir, tmp_path):
    macs = _trajectory_macs(search_dir)
    budget = (macs[2] + macs[3]) // 2  # between steps 2 and 3: step 3 is the first point within it
    result = _export(search_dir, "--flops", budget, "--out", tmp_path / "t.yaml")
    assert result.exit_code == 0, result.output
    config = load_config(tmp_path / "t.yaml")
    assert config.source["step"] == 3 and config.cost["macs"] == macs[3]
    assert Target("flops", budget).label not in json.loads((search_dir / "summary.json").read_text())["targets"]
    result = _export(search_dir, "--step", 5, "--out", tmp_path / "s.yaml")
    assert result.exit_code == 0 and load_config(tmp_path / "s.yaml").cost["macs"] == macs[5]


@pytest.mark.parametrize("args,message", [
    (["--flops", "10k"], "no point of the trajectory meets target flops-10k"),
    (["--step", "999"], "--step 999: the trajectory of"),
    (["--flops", "1M", "--onnx", "m.onnx"], "pip install 'autoslim[onnx]'"),
])
def test_bad_requests_are_one_line(search_dir, tmp_path, monkeypatch, args, message):
    import autoslim.export.formats

    monkeypatch.setattr(autoslim.export.formats, "ONNX_PACKAGES", ("onnx", "autoslim_test_no_such_package"))
    monkeypatch.chdir(tmp_path)
    result = _export(search_dir, *args, "--out", tmp_path / "c.yaml")
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "c.yaml").exists()


def test_existing_files_need_force(search_dir, tmp_path):
    (tmp_path / "c.yaml").write_text("mine\n")
    result = _export(search_dir, "--flops", "1M", "--out", tmp_path / "c.yaml")
    assert result.exit_code == 1 and "--force" in result.output and (tmp_path / "c.yaml").read_text() == "mine\n"
    assert _export(search_dir, "--flops", "1M", "--out", tmp_path / "c.yaml", "--force").exit_code == 0
    assert _export(search_dir, "--flops", "1M", "--out", tmp_path / "c.yaml").exit_code == 0  # same config: fine
    assert _export(search_dir, "--out", tmp_path / "c.yaml").exit_code == 2  # no target: usage error


def test_an_export_that_differs_from_the_supernet_is_not_written(search_dir, tmp_path):
    run = load_run(search_dir.parent)
    static = materialize(run.supernet, run.supernet.smallest_config()).eval()
    images = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        reference = static(images)
    export_torchscript(static, images, reference, tmp_path / "ok.pt")
    with pytest.raises(RuntimeError, match="does not reproduce the supernet.*nothing was written"):
        export_torchscript(static, images, reference + 0.01 * reference.abs().max(), tmp_path / "bad.pt")
    assert (tmp_path / "ok.pt").is_file() and not (tmp_path / "bad.pt").exists()


def test_onnx_export_gives_the_supernet_outputs(search_dir, tmp_path):
    for name in ("onnx", "onnxscript"):
        pytest.importorskip(name)
    onnxruntime = pytest.importorskip("onnxruntime")
    result = _export(search_dir, "--flops", "1M", "--out", tmp_path / "c.yaml", "--onnx", tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output
    run = load_run(search_dir.parent)
    images = next(iter(run.load_data().batches("test", 16)))[0]
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]
    reference = _reference(search_dir.parent, load_config(tmp_path / "c.yaml").channels, images)
    assert_close(torch.from_numpy(outputs), reference, rtol=1e-4, atol=1e-5)

"""Every CNN family of torchvision.models converts to a supernet, unmodified (issue: any CNN).

For one model per family: the cost at width 1.0 equals FlopCounterMode / 2 of the original model (and its
parameter count); random configs run forward and backward in training mode (auxiliary heads included);
``materialize`` gives the supernet's output; and at least the expected share of units stays slimmable.
"""

import copy
import random

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from autoslim.network.static import materialize
from autoslim.network.supernet import convert
from torchvision_families import AUX as _AUX, FAMILIES


def _measured(model, size):
    model = copy.deepcopy(model).to("meta").eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size, device="meta"))
    return counter.get_total_flops() // 2, sum(p.numel() for p in model.parameters())


def _outputs(out):
    return [o for o in (out if isinstance(out, tuple) else (out,)) if o is not None]


@pytest.mark.parametrize("family,name,size,share", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_torchvision_family_converts(family, name, size, share):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10, **_AUX.get(name, {}))
    traced = max(224, size)
    supernet = convert(model, input_size=traced)
    cost = supernet.cost()
    assert (cost.macs, cost.params) == _measured(model, traced)

    slimmable = len(supernet.slimmable_units) / len(supernet.layer_units)
    print(f"{family}: {len(supernet.slimmable_units)}/{len(supernet.layer_units)} units slimmable ({slimmable:.0%})")
    assert slimmable >= share
    for unit in supernet.frozen_units:
        assert unit.frozen  # every frozen unit says why

    rng = random.Random(name)
    x = torch.randn(2, 3, size, size)
    for config in (supernet.smallest_config(), supernet.sample_config(rng)):
        supernet.set_config(config)
        supernet.train()
        supernet.zero_grad(set_to_none=True)
        outputs = _outputs(supernet(x))
        assert all(o.shape == (2, 10) for o in outputs)
        sum(o.sum() for o in outputs).backward()
        grads = [p.grad for p in supernet.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)

        supernet.eval()
        static = materialize(supernet, config).eval()
        with torch.no_grad():
            expected, got = supernet(x), static(x)
        assert expected.std() > 0
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        assert tuple(supernet.cost(config)) == _measured(static, traced)


def test_transformers_are_refused():
    model = torchvision.models.vit_b_16(weights=None, image_size=32, num_classes=10)
    with pytest.raises(ValueError, match="transformer"):
        convert(model, input_size=32)


def test_aux_heads_run_sliced_in_training_mode():
    model = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False, num_classes=10)
    supernet = convert(model, input_size=64)
    aux = [c for c in supernet.trace.calls if c.train_only]
    assert aux and all(c.module.startswith(("aux1", "aux2")) for c in aux)
    assert sum(supernet.cost_per_call()[i] for i, c in enumerate(supernet.trace.calls) if c.train_only) == 0
    supernet.set_config(supernet.smallest_config())
    assert supernet.model.aux1.conv.conv.active_in < 512  # the aux head reads the slimmed inception block
    logits, aux2, aux1 = supernet.train()(torch.randn(2, 3, 64, 64))
    assert aux1.shape == aux2.shape == logits.shape == (2, 10)


def test_training_mode_too_small_for_aux_head_is_a_clear_error():
    model = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False, num_classes=10)
    supernet = convert(model, input_size=96)  # inference runs at 96; the aux head needs more
    supernet.eval()(torch.randn(1, 3, 96, 96))
    with pytest.raises(ValueError, match="training mode"):
        supernet.train()(torch.randn(2, 3, 96, 96))


# -- the command line: torchvision:NAME and a user's model file ----------------------------------------------

EXAMPLE = "search_spaces/examples/custom_cnn.py:build"


def _cli(*args):
    from click.testing import CliRunner

    from cli.main import cli

    result = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in result.output
    return result


def test_user_model_file_runs_through_cost_and_units():
    from autoslim.spaces import build_supernet, configure_space, load_space

    result = _cli("spaces", "--units", EXAMPLE, "--num-classes", "10", "--input-size", "32")
    assert result.exit_code == 0, result.output
    assert "6 slimmable" in result.output and "image channels" in result.output
    for unit in ("stem.0", "block.body.0", "left.0", "right.0", "merge.0", "se.reduce"):
        assert unit in result.output
    result = _cli("cost", EXAMPLE, "--width", "1.0", "--num-classes", "10", "--input-size", "32", "--json")
    assert result.exit_code == 0, result.output
    import json

    reported = json.loads(result.output)
    space = configure_space(load_space(EXAMPLE), num_classes=10, input_size=32)
    supernet = build_supernet(space)
    units = {u.name: u for u in supernet.units}
    assert set(units["stem.0"].producers) == {"stem.0", "block.body.3"}  # the residual ties them
    assert set(units["merge.0"].producers) == {"merge.0", "se.expand"}  # the gate scales merge's channels
    merge = next(c for c in supernet.trace.calls if c.module == "merge.0")
    index = supernet.trace.unit_index()
    assert merge.inputs == ((index["left.0"], 1), (index["right.0"], 1))  # the concatenation's parts
    static = materialize(supernet, supernet.largest_config())
    assert reported["macs"] == _measured_at(static, 32)


def _measured_at(model, size):
    return _measured(model, size)[0]


def test_torchvision_width_mult_option():
    result = _cli("cost", "torchvision:mobilenet_v2", "--width-mult", "1.5", "--width", "0.75", "--json")
    assert result.exit_code == 0, result.output
    import json

    expected = _measured_at(torchvision.models.mobilenet_v2(width_mult=0.75), 224)
    assert json.loads(result.output)["macs"] == expected  # the 1.5x supernet's uniform 0.75 is torchvision's 0.75
    result = _cli("cost", "torchvision:resnet18", "--width-mult", "1.5", "--width", "1.0")
    assert result.exit_code != 0 and "no width multiplier" in result.output


def test_transformer_space_is_one_line():
    result = _cli("spaces", "--units", "torchvision:vit_b_16", "--input-size", "32")
    assert result.exit_code == 1 and "transformer" in result.output


@pytest.mark.slow
def test_torchvision_model_through_the_whole_pipeline(tmp_path):
    """SqueezeNet (concatenations) through train-supernet, search, export-config and retrain on fake data."""
    run, retrained = tmp_path / "run", tmp_path / "retrain"
    result = _cli("train-supernet", "--space", "torchvision:squeezenet1_1", "--dataset", "fake", "--epochs", "1",
                  "--batch-size", "64", "--out", str(run))
    assert result.exit_code == 0, result.output
    result = _cli("search", str(run), "--flops", "1M", "--eval-batch", "64")
    assert result.exit_code == 0, result.output
    result = _cli("export-config", str(run / "search"), "--flops", "1M", "--model", str(tmp_path / "model.pt"))
    assert result.exit_code == 0, result.output
    model = torch.jit.load(str(tmp_path / "model.pt"))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    result = _cli("retrain", str(run / "search" / "configs" / "flops-1M.yaml"), "--epochs", "1", "--baseline", "uniform",
                  "--out", str(retrained))
    assert result.exit_code == 0, result.output
    import json

    summary = json.loads((retrained / "summary.json").read_text())
    assert summary["macs"] <= 1_000_000 and summary["baseline"]["macs"] <= summary["macs"]


def test_a_run_records_a_user_model_file_so_that_it_reopens_from_anywhere(tmp_path, monkeypatch):
    from pathlib import Path

    from autoslim.spaces import build_supernet, configure_space, load_space
    from autoslim.training.settings import resolve_settings

    settings = resolve_settings(load_space(EXAMPLE), epochs=1)
    assert settings.space == f"{Path(EXAMPLE.split(':')[0]).resolve()}:build"
    result = _cli("cost", EXAMPLE, "--width", "0.5", "--num-classes", "10", "--input-size", "32",
                  "--save-config", str(tmp_path / "uniform.yaml"))
    assert result.exit_code == 0, result.output
    from autoslim.channel_config import load_config

    assert load_config(tmp_path / "uniform.yaml").space == settings.space  # a config file reopens from anywhere too
    monkeypatch.chdir(tmp_path)  # resume, search or export from another directory
    supernet = build_supernet(configure_space(load_space(settings.space), num_classes=10, input_size=32))
    assert len(supernet.slimmable_units) == 6


# -- multi-output networks: segmentation heads, feature pyramids -----------------------------------------------

def _multi_output_models():
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.models.segmentation import fcn_resnet50, lraspp_mobilenet_v3_large

    return {
        "lraspp": lambda: lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5),
        "fcn_aux": lambda: fcn_resnet50(weights=None, weights_backbone=None, num_classes=5, aux_loss=True),
        "fpn": lambda: resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5,
                                           norm_layer=torch.nn.BatchNorm2d),
    }


@pytest.mark.parametrize("name,share", [("lraspp", 0.8), ("fcn_aux", 0.85), ("fpn", 0.5)])
def test_multi_output_network_converts_costs_materializes_and_exports(name, share, tmp_path):
    from autoslim.export import export_torchscript

    model = _multi_output_models()[name]()
    supernet = convert(model, input_size=64)
    assert len(supernet.slimmable_units) / len(supernet.layer_units) >= share
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        full = model.eval()(x)
    config = supernet.sample_config(random.Random(name))
    supernet.set_config(config)
    supernet.train()
    sum(o.sum() for o in supernet(x).values()).backward()
    supernet.eval()
    static = materialize(supernet, config).eval()
    with torch.no_grad():
        expected, got = supernet(x), static(x)
    assert list(got) == list(expected) == list(full)
    for key in expected:
        assert got[key].shape == full[key].shape  # every output keeps its channels
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5)
    assert tuple(supernet.cost(config)) == _measured(static, 64)
    export_torchscript(static, x, expected, tmp_path / "model.pt")

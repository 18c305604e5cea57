"""Reading a trained network's weights: state dicts, training checkpoints, safetensors, TorchScript, retrain dirs."""

import hashlib

import pytest
import torch

from autoslim.spaces import build_model, load_space
from autoslim.weights import file_sha256, read_weights


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return build_model(load_space("digits_tiny")).eval()


def _same(weights, network):
    expected = network.state_dict()
    return weights.keys() == expected.keys() and all(torch.equal(weights[k], expected[k]) for k in expected)


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,  # torch.save(model.state_dict(), path): torchvision's and timm's weights
    lambda sd: {"epoch": 90, "state_dict": {f"module.{k}": v for k, v in sd.items()}},  # timm's train.py under DDP
    lambda sd: {"model": sd, "optimizer": {}, "args": {"lr": 0.1}},  # torchvision's reference scripts
    lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},  # a torch.compile'd model
    lambda sd: {"format": "autoslim-retrain/1", "network": "searched", "model": sd},  # an autoslim retrain checkpoint
])
def test_state_dicts_are_found_where_training_scripts_keep_them(tmp_path, network, wrap):
    path = tmp_path / "weights.pth"
    torch.save(wrap(network.state_dict()), path)
    weights, file = read_weights(path)
    assert _same(weights, network) and file == path


def test_a_retrain_directory_gives_its_checkpoint(tmp_path, network):
    torch.save({"format": "autoslim-retrain/1", "network": "uniform", "model": network.state_dict()},
               tmp_path / "checkpoint.pt")
    weights, file = read_weights(tmp_path)
    assert _same(weights, network) and file == tmp_path / "checkpoint.pt"
    assert file_sha256(file) == hashlib.sha256(file.read_bytes()).hexdigest()


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_safetensors_and_torchscript(tmp_path, network):
    from safetensors.torch import save_file

    save_file(network.state_dict(), str(tmp_path / "w.safetensors"))
    assert _same(read_weights(tmp_path / "w.safetensors")[0], network)
    torch.jit.trace(network, torch.randn(1, 1, 8, 8)).save(str(tmp_path / "model.pt"))  # export-config --model
    assert _same(read_weights(tmp_path / "model.pt")[0], network)


@pytest.mark.parametrize("content, message", [
    (b"not a checkpoint", "is not a readable weights file (truncated or corrupt?)"),
    ({"format": "autoslim-supernet/1", "model": {}},
     "is an autoslim checkpoint of format 'autoslim-supernet/1', not a trained network"),
    ({"format": "autoslim-retrain/1", "network": "joint", "model": {}}, "holds a joint retraining of several configs"),
    ({"epoch": 3, "arch": "resnet"},
     "holds no state dict (parameter names -> tensors), nor one under state_dict, model"),
    ([1, 2], "holds no state dict"),
    ("module", "holds pickled Python objects (search_spaces.models.DigitsCNN), not only tensors"),
])
def test_what_holds_no_weights_is_one_line_naming_the_file(tmp_path, network, content, message):
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(network if content == "module" else content, path)
    with pytest.raises(ValueError) as error:
        read_weights(path)
    assert message in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        read_weights(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="a directory without checkpoint.pt"):
        read_weights(tmp_path)

"""Space files: every bundled space loads and builds; bad spaces are clear errors."""

import pytest

from autoslim.spaces import SearchSpace, build_model, list_spaces, load_space


def test_bundled_spaces():
    assert set(list_spaces()) == {"mobilenet_v1", "mobilenet_v2", "mnasnet", "resnet50", "resnet20_cifar",
                                  "resnet56_cifar", "mobilenet_v2_cifar", "digits_cnn", "digits_tiny"}
    for name in list_spaces():
        space = load_space(name)
        assert isinstance(space, SearchSpace) and space.recipe.epochs > 0 and space.dataset


def test_unknown_space_lists_known_ones():
    with pytest.raises(ValueError, match="known spaces: digits_cnn, digits_tiny, mnasnet"):
        load_space("mobilenet_v9")


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("builder: search_spaces.models:digits_cnn\nwidht_mult: 1.5\n")
    with pytest.raises(ValueError, match="unknown key 'widht_mult'"):
        load_space(str(path))


def test_unknown_recipe_key_is_named(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("builder: search_spaces.models:digits_cnn\nrecipe: {epoch: 3}\n")
    with pytest.raises(ValueError, match="unknown recipe key 'epoch'"):
        load_space(str(path))


def test_space_from_yaml_path_and_user_file(tmp_path):
    model_file = tmp_path / "net.py"
    model_file.write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),\n"
        "                         nn.Flatten(), nn.Linear(8, 2))\n")
    space = load_space(f"{model_file}:build")
    model = build_model(space)
    assert model[-1].out_features == 2
    path = tmp_path / "mine.yaml"
    path.write_text(f"builder: {model_file}:build\ninput_size: 16\n")
    assert load_space(str(path)).input_size == 16


def test_space_without_width_argument_refuses_other_widths():
    with pytest.raises(ValueError, match="no width argument"):
        build_model(load_space("resnet50"), width=0.5)

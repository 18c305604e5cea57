"""Config files: round trip, validation against a supernet, malformed input."""

import pytest

from autoslim.channel_config import ChannelConfig, load_config, save_config
from autoslim.spaces import build_supernet, load_space


@pytest.fixture(scope="module")
def supernet():
    return build_supernet(load_space("resnet20_cifar"))


def test_round_trip(tmp_path, supernet):
    config = ChannelConfig(space="resnet20_cifar", channels=supernet.smallest_config(),
                           space_options={"num_classes": 10, "input_size": 32},
                           cost=dict(supernet.cost(supernet.smallest_config())._asdict()),
                           source={"search": "runs/x", "step": 3, "target": {"flops": 20_000_000}, "score": 0.5})
    path = tmp_path / "c.yaml"
    save_config(path, config)
    loaded = load_config(path)
    assert loaded == config
    assert list(loaded.channels) == list(config.channels)  # unit order survives
    assert supernet.validate_config(loaded.channels) == config.channels


@pytest.mark.parametrize("change,message", [
    (lambda c: c.update({"nope": 8}), "unknown unit 'nope'"),
    (lambda c: c.pop("layer1.0.conv1"), "missing unit"),
    (lambda c: c.update({"layer1.0.conv1": 999}), "'layer1.0.conv1': 999 channels is outside the allowed range 1..24"),
    (lambda c: c.update({"layer1.0.conv1": 0}), "outside the allowed range 1..24"),
    (lambda c: c.update({"fc": 5}), "frozen"),
])
def test_bad_configs_name_the_unit(supernet, change, message):
    config = supernet.largest_config()
    change(config)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        supernet.validate_config(config)


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("format: autoslim-config/1\nspace: x\nchannels:\n  a: [1, 2\n  b: 3\n")
    with pytest.raises(ValueError, match=r"bad\.yaml:\d+: malformed YAML"):
        load_config(path)


@pytest.mark.parametrize("text,message", [
    ("space: x\nchannels: {a: 1}\n", "format"),
    ("format: autoslim-config/1\nchannels: {a: 1}\n", "missing key 'space'"),
    ("format: autoslim-config/1\nspace: x\nchannels: {a: 1.5}\n", "unit 'a'"),
    ("format: autoslim-config/1\nspace: x\nchannels: {a: 1}\nextra: 1\n", "unknown key 'extra'"),
    ("- 1\n- 2\n", "not a channel config"),
])
def test_bad_config_files(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_config(tmp_path / "absent.yaml")

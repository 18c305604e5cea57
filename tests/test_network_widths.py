"""A supernet whose maximum is a trained network: widths read from a state dict, narrowing, key-by-key checks."""

import pytest
import torch

from autoslim.network.static import materialize
from autoslim.network.units import unit_choices
from autoslim.network.widths import check_keys, fitting_width, load_weights, narrow, widths_of
from autoslim.spaces import build_model, build_supernet, load_space

WHAT = "the network"


@pytest.fixture(scope="module")
def space():
    return load_space("digits_cnn")  # a 1.5x supernet


@pytest.fixture(scope="module")
def supernet(space):
    torch.manual_seed(0)
    return build_supernet(space)


def _narrow(space, supernet, widths):
    return narrow(supernet, widths, groups=space.groups, divisor=space.divisor, min_ratio=space.min_ratio)


def test_the_family_network_at_another_width_becomes_the_maximum(space, supernet):
    torch.manual_seed(1)
    trained = build_model(space, width=1.0).eval()  # the standard network inside the 1.5x space
    weights = trained.state_dict()
    widths = widths_of(supernet, weights, where="w.pt", what=WHAT)
    assert widths == supernet.uniform_config(1.0) == {"stem.0": 16, "conv2.0": 32, "conv3.0": 64, "block.0.0": 64}
    narrowed = _narrow(space, supernet, widths)
    assert narrowed.largest_config() == widths
    for unit in narrowed.slimmable_units:
        assert unit.choices == unit_choices(unit.maximum, groups=space.groups, divisor=space.divisor)
    # its uniform networks are the family's, up to the trained one: width 1.0, not 1.04 that builds the same network
    assert narrowed.width_mult == 1.0
    assert narrowed.uniform_config(0.5) == supernet.uniform_config(0.5)
    load_weights(narrowed, weights, where="w.pt", what=WHAT)
    narrowed.eval()
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(narrowed(x), trained(x), rtol=0, atol=0)  # the same tensors, the same ops
    assert build_supernet(space, widths=widths).largest_config() == widths  # what a checkpoint rebuilds
    assert supernet.largest_config() == {"stem.0": 24, "conv2.0": 48, "conv3.0": 96, "block.0.0": 96}  # untouched


def test_a_searched_network_keeps_every_unit_and_the_uniform_networks_that_fit(space, supernet):
    widths = {"stem.0": 8, "conv2.0": 44, "conv3.0": 40, "block.0.0": 96}
    weights = materialize(supernet, widths).state_dict()
    assert widths_of(supernet, weights, where="w.pt", what=WHAT) == widths
    narrowed = _narrow(space, supernet, widths)
    assert narrowed.largest_config() == widths
    width = narrowed.width_mult
    assert width == fitting_width(supernet, widths)
    fits = lambda w: all(c <= widths[n] for n, c in supernet.uniform_config(w).items())  # noqa: E731
    assert fits(width) and not fits(width + 0.01)  # the widest uniform network inside it
    assert narrowed.uniform_config(width) == supernet.uniform_config(width)  # never clipped
    with pytest.raises(ValueError, match="outside the supernet's range"):
        narrowed.uniform_config(width + 0.01)


def test_a_network_narrower_than_every_uniform_one_has_no_fitting_width(supernet):
    assert fitting_width(supernet, {"stem.0": 2, "conv2.0": 48, "conv3.0": 96, "block.0.0": 96}) is None  # 4 at 0.01x


@pytest.mark.parametrize("change, message", [
    (lambda w: w.pop("conv2.1.running_var"), "w.pt: missing key 'conv2.1.running_var' of the network$"),
    (lambda w: w.update(extra=torch.zeros(1)), "w.pt: unexpected key 'extra', which the network does not have"),
    (lambda w: [w.update({"x." + k: w.pop(k)}) for k in list(w)],
     r"missing key 'stem.0.weight' \(and 26 more\) of the network, unexpected key 'x.stem.0.weight' \(and 31 more\): "
     "the weights of another architecture"),
    (lambda w: w.update({"fc.weight": torch.zeros(5, 96)}),
     r"'fc.weight' has shape \[5, 96\], but the network needs \[10, 96\]"),
    (lambda w: w.update({"block.1.weight": torch.zeros(96, 90, 3, 3)}), r"'block.1.weight' has shape \[96, 90, 3, 3\]"),
    (lambda w: w.update({"fc.bias": [0.0] * 10}), "'fc.bias' is a list, not a tensor"),
])
def test_weights_that_do_not_fit_name_the_first_bad_key(supernet, change, message):
    weights = dict(supernet.model.state_dict())
    change(weights)
    before = {k: v.clone() for k, v in supernet.model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        load_weights(supernet, weights, where="w.pt", what=WHAT)
    assert all(torch.equal(before[k], v) for k, v in supernet.model.state_dict().items())  # nothing half-loaded


def test_a_unit_wider_than_the_space_is_refused_with_the_hint(space, supernet):
    weights = build_model(space, width=2.0).state_dict()
    with pytest.raises(ValueError, match=r"w.pt: 'stem.0.weight' has 32 output channels, more than the 24 of unit "
                                         r"'stem.0' in the network; pass --width-mult 2"):
        widths_of(supernet, weights, where="w.pt", what=WHAT, hint="pass --width-mult 2")


def test_missing_batch_counters_keep_the_networks_own(space):
    trained = build_model(space).state_dict()
    weights = {k: v for k, v in trained.items() if not k.endswith("num_batches_tracked")}
    check_keys(trained, weights, where="w.pt", what=WHAT)  # no error
    fresh = build_supernet(space)
    load_weights(fresh, weights, where="w.pt", what=WHAT)
    assert all(torch.equal(fresh.model.state_dict()[k], v) for k, v in weights.items())

"""Tests of autoslim.training.calibrate: BatchNorm recalibration and evaluation, on plain models and supernets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autoslim.data.sources import load_dataset
from autoslim.network.layers import SlimBatchNorm2d
from autoslim.network.static import materialize
from autoslim.spaces import build_model, build_supernet, load_space
from autoslim.training.calibrate import batchnorm_layers, evaluate, recalibrate


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained(digits):
    """A plain digits CNN trained for two epochs (about a second)."""
    torch.manual_seed(0)
    model = build_model(load_space("digits_cnn"), width=1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(2):
        for x, y in digits.batches("train", 64, shuffle=True, generator=generator, drop_last=True):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model


def _calibration(digits, n=4):
    return list(digits.batches("train", 128, shuffle=True, generator=torch.Generator().manual_seed(1)))[:n]


def test_cumulative_average_over_batches():
    bn = nn.BatchNorm2d(3, momentum=0.1)
    batches = [(torch.randn(8, 3, 4, 4) * (i + 1) + i, None) for i in range(3)]
    used = recalibrate(nn.Sequential(bn), iter(batches))
    assert used == 3
    means = torch.stack([x.mean(dim=(0, 2, 3)) for x, _ in batches])
    variances = torch.stack([x.var(dim=(0, 2, 3), unbiased=True) for x, _ in batches])
    torch.testing.assert_close(bn.running_mean, means.mean(0))
    torch.testing.assert_close(bn.running_var, variances.mean(0))
    assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 3
    assert recalibrate(nn.Sequential(nn.BatchNorm2d(3)), iter(batches), num_batches=2) == 2


def test_recalibration_changes_statistics_and_restores_accuracy(digits, trained):
    calibration = _calibration(digits)
    recalibrate(trained, calibration)
    good = evaluate(trained, digits.batches("test", 200))
    assert good[0] > 0.9
    reference = [layer.running_mean.clone() for layer in batchnorm_layers(trained)]
    for layer in batchnorm_layers(trained):  # statistics that fit nothing
        layer.running_mean.uniform_(-3, 3)
        layer.running_var.uniform_(5, 10)
    broken = evaluate(trained, digits.batches("test", 200))
    assert broken[0] < good[0] - 0.2
    weights = [p.clone() for p in trained.parameters()]
    trained.train()
    recalibrate(trained, calibration)
    assert trained.training and all(m.training for m in trained.modules())  # modes restored
    for layer, expected in zip(batchnorm_layers(trained), reference):
        torch.testing.assert_close(layer.running_mean, expected)
    assert all(torch.equal(p, w) for p, w in zip(trained.parameters(), weights))
    assert evaluate(trained, digits.batches("test", 200)) == pytest.approx(good)


def test_recalibration_keeps_dropout_off_and_needs_no_grad():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Dropout(1.0), nn.Flatten())
    seen = []
    model[2].register_forward_hook(lambda m, i, o: seen.append((m.training, torch.is_grad_enabled(), o.clone())))
    recalibrate(model, [(torch.randn(4, 1, 2, 2), None)])
    training, grad, output = seen[0]
    assert not training and not grad and output.abs().sum() > 0  # p=1 dropout in train mode would zero everything


def test_evaluate_matches_a_direct_computation(digits, trained):
    trained.train()
    accuracy, loss = evaluate(trained, digits.batches("test", 100))
    assert trained.training
    trained.eval()
    with torch.no_grad():
        x, y = next(digits.batches("test", len(digits.test)))
        logits = trained(x)
    assert accuracy == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    with pytest.raises(ValueError, match="no batches"):
        evaluate(trained, [])


def test_supernet_recalibration_writes_the_prefix_and_matches_the_static_model(digits):
    torch.manual_seed(0)
    supernet = build_supernet(load_space("digits_cnn"))
    config = supernet.smallest_config()
    supernet.set_config(config)
    calibration = _calibration(digits, 2)
    recalibrate(supernet, calibration)
    slim = [m for m in supernet.modules() if isinstance(m, SlimBatchNorm2d)]
    assert any(m.active < m.num_features for m in slim)
    for m in slim:
        assert m.running_mean[: m.active].abs().sum() > 0
        assert torch.all(m.running_mean[m.active:] == 0) and torch.all(m.running_var[m.active:] == 1)
    static = materialize(supernet, config)
    recalibrate(static, calibration)
    for plain, sliced in zip(batchnorm_layers(static), slim):
        torch.testing.assert_close(plain.running_mean, sliced.running_mean[: sliced.active])
        torch.testing.assert_close(plain.running_var, sliced.running_var[: sliced.active])
    assert evaluate(static, digits.batches("test", 200)) == pytest.approx(evaluate(supernet, digits.batches("test", 200)))

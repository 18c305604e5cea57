"""Tests of autoslim.data: dataset loading, the train/search split and in-memory batches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from autoslim.data.sources import DATASETS, load_dataset

SHARED_CIFAR10 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _normalised(bundle, images):
    mean = torch.tensor(bundle.mean).view(1, -1, 1, 1)
    std = torch.tensor(bundle.std).view(1, -1, 1, 1)
    return (images.float() / 255 - mean) / std


def _all(bundle, split, batch_size, **kwargs):
    xs, ys = zip(*bundle.batches(split, batch_size, **kwargs))
    return torch.cat(xs), torch.cat(ys)


def test_digits_shapes_classes_and_fixed_test_split(digits):
    assert (digits.num_classes, digits.in_channels, digits.image_size) == (10, 1, 8)
    assert len(digits.train) + len(digits.search) + len(digits.test) == 1797
    assert 355 <= len(digits.test) <= 365  # 20%, stratified
    assert digits.train.images.shape[1:] == (1, 8, 8) and digits.train.images.dtype == torch.uint8
    assert digits.train.labels.dtype == torch.int64
    assert int(digits.train.images.max()) == 255  # 0..16 scaled to 0..255
    counts = torch.bincount(digits.test.labels, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38
    other = load_dataset("digits", seed=7)
    assert torch.equal(other.test.images, digits.test.images)
    assert torch.equal(other.test.labels, digits.test.labels)
    # The splits together hold exactly the pixels of scikit-learn's digits.
    from sklearn.datasets import load_digits

    expected = int(np.round(load_digits().images * (255 / 16)).astype(np.uint8).sum(dtype=np.int64))
    parts = (digits.train, digits.search, digits.test)
    assert sum(int(p.images.sum(dtype=torch.int64)) for p in parts) == expected


def test_search_split_disjoint_deterministic_and_seeded(digits):
    total = len(digits.train) + len(digits.search)
    assert len(digits.search) == round(0.1 * total)
    train, search = set(digits.train_indices.tolist()), set(digits.search_indices.tolist())
    assert not train & search and len(train | search) == total
    again = load_dataset("digits", seed=0)
    assert torch.equal(again.search_indices, digits.search_indices)
    assert torch.equal(again.search.images, digits.search.images)
    other = load_dataset("digits", seed=1)
    assert not torch.equal(other.search_indices, digits.search_indices)
    assert other.split_info()["search_indices_sha1"] != digits.split_info()["search_indices_sha1"]
    info = json.loads(json.dumps(digits.split_info()))
    assert info["seed"] == 0 and info["search_size"] == len(digits.search) and info["test_size"] == len(digits.test)


@pytest.mark.parametrize(("search_size", "expected"), [(100, 100), (0.25, 160), (0, 0)])
def test_search_size_count_fraction_and_zero(search_size, expected):
    bundle = load_dataset("fake", fake_shape=(1, 4, 4), fake_sizes=(640, 10), search_size=search_size)
    assert len(bundle.search) == expected and len(bundle.train) == 640 - expected


@pytest.mark.parametrize("search_size", [640, -1, 1.5, True, "10"])
def test_bad_search_size(search_size):
    with pytest.raises(ValueError, match="search_size"):
        load_dataset("fake", fake_shape=(1, 4, 4), fake_sizes=(640, 10), search_size=search_size)


def test_eval_batches_are_normalised_and_unaugmented(digits):
    x, y = _all(digits, "train", 100)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(y, digits.train.labels)
    torch.testing.assert_close(x, _normalised(digits, digits.train.images))
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05
    assert len(list(digits.batches("test", 100))) == digits.num_batches("test", 100) == 4


def test_shuffle_covers_split_once_and_drop_last():
    bundle = load_dataset("fake", fake_shape=(1, 4, 4), fake_sizes=(100, 10), search_size=0, num_classes=100)
    generator = torch.Generator().manual_seed(0)
    _, y = _all(bundle, "train", 30, shuffle=True, generator=generator)
    assert sorted(y.tolist()) == sorted(bundle.train.labels.tolist()) and not torch.equal(y, bundle.train.labels)
    batches = list(bundle.batches("train", 30, shuffle=True, drop_last=True, generator=generator))
    assert len(batches) == bundle.num_batches("train", 30, drop_last=True) == 3
    assert bundle.num_batches("train", 30) == 4


def test_augmentation_reproducible_per_generator_seed(digits):
    def run(seed):
        return _all(digits, "train", 128, shuffle=True, augment=True, generator=torch.Generator().manual_seed(seed))

    first, again, other = run(1), run(1), run(2)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def _crops(image, pad, flips):
    """Every crop of the zero-padded image at the original size, mirrored too if ``flips``."""
    _, h, w = image.shape
    padded = torch.nn.functional.pad(image, (pad,) * 4)
    out = [padded[:, i : i + h, j : j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]
    return out + [c.flip(-1) for c in out] if flips else out


@pytest.mark.parametrize(("shape", "pad", "flips"), [((1, 8, 8), 1, False), ((3, 32, 32), 4, True), ((1, 28, 28), 2, False)])
def test_augmentation_is_a_padded_crop(shape, pad, flips):
    bundle = load_dataset("fake", fake_shape=shape, fake_sizes=(72, 8), search_size=8)
    generator = torch.Generator().manual_seed(3)
    x, _ = next(bundle.batches("train", 64, augment=True, generator=generator))
    originals = _normalised(bundle, bundle.train.images[:64])
    background = _normalised(bundle, torch.zeros(1, *shape, dtype=torch.uint8))[0]
    moved = mirrored = 0
    for got, image in zip(x, originals):
        candidates = _crops(image - background, pad, flips)
        matches = [k for k, c in enumerate(candidates) if torch.allclose(got - background, c, atol=1e-5)]
        assert matches, "augmented image is not a padded crop of its original"
        moved += not torch.allclose(got, image)
        mirrored += matches[0] >= (2 * pad + 1) ** 2
    assert moved > 32  # most images really moved
    assert (mirrored > 10) == flips


def test_fake_shapes_and_determinism():
    bundle = load_dataset("fake", fake_shape=(1, 12, 12), fake_sizes=(40, 10), num_classes=3, seed=5)
    assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (3, 1, 12)
    assert bundle.test.images.shape == (10, 1, 12, 12) and len(bundle.train) + len(bundle.search) == 40
    assert set(bundle.test.labels.tolist()) <= {0, 1, 2}
    assert torch.equal(load_dataset("fake", fake_shape=(1, 12, 12), fake_sizes=(40, 10), num_classes=3).test.images, bundle.test.images)


def _write_npz(path, gray=False, **extra):
    rng = np.random.default_rng(0)
    shape = (6, 6) if gray else (6, 6, 3)
    arrays = {
        "train_x": rng.integers(0, 256, (20, *shape), dtype=np.uint8),
        "train_y": rng.integers(0, 4, 20),
        "test_x": rng.integers(0, 256, (5, *shape), dtype=np.uint8),
        "test_y": np.array([0, 1, 2, 3, 3]),
    }
    arrays.update(extra)
    np.savez(path, **arrays)
    return arrays


@pytest.mark.parametrize("gray", [False, True])
def test_npz_loader_reads_file_and_directory(tmp_path, gray):
    arrays = _write_npz(tmp_path / "tiny.npz", gray=gray)
    for where in (tmp_path / "tiny.npz", tmp_path):
        bundle = load_dataset("npz", data_dir=where, search_size=4)
        channels = 1 if gray else 3
        assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (4, channels, 6)
        expected = arrays["test_x"][:, None] if gray else arrays["test_x"].transpose(0, 3, 1, 2)
        assert torch.equal(bundle.test.images, torch.from_numpy(expected))
        assert torch.equal(bundle.test.labels, torch.tensor([0, 1, 2, 3, 3]))
        full = torch.from_numpy(arrays["train_y"])
        assert torch.equal(bundle.search.labels, full[bundle.search_indices])
        x, _ = next(bundle.batches("search", 4))
        assert x.shape == (4, channels, 6, 6)


def test_npz_malformed_files(tmp_path):
    _write_npz(tmp_path / "a.npz", test_x=np.zeros((5, 6, 6, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8"):
        load_dataset("npz", data_dir=tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", train_x=np.zeros((2, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="train_y"):
        load_dataset("npz", data_dir=tmp_path / "b.npz")
    with pytest.raises(ValueError, match="a.npz, b.npz"):
        load_dataset("npz", data_dir=tmp_path)


@pytest.mark.parametrize(
    ("name", "where", "hint"),
    [("npz", "missing.npz", "--data-dir"), ("npz", ".", "--data-dir"), ("cifar10", ".", "--download"), ("mnist", ".", "--download")],
)
def test_missing_dataset_is_one_line_naming_the_path(tmp_path, name, where, hint):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(name, data_dir=tmp_path / where)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path) in message and hint in message


def test_cifar10_missing_mentions_npz_route(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar10\.npz.*prepare\.py"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_bad_arguments(digits):
    with pytest.raises(ValueError, match="digits, cifar10, cifar100, mnist, fashion-mnist, npz, imagefolder, fake"):
        load_dataset("imagenette")
    assert "fashion-mnist" in DATASETS
    with pytest.raises(ValueError, match="larger than the test split"):
        next(digits.batches("test", len(digits.test) + 1))
    with pytest.raises(ValueError, match="positive"):
        digits.num_batches("train", 0)
    with pytest.raises(ValueError, match="unknown split"):
        digits.batches("val", 8)
    with pytest.raises(ValueError, match="num_classes"):
        load_dataset("digits", num_classes=5)
    with pytest.raises(ValueError, match="empty"):
        load_dataset("fake", fake_shape=(1, 4, 4), fake_sizes=(10, 2), search_size=0).batches("search", 1)


def test_imagefolder_streams_files(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for sub, n in (("train", 5), ("val", 2)):
        for name in ("cat", "dog"):
            (tmp_path / sub / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / sub / name / f"{i}.png")
    bundle = load_dataset("imagefolder", data_dir=tmp_path, image_size=8, search_size=2, num_workers=0)
    assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (2, 3, 8)
    assert (len(bundle.train), len(bundle.search), len(bundle.test)) == (8, 2, 4)
    assert bundle.classes == ("cat", "dog")
    x, y = _all(bundle, "test", 3)
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32 and y.tolist() == [0, 0, 1, 1]

    def run(seed):
        return _all(bundle, "train", 4, shuffle=True, augment=True, generator=torch.Generator().manual_seed(seed))[0]

    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))
    with pytest.raises(FileNotFoundError, match="val"):
        load_dataset("imagefolder", data_dir=tmp_path / "train")


@pytest.mark.slow
def test_real_cifar10_from_prepared_npz(tmp_path):
    if not (SHARED_CIFAR10 / "cifar10_jpeg_bytes.npz").is_file():
        pytest.skip(f"the project's CIFAR-10 copy is absent (looked for {SHARED_CIFAR10.resolve()})")
    subprocess.run([sys.executable, str(SHARED_CIFAR10 / "prepare.py"), str(tmp_path / "cifar10.npz")], check=True)
    bundle = load_dataset("cifar10", data_dir=tmp_path, seed=0)
    assert (bundle.num_classes, bundle.in_channels, bundle.image_size) == (10, 3, 32)
    assert (len(bundle.train), len(bundle.search), len(bundle.test)) == (45_000, 5_000, 10_000)
    assert bundle.classes[0] == "airplane" and bundle.classes[9] == "truck"
    assert torch.bincount(bundle.test.labels).tolist() == [1000] * 10
    x, _ = _all(bundle, "search", 1000)
    assert x.mean(dim=(0, 2, 3)).abs().max() < 0.1 and (x.std(dim=(0, 2, 3)) - 1).abs().max() < 0.1
    same = load_dataset("cifar10", data_dir=tmp_path / "cifar10.npz", seed=0)
    assert same.split_info() == bundle.split_info()
    with pytest.raises(FileNotFoundError, match="prepare.py"):
        load_dataset("cifar10", data_dir=SHARED_CIFAR10)

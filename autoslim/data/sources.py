"""Datasets for supernet training, search and retraining (AutoSlim sections 3.2-3.3, 4): :func:`load_dataset`.

A dataset is loaded once into a :class:`autoslim.data.bundle.DataBundle` with three splits: ``train`` (what the
supernet is trained on), ``search`` (held out from the training set by a seeded split, what the greedy search
scores candidates on) and ``test`` (the dataset's own test split, which the search never sees). Sources: the
bundled digits, torchvision's CIFAR and MNIST sets, ``.npz`` arrays, ImageNet-style ``train/`` and ``val/``
folders (``imagefolder``) and fake data.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .bundle import DataBundle, Split

__all__ = ["DATASETS", "load_dataset"]

DATASETS = ("digits", "cifar10", "cifar100", "mnist", "fashion-mnist", "npz", "imagefolder", "fake")

_DEFAULT_DATA_DIR = "data"
_DEFAULT_SEARCH_FRACTION = 0.1
_MAX_DEFAULT_SEARCH = 10_000
# Fixed seeds of data that must not change with the run seed.
_DIGITS_TEST_SEED = 0
_DIGITS_TEST_FRACTION = 0.2
_FAKE_DATA_SEED = 0
_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
# name -> (torchvision class name, folder that torchvision looks for under the root, display name)
_TORCHVISION = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "CIFAR-10"),
    "cifar100": ("CIFAR100", "cifar-100-python", "CIFAR-100"),
    "mnist": ("MNIST", "MNIST/raw", "MNIST"),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST/raw", "Fashion-MNIST"),
}
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "image-folder": "imagefolder"}

def load_dataset(
    name: str = "digits",
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    seed: int = 0,
    search_size: int | float | None = None,
    num_classes: int | None = None,
    image_size: int | None = None,
    fake_shape: tuple[int, int, int] = (3, 32, 32),
    fake_sizes: tuple[int, int] = (512, 128),
    num_workers: int | None = None,
) -> DataBundle:
    """Load a dataset and split its training set into supernet-training and search parts.

    Args:
        name: one of :data:`DATASETS` (``fashion_mnist`` is accepted too).
        data_dir: where the files are. ``npz``: the .npz file or a directory holding exactly one.
            ``imagefolder``: the directory with ``train/`` and ``val/``. ``cifar10`` etc.: the torchvision
            root (default ``./data``), an .npz file, or a directory holding ``NAME.npz``
            (e.g. ``cifar10.npz``). Unused for ``digits`` and ``fake``.
        download: let torchvision download ``cifar10``, ``cifar100``, ``mnist``, ``fashion-mnist``.
        seed: seed of the train/search split (the test split never depends on it).
        search_size: images held out for the search: a count, a fraction of the training set in [0, 1),
            or None for 10% of it, at most 10,000. 0 trains on the whole training set.
        num_classes: classes of ``fake`` (default 10); for other datasets a check (``npz`` may declare more
            classes than its labels use).
        image_size: crop size of ``imagefolder`` (default 224); other datasets keep their own size.
        fake_shape: ``(C, H, W)`` of ``fake`` images.
        fake_sizes: ``(train, test)`` sizes of ``fake``.
        num_workers: DataLoader workers of ``imagefolder`` (default: up to 8, one per CPU).

    Raises:
        ValueError: for an unknown name, bad sizes, or a malformed file.
        FileNotFoundError: when the data is not where it was looked for; the message says how to get it.
    """
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    if image_size is not None and key != "imagefolder":
        raise ValueError(f"image_size applies to imagefolder only; {key} keeps the size of its images")

    if key == "imagefolder":
        return _load_imagefolder(data_dir, seed, search_size, num_classes, image_size, num_workers)
    stats = _STATS.get(key)
    if key == "digits":
        train_x, train_y, test_x, test_y, classes = _load_digits()
    elif key == "fake":
        classes = None
        num_classes = 10 if num_classes is None else num_classes
        train_x, train_y, test_x, test_y = _make_fake(fake_shape, fake_sizes, num_classes)
    elif key == "npz":
        if data_dir is None:
            raise ValueError("the npz dataset needs data_dir (--data-dir): an .npz file with train_x, train_y, test_x, test_y")
        train_x, train_y, test_x, test_y, classes = _read_npz(_find_npz(Path(data_dir)))
    else:
        train_x, train_y, test_x, test_y, classes = _load_named(key, data_dir, download)

    num_classes = _check_classes(key, num_classes, classes, train_y, test_y)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ValueError(f"train images are {tuple(train_x.shape[1:])} but test images {tuple(test_x.shape[1:])} (C, H, W)")
    channels, height = train_x.shape[1], train_x.shape[2]
    if stats is None:
        stats = _channel_stats(train_x)
    if key in ("cifar10", "cifar100") or (key in ("npz", "fake") and channels == 3):
        pad, flip = max(1, round(height / 8)), True
    else:
        pad, flip = max(1, round(height / 14)), False

    train_idx, search_idx = _split_indices(len(train_y), _search_count(search_size, len(train_y)), seed)
    return DataBundle(
        name=key,
        num_classes=num_classes,
        in_channels=channels,
        image_size=height,
        train=Split(train_y[train_idx], images=train_x[train_idx]),
        search=Split(train_y[search_idx], images=train_x[search_idx]),
        test=Split(test_y, images=test_x),
        seed=seed,
        train_indices=train_idx,
        search_indices=search_idx,
        mean=stats[0],
        std=stats[1],
        pad=pad,
        flip=flip,
        classes=classes,
    )


def _search_count(search_size: int | float | None, n: int) -> int:
    if search_size is None:
        return min(_MAX_DEFAULT_SEARCH, round(_DEFAULT_SEARCH_FRACTION * n))
    if isinstance(search_size, bool) or not isinstance(search_size, numbers.Real):
        raise ValueError(f"search_size must be a count or a fraction, got {search_size!r}")
    if isinstance(search_size, numbers.Integral):
        count = int(search_size)
    elif 0.0 <= search_size < 1.0:
        count = round(float(search_size) * n)
    else:
        raise ValueError(f"search_size {search_size!r}: give a fraction in [0, 1) or a whole number of images")
    if not 0 <= count < n:
        raise ValueError(f"search_size {search_size!r} must leave training images: use 0..{n - 1} of the {n}")
    return count


def _split_indices(n: int, count: int, seed: int) -> tuple[Tensor, Tensor]:
    """Sorted (train, search) indices: a random ``count`` of ``range(n)`` for the search, drawn with ``seed``."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[count:].sort().values, perm[:count].sort().values


def _check_classes(key: str, num_classes: int | None, classes: Sequence[str] | None, *labels: Tensor) -> int:
    top = max(int(y.max()) for y in labels if len(y)) + 1
    if min(int(y.min()) for y in labels if len(y)) < 0:
        raise ValueError(f"{key} has negative labels; labels must be 0..num_classes-1")
    found = len(classes) if classes is not None else top
    if top > found:
        raise ValueError(f"{key} has labels up to {top - 1} but only {found} class names")
    if num_classes is None:
        return found
    if num_classes == found or (key in ("npz", "fake") and num_classes > found):
        return num_classes
    raise ValueError(f"{key} has {found} classes, but num_classes={num_classes} was asked for")


def _channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, scaled to [0, 1]; chunked to keep memory small."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in images.split(4096):
        x = chunk.to(torch.float64)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    count = images.numel() / images.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    std = torch.where(std > 0, std, torch.full_like(std, 255.0))
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())


def _as_tensors(x: np.ndarray, y: np.ndarray) -> tuple[Tensor, Tensor]:
    """NHWC or NHW uint8 images and integer labels as (N, C, H, W) uint8 and (N,) int64 tensors."""
    if x.ndim == 3:
        x = x[:, None]
    else:
        x = x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, dtype=np.int64).copy())


def _load_digits() -> tuple[Tensor, Tensor, Tensor, Tensor, tuple[str, ...]]:
    """scikit-learn's bundled 8x8 digits with a fixed stratified 20% test split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    test = np.zeros(len(labels), dtype=bool)
    generator = torch.Generator().manual_seed(_DIGITS_TEST_SEED)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        perm = torch.randperm(len(members), generator=generator).numpy()
        test[members[perm[: round(_DIGITS_TEST_FRACTION * len(members))]]] = True
    train_x, train_y = _as_tensors(images[~test], labels[~test])
    test_x, test_y = _as_tensors(images[test], labels[test])
    return train_x, train_y, test_x, test_y, tuple(str(i) for i in range(10))


def _make_fake(shape: Sequence[int], sizes: Sequence[int], num_classes: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random images from a fixed seed; each class is noise around its own random prototype, so it can be learnt."""
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"fake_shape must be three positive sizes (C, H, W), got {tuple(shape)}")
    if len(sizes) != 2 or min(sizes) < 1:
        raise ValueError(f"fake_sizes must be two positive sizes (train, test), got {tuple(sizes)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    generator = torch.Generator().manual_seed(_FAKE_DATA_SEED)
    prototypes = torch.randint(0, 256, (num_classes, *shape), generator=generator, dtype=torch.int32)
    splits = []
    for n in sizes:
        labels = torch.arange(n) % num_classes
        labels = labels[torch.randperm(n, generator=generator)]
        noise = torch.randint(0, 256, (n, *shape), generator=generator, dtype=torch.int32)
        splits += [((prototypes[labels] + noise) // 2).to(torch.uint8), labels]
    return tuple(splits)


def _find_npz(path: Path) -> Path:
    """The .npz file at ``path``, or the single one inside the directory ``path``."""
    if path.is_file():
        return path
    hint = "pass --data-dir pointing at an .npz file with arrays train_x, train_y, test_x, test_y (uint8 NHWC images)"
    if not path.exists():
        raise FileNotFoundError(f"npz dataset not found: {path.resolve()} does not exist; {hint}")
    found = sorted(path.glob("*.npz"))
    if not found:
        raise FileNotFoundError(f"npz dataset not found: no .npz file in {path.resolve()}; {hint}")
    if len(found) > 1:
        raise ValueError(f"{path.resolve()} holds {len(found)} .npz files ({', '.join(p.name for p in found)}): pass the file itself")
    return found[0]


def _read_npz(path: Path) -> tuple[Tensor, Tensor, Tensor, Tensor, tuple[str, ...] | None]:
    """Arrays ``train_x, train_y, test_x, test_y`` (and optional ``classes``) of an .npz file."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {path} as an .npz file: {error}") from None
    with archive:
        missing = [k for k in ("train_x", "train_y", "test_x", "test_y") if k not in archive.files]
        if missing:
            raise ValueError(f"{path} lacks the arrays {', '.join(missing)} (it has {', '.join(archive.files)})")
        out = []
        for split in ("train", "test"):
            x, y = archive[f"{split}_x"], archive[f"{split}_y"]
            if x.dtype != np.uint8 or x.ndim not in (3, 4):
                raise ValueError(f"{path}: {split}_x is {x.dtype} {x.shape}; convert it to uint8 NHWC (or NHW for gray)")
            if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
                raise ValueError(f"{path}: {split}_y must be {len(x)} integer labels, got {y.dtype} {y.shape}")
            out += _as_tensors(x, y)
        classes = tuple(str(c) for c in archive["classes"]) if "classes" in archive.files else None
    return (*out, classes)


def _load_named(
    key: str, data_dir: str | os.PathLike | None, download: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, tuple[str, ...] | None]:
    """A torchvision dataset from its root, or the same data as an .npz (``data_dir/KEY.npz`` or a file)."""
    root = Path(data_dir if data_dir is not None else _DEFAULT_DATA_DIR)
    class_name, folder, title = _TORCHVISION[key]
    npz = root if root.suffix == ".npz" else root / f"{key}.npz"
    if npz.is_file():
        return _read_npz(npz)
    if root.suffix == ".npz":
        raise FileNotFoundError(f"{title} not found: {root.resolve()} does not exist; write it first or pass --data-dir")
    if not download and not (root / folder).is_dir():
        hint = f"pass --download (download=True) to fetch it into {root.resolve()}"
        if key == "cifar10":
            hint += ", or point --data-dir at an .npz with train_x/train_y/test_x/test_y (prepare.py of the JPEG copy writes one)"
            if (root / "prepare.py").is_file():
                hint = f"decode the JPEG copy here with `python {root.resolve() / 'prepare.py'} OUT/cifar10.npz` and pass --data-dir OUT/cifar10.npz"
        raise FileNotFoundError(f"{title} not found: looked for {(root / folder).resolve()} and {npz.resolve()}; {hint}")

    from torchvision import datasets

    cls = getattr(datasets, class_name)
    try:
        train, test = cls(str(root), train=True, download=download), cls(str(root), train=False, download=download)
    except (RuntimeError, OSError) as error:
        reason = " ".join(str(error).split())
        raise FileNotFoundError(f"{title} could not be loaded from {root.resolve()}: {reason}") from None
    x_train, y_train = _as_tensors(np.asarray(train.data), np.asarray(train.targets))
    x_test, y_test = _as_tensors(np.asarray(test.data), np.asarray(test.targets))
    return x_train, y_train, x_test, y_test, tuple(train.classes)


def _load_imagefolder(
    data_dir: str | os.PathLike | None,
    seed: int,
    search_size: int | float | None,
    num_classes: int | None,
    image_size: int | None,
    num_workers: int | None,
) -> DataBundle:
    """ImageNet-style ``train/CLASS/*.jpg`` and ``val/CLASS/*.jpg``, read from disk batch by batch."""
    if data_dir is None:
        raise ValueError("the imagefolder dataset needs data_dir (--data-dir): a directory with train/ and val/")
    root = Path(data_dir)
    for sub in ("train", "val"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(
                f"imagefolder dataset not found: {(root / sub).resolve()} is not a directory; "
                "pass --data-dir pointing at a folder with train/CLASS/*.jpg and val/CLASS/*.jpg"
            )
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    train = ImageFolder(str(root / "train"))
    # The val folder takes the train folder's class indices, so a class missing there cannot shift labels.
    val = ImageFolder.make_dataset(str(root / "val"), train.class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not val:
        raise FileNotFoundError(f"imagefolder dataset: no images of the train classes in {(root / 'val').resolve()}")
    train_paths = [p for p, _ in train.samples]
    train_y = torch.tensor([t for _, t in train.samples], dtype=torch.int64)
    test_y = torch.tensor([t for _, t in val], dtype=torch.int64)
    num_classes = _check_classes("imagefolder", num_classes, train.classes, train_y, test_y)
    size = 224 if image_size is None else int(image_size)
    if size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    train_idx, search_idx = _split_indices(len(train_y), _search_count(search_size, len(train_y)), seed)
    mean, std = _STATS["imagefolder"]
    return DataBundle(
        name="imagefolder",
        num_classes=num_classes,
        in_channels=3,
        image_size=size,
        train=Split(train_y[train_idx], paths=[train_paths[i] for i in train_idx.tolist()]),
        search=Split(train_y[search_idx], paths=[train_paths[i] for i in search_idx.tolist()]),
        test=Split(test_y, paths=[p for p, _ in val]),
        seed=seed,
        train_indices=train_idx,
        search_indices=search_idx,
        mean=mean,
        std=std,
        pad=0,
        flip=True,
        classes=train.classes,
        num_workers=min(8, os.cpu_count() or 1) if num_workers is None else num_workers,
    )

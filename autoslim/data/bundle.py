"""A loaded dataset and its batches: :class:`DataBundle` with three :class:`Split` s (train, search, test).

Splits held in memory are uint8 tensors ``(N, C, H, W)``; batches are cut from them and augmented as whole
batches with tensor ops (random crop with zero padding, plus horizontal flips for colour images), driven by an
explicit :class:`torch.Generator` so a run is reproducible. Images are normalised with per-dataset mean and std
at the last moment, on the target device. ``imagefolder`` splits hold file paths and stream them through a
DataLoader with the usual RandomResizedCrop / flip for training and resize / center-crop for evaluation.
"""

from __future__ import annotations

import hashlib
import numbers
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DataBundle", "Split"]

_SPLITS = ("train", "search", "test")
# In-memory splits up to this size are copied to an accelerator once instead of batch by batch.
_DEVICE_CACHE_BYTES = 2 * 1024**3


class Split:
    """One split of a dataset.

    Attributes:
        labels: int64 tensor ``(N,)``.
        images: uint8 tensor ``(N, C, H, W)`` held in memory, or None for a split read from files.
        paths: the image files of a split read from disk (``imagefolder``), else None.
    """

    def __init__(self, labels: Tensor, images: Tensor | None = None, paths: Sequence[str] | None = None):
        if (images is None) == (paths is None):
            raise ValueError("a split holds either images or paths")
        self.labels = labels
        self.images = images
        self.paths = list(paths) if paths is not None else None
        self._device_copies: dict[str, tuple[Tensor, Tensor]] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def _on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """Images and labels on ``device`` if they fit there once, else on the CPU."""
        assert self.images is not None
        if device.type == "cpu" or self.images.nbytes > _DEVICE_CACHE_BYTES:
            return self.images, self.labels
        key = str(device)
        if key not in self._device_copies:
            self._device_copies[key] = (self.images.to(device), self.labels.to(device))
        return self._device_copies[key]


class DataBundle:
    """A loaded dataset: its splits, how to normalise and augment them, and how the search split was made.

    Attributes:
        name: dataset name, one of :data:`DATASETS`.
        num_classes: number of classes (the classifier's outputs).
        in_channels: image channels (1 for gray, 3 for colour).
        image_size: image height (= width) that batches have.
        train: the supernet-training part of the training set.
        search: the held-out part of the training set that the search scores on (may be empty).
        test: the dataset's test split.
        seed: the seed of the train/search split.
        train_indices: indices of ``train`` in the full training set (sorted).
        search_indices: indices of ``search`` in the full training set (sorted).
        mean: per-channel mean of the pixels in [0, 1], subtracted by :meth:`batches`.
        std: per-channel std of the pixels in [0, 1], divided by :meth:`batches`.
        classes: class names where the dataset has them, else None.
    """

    def __init__(
        self,
        *,
        name: str,
        num_classes: int,
        in_channels: int,
        image_size: int,
        train: Split,
        search: Split,
        test: Split,
        seed: int,
        train_indices: Tensor,
        search_indices: Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        pad: int,
        flip: bool,
        classes: Sequence[str] | None = None,
        num_workers: int = 0,
    ):
        self.name = name
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.image_size = image_size
        self.train, self.search, self.test = train, search, test
        self.seed = seed
        self.train_indices, self.search_indices = train_indices, search_indices
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.classes = tuple(classes) if classes is not None else None
        self._pad, self._flip = pad, flip
        self._num_workers = num_workers
        self._norms: dict[str, tuple[Tensor, Tensor]] = {}

    def __repr__(self) -> str:
        return (
            f"DataBundle({self.name!r}, classes={self.num_classes}, images={self.in_channels}x{self.image_size}"
            f"x{self.image_size}, train={len(self.train)}, search={len(self.search)}, test={len(self.test)})"
        )

    def split(self, name: str) -> Split:
        """The split called ``name`` (``train``, ``search`` or ``test``)."""
        if name not in _SPLITS:
            raise ValueError(f"unknown split {name!r}: use one of {', '.join(_SPLITS)}")
        return getattr(self, name)

    def split_info(self) -> dict[str, Any]:
        """JSON-serialisable record of the splits, for checkpoints and ``run.yaml``.

        A resumed run can compare it with its own to make sure it trains and searches on the same images.
        """
        digest = hashlib.sha1(self.search_indices.numpy().astype("<i8").tobytes()).hexdigest()
        return {
            "dataset": self.name,
            "seed": self.seed,
            "search_size": len(self.search),
            "train_size": len(self.train),
            "test_size": len(self.test),
            "train_total": len(self.train) + len(self.search),
            "search_indices_sha1": digest,
        }

    def num_batches(self, split: str, batch_size: int, drop_last: bool = False) -> int:
        """Number of batches :meth:`batches` yields for these arguments."""
        n = len(self.split(split))
        _check_batch_size(batch_size, n, split)
        return n // batch_size if drop_last else -(-n // batch_size)

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        device: torch.device | str | None = None,
        start: int = 0,
        shard: tuple[int, int] | None = None,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One pass over a split in batches of normalised float32 images and int64 labels.

        All random numbers of the pass (order, crops, flips) are drawn from ``generator`` when this is
        called, so the same generator state gives the same batches whatever else uses the generator
        while the batches are consumed. Without a generator, torch's global generator is used.

        Args:
            split: ``train``, ``search`` or ``test``.
            batch_size: images per batch; at most the size of the split.
            shuffle: visit the images in a random order.
            augment: random crops (and flips for colour images) as in the dataset's training recipe.
            generator: the CPU generator that drives shuffling and augmentation.
            drop_last: leave out the last batch if it is smaller than ``batch_size``.
            device: where the batches are made; None for the CPU.
            start: skip the first ``start`` batches without making them (a resumed epoch); the random
                numbers are drawn as for a whole pass, so the rest of the pass is unchanged.
            shard: ``(rank, world)``: yield only this rank's share of every batch (positions
                ``rank, rank + world, ...`` within it), ``batch_size / world`` images, for data-parallel
                training; ``batch_size`` stays the global batch and must be a multiple of ``world``.

        Raises:
            ValueError: for an unknown split, a batch size outside 1..len(split), a bad start or shard.
        """
        part = self.split(split)
        n = len(part)
        _check_batch_size(batch_size, n, split)
        device = torch.device(device) if device is not None else torch.device("cpu")
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        if part.images is None:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if augment else None
            order, _, batch_size = _select(order, batch_size, stop, start, shard)
            return self._folder_batches(part, order, batch_size, drop_last, seed, device)
        offsets = flips = None
        if augment and (self._pad > 0 or self._flip):
            offsets = torch.randint(0, 2 * self._pad + 1, (n, 2), generator=generator)
            if self._flip:
                flips = torch.rand(n, generator=generator) < 0.5
        if start or shard is not None:
            order, keep, batch_size = _select(order, batch_size, stop, start, shard)
            offsets = None if offsets is None else offsets[keep]
            flips = None if flips is None else flips[keep]
            stop = len(order)
        return self._tensor_batches(part, order, batch_size, stop, offsets, flips, device)

    def _tensor_batches(
        self,
        part: Split,
        order: Tensor,
        batch_size: int,
        stop: int,
        offsets: Tensor | None,
        flips: Tensor | None,
        device: torch.device,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        images, labels = part._on(device)
        order = order.to(images.device)
        for start in range(0, stop, batch_size):
            index = order[start : start + batch_size]
            x = images.index_select(0, index).to(device, non_blocking=True)
            y = labels.index_select(0, index).to(device, non_blocking=True)
            if offsets is not None:
                flip = flips[start : start + batch_size].to(device) if flips is not None else None
                x = _crop_flip(x, offsets[start : start + batch_size].to(device), flip, self._pad)
            yield self._normalize(x), y

    def _folder_batches(
        self, part: Split, order: Tensor, batch_size: int, drop_last: bool, seed: int | None, device: torch.device
    ) -> Iterator[tuple[Tensor, Tensor]]:
        from torch.utils.data import DataLoader

        dataset = _FolderImages(part.paths, part.labels.tolist(), _folder_transform(self.image_size, seed is not None), seed)
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=order.tolist(),
            drop_last=drop_last,
            num_workers=self._num_workers,
            pin_memory=device.type == "cuda",
            # Worker seeds are irrelevant (each image seeds its own transform); keep the global RNG untouched.
            generator=torch.Generator().manual_seed(0),
        )
        for x, y in loader:
            yield self._normalize(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)

    def _normalize(self, x: Tensor) -> Tensor:
        key = str(x.device)
        if key not in self._norms:
            mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1) * 255
            scale = 1.0 / (torch.tensor(self.std, device=x.device).view(1, -1, 1, 1) * 255)
            self._norms[key] = (mean, scale)
        mean, scale = self._norms[key]
        return (x.float() - mean) * scale


class _FolderImages(torch.utils.data.Dataset):
    """Image files decoded to uint8 tensors; the random transform of image i is seeded by ``seed + i``."""

    def __init__(self, paths: list[str], labels: list[int], transform: Any, seed: int | None):
        self.paths, self.labels, self.transform, self.seed = paths, labels, transform, seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from torchvision.datasets.folder import default_loader

        image = default_loader(self.paths[index])
        if self.seed is None:
            return self.transform(image), self.labels[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed + index) % 2**63)
            return self.transform(image), self.labels[index]


def _folder_transform(size: int, augment: bool) -> Any:
    from torchvision import transforms as T

    if augment:
        return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.PILToTensor()])
    return T.Compose([T.Resize(round(size / 0.875)), T.CenterCrop(size), T.PILToTensor()])


def _crop_flip(x: Tensor, offsets: Tensor, flips: Tensor | None, pad: int) -> Tensor:
    """Crop each image of ``x`` from its zero-padded copy at ``offsets`` (row, col), mirrored where ``flips``."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
    rows = offsets[:, :1] + torch.arange(h, device=x.device)
    cols = offsets[:, 1:] + torch.arange(w, device=x.device)
    if flips is not None:
        cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def _select(
    order: Tensor, batch_size: int, stop: int, start: int, shard: tuple[int, int] | None
) -> tuple[Tensor, Tensor, int]:
    """The positions of a pass from batch ``start`` on that belong to ``shard``: (order, positions, batch size)."""
    rank, world = (0, 1) if shard is None else shard
    if not (isinstance(world, int) and isinstance(rank, int) and 0 <= rank < world and batch_size % world == 0):
        raise ValueError(f"shard {shard!r} must be (rank, world) with 0 <= rank < world and world dividing the "
                         f"batch size {batch_size}")
    batches = -(-stop // batch_size)
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= batches:
        raise ValueError(f"start {start!r} must be a batch index in 0..{batches}")
    positions = torch.arange(start * batch_size, stop)
    if world > 1:
        positions = positions[(positions % batch_size) % world == rank]
    return order[positions], positions, batch_size // world


def _check_batch_size(batch_size: int, n: int, split: str) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")
    if n == 0:
        raise ValueError(f"the {split} split is empty: load the dataset with a positive search_size")
    if batch_size > n:
        raise ValueError(f"batch size {batch_size} is larger than the {split} split ({n} images): use at most {n}")


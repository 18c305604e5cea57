"""Data: :mod:`~autoslim.data.sources` loads a dataset (``load_dataset``) into a
:mod:`~autoslim.data.bundle` (``DataBundle``: train, search and test splits and their batches)."""

from .bundle import DataBundle, Split
from .sources import DATASETS, load_dataset

__all__ = ["DataBundle", "Split", "DATASETS", "load_dataset"]

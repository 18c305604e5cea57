"""autoslim: AutoSlim channel-number search (Yu & Huang, 2019) on universally slimmable supernets.

The public API, for your own training loop (the README's "Use it in your own training loop"):

- :func:`convert`: a plain model -> :class:`Supernet` (``largest_config``, ``smallest_config``,
  ``sample_config(rng)``, ``uniform_config(width)``, ``set_config``, ``cost(config)``);
- :func:`train_step`: one sandwich-rule step (largest, smallest and random subnets, in-place distillation);
- :func:`recalibrate`: BatchNorm statistics for the supernet's current config;
- :func:`greedy_slim`: the greedy search scored by your own metric; :func:`greedy_search` its general form;
- :func:`materialize`: the plain network of a config, with the supernet's weights;
- :func:`sort_channels`: order a trained network's channels by importance, without changing its function.

Names are imported on first use, so ``import autoslim`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Supernet": "autoslim.supernet",
    "convert": "autoslim.supernet",
    "materialize": "autoslim.export",
    "train_step": "autoslim.sandwich",
    "recalibrate": "autoslim.calibrate",
    "greedy_slim": "autoslim.search",
    "greedy_search": "autoslim.search",
    "Score": "autoslim.search",
    "Step": "autoslim.search",
    "sort_channels": "autoslim.ordering",
    "make_divisible": "autoslim.units",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'autoslim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

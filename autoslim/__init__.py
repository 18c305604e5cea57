"""autoslim: AutoSlim channel-number search (Yu & Huang, 2019) on universally slimmable supernets.

The public API, for your own training loop (the README's "Use it in your own training loop"):

- :func:`convert`: a plain model -> :class:`Supernet` (``largest_config``, ``smallest_config``,
  ``sample_config(rng)``, ``uniform_config(width)``, ``set_config``, ``cost(config)``);
- :func:`train_step`: one sandwich-rule step (largest, smallest and random subnets, in-place distillation);
- :func:`recalibrate`: BatchNorm statistics for the supernet's current config;
- :func:`greedy_slim`: the greedy search scored by your own metric; :func:`greedy_search` its general form;
- :func:`materialize`: the plain network of a config, with the supernet's weights;
- :func:`sort_channels`: order a trained network's channels by importance, without changing its function;
- :func:`leaf_module`: mark a module class that torch.fx cannot trace (control flow) to be called whole.

Names are imported on first use, so ``import autoslim`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Supernet": "autoslim.network.supernet",
    "convert": "autoslim.network.supernet",
    "materialize": "autoslim.network.static",
    "train_step": "autoslim.training.sandwich",
    "recalibrate": "autoslim.training.calibrate",
    "greedy_slim": "autoslim.search.greedy",
    "greedy_search": "autoslim.search.greedy",
    "Score": "autoslim.search.greedy",
    "Step": "autoslim.search.greedy",
    "sort_channels": "autoslim.network.ordering",
    "make_divisible": "autoslim.network.units",
    "leaf_module": "autoslim.network.fx_graph",
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

"""Channel config files (``autoslim-config/1``): unit name -> channel count, with the space, cost and source.

```yaml
format: autoslim-config/1
space: mobilenet_v2
space_options: {width_mult: 1.5, num_classes: 10, input_size: 32}
channels: {features.0.0: 24, ...}
cost: {macs: 88012345, params: 2236682, input_size: 32}
source: {search: runs/cifar/search, step: 41, target: {flops: 88000000}, score: 0.913}
```

Loading checks the format; :meth:`autoslim.network.supernet.Supernet.validate_config` checks the channels against a supernet (unknown or
missing units, counts outside 1..maximum), naming the offending key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from .io import read_yaml, write_yaml

__all__ = ["FORMAT", "ChannelConfig", "load_config", "save_config"]

FORMAT = "autoslim-config/1"
_KEYS = {"format", "space", "space_options", "channels", "cost", "source"}


@dataclass
class ChannelConfig:
    """A channel config and where it came from."""

    space: str
    channels: dict[str, int]
    space_options: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "space": self.space, "space_options": dict(self.space_options),
                "channels": {k: int(v) for k, v in self.channels.items()}, "cost": dict(self.cost),
                "source": dict(self.source)}


def save_config(path: str | os.PathLike, config: ChannelConfig) -> None:
    """Write ``config`` atomically."""
    write_yaml(path, config.to_dict(), header="autoslim channel config: unit name -> channel count (see README)")


def load_config(path: str | os.PathLike) -> ChannelConfig:
    """Read a config file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: malformed YAML (file and line), a wrong format tag, unknown or missing keys, non-integer counts.
    """
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a channel config (expected a mapping with format: {FORMAT})")
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: format is {data.get('format')!r}, expected {FORMAT!r}")
    for key in data:
        if key not in _KEYS:
            raise ValueError(f"{path}: unknown key {key!r}; allowed keys: {', '.join(sorted(_KEYS))}")
    for key in ("space", "channels"):
        if key not in data:
            raise ValueError(f"{path}: missing key {key!r}")
    channels = data["channels"]
    if not isinstance(channels, Mapping) or not channels:
        raise ValueError(f"{path}: 'channels' must map unit names to channel counts")
    for unit, count in channels.items():
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"{path}: unit {unit!r}: channel count must be an integer, got {count!r}")
    return ChannelConfig(space=str(data["space"]), channels={str(k): v for k, v in channels.items()},
                         space_options=dict(data.get("space_options") or {}), cost=dict(data.get("cost") or {}),
                         source=dict(data.get("source") or {}))

"""The supernet: a plain model at maximum width with slim layers and channel units (US-Nets section 3).

:func:`convert` traces a plain ``nn.Module``, derives its channel units, and returns a :class:`Supernet`
whose Conv2d / Linear / BatchNorm2d modules are slim layers sharing nothing with the input model. The
supernet can be set to any channel config, sample one, give its largest, smallest and uniform-width
configs, and report the exact cost of any config without running it.
"""

from __future__ import annotations

import copy
import math
import random
from functools import partial
from typing import Callable, Mapping, Optional

from torch import Tensor, nn

from .cost import Cost, CostModel
from .layers import (SlimBatchNorm2d, SlimConv2d, SlimLinear, replace_module, set_parameter_count, slice_parameters,
                     to_slim)
from .trace_records import Trace, input_count
from .tracing import trace_model
from .units import ChannelUnit, make_divisible, unit_choices

__all__ = ["Supernet", "convert", "Config", "uniform_within", "widest_uniform", "UNIFORM_WIDTHS"]

UNIFORM_WIDTHS = (0.25, 0.35, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
"""The uniform widths a search scores as its baseline (those that fit the space)."""

Config = Mapping[str, int]


class Supernet(nn.Module):
    """A slimmable network: ``model`` with slim layers, plus its channel units.

    Configs map the name of every unit that is not frozen to a channel count; frozen units always run at
    their maximum (a config may name them only at that count).

    Attributes:
        model: the converted network; ``forward`` calls it.
        units: every channel unit, frozen ones included, in graph order.
        trace: what tracing found (units, and the units each layer call reads and writes).
        width_mult: the width multiplier the supernet was built at (1.5 for a 1.5x MobileNet).
    """

    def __init__(self, model: nn.Module, trace: Trace, *, width_mult: float = 1.0,
                 uniform: Callable[[float], dict[str, int]] | None = None) -> None:
        super().__init__()
        self.model = model
        self.units: list[ChannelUnit] = trace.units
        self.width_mult = float(width_mult)
        self.input_size = trace.input_size
        self.in_channels = trace.in_channels
        self.trace = trace
        self._cost = CostModel(trace)
        self._uniform = uniform
        self._index = {unit.name: i for i, unit in enumerate(self.units)}
        # (module, kind, input segments, output unit, start of each input segment at full width)
        self._layers: list[tuple[nn.Module, str, tuple, int, tuple[int, ...]]] = []
        modules = dict(model.named_modules())
        seen: set[str] = set()
        for call in trace.calls:
            if call.module not in seen and not call.functional and call.kind != "chconv":
                seen.add(call.module)
                self._layers.append((modules[call.module], call.kind, call.inputs, call.out_unit,
                                     self._starts(call.inputs)))
        # (owner, name, [(dim, units along it, start of each unit at full width)])
        self._sliced_parameters = [(modules[use.owner], use.name, [(dim, segments, self._starts(segments))
                                                                   for dim, segments in use.dims])
                                   for use in trace.parameters]
        self._counts = [unit.maximum for unit in self.units]

    # -- configs ---------------------------------------------------------------------------------

    @property
    def slimmable_units(self) -> list[ChannelUnit]:
        """The units a config names (every unit that is not frozen)."""
        return [unit for unit in self.units if unit.frozen is None]

    @property
    def frozen_units(self) -> list[ChannelUnit]:
        """Frozen units that some layer produces, reads or carries (not intermediate tensors of frozen ops)."""
        return [unit for unit in self.units if unit.frozen is not None and unit.modules]

    @property
    def layer_units(self) -> list[ChannelUnit]:
        """The units that some layer produces, reads or carries: the slimmable and the frozen ones."""
        return [unit for unit in self.units if unit.frozen is None or unit.modules]

    def unit(self, name: str) -> ChannelUnit:
        if name not in self._index:
            raise ValueError(f"unknown unit {name!r}; the units are: {', '.join(u.name for u in self.slimmable_units)}")
        return self.units[self._index[name]]

    def validate_config(self, config: Config, *, complete: bool = True) -> dict[str, int]:
        """Check a config and return it as a plain dict over the slimmable units.

        Raises:
            ValueError: naming the offending unit: unknown, missing (when ``complete``), frozen at another
                count, or a count outside 1..maximum.
        """
        result: dict[str, int] = {}
        for name, count in config.items():
            unit = self.unit(str(name))
            if isinstance(count, bool) or not isinstance(count, int):
                if isinstance(count, float) and count.is_integer():
                    count = int(count)
                else:
                    raise ValueError(f"unit {name!r}: channel count must be an integer, got {count!r}")
            if unit.frozen is not None:
                if count != unit.maximum:
                    raise ValueError(f"unit {name!r} is frozen at {unit.maximum} channels ({unit.frozen}); got {count}")
                continue
            if not 1 <= count <= unit.maximum:
                raise ValueError(f"unit {name!r}: {count} channels is outside the allowed range 1..{unit.maximum}")
            if count % unit.multiple:
                raise ValueError(f"unit {name!r}: {count} channels is not a multiple of {unit.multiple} "
                                 f"(the group width of {unit.carriers[0] if unit.carriers else 'a grouped conv'})")
            result[unit.name] = count
        if complete:
            missing = [unit.name for unit in self.slimmable_units if unit.name not in result]
            if missing:
                raise ValueError(f"config is missing unit(s) {', '.join(repr(m) for m in missing[:5])}"
                                 f"{' and more' if len(missing) > 5 else ''}")
        return result

    def unit_counts(self, config: Config | None = None) -> list[int]:
        """The count of every unit (``units`` order, frozen ones at their maximum) at ``config`` (default: current).

        Raises:
            ValueError: an invalid config, as :meth:`validate_config` with ``complete=False``.
        """
        return self._counts_of(None if config is None else self.validate_config(config, complete=False))

    def _counts_of(self, config: Config | None) -> list[int]:
        if config is None:
            return list(self._counts)
        counts = [unit.maximum for unit in self.units]
        for name, count in config.items():
            counts[self._index[name]] = count
        return counts

    def set_config(self, config: Config) -> None:
        """Run every layer at ``config`` (validated; units it does not name keep their maximum)."""
        config = self.validate_config(config, complete=False)
        self._activate(self._counts_of(config))

    def _activate(self, counts: list[int]) -> None:
        for module, kind, inputs, o, starts in self._layers:
            n_in, ranges = input_count(inputs, counts), self._ranges(inputs, starts, counts)
            if kind == "bn":
                module.set_active(n_in, ranges)
            elif kind == "ln":
                module.set_active(n_in)
            elif kind == "dwconv":
                module.set_active(n_in, n_in)
            else:
                module.set_active(n_in, counts[o], ranges)
        for owner, name, dims in self._sliced_parameters:
            for dim, segments, starts in dims:
                set_parameter_count(owner, name, dim, input_count(segments, counts),
                                    self._ranges(segments, starts, counts))
        self._counts = counts

    def _starts(self, segments: tuple) -> tuple[int, ...]:
        starts, offset = [], 0
        for u, scale in segments:
            starts.append(offset)
            offset += self.units[u].maximum * scale
        return tuple(starts)

    def _ranges(self, segments: tuple, starts: tuple[int, ...], counts: list[int]):
        """The spans of a concatenation read at a prefix of every part (None: a prefix of the whole)."""
        if len(segments) > 1 and any(counts[u] != self.units[u].maximum for u, _ in segments):
            return tuple((start, start + counts[u] * scale) for (u, scale), start in zip(segments, starts))
        return None

    @property
    def config(self) -> dict[str, int]:
        """The config the supernet currently runs at."""
        return {unit.name: self._counts[i] for i, unit in enumerate(self.units) if unit.frozen is None}

    def largest_config(self) -> dict[str, int]:
        return {unit.name: unit.maximum for unit in self.slimmable_units}

    def smallest_config(self) -> dict[str, int]:
        return {unit.name: unit.choices[0] for unit in self.slimmable_units}

    def sample_config(self, rng: random.Random) -> dict[str, int]:
        """An independent uniform choice per unit, drawn from ``rng``."""
        return {unit.name: rng.choice(unit.choices) for unit in self.slimmable_units}

    def uniform_config(self, width: float) -> dict[str, int]:
        """The network its family calls width ``width``.

        Spaces built from a width-multiplier builder get the builder's own rounding rules (MobileNetV2's
        last 1280 channels, MNASNet's rounding); otherwise each unit is ``make_divisible(base * width, 8)``
        with ``base = maximum / width_mult``.
        """
        if not 0 < width <= self.width_mult + 1e-9:
            raise ValueError(f"width {width} is outside the supernet's range (0, {self.width_mult:g}]")
        return self.family_widths()(width)

    def family_widths(self) -> Callable[[float], dict[str, int]]:
        """``width -> uniform_config(width)`` without the range check, as a function that holds no weights.

        A supernet built from this one at other maxima (:func:`autoslim.network.widths.narrow`) keeps it as its
        ``uniform``, so that its uniform configs stay the networks of this supernet's family.
        """
        bases = [(unit.name, unit.maximum / self.width_mult, math.lcm(8, unit.multiple), unit.maximum)
                 for unit in self.slimmable_units]
        return partial(_uniform_counts, self._uniform, bases)

    # -- cost and forward ------------------------------------------------------------------------

    def cost(self, config: Config | None = None, *, input_size: int | None = None) -> Cost:
        """MACs and parameters at ``config`` (default: the current one) and ``input_size`` (default: traced)."""
        if config is not None:
            config = self.validate_config(config, complete=False)
        return self._cost(self._counts_of(config), input_size)

    def cost_per_call(self, config: Config | None = None, *, input_size: int | None = None) -> list[int]:
        """MACs of each layer call (``trace.calls`` order) at ``config``; with the leaf modules called whole
        (``trace.opaque_macs``) they sum to ``cost(config).macs``."""
        if config is not None:
            config = self.validate_config(config, complete=False)
        return self._cost.per_call(self._counts_of(config), input_size)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.trace.train_error:
            raise ValueError(self.trace.train_error)
        return self.model(x)


def _uniform_counts(known_counts: Callable[[float], dict[str, int]] | None,
                    bases: list[tuple[str, float, int, int]], width: float) -> dict[str, int]:
    """The uniform config at ``width``: the family's own counts where ``known_counts`` gives them, else each unit's
    ``make_divisible(base * width, step)``; every count within 1..maximum. ``bases``: (name, base, step, maximum)."""
    known = known_counts(width) if known_counts is not None else {}
    config = {}
    for name, base, step, maximum in bases:
        count = known.get(name)
        if count is None:
            count = make_divisible(base * width, step)
        config[name] = max(1, min(maximum, count))
    return config


def convert(model: nn.Module, *, in_channels: int = 3, input_size: int = 224, groups: int = 10, divisor: int = 8,
            min_ratio: float = 0.0, width_mult: float = 1.0,
            uniform: Callable[[float], dict[str, int]] | None = None) -> Supernet:
    """Build a supernet from a plain model at its maximum width.

    Args:
        model: the network at maximum width; it is copied, not modified.
        in_channels: image channels.
        input_size: image height and width used for tracing and as the default for costs.
        groups: each unit's maximum is split into this many groups.
        divisor: channel counts are rounded to multiples of this.
        min_ratio: counts below this share of a unit's maximum are not choices.
        width_mult: the width multiplier ``model`` was built at (for uniform-width configs).
        uniform: optional ``width -> {unit: count}`` giving the family's own uniform-width networks.
    """
    model = copy.deepcopy(model)
    trace = trace_model(model, in_channels=in_channels, input_size=input_size)
    for unit in trace.units:
        if unit.frozen:
            unit.choices = (unit.maximum,)
            continue
        # a grouped conv's unit moves in whole groups: every choice is a multiple of the group width (the
        # maximum is one already)
        step = math.lcm(divisor, unit.multiple)
        unit.choices = unit_choices(unit.maximum, groups=groups, divisor=step, min_ratio=min_ratio)
    # a conv along the channels (ECA's) runs as it is, on whatever channels are active: it is no slim layer
    slim_names = {call.module for call in trace.calls if not call.functional and call.kind != "chconv"}
    for name in slim_names:
        replace_module(model, name, to_slim(trace.modules[name]))
    for use in trace.parameters:
        slice_parameters(model.get_submodule(use.owner), use.name, [dim for dim, _ in use.dims])
    return Supernet(model, trace, width_mult=width_mult, uniform=uniform)


def uniform_within(supernet: Supernet, *, macs: Optional[int] = None, params: Optional[int] = None,
                   resolution: float = 0.01) -> Optional[tuple[float, dict[str, int]]]:
    """The widest uniform-width config whose cost is within the limits, on a grid of ``resolution``.

    Returns ``(width, config)``, or None when even the narrowest width exceeds the limits.
    """

    def fits(config: dict[str, int]) -> bool:
        cost = supernet.cost(config)
        return (macs is None or cost.macs <= macs) and (params is None or cost.params <= params)

    return widest_uniform(supernet, fits, resolution=resolution)


def last_accepted(accepted: Callable[[int], bool], steps: int) -> Optional[int]:
    """The largest ``i`` in 1..``steps`` that ``accepted`` takes, by bisection, when it takes every ``i`` below one it
    takes (a cost that grows with the width); None when it does not take 1."""
    if not accepted(1):
        return None
    low, high = 1, steps  # invariant: low is accepted; nothing above high is
    while low < high:
        middle = (low + high + 1) // 2
        if accepted(middle):
            low = middle
        else:
            high = middle - 1
    return low


def widest_uniform(supernet: Supernet, fits: Callable[[dict[str, int]], bool], *,
                   resolution: float = 0.01) -> Optional[tuple[float, dict[str, int]]]:
    """The widest uniform-width config that ``fits`` accepts, on a grid of ``resolution`` (None if none does).

    ``fits`` is assumed to accept every width below one it accepts (a cost that grows with width, such as MACs or
    latency), so the grid is bisected: ``fits`` is called about log2(width_mult / resolution) times.
    """
    steps = int(round(supernet.width_mult / resolution))

    low = last_accepted(lambda i: fits(supernet.uniform_config(i * resolution)), steps)
    if low is None:
        return None
    width = round(low * resolution, 6)
    return width, supernet.uniform_config(width)


SLIM_LAYERS = (SlimConv2d, SlimLinear, SlimBatchNorm2d)

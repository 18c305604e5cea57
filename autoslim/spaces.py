"""Search spaces: YAML files naming a model builder, its supernet width, channel choices and training recipe.

A space is data. ``search_spaces/NAME.yaml`` names a builder (``module:function``, a torchvision builder or a
plain module in ``search_spaces/models.py``), the width multiplier of the supernet (1.5 for the mobile
networks and the CIFAR spaces, 1.0 for ResNet-50, as in AutoSlim Table 1), ``groups`` / ``divisor`` /
``min_ratio`` for the channel choices, the input size and classes, and the default dataset and recipe.
Every space, and any user model, becomes a supernet through :func:`autoslim.network.supernet.convert`.

Besides the bundled names, a space may be given as a path to a YAML file of the same form,
``torchvision:NAME`` (any torchvision classification builder), ``timm:NAME`` (any timm model, built with
``pretrained=False``: no weights are downloaded) or ``path/to/file.py:function``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .io import read_yaml

if TYPE_CHECKING:  # torch is imported only to build: listing and loading spaces stays fast
    from torch import nn

    from .network.supernet import Supernet
    from .training.settings import TrainSettings

__all__ = ["SearchSpace", "SPACES_DIR", "RECIPE_KEYS", "list_spaces", "load_space", "configure_space", "space_options",
           "build_model", "build_supernet"]

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"


RECIPE_KEYS = ("epochs", "batch_size", "lr", "momentum", "nesterov", "weight_decay", "warmup_epochs", "label_smoothing",
               "num_subnets", "fraction")
"""The keys of a space's ``recipe``: the training settings of a full from-scratch run (``retrain`` uses it), and the
``fraction`` of its epochs that the supernet trains for. ``lr`` is the rate at ``batch_size``; others scale it linearly."""


@dataclass(frozen=True)
class SearchSpace:
    """One search space, as read from its YAML file."""

    name: str
    builder: str
    """``module:function``, ``file.py:function``, or ``timm:create_model`` with the model's name in ``kwargs``."""
    description: str = ""
    width_arg: str | None = None
    """The builder's width-multiplier argument (None: it has none, and the space one width)."""
    width_mult: float = 1.0
    """The supernet's width multiplier (1.5 for the mobile networks and the CIFAR spaces, 1.0 for ResNet-50)."""
    num_classes: int = 1000
    input_size: int = 224
    in_channels: int = 3
    kwargs: dict[str, Any] = field(default_factory=dict)
    """The builder's other arguments."""
    groups: int = 10
    """Channel choices: each unit's maximum in this many groups, rounded to ``divisor``, at least ``min_ratio`` of it."""
    divisor: int = 8
    min_ratio: float = 0.0
    dataset: str = "digits"
    recipe: TrainSettings | None = None
    """The settings of a full from-scratch run (the YAML's ``recipe``, see :data:`RECIPE_KEYS`; None: the defaults)."""
    fraction: float = 0.2
    """The share of the recipe's epochs that the supernet trains for (the YAML's ``recipe: fraction``)."""
    path: str | None = None

    def __post_init__(self) -> None:
        if self.recipe is None:
            from .training.settings import recipe_settings

            object.__setattr__(self, "recipe", recipe_settings(self.name, self.dataset))


def list_spaces() -> list[str]:
    """Names of the bundled spaces."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def load_space(name: str) -> SearchSpace:
    """Load a space by bundled name, YAML path, ``torchvision:NAME``, ``timm:NAME`` or ``file.py:function``.

    Raises:
        ValueError: unknown space (listing the known ones), an unknown key or a bad value in its YAML.
    """
    if name.startswith("torchvision:"):
        return _torchvision_space(name.split(":", 1)[1])
    if name.startswith("timm:"):
        return _timm_space(name.split(":", 1)[1])
    if ".py:" in name:
        return SearchSpace(name=name, builder=name, description=f"user model {name}", num_classes=1000,
                           input_size=224, dataset="imagefolder")
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or (path.is_file() and name not in list_spaces()):
        data, space_name = read_yaml(path), path.stem
    elif (SPACES_DIR / f"{name}.yaml").is_file():
        path = SPACES_DIR / f"{name}.yaml"
        data, space_name = read_yaml(path), name
    else:
        raise ValueError(f"unknown space {name!r}; known spaces: {', '.join(list_spaces())} "
                         "(or a YAML path, torchvision:NAME, timm:NAME, file.py:function)")
    return _space_from_dict(data, space_name, str(path))


def _space_from_dict(data: Any, name: str, path: str) -> SearchSpace:
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a space file must be a mapping of keys to values")
    known = {f.name for f in dataclasses.fields(SearchSpace)} - {"name", "path", "fraction"}
    for key in data:
        if key not in known:
            raise ValueError(f"{path}: unknown key {key!r}; allowed keys: {', '.join(sorted(known))}")
    if "builder" not in data:
        raise ValueError(f"{path}: missing key 'builder' (module:function)")
    values = dict(data)
    recipe = dict(values.pop("recipe", None) or {})
    for key in recipe:
        if key not in RECIPE_KEYS:
            raise ValueError(f"{path}: unknown recipe key {key!r}; allowed: {', '.join(sorted(RECIPE_KEYS))}")
    fraction = recipe.pop("fraction", 0.2)
    from .training.settings import recipe_settings

    try:
        settings = recipe_settings(name, values.get("dataset", "digits"), **recipe)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: recipe: {error}") from None
    space = SearchSpace(name=name, path=path, recipe=settings, fraction=fraction, **values)
    if not space.width_mult > 0 or space.groups < 1 or space.divisor < 1 or not 0 <= space.min_ratio < 1:
        raise ValueError(f"{path}: width_mult must be > 0, groups and divisor >= 1, min_ratio in [0, 1)")
    return space


# Builders that pass ``width_mult`` through ``**kwargs`` to a network that uses it (others ignore or refuse it).
_TORCHVISION_WIDTH_BUILDERS = {"mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"}


def _torchvision_space(model_name: str) -> SearchSpace:
    import torchvision

    builders = torchvision.models.list_models(module=torchvision.models)
    if model_name not in builders:
        raise ValueError(f"unknown torchvision classification model {model_name!r}; e.g. {', '.join(builders[:8])}, ...")
    builder = f"torchvision.models:{model_name}"
    width_arg = "width_mult" if "width_mult" in inspect.signature(_resolve(builder)).parameters \
        or model_name in _TORCHVISION_WIDTH_BUILDERS else None
    return SearchSpace(name=f"torchvision:{model_name}", builder=builder, description=f"torchvision {model_name}",
                       width_arg=width_arg, dataset="imagefolder")


def _timm_space(model_name: str) -> SearchSpace:
    try:
        import timm
    except ImportError as error:
        raise ValueError(f"timm:{model_name} needs timm: pip install 'autoslim[timm]'") from error
    if not timm.is_model(model_name):
        similar = timm.list_models(f"*{model_name}*")[:8] or timm.list_models()[:8]
        raise ValueError(f"unknown timm model {model_name!r}; e.g. {', '.join(similar)}, ...")
    return SearchSpace(name=f"timm:{model_name}", builder="timm:create_model", description=f"timm {model_name}",
                       kwargs={"model_name": model_name, "pretrained": False}, dataset="imagefolder")


def _resolve(builder: str) -> Callable[..., nn.Module]:
    module_name, _, attr = builder.rpartition(":")
    if not module_name:
        raise ValueError(f"builder {builder!r} must be module:function or file.py:function")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise FileNotFoundError(f"model file {path} not found")
            spec = importlib.util.spec_from_file_location(f"autoslim_user_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"cannot import {module_name!r} for builder {builder!r}: {error}") from error
    if not hasattr(module, attr):
        raise ValueError(f"{module_name} has no function {attr!r}")
    return getattr(module, attr)


def configure_space(space: SearchSpace, *, width_mult: float | None = None, num_classes: int | None = None,
                    input_size: int | None = None) -> SearchSpace:
    """``space`` with another supernet width, class count or input size (None keeps the space's).

    Raises:
        ValueError: a width for a space whose builder has no width argument, or a value out of range.
    """
    changes: dict[str, Any] = {}
    if width_mult is not None and abs(float(width_mult) - space.width_mult) > 1e-9:
        if not space.width_arg:
            raise ValueError(f"space {space.name} has no width multiplier (its builder takes none); "
                             f"only --width-mult {space.width_mult:g} exists")
        if not float(width_mult) > 0:
            raise ValueError(f"--width-mult must be positive, got {width_mult}")
        changes["width_mult"] = float(width_mult)
    for key, value in (("num_classes", num_classes), ("input_size", input_size)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
            changes[key] = value
    return dataclasses.replace(space, **changes) if changes else space


def space_options(space: SearchSpace, *, num_classes: int, input_size: int) -> dict[str, Any]:
    """The options a checkpoint or config file records beside the space's name (the inverse of
    :func:`configure_space`): the classes and input size it was built for, its image channels and supernet width."""
    return {"num_classes": num_classes, "input_size": input_size, "in_channels": space.in_channels,
            "width_mult": space.width_mult}


def build_model(space: SearchSpace, *, width: float | None = None, num_classes: int | None = None) -> nn.Module:
    """The plain network of ``space`` at width ``width`` (default: the supernet's width)."""
    kwargs = dict(space.kwargs)
    kwargs["num_classes"] = space.num_classes if num_classes is None else num_classes
    if space.width_arg:
        kwargs[space.width_arg] = space.width_mult if width is None else width
    elif width is not None and abs(width - space.width_mult) > 1e-9:
        raise ValueError(f"space {space.name} has no width argument; only width {space.width_mult:g} exists")
    from torch import nn

    builder = _resolve(space.builder)
    parameters = inspect.signature(builder).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in parameters}  # a user function may take no options
    model = builder(**kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(f"builder {space.builder} returned {type(model).__name__}, not an nn.Module")
    return model


def build_supernet(space: SearchSpace, *, num_classes: int | None = None, input_size: int | None = None,
                   widths: Mapping[str, int] | None = None) -> Supernet:
    """Trace the space's network at its supernet width and convert it into a :class:`Supernet`.

    Args:
        widths: the maximum of every slimmable unit, where the supernet is a trained network narrower than the
            space's (:func:`autoslim.network.widths.narrow`; None: the space's own maxima).
    """
    from .network.supernet import convert

    num_classes = space.num_classes if num_classes is None else num_classes
    input_size = space.input_size if input_size is None else input_size
    uniform = None
    if space.width_arg:
        def uniform(width: float) -> dict[str, int]:
            return _uniform_counts(space, width, num_classes, input_size)
    supernet = convert(build_model(space, num_classes=num_classes), in_channels=space.in_channels,
                       input_size=input_size, groups=space.groups, divisor=space.divisor, min_ratio=space.min_ratio,
                       width_mult=space.width_mult, uniform=uniform)
    if widths is None:
        return supernet
    from .network.widths import narrow

    return narrow(supernet, widths, groups=space.groups, divisor=space.divisor, min_ratio=space.min_ratio)


_UNIFORM_CACHE: dict[tuple, dict[str, int]] = {}


def _uniform_counts(space: SearchSpace, width: float, num_classes: int, input_size: int) -> dict[str, int]:
    """Unit counts of the network the family's own builder makes at ``width`` (its rounding rules included)."""
    key = (space.builder, repr(sorted(space.kwargs.items())), space.width_arg, round(width, 6), num_classes,
           space.in_channels, input_size)
    if key not in _UNIFORM_CACHE:
        from .network.tracing import trace_model

        model = build_model(space, width=width, num_classes=num_classes)
        trace = trace_model(model, in_channels=space.in_channels, input_size=input_size)
        _UNIFORM_CACHE[key] = {unit.name: unit.maximum for unit in trace.units}
    return dict(_UNIFORM_CACHE[key])

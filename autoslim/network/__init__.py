"""The network side: a plain model traced into channel units, its slim layers, cost, supernet and static network.

- :mod:`~autoslim.network.units`: channel units and their choices (``make_divisible``);
- :mod:`~autoslim.network.layers`: the slim layers (Conv2d, Linear, BatchNorm2d, LayerNorm) and model surgery;
- :mod:`~autoslim.network.tracing`: ``trace_model``, with :mod:`~autoslim.network.trace_records` (what it finds),
  :mod:`~autoslim.network.op_rules` (how each op maps layouts), :mod:`~autoslim.network.shape_rules` (reshapes,
  reductions, indexing, concatenations), :mod:`~autoslim.network.channel_flow` (units and layouts) and
  :mod:`~autoslim.network.fx_graph` (the leaf tracer, shape propagation);
- :mod:`~autoslim.network.cost`: MACs and parameters of any config, by arithmetic;
- :mod:`~autoslim.network.supernet`: ``Supernet`` and ``convert``;
- :mod:`~autoslim.network.static`: ``materialize``, the plain network of a config;
- :mod:`~autoslim.network.ordering`: ``sort_channels``, channels ordered by importance;
- :mod:`~autoslim.network.widths`: a supernet whose maximum is a trained network (its widths, its weights checked).
"""

from .units import make_divisible, unit_choices, ChannelUnit
from .layers import (SlimConv2d, SlimLinear, SlimBatchNorm2d, SlimLayerNorm, SlimLayerNorm2d, SLIM_TYPES, to_slim,
                     Ranges, is_layer_norm_2d, replace_module, slice_parameters, set_parameter_count,
                     unslice_parameters)
from .trace_records import Segment, Layout, LayerCall, ParameterUse, Trace, input_count
from .fx_graph import LeafTracer, symbolic_trace, propagate_shapes
from .tracing import trace_model
from .cost import Cost, CostModel, count_parameters
from .supernet import Supernet, convert, Config, uniform_within, widest_uniform, UNIFORM_WIDTHS
from .static import materialize, to_static
from .ordering import sort_channels, channel_importance, IMPORTANCES
from .widths import widths_of, narrow, fitting_width, check_keys, load_weights

__all__ = ["make_divisible", "unit_choices", "ChannelUnit", "SlimConv2d", "SlimLinear", "SlimBatchNorm2d",
           "SlimLayerNorm", "SlimLayerNorm2d", "SLIM_TYPES", "to_slim", "Ranges", "is_layer_norm_2d", "replace_module",
           "slice_parameters", "set_parameter_count", "unslice_parameters", "Segment", "Layout", "LayerCall",
           "ParameterUse", "Trace", "input_count", "LeafTracer", "symbolic_trace", "propagate_shapes", "trace_model",
           "Cost", "CostModel", "count_parameters", "Supernet", "convert", "Config", "uniform_within", "widest_uniform",
           "UNIFORM_WIDTHS", "materialize", "to_static", "sort_channels", "channel_importance", "IMPORTANCES",
           "widths_of", "narrow", "fitting_width", "check_keys", "load_weights"]

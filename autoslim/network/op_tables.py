"""The tables of the op rules: which modules, functions and methods each rule of
:mod:`autoslim.network.op_rules` (and :mod:`autoslim.network.moved_channels`) knows."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ELEMENTWISE_MODULES", "POOL_MODULES", "ELEMENTWISE_FUNCTIONS", "POOL_FUNCTIONS", "ELEMENTWISE_METHODS",
           "ELEMENTWISE_NAMES", "BINARY", "BINARY_METHODS", "FLATTEN", "RESHAPE_METHODS", "REDUCTIONS",
           "REDUCTION_METHODS", "PERMUTE", "CAT", "STACK", "SPLITS", "SHAPE_QUERIES", "FUNCTIONAL", "MOVES"]

ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
    nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softplus, nn.Identity, nn.PReLU,
    nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.Softmax,
)
POOL_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.Upsample)
ELEMENTWISE_FUNCTIONS = {
    F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid,
    F.sigmoid, F.tanh, F.hardtanh, F.softplus, F.dropout, F.dropout2d,
    torch.relu, torch.sigmoid, torch.tanh, torch.clamp, torch.clip, torch.neg, torch.abs, torch.exp,
    operator.neg, F.relu_, torch.relu_,
    F.softmax, torch.softmax,  # over any dim, the channels included: it runs over whatever channels are active
}
POOL_FUNCTIONS = {F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.avg_pool2d, F.max_pool2d, F.interpolate}
ELEMENTWISE_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "clamp", "clamp_", "clip", "contiguous", "clone", "float",
    "half", "bfloat16", "to", "type_as", "detach", "neg", "abs", "exp", "hardswish", "softmax",
}
# Functions that keep shapes and act per element or per sample, known by name (torchvision wraps them for fx).
ELEMENTWISE_NAMES = {"stochastic_depth"}
BINARY = {
    operator.add, operator.iadd, operator.mul, operator.imul, operator.sub, operator.isub, operator.truediv,
    torch.add, torch.mul, torch.sub, torch.div,
}
BINARY_METHODS = {"add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_"}
FLATTEN = {torch.flatten}
RESHAPE_METHODS = {"flatten", "view", "reshape", "squeeze"}
REDUCTIONS = {torch.mean, torch.sum, torch.amax, torch.amin}
REDUCTION_METHODS = {"mean", "sum", "amax", "amin"}
PERMUTE = {torch.permute}
CAT = {torch.cat, torch.concat, torch.concatenate}
STACK = {torch.stack}
SPLITS = {torch.chunk, torch.split, torch.unbind, torch.tensor_split, "chunk", "split", "unbind", "tensor_split"}
SHAPE_QUERIES = {"size", "dim", "numel"}
# Functional layers that a module's own forward may call on its parameters, with their argument names.
FUNCTIONAL = {
    F.batch_norm: ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
    F.group_norm: ("input", "num_groups", "weight", "bias", "eps"),
    F.linear: ("input", "weight", "bias"),
    F.conv2d: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
}
# Ops that may move a per-channel vector's channels into another dim, ``(N, C) -> (N, 1, C)``, and back.
MOVES = {"flatten", "view", "reshape", "squeeze", "unsqueeze", "transpose", torch.flatten, torch.squeeze,
         torch.unsqueeze, torch.transpose}

"""One-node ONNX graphs: how ONNX Runtime times a single conv or linear layer for the latency model's lookup."""

from __future__ import annotations

from torch import nn

__all__ = ["one_node_onnx"]


def one_node_onnx(layer: nn.Module, shape: tuple[int, ...]) -> bytes:
    """A one-node ONNX graph (Conv, MatMul + Add, or Identity) computing ``layer`` on a fixed input ``shape``."""
    from onnx import TensorProto, helper, numpy_helper

    initializers = []
    if isinstance(layer, nn.Identity):
        nodes = [helper.make_node("Identity", ["x"], ["y"])]
    elif isinstance(layer, nn.Conv2d):
        weight = layer.weight.detach().cpu()
        if isinstance(layer.padding, str):  # "same" (stride 1: the extra pixel on the right, as SAME_UPPER) or "valid"
            padding = {"auto_pad": "SAME_UPPER" if layer.padding == "same" else "VALID"}
        else:
            padding = {"pads": [layer.padding[0], layer.padding[1], layer.padding[0], layer.padding[1]]}
        initializers.append(numpy_helper.from_array(weight.numpy(), "W"))
        inputs = ["x", "W"]
        if layer.bias is not None:
            initializers.append(numpy_helper.from_array(layer.bias.detach().cpu().numpy(), "B"))
            inputs.append("B")
        nodes = [helper.make_node("Conv", inputs, ["y"], kernel_shape=list(layer.kernel_size),
                                  strides=list(layer.stride), dilations=list(layer.dilation), group=layer.groups,
                                  **padding)]
    elif isinstance(layer, nn.Linear):
        initializers.append(numpy_helper.from_array(layer.weight.detach().cpu().t().contiguous().numpy(), "W"))
        nodes = [helper.make_node("MatMul", ["x", "W"], ["y" if layer.bias is None else "xw"])]
        if layer.bias is not None:
            initializers.append(numpy_helper.from_array(layer.bias.detach().cpu().numpy(), "B"))
            nodes.append(helper.make_node("Add", ["xw", "B"], ["y"]))
    else:
        raise ValueError(f"no one-node ONNX graph for {type(layer).__name__}")
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


"""The coverage table of benchmarks/README.md: one torchvision model per CNN family, converted unmodified.

    python benchmarks/coverage.py > coverage.md

For each model: units slimmable / all, the frozen units grouped by reason, and the MACs at width 1.0
(224x224; 299x299 for Inception v3), which equal FlopCounterMode / 2 of the torchvision model
(``tests/test_network_torchvision.py`` checks that).
"""

from __future__ import annotations

import re
from collections import Counter

import torch
import torchvision

from autoslim.budget import format_count
from autoslim.network.supernet import convert

# One model per family (the same as tests/test_network_torchvision.py)
FAMILIES = [("ResNet", "resnet18"), ("ResNeXt", "resnext50_32x4d"), ("Wide ResNet", "wide_resnet50_2"),
            ("MobileNetV2", "mobilenet_v2"), ("MobileNetV3", "mobilenet_v3_small"), ("MNASNet", "mnasnet0_5"),
            ("EfficientNet", "efficientnet_b0"), ("EfficientNetV2", "efficientnet_v2_s"), ("RegNetX", "regnet_x_400mf"),
            ("RegNetY", "regnet_y_400mf"), ("ShuffleNetV2", "shufflenet_v2_x0_5"), ("DenseNet", "densenet121"),
            ("SqueezeNet", "squeezenet1_1"), ("VGG", "vgg11_bn"), ("GoogLeNet", "googlenet"),
            ("Inception v3", "inception_v3"), ("ConvNeXt", "convnext_tiny"), ("AlexNet", "alexnet")]
_AUX = {"googlenet": {"aux_logits": True, "init_weights": False}, "inception_v3": {"aux_logits": True, "init_weights": False}}


def _reason(text: str) -> str:
    """A frozen reason without the layer names, so that units frozen for the same cause group together."""
    first = text.split("; ")[0]
    first = re.sub(r"\b(at|in|conv|parameter|LayerNorm) (?!arithmetic)[\w.#]+", r"\1 …", first)
    return re.sub(r"\s+", " ", first).strip()


def main() -> None:
    torch.set_num_threads(1)
    print("| family | model | slimmable units | frozen units and why | MACs at 1.0 |")
    print("|---|---|---|---|---|")
    for family, name in FAMILIES:
        model = torchvision.models.get_model(name, weights=None, **_AUX.get(name, {}))
        size = 299 if name == "inception_v3" else 224
        supernet = convert(model, input_size=size)
        reasons = Counter(_reason(u.frozen) for u in supernet.frozen_units)
        frozen = ", ".join(f"{count} {reason}" for reason, count in reasons.most_common())
        slim = len(supernet.slimmable_units)
        total = len(supernet.layer_units)
        print(f"| {family} | `{name}` | {slim} / {total} ({slim / total:.0%}) | {frozen} | "
              f"{format_count(supernet.cost().macs)} |", flush=True)


if __name__ == "__main__":
    main()

"""The timm coverage table of benchmarks/README.md: one timm model per CNN family, converted unmodified (issue 19).

    python benchmarks/coverage_timm.py > coverage_timm.md

Each model is built with ``timm.create_model(NAME, pretrained=False, num_classes=10)`` (no weights are
downloaded) and traced at 64x64. For each: units slimmable / all, the frozen units grouped by reason, whether
the cost at the largest, the smallest and a random config equals FlopCounterMode / 2 (and the parameter count)
of the exported static network, whether ``materialize`` reproduces the supernet there, and whether those
configs run forward and backward in training mode. A model that cannot be converted says why.
"""

from __future__ import annotations

import copy
import random
import sys
from collections import Counter

import torch
from torch.utils.flop_counter import FlopCounterMode

from autoslim.budget import format_count
from autoslim.network.static import materialize
from autoslim.network.supernet import convert

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from coverage import _reason  # noqa: E402  (the torchvision table's grouping of frozen reasons)

FAMILIES = [
    ("ResNet", "resnet18"), ("ResNet-D", "resnet18d"), ("SE-ResNet", "seresnet18"), ("ResNeXt", "resnext26ts"),
    ("ResNeSt", "resnest14d"), ("Res2Net", "res2net50_14w_8s"), ("EfficientNet", "efficientnet_b0"),
    ("MobileNetV2", "mobilenetv2_100"), ("MobileNetV3", "mobilenetv3_large_100"), ("MixNet", "mixnet_s"),
    ("FBNetV3", "fbnetv3_b"), ("HardCoreNAS", "hardcorenas_a"), ("LCNet", "lcnet_050"), ("TinyNet", "tinynet_e"),
    ("GhostNet", "ghostnet_100"), ("RexNet", "rexnet_100"), ("RegNetX", "regnetx_002"), ("RegNetY", "regnety_002"),
    ("DenseNet", "densenet121"), ("DPN", "dpn68"), ("CSPResNet", "cspresnet50"), ("CSPDarkNet", "cspdarknet53"),
    ("VoVNet", "ese_vovnet19b_dw"), ("GENet", "gernet_s"), ("RepVGG", "repvgg_a0"), ("MobileOne", "mobileone_s0"),
    ("DLA", "dla34"), ("HRNet", "hrnet_w18_small"), ("Xception", "xception41"), ("Inception v3", "inception_v3"),
    ("VGG", "vgg11"), ("ConvNeXt", "convnext_atto"), ("EfficientViT", "efficientvit_b0"),
]
SIZE = 64


def _measured(model: torch.nn.Module) -> tuple[int, int]:
    model = copy.deepcopy(model).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, SIZE, SIZE))
    return counter.get_total_flops() // 2, sum(p.numel() for p in model.parameters())


def _row(family: str, name: str) -> str:
    import timm

    torch.manual_seed(0)
    try:
        supernet = convert(timm.create_model(name, pretrained=False, num_classes=10), input_size=SIZE)
    except ValueError as error:
        return f"| {family} | `{name}` | not converted: {str(error).split(': ', 1)[-1][:90]} | | | | |"
    x = torch.randn(2, 3, SIZE, SIZE)
    exact = parity = runs = True
    for config in (supernet.largest_config(), supernet.smallest_config(), supernet.sample_config(random.Random(0))):
        supernet.set_config(config)
        supernet.train()
        supernet.zero_grad(set_to_none=True)
        supernet(x).sum().backward()
        runs &= all(torch.isfinite(p.grad).all() for p in supernet.parameters() if p.grad is not None)
        supernet.eval()
        static = materialize(supernet, config).eval()
        with torch.no_grad():
            parity &= torch.allclose(static(x), supernet(x), rtol=1e-4, atol=1e-5)
        exact &= tuple(supernet.cost(config)) == _measured(static)
    reasons = Counter(_reason(u.frozen) for u in supernet.frozen_units)
    frozen = ", ".join(f"{count} {reason}" for reason, count in reasons.most_common())
    slim, total = len(supernet.slimmable_units), len(supernet.layer_units)
    yes = {True: "yes", False: "**no**"}
    return (f"| {family} | `{name}` | {slim} / {total} ({slim / total:.0%}) | {frozen} | "
            f"{format_count(supernet.cost(supernet.largest_config()).macs)} | {yes[exact]} | {yes[parity]} | "
            f"{yes[runs]} |")


def main() -> None:
    torch.set_num_threads(1)
    names = sys.argv[1:]
    print("| family | model | slimmable units | frozen units and why | MACs at 64x64 | exact cost | parity "
          "| train fwd/bwd |")
    print("|---|---|---|---|---|---|---|---|")
    for family, name in FAMILIES:
        if not names or name in names:
            print(_row(family, name), flush=True)


if __name__ == "__main__":
    main()

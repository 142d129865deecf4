"""ResNet family: torchvision's ResNet, ResNeXt and Wide ResNet architectures.

Stages: ``stem`` (conv1 + bn1), ``layer1`` … ``layer4``; head ``fc``. Checkpoints saved
from DataParallel/DDP (``module.``), ``torch.compile`` (``_orig_mod.``), or detection
frameworks that wrap the same network as ``backbone.`` load as they are.
"""

from __future__ import annotations

from typing import Any

from zooadapt import DataConfig, Family, Stage, StageMap, hookimpl
from zooadapt.rules import StripPrefix

ARCHITECTURES = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2",
)

STAGES = StageMap(
    stages=(
        Stage("stem", ("conv1", "bn1")),
        Stage("layer1", ("layer1",)),
        Stage("layer2", ("layer2",)),
        Stage("layer3", ("layer3",)),
        Stage("layer4", ("layer4",)),
    ),
    head="fc",
)


def build(arch: str, num_classes: int = 1000, **kwargs: Any):
    import torchvision.models as tvm

    if arch not in ARCHITECTURES:
        raise ValueError(f"resnet family builds {', '.join(ARCHITECTURES)}, not {arch!r}")
    return getattr(tvm, arch)(weights=None, num_classes=num_classes, **kwargs)


@hookimpl
def zooadapt_register_families(register):
    register(Family(
        name="resnet",
        build=build,
        stages=STAGES,
        key_rules=(StripPrefix("backbone."),),
        architectures=ARCHITECTURES,
        data=DataConfig(),  # torchvision's published ImageNet preprocessing
        description="torchvision ResNet / ResNeXt / Wide ResNet",
    ))

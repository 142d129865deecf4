"""AlexNet family: torchvision's AlexNet (the "one weird trick" variant torchvision ships).

Stages follow the paper's layer names: ``conv1`` … ``conv5`` (``features.0/3/6/8/10``), ``fc6``
(``classifier.1``) and ``fc7`` (``classifier.4``); groups ``features`` (= conv1-conv5) and
``classifier`` (= fc6-fc7) so ``freeze="features"`` reads as it does in torchvision code. The
head is ``classifier.6``. The Hub holds no official copy of the weights, so the registry entry
points at torchvision's published file by URL and checks its sha256 prefix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zooadapt.plugin_api import (
    DataConfig,
    Family,
    ModelEntry,
    Stage,
    StageMap,
    WeightSource,
    hookimpl,
    sequential_steps,
)

if TYPE_CHECKING:
    import torch.nn as nn

_CONV_INDEX = (0, 3, 6, 8, 10)

STAGES = StageMap(
    stages=(
        *(Stage(f"conv{i + 1}", (f"features.{index}",)) for i, index in enumerate(_CONV_INDEX)),
        Stage("fc6", ("classifier.1",)),
        Stage("fc7", ("classifier.4",)),
    ),
    head="classifier.6",
    groups={"features": tuple(f"conv{i + 1}" for i in range(5)), "classifier": ("fc6", "fc7")},
)


def build(arch: str, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    import torchvision.models as tvm

    if arch != "alexnet":
        raise ValueError(f"alexnet family builds 'alexnet', not {arch!r}")
    return tvm.alexnet(weights=None, num_classes=num_classes, **kwargs)


def features(model: nn.Module, out_stages: tuple[str, ...]) -> list:
    """The forward order of the stages for ``features_only``: as registered, plus the flatten
    torchvision's forward applies between pooling and fc6."""
    import torch.nn as nn


    last = max(out_stages, key=STAGES.names.index)
    return sequential_steps(model, STAGES, "alexnet", upto=last, after={"avgpool": [nn.Flatten(1)]})


@hookimpl
def zooadapt_register_families(register):  # type: ignore[no-untyped-def]
    register(Family(
        name="alexnet",
        build=build,
        stages=STAGES,
        architectures=("alexnet",),
        data=DataConfig(),  # torchvision's published ImageNet preprocessing
        features=features,
        description="torchvision AlexNet",
    ))


@hookimpl
def zooadapt_register_models(register):  # type: ignore[no-untyped-def]
    register(ModelEntry(
        name="alexnet", family="alexnet", arch="alexnet",
        source=WeightSource(url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", sha256="7be5be79"),
        description="AlexNet, torchvision ImageNet-1k weights (56.5% top-1)",
    ))

"""ResNet family: torchvision's ResNet, ResNeXt and Wide ResNet architectures.

Stages: ``stem`` (conv1 + bn1), ``layer1`` … ``layer4``; head ``fc``. The stem's output, as a
feature map, is the ReLU's before the max-pool (stride 2), which then opens ``layer1``: the
feature maps are timm's ResNet's (``act1``, ``layer1`` … ``layer4``). Checkpoints saved
from DataParallel/DDP (``module.``), ``torch.compile`` (``_orig_mod.``), or detection
frameworks that wrap the same network as ``backbone.`` load as they are.

Named models ``resnet18`` … ``resnet152`` point at the Hub repos holding torchvision's original
ImageNet weights (timm's ``tv_in1k`` tags), whose keys are torchvision's.
"""

from __future__ import annotations

from typing import Any

from zooadapt.plugin_api import (
    DataConfig,
    Family,
    Layout,
    ModelEntry,
    Rename,
    Stage,
    StageMap,
    StripPrefix,
    WeightSource,
    hookimpl,
    sequential_steps,
)

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


def features(model: Any, out_stages: tuple[str, ...]) -> list[tuple[str, tuple[Any, ...]]]:
    """``Family.features``: the modules in forward order, with the max-pool opening ``layer1``
    rather than ending the stem, so the stem's output is the stride-2 map timm's ResNet calls
    ``act1`` (a cut at ``stem`` skips the pool)."""
    last = max(out_stages, key=STAGES.names.index)
    steps = [(stage, list(items)) for stage, items in sequential_steps(model, STAGES, "resnet", upto=last)]
    stem = steps[0][1]
    if "maxpool" in stem:
        stem.remove("maxpool")
        if len(steps) > 1:
            steps[1][1].insert(0, "maxpool")
    return [(stage, tuple(items)) for stage, items in steps]


MMPRETRAIN = Layout(
    name="mmpretrain-resnet",
    family="resnet",
    detect=r"head\.fc\.weight",
    rules=(Rename(r"head\.fc\.(weight|bias)", r"fc.\1"),),
    description="OpenMMLab's ImageClassifier (mmpretrain, mmcls): the ResNet under 'backbone.' in torchvision's "
                "names, its LinearClsHead's linear layer as head.fc (mmpretrain/models/heads/linear_head.py)",
    provider="resnet",
)


MMPRETRAIN_TIMM = Layout(
    name="mmpretrain-resnet-timm",
    family="timm",
    # the wrapped stem, not head.fc alone: head.fc is timm's own name for ConvNeXt's classifier
    detect=r"backbone\.conv1\.weight",
    rules=(StripPrefix("backbone."), Rename(r"head\.fc\.(weight|bias)", r"fc.\1")),
    description="OpenMMLab's ImageClassifier (mmpretrain, mmcls) of a ResNet, ResNeXt or Wide ResNet, read into "
                "timm's network of the same names (resnext50_32x4d, wide_resnet50_2, resnet50.tv_in1k): the backbone "
                "under 'backbone.', its LinearClsHead's linear layer as head.fc",
    provider="resnet",
)


_D2_AT = r"(?:backbone\.(?:bottom_up\.)?)?"
"""Where a detector keeps detectron2's ResNet: ``backbone.bottom_up.`` under an FPN (fpn.py),
``backbone.`` itself in the C4, DC5 and C5 models (build_resnet_backbone as the backbone), nothing
for the trunk alone (tools/convert-torchvision-to-d2.py, or a ``ResNet`` built on its own)."""


def _detectron2_rules() -> tuple[Rename, ...]:
    """detectron2/modeling/backbone/resnet.py names: ``stem.conv1`` (its norm inside it, as
    ``conv1.norm``), stages ``res2``..``res5`` of ``BasicBlock``s (R18/R34: ``conv1``, ``conv2``) or
    ``BottleneckBlock``s (``conv1``..``conv3``) whose ``shortcut`` is torchvision's ``downsample``,
    under ``_D2_AT``. A C4 model builds ``res5`` into its ROI heads instead
    (modeling/roi_heads/roi_heads.py, ``Res5ROIHeads``: ``self.res5 = nn.Sequential(*blocks)``),
    so ``roi_heads.res5.N`` is ``layer4.N``; a ``ResNet`` built with ``num_classes`` classifies
    with ``self.linear`` (torchvision's ``fc``)."""
    out = [Rename(_D2_AT + r"stem\.conv1\.weight", "conv1.weight"),
           Rename(_D2_AT + r"stem\.conv1\.norm\.(.+)", r"bn1.\1"),
           Rename(r"linear\.(weight|bias)", r"fc.\1")]
    for stage in (2, 3, 4, 5):
        where = rf"(?:{_D2_AT}|roi_heads\.)" if stage == 5 else _D2_AT
        at, layer = where + rf"res{stage}\.(\d+)\.", f"layer{stage - 1}"
        out += [Rename(at + r"conv(\d)\.weight", layer + r".\1.conv\2.weight"),
                Rename(at + r"conv(\d)\.norm\.(.+)", layer + r".\1.bn\2.\3"),
                Rename(at + r"shortcut\.weight", layer + r".\1.downsample.0.weight"),
                Rename(at + r"shortcut\.norm\.(.+)", layer + r".\1.downsample.1.\2")]
    return tuple(out)


DETECTRON2 = Layout(
    name="detectron2-resnet",
    family="resnet",
    detect=_D2_AT + r"res2\.0\.conv1\.norm\.weight",
    rules=_detectron2_rules(),
    description="detectron2's ResNet (stem.conv1, res2-res5, shortcut; FrozenBatchNorm as conv.norm; under "
                "backbone.bottom_up. or backbone., a C4 model's res5 in roi_heads.res5). Its "
                "ImageNet weights from MSRA, and detectors trained from them, stride in each block's 1x1 "
                "convolution (RESNETS.STRIDE_IN_1X1=True), torchvision's ResNet in the 3x3: such weights load "
                "whole but compute other features than in detectron2; those converted from torchvision "
                "(STRIDE_IN_1X1=False) compute the same",
    provider="resnet",
)


@hookimpl
def zooadapt_register_layouts(register):
    register(MMPRETRAIN)
    register(MMPRETRAIN_TIMM)
    register(DETECTRON2)


@hookimpl
def zooadapt_register_families(register):
    register(Family(
        name="resnet",
        build=build,
        stages=STAGES,
        features=features,
        key_rules=(StripPrefix("backbone."),),
        architectures=ARCHITECTURES,
        data=DataConfig(),  # torchvision's published ImageNet preprocessing
        description="torchvision ResNet / ResNeXt / Wide ResNet",
    ))


_MODELS = (  # name, top-1 of torchvision's ImageNet-1k weights (v1)
    ("resnet18", "69.8"), ("resnet34", "73.3"), ("resnet50", "76.1"), ("resnet101", "77.4"), ("resnet152", "78.3"),
)


@hookimpl
def zooadapt_register_models(register):
    for name, top1 in _MODELS:
        register(ModelEntry(
            name=name, family="resnet", arch=name,
            source=WeightSource(repo_id=f"timm/{name}.tv_in1k", filename="model.safetensors", revision="main"),
            description=f"ResNet-{name[6:]}, torchvision ImageNet-1k weights ({top1}% top-1)",
        ))

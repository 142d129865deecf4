"""Stage maps and ``features_only`` cuts of torchvision's classification networks, for ``torchvision_zoo``.

One stage map per network class, read from the built model (the number of blocks varies within
a class: ViT-B has 12 encoder layers, ViT-H 32; EfficientNetV2-S six stages, -M/-L seven). Stages
follow each network's own structure and resolution steps, so ``freeze="stem-stage2"`` and the
learning-rate groups cut where the network does:

* ViT: ``stem`` (patch projection, class token, position embedding), ``block0`` … ``blockN``
  (``encoder.layers.encoder_layer_I``), ``norm`` (``encoder.ln``); group ``blocks``; head ``heads.head``.
* Swin / Swin V2: ``stem`` (``features.0``), ``stage1`` … ``stage4`` (a stage starts with its patch
  merging: ``features.2``+``features.3`` …), ``norm``; head ``head``.
* RegNet: ``stem``, ``block1`` … ``block4`` (``trunk_output.blockN``); head ``fc``.
* EfficientNetV2: ``stem`` (``features.0``), ``stage1`` … ``stageN``, ``conv_head`` (the last 1x1
  conv); head ``classifier.1``.
* MNASNet: ``stem`` (``layers.0-7``), ``stack1`` … ``stack6`` (``layers.8-13``), ``conv_head``; head ``classifier.1``.
* ShuffleNet V2: ``stem`` (``conv1``), ``stage2`` … ``stage4``, ``conv5``; head ``fc``.
* SqueezeNet: ``conv1``, ``fire2`` … ``fire9``; group ``features``; head ``classifier.1`` (a 1x1 conv).
* GoogLeNet: ``stem`` (conv1-3), ``inception3``/``4``/``5`` (each starting with the max-pool before
  it, so the outputs are at strides 4, 8, 16, 32); head ``fc``, extra heads ``aux1``/``aux2``
  when built with ``aux_logits``.
* MaxViT: ``stem``, ``stage1`` … ``stage4`` (``blocks.I``), ``pre_logits`` (``classifier.2-3``:
  LayerNorm, Linear, Tanh); head ``classifier.5``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zooadapt.plugin_api import InvalidArgumentError, PluginError, Stage, StageMap, sequential_steps

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["stages", "features"]

FAMILY = "torchvision"

# Position of each stage inside SqueezeNet's ``features`` (the two versions pool at different places).
_SQUEEZENET_INDEX = {
    7: {"conv1": 0, "fire2": 3, "fire3": 4, "fire4": 5, "fire5": 7, "fire6": 8, "fire7": 9, "fire8": 10, "fire9": 12},
    3: {"conv1": 0, "fire2": 3, "fire3": 4, "fire4": 6, "fire5": 7, "fire6": 9, "fire7": 10, "fire8": 11, "fire9": 12},
}


def _vit(model: nn.Module) -> StageMap:
    layers = len(model.encoder.layers)  # type: ignore[union-attr,arg-type]
    blocks = tuple(Stage(f"block{i}", (f"encoder.layers.encoder_layer_{i}",)) for i in range(layers))
    extra = (Stage("pre_logits", ("heads.pre_logits",)),) if hasattr(model.heads, "pre_logits") else ()
    return StageMap(
        stages=(Stage("stem", ("conv_proj", "class_token", "encoder.pos_embedding")), *blocks,
                Stage("norm", ("encoder.ln",)), *extra),
        head="heads.head",
        groups={"blocks": tuple(b.name for b in blocks)},
    )


def _swin(model: nn.Module) -> StageMap:
    count = len(model.features)  # type: ignore[union-attr,arg-type]  # 8: embed, (stage, merge) x 3, stage
    stages = [Stage("stem", ("features.0",)), Stage("stage1", ("features.1",))]
    stages += [Stage(f"stage{i // 2 + 1}", (f"features.{i}", f"features.{i + 1}")) for i in range(2, count, 2)]
    return StageMap(stages=(*stages, Stage("norm", ("norm",))), head="head")


def _regnet(model: nn.Module) -> StageMap:
    names = [name for name, _ in model.trunk_output.named_children()]  # type: ignore[union-attr]
    return StageMap(
        stages=(Stage("stem", ("stem",)), *(Stage(n, (f"trunk_output.{n}",)) for n in names)),
        head="fc",
    )


def _efficientnet(model: nn.Module) -> StageMap:
    last = len(model.features) - 1  # type: ignore[union-attr,arg-type]
    return StageMap(
        stages=(Stage("stem", ("features.0",)), *(Stage(f"stage{i}", (f"features.{i}",)) for i in range(1, last)),
                Stage("conv_head", (f"features.{last}",))),
        head="classifier.1",
    )


def _mnasnet(model: nn.Module) -> StageMap:
    count = len(model.layers)  # type: ignore[union-attr,arg-type]  # 8 stem layers, 6 stacks, conv, BN, ReLU
    return StageMap(
        stages=(Stage("stem", tuple(f"layers.{i}" for i in range(8))),
                *(Stage(f"stack{i - 7}", (f"layers.{i}",)) for i in range(8, count - 3)),
                Stage("conv_head", tuple(f"layers.{i}" for i in range(count - 3, count)))),
        head="classifier.1",
    )


def _shufflenet(model: nn.Module) -> StageMap:
    return StageMap(
        stages=(Stage("stem", ("conv1",)), *(Stage(f"stage{i}", (f"stage{i}",)) for i in (2, 3, 4)),
                Stage("conv5", ("conv5",))),
        head="fc",
    )


def _squeezenet(model: nn.Module) -> StageMap:
    index = _SQUEEZENET_INDEX[model.features[0].kernel_size[0]]  # type: ignore[index,union-attr]
    return StageMap(
        stages=tuple(Stage(name, (f"features.{i}",)) for name, i in index.items()),
        head="classifier.1",
        groups={"features": tuple(index)},
    )


def _googlenet(model: nn.Module) -> StageMap:
    aux = ("aux1", "aux2") if getattr(model, "aux1", None) is not None else ()
    return StageMap(
        stages=(Stage("stem", ("conv1", "maxpool1", "conv2", "conv3")),
                Stage("inception3", ("maxpool2", "inception3a", "inception3b")),
                Stage("inception4", ("maxpool3", *(f"inception4{c}" for c in "abcde"))),
                Stage("inception5", ("maxpool4", "inception5a", "inception5b"))),
        head="fc",
        extra_heads=aux,
    )


def _maxvit(model: nn.Module) -> StageMap:
    count = len(model.blocks)  # type: ignore[union-attr,arg-type]
    return StageMap(
        stages=(Stage("stem", ("stem",)), *(Stage(f"stage{i + 1}", (f"blocks.{i}",)) for i in range(count)),
                Stage("pre_logits", ("classifier.2", "classifier.3"))),
        head="classifier.5",
    )


_BY_CLASS = {
    "VisionTransformer": _vit, "SwinTransformer": _swin, "RegNet": _regnet, "EfficientNet": _efficientnet,
    "MNASNet": _mnasnet, "ShuffleNetV2": _shufflenet, "SqueezeNet": _squeezenet, "GoogLeNet": _googlenet,
    "MaxVit": _maxvit,
}


def stages(model: nn.Module) -> StageMap:
    """The stage map of a torchvision classification network this family builds."""
    kind = type(model).__name__
    try:
        return _BY_CLASS[kind](model)
    except KeyError:
        raise PluginError(f"family {FAMILY!r} has no stage map for {kind}; it knows {', '.join(_BY_CLASS)}") from None


def features(model: nn.Module, out_stages: tuple[str, ...]) -> list[Any]:
    """The forward order of the stages for ``features_only``: the model's children in order, plus
    what a forward applies besides (GoogLeNet's input transform). A ViT has no stages of feature
    maps (its blocks all see the same tokens, class token first), so it is refused."""
    kind = type(model).__name__
    if kind == "VisionTransformer":
        raise InvalidArgumentError(
            "features_only: a torchvision ViT has no feature-map stages (every block returns the same "
            "token sequence, built inside forward from the class token and position embedding); load the "
            "full model and use its encoder, or load the timm ViT of the same weights for forward_intermediates")
    smap = stages(model)
    last = max(out_stages, key=smap.names.index)
    steps = sequential_steps(model, smap, FAMILY, upto=last)
    if kind == "GoogLeNet" and getattr(model, "transform_input", False):
        stage, items = steps[0]  # torchvision's weights expect their own rescaling of the input
        steps[0] = (stage, (_googlenet_input(), *items))
    return steps


def _googlenet_input() -> nn.Module:
    """A parameterless module running GoogLeNet's ``_transform_input`` (torchvision's own code)."""
    import torch.nn as nn
    from torchvision.models.googlenet import GoogLeNet

    class TransformInput(nn.Module):
        transform_input = True

        def forward(self, x):  # type: ignore[no-untyped-def]
            return GoogLeNet._transform_input(self, x)  # type: ignore[arg-type]

    return TransformInput()

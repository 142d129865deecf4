"""torchvision's names for networks the timm family builds, as layouts: a torchvision file for
``convnext_tiny`` … ``convnext_large``, ``vgg11`` … ``vgg19_bn`` or ``efficientnet_b0`` … ``b7`` loads
into timm's network of that name and computes what torchvision's model computed. Each names its
zoo (``Layout.zoo``), so the report says that timm's network was built for torchvision's file.

* ConvNeXt: torchvision numbers stem, stages and downsamplings in one ``features`` list
  (``features.0`` stem, odd indices the stages, even ones the downsampling before a stage) and keeps
  the layer scale as ``[C, 1, 1]``; timm has ``stem``, ``stages.K.downsample``, ``stages.K.blocks``
  and ``gamma`` ``[C]``. The two forwards are the same operations in the same order.
* VGG: the convolutions are numbered alike; torchvision's classifier is three ``Linear`` layers
  after a 7x7 average pool, timm's ``pre_logits`` holds the first two as convolutions (7x7 and
  1x1) with the same elements. They compute the same for inputs whose feature map is 7x7 (224 px,
  torchvision's size); at other sizes torchvision pools to 7x7 first and timm does not, and the
  layout's description (in every report's notes) says so.
* EfficientNet B0-B7: the same modules, numbered per stage (``features.S.B.block.N``) where timm
  names them (``blocks.S-1.B.conv_pw`` …). torchvision builds B5-B7 with BatchNorm eps 1e-3, timm
  with 1e-5; no tensor says which, so the layout asks the build for ``bn_eps=1e-3``
  (``Layout.build_options``, read before the model is built).

All read from the real model code: torchvision/models/convnext.py, vgg.py and efficientnet.py
(``state_dict()`` of their models, saved with ``torch.save``) against timm/models/convnext.py,
vgg.py and _efficientnet_blocks.py; the tests build each file from torchvision's own model.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any

from zooadapt.plugin_api import KeyRule, Layout, Rename, Reshape

__all__ = ["LAYOUTS", "ReshapeElements", "TORCHVISION_CONVNEXT", "TORCHVISION_VGG", "TORCHVISION_EFFICIENTNET"]


@dataclass(frozen=True, repr=False)
class ReshapeElements(KeyRule):
    """Model keys matching ``pattern`` accept a tensor of any shape with as many elements, read in
    row-major order (a ``Linear`` over a flattened ``C x 7 x 7`` map into a 7x7 convolution)."""

    pattern: str

    def converts(self, model_key: str, source_shape: tuple[int, ...], target_shape: tuple[int, ...]) -> bool:
        import re

        return re.fullmatch(self.pattern, model_key) is not None and prod(source_shape) == prod(target_shape)

    def convert(self, tensor: Any, target_shape: tuple[int, ...]) -> Any:
        return tensor.reshape(target_shape)

    def describe(self) -> str:
        return f"reshape elements {self.pattern!r}"


_CONVNEXT_BLOCK = ((0, "conv_dw"), (2, "norm"), (3, "mlp.fc1"), (5, "mlp.fc2"))  # torchvision's block.N -> timm's

TORCHVISION_CONVNEXT = Layout(
    name="torchvision-convnext",
    family="timm",
    detect=r"features\.1\.0\.layer_scale",
    rules=(
        Rename(r"features\.0\.([01])\.(.+)", r"stem.\1.\2"),
        *(Rename(rf"features\.{2 * k + 1}\.(\d+)\.layer_scale", rf"stages.{k}.blocks.\1.gamma") for k in range(4)),
        *(Rename(rf"features\.{2 * k + 1}\.(\d+)\.block\.{tv}\.(.+)", rf"stages.{k}.blocks.\1.{timm}.\2")
          for k in range(4) for tv, timm in _CONVNEXT_BLOCK),
        *(Rename(rf"features\.{2 * k}\.([01])\.(.+)", rf"stages.{k}.downsample.\1.\2") for k in range(1, 4)),
        Rename(r"classifier\.0\.(.+)", r"head.norm.\1"),
        Rename(r"classifier\.2\.(.+)", r"head.fc.\1"),
        Reshape(r"stages\.\d+\.blocks\.\d+\.gamma"),
    ),
    description="torchvision ConvNeXt (features.N, layer_scale) into timm's convnext_*",
    zoo="torchvision",
)

TORCHVISION_VGG = Layout(
    name="torchvision-vgg",
    family="timm",
    detect=r"classifier\.3\.weight",
    rules=(
        Rename(r"classifier\.0\.(weight|bias)", r"pre_logits.fc1.\1"),
        Rename(r"classifier\.3\.(weight|bias)", r"pre_logits.fc2.\1"),
        Rename(r"classifier\.6\.(weight|bias)", r"head.fc.\1"),
        ReshapeElements(r"pre_logits\.fc[12]\.weight"),
    ),
    description="torchvision VGG (classifier.0/3/6 Linear) into timm's vgg* (pre_logits convolutions); "
                "the same outputs for 224 px inputs only: torchvision pools to 7x7 first, timm does not",
    zoo="torchvision",
)

# torchvision's MBConv.block.N -> timm's names: stage 1 has no expansion (timm's DepthwiseSeparableConv)
_EFFICIENTNET_FIRST = ((r"0\.0", "conv_dw"), (r"0\.1", "bn1"), (r"1\.fc1", "se.conv_reduce"),
                       (r"1\.fc2", "se.conv_expand"), (r"2\.0", "conv_pw"), (r"2\.1", "bn2"))
_EFFICIENTNET_BLOCK = ((r"0\.0", "conv_pw"), (r"0\.1", "bn1"), (r"1\.0", "conv_dw"), (r"1\.1", "bn2"),
                       (r"2\.fc1", "se.conv_reduce"), (r"2\.fc2", "se.conv_expand"), (r"3\.0", "conv_pwl"),
                       (r"3\.1", "bn3"))

TORCHVISION_EFFICIENTNET = Layout(
    name="torchvision-efficientnet",
    family="timm",
    detect=r"features\.1\.0\.block\.0\.0\.weight",
    rules=(
        Rename(r"features\.0\.0\.(.+)", r"conv_stem.\1"),
        Rename(r"features\.0\.1\.(.+)", r"bn1.\1"),
        *(Rename(rf"features\.1\.(\d+)\.block\.{tv}\.(.+)", rf"blocks.0.\1.{timm}.\2")
          for tv, timm in _EFFICIENTNET_FIRST),
        *(Rename(rf"features\.{s}\.(\d+)\.block\.{tv}\.(.+)", rf"blocks.{s - 1}.\1.{timm}.\2")
          for s in range(2, 8) for tv, timm in _EFFICIENTNET_BLOCK),
        Rename(r"features\.8\.0\.(.+)", r"conv_head.\1"),
        Rename(r"features\.8\.1\.(.+)", r"bn2.\1"),
        Rename(r"classifier\.1\.(.+)", r"classifier.\1"),
    ),
    description="torchvision EfficientNet B0-B7 into timm's efficientnet_b*, built with torchvision's BatchNorm eps "
                "(1e-3 for B5-B7); features.0 -> conv_stem/bn1, features.S.B.block -> blocks.S-1.B, "
                "features.8 -> conv_head/bn2",
    zoo="torchvision",
    # torchvision's _efficientnet_conf: B5-B7 use BatchNorm2d(eps=1e-3), B0-B4 torch's default 1e-5 (timm's too)
    build_options={"efficientnet_b[0-4]": {}, "efficientnet_b[5-7]": {"bn_eps": 1e-3}},
)

LAYOUTS = (TORCHVISION_CONVNEXT, TORCHVISION_VGG, TORCHVISION_EFFICIENTNET)

"""The torchvision family: torchvision's classification networks that no other family provides.

ViT, Swin and Swin V2, RegNet X/Y, EfficientNetV2, MNASNet, ShuffleNet V2, SqueezeNet, GoogLeNet
and MaxViT, by their torchvision names (``vit_b_16``, ``regnet_y_400mf``, ``swin_v2_t`` …), built
by ``torchvision.models.get_model(name, weights=None, num_classes=N)``, so a file holding a
torchvision model's own ``state_dict()`` loads as it is and computes what that model computed.
Stage maps and ``features_only`` cuts: ``torchvision_zoo_stages``.

The other torchvision names keep their providers: ResNet, MobileNet and AlexNet their built-in
plugins; the names timm knows too (``convnext_tiny``, ``efficientnet_b0``, ``vgg16``,
``densenet121``, ``inception_v3`` …) the timm family, whose weights they name. ``torchvision_zoo_layouts``
teaches the timm family to read torchvision's ConvNeXt and VGG files.

Weights: torchvision's published ImageNet-1k files (its ``DEFAULT`` weights, by URL, the sha256
prefix checked after download), with the preprocessing of their ``transforms``. Two exceptions,
both because the default file needs another build than ``get_model(name, weights=None)``:
``vit_h_14`` names the SWAG linear-classifier weights (224 px), as the end-to-end ones need a
518 px position embedding. ``googlenet`` builds as torchvision builds it for its weights:
``transform_input=True`` (the weights expect torchvision's own input rescaling) and the two
auxiliary classifiers (``aux_logits=True``; extra heads, replaced and trained with ``fc``); pass
``transform_input=False`` / ``aux_logits=False`` as build options for a network trained without them.

The names are resolved on demand (``zooadapt_resolve_model``) and listed (``zooadapt_list_models``),
not registered: a registered name wins over a resolver, so another plugin or a registry file that
registers one of them (the plugin guide's ShuffleNet example, the ``zooadapt-squeezenet`` package)
keeps it without a conflict, and the registry-wide sweeps and the identification index
(``zooadapt.identify``) stay what they were; this family is every such name's fallback.
"""

from __future__ import annotations

import fnmatch
import types
from typing import TYPE_CHECKING, Any

from zooadapt.plugin_api import DataConfig, Family, ModelEntry, WeightSource, hookimpl

from .torchvision_zoo_layouts import LAYOUTS
from .torchvision_zoo_stages import features, stages

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["ARCHITECTURES", "WEIGHTS", "FAMILY", "build", "entry"]

_BASE = "https://download.pytorch.org/models/"

# name -> (file under _BASE, crop size, resize size, interpolation, ImageNet-1k top-1): torchvision
# 0.29's Weights enums (the DEFAULT member; vit_h_14: IMAGENET1K_SWAG_LINEAR_V1), checked against
# them by tests/test_torchvision_zoo.py. The file name ends with a prefix of its sha256.
WEIGHTS: dict[str, tuple[str, int, int, str, str]] = {
    "vit_b_16": ("vit_b_16-c867db91.pth", 224, 256, "bilinear", "81.072"),
    "vit_b_32": ("vit_b_32-d86f8d99.pth", 224, 256, "bilinear", "75.912"),
    "vit_l_16": ("vit_l_16-852ce7e3.pth", 224, 242, "bilinear", "79.662"),
    "vit_l_32": ("vit_l_32-c7638314.pth", 224, 256, "bilinear", "76.972"),
    "vit_h_14": ("vit_h_14_lc_swag-c1eb923e.pth", 224, 224, "bicubic", "85.708"),
    "swin_t": ("swin_t-704ceda3.pth", 224, 232, "bicubic", "81.474"),
    "swin_s": ("swin_s-5e29d889.pth", 224, 246, "bicubic", "83.196"),
    "swin_b": ("swin_b-68c6b09e.pth", 224, 238, "bicubic", "83.582"),
    "swin_v2_t": ("swin_v2_t-b137f0e2.pth", 256, 260, "bicubic", "82.072"),
    "swin_v2_s": ("swin_v2_s-637d8ceb.pth", 256, 260, "bicubic", "83.712"),
    "swin_v2_b": ("swin_v2_b-781e5279.pth", 256, 272, "bicubic", "84.112"),
    "regnet_x_400mf": ("regnet_x_400mf-62229a5f.pth", 224, 232, "bilinear", "74.864"),
    "regnet_x_800mf": ("regnet_x_800mf-94a99ebd.pth", 224, 232, "bilinear", "77.522"),
    "regnet_x_1_6gf": ("regnet_x_1_6gf-a12f2b72.pth", 224, 232, "bilinear", "79.668"),
    "regnet_x_3_2gf": ("regnet_x_3_2gf-7071aa85.pth", 224, 232, "bilinear", "81.196"),
    "regnet_x_8gf": ("regnet_x_8gf-2b70d774.pth", 224, 232, "bilinear", "81.682"),
    "regnet_x_16gf": ("regnet_x_16gf-ba3796d7.pth", 224, 232, "bilinear", "82.716"),
    "regnet_x_32gf": ("regnet_x_32gf-6eb8fdc6.pth", 224, 232, "bilinear", "83.014"),
    "regnet_y_400mf": ("regnet_y_400mf-e6988f5f.pth", 224, 232, "bilinear", "75.804"),
    "regnet_y_800mf": ("regnet_y_800mf-58fc7688.pth", 224, 232, "bilinear", "78.828"),
    "regnet_y_1_6gf": ("regnet_y_1_6gf-0d7bc02a.pth", 224, 232, "bilinear", "80.876"),
    "regnet_y_3_2gf": ("regnet_y_3_2gf-9180c971.pth", 224, 232, "bilinear", "81.982"),
    "regnet_y_8gf": ("regnet_y_8gf-dc2b1b54.pth", 224, 232, "bilinear", "82.828"),
    "regnet_y_16gf": ("regnet_y_16gf-3e4a00f9.pth", 224, 232, "bilinear", "82.886"),
    "regnet_y_32gf": ("regnet_y_32gf-8db6d4b5.pth", 224, 232, "bilinear", "83.368"),
    "regnet_y_128gf": ("regnet_y_128gf_swag-c8ce3e52.pth", 384, 384, "bicubic", "88.228"),
    "efficientnet_v2_s": ("efficientnet_v2_s-dd5fe13b.pth", 384, 384, "bilinear", "84.228"),
    "efficientnet_v2_m": ("efficientnet_v2_m-dc08266a.pth", 480, 480, "bilinear", "85.112"),
    "efficientnet_v2_l": ("efficientnet_v2_l-59c71312.pth", 480, 480, "bicubic", "85.808"),
    "mnasnet0_5": ("mnasnet0.5_top1_67.823-3ffadce67e.pth", 224, 256, "bilinear", "67.734"),
    "mnasnet0_75": ("mnasnet0_75-7090bc5f.pth", 224, 232, "bilinear", "71.18"),
    "mnasnet1_0": ("mnasnet1.0_top1_73.512-f206786ef8.pth", 224, 256, "bilinear", "73.456"),
    "mnasnet1_3": ("mnasnet1_3-a4c69d6f.pth", 224, 232, "bilinear", "76.506"),
    "googlenet": ("googlenet-1378be20.pth", 224, 256, "bilinear", "69.778"),
    "maxvit_t": ("maxvit_t-bc5ab103.pth", 224, 224, "bicubic", "83.7"),
    "shufflenet_v2_x0_5": ("shufflenetv2_x0.5-f707e7126e.pth", 224, 256, "bilinear", "60.552"),
    "shufflenet_v2_x1_0": ("shufflenetv2_x1-5666bf0f80.pth", 224, 256, "bilinear", "69.362"),
    "shufflenet_v2_x1_5": ("shufflenetv2_x1_5-3c479a10.pth", 224, 232, "bilinear", "72.996"),
    "shufflenet_v2_x2_0": ("shufflenetv2_x2_0-8be3c8ee.pth", 224, 232, "bilinear", "76.23"),
    "squeezenet1_0": ("squeezenet1_0-b66bff10.pth", 224, 256, "bilinear", "58.092"),
    "squeezenet1_1": ("squeezenet1_1-b8a52dc0.pth", 224, 256, "bilinear", "58.178"),
}

ARCHITECTURES: tuple[str, ...] = tuple(WEIGHTS)

# What get_model needs besides weights=None and num_classes to build the network torchvision's
# weights were trained in (torchvision's googlenet builder sets the same when given weights).
_BUILD_DEFAULTS: dict[str, dict[str, Any]] = {
    "googlenet": {"transform_input": True, "aux_logits": True, "init_weights": False},
}


def build(arch: str, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    import torchvision.models as tvm

    if arch not in WEIGHTS:
        raise ValueError(f"torchvision family builds {', '.join(ARCHITECTURES)}, not {arch!r}")
    options = {**_BUILD_DEFAULTS.get(arch, {}), **kwargs}
    model = tvm.get_model(arch, weights=None, num_classes=num_classes, **options)
    if arch.startswith("mnasnet"):
        # MNASNet refuses a state dict without its metadata ("version should be set to 1 or 2"),
        # and zooadapt assigns the planned tensors without it: read a missing version as the
        # current layout (2), which the plan has already checked shape by shape. A bound method,
        # so copies of the model (deepcopy) rebind it to themselves.
        model._load_from_state_dict = types.MethodType(_load_mnasnet, model)
    return model


def _load_mnasnet(self: nn.Module, state_dict: Any, prefix: str, local_metadata: dict[str, Any],
                  *args: Any) -> None:
    from torchvision.models.mnasnet import MNASNet

    MNASNet._load_from_state_dict(self, state_dict, prefix, {"version": 2, **local_metadata}, *args)  # type: ignore[arg-type]


def _data(arch: str) -> DataConfig:
    _, crop, resize, interpolation, _ = WEIGHTS[arch]
    return DataConfig(input_size=(3, crop, crop), interpolation=interpolation, crop_pct=round(crop / resize, 4))


def entry(name: str) -> ModelEntry:
    """The registry entry of a torchvision name: its published file and preprocessing."""
    filename, _, _, _, top1 = WEIGHTS[name]
    digest = filename.rsplit("-", 1)[1].split(".")[0]
    return ModelEntry(
        name=name, family="torchvision", arch=name,
        source=WeightSource(url=_BASE + filename, sha256=digest),
        data=_data(name),
        description=f"torchvision {name}, ImageNet-1k weights ({top1}% top-1)",
        provider="torchvision_zoo",
    )


FAMILY = Family(
    name="torchvision",
    build=build,
    stages=stages,
    features=features,
    architectures=ARCHITECTURES,
    data=DataConfig(),
    data_for=lambda e: _data(e.arch) if e.arch in WEIGHTS else None,
    description="torchvision ViT, Swin, RegNet, EfficientNetV2, MNASNet, ShuffleNet V2, SqueezeNet, GoogLeNet, MaxViT",
)


@hookimpl
def zooadapt_register_families(register):  # type: ignore[no-untyped-def]
    register(FAMILY)


@hookimpl
def zooadapt_resolve_model(name):  # type: ignore[no-untyped-def]
    return entry(name) if name in WEIGHTS else None


@hookimpl
def zooadapt_list_models(pattern):  # type: ignore[no-untyped-def]
    return [n for n in ARCHITECTURES if fnmatch.fnmatchcase(n, pattern)]


@hookimpl
def zooadapt_register_layouts(register):  # type: ignore[no-untyped-def]
    for layout in LAYOUTS:
        register(layout)

"""MobileNet families: v1 (defined here), v2 and v3 (torchvision's architectures).

**v1** has no torchvision implementation. The network here reproduces the layout of the
widely shared ImageNet checkpoint ``mobilenet_sgd_rmsprop_69.526.tar`` (``model.0`` … ``model.13``
then ``fc``), so that file loads as it is once DataParallel's ``module.`` is stripped. Its
key rules also carry ``Positional``: v1 reimplementations name the same blocks differently
(``features.N``, ``conv1`` … ``conv14``), and a checkpoint of one loads into another by order,
every shape checked. Stages ``conv1`` … ``conv14`` (block 0 is conv1), head ``fc``.

**v2/v3** are torchvision's architectures. No torchvision-layout weights for them are on the
Hub; timm's ``mobilenetv2_100`` / ``mobilenetv3_*_100`` hold the same tensors under timm's
names, and the key rules below translate them (safetensors files keep no key order, so the
translation is by name, not position). timm's BatchNorm eps is 1e-5 where torchvision's v3
uses 1e-3; the registry entries build with ``bn_eps=1e-5`` so the outputs match timm's, and a file
in torchvision's own names (``TORCHVISION_V3``, a layout read before the build) gets ``bn_eps=1e-3``.
Stages are named by resolution (output stride): ``stem``, ``stride2`` … ``stride32``
(v3 adds ``pre_logits``, the 1280/1024-wide layer before the classifier).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from zooadapt.plugin_api import (
    DataConfig,
    Family,
    Layout,
    ModelEntry,
    Positional,
    Rename,
    Renumber,
    Reshape,
    Stage,
    StageMap,
    WeightSource,
    hookimpl,
    sequential_steps,
)

if TYPE_CHECKING:
    import torch.nn as nn

# -- MobileNet v1 ---------------------------------------------------------------------------

V1_WIDTHS = (64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)
V1_STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)

V1_STAGES = StageMap(
    stages=tuple(Stage(f"conv{i + 1}", (f"model.{i}",)) for i in range(14)),
    head="fc",
)


@functools.cache
def _v1_class() -> type[nn.Module]:
    """The one ``MobileNetV1`` class, made on first use (plugin modules import torch only inside
    functions, so listing models stays torch-free) and the same class for every model after:
    ``isinstance`` holds across models, and pickle finds it as ``zooadapt.plugins.mobilenet.MobileNetV1``
    (the module's ``__getattr__`` hands out this class)."""
    import torch.nn as nn

    def conv_bn(inp: int, out: int, stride: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(inp, out, 3, stride, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True))

    def conv_dw(inp: int, out: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp), nn.ReLU(inplace=True),
            nn.Conv2d(inp, out, 1, 1, 0, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True),
        )

    class MobileNetV1(nn.Module):
        """MobileNet v1 (Howard et al. 2017) in the layout of the ``mobilenet_sgd_rmsprop`` checkpoint:
        ``model.0`` is a 3x3 conv (stride 2), ``model.1`` … ``model.13`` depthwise-separable blocks,
        then global average pooling and ``fc``. Pooling is adaptive, so any input size works."""

        def __init__(self, num_classes: int = 1000) -> None:
            super().__init__()
            blocks = [conv_bn(3, 32, 2)]
            width = 32
            for out, stride in zip(V1_WIDTHS, V1_STRIDES):
                blocks.append(conv_dw(width, out, stride))
                width = out
            self.model = nn.Sequential(*blocks)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(1024, num_classes)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.fc(self.pool(self.model(x)).flatten(1))

    MobileNetV1.__qualname__ = "MobileNetV1"  # a module-level name (through __getattr__): pickle finds it there
    MobileNetV1.__module__ = __name__
    return MobileNetV1


def __getattr__(name: str) -> Any:
    """``MobileNetV1``, made on first use: ``pickle`` (``torch.save(model)``) names a v1 model's class
    ``zooadapt.plugins.mobilenet.MobileNetV1`` and looks it up here, without this module importing torch."""
    if name == "MobileNetV1":
        return _v1_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_v1(arch: str, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """The v1 network takes no build options: one is refused as Python refuses an unknown keyword
    (a TypeError, which the loader reports naming it; ``in_chans`` it then gives the model by
    replacing the input convolution, as for any builder that does not know it)."""
    if arch != "mobilenet_v1":
        raise ValueError(f"mobilenet_v1 family builds 'mobilenet_v1', not {arch!r}")
    if kwargs:
        raise TypeError(f"mobilenet_v1() got an unexpected keyword argument {next(iter(kwargs))!r} (it takes only "
                        "num_classes)")
    return _v1_class()(num_classes=num_classes)


# -- MobileNet v2 / v3 (torchvision) ------------------------------------------------------

V2_ARCHS = ("mobilenet_v2",)
V3_ARCHS = ("mobilenet_v3_large", "mobilenet_v3_small")

# timm's stem and block numbering, shared by v2 and v3: blocks.I.J -> features.N (N from 1)
_TIMM_COMMON = (
    Rename(r"conv_stem\.(.+)", r"features.0.0.\1"),
    Rename(r"bn1\.(.+)", r"features.0.1.\1"),
    Renumber(r"blocks\.(\d+)\.(\d+)", "features.{}", start=1),
)

V2_RULES = (
    *_TIMM_COMMON,
    # features.1 is the expansion-1 block: depthwise conv, then the projection
    Rename(r"features\.1\.conv_dw\.(.+)", r"features.1.conv.0.0.\1"),
    Rename(r"features\.1\.bn1\.(.+)", r"features.1.conv.0.1.\1"),
    Rename(r"features\.1\.conv_pw\.(.+)", r"features.1.conv.1.\1"),
    Rename(r"features\.1\.bn2\.(.+)", r"features.1.conv.2.\1"),
    # inverted residuals: expand, depthwise, project
    Rename(r"(features\.\d+)\.conv_pw\.(.+)", r"\1.conv.0.0.\2"),
    Rename(r"(features\.\d+)\.bn1\.(.+)", r"\1.conv.0.1.\2"),
    Rename(r"(features\.\d+)\.conv_dw\.(.+)", r"\1.conv.1.0.\2"),
    Rename(r"(features\.\d+)\.bn2\.(.+)", r"\1.conv.1.1.\2"),
    Rename(r"(features\.\d+)\.conv_pwl\.(.+)", r"\1.conv.2.\2"),
    Rename(r"(features\.\d+)\.bn3\.(.+)", r"\1.conv.3.\2"),
    Rename(r"conv_head\.(.+)", r"features.18.0.\1"),
    Rename(r"bn2\.(.+)", r"features.18.1.\1"),
    Rename(r"classifier\.(.+)", r"classifier.1.\1"),
)

V3_RULES = (
    *_TIMM_COMMON,
    # features.1: depthwise conv, optional squeeze-excitation (v3 small), projection
    Rename(r"features\.1\.conv_dw\.(.+)", r"features.1.block.0.0.\1"),
    Rename(r"features\.1\.bn1\.(.+)", r"features.1.block.0.1.\1"),
    Rename(r"features\.1\.se\.conv_reduce\.(.+)", r"features.1.block.1.fc1.\1"),
    Rename(r"features\.1\.se\.conv_expand\.(.+)", r"features.1.block.1.fc2.\1"),
    Rename(r"features\.1\.conv_pw\.(.+)", (r"features.1.block.2.0.\1", r"features.1.block.1.0.\1")),
    Rename(r"features\.1\.bn2\.(.+)", (r"features.1.block.2.1.\1", r"features.1.block.1.1.\1")),
    # inverted residuals: expand, depthwise, optional squeeze-excitation, project
    Rename(r"(features\.\d+)\.conv_pw\.(.+)", r"\1.block.0.0.\2"),
    Rename(r"(features\.\d+)\.bn1\.(.+)", (r"\1.block.0.1.\2", r"\1.1.\2")),  # or the last 1x1 conv's BN
    Rename(r"(features\.\d+)\.conv_dw\.(.+)", r"\1.block.1.0.\2"),
    Rename(r"(features\.\d+)\.bn2\.(.+)", r"\1.block.1.1.\2"),
    Rename(r"(features\.\d+)\.se\.conv_reduce\.(.+)", r"\1.block.2.fc1.\2"),
    Rename(r"(features\.\d+)\.se\.conv_expand\.(.+)", r"\1.block.2.fc2.\2"),
    Rename(r"(features\.\d+)\.conv_pwl\.(.+)", (r"\1.block.3.0.\2", r"\1.block.2.0.\2")),
    Rename(r"(features\.\d+)\.bn3\.(.+)", (r"\1.block.3.1.\2", r"\1.block.2.1.\2")),
    Rename(r"(features\.\d+)\.conv\.(.+)", r"\1.0.\2"),  # timm's last block is a plain 1x1 conv + BN
    # timm's conv_head is a 1x1 conv with bias; torchvision has a Linear after pooling
    Rename(r"conv_head\.(.+)", r"classifier.0.\1"),
    Reshape(r"classifier\.0\.weight"),
    Rename(r"classifier\.(.+)", r"classifier.3.\1"),
)


TORCHVISION_V3 = Layout(
    name="torchvision-mobilenet-v3",
    family="mobilenet_v3",
    detect=r"features\.1\.block\.0\.0\.weight",
    rules=(),  # the family's own names: only the build differs
    description="torchvision's MobileNet v3 files (features.N.block), trained with BatchNorm eps 1e-3",
    zoo="torchvision",
    build_options={"*": {"bn_eps": 1e-3}},  # torchvision's mobilenetv3.py: BatchNorm2d(eps=0.001, momentum=0.01)
)


def build_v2(arch: str, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    import torchvision.models as tvm

    if arch not in V2_ARCHS:
        raise ValueError(f"mobilenet_v2 family builds {', '.join(V2_ARCHS)}, not {arch!r}")
    return tvm.mobilenet_v2(weights=None, num_classes=num_classes, **kwargs)


def _v3_options() -> set[str]:
    """What torchvision's v3 builders use of their keyword arguments: ``_mobilenet_v3_conf``'s
    (``width_mult``, ``reduced_tail``, ``dilated``) and ``MobileNetV3``'s own (``block``,
    ``norm_layer``, ``dropout``), read from their signatures."""
    import inspect

    from torchvision.models import mobilenetv3

    names = {"width_mult", "reduced_tail", "dilated"}  # torchvision 0.15-0.29's, should the helper move
    conf = getattr(mobilenetv3, "_mobilenet_v3_conf", None)
    for function in (conf, mobilenetv3.MobileNetV3.__init__):
        if function is not None:
            names |= {p.name for p in inspect.signature(function).parameters.values()
                      if p.kind is not inspect.Parameter.VAR_KEYWORD}
    return names - {"self", "arch", "inverted_residual_setting", "last_channel", "num_classes"}


def build_v3(arch: str, num_classes: int = 1000, bn_eps: float | None = None, **kwargs: Any) -> nn.Module:
    """torchvision's v3; ``bn_eps`` sets BatchNorm's eps (torchvision's own weights use 1e-3,
    timm's 1e-5: the eps belongs to the weights, so the registry entry says which)."""
    from functools import partial

    import torch.nn as nn
    import torchvision.models as tvm

    if arch not in V3_ARCHS:
        raise ValueError(f"mobilenet_v3 family builds {', '.join(V3_ARCHS)}, not {arch!r}")
    unknown = sorted(set(kwargs) - _v3_options())
    if unknown:  # torchvision's MobileNetV3 takes **kwargs and ignores what it does not know: say so instead
        raise TypeError(f"{arch}() got an unexpected keyword argument {unknown[0]!r} (it takes "
                        f"{', '.join(sorted(_v3_options()))})")
    if bn_eps is not None:
        kwargs["norm_layer"] = partial(nn.BatchNorm2d, eps=bn_eps, momentum=0.01)  # torchvision's momentum
    return getattr(tvm, arch)(weights=None, num_classes=num_classes, **kwargs)


def resolution_stages(model: nn.Module) -> StageMap:
    """Stages of a torchvision MobileNet v2/v3 by output stride: ``stem`` (features.0), then
    one stage per resolution, named ``stride{N}``, read from the convolution strides."""
    import torch.nn as nn

    features = model.features  # type: ignore[union-attr]
    names: list[tuple[str, list[str]]] = []
    stride = 1
    for index, block in enumerate(features):
        for module in block.modules():
            if isinstance(module, nn.Conv2d):
                stride *= module.stride[0]
        name = "stem" if index == 0 else f"stride{stride}"
        if names and names[-1][0] == name:
            names[-1][1].append(f"features.{index}")
        else:
            names.append((name, [f"features.{index}"]))
    stages = [Stage(name, tuple(prefixes)) for name, prefixes in names]
    classifier = model.classifier  # type: ignore[union-attr]
    linears = [i for i, m in enumerate(classifier) if isinstance(m, nn.Linear)]
    if len(linears) > 1:  # v3: Linear -> Hardswish -> Dropout -> Linear; the first is not the head
        stages.append(Stage("pre_logits", tuple(f"classifier.{i}" for i in linears[:-1])))
    return StageMap(tuple(stages), head=f"classifier.{linears[-1]}")


def v3_features(model: nn.Module, out_stages: tuple[str, ...]) -> list:
    """The forward order of v3's stages for ``features_only``: as registered, plus the flatten
    torchvision's forward applies between pooling and ``pre_logits``."""
    import torch.nn as nn


    smap = resolution_stages(model)
    last = max(out_stages, key=smap.names.index)
    return sequential_steps(model, smap, "mobilenet_v3", upto=last, after={"avgpool": [nn.Flatten(1)]})


TIMM_DATA = DataConfig(interpolation="bicubic", crop_pct=0.875)  # timm's pretrained cfg for the *_100 weights


@hookimpl
def zooadapt_register_families(register):  # type: ignore[no-untyped-def]
    register(Family(
        name="mobilenet_v1",
        build=build_v1,
        stages=V1_STAGES,
        key_rules=(Positional(),),
        architectures=("mobilenet_v1",),
        data=DataConfig(),  # the seed-000 checkpoint was trained with torchvision's ImageNet recipe
        description="MobileNet v1 (the mobilenet_sgd_rmsprop checkpoint layout: model.0-13, fc)",
    ))
    register(Family(
        name="mobilenet_v2",
        build=build_v2,
        stages=resolution_stages,
        key_rules=V2_RULES,
        architectures=V2_ARCHS,
        data=TIMM_DATA,
        description="torchvision MobileNet v2; loads timm-layout weights by name",
    ))
    register(Family(
        name="mobilenet_v3",
        build=build_v3,
        stages=resolution_stages,
        key_rules=V3_RULES,
        architectures=V3_ARCHS,
        data=TIMM_DATA,
        features=v3_features,
        description="torchvision MobileNet v3 large/small; loads timm-layout weights by name",
    ))


def _timm_weights(repo: str) -> WeightSource:
    return WeightSource(repo_id=repo, filename="model.safetensors", revision="main")


@hookimpl
def zooadapt_register_models(register):  # type: ignore[no-untyped-def]
    # v1: no copy of the mobilenet_sgd_rmsprop_69.526.tar checkpoint is published anywhere zooadapt
    # can verify, so the entry has no source: weights=PATH names the user's copy
    register(ModelEntry(
        name="mobilenet_v1", family="mobilenet_v1", arch="mobilenet_v1",
        description="MobileNet v1 (no published weights: weights=PATH, e.g. mobilenet_sgd_rmsprop_69.526.tar)",
    ))
    # v2/v3: torchvision's architectures with timm's ImageNet weights, translated by the key rules;
    # timm trained with BatchNorm eps 1e-5 (torchvision's v3 uses 1e-3)
    register(ModelEntry(
        name="mobilenet_v2", family="mobilenet_v2", arch="mobilenet_v2",
        source=_timm_weights("timm/mobilenetv2_100.ra_in1k"),
        description="MobileNet v2 (torchvision), timm RandAugment ImageNet-1k weights (72.9% top-1)",
    ))
    register(ModelEntry(
        name="mobilenet_v3_large", family="mobilenet_v3", arch="mobilenet_v3_large",
        source=_timm_weights("timm/mobilenetv3_large_100.ra_in1k"), build_kwargs={"bn_eps": 1e-5},
        description="MobileNet v3 large (torchvision), timm RandAugment ImageNet-1k weights (75.8% top-1)",
    ))
    register(ModelEntry(
        name="mobilenet_v3_small", family="mobilenet_v3", arch="mobilenet_v3_small",
        source=_timm_weights("timm/mobilenetv3_small_100.lamb_in1k"), build_kwargs={"bn_eps": 1e-5},
        description="MobileNet v3 small (torchvision), timm LAMB ImageNet-1k weights (67.7% top-1)",
    ))


@hookimpl
def zooadapt_register_layouts(register):  # type: ignore[no-untyped-def]
    register(TORCHVISION_V3)

"""Hugging Face transformers' checkpoint layouts, read into zooadapt's families.

transformers names the same networks differently: ``ResNetForImageClassification``
(``microsoft/resnet-50``) keeps torchvision's ResNet v1.5 as ``resnet.embedder…`` and
``resnet.encoder.stages.N.layers.M.layer.K…``; ``ConvNextForImageClassification``
(``facebook/convnext-tiny-224``) keeps timm's ConvNeXt as ``convnext.encoder.stages.N.layers.M…``.
Each layout below is the rename table between the two, written from transformers'
``modeling_resnet.py`` and ``modeling_convnext.py``; the tests check equal outputs against
transformers' own models on the same seeded weights. A layout is used only when its keys
are present and the family's own rules do not fit the checkpoint.
"""

from __future__ import annotations

from zooadapt.plugin_api import Layout, Rename, Renumber, hookimpl

_RESNET_STAGE = r"(layer\d+)\.layers\.(\d+)"

TRANSFORMERS_RESNET = Layout(
    name="transformers-resnet",
    family="resnet",
    detect=r"(?:resnet\.)?embedder\.embedder\.convolution\.weight",
    description="Hugging Face transformers ResNetForImageClassification / ResNetModel, e.g. microsoft/resnet-50",
    rules=(
        Renumber(r"(?:resnet\.)?encoder\.stages\.(\d+)", "layer{}", start=1),
        *(Rename(rf"{_RESNET_STAGE}\.layer\.{k}\.{part}\.(.+)", rf"\1.\2.{name}{k + 1}.\3")
          for k in range(3) for part, name in (("convolution", "conv"), ("normalization", "bn"))),
        Rename(rf"{_RESNET_STAGE}\.shortcut\.convolution\.(.+)", r"\1.\2.downsample.0.\3"),
        Rename(rf"{_RESNET_STAGE}\.shortcut\.normalization\.(.+)", r"\1.\2.downsample.1.\3"),
        Rename(r"(?:resnet\.)?embedder\.embedder\.convolution\.(.+)", r"conv1.\1"),
        Rename(r"(?:resnet\.)?embedder\.embedder\.normalization\.(.+)", r"bn1.\1"),
        Rename(r"classifier\.1\.(weight|bias)", r"fc.\1"),
    ),
)

_CONVNEXT_BLOCK = r"(?:convnext\.)?encoder\.stages\.(\d+)\.layers\.(\d+)"

TRANSFORMERS_CONVNEXT = Layout(
    name="transformers-convnext",
    family="timm",
    detect=r"(?:convnext\.)?embeddings\.patch_embeddings\.weight",
    description="Hugging Face transformers ConvNextForImageClassification / ConvNextModel, e.g. "
                "facebook/convnext-tiny-224 (into timm's convnext_*)",
    rules=(
        Rename(r"(?:convnext\.)?embeddings\.patch_embeddings\.(.+)", r"stem.0.\1"),
        Rename(r"(?:convnext\.)?embeddings\.layernorm\.(.+)", r"stem.1.\1"),
        Rename(r"(?:convnext\.)?encoder\.stages\.(\d+)\.downsampling_layer\.(\d)\.(.+)", r"stages.\1.downsample.\2.\3"),
        Rename(rf"{_CONVNEXT_BLOCK}\.layer_scale_parameter", r"stages.\1.blocks.\2.gamma"),
        *(Rename(rf"{_CONVNEXT_BLOCK}\.{hf}\.(.+)", rf"stages.\1.blocks.\2.{timm}.\3")
          for hf, timm in (("dwconv", "conv_dw"), ("layernorm", "norm"), ("pwconv1", "mlp.fc1"),
                           ("pwconv2", "mlp.fc2"))),
        Rename(r"(?:convnext\.)?layernorm\.(.+)", r"head.norm.\1"),
        Rename(r"classifier\.(weight|bias)", r"head.fc.\1"),
    ),
)


@hookimpl
def zooadapt_register_layouts(register):
    register(TRANSFORMERS_RESNET)
    register(TRANSFORMERS_CONVNEXT)

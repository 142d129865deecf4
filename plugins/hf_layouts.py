"""Hugging Face transformers' checkpoint layouts, read into zooadapt's families.

transformers names the same networks differently: ``ResNetForImageClassification``
(``microsoft/resnet-50``) keeps torchvision's ResNet v1.5 as ``resnet.embedder…`` and
``resnet.encoder.stages.N.layers.M.layer.K…``; ``ConvNextForImageClassification``
(``facebook/convnext-tiny-224``) keeps timm's ConvNeXt as ``convnext.encoder.stages.N.layers.M…``.
Each layout below is the rename table between the two, written from transformers'
``modeling_resnet.py``, ``modeling_convnext.py``, ``modeling_vit.py``, ``modeling_mobilenet_v2.py``,
``modeling_regnet.py``, ``modeling_convnextv2.py``, ``modeling_bit.py`` and ``modeling_mobilenet_v1.py``
(DeiT, DINOv2, BEiT and Swin: ``hf_vit_layouts.py``); its description ends with the renames in words after ``"; "``
(``resnet.encoder.stages.N -> layerN+1, …``), which load reports and ``zooadapt inspect`` print
instead of the rules' regular expressions. The tests check equal outputs against
transformers' own models on the same seeded weights. A layout is used only when its keys
are present and the family's own rules do not fit the checkpoint.
"""

from __future__ import annotations

from zooadapt.plugin_api import Fuse, Layout, Rename, Renumber, Reshape, hookimpl

_RESNET_STAGE = r"(layer\d+)\.layers\.(\d+)"

TRANSFORMERS_RESNET = Layout(
    name="transformers-resnet",
    family="resnet",
    detect=r"(?:resnet\.)?embedder\.embedder\.convolution\.weight",
    description="Hugging Face transformers ResNetForImageClassification / ResNetModel, e.g. microsoft/resnet-50; "
                "resnet.encoder.stages.N -> layerN+1, layers.M.layer.K -> M.convK+1 and M.bnK+1, shortcut -> "
                "downsample, resnet.embedder -> conv1 and bn1, classifier.1 -> fc",
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
# models/convnext/modeling_convnext.py: every LayerNorm is ConvNextLayerNorm(eps=1e-6), as timm's, but
# the final ``convnext.layernorm``, nn.LayerNorm(eps=config.layer_norm_eps): 1e-12 by default and in
# facebook's configs, where timm's head.norm has 1e-6 (a module setting by path reaches it alone)
_FINAL_NORM_EPS = {"head.norm.eps": 1e-12}

TRANSFORMERS_CONVNEXT = Layout(
    name="transformers-convnext",
    family="timm",
    detect=r"(?:convnext\.)?embeddings\.patch_embeddings\.weight",
    zoo="transformers",
    build_options={"convnext_*": _FINAL_NORM_EPS},
    config_options={"layer_norm_eps": "head.norm.eps"},
    description="Hugging Face transformers ConvNextForImageClassification / ConvNextModel, e.g. "
                "facebook/convnext-tiny-224 (into timm's convnext_*), its final LayerNorm built with its config.json's "
                "layer_norm_eps (transformers' default 1e-12, timm's 1e-6); convnext.encoder.stages.N.layers.M -> "
                "stages.N.blocks.M, downsampling_layer -> downsample, convnext.embeddings -> stem, "
                "classifier -> head.fc",
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
        # transformers' pwconv1/2 are Linear layers; timm's ConvNeXt with conv_mlp=True (atto to
        # nano) holds them as 1x1 convolutions: the same values, two more dimensions of size 1
        Reshape(r"stages\.\d+\.blocks\.\d+\.mlp\.fc[12]\.weight"),
    ),
)


# ViT: the Hub's files (google/vit-base-patch16-224) carry transformers 4's names
# (``encoder.layer.N.attention.attention.query``); transformers 5 renames them on load to
# ``layers.N.attention.q_proj`` (its conversion_mapping.py, "ViTModel"). Both are read. timm keeps
# query, key and value as one ``qkv`` projection, so the three are concatenated (``Fuse``).
_VIT_LAYER = r"(?:vit\.)?(?:encoder\.layer|layers)\.(\d+)"

TRANSFORMERS_VIT = Layout(
    name="transformers-vit",
    family="timm",
    # the first block's own name: DINOv2's and Swin's files share ViT's patch embedding names
    detect=r"(?:vit\.)?(?:encoder\.layer|layers)\.0\.layernorm_before\.weight",
    description="Hugging Face transformers ViTForImageClassification / ViTModel, e.g. google/vit-base-patch16-224 "
                "(and the ViT-MSN and ViTMAE encoders, e.g. facebook/vit-mae-base, whose decoder is not read) "
                "(into timm's vit_*), built with its config.json's layer_norm_eps (transformers' default 1e-12, "
                "timm's 1e-6); vit.encoder.layer.N -> blocks.N, query+key+value -> attn.qkv (concatenated), "
                "vit.embeddings -> cls_token, pos_embed and patch_embed, classifier -> head",
    zoo="transformers",
    # every LayerNorm of transformers' ViT takes config.layer_norm_eps (1e-12 by default and in
    # google's files; 1e-6 in ViT-MSN's, whose keys are the same); timm builds 1e-6 and no
    # builder option reaches it: a module setting
    build_options={"*": {"LayerNorm.eps": 1e-12}},
    config_options={"layer_norm_eps": "LayerNorm.eps"},
    rules=(
        Fuse(r"(?:vit\.)?encoder\.layer\.(?P<i>\d+)\.attention\.attention\.(?P<part>query|key|value)\."
             r"(?P<kind>weight|bias)", r"blocks.\g<i>.attn.qkv.\g<kind>", ("query", "key", "value")),
        Fuse(r"(?:vit\.)?layers\.(?P<i>\d+)\.attention\.(?P<part>q_proj|k_proj|v_proj)\.(?P<kind>weight|bias)",
             r"blocks.\g<i>.attn.qkv.\g<kind>", ("q_proj", "k_proj", "v_proj")),
        Rename(rf"{_VIT_LAYER}\.attention\.(?:output\.dense|o_proj)\.(.+)", r"blocks.\1.attn.proj.\2"),
        Rename(rf"{_VIT_LAYER}\.(?:intermediate\.dense|mlp\.fc1)\.(.+)", r"blocks.\1.mlp.fc1.\2"),
        Rename(rf"{_VIT_LAYER}\.(?:output\.dense|mlp\.fc2)\.(.+)", r"blocks.\1.mlp.fc2.\2"),
        Rename(rf"{_VIT_LAYER}\.layernorm_before\.(.+)", r"blocks.\1.norm1.\2"),
        Rename(rf"{_VIT_LAYER}\.layernorm_after\.(.+)", r"blocks.\1.norm2.\2"),
        Rename(r"(?:vit\.)?embeddings\.cls_token", "cls_token"),
        Rename(r"(?:vit\.)?embeddings\.position_embeddings", "pos_embed"),
        Rename(r"(?:vit\.)?embeddings\.patch_embeddings\.projection\.(.+)", r"patch_embed.proj.\1"),
        Rename(r"(?:vit\.)?layernorm\.(.+)", r"norm.\1"),
        Rename(r"classifier\.(weight|bias)", r"head.\1"),
    ),
)

# MobileNet v2: transformers' port of the TensorFlow model (google/mobilenet_v2_1.0_224). The
# first block's depthwise and projection convs live in its ``conv_stem``; block N is
# ``layer.N-2``. Its files were trained with TensorFlow's "same" padding (``tf_padding=True``),
# which torchvision's architecture does not have: the weights map exactly, the border pixels
# of strided convolutions are computed differently.
_MNV2 = r"(?:mobilenet_v2\.)?"

TRANSFORMERS_MOBILENET_V2 = Layout(
    name="transformers-mobilenet-v2",
    family="mobilenet_v2",
    detect=rf"{_MNV2}conv_stem\.first_conv\.convolution\.weight",
    description="Hugging Face transformers MobileNetV2ForImageClassification, e.g. google/mobilenet_v2_1.0_224, "
                "built with the TensorFlow port's BatchNorm eps 1e-3 (MobileNetV2Config.layer_norm_eps); "
                "mobilenet_v2.layer.N -> features.N+2, conv_stem -> features.0 and features.1, conv_1x1 -> "
                "features.18, classifier -> classifier.1",
    zoo="transformers",
    # torchvision's builder takes BatchNorm eps only as a norm_layer callable: a module setting
    build_options={"*": {"BatchNorm2d.eps": 1e-3}},
    config_options={"layer_norm_eps": "BatchNorm2d.eps"},
    rules=(
        *(Rename(rf"{_MNV2}conv_stem\.{hf}\.(.+)", rf"{tv}.\1") for hf, tv in (
            ("first_conv.convolution", "features.0.0"), ("first_conv.normalization", "features.0.1"),
            ("conv_3x3.convolution", "features.1.conv.0.0"), ("conv_3x3.normalization", "features.1.conv.0.1"),
            ("reduce_1x1.convolution", "features.1.conv.1"), ("reduce_1x1.normalization", "features.1.conv.2"))),
        Renumber(rf"{_MNV2}layer\.(\d+)", "features.{}", start=2),
        *(Rename(rf"(features\.\d+)\.{hf}\.(.+)", rf"\1.{tv}.\2") for hf, tv in (
            ("expand_1x1.convolution", "conv.0.0"), ("expand_1x1.normalization", "conv.0.1"),
            ("conv_3x3.convolution", "conv.1.0"), ("conv_3x3.normalization", "conv.1.1"),
            ("reduce_1x1.convolution", "conv.2"), ("reduce_1x1.normalization", "conv.3"))),
        Rename(rf"{_MNV2}conv_1x1\.convolution\.(.+)", r"features.18.0.\1"),
        Rename(rf"{_MNV2}conv_1x1\.normalization\.(.+)", r"features.18.1.\1"),
        Rename(r"classifier\.(weight|bias)", r"classifier.1.\1"),
    ),
)


# RegNet: transformers' port of pycls (facebook/regnet-y-040, facebook/regnet-x-002) holds timm's
# regnetx_* / regnety_* tensor for tensor, but a block's ``shortcut`` comes before its ``layer``
# while timm's ``downsample`` comes last, and the shortcut is shaped as ``layer.0`` (both are
# [C_out, C_in, 1, 1] convolutions with a BatchNorm): only names pair them. An X block's
# (``RegNetXLayer``) ``layer`` is conv1, conv2, conv3; a Y block's (``RegNetYLayer``) puts the
# squeeze-excitation (``attention.0`` and ``attention.2``, timm's ``se.fc1`` and ``se.fc2``) at
# ``layer.2`` and conv3 at ``layer.3``, so ``layer.2.convolution`` is X's conv3. transformers
# counts blocks from 0 in each stage, timm from ``b1``: one renumbering per stage (a RegNet has four).
_REGNET = r"(?:regnet\.)?"
_REGNET_BLOCK = r"(s\d\.b\d+)"

TRANSFORMERS_REGNET = Layout(
    name="transformers-regnet",
    family="timm",
    detect=rf"{_REGNET}embedder\.embedder\.convolution\.weight",
    description="Hugging Face transformers RegNetForImageClassification / RegNetModel, e.g. facebook/regnet-y-040 "
                "(into timm's regnetx_* and regnety_*); regnet.encoder.stages.N.layers.M -> sN+1.bM+1, "
                "layer.0 and layer.1 -> conv1 and conv2, layer.2 (X) or layer.3 (Y) -> conv3, "
                "layer.2.attention.0 and 2 -> se.fc1 and se.fc2, shortcut -> downsample, regnet.embedder -> stem, "
                "classifier.1 -> head.fc",
    rules=(
        *(Renumber(rf"{_REGNET}encoder\.stages\.{n}\.layers\.(\d+)", f"s{n + 1}.b{{}}", start=1) for n in range(4)),
        *(Rename(rf"{_REGNET_BLOCK}\.{hf}\.{part}\.(.+)", rf"\1.{timm}.{name}.\2")
          for hf, timm in ((r"layer\.0", "conv1"), (r"layer\.1", "conv2"), (r"layer\.2", "conv3"),
                           (r"layer\.3", "conv3"), ("shortcut", "downsample"))
          for part, name in (("convolution", "conv"), ("normalization", "bn"))),
        Rename(rf"{_REGNET_BLOCK}\.layer\.2\.attention\.0\.(.+)", r"\1.se.fc1.\2"),
        Rename(rf"{_REGNET_BLOCK}\.layer\.2\.attention\.2\.(.+)", r"\1.se.fc2.\2"),
        Rename(rf"{_REGNET}embedder\.embedder\.convolution\.(.+)", r"stem.conv.\1"),
        Rename(rf"{_REGNET}embedder\.embedder\.normalization\.(.+)", r"stem.bn.\1"),
        Rename(r"classifier\.1\.(weight|bias)", r"head.fc.\1"),
    ),
)


# ConvNeXt V2: models/convnextv2/modeling_convnextv2.py, ConvNextLayer's dwconv, layernorm, pwconv1 and
# pwconv2 with ConvNextV2GRN between them (``grn.weight``/``grn.bias`` shaped [1, 1, 1, C]; timm's
# GlobalResponseNorm keeps [C], the same formula and eps 1e-6) and no layer scale. The stem's,
# the downsampling's and the blocks' LayerNorms are eps 1e-6 in both; only the final
# ``convnextv2.layernorm`` takes config.layer_norm_eps (1e-12 by default and in facebook's configs)
# where timm's head.norm has 1e-6: set by its path, as for ConvNeXt.
_CNX2 = r"(?:convnextv2\.)?"
_CNX2_BLOCK = rf"{_CNX2}encoder\.stages\.(\d+)\.layers\.(\d+)"

TRANSFORMERS_CONVNEXT_V2 = Layout(
    name="transformers-convnextv2",
    family="timm",
    detect=rf"{_CNX2}encoder\.stages\.0\.layers\.0\.grn\.weight",
    zoo="transformers",
    build_options={"convnextv2_*": _FINAL_NORM_EPS},
    config_options={"layer_norm_eps": "head.norm.eps"},
    description="Hugging Face transformers ConvNextV2ForImageClassification / ConvNextV2Model, e.g. "
                "facebook/convnextv2-tiny-1k-224 (into timm's convnextv2_*), its final LayerNorm built with its "
                "config.json's layer_norm_eps (1e-12, timm's 1e-6); convnextv2.encoder.stages.N.layers.M -> "
                "stages.N.blocks.M, grn -> mlp.grn (its [1,1,1,C] as [C]), downsampling_layer -> downsample, "
                "convnextv2.embeddings -> stem, convnextv2.layernorm -> head.norm, classifier -> head.fc",
    rules=(
        Rename(rf"{_CNX2}embeddings\.patch_embeddings\.(.+)", r"stem.0.\1"),
        Rename(rf"{_CNX2}embeddings\.layernorm\.(.+)", r"stem.1.\1"),
        Rename(rf"{_CNX2}encoder\.stages\.(\d+)\.downsampling_layer\.(\d)\.(.+)", r"stages.\1.downsample.\2.\3"),
        *(Rename(rf"{_CNX2_BLOCK}\.{hf}\.(.+)", rf"stages.\1.blocks.\2.{timm}.\3")
          for hf, timm in (("dwconv", "conv_dw"), ("layernorm", "norm"), ("pwconv1", "mlp.fc1"),
                           ("grn", "mlp.grn"), ("pwconv2", "mlp.fc2"))),
        Reshape(r"stages\.\d+\.blocks\.\d+\.mlp\.grn\.(weight|bias)"),
        # atto to nano: timm builds them with conv_mlp=True (1x1 convolutions, [C_out, C_in, 1, 1])
        Reshape(r"stages\.\d+\.blocks\.\d+\.mlp\.fc[12]\.weight"),
        Rename(rf"{_CNX2}layernorm\.(.+)", r"head.norm.\1"),
        Rename(r"classifier\.(weight|bias)", r"head.fc.\1"),
    ),
)


# BiT: models/bit/modeling_bit.py with layer_type "preactivation" (google/bit-50, converted with
# BitConfig(conv_layer="std_conv"): global_padding None, embedding_dynamic_padding False).
# BitEmbeddings' WeightStandardizedConv2d ``embedder.convolution`` is timm's stem.conv (StdConv2d,
# eps 1e-8; then ConstantPad2d(1) and MaxPool2d(3, 2), timm's stem_type 'fixed'); a
# BitPreActivationBottleneckLayer's norm1, conv1, norm2, conv2, norm3, conv3 and downsample.conv
# are timm's PreActBottleneck's names (GroupNorm eps 1e-5 in both); ``bit.norm`` comes before the
# pooling and ``classifier.1``, a Linear where timm's ResNetV2 head.fc is a 1x1 Conv2d: the same
# values, two more dimensions of size 1. (A config with global_padding "SAME", ViT-hybrid's
# backbone, pads as TensorFlow does, which resnetv2_*_bit does not build: it loads and computes
# something else.)
TRANSFORMERS_BIT = Layout(
    name="transformers-bit",
    family="timm",
    detect=r"(?:bit\.)?embedder\.convolution\.weight",
    description="Hugging Face transformers BitForImageClassification / BitModel, e.g. google/bit-50 (into timm's "
                "resnetv2_*_bit); bit.encoder.stages.N.layers.M -> stages.N.blocks.M, bit.embedder.convolution -> "
                "stem.conv, bit.norm -> norm, classifier.1 -> head.fc (as a 1x1 convolution)",
    rules=(
        Rename(r"(?:bit\.)?encoder\.stages\.(\d+)\.layers\.(\d+)\.(.+)", r"stages.\1.blocks.\2.\3"),
        Rename(r"(?:bit\.)?embedder\.convolution\.(.+)", r"stem.conv.\1"),
        Rename(r"(?:bit\.)?norm\.(.+)", r"norm.\1"),
        Rename(r"classifier\.1\.(weight|bias)", r"head.fc.\1"),
        Reshape(r"head\.fc\.weight"),
    ),
)


# MobileNet v1: models/mobilenet_v1/modeling_mobilenet_v1.py (google/mobilenet_v1_1.0_224), a port of
# the TensorFlow model: MobileNetV1ConvLayer pads as TensorFlow's "same" (config.tf_padding), its
# BatchNorm eps is config.layer_norm_eps (1e-3) and its activation config.hidden_act ("relu6"), all
# three its config's defaults and in the Hub's configs. The tensors pair with timm's mobilenetv1_*
# module by module (the planner's pairing by order, as for transformers-efficientnet); timm builds
# the same network with pad_type='same', bn_eps=1e-3 and act_layer='relu6' (its defaults compute
# something else). The config's eps is read; its tf_padding (a flag, where timm takes a padding's
# name) and hidden_act are not: a file trained without TensorFlow's padding loads and computes
# something else.
TRANSFORMERS_MOBILENET_V1 = Layout(
    name="transformers-mobilenet-v1",
    family="timm",
    detect=r"(?:mobilenet_v1\.)?layer\.0\.convolution\.weight",  # MobileViT's conv_stem has MobileNet v1's names
    rules=(),  # transformers' names pair with timm's module by module (the planner's pairing by order)
    zoo="transformers",
    description="Hugging Face transformers MobileNetV1ForImageClassification, e.g. google/mobilenet_v1_1.0_224 (into "
                "timm's mobilenetv1_*), a port of the TensorFlow model built as it computes: padding as TensorFlow's "
                "'same', ReLU6 and its config.json's BatchNorm eps (1e-3); paired module by module in order: "
                "conv_stem -> conv_stem and bn1, layer.2K and layer.2K+1 -> the K-th block's conv_dw and bn1, "
                "conv_pw and bn2, classifier -> classifier",
    build_options={"mobilenetv1_*": {"pad_type": "same", "bn_eps": 1e-3, "act_layer": "relu6"}},
    config_options={"layer_norm_eps": "bn_eps"},
)


@hookimpl
def zooadapt_register_layouts(register):
    for layout in (TRANSFORMERS_RESNET, TRANSFORMERS_CONVNEXT, TRANSFORMERS_VIT, TRANSFORMERS_MOBILENET_V2,
                   TRANSFORMERS_REGNET, TRANSFORMERS_CONVNEXT_V2, TRANSFORMERS_BIT, TRANSFORMERS_MOBILENET_V1):
        register(layout)

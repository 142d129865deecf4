"""Hugging Face transformers' vision transformers, read into timm's: DeiT, DINOv2, BEiT, Swin.

Each layout is the rename table between a transformers image model's files and the timm
architecture that computes the same network, written from the transformers modeling file named
above it (``transformers/models/<name>/modeling_<name>.py``), as ``hf_layouts.py`` does for the
convolutional ones and for ViT. Files as the Hub holds them (and as ``save_pretrained`` writes
them: transformers 5 reverts its in-memory renames on save, ``conversion_mapping.py``) are read,
and so is a ``state_dict()`` of a transformers 5 model, whose names differ (``attention.q_proj``
for ``attention.attention.query``). Each ``detect`` names a key only its model's files hold, so
a layout's build options never reach another model's file. tests/test_transformers_twins.py
compares outputs with transformers' own forward on the same seeded weights.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from zooadapt.plugin_api import (
    Conversion,
    Drop,
    Fuse,
    Layout,
    Rename,
    Renumber,
    fused_parts,
    hookimpl,
    renamed_as_planned,
)

Shape = tuple[int, ...]

# -- DeiT, distilled --------------------------------------------------------------------------------
# models/deit/modeling_deit.py: DeiTEmbeddings holds cls_token and distillation_token (position
# embeddings cover the patches and both tokens); DeiTLayer is ViTLayer's names. facebook/deit-*-
# distilled-patch16-224 are DeiTForImageClassificationWithTeacher: logits are the mean of
# cls_classifier(CLS) and distillation_classifier(DIST), what timm's VisionTransformerDistilled
# computes in eval. (facebook/deit-*-patch16-224 without distillation are ViTForImageClassification
# files: transformers-vit.) Every LayerNorm takes config.layer_norm_eps, 1e-12 by default and in
# facebook's configs, where timm builds 1e-6. (transformers' audio ASTModel, saved without its
# prefix, holds the same names: its LayerNorms take its config's eps too, and its one-channel
# patch embedding fits no deit_*.)
_DEIT_LAYER = r"(?:deit\.)?(?:encoder\.layer|layers)\.(\d+)"

TRANSFORMERS_DEIT = Layout(
    name="transformers-deit",
    family="timm",
    detect=r"(?:deit\.)?embeddings\.distillation_token",
    description="Hugging Face transformers DeiTForImageClassificationWithTeacher / DeiTModel, e.g. "
                "facebook/deit-base-distilled-patch16-224 (into timm's deit_*_distilled_*), built with its "
                "config.json's layer_norm_eps (transformers' default 1e-12, timm's 1e-6); deit.encoder.layer.N -> "
                "blocks.N, query+key+value -> attn.qkv (concatenated), distillation_token -> dist_token, "
                "cls_classifier -> head, distillation_classifier -> head_dist",
    zoo="transformers",
    build_options={"deit_*": {"LayerNorm.eps": 1e-12}},
    config_options={"layer_norm_eps": "LayerNorm.eps"},
    rules=(
        Fuse(r"(?:deit\.)?encoder\.layer\.(?P<i>\d+)\.attention\.attention\.(?P<part>query|key|value)\."
             r"(?P<kind>weight|bias)", r"blocks.\g<i>.attn.qkv.\g<kind>", ("query", "key", "value")),
        Fuse(r"(?:deit\.)?layers\.(?P<i>\d+)\.attention\.(?P<part>q_proj|k_proj|v_proj)\.(?P<kind>weight|bias)",
             r"blocks.\g<i>.attn.qkv.\g<kind>", ("q_proj", "k_proj", "v_proj")),
        Rename(rf"{_DEIT_LAYER}\.attention\.(?:output\.dense|o_proj)\.(.+)", r"blocks.\1.attn.proj.\2"),
        Rename(rf"{_DEIT_LAYER}\.(?:intermediate\.dense|mlp\.fc1)\.(.+)", r"blocks.\1.mlp.fc1.\2"),
        Rename(rf"{_DEIT_LAYER}\.(?:output\.dense|mlp\.fc2)\.(.+)", r"blocks.\1.mlp.fc2.\2"),
        Rename(rf"{_DEIT_LAYER}\.layernorm_before\.(.+)", r"blocks.\1.norm1.\2"),
        Rename(rf"{_DEIT_LAYER}\.layernorm_after\.(.+)", r"blocks.\1.norm2.\2"),
        Rename(r"(?:deit\.)?embeddings\.cls_token", "cls_token"),
        Rename(r"(?:deit\.)?embeddings\.distillation_token", "dist_token"),
        Rename(r"(?:deit\.)?embeddings\.position_embeddings", "pos_embed"),
        Rename(r"(?:deit\.)?embeddings\.patch_embeddings\.projection\.(.+)", r"patch_embed.proj.\1"),
        Drop(r"(?:deit\.)?embeddings\.mask_token"),  # masked-image pretraining only
        Rename(r"(?:deit\.)?layernorm\.(.+)", r"norm.\1"),
        Rename(r"cls_classifier\.(weight|bias)", r"head.\1"),
        Rename(r"distillation_classifier\.(weight|bias)", r"head_dist.\1"),
    ),
)


# -- DINOv2 ----------------------------------------------------------------------------------------
# models/dinov2/modeling_dinov2.py (Dinov2Model, e.g. facebook/dinov2-small; Dinov2ForImageClassification)
# and models/dinov2_with_registers/modeling_dinov2_with_registers.py: Dinov2Embeddings holds
# cls_token, mask_token (masked-image pretraining only: timm has none), position_embeddings and
# patch_embeddings.projection; Dinov2Layer is norm1, attention.attention.{query,key,value},
# attention.output.dense, layer_scale1.lambda1, norm2, mlp.{fc1,fc2}, layer_scale2.lambda1. The
# giant's Dinov2SwiGLUFFN packs mlp.weights_in as [x1; x2] with silu(x1) * x2, timm's SwiGLUPacked
# fc1 (transformers 5 holds it as gate_proj and up_proj). Every LayerNorm takes config.layer_norm_eps,
# 1e-6 by default as in timm: declared so that a config with another value builds it.
# Dinov2ForImageClassification's classifier reads concat(CLS, mean of the patch tokens), which no
# timm head computes: it stays unread (load the backbone with num_classes=...).
_D2 = r"(?:dinov2\.|dinov2_with_registers\.)?"
_D2_LAYER = rf"{_D2}encoder\.layer\.(\d+)"
_D2_DETECT = rf"{_D2}encoder\.layer\.0\.layer_scale1\.lambda1"  # DINOv3's blocks are "layer.N", not "encoder.layer.N"

TRANSFORMERS_DINOV2 = Layout(
    name="transformers-dinov2",
    family="timm",
    detect=_D2_DETECT,
    description="Hugging Face transformers Dinov2Model / Dinov2ForImageClassification, e.g. facebook/dinov2-small "
                "(into timm's vit_*_patch14_dinov2), built with its config.json's layer_norm_eps; encoder.layer.N -> "
                "blocks.N, query+key+value -> attn.qkv (concatenated), layer_scaleK.lambda1 -> lsK.gamma, "
                "mlp.weights_in and weights_out (SwiGLU) -> mlp.fc1 and fc2, embeddings -> cls_token, pos_embed and "
                "patch_embed, layernorm -> norm, mask_token dropped",
    zoo="transformers",
    build_options={"vit_*": {"LayerNorm.eps": 1e-6}},
    config_options={"layer_norm_eps": "LayerNorm.eps"},
    rules=(
        Fuse(rf"{_D2}encoder\.layer\.(?P<i>\d+)\.attention\.attention\.(?P<part>query|key|value)\.(?P<kind>weight|bias)",
             r"blocks.\g<i>.attn.qkv.\g<kind>", ("query", "key", "value")),
        Fuse(rf"{_D2}encoder\.layer\.(?P<i>\d+)\.attention\.(?P<part>q_proj|k_proj|v_proj)\.(?P<kind>weight|bias)",
             r"blocks.\g<i>.attn.qkv.\g<kind>", ("q_proj", "k_proj", "v_proj")),
        Fuse(rf"{_D2}encoder\.layer\.(?P<i>\d+)\.mlp\.(?P<part>gate_proj|up_proj)\.(?P<kind>weight|bias)",
             r"blocks.\g<i>.mlp.fc1.\g<kind>", ("gate_proj", "up_proj")),  # transformers 5's split weights_in
        Rename(rf"{_D2_LAYER}\.attention\.(?:output\.dense|o_proj)\.(.+)", r"blocks.\1.attn.proj.\2"),
        Rename(rf"{_D2_LAYER}\.layer_scale([12])\.lambda1", r"blocks.\1.ls\2.gamma"),
        Rename(rf"{_D2_LAYER}\.mlp\.(?:fc1|weights_in)\.(.+)", r"blocks.\1.mlp.fc1.\2"),
        Rename(rf"{_D2_LAYER}\.mlp\.(?:fc2|weights_out|down_proj)\.(.+)", r"blocks.\1.mlp.fc2.\2"),
        Rename(rf"{_D2_LAYER}\.(norm[12])\.(.+)", r"blocks.\1.\2.\3"),
        Rename(rf"{_D2}embeddings\.cls_token", "cls_token"),
        Rename(rf"{_D2}embeddings\.position_embeddings", "pos_embed"),
        Rename(rf"{_D2}embeddings\.patch_embeddings\.projection\.(.+)", r"patch_embed.proj.\1"),
        Rename(rf"{_D2}layernorm\.(.+)", r"norm.\1"),
        Drop(rf"{_D2}embeddings\.mask_token"),
    ),
)


def _dinov2_registers(checkpoint: Mapping[str, Shape], model: Mapping[str, Shape]) -> Conversion | None:
    """Dinov2WithRegistersEmbeddings adds position_embeddings[:, 0] to the CLS token and [:, 1:] to
    the patches, then puts the register tokens after CLS with none; timm's vit_*_reg4_dinov2
    (no_embed_class=True) adds pos_embed to the patches only. So cls_token = cls_token +
    position_embeddings[:, :1] and pos_embed = position_embeddings[:, 1:], as timm's _convert_dinov2
    does for Meta's own files. Every other tensor is named by TRANSFORMERS_DINOV2's rules (query,
    key and value concatenated here: a converting layout's plan applies no Fuse); the classifier is
    dropped. None for a file without register tokens (plain DINOv2: TRANSFORMERS_DINOV2 reads it)
    or a model without them."""
    register = next((k for k in checkpoint if re.fullmatch(rf"{_D2}embeddings\.register_tokens", k)), None)
    if register is None or "reg_token" not in model:
        return None
    fuses = [r for r in TRANSFORMERS_DINOV2.rules if isinstance(r, Fuse)]
    renames = [Rename(rf"{_D2}embeddings\.register_tokens", "reg_token"),
               # Dinov2WithRegistersForImageClassification's concat(CLS, mean of the patches) classifier: no
               # timm head reads it, and a conversion's every tensor must find its place (rename layouts leave it
               # unexpected; here it is dropped, and the report says so)
               Drop(r"classifier\.(?:weight|bias)"),
               *(r for r in TRANSFORMERS_DINOV2.rules if not isinstance(r, Fuse))]
    shapes: dict[str, Shape] = {}
    sources: dict[str, tuple[str, ...]] = {}
    fused = fused_parts(checkpoint, fuses)
    if fused is None:
        return None
    absorbed = {k for _, keys in fused.values() for k in keys}
    for key, shape in checkpoint.items():
        name = renamed_as_planned(key, renames, model) if key not in absorbed else None
        if name is not None:
            shapes[name], sources[name] = tuple(shape), (key,)
    for joined, (rule, keys) in fused.items():
        name = renamed_as_planned(joined, renames, model)
        shape = rule.fuse_shape([tuple(checkpoint[k]) for k in keys])
        if name is None or shape is None:
            return None
        shapes[name], sources[name] = shape, keys
    if "cls_token" not in shapes or "pos_embed" not in shapes:
        return None
    position = sources["pos_embed"][0]
    sources["cls_token"] = (*sources["cls_token"], position)
    p = shapes["pos_embed"]
    shapes["pos_embed"] = (p[0], p[1] - 1, *p[2:])
    same = frozenset(k for k, src in sources.items() if len(src) == 1 and k != "pos_embed")

    def apply(tensors: Mapping[str, Any]) -> dict[str, Any]:
        import torch

        out: dict[str, Any] = {}
        for name, src in sources.items():
            if name == "cls_token":  # summed in float32 at least: a half-precision file's sum is not rounded twice
                token, position = tensors[src[0]], tensors[src[1]][:, :1]
                wide = torch.promote_types(torch.promote_types(token.dtype, position.dtype), torch.float32)
                out[name] = token.to(wide) + position.to(wide)
            elif name == "pos_embed":
                out[name] = tensors[src[0]][:, 1:]
            elif len(src) > 1:
                out[name] = torch.cat([tensors[k] for k in src], dim=0)
            else:
                out[name] = tensors[src[0]]
        return out

    return Conversion(name="transformers-dinov2-registers' embeddings conversion", shapes=shapes, sources=sources,
                      apply=apply, same=same)


TRANSFORMERS_DINOV2_REGISTERS = Layout(
    name="transformers-dinov2-registers",
    family="timm",
    # DINOv2's own key: the conversion applies only to a file that also holds register_tokens, a
    # key DINOv3's files hold too. Its build is DINOv2's (the file's eps): the layout that reads a
    # file builds the model, so it declares the same options
    detect=_D2_DETECT,
    rules=(),  # the conversion names every tensor (TRANSFORMERS_DINOV2's table)
    convert=_dinov2_registers,
    zoo=TRANSFORMERS_DINOV2.zoo,
    build_options=TRANSFORMERS_DINOV2.build_options,
    config_options=TRANSFORMERS_DINOV2.config_options,
    description="Hugging Face transformers Dinov2WithRegistersModel, e.g. facebook/dinov2-with-registers-small (into "
                "timm's vit_*_patch14_reg4_dinov2); transformers-dinov2's renames, register_tokens -> reg_token, "
                "position_embeddings -> pos_embed (the patches' part) and cls_token (plus the CLS token's part, "
                "which timm's pos_embed does not cover)",
)


# -- BEiT and data2vec-vision ----------------------------------------------------------------------
# models/beit/modeling_beit.py (and data2vec/modeling_data2vec_vision.py, its copy): BeitSelfAttention
# has query (bias), key (no bias), value (bias); timm's Beit attention one bias-free qkv with q_bias
# and v_bias parameters (k_bias a zero buffer). A relative_position_bias_table per layer, or one
# shared (use_shared_relative_position_bias: timm's use_shared_rel_pos_bias=True). lambda_1/lambda_2
# are timm's gamma_1/gamma_2. With use_mean_pooling (microsoft/beit-*-patch16-224) the final norm is
# ``beit.pooler.layernorm`` over the mean of the patch tokens: timm's fc_norm with global_pool='avg',
# its default. Every LayerNorm takes config.layer_norm_eps, 1e-12 by default and in the Hub's
# configs, where timm builds 1e-6. transformers 5 names the shared table ``shared_position_bias``.
_BEIT = r"(?:beit\.|data2vec_vision\.)?"
_BEIT_LAYER = rf"{_BEIT}(?:encoder\.layer|layers)\.(\d+)"

TRANSFORMERS_BEIT = Layout(
    name="transformers-beit",
    family="timm",
    detect=rf"{_BEIT}(?:encoder\.layer|layers)\.0\.lambda_1",
    description="Hugging Face transformers BeitForImageClassification / Data2VecVisionForImageClassification, e.g. "
                "microsoft/beit-base-patch16-224, facebook/data2vec-vision-base-ft1k (into timm's beit_*), built "
                "with its config.json's layer_norm_eps (transformers' default 1e-12, timm's 1e-6); "
                "beit.encoder.layer.N -> blocks.N, query+key+value weights -> attn.qkv (concatenated), query and "
                "value bias -> attn.q_bias and v_bias, lambda_1 and lambda_2 -> gamma_1 and gamma_2, "
                "beit.pooler.layernorm -> fc_norm, classifier -> head",
    zoo="transformers",
    build_options={"beit*": {"LayerNorm.eps": 1e-12}},
    config_options={"layer_norm_eps": "LayerNorm.eps"},
    rules=(
        Fuse(rf"{_BEIT}encoder\.layer\.(?P<i>\d+)\.attention\.attention\.(?P<part>query|key|value)\.weight",
             r"blocks.\g<i>.attn.qkv.weight", ("query", "key", "value")),
        Fuse(rf"{_BEIT}layers\.(?P<i>\d+)\.attention\.(?P<part>q_proj|k_proj|v_proj)\.weight",
             r"blocks.\g<i>.attn.qkv.weight", ("q_proj", "k_proj", "v_proj")),
        Rename(rf"{_BEIT_LAYER}\.attention\.(?:attention\.query|q_proj)\.bias", r"blocks.\1.attn.q_bias"),
        Rename(rf"{_BEIT_LAYER}\.attention\.(?:attention\.value|v_proj)\.bias", r"blocks.\1.attn.v_bias"),
        Rename(rf"{_BEIT_LAYER}\.(?:attention\.attention\.)?relative_position_bias\.relative_position_bias_table",
               r"blocks.\1.attn.relative_position_bias_table"),
        Drop(rf"{_BEIT_LAYER}\.(?:attention\.attention\.)?relative_position_bias\.relative_position_index"),
        Rename(rf"{_BEIT_LAYER}\.attention\.(?:output\.dense|o_proj)\.(.+)", r"blocks.\1.attn.proj.\2"),
        Rename(rf"{_BEIT_LAYER}\.(?:intermediate\.dense|mlp\.fc1)\.(.+)", r"blocks.\1.mlp.fc1.\2"),
        Rename(rf"{_BEIT_LAYER}\.(?:output\.dense|mlp\.fc2)\.(.+)", r"blocks.\1.mlp.fc2.\2"),
        Rename(rf"{_BEIT_LAYER}\.layernorm_before\.(.+)", r"blocks.\1.norm1.\2"),
        Rename(rf"{_BEIT_LAYER}\.layernorm_after\.(.+)", r"blocks.\1.norm2.\2"),
        Rename(rf"{_BEIT_LAYER}\.lambda_([12])", r"blocks.\1.gamma_\2"),
        Rename(rf"{_BEIT}(?:encoder\.relative_position_bias|shared_position_bias)\.relative_position_bias_table",
               "rel_pos_bias.relative_position_bias_table"),
        Drop(rf"{_BEIT}(?:encoder\.relative_position_bias|shared_position_bias)\.relative_position_index"),
        Rename(rf"{_BEIT}embeddings\.cls_token", "cls_token"),
        Rename(rf"{_BEIT}embeddings\.position_embeddings", "pos_embed"),
        Drop(rf"{_BEIT}embeddings\.mask_token"),
        Rename(rf"{_BEIT}embeddings\.patch_embeddings\.projection\.(.+)", r"patch_embed.proj.\1"),
        Rename(rf"{_BEIT}pooler\.layernorm\.(.+)", r"fc_norm.\1"),
        Rename(rf"{_BEIT}layernorm\.(.+)", r"norm.\1"),
        Rename(r"classifier\.(weight|bias)", r"head.\1"),
    ),
)


# -- Swin ------------------------------------------------------------------------------------------
# models/swin/modeling_swin.py: SwinStage holds its blocks, then SwinPatchMerging (``downsample``:
# a norm over the 4 concatenated neighbours, then ``reduction``) at the END of stage N; timm's
# SwinTransformerStage puts the same PatchMerging at the START of stage N+1 (as timm's own
# checkpoint_filter_fn does for Microsoft's files). Both concatenate the 2x2 neighbours in the same
# order. relative_position_index is a non-persistent buffer in both (older files keep it). The
# blocks' and the final LayerNorm take config.layer_norm_eps, the embedding's and the merging's
# LayerNorm eps 1e-5: no setting of every LayerNorm could follow a config whose eps differs, and
# the Hub's configs (and transformers' default) give timm's 1e-5.
_SWIN_BLOCK = r"(?:swin\.)?encoder\.layers\.(\d+)\.blocks\.(\d+)"

TRANSFORMERS_SWIN = Layout(
    name="transformers-swin",
    family="timm",
    # Swin v1's relative position table (Swin v2's blocks have a continuous position MLP instead)
    detect=r"(?:swin\.)?encoder\.layers\.0\.blocks\.0\.attention\.(?:self|relative_position_bias)\."
           r"relative_position_bias_table",
    description="Hugging Face transformers SwinForImageClassification / SwinModel, e.g. "
                "microsoft/swin-tiny-patch4-window7-224 (into timm's swin_*); swin.encoder.layers.N.downsample -> "
                "layers.N+1.downsample, layers.N.blocks.M -> layers.N.blocks.M, query+key+value -> attn.qkv "
                "(concatenated), layernorm_before and layernorm_after -> norm1 and norm2, swin.embeddings -> "
                "patch_embed, swin.layernorm -> norm, classifier -> head.fc",
    rules=(
        Renumber(r"(?:swin\.)?encoder\.layers\.(\d+)\.downsample", "layers.{}.downsample", start=1),
        Fuse(r"(?:swin\.)?encoder\.layers\.(?P<s>\d+)\.blocks\.(?P<b>\d+)\.attention\.self\.(?P<part>query|key|value)\."
             r"(?P<kind>weight|bias)", r"layers.\g<s>.blocks.\g<b>.attn.qkv.\g<kind>", ("query", "key", "value")),
        Fuse(r"(?:swin\.)?encoder\.layers\.(?P<s>\d+)\.blocks\.(?P<b>\d+)\.attention\.(?P<part>q_proj|k_proj|v_proj)\."
             r"(?P<kind>weight|bias)", r"layers.\g<s>.blocks.\g<b>.attn.qkv.\g<kind>", ("q_proj", "k_proj", "v_proj")),
        *(Rename(rf"{_SWIN_BLOCK}\.{hf}\.(.+)", rf"layers.\1.blocks.\2.{timm}.\3") for hf, timm in (
            (r"attention\.(?:output\.dense|o_proj)", "attn.proj"), (r"(?:intermediate\.dense|mlp\.fc1)", "mlp.fc1"),
            (r"(?:output\.dense|mlp\.fc2)", "mlp.fc2"), ("layernorm_before", "norm1"), ("layernorm_after", "norm2"))),
        Rename(rf"{_SWIN_BLOCK}\.attention\.(?:self|relative_position_bias)\.relative_position_bias_table",
               r"layers.\1.blocks.\2.attn.relative_position_bias_table"),
        Drop(rf"{_SWIN_BLOCK}\.attention\.self\.relative_position_index"),
        Rename(r"(?:swin\.)?embeddings\.patch_embeddings\.projection\.(.+)", r"patch_embed.proj.\1"),
        Rename(r"(?:swin\.)?embeddings\.norm\.(.+)", r"patch_embed.norm.\1"),
        Rename(r"(?:swin\.)?layernorm\.(.+)", r"norm.\1"),
        Rename(r"classifier\.(weight|bias)", r"head.fc.\1"),
    ),
)


@hookimpl
def zooadapt_register_layouts(register):  # type: ignore[no-untyped-def]
    for layout in (TRANSFORMERS_DEIT, TRANSFORMERS_DINOV2, TRANSFORMERS_DINOV2_REGISTERS, TRANSFORMERS_BEIT,
                   TRANSFORMERS_SWIN):
        register(layout)

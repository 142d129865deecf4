"""Hugging Face transformers' CLIP and SigLIP vision towers, read into timm's vit_*_clip_* and vit_*_siglip_*.

Each layout is the rename table between a transformers image tower's files and the timm
architecture that computes the same network, written from transformers' modeling files named
above it (``transformers/models/clip/modeling_clip.py``, ``models/siglip/modeling_siglip.py``) and
timm's ``timm/models/vision_transformer.py`` (its ``vit_*_clip_*`` and ``vit_*_siglip_*`` entries,
``_convert_openai_clip`` for OpenAI's own files), as ``hf_vit_layouts.py`` does for DeiT, DINOv2,
BEiT and Swin. transformers 5 names these towers the same in memory and on disk (its
``conversion_mapping.py`` only takes ``vision_model.`` off a ``CLIPVisionModel``, and the files
transformers 4 wrote keep it): both are read. A whole ``CLIPModel`` or ``SiglipModel`` file loads its
vision tower; the text tower's tensors (``text_model.*``, ``text_projection``, ``logit_scale``,
SigLIP's ``logit_bias``) are set aside by ``Drop`` rules, named in the report, never read as the
vision tower: such a file is identified, without a name, as the architecture of its image tower. Each ``detect`` names a
key of its tower that none of the image models other layouts read holds (CLIP's ``pre_layrnorm``,
SigLIP's patch embedding bias), so a layout's build options never reach their files; the towers
copied into other transformers models hold it too (AltCLIP's, Chinese-CLIP's, CLIPSeg's, MetaCLIP
2's: the same network, read as CLIP's). tests/test_transformers_clip.py compares outputs with
transformers' own forward on the same seeded weights, and each detect with the other models' files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from zooadapt.plugin_api import (
    Conversion,
    Drop,
    Fuse,
    KeyRule,
    Layout,
    Rename,
    Reshape,
    fused_parts,
    hookimpl,
    renamed_as_planned,
)

Shape = tuple[int, ...]

# the vision tower: ``vision_model.`` in a CLIPModel / SiglipModel / *WithProjection file and in the
# files transformers 4 wrote of a CLIPVisionModel; none in transformers 5's CLIPVisionModel and SiglipVisionModel
_V = r"(?:vision_model\.)?"
_LAYER = rf"{_V}encoder\.layers\.(\d+)"

# CLIPEncoderLayer and SiglipEncoderLayer (SigLIP's is CLIP's, copied): layer_norm1, self_attn.{q,k,v,out}_proj,
# layer_norm2, mlp.fc1 and fc2, pre-norm residual blocks as timm's Block; timm keeps q, k and v as one qkv
# projection (in that order), so the three are concatenated (``Fuse``)
_BLOCKS: tuple[KeyRule, ...] = (
    Fuse(rf"{_V}encoder\.layers\.(?P<i>\d+)\.self_attn\.(?P<part>q_proj|k_proj|v_proj)\.(?P<kind>weight|bias)",
         r"blocks.\g<i>.attn.qkv.\g<kind>", ("q_proj", "k_proj", "v_proj")),
    Rename(rf"{_LAYER}\.self_attn\.out_proj\.(.+)", r"blocks.\1.attn.proj.\2"),
    Rename(rf"{_LAYER}\.layer_norm([12])\.(.+)", r"blocks.\1.norm\2.\3"),
    Rename(rf"{_LAYER}\.mlp\.(fc[12])\.(.+)", r"blocks.\1.mlp.\2.\3"),
    # files older transformers wrote keep the embedding's position_ids (a persistent buffer then)
    Drop(rf"{_V}embeddings\.position_ids"),
    # a whole CLIPModel's or SiglipModel's other network: the text tower and what joins the two
    Drop(r"text_model\..+"), Drop(r"text_projection\.weight"), Drop(r"logit_(?:scale|bias)"),
)


# -- CLIP --------------------------------------------------------------------------------------------
# models/clip/modeling_clip.py: CLIPVisionEmbeddings holds class_embedding [D] (timm's cls_token [1, 1, D]),
# a bias-free patch_embedding (timm's pre_norm=True builds its patch embedding without bias) and
# position_embedding, an nn.Embedding [N+1, D] (timm's pos_embed [1, N+1, D], the class token's
# first); CLIPVisionModel adds pre_layrnorm (sic; timm's norm_pre) before the blocks and post_layernorm
# over the class token after them. timm's ``norm`` normalises every token and then pools the class
# token: per token, the same as transformers' post_layernorm of the pooled class token (its
# last_hidden_state is the blocks' output, before any norm). Every LayerNorm takes
# config.layer_norm_eps (1e-5, as timm's clip entries build), the MLP config.hidden_act:
# "quick_gelu" in OpenAI's files (timm's vit_*_clip_quickgelu_*), "gelu" in LAION's (vit_*_clip_*).
# Both are read from the config.json beside the file (a whole CLIPModel's nests them in vision_config).
_CLIP_RULES: tuple[KeyRule, ...] = (
    *_BLOCKS,
    Rename(rf"{_V}embeddings\.class_embedding", "cls_token"),
    Rename(rf"{_V}embeddings\.position_embedding\.weight", "pos_embed"),
    Rename(rf"{_V}embeddings\.patch_embedding\.weight", "patch_embed.proj.weight"),
    Rename(rf"{_V}pre_layrnorm\.(.+)", r"norm_pre.\1"),
    Rename(rf"{_V}post_layernorm\.(.+)", r"norm.\1"),
    Reshape(r"(?:cls_token|pos_embed)$"),  # [D] -> [1, 1, D], [N+1, D] -> [1, N+1, D]
)

_CLIP_BUILD: dict[str, dict[str, Any]] = {
    # timm's own choice for each name (eps 1e-5 everywhere), replaced by the file's config.json where it has one
    "vit_*_clip_*": {"LayerNorm.eps": 1e-5, "act_layer": "gelu"},
    "vit_*_clip_quickgelu_*": {"act_layer": "quick_gelu"},
}
_CLIP_CONFIG = {"layer_norm_eps": "LayerNorm.eps", "hidden_act": "act_layer",
                "vision_config.layer_norm_eps": "LayerNorm.eps", "vision_config.hidden_act": "act_layer"}
# the tower's own misspelling, which only CLIP's copies share (AltCLIP, Chinese-CLIP, CLIPSeg, MetaCLIP 2, GIT,
# Kosmos-2: the same network; MLCD's rotary tower has no position_embedding, and its plan does not fit)
_CLIP_DETECT = rf"{_V}pre_layrnorm\.weight"

TRANSFORMERS_CLIP = Layout(
    name="transformers-clip",
    family="timm",
    detect=_CLIP_DETECT,
    description="Hugging Face transformers CLIPVisionModel, and the vision tower of CLIPModel and "
                "CLIPVisionModelWithProjection (the text tower and the projections not read), e.g. "
                "openai/clip-vit-base-patch32 (into timm's vit_*_clip_* and vit_*_clip_quickgelu_*), built with its "
                "config.json's layer_norm_eps and hidden_act; vision_model.encoder.layers.N -> blocks.N, "
                "q_proj+k_proj+v_proj -> attn.qkv (concatenated), out_proj -> attn.proj, layer_norm1 and 2 -> norm1 "
                "and 2, embeddings -> cls_token, pos_embed and patch_embed, pre_layrnorm -> norm_pre, "
                "post_layernorm -> norm",
    zoo="transformers",
    build_options=_CLIP_BUILD,
    config_options=_CLIP_CONFIG,
    rules=_CLIP_RULES,
)


# -- SigLIP ------------------------------------------------------------------------------------------
# models/siglip/modeling_siglip.py: SiglipVisionEmbeddings has no class token, a patch_embedding with
# bias and position_embedding [N, D] (timm's class_token=False pos_embed [1, N, D]); no norm before the
# blocks; post_layernorm over every token (timm's norm: last_hidden_state is forward_features). The
# pooling head SiglipMultiheadAttentionPoolingHead (``head``: probe, an nn.MultiheadAttention, layernorm,
# mlp) is timm's AttentionPoolLatent (``attn_pool``, global_pool='map'): probe -> latent, the attention's
# packed in_proj [3D, D] -> q (its first D rows) and kv (the other 2D: key then value), out_proj -> proj,
# layernorm -> norm, mlp -> mlp. Every LayerNorm takes config.layer_norm_eps (1e-6, timm's default);
# the MLPs' config.hidden_act is "gelu_pytorch_tanh" in google's files, timm's "gelu_tanh", which timm
# builds for its SigLIP 2 entries only (exact GELU for the SigLIP 1 names).
_SIGLIP_RULES: tuple[KeyRule, ...] = (
    *_BLOCKS,
    Rename(rf"{_V}embeddings\.patch_embedding\.(weight|bias)", r"patch_embed.proj.\1"),
    Rename(rf"{_V}embeddings\.position_embedding\.weight", "pos_embed"),
    Rename(rf"{_V}post_layernorm\.(.+)", r"norm.\1"),
    Reshape(r"pos_embed$"),  # [N, D] -> [1, N, D]
)
# the pooling head's names that only rename (its in_proj is cut in two by the conversion below)
_SIGLIP_HEAD: tuple[KeyRule, ...] = (
    Rename(rf"{_V}head\.probe", "attn_pool.latent"),
    Rename(rf"{_V}head\.attention\.out_proj\.(.+)", r"attn_pool.proj.\1"),
    Rename(rf"{_V}head\.layernorm\.(.+)", r"attn_pool.norm.\1"),
    Rename(rf"{_V}head\.mlp\.(fc[12])\.(.+)", r"attn_pool.mlp.\1.\2"),
)
_SIGLIP_IN_PROJ = rf"{_V}head\.attention\.in_proj_(weight|bias)"

_SIGLIP_BUILD: dict[str, dict[str, Any]] = {"vit_*_siglip_*": {"LayerNorm.eps": 1e-6, "act_layer": "gelu_tanh"}}
# hidden_act's "gelu_pytorch_tanh" is no timm name
_SIGLIP_CONFIG = {"layer_norm_eps": "LayerNorm.eps", "vision_config.layer_norm_eps": "LayerNorm.eps"}
# SigLIP's bias-carrying patch embedding, present whether or not the tower has its pooling head (CLIP's has no
# bias; ViT, DeiT, BEiT and DINOv2 name theirs patch_embeddings.projection). SigLIP's copies (Idefics 2 and 3,
# SmolVLM) hold it, and so do two other networks, whose files no vit_*_siglip_* takes: BLIP's tower (a class
# token, a packed qkv) and Siglip2's (a Linear patch embedding over flattened pixels)
_SIGLIP_DETECT = rf"{_V}embeddings\.patch_embedding\.bias"

TRANSFORMERS_SIGLIP = Layout(
    name="transformers-siglip",
    family="timm",
    detect=_SIGLIP_DETECT,
    description="Hugging Face transformers SiglipVisionModel, and the vision tower of SiglipModel (the text tower "
                "not read, the pooling head read by transformers-siglip-head), e.g. google/siglip-base-patch16-224 "
                "(into timm's vit_*_siglip_*), built with gelu_tanh (transformers' gelu_pytorch_tanh) and its "
                "config.json's layer_norm_eps; vision_model.encoder.layers.N -> blocks.N, q_proj+k_proj+v_proj -> "
                "attn.qkv (concatenated), out_proj -> attn.proj, layer_norm1 and 2 -> norm1 and 2, embeddings -> "
                "pos_embed and patch_embed, post_layernorm -> norm",
    zoo="transformers",
    build_options=_SIGLIP_BUILD,
    config_options=_SIGLIP_CONFIG,
    rules=_SIGLIP_RULES,
)


# -- the heads: conversions -----------------------------------------------------------------------------
def _squeezed(shape: Sequence[int]) -> list[int]:
    return [d for d in shape if d != 1]


Recipe = Callable[[Mapping[str, Any]], Any]
"""How a converted tensor is made from the file's tensors (run when the plan is placed)."""


def _taken(key: str) -> Recipe:
    return lambda tensors: tensors[key]


def _reshaped(key: str, shape: Shape) -> Recipe:
    return lambda tensors: tensors[key].reshape(shape)


def _concatenated(keys: tuple[str, ...]) -> Recipe:
    import torch

    return lambda tensors: torch.cat([tensors[k] for k in keys], dim=0)


def _rows(key: str, start: int, stop: int | None) -> Recipe:
    return lambda tensors: tensors[key][start:stop]


def _zeros(like: str, rows: int) -> Recipe:
    import torch

    return lambda tensors: torch.zeros(rows, dtype=tensors[like].dtype)


class _Converter:
    """A conversion's plan as it is made: converted key -> (shape, the file's keys, how its value is made)."""

    def __init__(self) -> None:
        self.shapes: dict[str, Shape] = {}
        self.sources: dict[str, tuple[str, ...]] = {}
        self.recipes: dict[str, Recipe] = {}
        self.same: set[str] = set()

    def add(self, name: str, shape: Shape, sources: tuple[str, ...], recipe: Recipe, same: bool = False) -> None:
        self.shapes[name], self.sources[name], self.recipes[name] = shape, sources, recipe
        if same:
            self.same.add(name)

    def conversion(self, name: str) -> Conversion:
        recipes = dict(self.recipes)

        def apply(tensors: Mapping[str, Any]) -> dict[str, Any]:
            return {key: recipe(tensors) for key, recipe in recipes.items()}

        return Conversion(name=name, shapes=dict(self.shapes), sources=dict(self.sources), apply=apply,
                          same=frozenset(self.same))


def _backbone(checkpoint: Mapping[str, Shape], model: Mapping[str, Shape], rules: Sequence[KeyRule],
              skip: Callable[[str], bool]) -> _Converter | None:
    """The tower's tensors as the rename layout's ``rules`` read them, with what its ``Fuse`` and
    ``Reshape`` rules do done here (a converting layout's plan applies neither). A key no rule
    renames (the text tower, the projections, logit_scale) is left out: the conversion drops it
    and the report says so. A renamed key the model lacks, or of another size, keeps its name and
    shape, so that the plan refuses the conversion rather than drop a tensor of the network.
    ``skip``: keys the caller converts itself. None when a fused group misses a part."""
    fuses = [r for r in rules if isinstance(r, Fuse)]
    renames = [r for r in rules if not isinstance(r, (Fuse, Reshape))]
    out = _Converter()
    fused = fused_parts(checkpoint, fuses, skip)
    if fused is None:
        return None
    absorbed = {k for _, keys in fused.values() for k in keys}
    for key, shape in checkpoint.items():
        if skip(key) or key in absorbed:
            continue
        name = renamed_as_planned(key, renames, model)
        if name is None or name == key:
            continue  # dropped by a rule (position_ids), or named by none: not the vision tower's
        target = model.get(name)
        if target is not None and tuple(target) != tuple(shape) and _squeezed(target) == _squeezed(shape):
            out.add(name, tuple(target), (key,), _reshaped(key, tuple(target)))
        else:
            out.add(name, tuple(shape), (key,), _taken(key), same=True)
    for joined, (rule, keys) in fused.items():
        name = renamed_as_planned(joined, renames, model)
        shape = rule.fuse_shape([tuple(checkpoint[k]) for k in keys])
        if name is None or shape is None:
            return None
        out.add(name, shape, keys, _concatenated(keys))
    return out


def _find(checkpoint: Mapping[str, Shape], pattern: str) -> str | None:
    import re

    return next((k for k in checkpoint if re.fullmatch(pattern, k)), None)


def _clip_projection(checkpoint: Mapping[str, Shape], model: Mapping[str, Shape]) -> Conversion | None:
    """CLIPVisionModelWithProjection's and CLIPModel's ``visual_projection``, a bias-free Linear
    [P, D] over the post-normed class token (transformers' image_embeds), as timm's ``head`` with a
    zero bias: what timm's ``_convert_openai_clip`` makes of OpenAI's ``proj``. A head of another class
    count takes it as a replaced head (num_classes=None keeps the file's P). Every other tensor as
    TRANSFORMERS_CLIP's rules name it. None for a file without the projection or a model without a
    Linear head (num_classes=0): TRANSFORMERS_CLIP reads the tower, the projection unused."""
    projection = checkpoint.get("visual_projection.weight")
    head = model.get("head.weight")
    if projection is None or head is None or "head.bias" not in model or len(projection) != 2 \
            or tuple(head[1:]) != tuple(projection[1:]):
        return None
    out = _backbone(checkpoint, model, _CLIP_RULES, lambda k: k == "visual_projection.weight")
    if out is None:
        return None
    out.add("head.weight", tuple(projection), ("visual_projection.weight",), _taken("visual_projection.weight"),
            same=True)
    out.add("head.bias", (projection[0],), (), _zeros("visual_projection.weight", projection[0]))
    return out.conversion("transformers-clip-projection's conversion")


TRANSFORMERS_CLIP_PROJECTION = Layout(
    name="transformers-clip-projection",
    family="timm",
    detect=_CLIP_DETECT,  # its build options are TRANSFORMERS_CLIP's: whichever reads the file builds the same
    rules=(),  # the conversion names every tensor (TRANSFORMERS_CLIP's table)
    convert=_clip_projection,
    description="Hugging Face transformers CLIPVisionModelWithProjection, and the image half of CLIPModel (the text "
                "tower dropped), e.g. openai/clip-vit-base-patch32 (into timm's vit_*_clip_*, its head of "
                "projection_dim classes), built as transformers-clip; transformers-clip's renames, "
                "visual_projection -> head (with a zero bias, as timm's _convert_openai_clip gives OpenAI's proj)",
    zoo="transformers",
    build_options=_CLIP_BUILD,
    config_options=_CLIP_CONFIG,
)


def _siglip_head(checkpoint: Mapping[str, Shape], model: Mapping[str, Shape]) -> Conversion | None:
    """The SigLIP tower with its attention-pooling head into timm's ``attn_pool``: the head's
    nn.MultiheadAttention packs query, key and value projections as in_proj [3D, D] (and [3D]),
    AttentionPoolLatent keeps the latent's query projection ``q`` [D, D] apart from ``kv`` [2D, D]:
    rows :D and D: (the split big_vision's and timm's _load_weights make of the same head). Every
    other tensor as TRANSFORMERS_SIGLIP's rules and the head's renames name it. None for a file
    without the head or a model without attn_pool (global_pool other than 'map'): TRANSFORMERS_SIGLIP
    reads the tower, the head unused."""
    import re

    q = model.get("attn_pool.q.weight")
    if q is None or "attn_pool.kv.weight" not in model or _find(checkpoint, rf"{_V}head\.probe") is None:
        return None
    width = q[0]
    in_proj = {m.group(1): k for k in checkpoint if (m := re.fullmatch(_SIGLIP_IN_PROJ, k))}
    if set(in_proj) != {"weight", "bias"} or any(checkpoint[k][0] != 3 * width for k in in_proj.values()):
        return None
    out = _backbone(checkpoint, model, (*_SIGLIP_RULES, *_SIGLIP_HEAD), lambda k: k in in_proj.values())
    if out is None:
        return None
    for kind, key in in_proj.items():
        rest = tuple(checkpoint[key][1:])
        out.add(f"attn_pool.q.{kind}", (width, *rest), (key,), _rows(key, 0, width))
        out.add(f"attn_pool.kv.{kind}", (2 * width, *rest), (key,), _rows(key, width, None))
    return out.conversion("transformers-siglip-head's conversion")


TRANSFORMERS_SIGLIP_HEAD = Layout(
    name="transformers-siglip-head",
    family="timm",
    detect=_SIGLIP_DETECT,  # its build options are TRANSFORMERS_SIGLIP's: whichever reads the file builds the same
    rules=(),  # the conversion names every tensor (TRANSFORMERS_SIGLIP's table and the head's)
    convert=_siglip_head,
    description="Hugging Face transformers SiglipVisionModel with its attention-pooling head, and the vision tower "
                "of SiglipModel (the text tower dropped), e.g. google/siglip-base-patch16-224 (into timm's "
                "vit_*_siglip_* with global_pool='map'), built as transformers-siglip; transformers-siglip's renames, "
                "head.probe -> attn_pool.latent, head.attention.in_proj -> attn_pool.q (rows :D) and attn_pool.kv "
                "(rows D:), out_proj -> attn_pool.proj, layernorm -> attn_pool.norm, mlp -> attn_pool.mlp",
    zoo="transformers",
    build_options=_SIGLIP_BUILD,
    config_options=_SIGLIP_CONFIG,
)


@hookimpl
def zooadapt_register_layouts(register):
    for layout in (TRANSFORMERS_CLIP, TRANSFORMERS_CLIP_PROJECTION, TRANSFORMERS_SIGLIP, TRANSFORMERS_SIGLIP_HEAD):
        register(layout)

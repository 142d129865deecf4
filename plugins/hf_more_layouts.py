"""More Hugging Face transformers image models, read into the timm architectures that compute them: SigLIP's
image classifier and Hiera.

Each layout is the rename table (or conversion) between a transformers image model's files and the timm
architecture that computes the same network, written from the transformers modeling file named above it
(``transformers/models/<name>/modeling_<name>.py``) and timm's (``timm/models/<name>.py``), as
``hf_vit_layouts.py`` and ``hf_clip_layouts.py`` do for the others. Files as ``save_pretrained`` writes them
are read; transformers 5 keeps these models' names in memory (its ``conversion_mapping.py`` renames
SiglipVisionModel's ``vision_model.`` only, which a SiglipForImageClassification file keeps), so a
``state_dict()`` is the same file. Each ``detect`` names a key only its model's files hold, so a layout's
build options never reach another model's file. tests/test_transformers_more.py compares outputs with
transformers' own forward on the same seeded weights.

Not here, and why: ViTMAEModel / ViTMAEForPreTraining files already load exactly through ``transformers-vit``
(their encoder holds ViT's names; the fixed sin-cos position_embeddings are saved in the file; the decoder
is reported unused); transformers 5 no longer has EfficientFormer; Dinov2ForImageClassification's classifier
reads concat(CLS, mean of the patch tokens), which no timm head computes (``transformers-dinov2`` loads the
backbone and says so).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from zooadapt.plugin_api import Conversion, Fuse, Layout, Rename, Renumber, fused_parts, hookimpl

Shape = tuple[int, ...]
Recipe = Callable[[Mapping[str, Any]], Any]

# -- SigLIP's image classifier ----------------------------------------------------------------------
# models/siglip/modeling_siglip.py: SiglipForImageClassification holds a SiglipVisionModel (saved as
# ``vision_model.*``, its attention-pooling ``head`` built by vision_use_head but never run) and
# ``classifier``, a Linear over torch.mean(last_hidden_state, dim=1): the mean of every token after
# post_layernorm (SigLIP has no class token). timm's vision_transformer.py computes it with
# global_pool='avg' and fc_norm=False: forward_features ends with ``norm`` over every token, _pool averages
# them (no prefix tokens), fc_norm is the identity, ``head`` the Linear. With fc_norm left to timm (True for
# 'avg') the norm would come after the mean instead, and the model has fc_norm and no norm: a model of that
# shape, or with attn_pool ('map'), is not offered the classifier (transformers-siglip and
# transformers-siglip-head read the tower). global_pool and fc_norm show in no tensor and no config.json of
# SigLIP's says them, but the classifier does: the layout's detect is its key, and its build options are
# transformers-siglip's with global_pool='avg' and fc_norm=False. A file the layout recognises but does not
# read (another model's ``classifier``) is built as the layout that reads it asks, not as this one
# (pipeline's ``_built_as_read``); a user's own global_pool wins, and the note says which one the file needs.
_V = r"(?:vision_model\.)?"
_SIGLIP_BUILD: dict[str, dict[str, Any]] = {"vit_*_siglip_*": {"LayerNorm.eps": 1e-6, "act_layer": "gelu_tanh",
                                                                 "global_pool": "avg", "fc_norm": False}}
_CLASSIFIER_DETECT = r"classifier\.weight"  # SiglipForImageClassification's own key beside SigLIP's tower
_SIGLIP_CONFIG = {"layer_norm_eps": "LayerNorm.eps", "vision_config.layer_norm_eps": "LayerNorm.eps"}

# SiglipEncoderLayer (CLIP's, copied): q/k/v concatenated into timm's qkv, the rest renamed
_SIGLIP_FUSE = Fuse(rf"{_V}encoder\.layers\.(?P<i>\d+)\.self_attn\.(?P<part>q_proj|k_proj|v_proj)\."
                    r"(?P<kind>weight|bias)", r"blocks.\g<i>.attn.qkv.\g<kind>", ("q_proj", "k_proj", "v_proj"))
_SIGLIP_LAYER = rf"{_V}encoder\.layers\.(\d+)"
_SIGLIP_RENAMES: tuple[Rename, ...] = (
    Rename(rf"{_SIGLIP_LAYER}\.self_attn\.out_proj\.(.+)", r"blocks.\1.attn.proj.\2"),
    Rename(rf"{_SIGLIP_LAYER}\.layer_norm([12])\.(.+)", r"blocks.\1.norm\2.\3"),
    Rename(rf"{_SIGLIP_LAYER}\.mlp\.(fc[12])\.(.+)", r"blocks.\1.mlp.\2.\3"),
    Rename(rf"{_V}embeddings\.patch_embedding\.(weight|bias)", r"patch_embed.proj.\1"),
    Rename(rf"{_V}embeddings\.position_embedding\.weight", "pos_embed"),  # [N, D]; timm's [1, N, D]
    Rename(rf"{_V}post_layernorm\.(.+)", r"norm.\1"),
    Rename(r"classifier\.(weight|bias)", r"head.\1"),
)


def _taken(key: str) -> Recipe:
    return lambda tensors: tensors[key]


def _reshaped(key: str, shape: Shape) -> Recipe:
    return lambda tensors: tensors[key].reshape(shape)


def _concatenated(keys: tuple[str, ...]) -> Recipe:
    def cat(tensors: Mapping[str, Any]) -> Any:
        import torch

        return torch.cat([tensors[k] for k in keys], dim=0)

    return cat


def _siglip_classifier(checkpoint: Mapping[str, Shape], model: Mapping[str, Shape]) -> Conversion | None:
    """SiglipForImageClassification's tower and ``classifier`` into timm's vit_*_siglip_* built with
    global_pool='avg' and fc_norm=False: the tower as transformers-siglip reads it (q, k and v concatenated,
    position_embedding given timm's leading 1), ``classifier`` -> ``head``. The tower's attention-pooling
    head (``vision_model.head.*``), which the classifier's forward never runs, is dropped and the report
    says so. None for a file without the classifier, or a model that pools otherwise (attn_pool, fc_norm)
    or has no Linear head of the classifier's width (num_classes=0): the tower layouts read it."""
    classifier = checkpoint.get("classifier.weight")
    head = model.get("head.weight")
    if classifier is None or len(classifier) != 2 or "classifier.bias" not in checkpoint or head is None \
            or "head.bias" not in model or tuple(head[1:]) != tuple(classifier[1:]) or "norm.weight" not in model \
            or any(k.startswith(("attn_pool.", "fc_norm.")) for k in model):
        return None
    shapes: dict[str, Shape] = {}
    sources: dict[str, tuple[str, ...]] = {}
    recipes: dict[str, Recipe] = {}
    same: set[str] = set()
    fused = fused_parts(checkpoint, [_SIGLIP_FUSE])
    if fused is None:
        return None
    absorbed = {k for _, keys in fused.values() for k in keys}
    for key, shape in checkpoint.items():
        if key in absorbed:
            continue
        name = next((new for rule in _SIGLIP_RENAMES if (new := rule.rename(key)) is not None), None)
        if name is None:
            continue  # the unused attention-pooling head, position_ids of older files: dropped, and reported
        target = model.get(name)
        if target is not None and tuple(target) != tuple(shape) and [d for d in target if d != 1] == \
                [d for d in shape if d != 1]:
            shapes[name], recipes[name] = tuple(target), _reshaped(key, tuple(target))
        else:  # as it is (a shape the model does not have stays, and the plan refuses the conversion)
            shapes[name], recipes[name] = tuple(shape), _taken(key)
            same.add(name)
        sources[name] = (key,)
    for joined, (rule, keys) in fused.items():
        joined_shape = rule.fuse_shape([tuple(checkpoint[k]) for k in keys])
        if joined_shape is None:
            return None
        shapes[joined], sources[joined], recipes[joined] = joined_shape, keys, _concatenated(keys)

    def apply(tensors: Mapping[str, Any]) -> dict[str, Any]:
        return {key: recipe(tensors) for key, recipe in recipes.items()}

    return Conversion(name="transformers-siglip-classifier's conversion", shapes=shapes, sources=sources,
                      apply=apply, same=frozenset(same))


TRANSFORMERS_SIGLIP_CLASSIFIER = Layout(
    name="transformers-siglip-classifier",
    family="timm",
    detect=_CLASSIFIER_DETECT,
    rules=(),  # the conversion names every tensor
    convert=_siglip_classifier,
    description="Hugging Face transformers SiglipForImageClassification, e.g. a fine-tuned "
                "google/siglip-base-patch16-224 (into timm's vit_*_siglip_*, built as transformers-siglip with "
                "global_pool='avg' and fc_norm=False: the mean of the post-normed tokens its classifier reads); "
                "vision_model.encoder.layers.N -> blocks.N, q_proj+k_proj+v_proj -> attn.qkv (concatenated), "
                "out_proj -> attn.proj, layer_norm1 and 2 -> norm1 and 2, embeddings -> pos_embed and patch_embed, "
                "post_layernorm -> norm, classifier -> head, vision_model.head dropped (never run)",
    zoo="transformers",
    build_options=_SIGLIP_BUILD,
    config_options=_SIGLIP_CONFIG,
)


# -- Hiera ---------------------------------------------------------------------------------------------
# models/hiera/modeling_hiera.py against timm/models/hiera.py (both ported from facebookresearch/hiera, whose
# names timm keeps: its checkpoint_filter_fn only renames the head). HieraEmbeddings' patch_embeddings.projection
# and position_embeddings [1, N, D] are timm's patch_embed.proj and pos_embed (sep_pos_embed=False); HieraStage
# S's layers are timm's one flat ``blocks`` list, counted on across stages; a HieraLayer is layernorm_before,
# proj (a stage's first layer, where the width grows), attn.qkv, attn.proj, layernorm_after, mlp.fc1/fc2: timm's
# HieraBlock norm1, proj, attn, norm2, mlp, the same unrolled token order and mask-unit attention. HieraPooler
# averages the tokens, then ``layernorm``: timm's NormClassifierHead (global_pool='avg') head.norm after the
# mean, then ``classifier`` as head.fc. Every LayerNorm takes config.layer_norm_eps (1e-6, timm's). The heads
# per stage (HieraConfig.num_heads, a list: (1, 2, 4, 8) in every facebook/hiera-*-hf config) show in no
# tensor: timm's num_heads=1 and head_mul=2 give the same; a config with other heads would need them passed.
# HieraForPreTraining (its encoder_norm over the tokens, decoder and multi-scale fusion heads) is another
# network: its encoder loads, the rest is reported unused.
_HIERA = r"(?:hiera\.)?"

TRANSFORMERS_HIERA = Layout(
    name="transformers-hiera",
    family="timm",
    # Hiera's stage-nested ViT-style names: ViT's blocks are encoder.layer.N, Swin's encoder.layers.N.blocks.M
    detect=rf"{_HIERA}encoder\.stages\.0\.layers\.0\.layernorm_before\.weight",
    description="Hugging Face transformers HieraForImageClassification / HieraModel, e.g. "
                "facebook/hiera-tiny-224-in1k-hf (into timm's hiera_*), built with its config.json's layer_norm_eps; "
                "hiera.encoder.stages.S.layers.L -> blocks.N (counted on across stages), layernorm_before and "
                "layernorm_after -> norm1 and norm2, hiera.embeddings -> patch_embed and pos_embed, "
                "hiera.pooler.layernorm -> head.norm, classifier -> head.fc",
    zoo="transformers",
    build_options={"hiera_*": {"LayerNorm.eps": 1e-6}},
    config_options={"layer_norm_eps": "LayerNorm.eps"},
    rules=(
        Renumber(rf"{_HIERA}encoder\.stages\.(\d+)\.layers\.(\d+)", "blocks.{}"),
        Rename(r"(blocks\.\d+)\.layernorm_before\.(.+)", r"\1.norm1.\2"),
        Rename(r"(blocks\.\d+)\.layernorm_after\.(.+)", r"\1.norm2.\2"),
        Rename(rf"{_HIERA}embeddings\.patch_embeddings\.projection\.(.+)", r"patch_embed.proj.\1"),
        Rename(rf"{_HIERA}embeddings\.position_embeddings", "pos_embed"),
        Rename(rf"{_HIERA}pooler\.layernorm\.(.+)", r"head.norm.\1"),
        Rename(r"classifier\.(weight|bias)", r"head.fc.\1"),
    ),
)


@hookimpl
def zooadapt_register_layouts(register):  # type: ignore[no-untyped-def]
    for layout in (TRANSFORMERS_SIGLIP_CLASSIFIER, TRANSFORMERS_HIERA):
        register(layout)

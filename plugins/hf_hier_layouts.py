"""Hugging Face transformers' hierarchical vision models, read into timm's: Swin v2, PVT v2, MobileViT,
PoolFormer, LeViT, FocalNet.

Each layout is the rename table between a transformers image model's files and the timm
architecture that computes the same network, written from the transformers modeling file named
above it (``transformers/models/<name>/modeling_<name>.py``) and timm's (``timm/models/<name>.py``,
whose ``checkpoint_filter_fn`` names the original repositories' tensors), as ``hf_vit_layouts.py``
does for the vision transformers. Files as the Hub holds them and as ``save_pretrained`` writes them
are read; transformers 5 keeps these models' names in memory (its ``conversion_mapping.py`` renames
none of them), so a ``state_dict()`` is the same file. Each ``detect`` names a key only its model's
files hold, so a layout's build options never reach another model's file. Hyperparameters no tensor
shows (a LayerNorm's eps, Swin v2's window size) are declared as build options and read from the
file's ``config.json`` where it has one. tests/test_transformers_hier.py compares outputs with
transformers' own forward on the same seeded weights.
"""

from __future__ import annotations

from zooadapt.plugin_api import Drop, Fuse, Layout, Rename, Renumber, Reshape, hookimpl

# -- Swin v2 ---------------------------------------------------------------------------------------
# models/swinv2/modeling_swinv2.py against timm/models/swin_transformer_v2.py. As in Swin v1
# (hf_vit_layouts.py), Swinv2PatchMerging (``downsample``) ends stage N where timm's PatchMerging
# starts stage N+1, both concatenating the 2x2 neighbours in the same order. Swinv2SelfAttention has
# query (bias), key (no bias) and value (bias): timm's one bias-free qkv with q_bias and v_bias (k_bias
# a zero buffer), as in BEiT; continuous_position_bias_mlp is timm's cpb_mlp, logit_scale the same.
# Both blocks are res-post-norm (x + norm1(attn(x)), x + norm2(mlp(x))). The window size shows in
# no tensor (the position bias is an MLP of the coordinates): it is a build option, read from the
# config.json's window_size; pretrained_window_sizes (the window each stage was pretrained with,
# which scales the bias MLP's coordinates) from its list, else the architecture's own: (0, 0, 0, 0)
# but for timm's *_window12to* (12, 12, 12, 6), as in Microsoft's configs. The blocks' and the final
# LayerNorm take config.layer_norm_eps, the embedding's and the merging's 1e-5, as in Swin v1: the
# Hub's configs (and transformers' default) give timm's 1e-5.
# transformers adds the shifted windows' mask (-100) twice, timm once: the masked scores' softmax
# weights are below 1e-40 either way. Swinv2ForMaskedImageModeling's mask_token is not the
# classifier's network (dropped); use_absolute_embeddings (False in every Hub config) has no timm
# counterpart and stays unread.
_SWINV2 = r"(?:swinv2\.)?"
_SWINV2_BLOCK = rf"{_SWINV2}encoder\.layers\.(\d+)\.blocks\.(\d+)"

TRANSFORMERS_SWINV2 = Layout(
    name="transformers-swinv2",
    family="timm",
    # Swin v2's continuous position bias (Swin v1's blocks hold a relative_position_bias_table;
    # Swin2SR's are encoder.stages.N.layers.M)
    detect=rf"{_SWINV2}encoder\.layers\.0\.blocks\.0\.attention\.self\.continuous_position_bias_mlp\.0\.weight",
    description="Hugging Face transformers Swinv2ForImageClassification / Swinv2Model, e.g. "
                "microsoft/swinv2-tiny-patch4-window8-256 (into timm's swinv2_*), built with its config.json's "
                "window_size and pretrained_window_sizes; swinv2.encoder.layers.N.downsample -> "
                "layers.N+1.downsample, layers.N.blocks.M -> layers.N.blocks.M, query+key+value weights -> "
                "attn.qkv (concatenated), query and value bias -> "
                "attn.q_bias and v_bias, continuous_position_bias_mlp -> attn.cpb_mlp, layernorm_before and "
                "layernorm_after -> norm1 and norm2, swinv2.embeddings -> patch_embed, swinv2.layernorm -> norm, "
                "classifier -> head.fc",
    zoo="transformers",
    build_options={
        # the architectures' own pretrained_window_sizes, unless the config.json gives others
        "swinv2_*_window*": {"pretrained_window_sizes": (0, 0, 0, 0)},
        "swinv2_*_window12to*": {"pretrained_window_sizes": (12, 12, 12, 6)},
        **{f"swinv2_*_window{w}_*": {"window_size": size}
           for w, size in (("8", 8), ("16", 16), ("12", 12), ("12to16", 16), ("12to24", 24))}},
    config_options={"window_size": "window_size", "pretrained_window_sizes": "pretrained_window_sizes"},
    rules=(
        Renumber(rf"{_SWINV2}encoder\.layers\.(\d+)\.downsample", "layers.{}.downsample", start=1),
        Fuse(rf"{_SWINV2}encoder\.layers\.(?P<s>\d+)\.blocks\.(?P<b>\d+)\.attention\.self\.(?P<part>query|key|value)"
             r"\.weight", r"layers.\g<s>.blocks.\g<b>.attn.qkv.weight", ("query", "key", "value")),
        Rename(rf"{_SWINV2_BLOCK}\.attention\.self\.query\.bias", r"layers.\1.blocks.\2.attn.q_bias"),
        Rename(rf"{_SWINV2_BLOCK}\.attention\.self\.value\.bias", r"layers.\1.blocks.\2.attn.v_bias"),
        *(Rename(rf"{_SWINV2_BLOCK}\.{hf}", rf"layers.\1.blocks.\2.{timm}") for hf, timm in (
            (r"attention\.self\.continuous_position_bias_mlp\.(\d)\.(.+)", r"attn.cpb_mlp.\3.\4"),
            (r"attention\.self\.logit_scale", "attn.logit_scale"),
            (r"attention\.output\.dense\.(.+)", r"attn.proj.\3"), (r"intermediate\.dense\.(.+)", r"mlp.fc1.\3"),
            (r"output\.dense\.(.+)", r"mlp.fc2.\3"), (r"layernorm_before\.(.+)", r"norm1.\3"),
            (r"layernorm_after\.(.+)", r"norm2.\3"))),
        Drop(rf"{_SWINV2_BLOCK}\.attention\.self\.(?:relative_coords_table|relative_position_index)"),  # buffers
        Rename(rf"{_SWINV2}embeddings\.patch_embeddings\.projection\.(.+)", r"patch_embed.proj.\1"),
        Rename(rf"{_SWINV2}embeddings\.norm\.(.+)", r"patch_embed.norm.\1"),
        Drop(rf"{_SWINV2}embeddings\.mask_token"),  # masked-image pretraining only
        Rename(rf"{_SWINV2}layernorm\.(.+)", r"norm.\1"),
        Rename(r"classifier\.(weight|bias)", r"head.fc.\1"),
    ),
)


# -- PVT v2 ----------------------------------------------------------------------------------------
# models/pvt_v2/modeling_pvt_v2.py against timm/models/pvt_v2.py. PvtV2EncoderLayer N is
# patch_embedding (an overlapping strided convolution and a LayerNorm), blocks, layer_norm: timm's
# patch_embed (stage 0) or stages.N.downsample, then stages.N.blocks and stages.N.norm.
# PvtV2SelfAttention's query is timm's q; key and value are concatenated into timm's kv;
# spatial_reduction and layer_norm are timm's sr and norm. PvtV2ConvFeedForwardNetwork is dense1,
# (ReLU when linear), dwconv.dwconv, act, dense2: timm's MlpWithDepthwiseConv fc1, dwconv, fc2.
# transformers builds every LayerNorm with config.layer_norm_eps (1e-6 by default and in OpenGVLab's
# configs); timm builds its blocks' and stages' norms 1e-6 but the patch embeddings' and the spatial
# reductions' 1e-5 (the original repository's): every LayerNorm is set to the config's eps, and
# linear_attention (pvt_v2_b2_li) and qkv_bias are read from the config too. The classifier averages
# the last stage's map, as timm's head does.
_PVT2 = r"(?:pvt_v2\.)?encoder\.layers\."
_PVT2_BLOCK = rf"{_PVT2}(\d+)\.blocks\.(\d+)"

TRANSFORMERS_PVT_V2 = Layout(
    name="transformers-pvt-v2",
    family="timm",
    detect=rf"{_PVT2}0\.patch_embedding\.proj\.weight",
    description="Hugging Face transformers PvtV2ForImageClassification / PvtV2Model, e.g. OpenGVLab/pvt_v2_b0 "
                "(into timm's pvt_v2_*), built with its config.json's layer_norm_eps in every LayerNorm (timm "
                "builds some with 1e-5), linear_attention and qkv_bias; pvt_v2.encoder.layers.0.patch_embedding -> "
                "patch_embed, layers.N.patch_embedding -> stages.N.downsample, layers.N.blocks.M -> "
                "stages.N.blocks.M, query -> attn.q, key+value -> attn.kv (concatenated), spatial_reduction -> "
                "attn.sr, layer_norm_1 and layer_norm_2 -> norm1 and norm2, dense1 and dense2 -> mlp.fc1 and fc2, "
                "layers.N.layer_norm -> stages.N.norm, classifier -> head",
    zoo="transformers",
    build_options={"pvt_v2_b[0-5]": {"LayerNorm.eps": 1e-6, "linear": False, "qkv_bias": True},
                   "pvt_v2_b2_li": {"LayerNorm.eps": 1e-6, "linear": True, "qkv_bias": True}},
    config_options={"layer_norm_eps": "LayerNorm.eps", "linear_attention": "linear", "qkv_bias": "qkv_bias"},
    rules=(
        Fuse(rf"{_PVT2}(?P<s>\d+)\.blocks\.(?P<b>\d+)\.attention\.(?P<part>key|value)\.(?P<kind>weight|bias)",
             r"stages.\g<s>.blocks.\g<b>.attn.kv.\g<kind>", ("key", "value")),
        Rename(rf"{_PVT2}0\.patch_embedding\.proj\.(.+)", r"patch_embed.proj.\1"),
        Rename(rf"{_PVT2}0\.patch_embedding\.layer_norm\.(.+)", r"patch_embed.norm.\1"),
        Rename(rf"{_PVT2}(\d+)\.patch_embedding\.proj\.(.+)", r"stages.\1.downsample.proj.\2"),
        Rename(rf"{_PVT2}(\d+)\.patch_embedding\.layer_norm\.(.+)", r"stages.\1.downsample.norm.\2"),
        *(Rename(rf"{_PVT2_BLOCK}\.{hf}\.(.+)", rf"stages.\1.blocks.\2.{timm}.\3") for hf, timm in (
            (r"attention\.query", "attn.q"), (r"attention\.proj", "attn.proj"),
            (r"attention\.spatial_reduction", "attn.sr"), (r"attention\.layer_norm", "attn.norm"),
            ("layer_norm_1", "norm1"), ("layer_norm_2", "norm2"), (r"mlp\.dense1", "mlp.fc1"),
            (r"mlp\.dwconv\.dwconv", "mlp.dwconv"), (r"mlp\.dense2", "mlp.fc2"))),
        Rename(rf"{_PVT2}(\d+)\.layer_norm\.(.+)", r"stages.\1.norm.\2"),
        Rename(r"classifier\.(weight|bias)", r"head.\1"),
    ),
)


# -- MobileViT -------------------------------------------------------------------------------------
# models/mobilevit/modeling_mobilevit.py against timm/models/mobilevit.py (its blocks) and
# timm/models/byobnet.py (the network: stem, stages, final_conv, head). encoder.layer.0 and 1 are
# MobileViTMobileNetLayer's inverted residuals (expand_1x1, conv_3x3, reduce_1x1: timm's
# BottleneckBlock conv1_1x1, conv2_kxk, conv3_1x1); encoder.layer.2 to 4 are MobileViTLayer:
# a downsampling_layer inverted residual (timm's stages.N.0), then conv_kxk, conv_1x1 (a bare
# convolution), the transformer (ViT's names: query+key+value -> attn.qkv), layernorm,
# conv_projection and fusion (timm's MobileVitBlock stages.N.1: conv_kxk, conv_1x1, transformer,
# norm, conv_proj, conv_fusion). Both unfold 2x2 patches in the same order and concatenate the block's
# input before its features for the fusion. Every LayerNorm takes config.layer_norm_eps (1e-5 by
# default and in Apple's configs, as timm builds). conv_1x1_exp is timm's final_conv; the classifier
# averages its map, as timm's head does.
_MVIT = r"(?:mobilevit\.)?"
_MVIT_BLOCK = rf"{_MVIT}encoder\.layer\.(\d+)"

TRANSFORMERS_MOBILEVIT = Layout(
    name="transformers-mobilevit",
    family="timm",
    # MobileViTLayer's fusion convolution (MobileViTV2's blocks have none)
    detect=rf"{_MVIT}encoder\.layer\.\d+\.fusion\.convolution\.weight",
    description="Hugging Face transformers MobileViTForImageClassification / MobileViTModel, e.g. "
                "apple/mobilevit-small (into timm's mobilevit_*), built with its config.json's layer_norm_eps; "
                "mobilevit.conv_stem -> stem, encoder.layer.N.layer.M -> stages.N.M, "
                "encoder.layer.N.downsampling_layer -> stages.N.0, the rest of encoder.layer.N -> stages.N.1, "
                "expand_1x1, conv_3x3 and reduce_1x1 -> conv1_1x1, conv2_kxk and conv3_1x1, transformer.layer.M -> "
                "transformer.M (query+key+value -> attn.qkv, concatenated), conv_projection -> conv_proj, fusion -> "
                "conv_fusion, conv_1x1_exp -> final_conv, classifier -> head.fc",
    zoo="transformers",
    build_options={"mobilevit_*": {"LayerNorm.eps": 1e-5}},
    config_options={"layer_norm_eps": "LayerNorm.eps"},
    rules=(
        Fuse(rf"{_MVIT}encoder\.layer\.(?P<s>\d+)\.transformer\.layer\.(?P<b>\d+)\.attention\.attention\."
             r"(?P<part>query|key|value)\.(?P<kind>weight|bias)", r"stages.\g<s>.1.transformer.\g<b>.attn.qkv.\g<kind>",
             ("query", "key", "value")),
        *(Rename(rf"{_MVIT_BLOCK}\.{where}\.{hf}\.{part}\.(.+)", rf"stages.\1.{block}.{timm}.{name}.\{last}")
          for where, block, last in ((r"layer\.(\d+)", r"\2", 3), ("downsampling_layer", "0", 2))
          for hf, timm in (("expand_1x1", "conv1_1x1"), ("conv_3x3", "conv2_kxk"), ("reduce_1x1", "conv3_1x1"))
          for part, name in (("convolution", "conv"), ("normalization", "bn"))),
        *(Rename(rf"{_MVIT_BLOCK}\.{hf}\.{part}\.(.+)", rf"stages.\1.1.{timm}.{name}.\2")
          for hf, timm in (("conv_kxk", "conv_kxk"), ("conv_projection", "conv_proj"), ("fusion", "conv_fusion"))
          for part, name in (("convolution", "conv"), ("normalization", "bn"))),
        Rename(rf"{_MVIT_BLOCK}\.conv_1x1\.convolution\.(.+)", r"stages.\1.1.conv_1x1.\2"),
        Rename(rf"{_MVIT_BLOCK}\.layernorm\.(.+)", r"stages.\1.1.norm.\2"),
        *(Rename(rf"{_MVIT_BLOCK}\.transformer\.layer\.(\d+)\.{hf}\.(.+)", rf"stages.\1.1.transformer.\2.{timm}.\3")
          for hf, timm in ((r"attention\.output\.dense", "attn.proj"), (r"intermediate\.dense", "mlp.fc1"),
                           (r"output\.dense", "mlp.fc2"), ("layernorm_before", "norm1"), ("layernorm_after", "norm2"))),
        Rename(rf"{_MVIT}conv_stem\.convolution\.(.+)", r"stem.conv.\1"),
        Rename(rf"{_MVIT}conv_stem\.normalization\.(.+)", r"stem.bn.\1"),
        Rename(rf"{_MVIT}conv_1x1_exp\.convolution\.(.+)", r"final_conv.conv.\1"),
        Rename(rf"{_MVIT}conv_1x1_exp\.normalization\.(.+)", r"final_conv.bn.\1"),
        Rename(r"classifier\.(weight|bias)", r"head.fc.\1"),
    ),
)


# -- PoolFormer ------------------------------------------------------------------------------------
# models/poolformer/modeling_poolformer.py against timm/models/metaformer.py (poolformer_s12 to m48, its
# MetaFormer with GroupNorm1 norms and pooling token mixers). encoder.patch_embeddings.0 is timm's stem,
# patch_embeddings.N its stages.N.downsample (the same kernels, strides and paddings, no norm);
# encoder.block.N.M is stages.N.blocks.M: before_norm and after_norm -> norm1 and norm2 (GroupNorm
# with one group, eps 1e-5 in both), output.conv1 and conv2 -> mlp.fc1 and fc2, layer_scale_1 and 2
# -> layer_scale1.scale and layer_scale2.scale. The two differ in the classifier only:
# PoolFormerForImageClassification normalises the last map with a GroupNorm over channels and
# positions, then averages it (the original repository's order); timm's head averages first, then
# normalises over the channels (LayerNorm2d, eps 1e-6), which no option changes and no weights make
# the same. So ``norm`` and ``classifier`` are not read: the backbone loads exactly with
# skip=("head",) (timm's head.norm, which no file of theirs fills, is left as built; num_classes=N
# for a new classifier), and the file's head is refused.
_POOL = r"(?:poolformer\.)?encoder\."

TRANSFORMERS_POOLFORMER = Layout(
    name="transformers-poolformer",
    family="timm",
    detect=rf"{_POOL}block\.0\.0\.before_norm\.weight",
    description="Hugging Face transformers PoolFormerModel / PoolFormerForImageClassification's backbone, e.g. "
                "sail/poolformer_s12 (into timm's poolformer_*; the classifier normalises before pooling, timm's "
                "head after, so the file's norm and classifier are not read: load the backbone with skip=('head',)); "
                "poolformer.encoder.patch_embeddings.0 -> stem, patch_embeddings.N -> stages.N.downsample, "
                "block.N.M -> stages.N.blocks.M, before_norm and after_norm -> norm1 and norm2, output.conv1 and "
                "conv2 -> mlp.fc1 and fc2, layer_scale_K -> layer_scaleK.scale",
    zoo="transformers",
    rules=(
        Rename(rf"{_POOL}patch_embeddings\.0\.projection\.(.+)", r"stem.conv.\1"),
        Rename(rf"{_POOL}patch_embeddings\.(\d+)\.projection\.(.+)", r"stages.\1.downsample.conv.\2"),
        *(Rename(rf"{_POOL}block\.(\d+)\.(\d+)\.{hf}", rf"stages.\1.blocks.\2.{timm}") for hf, timm in (
            (r"before_norm\.(.+)", r"norm1.\3"), (r"after_norm\.(.+)", r"norm2.\3"),
            (r"output\.conv([12])\.(.+)", r"mlp.fc\3.\4"), (r"layer_scale_([12])", r"layer_scale\3.scale"))),
    ),
)


# -- LeViT -----------------------------------------------------------------------------------------
# models/levit/modeling_levit.py against timm/models/levit.py. A LevitStage's ``layers`` alternate
# residual attention (module.queries_keys_values, module.projection, module.attention_biases) and
# residual MLP (module.linear_up, module.linear_down) layers, depth of each; every stage but the last
# then ends with LevitAttentionSubsample (queries, keys_values, projection, attention_biases, no
# ``module``) and one more residual MLP, which timm puts at the start of the next stage
# (stages.N+1.downsample.attn_downsample and .mlp). The attention and MLP layers are renumbered per
# stage (attention 0, 2, 4 -> blocks 0, 1, 2); the MLP numbered past the stage's blocks is the
# subsample's. MLPLayerWithBN and LevitConvEmbeddings are (linear or convolution, batch_norm):
# timm's LinearNorm and ConvNorm (linear, bn), the same eps 1e-5; both put Hardswish where the
# other does. LevitForImageClassificationWithTeacher's classifier and classifier_distill
# (batch_norm, linear) are timm's LevitDistilled head and head_dist, their logits averaged in eval
# as transformers does; a LevitForImageClassification file (one classifier) is built
# ``distilled=False`` (TRANSFORMERS_LEVIT_ONE_CLASSIFIER, below). attention_bias_idxs is a buffer
# both compute.
_LEVIT = r"(?:levit\.)?"
_LEVIT_STAGES = range(4)  # LeViT has three; the fourth's rules never match
_BN = (("linear", "linear"), ("batch_norm", "bn"))

TRANSFORMERS_LEVIT = Layout(
    name="transformers-levit",
    family="timm",
    detect=rf"{_LEVIT}patch_embeddings\.embedding_layer_1\.convolution\.weight",
    description="Hugging Face transformers LevitForImageClassificationWithTeacher / LevitForImageClassification / "
                "LevitModel, e.g. facebook/levit-128S (into timm's levit_*; a file with one classifier is built "
                "distilled=False); levit.patch_embeddings.embedding_layer_K -> stem.convK, "
                "encoder.stages.N.layers (attention, MLP, attention, MLP...) -> stages.N.blocks.M.attn and mlp, "
                "the stage's last attention subsample and MLP -> stages.N+1.downsample, queries_keys_values -> "
                "qkv, projection -> proj.ln, linear_up and linear_down -> ln1 and ln2, batch_norm -> bn, "
                "classifier and classifier_distill -> head and head_dist",
    zoo="transformers",
    rules=(
        *(Renumber(rf"{_LEVIT}encoder\.stages\.{s}\.layers\.(\d+)\.module(?=\.(?:queries_keys_values|projection|"
                   r"attention_bias))", f"stages.{s}.blocks.{{}}.attn") for s in _LEVIT_STAGES),
        *(Renumber(rf"{_LEVIT}encoder\.stages\.{s}\.layers\.(\d+)\.module(?=\.linear_(?:up|down)\.)",
                   f"stages.{s}.blocks.{{}}.feedforward") for s in _LEVIT_STAGES),
        *(Rename(rf"(stages\.\d+\.blocks\.\d+\.attn)\.{hf}\.{part}\.(.+)", rf"\1.{timm}.{name}.\2")
          for hf, timm in (("queries_keys_values", "qkv"), ("projection", "proj.ln")) for part, name in _BN),
        Rename(r"(stages\.\d+\.blocks\.\d+\.attn)\.attention_biases", r"\1.attention_biases"),
        # the MLP past the stage's blocks is its subsample's, timm's next stage's downsample.mlp
        *(Rename(rf"stages\.{s}\.blocks\.(\d+)\.feedforward\.{hf}\.{part}\.(.+)",
                 (rf"stages.{s}.blocks.\1.mlp.{timm}.{name}.\2", rf"stages.{s + 1}.downsample.mlp.{timm}.{name}.\2"))
          for s in _LEVIT_STAGES for hf, timm in (("linear_up", "ln1"), ("linear_down", "ln2")) for part, name in _BN),
        *(Rename(rf"{_LEVIT}encoder\.stages\.{s}\.layers\.\d+\.{hf}\.{part}\.(.+)",
                 rf"stages.{s + 1}.downsample.attn_downsample.{timm}.{name}.\1")
          for s in _LEVIT_STAGES for hf, timm in (("queries", "q.ln"), ("keys_values", "kv"), ("projection", "proj.ln"))
          for part, name in _BN),
        *(Rename(rf"{_LEVIT}encoder\.stages\.{s}\.layers\.\d+\.attention_biases",
                 f"stages.{s + 1}.downsample.attn_downsample.attention_biases") for s in _LEVIT_STAGES),
        Drop(rf"{_LEVIT}encoder\.stages\.\d+\.layers\.\d+\.(?:module\.)?attention_bias_idxs"),  # a buffer
        *(Rename(rf"{_LEVIT}patch_embeddings\.embedding_layer_(\d)\.{hf}\.(.+)", rf"stem.conv\1.{timm}.\2")
          for hf, timm in (("convolution", "linear"), ("batch_norm", "bn"))),
        *(Rename(rf"{hf}\.{part}\.(.+)", rf"{timm}.{name}.\1")
          for hf, timm in (("classifier", "head"), ("classifier_distill", "head_dist")) for part, name in _BN),
    ),
)

# LevitForImageClassification holds ``classifier`` alone: timm's distilled levit_* would average a
# new head_dist with it, and computes what the file does only when built with one head. No tensor
# shape says so, only the classifier_distill the file lacks: a layout of options alone (the rules
# above read the file), which transformers-levit's reading of the file lends its build. The
# architectures are timm's distilled-by-default ones of transformers' sizes (timm's levit_512,
# levit_256d... are built distilled=False already and take no such option).
TRANSFORMERS_LEVIT_ONE_CLASSIFIER = Layout(
    name="transformers-levit-one-classifier",
    family="timm",
    detect=r"classifier\.linear\.weight",
    unless=r"classifier_distill\.linear\.weight",
    description="Hugging Face transformers LevitForImageClassification (one classifier, no classifier_distill), "
                "e.g. facebook/levit-128S fine-tuned without a teacher: built distilled=False, so that its "
                "classifier is timm's one head",
    zoo="transformers",
    build_options={arch: {"distilled": False} for arch in
                   ("levit_128s", "levit_128", "levit_192", "levit_256", "levit_384", "levit_384_s8")},
    rules=(),
)


# -- FocalNet --------------------------------------------------------------------------------------
# models/focalnet/modeling_focalnet.py against timm/models/focalnet.py. As in Swin, transformers'
# ``downsample`` (FocalNetPatchEmbeddings with its norm) ends stage N where timm's Downsample starts
# stage N+1; embeddings.patch_embeddings.projection and embeddings.norm are timm's stem.proj and
# stem.norm. FocalNetModulation computes channels-last with Linear projection_in and projection_out
# where timm's FocalModulation holds 1x1 convolutions f and proj (the same values, two more dimensions
# of size 1), projection_context is h, focal_layers the same; the MLP's fc1 and fc2 are 1x1
# convolutions in timm too. gamma_1 and gamma_2 (use_layerscale) are timm's ls1.gamma and ls2.gamma.
# Every LayerNorm is config.layer_norm_eps (1e-5, timm's LayerNorm2d eps). What no tensor shows is
# read from the config.json: normalize_modulator, use_post_layernorm (the same norm1 and norm2 names,
# before or after the modulation and MLP: timm's norm1_post and norm2_post),
# use_post_layernorm_in_modulation and use_conv_embed (timm's use_overlap_down). timm's large,
# xlarge and huge architectures fix use_post_norm, use_overlap_down and layer scale themselves, as
# Microsoft's files need. A file with layer scale into an architecture without (the *_srf and
# *_lrf) holds gamma tensors the model has no place for: refused.
_FOCAL = r"(?:focalnet\.)?"
_FOCAL_BLOCK = rf"{_FOCAL}encoder\.stages\.(\d+)\.layers\.(\d+)"
_FOCAL_FLAGS = {"normalize_modulator": False, "use_post_norm_in_modulation": False}

TRANSFORMERS_FOCALNET = Layout(
    name="transformers-focalnet",
    family="timm",
    detect=rf"{_FOCAL_BLOCK}\.modulation\.projection_context\.weight",
    description="Hugging Face transformers FocalNetForImageClassification / FocalNetModel, e.g. "
                "microsoft/focalnet-tiny (into timm's focalnet_*), built with its config.json's normalize_modulator, "
                "use_post_layernorm, use_post_layernorm_in_modulation and use_conv_embed; "
                "focalnet.encoder.stages.N.downsample -> layers.N+1.downsample, stages.N.layers.M -> "
                "layers.N.blocks.M, modulation.projection_in, projection_context and projection_out -> modulation.f, "
                "h and proj (as 1x1 convolutions), gamma_1 and gamma_2 -> ls1.gamma and ls2.gamma, "
                "focalnet.embeddings -> stem, focalnet.layernorm -> norm, classifier -> head.fc",
    zoo="transformers",
    build_options={"focalnet_*_[sl]rf": {**_FOCAL_FLAGS, "use_post_norm": False, "use_overlap_down": False},
                   "focalnet_*_fl3": {"normalize_modulator": False, "use_post_norm_in_modulation": False},
                   "focalnet_*_fl4": {"normalize_modulator": False, "use_post_norm_in_modulation": False},
                   "focalnet_huge_fl[34]": {"normalize_modulator": False}},
    config_options={"normalize_modulator": "normalize_modulator", "use_post_layernorm": "use_post_norm",
                    "use_post_layernorm_in_modulation": "use_post_norm_in_modulation",
                    "use_conv_embed": "use_overlap_down"},
    rules=(
        Renumber(rf"{_FOCAL}encoder\.stages\.(\d+)\.downsample", "layers.{}.downsample", start=1),
        Rename(r"(layers\.\d+\.downsample)\.projection\.(.+)", r"\1.proj.\2"),
        *(Rename(rf"{_FOCAL_BLOCK}\.{hf}", rf"layers.\1.blocks.\2.{timm}") for hf, timm in (
            (r"modulation\.projection_in\.(.+)", r"modulation.f.\3"),
            (r"modulation\.projection_context\.(.+)", r"modulation.h.\3"),
            (r"modulation\.projection_out\.(.+)", r"modulation.proj.\3"),
            (r"modulation\.focal_layers\.(.+)", r"modulation.focal_layers.\3"),
            (r"modulation\.layernorm\.(.+)", r"modulation.norm.\3"),
            (r"mlp\.(fc[12])\.(.+)", r"mlp.\3.\4"), (r"gamma_([12])", r"ls\3.gamma"))),
        # use_post_layernorm keeps the names and moves the norms: timm's norm1_post and norm2_post
        Rename(rf"{_FOCAL_BLOCK}\.(norm[12])\.(.+)", (r"layers.\1.blocks.\2.\3.\4", r"layers.\1.blocks.\2.\3_post.\4")),
        Rename(rf"{_FOCAL}embeddings\.patch_embeddings\.projection\.(.+)", r"stem.proj.\1"),
        Rename(rf"{_FOCAL}embeddings\.norm\.(.+)", r"stem.norm.\1"),
        Drop(rf"{_FOCAL}embeddings\.mask_token"),  # masked-image pretraining only
        Rename(rf"{_FOCAL}layernorm\.(.+)", r"norm.\1"),
        Rename(r"classifier\.(weight|bias)", r"head.fc.\1"),
        Reshape(r"layers\.\d+\.blocks\.\d+\.(?:modulation\.(?:f|proj)|mlp\.fc[12])\.weight"),
    ),
)


@hookimpl
def zooadapt_register_layouts(register):  # type: ignore[no-untyped-def]
    for layout in (TRANSFORMERS_SWINV2, TRANSFORMERS_PVT_V2, TRANSFORMERS_MOBILEVIT, TRANSFORMERS_POOLFORMER,
                   TRANSFORMERS_LEVIT, TRANSFORMERS_LEVIT_ONE_CLASSIFIER, TRANSFORMERS_FOCALNET):
        register(layout)

"""Hugging Face transformers' Swin v2, PVT v2, MobileViT, PoolFormer, LeViT and FocalNet files into the timm
architectures that compute the same networks: the layouts of ``plugins/hf_hier_layouts.py``.

Each case builds transformers' own model with a small config shaped as the timm architecture (the same
shape passed to timm's builder where it takes one), seeds it, saves it with ``save_pretrained`` (the Hub's
names and a ``config.json``) and compares what the loaded timm model computes with transformers' forward
on the same input. Beside each, its neighbours: a new head (the backbone compared with transformers'
hidden state or pooled output), the headless base model, the hyperparameters only the file's config.json
says (Swin v2's window size, PVT v2's LayerNorm eps and linear attention, FocalNet's norms), and what is
refused (PoolFormer's classifier). transformers 5 renames none of these models' tensors in memory (its
``conversion_mapping.py``): a ``state_dict()`` is checked to be the saved file. Two cases run in the fast
subset; the others are marked slow.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

import zooadapt
from zooadapt.errors import IncompatibleCheckpointError

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")

# the twins' seeding, comparisons and table entry (LeViT's BatchNorm1d statistics seeded too)
from test_transformers_twins import Twin, features, image, layouts_named, logits, pooled, relative, seeded  # noqa: E402

# microsoft/swinv2-tiny-patch4-window8-256 at a quarter of the pixels: 4x4 windows (read from the config.json:
# the architecture's own is 8), the last stage one window
_SWINV2 = dict(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], image_size=128, patch_size=4, window_size=4)
_SWINV2_BUILD = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), img_size=128)
# OpenGVLab/pvt_v2_b0 is PvtV2Config's default
_PVT_TINY = dict(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 48, 64], num_attention_heads=[1, 2, 3, 4])
_PVT_TINY_BUILD = dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4))
# facebook/levit-128S (LevitConfig's default is levit-128)
_LEVIT = dict(hidden_sizes=[128, 256, 384], num_attention_heads=[4, 6, 8], depths=[2, 3, 4], key_dim=[16, 16, 16],
              mlp_ratio=[2, 2, 2], attention_ratio=[2, 2, 2])
# FocalNetConfig's default is microsoft/focalnet-tiny (focalnet_tiny_srf); every flag the config.json carries, set
# the other way, into the large-receptive-field architecture
_FOCAL_FLAGS = dict(use_post_layernorm=True, normalize_modulator=True, use_conv_embed=True,
                    use_post_layernorm_in_modulation=True, focal_levels=[3] * 4)

TWINS: dict[str, Twin] = {
    "swinv2": Twin("transformers-swinv2", "Swinv2ForImageClassification", "Swinv2Config", dict(_SWINV2, num_labels=10),
                   "swinv2_tiny_window8_256", _SWINV2_BUILD, 128),
    "swinv2-new-head": Twin("transformers-swinv2", "Swinv2ForImageClassification", "Swinv2Config",
                            dict(_SWINV2, num_labels=10), "swinv2_tiny_window8_256", dict(_SWINV2_BUILD, num_classes=5),
                            128, pooled("swinv2")),
    "swinv2-model": Twin("transformers-swinv2", "Swinv2Model", "Swinv2Config", _SWINV2, "swinv2_tiny_window8_256",
                         dict(_SWINV2_BUILD, num_classes=5), 128, pooled()),
    "pvt-v2-tiny": Twin("transformers-pvt-v2", "PvtV2ForImageClassification", "PvtV2Config",
                        dict(_PVT_TINY, num_labels=10), "pvt_v2_b0", _PVT_TINY_BUILD, 32),
    "pvt-v2": Twin("transformers-pvt-v2", "PvtV2ForImageClassification", "PvtV2Config", dict(num_labels=10),
                   "pvt_v2_b0", size=64),
    "pvt-v2-new-head": Twin("transformers-pvt-v2", "PvtV2ForImageClassification", "PvtV2Config", dict(num_labels=10),
                            "pvt_v2_b0", dict(num_classes=5), 64, features("pvt_v2")),
    "pvt-v2-model": Twin("transformers-pvt-v2", "PvtV2Model", "PvtV2Config", {}, "pvt_v2_b0", dict(num_classes=0), 64,
                         features()),
    # pvt_v2_b2_li's attention, read from the config.json into pvt_v2_b0's shape
    "pvt-v2-linear": Twin("transformers-pvt-v2", "PvtV2ForImageClassification", "PvtV2Config",
                          dict(num_labels=10, linear_attention=True), "pvt_v2_b0", size=64),
    # MobileViTConfig's default is apple/mobilevit-small
    "mobilevit": Twin("transformers-mobilevit", "MobileViTForImageClassification", "MobileViTConfig",
                      dict(num_labels=10), "mobilevit_s", size=64),
    "mobilevit-new-head": Twin("transformers-mobilevit", "MobileViTForImageClassification", "MobileViTConfig",
                               dict(num_labels=10), "mobilevit_s", dict(num_classes=5), 64, features("mobilevit")),
    "mobilevit-model": Twin("transformers-mobilevit", "MobileViTModel", "MobileViTConfig", {}, "mobilevit_s",
                            dict(num_classes=5), 64, pooled()),
    # apple/mobilevit-xx-small's config
    "mobilevit-xxs": Twin("transformers-mobilevit", "MobileViTForImageClassification", "MobileViTConfig",
                          dict(num_labels=10, hidden_sizes=[64, 80, 96], expand_ratio=2.0,
                               neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320]), "mobilevit_xxs", size=64),
    # sail/poolformer_s12 is PoolFormerConfig's default; timm's head normalises after pooling, the classifier before:
    # the backbone only, timm's head new (skip=("head",))
    "poolformer-model": Twin("transformers-poolformer", "PoolFormerModel", "PoolFormerConfig", {}, "poolformer_s12",
                             dict(num_classes=0, skip=("head",)), 64, features()),
    "poolformer-new-head": Twin("transformers-poolformer", "PoolFormerForImageClassification", "PoolFormerConfig",
                                dict(num_labels=10), "poolformer_s12", dict(num_classes=5, skip=("head",)), 64,
                                features("poolformer")),
    "levit": Twin("transformers-levit", "LevitForImageClassificationWithTeacher", "LevitConfig",
                  dict(_LEVIT, num_labels=10), "levit_128s"),
    "levit-new-head": Twin("transformers-levit", "LevitForImageClassificationWithTeacher", "LevitConfig",
                           dict(_LEVIT, num_labels=10), "levit_128s", dict(num_classes=5), compare=pooled("levit")),
    "levit-model": Twin("transformers-levit", "LevitModel", "LevitConfig", _LEVIT, "levit_128s", dict(num_classes=5),
                        compare=pooled()),
    "levit-one-classifier": Twin("transformers-levit", "LevitForImageClassification", "LevitConfig",
                                 dict(_LEVIT, num_labels=10), "levit_128s", dict(distilled=False)),
    # Linear layers in transformers, 1x1 convolutions in timm: sums in another order, a few 1e-6
    "focalnet": Twin("transformers-focalnet", "FocalNetForImageClassification", "FocalNetConfig", dict(num_labels=10),
                     "focalnet_tiny_srf", size=64),
    "focalnet-new-head": Twin("transformers-focalnet", "FocalNetForImageClassification", "FocalNetConfig",
                              dict(num_labels=10), "focalnet_tiny_srf", dict(num_classes=5), 64, pooled("focalnet")),
    "focalnet-model": Twin("transformers-focalnet", "FocalNetModel", "FocalNetConfig", {}, "focalnet_tiny_srf",
                           dict(num_classes=5), 64, pooled()),
    "focalnet-flags": Twin("transformers-focalnet", "FocalNetForImageClassification", "FocalNetConfig",
                           dict(_FOCAL_FLAGS, num_labels=10), "focalnet_tiny_lrf", size=64),
}
FAST: set[str] = set()  # each builds and saves a transformers model (seconds): all slow; the fast cases are below


def cases(names: list[str]) -> list[Any]:
    return [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in names]


_saved: dict[tuple[str, str], tuple[nn.Module, Path]] = {}


def saved(name: str, tmp_path_factory: pytest.TempPathFactory, **config: Any) -> tuple[nn.Module, Path]:
    """transformers' model of ``TWINS[name]`` (its config updated by ``config``) and the directory
    ``save_pretrained`` wrote it to (the Hub's names, a config.json), once per session."""
    twin = TWINS[name]
    key = (name, json.dumps(config, sort_keys=True))
    if key not in _saved:
        cfg = getattr(transformers, twin.config_class)(**{**twin.config, **config})
        model = seeded(getattr(transformers, twin.model_class)(cfg), sum(map(ord, twin.model_class)))
        path = tmp_path_factory.mktemp(re.sub(r"\W", "-", name)) / "dir"
        model.save_pretrained(path)
        _saved[key] = model, path
    return _saved[key]


def load(name: str, path: Path, **options: Any) -> nn.Module:
    twin = TWINS[name]
    return zooadapt.load(twin.arch, weights=path, **{**twin.build, **options}).eval()


# -- outputs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", cases(list(TWINS)))
def test_the_timm_twin_computes_what_transformers_computes(name, tmp_path_factory):
    twin = TWINS[name]
    hf, path = saved(name, tmp_path_factory)
    model = load(name, path)
    plan = model.zooadapt.report.plan
    assert twin.layout in layouts_named(model), plan.notes
    assert plan.fits and not plan.missing
    if twin.build.get("num_classes") is None:  # the file's own head, every tensor read
        assert plan.coverage == 1.0 and not plan.new_head and not plan.unexpected, plan.unexpected
    else:
        assert plan.backbone_coverage == 1.0
    x = image(twin.size)
    with torch.no_grad():
        ours, theirs = twin.compare(hf, model, x)
    assert relative(ours, theirs) < twin.rel


@pytest.mark.slow
@pytest.mark.parametrize("name", ["swinv2-new-head", "pvt-v2-new-head", "mobilevit-new-head", "levit-new-head",
                                  "focalnet-new-head"])
def test_a_new_head_replaces_the_classifier_and_keeps_the_backbone(name, tmp_path_factory):
    _, path = saved(name, tmp_path_factory)
    model = load(name, path)
    plan = model.zooadapt.report.plan
    assert plan.fits and plan.backbone_coverage == 1.0 and not plan.missing and not plan.unexpected
    assert plan.new_head and all(k.startswith(("head.", "head_dist.")) for k in plan.new_head)
    with torch.no_grad():
        assert model(image(TWINS[name].size)).shape == (2, 5)
    assert {m.checkpoint_key for m in plan.dropped} and all(m.checkpoint_key.startswith("classifier")
                                                            for m in plan.dropped)


# -- the file's config ----------------------------------------------------------------------------


@pytest.mark.slow
def test_swinv2_takes_its_window_size_from_the_config(tmp_path_factory, tmp_path):
    """No Swin v2 tensor shows the window (the position bias is an MLP of the coordinates): the
    config.json's 4 builds swinv2_tiny_window8_256 with 4x4 windows; without it, the architecture's 8
    is built, and computes something else."""
    hf, path = saved("swinv2", tmp_path_factory)
    model = load("swinv2", path)
    assert {b.window_size for b in model.modules() if hasattr(b, "window_area")} == {(4, 4)}
    assert any("window_size=4 (its config.json's window_size)" in n for n in model.zooadapt.report.plan.notes)
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    alone = load("swinv2", tmp_path / "model.safetensors")
    assert {b.window_size for b in alone.modules() if hasattr(b, "window_area")} == {(8, 8), (4, 4)}  # clamped at 4x4
    with torch.no_grad():
        assert relative(*logits(hf, alone, image(128))) > 1e-3


def test_swinv2_takes_its_pretrained_window_sizes_from_the_config(tmp_path_factory):
    """A Swin v2 fine-tuned at a larger window scales its position-bias coordinates by the window it
    was pretrained with: a list in the config.json, in no tensor. Read from there, the model computes
    what transformers' does; the architecture's own (0, 0, 0, 0) computes something else."""
    hf, path = saved("swinv2", tmp_path_factory, pretrained_window_sizes=[2, 3, 2, 2])
    model = load("swinv2", path)
    assert [b.attn.pretrained_window_size for b in model.modules() if hasattr(b, "window_area")] == \
        [(2, 2)] * 2 + [(3, 3)] * 2 + [(2, 2)] * 4
    assert any("pretrained_window_sizes=(2, 3, 2, 2) (its config.json's pretrained_window_sizes)" in n
               for n in model.zooadapt.report.plan.notes), model.zooadapt.report.plan.notes
    with torch.no_grad():
        assert relative(*logits(hf, model, image(128))) < 1e-5
        assert relative(*logits(hf, load("swinv2", path, pretrained_window_sizes=(0, 0, 0, 0)), image(128))) > 1e-3


@pytest.mark.slow
def test_pvt_v2_takes_every_layernorms_eps_from_the_config(tmp_path_factory):
    """transformers builds every PVT v2 LayerNorm with config.layer_norm_eps, timm some with 1e-5:
    set on all, and a large one (1e-2) followed."""
    hf, path = saved("pvt-v2", tmp_path_factory)
    assert {m.eps for m in load("pvt-v2", path).modules() if isinstance(m, nn.LayerNorm)} == {1e-6}
    hf, path = saved("pvt-v2", tmp_path_factory, layer_norm_eps=1e-2)
    model = load("pvt-v2", path)
    assert {m.eps for m in model.modules() if isinstance(m, nn.LayerNorm)} == {1e-2}
    with torch.no_grad():
        assert relative(*logits(hf, model, image(64))) < 1e-5


# -- what is refused ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_poolformer_classifier_is_refused(tmp_path_factory):
    """PoolFormerForImageClassification normalises the map over channels and positions, then pools;
    timm's head pools, then normalises over channels. The file's norm and classifier are not read:
    loading them as timm's head would compute something else, so the load is refused and says how
    to load the backbone."""
    _, path = saved("poolformer-new-head", tmp_path_factory)
    with pytest.raises(IncompatibleCheckpointError, match="head.norm"):
        zooadapt.load("poolformer_s12", weights=path)
    model = load("poolformer-new-head", path)
    assert {m.checkpoint_key for m in model.zooadapt.report.plan.unexpected} == {
        "norm.weight", "norm.bias", "classifier.weight", "classifier.bias"}


@pytest.mark.slow
def test_a_levit_with_one_classifier_is_built_with_one_head(tmp_path_factory):
    """LevitForImageClassification has no distillation classifier: timm's default levit_128s
    (distilled) would average a new head_dist with it. The file's keys say so (classifier, no
    classifier_distill): it is built distilled=False and computes what transformers' does; a user's
    own distilled=True gets the file's classifier nowhere, and the report says why."""
    hf, path = saved("levit-one-classifier", tmp_path_factory)
    model = zooadapt.load("levit_128s", weights=path).eval()
    plan = model.zooadapt.report.plan
    assert not plan.new_head and plan.coverage == 1.0 and not hasattr(model, "head_dist")
    assert any("distilled=False" in n and "transformers-levit-one-classifier" in n for n in plan.notes), plan.notes
    with torch.no_grad():
        assert relative(*logits(hf, model, image(224))) < 1e-5
    overruled = zooadapt.load("levit_128s", weights=path, distilled=True).zooadapt.report.plan
    assert overruled.new_head and any(k.startswith("head_dist.") for k in overruled.new_head)
    assert any("distilled=True" in n for n in overruled.notes), overruled.notes
    _, teacher = saved("levit", tmp_path_factory)  # the distilled file stays distilled
    assert hasattr(zooadapt.load("levit_128s", weights=teacher), "head_dist")


def _swinv2_names(dims: tuple[int, ...] = (16, 32), heads: tuple[int, ...] = (1, 2), classes: int = 10,
                  prefix: str = "swinv2.") -> dict[str, tuple[int, ...]]:
    """A Swinv2ForImageClassification file's names and shapes (one block a stage), as save_pretrained writes
    them (checked against transformers' own by the slow cases): written out, so that the fast tests need
    no transformers model (building one imports its modeling file, about a second)."""
    out: dict[str, tuple[int, ...]] = {f"{prefix}embeddings.patch_embeddings.projection.weight": (dims[0], 3, 4, 4),
                                       f"{prefix}embeddings.patch_embeddings.projection.bias": (dims[0],),
                                       f"{prefix}embeddings.norm.weight": (dims[0],),
                                       f"{prefix}embeddings.norm.bias": (dims[0],)}
    for s, (d, h) in enumerate(zip(dims, heads)):
        block = f"{prefix}encoder.layers.{s}.blocks.0."
        out.update({f"{block}attention.self.{p}.weight": (d, d) for p in ("query", "key", "value")})
        out.update({f"{block}attention.self.{p}.bias": (d,) for p in ("query", "value")})
        out.update({f"{block}attention.self.logit_scale": (h, 1, 1),
                    f"{block}attention.self.continuous_position_bias_mlp.0.weight": (512, 2),
                    f"{block}attention.self.continuous_position_bias_mlp.0.bias": (512,),
                    f"{block}attention.self.continuous_position_bias_mlp.2.weight": (h, 512),
                    f"{block}attention.output.dense.weight": (d, d), f"{block}attention.output.dense.bias": (d,),
                    f"{block}intermediate.dense.weight": (4 * d, d), f"{block}intermediate.dense.bias": (4 * d,),
                    f"{block}output.dense.weight": (d, 4 * d), f"{block}output.dense.bias": (d,)})
        out.update({f"{block}{norm}.{kind}": (d,) for norm in ("layernorm_before", "layernorm_after")
                    for kind in ("weight", "bias")})
        if s < len(dims) - 1:
            out.update({f"{prefix}encoder.layers.{s}.downsample.reduction.weight": (2 * d, 4 * d),
                        f"{prefix}encoder.layers.{s}.downsample.norm.weight": (2 * d,),
                        f"{prefix}encoder.layers.{s}.downsample.norm.bias": (2 * d,)})
    out.update({f"{prefix}layernorm.weight": (dims[-1],), f"{prefix}layernorm.bias": (dims[-1],),
                "classifier.weight": (classes, dims[-1]), "classifier.bias": (classes,)})
    return out


@pytest.mark.slow
def test_the_written_out_swinv2_names_are_transformers(tmp_path_factory):
    from safetensors import safe_open

    hf = transformers.Swinv2ForImageClassification(transformers.Swinv2Config(**_SW, num_labels=10))
    path = tmp_path_factory.mktemp("swinv2-names") / "dir"
    hf.save_pretrained(path)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()} == _swinv2_names()  # noqa: SIM118


def test_every_swinv2_tensor_finds_its_place_in_timms_model():
    """The Swin v2 table on names and shapes (timm's model on the meta device): query, key and value
    weights concatenated, the biases apart, each merging moved to the next stage, the classifier
    timm's head. The outputs: the slow cases above."""
    from zooadapt.plugins.hf_hier_layouts import TRANSFORMERS_SWINV2

    from zooadapt.plugin_api import make_plan

    with torch.device("meta"):
        model = timm.create_model("swinv2_tiny_window8_256", embed_dim=16, depths=(1, 1), num_heads=(1, 2),
                                  img_size=32, window_size=4, num_classes=10)
    plan = make_plan(_swinv2_names(), {k: tuple(v.shape) for k, v in model.state_dict().items()},
                     rules=TRANSFORMERS_SWINV2.rules, head="head")
    assert plan.fits and plan.coverage == 1.0 and not plan.missing and not plan.unexpected
    placed = {m.checkpoint_key: m.model_key for m in plan.mappings}
    assert placed["swinv2.encoder.layers.0.downsample.reduction.weight"] == "layers.1.downsample.reduction.weight"
    assert placed["swinv2.encoder.layers.1.blocks.0.attention.self.value.bias"] == "layers.1.blocks.0.attn.v_bias"


# -- transformers 5's own names ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["swinv2", "pvt-v2", "mobilevit", "poolformer-new-head", "levit", "focalnet"])
def test_transformers_5_keeps_the_saved_names_in_memory(name, tmp_path_factory):
    """conversion_mapping.py renames none of these models: a state_dict() is the saved file's names."""
    from safetensors import safe_open

    hf, path = saved(name, tmp_path_factory)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(hf.state_dict())


# -- detect: each layout's key is its own model's ---------------------------------------------------

_OWN = {
    "transformers-swinv2": {"Swinv2ForImageClassification", "Swinv2Model"},
    "transformers-pvt-v2": {"PvtV2ForImageClassification", "PvtV2Model"},
    "transformers-mobilevit": {"MobileViTForImageClassification", "MobileViTModel"},
    "transformers-poolformer": {"PoolFormerForImageClassification", "PoolFormerModel"},
    "transformers-levit": {"LevitForImageClassificationWithTeacher", "LevitForImageClassification", "LevitModel"},
    "transformers-levit-one-classifier": {"LevitForImageClassification"},  # options alone: distilled=False
    "transformers-focalnet": {"FocalNetForImageClassification", "FocalNetModel"},
}

# tiny configs of these classes and of the transformers image classes other layouts read
_V = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
_SW = dict(embed_dim=16, depths=[1, 1], num_heads=[1, 2], image_size=32, patch_size=4, window_size=4)
_C = dict(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 32, 32])
_CLASSES: dict[str, tuple[str, dict[str, Any]]] = {
    "Swinv2ForImageClassification": ("Swinv2Config", _SW), "Swinv2Model": ("Swinv2Config", _SW),
    "PvtV2ForImageClassification": ("PvtV2Config", _PVT_TINY), "PvtV2Model": ("PvtV2Config", _PVT_TINY),
    "MobileViTForImageClassification": ("MobileViTConfig", {}), "MobileViTModel": ("MobileViTConfig", {}),
    "PoolFormerForImageClassification": ("PoolFormerConfig", {}), "PoolFormerModel": ("PoolFormerConfig", {}),
    "LevitForImageClassificationWithTeacher": ("LevitConfig", {}), "LevitForImageClassification": ("LevitConfig", {}),
    "LevitModel": ("LevitConfig", {}), "FocalNetForImageClassification": ("FocalNetConfig", {}),
    "FocalNetModel": ("FocalNetConfig", {}),
    "ViTModel": ("ViTConfig", _V), "DeiTModel": ("DeiTConfig", _V), "Dinov2Model": ("Dinov2Config", _V),
    "BeitModel": ("BeitConfig", _V), "SwinModel": ("SwinConfig", _SW),
    "SwinForImageClassification": ("SwinConfig", _SW),
    "DonutSwinModel": ("DonutSwinConfig", _SW), "ConvNextModel": ("ConvNextConfig", _C),
    "ConvNextV2Model": ("ConvNextV2Config", _C), "ResNetModel": ("ResNetConfig", _C),
    "MobileNetV2Model": ("MobileNetV2Config", {}), "MobileNetV1Model": ("MobileNetV1Config", {}),
    "MobileViTV2Model": ("MobileViTV2Config", {}), "Swin2SRModel": ("Swin2SRConfig", dict(embed_dim=16, depths=[1],
                                                                                           num_heads=[1])),
    "PvtModel": ("PvtConfig", {}), "SegformerModel": ("SegformerConfig", {}), "CvtModel": ("CvtConfig", {}),
    "RegNetModel": ("RegNetConfig", {}), "BitModel": ("BitConfig", {}),
    "EfficientNetModel": ("EfficientNetConfig", {}),
}


def _keys(cls: str) -> list[set[str]]:
    """The class's tensor names: its state_dict() (transformers 5's, here the saved names too) and the
    base model's prefix-free ones. Built on the meta device: names only."""
    config, options = _CLASSES[cls]
    with torch.device("meta"):
        model = getattr(transformers, cls)(getattr(transformers, config)(**options))
    names = set(model.state_dict())
    prefix = getattr(model, "base_model_prefix", "")
    return [names, {k[len(prefix) + 1:] if k.startswith(prefix + ".") else k for k in names}]


def _lends(layout: Any) -> bool:
    """Whether a layout's detect names files by their keys: a conversion without build options
    (timm's own checkpoint filters, ``(?s).+``) recognises a file only by converting it. The SigLIP
    classifier's detect is any transformers ``classifier``: its build options are for vit_*_siglip_*
    alone, which none of these files loads into (and the layout that reads a file builds it)."""
    return (layout.convert is None or bool(layout.build_options)) and layout.name != "transformers-siglip-classifier"


def test_each_detect_matches_its_own_models_files_only():
    """Build options come from every layout whose detect matches a file: a key another model's files
    hold would build that model with this one's options. Swin v1 and v2 share most names: Swin v2's
    files (the Hub's, the base model's without prefix) are read by transformers-swinv2 alone, and Swin
    v1's (its relative position table, in transformers 4's and 5's names) not by it. Every class
    against every layout: the slow test below."""
    from zooadapt.host.layouts import registered_layouts

    layouts = [lay for lay in registered_layouts() if _lends(lay)]
    assert set(_OWN) <= {lay.name for lay in layouts}
    v2 = [set(_swinv2_names()), {k.removeprefix("swinv2.") for k in _swinv2_names()}]
    block = "swin.encoder.layers.0.blocks.0"
    v1 = [{"swin.embeddings.patch_embeddings.projection.weight", "swin.embeddings.norm.weight",
           f"{block}.attention.self.query.weight", f"{block}.attention.self.relative_position_bias_table",
           f"{block}.layernorm_before.weight", "swin.encoder.layers.0.downsample.reduction.weight"},
          {f"{block}.attention.q_proj.weight", f"{block}.attention.relative_position_bias.relative_position_bias_table",
           f"{block}.layernorm_before.weight", f"{block}.mlp.fc1.weight"}]
    for sets, expected in ((v2, {"transformers-swinv2"}), (v1, {"transformers-swin"})):
        for keys in sets:
            assert {lay.name for lay in layouts if lay.matches(keys)} == expected


@pytest.mark.slow
@pytest.mark.parametrize("cls", list(_CLASSES))
def test_a_transformers_image_model_is_read_by_its_own_layout_only(cls):
    """Every registered layout's detect against every class's names: these six match their own
    classes only, and no other layout matches theirs."""
    from zooadapt.host.layouts import registered_layouts

    if not hasattr(transformers, cls):
        pytest.skip(f"this transformers has no {cls}")
    sets = _keys(cls)
    matched = {lay.name for lay in registered_layouts() if _lends(lay) and any(lay.matches(s) for s in sets)}
    ours = {name for name, own in _OWN.items() if cls in own}
    assert matched & set(_OWN) == ours
    if ours:
        assert matched == ours, matched

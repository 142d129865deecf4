"""Hugging Face transformers' DeiT, DINOv2, BEiT, Swin, ConvNeXt V2, BiT and MobileNet v1 files into
the timm architectures that compute the same networks: the layouts of ``plugins/hf_vit_layouts.py``
and ``plugins/hf_layouts.py``.

Each case builds transformers' own model with a small config shaped as the timm architecture
(fewer layers, passed to timm's builder too), seeds it, saves it with ``save_pretrained`` (the Hub's
names and a ``config.json``) and compares what the loaded timm model computes with transformers'
forward on the same input. Beside each, its neighbours: a new head (the backbone compared with
transformers' hidden state), the headless base model, transformers 5's in-memory names (a
``state_dict()`` saved as it is) and the file's own ``layer_norm_eps``. Three cases run in the
fast subset (``FAST``); the others are marked slow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

import zooadapt

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d, nn.BatchNorm1d)


def seeded(model: nn.Module, seed: int) -> nn.Module:
    """Parameters randn * 0.05, a norm's scale 1 + randn * 0.05 (signals survive a deep network),
    BatchNorm statistics seeded (variances positive); other buffers kept. In eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                value = torch.randn(p.shape, generator=g) * 0.05
                if name == "weight" and (isinstance(module, _NORMS) or "norm" in type(module).__name__.lower()):
                    value += 1.0
                p.copy_(value)
            if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):  # (LeViT's: tests/test_transformers_hier.py)
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=g) * 0.05)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=g) + 0.5)
    return model.eval()


Compare = Callable[[nn.Module, nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def logits(hf: nn.Module, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return model(x), hf(pixel_values=x).logits


def features(base: str = "") -> Compare:
    """timm's forward_features against transformers' last hidden state (of ``hf.<base>`` when given)."""
    def compare(hf: nn.Module, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inner = getattr(hf, base) if base else hf
        return model.forward_features(x), inner(pixel_values=x).last_hidden_state
    return compare


def pooled(base: str = "") -> Compare:
    """timm's pre-logits against transformers' pooler output (flattened)."""
    def compare(hf: nn.Module, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inner = getattr(hf, base) if base else hf
        ours = model.forward_head(model.forward_features(x), pre_logits=True)
        return ours, inner(pixel_values=x).pooler_output.flatten(1)
    return compare


@dataclass(frozen=True)
class Twin:
    """A transformers model class and config, and the timm architecture (with builder options) that
    computes the same network."""

    layout: str
    model_class: str
    config_class: str
    config: dict[str, Any]
    arch: str
    build: dict[str, Any] = field(default_factory=dict)
    size: int = 224
    compare: Compare = logits
    rel: float = 1e-5  # the largest relative difference allowed


_VIT = dict(hidden_size=192, num_hidden_layers=2, num_attention_heads=3, intermediate_size=768)
_VIT_BUILD = dict(depth=2, embed_dim=192, num_heads=3)
_D2 = dict(_VIT, image_size=98, patch_size=14, layerscale_value=0.1)  # 7x7 patches of 14
_D2_BUILD = dict(_VIT_BUILD, img_size=98)
_BEIT = dict(_VIT, use_relative_position_bias=True, use_mean_pooling=True, layer_scale_init_value=0.1,
             use_absolute_position_embeddings=False, num_labels=10)  # microsoft/beit-base-patch16-224's settings
_BEIT_SHARED = dict(_BEIT, use_relative_position_bias=False, use_shared_relative_position_bias=True)
# microsoft/swin-tiny-patch4-window7-224 at a quarter of the pixels: 4x4 windows, the last stage one window
_SWIN = dict(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], image_size=128, patch_size=4, window_size=4)
_SWIN_BUILD = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), img_size=128, window_size=4)
_CNX2 = dict(depths=[2, 2, 6, 2], hidden_sizes=[40, 80, 160, 320])  # convnextv2_atto
# google/bit-50 (transformers' convert_bit_to_pytorch.py: BitConfig(conv_layer="std_conv")); timm's builder
# takes no other depth
_BIT = dict(layer_type="preactivation", global_padding=None, embedding_dynamic_padding=False)
_BIT_BUILD: dict[str, Any] = {}

TWINS: dict[str, Twin] = {
    "deit": Twin("transformers-deit", "DeiTForImageClassificationWithTeacher", "DeiTConfig", dict(_VIT, num_labels=10),
                 "deit_tiny_distilled_patch16_224", dict(depth=2)),
    "deit-new-head": Twin("transformers-deit", "DeiTForImageClassificationWithTeacher", "DeiTConfig",
                          dict(_VIT, num_labels=10), "deit_tiny_distilled_patch16_224", dict(depth=2, num_classes=5),
                          compare=features("deit")),
    "deit-model": Twin("transformers-deit", "DeiTModel", "DeiTConfig", _VIT, "deit_tiny_distilled_patch16_224",
                       dict(depth=2, num_classes=0), compare=features()),
    "dinov2": Twin("transformers-dinov2", "Dinov2Model", "Dinov2Config", _D2, "vit_small_patch14_dinov2",
                   dict(_D2_BUILD, num_classes=0), 98, features()),
    "dinov2-classifier": Twin("transformers-dinov2", "Dinov2ForImageClassification", "Dinov2Config",
                              dict(_D2, num_labels=10), "vit_small_patch14_dinov2", dict(_D2_BUILD, num_classes=5), 98,
                              features("dinov2")),
    # the giant's SwiGLU MLP: timm's fc1 is 2 x transformers' hidden size (2/3 of 768, rounded up to 8: 512)
    "dinov2-swiglu": Twin("transformers-dinov2", "Dinov2Model", "Dinov2Config", dict(_D2, use_swiglu_ffn=True),
                          "vit_giant_patch14_dinov2", dict(_D2_BUILD, num_classes=0, mlp_ratio=1024 / 192), 98,
                          features()),
    "dinov2-registers": Twin("transformers-dinov2-registers", "Dinov2WithRegistersModel", "Dinov2WithRegistersConfig",
                             dict(_D2, num_register_tokens=4), "vit_small_patch14_reg4_dinov2",
                             dict(_D2_BUILD, num_classes=0), 98, features()),
    "dinov2-registers-classifier": Twin("transformers-dinov2-registers", "Dinov2WithRegistersForImageClassification",
                                        "Dinov2WithRegistersConfig", dict(_D2, num_register_tokens=4, num_labels=10),
                                        "vit_small_patch14_reg4_dinov2", dict(_D2_BUILD, num_classes=5), 98,
                                        features("dinov2_with_registers")),
    "beit": Twin("transformers-beit", "BeitForImageClassification", "BeitConfig", _BEIT, "beit_base_patch16_224",
                 _VIT_BUILD),
    "beit-new-head": Twin("transformers-beit", "BeitForImageClassification", "BeitConfig", _BEIT,
                          "beit_base_patch16_224", dict(_VIT_BUILD, num_classes=5), compare=pooled("beit")),
    "beit-model": Twin("transformers-beit", "BeitModel", "BeitConfig", _BEIT, "beit_base_patch16_224",
                       dict(_VIT_BUILD, num_classes=5), compare=pooled()),
    "beit-shared": Twin("transformers-beit", "BeitForImageClassification", "BeitConfig", _BEIT_SHARED,
                        "beit_base_patch16_224",
                        dict(_VIT_BUILD, use_shared_rel_pos_bias=True, use_rel_pos_bias=False)),
    "data2vec-vision": Twin("transformers-beit", "Data2VecVisionForImageClassification", "Data2VecVisionConfig", _BEIT,
                            "beit_base_patch16_224", _VIT_BUILD),
    "swin": Twin("transformers-swin", "SwinForImageClassification", "SwinConfig", dict(_SWIN, num_labels=10),
                 "swin_tiny_patch4_window7_224", _SWIN_BUILD, 128),
    "swin-new-head": Twin("transformers-swin", "SwinForImageClassification", "SwinConfig", dict(_SWIN, num_labels=10),
                          "swin_tiny_patch4_window7_224", dict(_SWIN_BUILD, num_classes=5), 128, pooled("swin")),
    "swin-model": Twin("transformers-swin", "SwinModel", "SwinConfig", _SWIN, "swin_tiny_patch4_window7_224",
                       dict(_SWIN_BUILD, num_classes=5), 128, pooled()),
    # the final LayerNorm: transformers' config.layer_norm_eps (1e-12), timm's head.norm 1e-6
    "convnextv2": Twin("transformers-convnextv2", "ConvNextV2ForImageClassification", "ConvNextV2Config",
                       dict(_CNX2, num_labels=10), "convnextv2_atto", size=64),
    "convnextv2-model": Twin("transformers-convnextv2", "ConvNextV2Model", "ConvNextV2Config", _CNX2,
                             "convnextv2_atto", dict(num_classes=5), 64, features()),
    "convnextv2-tiny": Twin("transformers-convnextv2", "ConvNextV2ForImageClassification", "ConvNextV2Config",
                            dict(depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768], num_labels=10),
                            "convnextv2_tiny", size=64),  # timm's Linear MLP (conv_mlp=False)
    "bit": Twin("transformers-bit", "BitForImageClassification", "BitConfig", dict(_BIT, num_labels=10),
                "resnetv2_50x1_bit", _BIT_BUILD, 64),
    "bit-new-head": Twin("transformers-bit", "BitForImageClassification", "BitConfig", dict(_BIT, num_labels=10),
                         "resnetv2_50x1_bit", dict(_BIT_BUILD, num_classes=5), 64, features("bit")),
    "bit-model": Twin("transformers-bit", "BitModel", "BitConfig", _BIT, "resnetv2_50x1_bit",
                      dict(_BIT_BUILD, num_classes=5), 64, features()),
    "mobilenet-v1": Twin("transformers-mobilenet-v1", "MobileNetV1ForImageClassification", "MobileNetV1Config",
                         dict(num_labels=10), "mobilenetv1_100", size=64),
    "mobilenet-v1-model": Twin("transformers-mobilenet-v1", "MobileNetV1Model", "MobileNetV1Config", {},
                               "mobilenetv1_100", dict(num_classes=5), 64, features()),
}
# the vision transformers compute the same operations in the same order as transformers: held to 1e-6
TWINS = {n: replace(t, rel=1e-6) if t.layout.endswith(("deit", "dinov2", "registers", "beit", "swin")) else t
         for n, t in TWINS.items()}
FAST = {"deit", "dinov2-registers", "convnextv2"}  # a fused qkv, a conversion, a reshape; the rest: slow


def cases(names: list[str]) -> list[Any]:
    return [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in names]


_saved: dict[tuple[str, str, str], tuple[nn.Module, Path]] = {}


def saved(name: str, tmp_path_factory: pytest.TempPathFactory, names: str = "hub",
          **config: Any) -> tuple[nn.Module, Path]:
    """transformers' model of ``TWINS[name]`` (its config updated by ``config``) and the directory
    it was saved to, once per session. ``names``: "hub" is ``save_pretrained`` (the Hub's names,
    a config.json); "memory" is ``state_dict()`` as transformers 5 names it, with the config.json."""
    twin = TWINS[name]
    key = (name, names, json.dumps(config, sort_keys=True))
    if key not in _saved:
        cfg = getattr(transformers, twin.config_class)(**{**twin.config, **config})
        model = seeded(getattr(transformers, twin.model_class)(cfg), sum(map(ord, twin.model_class)))
        path = tmp_path_factory.mktemp(re.sub(r"\W", "-", f"{name}-{names}")) / "dir"
        model.save_pretrained(path)
        if names == "memory":
            from safetensors.torch import save_file

            for file in path.glob("*.safetensors"):
                file.unlink()
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
        _saved[key] = model, path
    return _saved[key]


def image(size: int) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert ours.shape == theirs.shape
    return float((ours - theirs).abs().max() / theirs.abs().max())


def layouts_named(model: nn.Module) -> set[str]:
    """The layouts the report names: the one that read the keys, the one that chose the build."""
    notes = model.zooadapt.report.plan.notes
    return {m[1] for n in notes for m in [re.match(r"keys read as the ([\w-]+) layout", n)] if m} | \
           {m[1] for n in notes for m in [re.search(r"\(the ([\w-]+) layout\)", n)] if m}


def load(name: str, path: Path, **options: Any) -> nn.Module:
    twin = TWINS[name]
    return zooadapt.load(twin.arch, weights=path, **{**twin.build, **options}).eval()


def eps(model: nn.Module, kind: type[nn.Module] = nn.LayerNorm) -> set[float]:
    return {m.eps for m in model.modules() if isinstance(m, kind)}


# -- outputs --------------------------------------------------------------------------------------

_LAYER_NORM_EPS = {"transformers-deit", "transformers-dinov2", "transformers-dinov2-registers", "transformers-beit"}


@pytest.mark.parametrize("name", cases(list(TWINS)))
def test_the_timm_twin_computes_what_transformers_computes(name, tmp_path_factory):
    twin = TWINS[name]
    hf, path = saved(name, tmp_path_factory)
    model = load(name, path)
    plan = model.zooadapt.report.plan
    assert twin.layout in layouts_named(model), plan.notes
    assert plan.fits and not plan.missing
    if twin.build.get("num_classes") is None:  # the file's own head, where it has one
        assert plan.coverage == 1.0 and not plan.new_head and not plan.unexpected, plan.unexpected
    else:
        assert plan.backbone_coverage == 1.0
    if twin.layout in _LAYER_NORM_EPS:  # built with the eps of the file's config.json, in every LayerNorm
        assert eps(model) == {hf.config.layer_norm_eps}
    if twin.layout == "transformers-mobilenet-v1":  # and every BatchNorm
        assert eps(model, nn.BatchNorm2d) == {hf.config.layer_norm_eps}
    x = image(twin.size)
    with torch.no_grad():
        ours, theirs = twin.compare(hf, model, x)
    assert relative(ours, theirs) < twin.rel


@pytest.mark.parametrize("name", cases(["deit-new-head", "dinov2-classifier", "dinov2-registers-classifier",
                                        "beit-new-head", "swin-new-head", "bit-new-head"]))
def test_a_new_head_replaces_the_classifier_and_keeps_the_backbone(name, tmp_path_factory):
    _, path = saved(name, tmp_path_factory)
    model = load(name, path)
    plan = model.zooadapt.report.plan
    assert plan.fits and plan.backbone_coverage == 1.0 and not plan.missing
    assert plan.new_head and all(k.startswith(("head.", "head_dist.")) for k in plan.new_head)
    with torch.no_grad():
        assert model(image(TWINS[name].size)).shape == (2, 5)
    classifier = {m.checkpoint_key for m in [*plan.dropped, *plan.unexpected]}
    if name == "dinov2-classifier":  # it reads concat(CLS, mean of the patches): no timm head does, so it is not read
        assert classifier == {"classifier.weight", "classifier.bias"} and not plan.dropped
    elif name == "dinov2-registers-classifier":  # the same, dropped by the conversion
        assert not classifier
        assert {m.checkpoint_key for m in plan.mappings if m.model_key is None} == {
            "dinov2_with_registers.embeddings.mask_token", "classifier.weight", "classifier.bias"}
    else:  # the file's trained head, of another class count, is dropped for the new one
        assert classifier and all(k.startswith(("classifier", "cls_classifier", "distillation_classifier"))
                                  for k in classifier) and not plan.unexpected


# -- the file's config ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("name", "default"), [("deit", 1e-12), ("dinov2", 1e-6), ("dinov2-registers", 1e-6),
                                               ("beit", 1e-12), ("data2vec-vision", 1e-12)])
def test_every_layernorm_takes_the_eps_of_the_files_config(name, default, tmp_path_factory):
    """transformers builds every LayerNorm of these models with config.layer_norm_eps; a large
    one (1e-2) shows in the outputs when it is not followed."""
    twin = TWINS[name]
    hf, path = saved(name, tmp_path_factory)
    assert eps(load(name, path)) == {default}
    hf, path = saved(name, tmp_path_factory, layer_norm_eps=1e-2)
    model = load(name, path)
    assert eps(model) == {1e-2}
    assert any("LayerNorm.eps=0.01 (its config.json's layer_norm_eps)" in n for n in model.zooadapt.report.plan.notes)
    with torch.no_grad():
        assert relative(*twin.compare(hf, model, image(twin.size))) < twin.rel


@pytest.mark.slow
def test_a_mobilenet_v1_takes_its_batchnorm_eps_from_the_config(tmp_path_factory):
    twin = TWINS["mobilenet-v1"]
    hf, path = saved("mobilenet-v1", tmp_path_factory, layer_norm_eps=1e-2)
    model = load("mobilenet-v1", path)
    assert eps(model, nn.BatchNorm2d) == {1e-2}
    with torch.no_grad():
        assert relative(*logits(hf, model, image(twin.size))) < twin.rel


@pytest.mark.slow
def test_without_a_config_the_layout_builds_transformers_default(tmp_path_factory, tmp_path):
    hf, path = saved("deit", tmp_path_factory)
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    model = load("deit", tmp_path / "model.safetensors")
    assert eps(model) == {1e-12}
    with torch.no_grad():
        assert relative(*logits(hf, model, image(224))) < 1e-6


# -- transformers 5's own names ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deit", "dinov2-swiglu", "dinov2-registers", "beit-shared", "swin"])
def test_transformers_5_in_memory_names_load_the_same(name, tmp_path_factory):
    """``attention.q_proj`` for ``attention.attention.query``, DINOv2's ``mlp.gate_proj`` and
    ``up_proj`` for ``weights_in``, BEiT's ``layers.N`` and ``shared_position_bias``."""
    twin = TWINS[name]
    hf, path = saved(name, tmp_path_factory, "memory")
    model = load(name, path)
    plan = model.zooadapt.report.plan
    assert twin.layout in layouts_named(model)
    assert plan.fits and plan.coverage == 1.0 and not plan.unexpected
    with torch.no_grad():
        assert relative(*twin.compare(hf, model, image(twin.size))) < twin.rel


# -- detect: each layout's key is its own model's ---------------------------------------------------

_OWN = {
    "transformers-deit": {"DeiTForImageClassificationWithTeacher", "DeiTModel"},
    "transformers-dinov2": {"Dinov2Model", "Dinov2ForImageClassification", "Dinov2WithRegistersModel",
                            "Dinov2WithRegistersForImageClassification"},
    "transformers-beit": {"BeitForImageClassification", "BeitModel", "Data2VecVisionForImageClassification"},
    "transformers-swin": {"SwinForImageClassification", "SwinModel"},
    "transformers-convnextv2": {"ConvNextV2ForImageClassification", "ConvNextV2Model"},
    "transformers-bit": {"BitForImageClassification", "BitModel"},
    "transformers-mobilenet-v1": {"MobileNetV1ForImageClassification", "MobileNetV1Model"},
}
_OWN["transformers-dinov2-registers"] = _OWN["transformers-dinov2"]  # its conversion reads register files only


def _layouts() -> dict[str, Any]:
    from zooadapt.host.layouts import registered_layouts

    return {lay.name: lay for lay in registered_layouts() if lay.name in _OWN}


def test_each_detect_matches_its_own_models_files_only(tmp_path_factory):
    """Build options come from every layout whose detect matches a file: a key another model's
    files hold would build that model with this one's options. Checked against the fast cases'
    twins, in the Hub's names and in transformers 5's (every twin: the slow test below)."""
    from safetensors import safe_open

    keys: dict[str, list[set[str]]] = {}
    for name in sorted(FAST):  # built by the fast cases above; the other classes: the slow test below
        hf, path = saved(name, tmp_path_factory)
        with safe_open(str(path / "model.safetensors"), "pt") as f:
            keys.setdefault(TWINS[name].model_class, []).extend([set(f.keys()), set(hf.state_dict())])
    layouts = _layouts()
    assert set(layouts) == set(_OWN)
    for layout in layouts.values():
        matched = {cls for cls, sets in keys.items() if any(layout.matches(s) for s in sets)}
        assert matched == _OWN[layout.name] & set(keys), layout.name


# the other transformers image classes, in tiny configs, and the layouts that may read their files: a
# model of the same family, or the same network under another name (Donut's encoder is Swin, copied;
# the audio spectrogram transformer keeps DeiT's names, with a one-channel patch embedding)
_V = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
_SW = dict(embed_dim=16, depths=[1, 1], num_heads=[1, 2], image_size=32, patch_size=4, window_size=4)
_C = dict(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 32, 32])
_BIT_TINY = dict(_BIT, depths=[1, 1], hidden_sizes=[32, 64], embedding_size=32, num_groups=8)
_OTHERS: dict[str, tuple[str, dict[str, Any], set[str]]] = {
    "DeiTModel": ("DeiTConfig", _V, {"transformers-deit"}),
    "Dinov2ForImageClassification": ("Dinov2Config", _V, {"transformers-dinov2", "transformers-dinov2-registers"}),
    "Dinov2WithRegistersForImageClassification": ("Dinov2WithRegistersConfig", _V,
                                                  {"transformers-dinov2", "transformers-dinov2-registers"}),
    "BeitModel": ("BeitConfig", _V, {"transformers-beit"}),
    "Data2VecVisionForImageClassification": ("Data2VecVisionConfig", _V, {"transformers-beit"}),
    "SwinModel": ("SwinConfig", _SW, {"transformers-swin"}),
    "ConvNextV2Model": ("ConvNextV2Config", _C, {"transformers-convnextv2"}),
    "BitModel": ("BitConfig", _BIT_TINY, {"transformers-bit"}),
    "MobileNetV1Model": ("MobileNetV1Config", {}, {"transformers-mobilenet-v1"}),
    "DeiTForImageClassification": ("DeiTConfig", _V, {"transformers-deit"}),
    "ASTModel": ("ASTConfig", dict(_V, image_size=None, patch_size=None), {"transformers-deit"}),
    "BeitForMaskedImageModeling": ("BeitConfig", _V, {"transformers-beit"}),
    "Data2VecVisionModel": ("Data2VecVisionConfig", _V, {"transformers-beit"}),
    "DonutSwinModel": ("DonutSwinConfig", _SW, {"transformers-swin"}),
    "ViTModel": ("ViTConfig", _V, set()), "ViTForImageClassification": ("ViTConfig", _V, set()),
    "ViTMAEModel": ("ViTMAEConfig", _V, set()), "ViTMSNModel": ("ViTMSNConfig", _V, set()),
    "IJepaModel": ("IJepaConfig", _V, set()), "DINOv3ViTModel": ("DINOv3ViTConfig", _V, set()),
    "Swinv2Model": ("Swinv2Config", _SW, set()), "ConvNextModel": ("ConvNextConfig", _C, set()),
    "ConvNextForImageClassification": ("ConvNextConfig", _C, set()),
    "MobileNetV2ForImageClassification": ("MobileNetV2Config", {}, set()),
    "MobileViTModel": ("MobileViTConfig", {}, set()), "MobileViTV2Model": ("MobileViTV2Config", {}, set()),
    "ResNetModel": ("ResNetConfig", _C, set()), "ResNetForImageClassification": ("ResNetConfig", _C, set()),
    "RegNetForImageClassification": ("RegNetConfig", {}, set()),
    "EfficientNetForImageClassification": ("EfficientNetConfig", {}, set()),
    "FocalNetModel": ("FocalNetConfig", {}, set()), "PoolFormerModel": ("PoolFormerConfig", {}, set()),
    "LevitModel": ("LevitConfig", {}, set()), "CvtModel": ("CvtConfig", {}, set()),
    "SegformerModel": ("SegformerConfig", {}, set()),
}


@pytest.mark.slow
@pytest.mark.parametrize("cls", list(_OTHERS))
def test_another_transformers_image_model_is_read_only_by_its_own_layout(cls, tmp_path):
    from safetensors import safe_open

    config, options, expected = _OTHERS[cls]
    if not hasattr(transformers, cls):
        pytest.skip(f"this transformers has no {cls}")
    options = {k: v for k, v in options.items() if v is not None}
    model = getattr(transformers, cls)(getattr(transformers, config)(**options))
    model.save_pretrained(tmp_path / cls)
    with safe_open(str(tmp_path / cls / "model.safetensors"), "pt") as f:
        sets = [set(f.keys()), set(model.state_dict())]
    assert {lay.name for lay in _layouts().values() if any(lay.matches(s) for s in sets)} == expected

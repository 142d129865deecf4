"""Hugging Face transformers' CLIP and SigLIP vision towers into the timm architectures that compute
the same networks: the layouts of ``plugins/hf_clip_layouts.py``.

Each case builds transformers' own model with a small config shaped as the timm architecture (two
layers, a 32-pixel image; the same sizes passed to timm's builder), seeds it, saves it with
``save_pretrained`` (its names and a ``config.json``) and compares what the loaded timm model computes
with transformers' forward on the same input: the tower's tokens, its pooled output and, where the
file has one, CLIP's projection (timm's head). Beside them: a whole CLIPModel or SiglipModel file (the
text tower unused), transformers 5's in-memory names and transformers 4's ``vision_model.`` ones,
the ``layer_norm_eps`` and ``hidden_act`` of the file's config, and each layout's ``detect`` against
the other transformers image models' files. Two cases run in the fast subset (``FAST``); the others
are marked slow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

import zooadapt

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")

LAYOUTS = {"transformers-clip", "transformers-clip-projection", "transformers-siglip", "transformers-siglip-head"}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """These towers are tiny: on a busy machine torch's worker threads cost more than they save (a
    forward of 0.5 s instead of 5 ms on two shared cores). One thread for each test, then the number before."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def modeling() -> None:
    """transformers imports a model's modeling file (and its PreTrainedModel machinery) on first use,
    about a second once per process: done here, in the fast cases' setup, not in their timed call."""
    for name in ("CLIPVisionModelWithProjection", "SiglipVisionModel"):
        getattr(transformers, name)


def seeded(model: nn.Module, seed: int) -> nn.Module:
    """Parameters randn * 0.05, a norm's scale 1 + randn * 0.05 (as tests/test_transformers_twins.py
    seeds them: signals survive the blocks). In eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                value = torch.randn(p.shape, generator=g) * 0.05
                if name == "weight" and isinstance(module, nn.LayerNorm):
                    value += 1.0
                p.copy_(value)
    return model.eval()


Outputs = Iterator[tuple[str, torch.Tensor, torch.Tensor]]
Compare = Callable[[Any, Any, torch.Tensor], Outputs]


def clip_tower(hf: Any) -> Any:
    return getattr(hf, "vision_model", hf)  # CLIPVisionModel is the tower; the others hold it as vision_model


def clip_tokens(hf: Any, model: Any, x: torch.Tensor) -> Outputs:
    """timm's forward_features normalises every token with ``norm`` (transformers' post_layernorm,
    which transformers applies to the pooled class token only): compared with post_layernorm of
    transformers' last hidden state; timm's pre-logits with its pooler output."""
    tower = clip_tower(hf)
    out = tower(pixel_values=x)
    features = model.forward_features(x)
    yield "tokens", features, tower.post_layernorm(out.last_hidden_state)
    yield "pooled", model.forward_head(features, pre_logits=True), out.pooler_output


def clip_embeds(hf: Any, model: Any, x: torch.Tensor) -> Outputs:
    """timm's logits with its head from visual_projection: transformers' image embeddings."""
    yield from clip_tokens(hf, model, x)
    yield "projected", model(x), hf.visual_projection(clip_tower(hf)(pixel_values=x).pooler_output)


def siglip_tokens(hf: Any, model: Any, x: torch.Tensor) -> Outputs:
    """SigLIP's last hidden state is after post_layernorm, as timm's forward_features; its pooler
    output the attention-pooling head's, timm's pre-logits (attn_pool)."""
    tower = getattr(hf, "vision_model", hf)
    out = tower(pixel_values=x)
    features = model.forward_features(x)
    yield "tokens", features, out.last_hidden_state
    if out.pooler_output is not None:
        yield "pooled", model.forward_head(features, pre_logits=True), out.pooler_output


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
    compare: Compare = clip_tokens
    rel: float = 1e-5  # the largest relative difference allowed


# ViT-B/16 at a twelfth of its width, two layers, 4x4 patches of 8 pixels
_VISION = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, image_size=32,
               patch_size=8)
_BUILD = dict(depth=2, embed_dim=64, num_heads=2, img_size=32, patch_size=8)
_TEXT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, vocab_size=99,
             max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)  # the vision tower's widths
_CLIP = dict(_VISION, projection_dim=16)
_QUICK = "vit_base_patch16_clip_quickgelu_224"  # OpenAI's towers (hidden_act "quick_gelu", CLIPVisionConfig's default)
_SIGLIP = "vit_base_patch16_siglip_224"

TWINS: dict[str, Twin] = {
    "clip": Twin("transformers-clip", "CLIPVisionModel", "CLIPVisionConfig", _CLIP, _QUICK,
                 dict(_BUILD, num_classes=0)),
    # LAION's towers (laion/CLIP-ViT-*): hidden_act "gelu", timm's vit_*_clip_* without quickgelu
    "clip-gelu": Twin("transformers-clip", "CLIPVisionModel", "CLIPVisionConfig", dict(_CLIP, hidden_act="gelu"),
                      "vit_base_patch16_clip_224", dict(_BUILD, num_classes=0)),
    # OpenAI's quick_gelu tower into the name without it: the config.json's hidden_act decides the build
    "clip-config-act": Twin("transformers-clip", "CLIPVisionModel", "CLIPVisionConfig", _CLIP,
                            "vit_base_patch16_clip_224", dict(_BUILD, num_classes=0)),
    "clip-projection": Twin("transformers-clip-projection", "CLIPVisionModelWithProjection", "CLIPVisionConfig", _CLIP,
                            _QUICK, _BUILD, clip_embeds),
    "clip-projection-backbone": Twin("transformers-clip", "CLIPVisionModelWithProjection", "CLIPVisionConfig", _CLIP,
                                     _QUICK, dict(_BUILD, num_classes=0)),
    "clip-model": Twin("transformers-clip-projection", "CLIPModel", "CLIPConfig",
                       dict(vision_config=_VISION, text_config=_TEXT, projection_dim=16), _QUICK, _BUILD, clip_embeds),
    "clip-model-backbone": Twin("transformers-clip", "CLIPModel", "CLIPConfig",
                                dict(vision_config=_VISION, text_config=_TEXT, projection_dim=16), _QUICK,
                                dict(_BUILD, num_classes=0)),
    # CLIP's tower copied into other transformers models, read as CLIP's
    **{name: Twin("transformers-clip", f"{cls}VisionModel", f"{cls}VisionConfig", _CLIP, _QUICK,
                  dict(_BUILD, num_classes=0))
       for name, cls in (("metaclip2", "MetaClip2"), ("clipseg", "CLIPSeg"), ("chinese-clip", "ChineseCLIP"),
                         ("altclip", "AltCLIP"))},
    "siglip": Twin("transformers-siglip-head", "SiglipVisionModel", "SiglipVisionConfig", _VISION, _SIGLIP,
                   dict(_BUILD, num_classes=0), siglip_tokens),
    "siglip-model": Twin("transformers-siglip-head", "SiglipModel", "SiglipConfig",
                         dict(vision_config=_VISION, text_config=_TEXT), _SIGLIP, dict(_BUILD, num_classes=0),
                         siglip_tokens),
    # without the pooling head (vision_use_head=False): the tower alone, into timm's without attn_pool
    "siglip-headless": Twin("transformers-siglip", "SiglipVisionModel", "SiglipVisionConfig",
                            dict(_VISION, vision_use_head=False), _SIGLIP, dict(_BUILD, num_classes=0, global_pool=""),
                            siglip_tokens),
}
FAST = {"clip-projection", "siglip"}  # the two conversions (and so every rename); the rest: slow


def cases(names: list[str]) -> list[Any]:
    return [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in names]


_saved: dict[tuple[str, str, str], tuple[Any, Path]] = {}


def saved(name: str, tmp_path_factory: pytest.TempPathFactory, names: str = "hub",
          **config: Any) -> tuple[Any, Path]:
    """transformers' model of ``TWINS[name]`` (its config updated by ``config``) and the directory
    it was saved to, once per session. ``names``: "hub" is ``save_pretrained`` (its names and its
    config.json); "memory" is ``state_dict()`` as transformers 5 names it (today the names it saves
    too) written with safetensors' save_file, and the config's every value; "v4" is the names
    transformers 4 wrote for a CLIPVisionModel (``vision_model.`` before each, and the embedding's
    position_ids buffer)."""
    twin = TWINS[name]
    key = (name, names, json.dumps(config, sort_keys=True))
    if key not in _saved:
        cfg = getattr(transformers, twin.config_class)(**{**twin.config, **config})
        model: Any = seeded(getattr(transformers, twin.model_class)(cfg), sum(map(ord, twin.model_class)))
        path = tmp_path_factory.mktemp(re.sub(r"\W", "-", f"{name}-{names}")) / "dir"
        if names == "hub":
            model.save_pretrained(path)
        else:
            from safetensors.torch import save_file

            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            if names == "v4":
                # (transformers 5.3 still names them so in memory; 5.25 drops the prefix)
                state = {k if k.startswith("vision_model.") else f"vision_model.{k}": v for k, v in state.items()}
                positions = cfg.image_size // cfg.patch_size
                state["vision_model.embeddings.position_ids"] = torch.arange(positions * positions + 1)[None]
            path.mkdir()
            save_file(state, str(path / "model.safetensors"))
            cfg.to_json_file(str(path / "config.json"), use_diff=False)
        _saved[key] = model, path
    return _saved[key]


def image(size: int = 32) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert ours.shape == theirs.shape
    return float((ours - theirs).abs().max() / theirs.abs().max())


def compared(twin: Twin, hf: Any, model: Any) -> dict[str, float]:
    """Each output's relative difference from transformers'."""
    with torch.no_grad():
        return {what: relative(ours, theirs) for what, ours, theirs in twin.compare(hf, model, image())}


def load(name: str, path: Path, **options: Any) -> Any:
    twin = TWINS[name]
    return zooadapt.load(twin.arch, weights=path, **{**twin.build, **options}).eval()


def layouts_named(model: Any) -> set[str]:
    """The layouts the report names: the one that read the keys, the one that chose the build."""
    notes = model.zooadapt.report.plan.notes
    return {m[1] for n in notes for m in [re.match(r"keys read as the ([\w-]+) layout", n)] if m} | \
           {m[1] for n in notes for m in [re.search(r"\(the ([\w-]+) layout\)", n)] if m}


def eps(model: nn.Module) -> set[float]:
    return {m.eps for m in model.modules() if isinstance(m, nn.LayerNorm)}


def acts(model: nn.Module) -> set[str]:
    return {type(m.act).__name__ for m in model.modules() if hasattr(m, "act") and hasattr(m, "fc1")}


def unused(model: Any) -> set[str]:
    """The file's keys nothing loaded: unexpected by a rename layout, dropped by a conversion."""
    plan = model.zooadapt.report.plan
    return {m.checkpoint_key for m in [*plan.unexpected, *plan.mappings] if m.model_key is None}


# -- outputs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", cases(list(TWINS)))
def test_the_timm_twin_computes_what_transformers_computes(name, tmp_path_factory, modeling):
    """The fast cases save transformers' state_dict() with safetensors (the names save_pretrained
    writes, without its first call's cost); save_pretrained's own files: the names test below."""
    twin = TWINS[name]
    if not hasattr(transformers, twin.model_class):
        pytest.skip(f"this transformers has no {twin.model_class}")
    hf, path = saved(name, tmp_path_factory, "memory" if name in FAST else "hub")
    model = load(name, path)
    plan = model.zooadapt.report.plan
    assert twin.layout in layouts_named(model), plan.notes
    assert plan.fits and not plan.missing and plan.backbone_coverage == 1.0
    if twin.build.get("num_classes") is None:  # CLIP's projection as timm's head, its class count the file's
        assert not plan.new_head and model.num_classes == 16
    differences = compared(twin, hf, model)
    assert differences and max(differences.values()) < twin.rel, differences


@pytest.mark.slow
@pytest.mark.parametrize("name", ["clip-model", "clip-model-backbone", "siglip-model"])
def test_a_whole_clip_or_siglip_file_loads_its_vision_tower_and_leaves_the_text_tower(name, tmp_path_factory):
    """The text tower has the vision tower's block names (and here its widths): none of it is read
    as the image tower; the layout's drop rules set it aside, and the report names it."""
    hf, path = saved(name, tmp_path_factory)
    model = load(name, path)
    loaded = {m.checkpoint_key for m in model.zooadapt.report.plan.loaded}
    assert not any(k.startswith(("text_model.", "text_projection", "logit_")) for k in loaded)
    text = {k for k in hf.state_dict() if k.startswith(("text_model.", "text_projection", "logit_"))}
    assert text and text <= unused(model)
    if name == "clip-model-backbone":  # no head to take the projection: it is unused too
        assert unused(model) == text | {"visual_projection.weight"}
    else:
        assert unused(model) == text


@pytest.mark.slow
def test_a_new_head_replaces_clips_projection(tmp_path_factory):
    hf, path = saved("clip-projection", tmp_path_factory)
    model = load("clip-projection", path, num_classes=5)
    plan = model.zooadapt.report.plan
    assert plan.fits and plan.backbone_coverage == 1.0 and plan.new_head
    with torch.no_grad():
        assert model(image()).shape == (2, 5)
        differences = compared(TWINS["clip"], hf, model)
    assert max(differences.values()) < 1e-5, differences


@pytest.mark.slow
def test_a_siglip_file_without_its_pooling_head_fills_no_attention_pool(tmp_path_factory):
    """timm's vit_*_siglip_* pools with attn_pool; a tower saved without the head cannot fill it,
    and nothing is guessed: the load is refused (global_pool='' loads the tower alone, above)."""
    _, path = saved("siglip-headless", tmp_path_factory)
    with pytest.raises(zooadapt.ZooadaptError, match="attn_pool"):
        load("siglip-headless", path, global_pool="map")


# -- the file's config ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("name", "default"), [("clip", 1e-5), ("clip-projection", 1e-5), ("siglip", 1e-6)])
def test_every_layernorm_takes_the_eps_of_the_files_config(name, default, tmp_path_factory):
    """transformers builds every LayerNorm of these towers with config.layer_norm_eps (CLIP's 1e-5
    and SigLIP's 1e-6 are timm's own); a large one (1e-2) shows in the outputs when it is not followed."""
    twin = TWINS[name]
    _, path = saved(name, tmp_path_factory)
    assert eps(load(name, path)) == {default}
    hf, path = saved(name, tmp_path_factory, layer_norm_eps=1e-2)
    model = load(name, path)
    assert eps(model) == {1e-2}
    assert any("LayerNorm.eps=0.01 (its config.json's layer_norm_eps)" in n for n in model.zooadapt.report.plan.notes)
    assert max(compared(twin, hf, model).values()) < twin.rel


@pytest.mark.slow
@pytest.mark.parametrize(("name", "act"), [("clip", "QuickGELU"), ("clip-gelu", "GELU"),
                                           ("clip-config-act", "QuickGELU"), ("siglip", "GELUTanh")])
def test_the_mlp_activation_is_the_files(name, act, tmp_path_factory):
    """CLIP's config.hidden_act ("quick_gelu" for OpenAI's towers, "gelu" for LAION's) builds timm's
    act_layer whatever the name says; SigLIP's gelu_pytorch_tanh is timm's gelu_tanh (timm builds
    exact GELU for its SigLIP 1 names)."""
    _, path = saved(name, tmp_path_factory)
    model = load(name, path)
    assert acts(model) == {act}


@pytest.mark.slow
@pytest.mark.parametrize(("name", "vision", "act", "layer_eps"), [
    ("clip-model", dict(hidden_act="gelu"), "GELU", 1e-5),  # a LAION tower into a *_quickgelu_* name
    ("clip-model", dict(layer_norm_eps=1e-2), "QuickGELU", 1e-2),
    ("siglip-model", dict(layer_norm_eps=1e-2), "GELUTanh", 1e-2),
])
def test_a_whole_models_config_gives_its_towers_settings(name, vision, act, layer_eps, tmp_path_factory):
    """A CLIPModel's or SiglipModel's config.json keeps layer_norm_eps and hidden_act in
    vision_config: read there, the tower builds as the file was trained, whatever timm's name says
    (before: the name decided, and a LAION tower in a quickgelu name computed something else)."""
    twin = TWINS[name]
    hf, path = saved(name, tmp_path_factory, vision_config={**twin.config["vision_config"], **vision})
    model = load(name, path)
    assert acts(model) == {act} and eps(model) == {layer_eps}
    assert max(compared(twin, hf, model).values()) < twin.rel
    assert acts(load(name, path, **{"act_layer": "quick_gelu"})) == {"QuickGELU"}  # or as the caller says


# -- names ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("name", "names"), [("clip-projection", "hub"), ("siglip", "hub"), ("clip", "memory"),
                                             ("clip-model", "memory"), ("siglip-model", "memory"), ("clip", "v4"),
                                             ("siglip", "v4")])
def test_transformers_5_in_memory_and_transformers_4_names_load_the_same(name, names, tmp_path_factory):
    """transformers 5's ``state_dict()`` (today the names it saves) and the ``vision_model.`` names
    with the position_ids buffer that transformers 4 wrote for a CLIPVisionModel (the buffer is dropped)."""
    twin = TWINS[name]
    hf, path = saved(name, tmp_path_factory, names)
    model = load(name, path)
    plan = model.zooadapt.report.plan
    assert twin.layout in layouts_named(model)
    assert plan.fits and plan.backbone_coverage == 1.0
    assert not any(k.startswith("vision_model.") or k.startswith(("embeddings.", "encoder.")) for k in unused(model)
                   if not k.endswith("position_ids"))
    assert max(compared(twin, hf, model).values()) < twin.rel


# -- detect: each layout's key is its own model's ---------------------------------------------------

_V = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
_T = dict(_TEXT, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
_SW = dict(embed_dim=16, depths=[1, 1], num_heads=[1, 2], image_size=32, patch_size=4, window_size=4)
_C = dict(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 32, 32])
_CLIPS = {"transformers-clip", "transformers-clip-projection"}
_SIGLIPS = {"transformers-siglip", "transformers-siglip-head"}
# transformers classes and the layouts of LAYOUTS whose detect their files match: CLIP's and SigLIP's own, their
# copies under other names (the same networks), and the image models other layouts read
_MODELS: dict[str, tuple[str, dict[str, Any], set[str]]] = {
    "CLIPVisionModel": ("CLIPVisionConfig", _V, _CLIPS),
    "CLIPVisionModelWithProjection": ("CLIPVisionConfig", _V, _CLIPS),
    "CLIPModel": ("CLIPConfig", dict(vision_config=_V, text_config=_T), _CLIPS),
    "CLIPTextModel": ("CLIPTextConfig", _T, set()),
    "SiglipVisionModel": ("SiglipVisionConfig", _V, _SIGLIPS),
    "SiglipModel": ("SiglipConfig", dict(vision_config=_V, text_config=_T), _SIGLIPS),
    "SiglipTextModel": ("SiglipTextConfig", _T, set()),
    # CLIP's tower copied under other names: the same network, read as CLIP's
    "MetaClip2VisionModel": ("MetaClip2VisionConfig", _V, _CLIPS),
    "CLIPSegVisionModel": ("CLIPSegVisionConfig", _V, _CLIPS),
    "ChineseCLIPVisionModel": ("ChineseCLIPVisionConfig", _V, _CLIPS),
    "AltCLIPVisionModel": ("AltCLIPVisionConfig", _V, _CLIPS),
    # Siglip2's patch embedding is a Linear over flattened patches: its names are SigLIP's, the shapes refuse it
    "Siglip2VisionModel": ("Siglip2VisionConfig", dict(_V, num_patches=16), _SIGLIPS),
    "ViTModel": ("ViTConfig", _V, set()), "DeiTModel": ("DeiTConfig", _V, set()),
    "Dinov2Model": ("Dinov2Config", _V, set()), "BeitModel": ("BeitConfig", _V, set()),
    "SwinModel": ("SwinConfig", _SW, set()), "ConvNextModel": ("ConvNextConfig", _C, set()),
    "ResNetModel": ("ResNetConfig", _C, set()),
}


def _files(cls: str, path: Path) -> list[set[str]]:
    """The keys of ``cls``'s tiny model: as ``save_pretrained`` writes them, and in memory."""
    from safetensors import safe_open

    config, options, _ = _MODELS[cls]
    model = getattr(transformers, cls)(getattr(transformers, config)(**options))
    model.save_pretrained(path)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return [set(f.keys()), set(model.state_dict())]


def _registered() -> list[Any]:
    from zooadapt.host.layouts import registered_layouts

    return list(registered_layouts())


@pytest.mark.slow
@pytest.mark.parametrize("cls", list(_MODELS))
def test_each_detect_matches_its_own_models_files_only(cls, tmp_path):
    """Build options come from every layout whose detect matches a file: a key another model's files
    hold would build that model with these options. The CLIP and SigLIP layouts recognise their own
    towers' files only, and no other layout recognises theirs (timm-checkpoint-filter aside: it is
    offered every file of the timm family and recognises one only by converting it)."""
    if not hasattr(transformers, cls):
        pytest.skip(f"this transformers has no {cls}")
    sets = _files(cls, tmp_path / cls)
    layouts = _registered()
    assert {lay.name for lay in layouts} >= LAYOUTS
    matched = {lay.name for lay in layouts if any(lay.matches(s) for s in sets)} - {"timm-checkpoint-filter"}
    expected = _MODELS[cls][2]
    if expected:  # a CLIP or SigLIP file: its own layouts, no other
        assert matched == expected
    else:  # another model's file: none of these
        assert not matched & LAYOUTS


@pytest.mark.slow
def test_siglip2s_linear_patch_embedding_is_refused(tmp_path):
    """Siglip2VisionModel keeps SigLIP's names but embeds each patch with a Linear over its flattened
    pixels (and resizes its position embeddings per image): timm's vit_*_siglip_* convolution does not
    take it, and the load says so rather than reshape it."""
    if not hasattr(transformers, "Siglip2VisionModel"):
        pytest.skip("this transformers has no Siglip2VisionModel")
    model = transformers.Siglip2VisionModel(transformers.Siglip2VisionConfig(**_VISION, num_patches=16))
    model.save_pretrained(tmp_path / "siglip2")
    with pytest.raises(zooadapt.ZooadaptError):
        zooadapt.load(_SIGLIP, weights=tmp_path / "siglip2", **dict(_BUILD, num_classes=0))

"""More transformers image models into the timm architectures that compute the same networks: the layouts of
``plugins/hf_more_layouts.py`` (SigLIP's image classifier, Hiera), and the models other layouts already read
(ViTMAE through transformers-vit, Dinov2ForImageClassification's backbone through transformers-dinov2).

Each case builds transformers' own model with a small config shaped as the timm architecture (the same sizes
passed to timm's builder), seeds it, saves it (``save_pretrained``, or in the fast cases its ``state_dict()``
with safetensors' save_file and its config.json) and compares what the loaded timm model computes with
transformers' forward on the same input: logits, or the pooled features where a new head replaces the
classifier. Beside them: each layout's ``detect`` against the other transformers image models' files, and
every registered layout's against these. Two cases run in the fast subset; the others are marked slow.
"""

from __future__ import annotations

import re
import warnings
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

OWN = {"transformers-siglip-classifier", "transformers-hiera"}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models: on a busy machine torch's worker threads cost more than they save. One thread for each
    test, then the number before."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def seeded(model: nn.Module, seed: int, keep: str = "") -> nn.Module:
    """Parameters randn * 0.05, a LayerNorm's scale 1 + randn * 0.05 (as tests/test_transformers_twins.py
    seeds them: signals survive the blocks); parameters whose name holds ``keep`` as built (ViTMAE's fixed
    sin-cos position embeddings). In eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module_name, module in model.named_modules():
            for name, p in module.named_parameters(recurse=False):
                if keep and keep in f"{module_name}.{name}":
                    continue
                value = torch.randn(p.shape, generator=g) * 0.05
                if name == "weight" and isinstance(module, nn.LayerNorm):
                    value += 1.0
                p.copy_(value)
    return model.eval()


Compare = Callable[[Any, Any, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def logits(hf: Any, model: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return model(x), hf(pixel_values=x).logits


def siglip_mean(hf: Any, model: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What SiglipForImageClassification's classifier reads (modeling_siglip.py: torch.mean of the
    post-layernormed tokens), against timm's pre-logits."""
    tokens = hf.vision_model(pixel_values=x).last_hidden_state
    return model.forward_head(model.forward_features(x), pre_logits=True), tokens.mean(dim=1)


def pooled(base: str) -> Compare:
    """transformers' pooler output (Hiera's mean, then layernorm) against timm's pre-logits."""
    def compare(hf: Any, model: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inner = getattr(hf, base) if base else hf
        return model.forward_head(model.forward_features(x), pre_logits=True), inner(pixel_values=x).pooler_output
    return compare


def mae_tokens(hf: Any, model: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ViTMAE's encoder with noise in ascending order: random_masking keeps every token (mask_ratio 0) in
    its own order, the unmasked encoder a fine-tuned MAE runs; against timm's forward_features."""
    inner = getattr(hf, "vit", hf)
    tokens = x.shape[-1] // inner.config.patch_size
    noise = torch.arange(float(tokens * tokens)).expand(len(x), -1)
    return model.forward_features(x), inner(pixel_values=x, noise=noise).last_hidden_state


def dinov2_tokens(hf: Any, model: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return model.forward_features(x), hf.dinov2(pixel_values=x).last_hidden_state


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
    compare: Compare = logits
    size: int = 32
    keep: str = ""  # parameters left as transformers built them


# SigLIP ViT-B/16 at a twelfth of its width, two layers, 4x4 patches of 8 pixels (modeling_siglip.py)
_VISION = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, image_size=32,
               patch_size=8)
_TEXT = dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128, vocab_size=99,
             max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)
_SIGLIP_BUILD = dict(depth=2, embed_dim=64, num_heads=2, img_size=32, patch_size=8, global_pool="avg", fc_norm=False)
_SIGLIP = dict(vision_config=_VISION, text_config=_TEXT)
# Hiera's four stages at a sixth of hiera_tiny's width, a 64-pixel image: 16x16 tokens in 2x2 mask units
# (modeling_hiera.py; timm/models/hiera.py: num_heads 1 and head_mul 2 give HieraConfig's (1, 2, 4, 8))
_HIERA = dict(embed_dim=16, image_size=[64, 64], depths=[1, 2, 1, 1], num_heads=[1, 2, 4, 8])
_HIERA_BUILD = dict(embed_dim=16, num_heads=1, stages=(1, 2, 1, 1), img_size=64)
# ViT-B/16 at a twelfth of its width (modeling_vit_mae.py); its decoder smaller still
_MAE = dict(_VISION, decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
            decoder_intermediate_size=64, mask_ratio=0.0)
_VIT_BUILD = dict(depth=2, embed_dim=64, num_heads=2, img_size=32, patch_size=8)

TWINS: dict[str, Twin] = {
    "siglip-classifier": Twin("transformers-siglip-classifier", "SiglipForImageClassification", "SiglipConfig",
                              dict(_SIGLIP, num_labels=7), "vit_base_patch16_siglip_224", _SIGLIP_BUILD),
    "siglip-new-head": Twin("transformers-siglip-classifier", "SiglipForImageClassification", "SiglipConfig",
                            dict(_SIGLIP, num_labels=7), "vit_base_patch16_siglip_224",
                            dict(_SIGLIP_BUILD, num_classes=5), siglip_mean),
    "hiera-classifier": Twin("transformers-hiera", "HieraForImageClassification", "HieraConfig",
                             dict(_HIERA, num_labels=7), "hiera_tiny_224", _HIERA_BUILD, size=64),
    "hiera-new-head": Twin("transformers-hiera", "HieraForImageClassification", "HieraConfig",
                           dict(_HIERA, num_labels=7), "hiera_tiny_224", dict(_HIERA_BUILD, num_classes=5),
                           pooled("hiera"), size=64),
    "hiera-model": Twin("transformers-hiera", "HieraModel", "HieraConfig", _HIERA, "hiera_tiny_224",
                        dict(_HIERA_BUILD, num_classes=0), pooled(""), size=64),
    # ViTMAE's encoder holds ViT's names: transformers-vit reads it (its decoder unused)
    "vitmae-pretraining": Twin("transformers-vit", "ViTMAEForPreTraining", "ViTMAEConfig", _MAE,
                               "vit_base_patch16_224", dict(_VIT_BUILD, num_classes=0), mae_tokens,
                               keep="position_embeddings"),
    "vitmae-model": Twin("transformers-vit", "ViTMAEModel", "ViTMAEConfig", _MAE, "vit_base_patch16_224",
                         dict(_VIT_BUILD, num_classes=0), mae_tokens, keep="position_embeddings"),
    # Dinov2ForImageClassification: the backbone (its classifier of concat(CLS, mean) no timm head computes)
    "dinov2-classifier": Twin("transformers-dinov2", "Dinov2ForImageClassification", "Dinov2Config",
                              dict(_VISION, num_labels=7), "vit_small_patch14_dinov2",
                              dict(_VIT_BUILD, num_classes=7), dinov2_tokens),
}
FAST = {"siglip-classifier", "hiera-classifier"}  # the two new layouts' own files; the rest: slow


def cases(names: list[str]) -> list[Any]:
    return [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in names]


_saved: dict[tuple[str, str], tuple[Any, Path]] = {}


def saved(name: str, tmp_path_factory: pytest.TempPathFactory, names: str = "hub") -> tuple[Any, Path]:
    """transformers' model of ``TWINS[name]`` and the directory it was saved to, once per session: "hub"
    is ``save_pretrained``; "memory" its ``state_dict()`` written with safetensors' save_file (the names
    save_pretrained writes for these classes, without its first call's cost) and the config.json."""
    twin = TWINS[name]
    if (name, names) not in _saved:
        cfg = getattr(transformers, twin.config_class)(**twin.config)
        model = seeded(getattr(transformers, twin.model_class)(cfg), sum(map(ord, twin.model_class)), twin.keep)
        path = tmp_path_factory.mktemp(re.sub(r"\W", "-", f"{name}-{names}")) / "dir"
        if names == "hub":
            model.save_pretrained(path)
        else:
            from safetensors.torch import save_file

            path.mkdir()
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
            cfg.to_json_file(str(path / "config.json"))
        _saved[name, names] = model, path
    return _saved[name, names]


@pytest.fixture(scope="module")
def fast_files(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The fast cases' transformers models and files, made in the setup (transformers imports a model's
    modeling file on first use, about a second), not in their timed call; and zooadapt's first load (its
    plugins, timm's registry), of a model on meta without weights; then a full garbage collection, which
    the objects transformers made would otherwise trigger in the timed call (a third of a second)."""
    import gc

    for name in sorted(FAST):
        saved(name, tmp_path_factory, "memory")
    zooadapt.load("hiera_tiny_224", pretrained=False, device="meta", **_HIERA_BUILD)
    gc.collect()


def image(size: int) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert ours.shape == theirs.shape
    return float((ours - theirs).abs().max() / theirs.abs().max())


def load(name: str, path: Path, **options: Any) -> Any:
    twin = TWINS[name]
    return zooadapt.load(twin.arch, weights=path, **{**twin.build, **options}).eval()


def layouts_named(model: Any) -> set[str]:
    """The layouts the report names: the one that read the keys, the one that chose the build."""
    notes = model.zooadapt.report.plan.notes
    return {m[1] for n in notes for m in [re.match(r"keys read as the ([\w-]+) layout", n)] if m} | \
           {m[1] for n in notes for m in [re.search(r"\(the ([\w-]+) layout\)", n)] if m}


def unused(model: Any) -> set[str]:
    """The file's keys nothing loaded: unexpected by a rename layout, dropped by a conversion."""
    plan = model.zooadapt.report.plan
    return {m.checkpoint_key for m in [*plan.unexpected, *plan.mappings] if m.model_key is None}


def eps(model: nn.Module) -> set[float]:
    return {m.eps for m in model.modules() if isinstance(m, nn.LayerNorm)}


# -- outputs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", cases(list(TWINS)))
def test_the_timm_twin_computes_what_transformers_computes(name, tmp_path_factory, fast_files):
    """Logits where the file's classifier is timm's head; the pooled features or tokens where a new head
    replaces it (num_classes=5) or the file has none. Relative difference below 1e-5 (measured: at most
    2.1e-7, Hiera's; 0 for SigLIP's classifier, ViTMAE and DINOv2)."""
    twin = TWINS[name]
    hf, path = saved(name, tmp_path_factory, "memory" if name in FAST else "hub")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Dinov2's unused classifier: the test below
        model = load(name, path)
    plan = model.zooadapt.report.plan
    assert twin.layout in layouts_named(model), plan.notes
    assert plan.fits and not plan.missing and plan.backbone_coverage == 1.0
    if twin.compare is logits:  # the file's own classifier, as timm's head
        assert not plan.new_head
    assert eps(model) == {getattr(hf.config, "vision_config", hf.config).layer_norm_eps}  # as its config builds
    with torch.no_grad():
        ours, theirs = twin.compare(hf, model, image(twin.size))
    assert relative(ours, theirs) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vitmae-pretraining", "vitmae-model"])
def test_transformers_5_in_memory_names_load_the_same(name, tmp_path_factory):
    """transformers 5 renames ViTMAE's blocks in memory (conversion_mapping.py: layers.N.attention.q_proj for
    encoder.layer.N.attention.attention.query): a state_dict() in those names loads the same encoder."""
    twin = TWINS[name]
    hf, path = saved(name, tmp_path_factory, "memory")
    model = load(name, path)
    assert twin.layout in layouts_named(model) and model.zooadapt.report.plan.backbone_coverage == 1.0
    with torch.no_grad():
        ours, theirs = twin.compare(hf, model, image(twin.size))
    assert relative(ours, theirs) < 1e-5


@pytest.mark.slow
def test_siglips_classifier_drops_the_pooling_head_it_never_runs(tmp_path_factory):
    """SiglipForImageClassification builds its tower's attention-pooling head (vision_use_head) but its
    forward averages the tokens instead: the conversion drops vision_model.head and says so."""
    _, path = saved("siglip-classifier", tmp_path_factory)
    model = load("siglip-classifier", path)
    assert {k for k in unused(model)} == {k for k in unused(model) if k.startswith("vision_model.head.")}
    assert "vision_model.head.probe" in unused(model)
    assert "classifier.weight" not in unused(model)


@pytest.mark.slow
def test_a_siglip_classifier_builds_the_pooling_its_classifier_reads(tmp_path_factory):
    """Neither a tensor nor SigLIP's config.json says global_pool='avg', fc_norm=False, but the
    classifier does: loaded with no pooling option, the model is built so and computes transformers'
    logits (before: timm's default attention pooling, the classifier left and a random head)."""
    hf, path = saved("siglip-classifier", tmp_path_factory)
    build = {k: v for k, v in _SIGLIP_BUILD.items() if k not in ("global_pool", "fc_norm")}
    model = zooadapt.load("vit_base_patch16_siglip_224", weights=path, **build).eval()
    assert layouts_named(model) == {"transformers-siglip-classifier"}
    assert model.global_pool == "avg" and isinstance(model.fc_norm, torch.nn.Identity) and model.attn_pool is None
    assert model.zooadapt.build_options["global_pool"] == "avg" and model.zooadapt.build_options["fc_norm"] is False
    assert not model.zooadapt.report.plan.new_head
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = hf(pixel_values=x).logits, model(x)
    assert float((got - expected).abs().max() / expected.abs().max()) < 1e-6


@pytest.mark.slow
def test_a_siglip_classifier_into_attention_pooling_leaves_the_classifier(tmp_path_factory):
    """Asked for timm's attention pooling ('map'), which does not compute transformers' mean of the
    post-normed tokens: the classifier is not taken as timm's head; the tower and its pooling head
    load (transformers-siglip-head), the head is new, and the note says what the file's zoo built."""
    _, path = saved("siglip-classifier", tmp_path_factory)
    build = {k: v for k, v in _SIGLIP_BUILD.items() if k not in ("global_pool", "fc_norm")}
    model = zooadapt.load("vit_base_patch16_siglip_224", weights=path, **build, global_pool="map", num_classes=7)
    plan = model.zooadapt.report.plan
    assert layouts_named(model) == {"transformers-siglip-head"}
    assert plan.new_head and {"classifier.weight", "classifier.bias"} <= unused(model)


@pytest.mark.slow
def test_a_siglip_classifier_into_averaging_with_fc_norm_is_refused(tmp_path_factory):
    """global_pool='avg' with timm's fc_norm (its default for 'avg') normalises after the mean, where
    SigLIP's post_layernorm normalises every token before it: the file has nothing for fc_norm, and the
    load says so rather than compute something else."""
    _, path = saved("siglip-classifier", tmp_path_factory)
    with pytest.raises(zooadapt.ZooadaptError, match="fc_norm"):
        zooadapt.load("vit_base_patch16_siglip_224", weights=path, **dict(_SIGLIP_BUILD, fc_norm=None))


@pytest.mark.slow
def test_hiera_takes_the_eps_of_the_files_config(tmp_path):
    """Every LayerNorm of transformers' Hiera takes config.layer_norm_eps: a config with another value
    builds timm's with it, and computes the same."""
    cfg = transformers.HieraConfig(**_HIERA, num_labels=7, layer_norm_eps=1e-5)
    hf = seeded(transformers.HieraForImageClassification(cfg), 3)
    hf.save_pretrained(tmp_path / "hiera")
    model = zooadapt.load("hiera_tiny_224", weights=tmp_path / "hiera", **_HIERA_BUILD).eval()
    assert eps(model) == {1e-5}
    with torch.no_grad():
        assert relative(model(image(64)), hf(pixel_values=image(64)).logits) < 1e-5


@pytest.mark.slow
def test_vitmaes_decoder_is_reported_unused(tmp_path_factory):
    """ViTMAEForPreTraining's encoder loads (the test above); its decoder, which no timm vit_* has, is
    named unused in the report, never read into the encoder."""
    _, path = saved("vitmae-pretraining", tmp_path_factory)
    model = load("vitmae-pretraining", path)
    left = unused(model)
    assert left and all(k.startswith("decoder.") for k in left)
    assert "decoder.decoder_pos_embed" in left


@pytest.mark.slow
def test_dinov2s_classifier_stays_unused_and_the_report_says_so(tmp_path_factory):
    """Dinov2ForImageClassification's classifier reads concat(CLS, mean of the patch tokens) (twice the
    width): no timm head computes it, so the head is new and the report names the classifier unused. (No
    warning says so today, even without num_classes=: pipeline.py's _unplaced_classifier looks for a
    classifier as wide as the head's input only.)"""
    _, path = saved("dinov2-classifier", tmp_path_factory)
    model = load("dinov2-classifier", path, num_classes=None)
    assert model.zooadapt.report.plan.new_head
    assert {"classifier.weight", "classifier.bias"} <= unused(model)
    assert "unused, no place in the model 2: classifier.bias, classifier.weight" in str(model.zooadapt.report)


# -- detect ---------------------------------------------------------------------------------------

# other transformers image classes, tiny, and the layouts of this module that may read their files: the
# tower layouts' classes read by none of them; SiglipModel's and SiglipVisionModel's files by the SigLIP
# classifier's (the same detect: it asks their build of them, and its conversion applies only to a classifier)
_V = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
_SW = dict(embed_dim=16, depths=[1, 1], num_heads=[1, 2], image_size=32, patch_size=4, window_size=4)
_C = dict(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 32, 32])
_OTHERS: dict[str, tuple[str, dict[str, Any], set[str]]] = {
    "ViTModel": ("ViTConfig", _V, set()), "DeiTModel": ("DeiTConfig", _V, set()),
    "Dinov2Model": ("Dinov2Config", _V, set()), "BeitModel": ("BeitConfig", _V, set()),
    "SwinModel": ("SwinConfig", _SW, set()), "Swinv2Model": ("Swinv2Config", _SW, set()),
    "CLIPVisionModel": ("CLIPVisionConfig", _V, set()), "ConvNextModel": ("ConvNextConfig", _C, set()),
    "ViTMAEModel": ("ViTMAEConfig", _V, set()),
    "SiglipVisionModel": ("SiglipVisionConfig", _V, set()),
}


def _files(cls: str, config: str, options: dict[str, Any], path: Path) -> list[set[str]]:
    """The keys of ``cls``'s tiny model: as ``save_pretrained`` writes them, and in memory."""
    from safetensors import safe_open

    model = getattr(transformers, cls)(getattr(transformers, config)(**options))
    model.save_pretrained(path)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return [set(f.keys()), set(model.state_dict())]


def _registered() -> list[Any]:
    from zooadapt.host.layouts import registered_layouts

    return [lay for lay in registered_layouts() if lay.name != "timm-checkpoint-filter"]  # it matches every file


@pytest.mark.slow
@pytest.mark.parametrize("cls", list(_OTHERS))
def test_these_detects_match_no_other_models_files(cls, tmp_path):
    """A layout whose detect matches another model's file lends it no build option (the layout that reads
    a file builds it), but its options enter the first build and cost a second one: each detect names a
    key of its own model's files (the base models here hold no ``classifier``)."""
    config, options, expected = _OTHERS[cls]
    sets = _files(cls, config, options, tmp_path / cls)
    mine = [lay for lay in _registered() if lay.name in OWN]
    assert {lay.name for lay in mine} == OWN
    assert {lay.name for lay in mine if any(lay.matches(s) for s in sets)} == expected


# the layouts every registered layout's detect may match in each of these files: SigLIP's classifier is
# SigLIP's tower (transformers-siglip's two layouts ask the same build of it); ViTMAE's encoder is ViT's
_READ_BY = {
    "siglip-classifier": {"transformers-siglip", "transformers-siglip-head", "transformers-siglip-classifier"},
    # the SigLIP classifier's detect is any ``classifier``: its options are for vit_*_siglip_* alone
    "hiera-classifier": {"transformers-hiera", "transformers-siglip-classifier"}, "hiera-model": {"transformers-hiera"},
    "vitmae-pretraining": {"transformers-vit"}, "vitmae-model": {"transformers-vit"},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(_READ_BY))
def test_no_other_layout_recognises_these_files(name, tmp_path_factory):
    from safetensors import safe_open

    hf, path = saved(name, tmp_path_factory)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        sets = [set(f.keys()), set(hf.state_dict())]
    assert {lay.name for lay in _registered() if any(lay.matches(s) for s in sets)} == _READ_BY[name]

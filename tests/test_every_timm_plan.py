"""Every timm architecture, planned from its own layout: and the ones published without a head.

A file's layout is timm's own ``state_dict()`` of the architecture as ``timm.create_model``
builds it (the names and shapes its published files have), under a random wrapper, its keys
shuffled. ``plan_for`` must read it as it is: every key onto the model key it names, the
whole model filled, no new head. That holds for the 145 architectures (of 1,371 in timm
1.0.31) whose published weights carry no classifier (DINOv2, DINOv3, SigLIP, EVA02, SAM, the
CLIP ResNets, AIMv2: timm's pretrained config says ``num_classes=0``) only when ``load(name)``
builds them headless as timm does, rather than with a random 1000-way head
(``ModelEntry.headless``).

The sweeps over every architecture, and over every pretrained tag whose head is not its
architecture's, are planning only, on ``meta`` (no tensor is made): about 0.4 s per architecture.
The fast subset plans one per kind. Real loads of a
headless architecture check the outputs against timm's own model.
"""

from __future__ import annotations

import random
import warnings

import pytest
import timm
import torch
from generators import _build_timm_on_meta, arch_seed, key_components, random_prefix
from timm.models import get_pretrained_cfg

import zooadapt
from zooadapt.errors import RegistryError
from zooadapt.plugin_api import get_registry


def _headless(arch: str) -> bool:
    cfg = get_pretrained_cfg(arch)
    return cfg is not None and cfg.num_classes == 0


ARCHS = sorted(timm.list_models())
HEADLESS = [a for a in ARCHS if _headless(a)]
TAGS = sorted(t for t in timm.list_pretrained()
              if get_pretrained_cfg(t).num_classes != get_pretrained_cfg(t.partition(".")[0]).num_classes)
"""Pretrained tags whose published head differs from their architecture's default (191 in timm 1.0.31:
ImageNet-22k and -12k heads, CLIP projections, 37 published without a head where the default has one)."""
FAST = ("test_vit", "vit_small_patch14_dinov2", "resnet50_clip_gap")
"""One with a head, two published without: the fast subset's share of the sweep."""


def _wrapped_layout(arch: str) -> tuple[str, dict[str, tuple[int, ...]], object]:
    """timm's own names and shapes for ``arch`` under a random wrapper, keys shuffled (seeded)."""
    model = _build_timm_on_meta(arch)
    state = model.state_dict()
    rng = random.Random(arch_seed(arch, "every-timm-plan"))
    prefix = random_prefix(rng, avoid=key_components(state))
    keys = list(state)
    rng.shuffle(keys)
    return prefix, {prefix + k: tuple(state[k].shape) for k in keys}, model


def _plan_reads_its_own_layout(arch: str) -> None:
    prefix, shapes, model = _wrapped_layout(arch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's own deprecation notes for some architectures
        plan = zooadapt.plan_for(arch, shapes)
    misread = [(m.checkpoint_key, m.model_key, m.status.value) for m in plan.mappings
               if m.status.value != "loaded" or m.model_key != m.checkpoint_key[len(prefix):]]
    assert misread == [] and plan.coverage == 1.0, (arch, plan.coverage, misread[:4])
    assert plan.new_head == [] and not plan.missing, (arch, plan.new_head, plan.missing[:4])
    headless = getattr(model, "num_classes", None) == 0
    assert (entry_headless := get_registry().entry(arch).headless) == _headless(arch), (arch, entry_headless)
    said = any("carry no classifier" in n for n in plan.notes)
    assert plan.headless == said == (headless and bool(plan.head)), (plan.headless, plan.head, plan.notes)


@pytest.mark.parametrize("arch", [a for a in ARCHS if a not in FAST], ids=str)
@pytest.mark.slow
@pytest.mark.sweep
def test_every_timm_architecture_plans_its_own_layout_under_a_wrapper(arch):
    _plan_reads_its_own_layout(arch)


@pytest.mark.parametrize("tag", TAGS, ids=str)
@pytest.mark.slow
@pytest.mark.sweep
def test_a_pretrained_tag_with_a_head_of_its_own_plans_its_own_layout(tag):
    """``vit_base_patch16_224.augreg_in21k`` is built with its 21,843-class head, ``beit3_base_patch16_224.pt``
    without one: each tag's entry takes its head from the tag's own pretrained config."""
    _plan_reads_its_own_layout(tag)


@pytest.mark.parametrize("arch", FAST)
def test_a_timm_layout_under_a_wrapper_is_read_as_it_is(arch):
    _plan_reads_its_own_layout(arch)


def test_the_headless_architectures_are_the_ones_timm_builds_headless():
    """The entries' flag against timm's own build: its model has no head (``num_classes == 0``)
    exactly where its pretrained config publishes none (a sample across the kinds, on meta)."""
    assert 100 <= len(HEADLESS) < len(ARCHS) / 4  # 145 of 1,371 in timm 1.0.31
    sample = random.Random(0).sample(HEADLESS, 8) + random.Random(0).sample(sorted(set(ARCHS) - set(HEADLESS)), 8)
    for arch in sample:
        assert (getattr(_build_timm_on_meta(arch), "num_classes", None) == 0) == _headless(arch), arch


# -- a headless architecture, loaded for real ---------------------------------------------------

ARCH, SIZE = "vit_small_patch14_dinov2", 98


@pytest.fixture(scope="module")
def published() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """DINOv2 as timm builds it for its published file (no head), seeded, at a small image size."""
    torch.manual_seed(0)
    model = timm.create_model(ARCH, img_size=SIZE).eval()
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def test_a_headless_file_loads_as_the_published_model_not_with_a_random_head(published):
    reference, state = published
    model = zooadapt.load(ARCH, weights=state, img_size=SIZE).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    assert torch.equal(model(x), reference(x)) and model(x).shape == (2, reference.num_features)
    report = model.zooadapt.report
    assert report.plan.new_head == [] and report.plan.coverage == 1.0 and report.plan.headless
    assert any("carry no classifier" in n and "num_classes=N adds" in n for n in report.plan.notes)
    assert "pooled embeddings, no head" in str(report)


def test_asked_for_classes_a_headless_architecture_gets_a_new_head_and_its_fine_tune_keeps_it(published, tmp_path):
    _, state = published
    tuned = zooadapt.load(ARCH, weights=state, img_size=SIZE, num_classes=5, freeze="all")
    assert tuned.zooadapt.report.plan.new_head == ["head.weight", "head.bias"] and tuned.head.out_features == 5
    torch.nn.init.normal_(tuned.head.weight)  # a trained head
    torch.save({"model": tuned.state_dict(), "epoch": 3}, tmp_path / "tuned.pth")
    again = zooadapt.load(ARCH, weights=tmp_path / "tuned.pth", img_size=SIZE).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    assert again.zooadapt.report.plan.kept_head == 5 and torch.equal(again(x), tuned.eval()(x))


def test_a_headless_architecture_with_random_weights_is_built_headless_too():
    model = zooadapt.load(ARCH, pretrained=False, img_size=SIZE)
    assert isinstance(model.head, torch.nn.Identity)
    assert zooadapt.load(ARCH, pretrained=False, img_size=SIZE, num_classes=3).head.out_features == 3


def test_a_file_with_extra_keys_but_no_classifier_is_still_loaded_headless(published):
    """The original DINOv2 release's file holds ``mask_token`` (used only in training), which timm's
    model lacks: left out and said, and the model still has no random head."""
    reference, state = published
    model = zooadapt.load(ARCH, weights={**state, "mask_token": torch.zeros(1, 384)}, img_size=SIZE,
                          partial=True).eval()
    assert model.zooadapt.report.plan.new_head == [] and isinstance(model.head, torch.nn.Identity)
    x = torch.randn(1, 3, SIZE, SIZE)
    assert torch.equal(model(x), reference(x))


def test_a_registry_entry_may_say_its_published_weights_are_headless(tmp_path, monkeypatch):
    """Any family's entry, not only timm's: a self-supervised ResNet-50 saved without its fc."""
    import torchvision

    from zooadapt.host.registry import reset_registry

    torch.manual_seed(1)
    reference = torchvision.models.resnet50().eval()
    torch.save({k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}, tmp_path / "ssl.pth")
    registry = tmp_path / "team.toml"
    registry.write_text(f'[models.ssl_r50]\nfamily = "resnet"\narch = "resnet50"\npath = "{tmp_path / "ssl.pth"}"\n'
                        "headless = true\n")
    monkeypatch.setenv("ZOOADAPT_REGISTRY", str(registry))
    reset_registry()
    model = zooadapt.load("ssl_r50").eval()
    reference.fc = torch.nn.Identity()
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(model(x), reference(x)) and model(x).shape == (1, 2048)
    assert zooadapt.load("ssl_r50", num_classes=4).fc.out_features == 4
    registry.write_text('[models.ssl_r50]\nfamily = "resnet"\narch = "resnet50"\nheadless = "yes"\n')
    reset_registry()
    with pytest.raises(RegistryError, match=r"headless = 'yes': write true or false"):
        zooadapt.load("ssl_r50")

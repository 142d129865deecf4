"""The sweep of heads: a model fine-tuned to another class count comes back whole.

For every swept architecture (``generators.swept_architectures()``): a model built by the zoo's
own builder with a seeded class count (2-50) and seeded weights, saved in each file form
(``generators.FORMS``) with a transformers ``config.json`` beside it, loads with
``num_classes`` left out as that very model: the same tensors, the same outputs, its class
count, a plan note saying the head was kept, and the labels from ``id2label``. An explicit other
``num_classes`` gives a new head of that size; transformers' placeholder names ``LABEL_i`` are
no labels. Last, checkpoints written by transformers' own ``save_pretrained`` and a Hub
repository. The fast subset is ``generators.fast_architectures()``, each in one form.
"""

from __future__ import annotations

import io
import json
import uuid

import generators as g
import pytest
import torch

import zooadapt
from zooadapt.testing import safetensors_bytes, seeded_state_dict

SWEPT = g.swept_architectures()
FAST = g.fast_architectures()
FAST_FORM = {arch: g.FORMS[i % len(g.FORMS)] for i, arch in enumerate(FAST)}
"""Each fast architecture in one form, the forms taken in turn so that all of them run fast."""
OUTPUT_TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
"""The same tensors give outputs equal up to float rounding: a tensor read from safetensors is
not 64-byte aligned, which can change the order of a vectorised kernel's additions (about 1e-8)."""

KNOWN_FAILURES: dict[tuple[str, str, str], str] = {
}
"""(test, architecture, variant) -> why zooadapt fails it: each such case is ``xfail(strict=True)``.
Architectures zooadapt cannot load at all are ``generators.BROKEN``."""


def cases(test: str, variants: tuple[str, ...], fast: dict[str, str]) -> list[object]:
    return g.sweep_cases(test, variants, fast, KNOWN_FAILURES)


def outputs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model.eval()(x)
    return getattr(out, "logits", out)


def differing(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, v in reference.items() if k not in state or not torch.equal(state[k], v)]


# -- the fine-tuned head, in every file form ---------------------------------------------------------


@pytest.mark.parametrize(("arch", "form"), cases("kept_head", g.FORMS, FAST_FORM))
def test_a_fine_tuned_head_is_kept_with_its_labels(arch, form, tmp_path):
    classes = g.class_count(arch)
    source = g.seeded_model(arch, classes, seed=g.arch_seed(arch, "head"))
    labels = g.class_names(classes, seed=g.arch_seed(arch, "labels"))
    weights = g.write_checkpoint(source.state_dict(), form, tmp_path / form, labels=labels)

    model = zooadapt.load(arch, weights=weights)
    plan = model.zooadapt.report.plan
    assert model.zooadapt.num_classes == classes
    assert plan.kept_head == classes and not plan.new_head
    assert any(f"kept the checkpoint's trained {classes}-class head" in note for note in plan.notes), plan.notes
    assert model.zooadapt.labels == tuple(labels)
    assert set(model.state_dict()) == set(source.state_dict())
    assert differing(model.state_dict(), source.state_dict()) == []
    x = g.sample_input(arch, source)
    expected = outputs(source, x)
    assert expected.shape == (1, classes)
    torch.testing.assert_close(outputs(model, x), expected, **OUTPUT_TOLERANCE)


@pytest.mark.parametrize(("arch", "form"), cases("new_head", ("safetensors",), {"test_convnext": "safetensors"}))
def test_an_explicit_other_class_count_gives_a_new_head(arch, form, tmp_path):
    classes = g.class_count(arch)
    wanted = classes + 1 + g.arch_seed(arch, "wanted") % 20
    source = g.seeded_model(arch, classes, seed=g.arch_seed(arch, "head"))
    weights = g.write_checkpoint(source.state_dict(), form, tmp_path, labels=g.class_names(classes, 0))
    # the head's tensors: those whose shape depends on the class count
    built, other = g.build(arch, classes, meta=True).state_dict(), g.build(arch, wanted, meta=True).state_dict()
    head = {k for k in built if built[k].shape != other[k].shape}
    assert head

    model = zooadapt.load(arch, weights=weights, num_classes=wanted)
    plan = model.zooadapt.report.plan
    assert model.zooadapt.num_classes == wanted and not plan.kept_head
    assert head <= set(plan.new_head), plan.new_head
    assert model.zooadapt.labels is None  # the file's names are for its own head, not for this one
    state = model.state_dict()
    assert all(state[k].shape == other[k].shape for k in plan.new_head)
    assert differing(state, {k: v for k, v in source.state_dict().items() if k not in plan.new_head}) == []
    assert outputs(model, g.sample_input(arch, source)).shape == (1, wanted)


SECOND_HEADS = (*g.DISTILLED, "volo_d1_224")
"""Architectures whose ``reset_classifier`` replaces two classifiers (``head_dist``, ``aux_head``)."""


@pytest.mark.slow
@pytest.mark.parametrize("arch", SECOND_HEADS)
def test_every_classifier_of_the_architecture_is_replaced_trained_and_removed(arch, tmp_path):
    """As timm's ``reset_classifier`` does: every tensor whose shape follows the class count is a
    new head, trainable under ``freeze="all"``; ``num_classes=0`` removes them all, giving what
    timm's ``reset_classifier(0)`` gives."""
    source = g.seeded_model(arch, 1000, seed=g.arch_seed(arch, "two-heads"))
    path = tmp_path / "source.pth"
    torch.save(source.state_dict(), path)
    built, other = g.build(arch, 1000, meta=True).state_dict(), g.build(arch, 7, meta=True).state_dict()
    head = {k for k in built if built[k].shape != other[k].shape}
    assert len({k.split(".")[0] for k in head}) == 2  # two classifiers, as the architecture is chosen for

    heads = tuple(sorted({k.split(".")[0] + "." for k in head}))
    model = zooadapt.load(arch, weights=path, num_classes=7, freeze="all")
    assert head <= set(model.zooadapt.report.plan.new_head)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if n.startswith(heads)}
    x = g.sample_input(arch, source)
    assert outputs(model, x).shape[-1] == 7

    pooled = zooadapt.load(arch, weights=path, num_classes=0)
    source.reset_classifier(0)
    torch.testing.assert_close(outputs(pooled, x), outputs(source, x), **OUTPUT_TOLERANCE)


@pytest.mark.parametrize(("arch", "form"), cases("placeholder_labels", ("transformers_dir",),
                                                 {"test_vit": "transformers_dir"}))
def test_placeholder_names_are_no_labels(arch, form, tmp_path):
    classes = g.class_count(arch)
    source = g.seeded_model(arch, classes, seed=g.arch_seed(arch, "head"))
    weights = g.write_checkpoint(source.state_dict(), form, tmp_path, labels=g.placeholder_labels(classes))
    model = zooadapt.load(arch, weights=weights)
    assert model.zooadapt.num_classes == classes and model.zooadapt.report.plan.kept_head == classes
    assert model.zooadapt.labels is None


@pytest.mark.slow
def test_labels_that_do_not_match_the_head_are_not_taken(tmp_path):
    """A config.json whose id2label has another count than the head describes some other model."""
    source = g.seeded_model("test_convnext", 6, seed=1)
    weights = g.write_checkpoint(source.state_dict(), "pth", tmp_path, labels=g.class_names(9, 0))
    model = zooadapt.load("test_convnext", weights=weights)
    assert model.zooadapt.num_classes == 6 and model.zooadapt.labels is None


def test_labels_come_back_from_a_zooadapt_saved_directory(tmp_path):
    source = g.seeded_model("test_convnext", 4, seed=2)
    weights = g.write_checkpoint(source.state_dict(), "safetensors", tmp_path / "ft")
    loaded = zooadapt.load("test_convnext", weights=weights)
    assert loaded.zooadapt.labels is None  # nothing beside the file names the classes
    saved = zooadapt.save(loaded, tmp_path / "saved", labels=["ant", "bee", "cow", "doe"])
    model = zooadapt.load("test_convnext", weights=saved / "model.safetensors")
    assert model.zooadapt.labels == ("ant", "bee", "cow", "doe") and model.zooadapt.report.plan.kept_head == 4
    assert differing(model.state_dict(), source.state_dict()) == []


@pytest.mark.slow
def test_labels_from_the_same_hub_repository(hub):
    source = g.seeded_model("test_vit", 5, seed=3)
    repo = f"test/finetuned-{uuid.uuid4().hex[:8]}"
    names = g.class_names(5, seed=4)
    hub.add_file(repo, "model.safetensors", safetensors_bytes(source.state_dict()))
    hub.add_file(repo, "config.json", json.dumps({"id2label": dict(enumerate(names))}).encode())
    model = zooadapt.load("test_vit", weights=f"hf://{repo}/model.safetensors")
    assert model.zooadapt.num_classes == 5 and model.zooadapt.labels == tuple(names)
    torch.testing.assert_close(outputs(model, g.sample_input("test_vit", source)),
                               outputs(source, g.sample_input("test_vit", source)), **OUTPUT_TOLERANCE)


# -- checkpoints written by transformers itself -------------------------------------------------------


def _transformers_case(kind: str, labels: dict[int, str] | None):
    """(zooadapt name, the transformers model, input side) at the size of the zooadapt architecture."""
    from transformers import (
        ConvNextConfig,
        ConvNextForImageClassification,
        ResNetConfig,
        ResNetForImageClassification,
        ViTConfig,
        ViTForImageClassification,
    )

    named = {"num_labels": 7} | ({"id2label": labels, "label2id": {v: k for k, v in labels.items()}} if labels else {})
    if kind == "resnet18":  # microsoft/resnet-18's config.json
        config = ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512],
                              downsample_in_first_stage=False, **named)
        return "resnet18", ResNetForImageClassification(config), 64
    if kind == "resnet50":  # microsoft/resnet-50's
        config = ResNetConfig(layer_type="bottleneck", depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048],
                              downsample_in_bottleneck=False, **named)
        return "resnet50", ResNetForImageClassification(config), 64
    if kind == "convnext_tiny":  # facebook/convnext-tiny-224's (convnext_atto's MLP is a 1x1 conv in timm)
        config = ConvNextConfig(depths=[3, 3, 9, 3], hidden_sizes=[96, 192, 384, 768], **named)
        return "convnext_tiny", ConvNextForImageClassification(config), 64
    # google/vit-base-patch16-224's layout at vit_tiny's size
    config = ViTConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                       image_size=224, patch_size=16, layer_norm_eps=1e-6, **named)
    return "vit_tiny_patch16_224", ViTForImageClassification(config), 224


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["resnet18", "resnet50", "convnext_tiny", "vit_tiny_patch16_224"])
@pytest.mark.parametrize("labelled", [True, False], ids=["id2label", "placeholders"])
def test_a_transformers_fine_tune_keeps_its_head_and_labels(kind, labelled, tmp_path):
    labels = {i: f"grade_{i}" for i in range(7)} if labelled else None
    name, hf, side = _transformers_case(kind, labels)
    hf.load_state_dict(seeded_state_dict(hf, 21))
    hf.eval().save_pretrained(tmp_path / "ft")
    written = json.loads((tmp_path / "ft" / "config.json").read_text())["id2label"]
    assert len(written) == 7  # transformers writes LABEL_0… when no names were given

    model = zooadapt.load(name, weights=tmp_path / "ft")
    assert model.zooadapt.num_classes == 7 and model.zooadapt.report.plan.kept_head == 7
    assert model.zooadapt.labels == (tuple(labels.values()) if labels else None)
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(outputs(model, x), outputs(hf, x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_a_transformers_pickle_in_a_hub_repository_keeps_its_head(hub):
    """``hf://org/repo``: transformers' older repos hold ``pytorch_model.bin`` and ``config.json``."""
    labels = {i: f"leaf_{i}" for i in range(7)}
    name, hf, side = _transformers_case("resnet18", labels)
    hf.load_state_dict(seeded_state_dict(hf, 22))
    buffer = io.BytesIO()
    torch.save(hf.state_dict(), buffer)
    repo = f"test/hf-resnet18-{uuid.uuid4().hex[:8]}"
    hub.add_file(repo, "pytorch_model.bin", buffer.getvalue())
    hub.add_file(repo, "config.json", hf.config.to_json_string().encode())
    model = zooadapt.load(name, weights=f"hf://{repo}")
    assert model.zooadapt.num_classes == 7 and model.zooadapt.labels == tuple(labels.values())
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(outputs(model, x), outputs(hf, x), rtol=1e-4, atol=1e-4)

"""Hugging Face transformers' RegNet (``RegNetForImageClassification``, e.g. facebook/regnet-y-040)
into timm's ``regnetx_*`` / ``regnety_*``: the ``transformers-regnet`` layout of ``plugins/hf_layouts.py``.

transformers' port (models/regnet/modeling_regnet.py) holds timm's tensors one for one, but each
block's ``shortcut`` comes before its ``layer`` and has ``layer.0``'s shape, so only the layout's
names pair them. Each case builds transformers' own model with the timm architecture's widths,
depths and group width (X blocks without squeeze-excitation, Y blocks with it), seeds it, saves it
with ``save_pretrained`` and compares what the loaded timm model computes with transformers' logits.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import zooadapt
from zooadapt.testing import seeded_state_dict

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")

# timm's RegNetCfg (timm/models/regnet.py) as transformers' RegNetConfig: the stage widths and depths
# timm derives from w0/wa/wm/depth, and its group size (transformers: groups = width // groups_width).
# Both build a 32-channel 3x3 stride-2 stem, BatchNorm eps 1e-5, ReLU, the stride in the grouped
# 3x3 convolution, a 1x1 strided shortcut and SE reduced to round(in_channels / 4).
CONFIGS = {
    "regnetx_002": dict(layer_type="x", hidden_sizes=[24, 56, 152, 368], depths=[1, 1, 4, 7], groups_width=8),
    "regnetx_004": dict(layer_type="x", hidden_sizes=[32, 64, 160, 384], depths=[1, 2, 7, 12], groups_width=16),
    "regnety_002": dict(layer_type="y", hidden_sizes=[24, 56, 152, 368], depths=[1, 1, 4, 7], groups_width=8),
    # facebook/regnet-y-040: transformers' RegNetConfig defaults
    "regnety_040": dict(layer_type="y", hidden_sizes=[128, 192, 512, 1088], depths=[2, 6, 12, 2], groups_width=64),
}
ARCHS = [a if a == "regnety_002" else pytest.param(a, marks=pytest.mark.slow) for a in CONFIGS]  # fast: one


def seeded(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The model with seeded values (variances positive), in eval mode."""
    model.load_state_dict(seeded_state_dict(model, seed))
    return model.eval()


_saved: dict[tuple[str, str], tuple[torch.nn.Module, Path]] = {}


def saved(arch: str, tmp_path_factory: pytest.TempPathFactory, cls: str = "RegNetForImageClassification"
          ) -> tuple[torch.nn.Module, Path]:
    """transformers' model for ``arch`` and the directory ``save_pretrained`` wrote it to (once per session)."""
    if (arch, cls) not in _saved:
        config = transformers.RegNetConfig(embedding_size=32, num_labels=1000, **CONFIGS[arch])
        model = seeded(getattr(transformers, cls)(config), sum(map(ord, arch)))
        path = tmp_path_factory.mktemp(f"{arch}-{cls}") / "dir"
        model.save_pretrained(path)  # model.safetensors + config.json
        _saved[arch, cls] = model, path
    return _saved[arch, cls]


def image() -> torch.Tensor:
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def assert_read_as_the_layout(model: torch.nn.Module) -> None:
    report = model.zooadapt.report
    assert any("keys read as the transformers-regnet layout" in n for n in report.plan.notes)
    assert "renamed" in str(report) and "transformers-regnet layout" in str(report)


@pytest.mark.parametrize("arch", ARCHS)
def test_transformers_regnet_gives_the_same_outputs(arch, tmp_path_factory):
    hf, path = saved(arch, tmp_path_factory)
    model = zooadapt.load(arch, weights=path).eval()
    assert isinstance(model, timm.models.regnet.RegNet)
    plan = model.zooadapt.report.plan
    assert plan.fits and plan.coverage == 1.0
    assert not plan.missing and not plan.unexpected and not plan.new_head
    assert_read_as_the_layout(model)
    with torch.no_grad():
        torch.testing.assert_close(model(image()), hf(image()).logits, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["regnetx_002", "regnety_002"])
def test_the_shortcut_fills_timms_downsample_not_conv1(arch, tmp_path_factory):
    """Same shape, other order: pairing by order would swap them; the names do not."""
    hf, path = saved(arch, tmp_path_factory)
    model = zooadapt.load(arch, weights=path)
    block = hf.regnet.encoder.stages[1].layers[0]
    assert block.shortcut.convolution.weight.shape == block.layer[0].convolution.weight.shape
    assert torch.equal(model.s2.b1.downsample.conv.weight, block.shortcut.convolution.weight)
    assert torch.equal(model.s2.b1.conv1.conv.weight, block.layer[0].convolution.weight)
    assert torch.equal(model.s2.b1.conv3.bn.running_var, block.layer[-1].normalization.running_var)
    if arch.startswith("regnety"):
        assert torch.equal(model.s2.b1.se.fc1.weight, block.layer[2].attention[0].weight)
        assert torch.equal(model.s2.b1.se.fc2.bias, block.layer[2].attention[2].bias)
    else:
        assert isinstance(model.s2.b1.se, torch.nn.Identity)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["regnetx_002", "regnetx_004", "regnety_002"])
def test_a_new_head_replaces_transformers_classifier(arch, tmp_path_factory):
    hf, path = saved(arch, tmp_path_factory)
    model = zooadapt.load(arch, weights=path, num_classes=5).eval()
    plan = model.zooadapt.report.plan
    assert plan.fits and plan.backbone_coverage == 1.0 and not plan.missing
    assert sorted(plan.new_head) == ["head.fc.bias", "head.fc.weight"]
    assert {m.checkpoint_key for m in plan.dropped} == {"classifier.1.weight", "classifier.1.bias"}
    assert model.head.fc.out_features == 5
    with torch.no_grad():
        assert model(image()).shape == (1, 5)
        torch.testing.assert_close(model.forward_features(image()), hf.regnet(image()).last_hidden_state,
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["regnetx_002", "regnetx_004", "regnety_002"])
def test_load_without_a_name_identifies_the_timm_architecture(arch, tmp_path_factory):
    """X and Y of one size share every shape but the SE's: the file's tensors tell them apart."""
    hf, path = saved(arch, tmp_path_factory)
    model = zooadapt.load(weights=path).eval()
    report = model.zooadapt.report
    assert report.arch.partition(".")[0] == arch  # timm's name, with the tag of its registry weights
    assert any(f"architecture '{arch}' identified" in n for n in report.plan.notes)
    assert report.plan.fits and report.plan.coverage == 1.0
    assert_read_as_the_layout(model)
    with torch.no_grad():
        torch.testing.assert_close(model(image()), hf(image()).logits, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_headless_regnet_model_loads_its_backbone(tmp_path_factory):
    """``RegNetModel`` saves without the ``regnet.`` prefix and without a classifier."""
    hf, path = saved("regnety_002", tmp_path_factory, "RegNetModel")
    model = zooadapt.load("regnety_002", weights=path, num_classes=5).eval()
    plan = model.zooadapt.report.plan
    assert plan.fits and plan.backbone_coverage == 1.0 and not plan.unexpected
    assert sorted(plan.new_head) == ["head.fc.bias", "head.fc.weight"]
    assert_read_as_the_layout(model)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(image()), hf(image()).last_hidden_state,
                                   rtol=1e-5, atol=1e-6)

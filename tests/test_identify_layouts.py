"""Identification as a named load reads the file: its layout's build, its layout's head.

``load(weights=FILE)`` without a name loads the architecture ``identify`` finds the file fits
completely. A named load reads a file through its layout in two ways identification must too:

1. **The build a layout asks for** (``Layout.build_options``, ``layout_build``): an MAE fine-tune
   (facebookresearch/mae ``models_vit.py``, ``global_pool=True``: ``fc_norm``, no final ``norm``)
   is timm's ViT built with ``global_pool='avg'``; its default build has ``norm`` and no
   ``fc_norm``. ViT-Ti/S/B and DeiT-S, full depth (an unnamed load cannot pass ``depth=``: a
   two-block file is refused with the advice to name it with ``depth=N``), in MAE's checkpoint
   dict, under DDP's ``module.``, and timm's own ``global_pool='avg'`` state dict.
2. **A layout's keys beside a family's rule**: an mmpretrain ResNet (``backbone.`` + ``head.fc.``)
   fits by the resnet family's ``StripPrefix('backbone.')``, with ``head.fc`` left over; the
   ``mmpretrain-resnet`` layout places that too, and the file fits completely. ResNet-18/34/50,
   5 and 1000 classes.

Each case: the identified architecture, the file's head kept, and the unnamed load computes what
the named load computes (the same tensors, bit for bit). A refusal never says a candidate
"fits", and never rounds a share short of whole up to 100%.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision

import zooadapt
from zooadapt.contract.errors import IncompatibleCheckpointError
from zooadapt.loading.identification import Identification, Match, architecture_for
from zooadapt.testing import seeded_state_dict

CLASSES = 7


def _seeded(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    state = seeded_state_dict(model, seed)
    model.load_state_dict(state)
    return state


def _mae(arch: str, depth: int | None = None) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """``arch`` as MAE's ``models_vit.VisionTransformer(global_pool=True)``: timm's ViT with its
    final ``norm`` deleted and ``fc_norm`` added, seeded."""
    import timm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = timm.create_model(arch, pretrained=False, num_classes=CLASSES, **({"depth": depth} if depth else {}))
    model.fc_norm = nn.LayerNorm(model.embed_dim, eps=model.norm.eps)
    del model.norm
    return model.eval(), _seeded(model, 5)


def _mae_forward(mae: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """models_vit.py's forward: the patch tokens' mean, ``fc_norm``, the head."""
    x = mae.patch_embed(x)
    x = torch.cat((mae.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + mae.pos_embed
    for block in mae.blocks:
        x = block(x)
    return mae.head(mae.fc_norm(x[:, 1:, :].mean(dim=1)))


def _write_mae(state: dict[str, torch.Tensor], wrapper: str, folder: Path) -> Path:
    path = folder / "checkpoint-99.pth"
    if wrapper == "mae_checkpoint":  # util/misc.py save_model
        torch.save({"model": state, "optimizer": {}, "epoch": 99, "scaler": {},
                    "args": argparse.Namespace(global_pool=True)}, path)
    else:
        torch.save({wrapper + k: v for k, v in state.items()}, path)
    return path


def _identified(path: Path, arch: str) -> Identification:
    found = zooadapt.identify(path)
    best = found.best
    assert best is not None and best.complete, str(found)
    assert arch in (best.name, *best.same_signature), str(found)
    return found


def _same_as_named(path: Path, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """The unnamed load, checked against the named load of the name it identified."""
    unnamed = zooadapt.load(weights=path).eval()
    plan = unnamed.zooadapt.report.plan
    assert plan.fits and not plan.new_head and not plan.missing and not plan.unexpected, plan
    assert any("identified from the file's tensors" in n for n in plan.notes), plan.notes
    named = zooadapt.load(unnamed.zooadapt.name, weights=path).eval()
    assert named.zooadapt.report.plan.notes == plan.notes[1:]  # the same plan, less the identification's line
    with torch.no_grad():
        out = unnamed(x)
        assert torch.equal(out, named(x))
    return unnamed, out


# -- 1. the build a layout asks for: an average-pooled ViT ------------------------------------------

MAE_CASES = [
    pytest.param("vit_tiny_patch16_224", "mae_checkpoint", id="vit_tiny-mae"),
    pytest.param("vit_tiny_patch16_224", "module.", id="vit_tiny-ddp", marks=pytest.mark.slow),
    pytest.param("deit_small_patch16_224", "mae_checkpoint", id="deit_small-mae", marks=pytest.mark.slow),
    pytest.param("vit_small_patch16_224", "module.", id="vit_small-ddp", marks=pytest.mark.slow),
    pytest.param("vit_base_patch16_224", "mae_checkpoint", id="vit_base-mae", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("arch", "wrapper"), MAE_CASES)
def test_an_mae_fine_tune_is_identified_and_loads_as_named(arch, wrapper, tmp_path):
    mae, state = _mae(arch)
    path = _write_mae(state, wrapper, tmp_path)
    _identified(path, arch)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    model, out = _same_as_named(path, x)
    assert model.global_pool == "avg" and model.zooadapt.num_classes == CLASSES
    assert any("global_pool='avg'" in n and "vit-average-pooled" in n for n in model.zooadapt.report.plan.notes)
    with torch.no_grad():
        assert torch.allclose(out, _mae_forward(mae, x), atol=1e-5)


@pytest.mark.slow
def test_timms_own_average_pooled_vit_is_identified(tmp_path):
    import timm

    source = timm.create_model("vit_tiny_patch16_224", num_classes=CLASSES, global_pool="avg").eval()
    _seeded(source, 3)
    path = tmp_path / "avg.pth"
    torch.save(source.state_dict(), path)
    _identified(path, "vit_tiny_patch16_224")
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    _, out = _same_as_named(path, x)
    with torch.no_grad():
        assert torch.equal(out, source(x))


@pytest.mark.slow
def test_a_two_block_mae_file_is_refused_with_the_depth_to_name(tmp_path):
    """No signature has two blocks and an unnamed load cannot pass ``depth=``: the refusal names
    the architecture (built as the layout asks: every file tensor placed) and the option."""
    _, state = _mae("vit_small_patch16_224", depth=2)
    path = _write_mae(state, "mae_checkpoint", tmp_path)
    with pytest.raises(IncompatibleCheckpointError) as err:
        zooadapt.load(weights=path)
    message = str(err.value)
    assert "vit_small_patch16_224 (100% of its tensors" in message and "depth=N" in message, message
    assert "partial=True" not in message


def test_a_layouts_build_keeps_the_default_builds_shapes():
    """Bounds are worked out on each architecture's default build; a layout's build options are
    hyperparameters no tensor's shape carries, so its build has the same multiset of shapes."""
    from collections import Counter

    from zooadapt.host.layouts import registered_layouts
    from zooadapt.loading.module_settings import is_module_setting
    from zooadapt.loading.signature_index import get_index
    from zooadapt.loading.signatures import as_built

    index = get_index()
    cases = ["vit_tiny_patch16_224", "deit_small_patch16_224", "deit3_small_patch16_224", "efficientnet_b5"]
    checked = 0
    for layout in registered_layouts():
        for name in cases:
            sig = index.signatures[name]
            options = {k: v for k, v in layout.options_for(name).items() if not is_module_setting(k)}
            if layout.family != sig.family or not options:
                continue
            built = as_built(sig, options)
            if layout.name == "vit-average-pooled":  # fc_norm in norm's place
                assert "fc_norm.weight" in built.keys and "norm.weight" not in built.keys, name
            assert Counter(built.shapes) == Counter(sig.shapes), (layout.name, name)
            checked += 1
    assert checked >= 5


def test_a_file_no_layout_asks_a_build_of_builds_nothing(tmp_path, monkeypatch):
    """A plain torchvision file: identification plans the stored signatures, no model is built."""
    import zooadapt.loading.signatures as signatures

    def refuse(*args, **kwargs):
        raise AssertionError("built a model for a file no layout asks a build of")

    monkeypatch.setattr(signatures, "as_built", refuse)
    source = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    assert zooadapt.identify(path).best.name == "resnet18"


# -- 2. a layout's keys beside a family's rule: mmpretrain's ResNet ---------------------------------

MM_CASES = [pytest.param(a, c, id=f"{a}-{c}", marks=() if (a, c) == ("resnet18", 5) else pytest.mark.slow)
            for a in ("resnet18", "resnet34", "resnet50") for c in (5, 1000)]


def _mmpretrain(arch: str, classes: int, folder: Path) -> tuple[nn.Module, Path]:
    """torchvision's ``arch`` and its tensors as mmpretrain's ``ImageClassifier`` names them (the
    ResNet under ``backbone.``, ``LinearClsHead``'s ``fc`` under ``head.``), in mmengine's checkpoint."""
    source = getattr(torchvision.models, arch)(num_classes=classes).eval()
    state = {(f"head.{k}" if k.startswith("fc.") else f"backbone.{k}"): v for k, v in _seeded(source, 8).items()}
    path = folder / "epoch_100.pth"
    torch.save({"meta": {"epoch": 100, "dataset_meta": {"classes": ["c"] * classes}}, "state_dict": state,
                "optimizer": {"state": {}, "param_groups": []}}, path)
    return source, path


@pytest.mark.parametrize(("arch", "classes"), MM_CASES)
def test_an_mmpretrain_resnet_is_identified_with_its_head(arch, classes, tmp_path):
    source, path = _mmpretrain(arch, classes, tmp_path)
    found = _identified(path, arch)
    assert found.best.name == arch and found.best.family == "resnet"
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    model, out = _same_as_named(path, x)
    assert model.zooadapt.name == arch and model.fc.out_features == classes
    assert any("mmpretrain-resnet layout" in n for n in model.zooadapt.report.plan.notes)
    with torch.no_grad():
        assert torch.equal(out, source(x))


@pytest.mark.slow
def test_an_mmpretrain_file_is_identified_under_a_wrapper(tmp_path):
    """Saved from DDP: ``module.backbone.`` and ``module.head.fc.``."""
    source, _ = _mmpretrain("resnet18", 5, tmp_path)
    state = {f"module.{'head.' if k.startswith('fc.') else 'backbone.'}{k}": v for k, v in source.state_dict().items()}
    path = tmp_path / "ddp.pth"
    torch.save(state, path)
    _identified(path, "resnet18")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    _, out = _same_as_named(path, x)
    with torch.no_grad():
        assert torch.equal(out, source(x))


# -- the refusal: no candidate it refuses is said to fit ----------------------------------------------


def test_a_refusal_never_says_a_refused_candidate_fits():
    leftover = Match("resnet18", "resnet", 0.98, True, 1.0, 0.99, 0.98, 0.0)
    almost = Match("seresnet18", "timm", 0.996, False, 0.997, 0.99, 0.99, 0.0)
    found = Identification("file.pth", 100, (leftover, almost), 0.0)
    with pytest.raises(IncompatibleCheckpointError) as err:
        architecture_for(found)
    message = str(err.value)
    assert "fits)" not in message and ", fits" not in message, message
    assert "resnet18 (98% of its tensors, its whole backbone filled)" in message, message
    assert "seresnet18 (99% of its tensors, 99% of its backbone filled)" in message, message
    assert "zooadapt.load('resnet18', weights=...)" in message

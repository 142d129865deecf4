"""The neighbours of capabilities that one fixture each proves, swept.

1. **An MAE fine-tune** (``test_checkpoint_corpus.py``, ``test_an_mae_fine_tune_…``: one ViT-S):
   facebookresearch/mae ``models_vit.py`` with ``global_pool=True`` (``fc_norm``, no ``norm``) for
   ViT-Ti/S/B, DeiT-Ti/S and DeiT III-S (``depth=2``), as plain keys, under DDP's ``module.`` and
   Lightning's ``model.``, and in MAE's own ``{'model': ..., 'optimizer', 'epoch', 'scaler',
   'args'}``; the file's head kept (logits equal MAE's forward, computed here) or a new one
   (the pooled features equal MAE's).
2. **An mmpretrain ResNet** (one ResNet-18): ResNet-18 … 152, 5 and 1000 classes, safetensors and
   mmengine's ``{'meta', 'state_dict', …}``: the trained head is kept and the model computes what
   torchvision's model holding the same tensors computes.
3. **A detectron2 ResNet** (one ResNet-18, ``.pth`` and ``.pkl``): R18/R34 (``BasicBlock``) and
   R50/R101 (``BottleneckBlock``), the trunk under an FPN (``backbone.bottom_up.``), as a C4
   model's (``backbone.`` res2-res4, ``roi_heads.res5``), as a DC5/C5 model's (``backbone.``
   beside the RPN and ROI heads) and alone (``convert-torchvision-to-d2.py``, BatchNorm with its
   counter), fvcore's ``.pth`` and the model zoo's ``.pkl``: every trunk tensor lands where
   torchvision's model has it, named (not paired by order), and the report states the
   ``STRIDE_IN_1X1`` caveat for the bottleneck depths.
4. **A low-precision fine-tune's reload** (``test_saving.py``: ResNet-18, MobileNet v3 small):
   ``load(dtype=...)`` (BatchNorm kept float32) and ``model.to(dtype)`` (everything), bfloat16 and
   float16, across families, and a model in two dtypes (a float32 head on a bfloat16 body): every
   parameter and buffer comes back in its dtype, bit for bit.

The fast subset is a few cases of each sweep; the rest is marked slow. Cases zooadapt gets wrong
(outside the plugins) were reproduced and fixed where they were found.
"""

from __future__ import annotations

import argparse
import functools
import json
import pickle
import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file

import zooadapt
from zooadapt.contract.errors import UnsafeCheckpointError
from zooadapt.testing import seeded_state_dict

POSITIONAL = "positional (same order, shapes checked)"


def params(cases, fast):
    """pytest params for ``cases`` (tuples), the ones in ``fast`` unmarked, the rest slow."""
    return [pytest.param(*case, id="-".join(map(str, case)), marks=[] if case in fast else [pytest.mark.slow])
            for case in cases]


def save_safetensors(state: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


# -- 1. MAE's average-pooled ViT ------------------------------------------------------------------

MAE_ARCHS = ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "deit_tiny_patch16_224",
             "deit_small_patch16_224", "deit3_small_patch16_224")
MAE_WRAPPERS = ("plain", "module.", "model.", "mae_checkpoint")
MAE_HEADS = ("kept", "new")
MAE_CLASSES = 7
MAE_FAST = {("vit_tiny_patch16_224", "mae_checkpoint", "kept")}


@functools.lru_cache(maxsize=2)
def mae_source(arch: str, depth: int | None = 2) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """``arch`` as MAE's ``models_vit.VisionTransformer(global_pool=True)`` is: timm's ViT with its
    final ``norm`` deleted and ``fc_norm = norm_layer(embed_dim)`` added, seeded, in eval mode."""
    import timm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        options = {"depth": depth} if depth else {}
        model = timm.create_model(arch, pretrained=False, num_classes=MAE_CLASSES, **options)
    model.fc_norm = nn.LayerNorm(model.embed_dim, eps=model.norm.eps)
    del model.norm
    state = seeded_state_dict(model, 5)
    model.load_state_dict(state)
    return model.eval(), state


def mae_forward(mae: nn.Module, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
    """models_vit.py's ``forward_features`` (the patch tokens' mean, then ``fc_norm``) and head.
    DeiT III adds its position embedding to the patches alone (timm's ``no_embed_class``)."""
    x = mae.patch_embed(x)
    cls = mae.cls_token.expand(x.shape[0], -1, -1)
    if mae.pos_embed.shape[1] == x.shape[1]:
        x = torch.cat((cls, x + mae.pos_embed), dim=1)
    else:
        x = torch.cat((cls, x), dim=1) + mae.pos_embed
    for block in mae.blocks:
        x = block(x)
    pooled = mae.fc_norm(x[:, 1:, :].mean(dim=1))
    return pooled if pre_logits else mae.head(pooled)


def write_mae(state: dict[str, torch.Tensor], wrapper: str, folder: Path) -> Path:
    path = folder / "checkpoint-99.pth"
    if wrapper == "mae_checkpoint":  # util/misc.py save_model
        torch.save({"model": state, "optimizer": {}, "epoch": 99, "scaler": {},
                    "args": argparse.Namespace(global_pool=True)}, path)
    else:
        torch.save(state if wrapper == "plain" else {wrapper + k: v for k, v in state.items()}, path)
    return path


@pytest.mark.parametrize(("arch", "wrapper", "head"),
                         params([(a, w, h) for a in MAE_ARCHS for w in MAE_WRAPPERS for h in MAE_HEADS], MAE_FAST))
def test_an_mae_fine_tune_is_average_pooled_under_every_wrapper(arch, wrapper, head, tmp_path):
    mae, state = mae_source(arch)
    path = write_mae(state, wrapper, tmp_path)
    classes = {} if head == "kept" else {"num_classes": 3}
    model = zooadapt.load(arch, weights=path, depth=2, **classes).eval()
    plan = model.zooadapt.report.plan
    assert plan.fits and not plan.unexpected, plan
    assert any("global_pool='avg'" in n and "vit-average-pooled" in n for n in plan.notes), plan.notes
    assert model.global_pool == "avg"
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        assert torch.allclose(pooled, mae_forward(mae, x, pre_logits=True), atol=1e-5)
        if head == "kept":
            assert not plan.new_head
            assert torch.allclose(model(x), mae_forward(mae, x), atol=1e-5)
        else:
            assert set(plan.new_head) == {"head.weight", "head.bias"}
            assert model(x).shape == (2, 3)


# -- 2. mmpretrain's ResNet -------------------------------------------------------------------------

MM_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
MM_FORMS = ("safetensors", "mmengine")
MM_FAST = {("resnet18", 5, "mmengine")}


def mmpretrain_classifier(arch: str, classes: int, seed: int = 8) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """torchvision's ``arch`` (the reference) and its tensors as mmpretrain's ``ImageClassifier``
    names them: models/backbones/resnet.py keeps torchvision's module names (``conv1``, ``bn1``,
    ``layerN.M.convK``/``bnK``, ``downsample.0/1``) under ``backbone.``; models/heads/linear_head.py's
    ``LinearClsHead`` keeps the classifier as ``fc``, under ``head.``."""
    source = getattr(torchvision.models, arch)(num_classes=classes).eval()
    source.load_state_dict(seeded_state_dict(source, seed))
    state = {(f"head.{k}" if k.startswith("fc.") else f"backbone.{k}"): v for k, v in source.state_dict().items()}
    return source, state


def write_mmpretrain(state: dict[str, torch.Tensor], classes: int, form: str, folder: Path) -> Path:
    if form == "safetensors":
        return save_safetensors(state, folder / "model.safetensors")
    path = folder / "epoch_100.pth"  # mmengine's save_checkpoint
    torch.save({"meta": {"mmengine_version": "0.10.3", "epoch": 100, "dataset_meta": {"classes": ["c"] * classes}},
                "state_dict": state, "optimizer": {"state": {}, "param_groups": []}, "param_schedulers": []}, path)
    return path


@pytest.mark.parametrize(("arch", "classes", "form"),
                         params([(a, c, f) for a in MM_ARCHS for c in (5, 1000) for f in MM_FORMS], MM_FAST))
def test_an_mmpretrain_resnet_keeps_its_trained_head(arch, classes, form, tmp_path):
    source, state = mmpretrain_classifier(arch, classes)
    model = zooadapt.load(arch, weights=write_mmpretrain(state, classes, form, tmp_path)).eval()
    plan = model.zooadapt.report.plan
    assert plan.fits and not plan.new_head and not plan.unexpected and not plan.missing, plan
    assert any("mmpretrain-resnet layout" in n for n in plan.notes), plan.notes
    assert model.fc.out_features == classes and model.zooadapt.num_classes == classes
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model(x), source(x))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_an_mmpretrain_resnet_with_another_class_count_gets_a_new_head(arch, tmp_path):
    source, state = mmpretrain_classifier(arch, 5)
    model = zooadapt.load(arch, weights=write_mmpretrain(state, 5, "safetensors", tmp_path), num_classes=11)
    plan = model.zooadapt.report.plan
    assert plan.fits and set(plan.new_head) == {"fc.weight", "fc.bias"} and model.fc.out_features == 11
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items() if not k.startswith("fc."))


# -- 3. detectron2's ResNet -------------------------------------------------------------------------

D2_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")
BOTTLENECK = ("resnet50", "resnet101")
D2_WHERE = ("fpn", "c4", "dc5", "trunk")
D2_FAST = {("resnet18", "trunk", "pkl")}


def detectron2_name(key: str, prefix: str) -> str:
    """facebookresearch/detectron2 modeling/backbone/resnet.py: ``BasicStem`` holds ``conv1`` with
    its norm as ``conv1.norm``; stages ``res2``..``res5`` of ``BasicBlock``/``BottleneckBlock``
    (``convK`` with ``convK.norm``); a block's ``shortcut`` (``shortcut.norm``) is torchvision's
    ``downsample``."""
    if key.startswith(("conv1.", "bn1.")):
        return prefix + "stem." + key.replace("bn1.", "conv1.norm.")
    layer, block, rest = key.split(".", 2)
    rest = rest.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
    rest = re.sub(r"^bn(\d)\.", r"conv\1.norm.", rest)
    return f"{prefix}res{int(layer[5:]) + 1}.{block}.{rest}"


def detectron2_file(arch: str, where: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], set[str]]:
    """(the trunk in torchvision's names, the detector's state dict, its keys that are not the trunk).

    ``fpn``: fpn.py keeps the ResNet as ``backbone.bottom_up``. ``c4``: the ResNet (res2-res4) is
    the backbone itself and roi_heads.py's ``Res5ROIHeads`` builds ``res5`` as ``roi_heads.res5``.
    ``dc5``: the whole ResNet is the backbone, beside the RPN and ROI heads. FrozenBatchNorm keeps
    no counter. ``trunk``: the ResNet alone, as tools/convert-torchvision-to-d2.py writes it, with
    BatchNorm (``norm='BN'``) and so its ``num_batches_tracked``."""
    full = seeded_state_dict(getattr(torchvision.models, arch)(), 9)
    trunk = {k: v for k, v in full.items() if not k.startswith("fc.")}
    if where == "trunk":
        trunk = {k: (torch.tensor(1234) if k.endswith("num_batches_tracked") else v) for k, v in trunk.items()}
        return trunk, {detectron2_name(k, ""): v for k, v in trunk.items()}, set()
    trunk = {k: v for k, v in trunk.items() if not k.endswith("num_batches_tracked")}
    g = torch.Generator().manual_seed(3)
    if where == "fpn":
        state = {detectron2_name(k, "backbone.bottom_up."): v for k, v in trunk.items()}
        extra = {"backbone.fpn_lateral2.weight": (256, 64 if arch in ("resnet18", "resnet34") else 256, 1, 1),
                 "roi_heads.box_predictor.cls_score.weight": (81, 1024)}
    else:
        state = {detectron2_name(k, "backbone."): v for k, v in trunk.items()}
        if where == "c4":
            state = {("roi_heads." + k[len("backbone."):] if k.startswith("backbone.res5.") else k): v
                     for k, v in state.items()}
        extra = {"proposal_generator.rpn_head.conv.weight": (1024, 1024, 3, 3) if where == "c4" else (512, 512, 3, 3),
                 "roi_heads.box_predictor.cls_score.weight": (81, 2048 if where == "c4" else 1024)}
    state.update({k: torch.randn(shape, generator=g) for k, shape in extra.items()})
    return trunk, state, set(extra)


def write_detectron2(state: dict[str, torch.Tensor], form: str, folder: Path) -> Path:
    path = folder / f"model_final.{form}"
    if form == "pth":  # fvcore's Checkpointer.save
        torch.save({"model": state, "optimizer": {}, "scheduler": {}, "iteration": 89999}, path)
    else:  # the model zoo's files
        with open(path, "wb") as fh:
            pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "Detectron2 Model Zoo"}, fh)
    return path


D2_CASES = [(a, w, f) for a in D2_ARCHS for w in D2_WHERE for f in ("pth", "pkl")
            if w != "c4" or a in BOTTLENECK]  # Res5ROIHeads builds BottleneckBlocks: no C4 R18/R34


@pytest.mark.parametrize(("arch", "where", "form"), params(D2_CASES, D2_FAST))
def test_a_detectron2_trunk_lands_by_name_with_its_stride_caveat(arch, where, form, tmp_path):
    trunk, state, extra = detectron2_file(arch, where)
    path = write_detectron2(state, form, tmp_path)
    if form == "pkl":
        with pytest.raises(UnsafeCheckpointError, match="trusted=True"):
            zooadapt.load(arch, weights=path, num_classes=10)
    model = zooadapt.load(arch, weights=path, num_classes=10, trusted=form == "pkl")
    plan = model.zooadapt.report.plan
    assert plan.fits and POSITIONAL not in plan.rule_counts(), plan
    assert {m.checkpoint_key for m in plan.unexpected} == extra
    loaded = model.state_dict()
    different = [k for k, v in trunk.items() if not torch.equal(loaded[k], v)]
    assert different == []
    layout = [n for n in plan.notes if "detectron2-resnet layout" in n]
    assert layout, plan.notes
    if arch in BOTTLENECK:
        assert "STRIDE_IN_1X1" in layout[0]


@pytest.mark.parametrize("arch", ["resnet18", pytest.param("resnet50", marks=pytest.mark.slow)])
def test_a_detectron2_resnet_classifier_keeps_its_linear_head(arch, tmp_path):
    """detectron2's ``ResNet(..., num_classes=N)`` classifies with ``self.linear`` (torchvision's ``fc``)."""
    source = getattr(torchvision.models, arch)(num_classes=7).eval()
    source.load_state_dict(seeded_state_dict(source, 4))
    state = {("linear." + k[3:] if k.startswith("fc.") else detectron2_name(k, "")): v
             for k, v in source.state_dict().items()}
    model = zooadapt.load(arch, weights=write_detectron2(state, "pth", tmp_path)).eval()
    plan = model.zooadapt.report.plan
    assert plan.fits and not plan.new_head and not plan.unexpected and model.fc.out_features == 7
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model(x), source(x))


# -- 4. a low-precision model saved and loaded back ----------------------------------------------------

DTYPE_ARCHS = ("resnet50", "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "alexnet", "squeezenet1_0",
               "regnet_y_400mf", "efficientnet_b0", "convnext_atto", "vit_tiny_patch16_224", "regnetx_002")
"""Every built-in family, a torchvision-zoo model (RegNet-Y) and timm's CNNs, ConvNeXt (LayerNorm,
no BatchNorm) and ViT; AlexNet and SqueezeNet have no norm layers at all."""
DTYPES = (torch.bfloat16, torch.float16)
DTYPE_FAST = {("squeezenet1_0", "to", "bfloat16"), ("regnetx_002", "load", "float16")}


def _dtypes(model: nn.Module) -> dict[str, torch.dtype]:
    """Every parameter's and buffer's dtype (non-persistent buffers too), by name."""
    return {**{f"parameter {n}": p.dtype for n, p in model.named_parameters()},
            **{f"buffer {n}": b.dtype for n, b in model.named_buffers()}}


def _has_batchnorm(model: nn.Module) -> bool:
    from torch.nn.modules.batchnorm import _NormBase

    return any(isinstance(m, _NormBase) and any(True for _ in m.parameters(recurse=False)) for m in model.modules())


@pytest.mark.parametrize(("arch", "how", "dtype"),
                         params([(a, h, str(d).removeprefix("torch.")) for a in DTYPE_ARCHS for h in ("load", "to")
                                 for d in DTYPES], DTYPE_FAST))
def test_a_low_precision_model_comes_back_in_its_dtypes(arch, how, dtype, tmp_path):
    """``load(dtype=...)``: the layers in ``dtype``, BatchNorm float32; ``.to(dtype)``: everything
    in ``dtype``. ``zooadapt.load(folder)`` gives back every tensor in its dtype, bit for bit."""
    wanted = getattr(torch, dtype)
    if how == "load":
        model = zooadapt.load(arch, num_classes=3, pretrained=False, dtype=wanted)
    else:
        model = zooadapt.load(arch, num_classes=3, pretrained=False).to(wanted)
    folder = zooadapt.save(model, tmp_path / "saved")
    config = json.loads((folder / "zooadapt.json").read_text())
    norms = (dtype if how == "to" else "float32") if _has_batchnorm(model) else None
    assert (config["dtype"], config["norm_dtype"]) == (dtype, norms)
    back = zooadapt.load(folder)
    before, after = _dtypes(model), _dtypes(back)
    assert before == after, {k: (v, after.get(k)) for k, v in before.items() if after.get(k) != v}
    assert wanted in set(after.values())
    saved, loaded = model.state_dict(), back.state_dict()
    assert list(saved) == list(loaded)
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert [type(m) for m in model.modules()] == [type(m) for m in back.modules()]  # MobileNet v1's too


@pytest.mark.slow
def test_a_model_in_two_dtypes_comes_back_in_both(tmp_path):
    """A bfloat16 model whose head was kept float32 (``tests/test_saved_dtypes.py`` sweeps the mixes)."""
    model = zooadapt.load("resnet18", num_classes=3, pretrained=False).to(torch.bfloat16)
    model.fc.float()
    back = zooadapt.load(zooadapt.save(model, tmp_path / "saved"))
    assert _dtypes(model) == _dtypes(back)
    saved, loaded = model.state_dict(), back.state_dict()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)


# -- without a name: identification plans each architecture as the named load builds and reads it -
# (tests/test_identify_layouts.py sweeps the neighbours)


@pytest.mark.slow
def test_an_mae_fine_tune_loads_without_a_name(tmp_path):
    """The file's layout asks timm's ViT for global_pool='avg' (fc_norm, no norm): identification
    plans that build, as the named load makes it (/tmp/hunt_sweep/repro_mae_unnamed.py)."""
    mae, state = mae_source("vit_tiny_patch16_224", depth=None)
    model = zooadapt.load(weights=write_mae(state, "mae_checkpoint", tmp_path)).eval()
    assert model.zooadapt.name == "vit_tiny_patch16_224" and model.global_pool == "avg"
    assert not model.zooadapt.report.plan.new_head
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(model(x), mae_forward(mae, x), atol=1e-5)


@pytest.mark.slow
def test_an_mmpretrain_resnet_loads_without_a_name(tmp_path):
    """The backbone fits by the family's StripPrefix('backbone.'); the mmpretrain-resnet layout
    also places head.fc, so the file fits completely (/tmp/hunt_sweep/repro_mmpretrain_unnamed.py)."""
    source, state = mmpretrain_classifier("resnet18", 5)
    model = zooadapt.load(weights=write_mmpretrain(state, 5, "mmengine", tmp_path)).eval()
    assert model.zooadapt.name == "resnet18" and not model.zooadapt.report.plan.new_head
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model(x), source(x))


# -- mmpretrain files under names the timm family builds ------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "name"), [("resnext50_32x4d", "resnext50_32x4d"),
                                            ("wide_resnet50_2", "wide_resnet50_2"),
                                            ("resnet50", "resnet50.tv_in1k")])
def test_an_mmpretrain_file_keeps_its_head_under_a_timm_name(arch, name, tmp_path):
    """resnext50_32x4d, wide_resnet50_2 and a tagged name resolve to the timm family, whose
    network has torchvision's names: the mmpretrain-resnet-timm layout reads the file there too."""
    source, state = mmpretrain_classifier(arch, 5)
    model = zooadapt.load(name, weights=write_mmpretrain(state, 5, "mmengine", tmp_path)).eval()
    assert model.zooadapt.family == "timm" and not model.zooadapt.report.plan.new_head
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model(x), source(x))


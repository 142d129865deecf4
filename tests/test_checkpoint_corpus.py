"""The checkpoints users really have: each built from its project's real model and saving code.

Every file here is made the way its project makes it: the same model classes (torchvision's
detection and segmentation models, transformers' ResNet and ConvNeXt, a real Lightning
``Trainer``, real DDP and ``torch.compile`` wrappers) or, where the project is not installable
here, its saving code reproduced line by line with the source named. Values are seeded; the
key structure is the real one. Each must load bit-exact with no hand-written rule, or fail
with an error that says what to do.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file

import zooadapt
from zooadapt.contract.errors import (
    AmbiguousCheckpointError,
    CheckpointFormatError,
    IncompatibleCheckpointError,
    UnsafeCheckpointError,
)
from zooadapt.errors import InvalidArgumentError

pytestmark = pytest.mark.slow


def seeded(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """The same keys and shapes with seeded values (variances positive, counters kept)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if not value.is_floating_point():
            out[key] = value.clone()
        elif key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=g) + 0.5
        else:
            out[key] = torch.randn(value.shape, generator=g) * 0.05
    return out


def save_safetensors(state: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def found_rules(model: nn.Module) -> set[str]:
    plan = model.zooadapt.report.plan
    return {rule for m in plan.loaded for rule in m.rules if rule.endswith("(found)")}


@pytest.fixture(scope="module")
def r18() -> dict[str, torch.Tensor]:
    return seeded(torchvision.models.resnet18().state_dict(), 18)


# -- 1. PyTorch Lightning ---------------------------------------------------------------------


@pytest.mark.parametrize("classes", [5, 1000])
def test_an_mmpretrain_classifier_keeps_its_trained_head(tmp_path, classes):
    """open-mmlab/mmpretrain ``ImageClassifier(backbone=ResNet(style='pytorch'),
    neck=GlobalAveragePooling, head=LinearClsHead)``: ``models/backbones/resnet.py`` names its
    modules as torchvision does (``conv1``, ``bn1``, ``layerN.M.convK``, ``downsample.0/1``) under
    ``backbone.``; ``models/heads/linear_head.py`` keeps the classifier as ``self.fc``, so
    ``head.fc.``; mmengine's ``save_checkpoint`` writes ``{'meta', 'state_dict', 'optimizer',
    'param_schedulers'}``. The trained head loads with the backbone: the model computes what the
    classifier did."""
    source = torchvision.models.resnet18(num_classes=classes).eval()
    source.load_state_dict(seeded(source.state_dict(), 8))
    state = {(f"head.{k}" if k.startswith("fc.") else f"backbone.{k}"): v for k, v in source.state_dict().items()}
    path = tmp_path / "epoch_100.pth"
    torch.save({"meta": {"mmengine_version": "0.10.3", "epoch": 100, "dataset_meta": {"classes": ["a"] * classes}},
                "state_dict": state, "optimizer": {"state": {}, "param_groups": []}, "param_schedulers": []}, path)
    model = zooadapt.load("resnet18", weights=path).eval()
    plan = model.zooadapt.report.plan
    assert plan.fits and not plan.new_head and not plan.unexpected
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))


def _detectron2_name(key: str) -> str:
    """facebookresearch/detectron2 modeling/backbone/resnet.py: ``BasicStem`` holds ``conv1`` with
    its FrozenBatchNorm as ``conv1.norm``; stages ``res2``..``res5``; a block's ``shortcut`` (with
    ``shortcut.norm``) is torchvision's ``downsample``; fpn.py keeps the trunk as ``bottom_up``."""
    if key.startswith(("conv1.", "bn1.")):
        return "backbone.bottom_up.stem." + key.replace("bn1.", "conv1.norm.")
    layer, block, rest = key.split(".", 2)
    rest = rest.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
    rest = re.sub(r"^bn(\d)\.", r"conv\1.norm.", rest)
    return f"backbone.bottom_up.res{int(layer[5:]) + 1}.{block}.{rest}"


@pytest.mark.parametrize("form", ["pth", "pkl"])
def test_a_detectron2_trunk_loads_by_name_and_says_what_its_stride_means(tmp_path, form):
    """fvcore's ``Checkpointer.save`` writes ``torch.save({'model': state_dict, 'optimizer',
    'scheduler', 'iteration'})``; the model zoo's ``.pkl`` files are ``pickle.dump({'model': {key:
    ndarray}, '__author__': ...})``, which only ``trusted=True`` reads (as detectron2's
    ``DetectionCheckpointer`` does, ``pickle.load(f, encoding="latin1")``): without it the refusal
    says so. FrozenBatchNorm keeps no ``num_batches_tracked``; FPN and heads stay unused."""
    import pickle

    source = torchvision.models.resnet18()
    trunk = {k: v for k, v in seeded(source.state_dict(), 9).items()
             if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    state = {_detectron2_name(k): v for k, v in trunk.items()}
    state["backbone.fpn_lateral2.weight"] = torch.randn(256, 64, 1, 1)
    state["roi_heads.box_predictor.cls_score.weight"] = torch.randn(81, 1024)
    path = tmp_path / f"model_final.{form}"
    if form == "pth":
        torch.save({"model": state, "optimizer": {}, "scheduler": {}, "iteration": 89999}, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "Detectron2 Model Zoo"}, fh)
        with pytest.raises(UnsafeCheckpointError, match="trusted=True reads it"):
            zooadapt.load("resnet18", weights=path, num_classes=10)
    model = zooadapt.load("resnet18", weights=path, num_classes=10, trusted=form == "pkl")
    plan = model.zooadapt.report.plan
    assert plan.fits and "positional (same order, shapes checked)" not in plan.rule_counts()
    assert any("detectron2-resnet layout" in n and "STRIDE_IN_1X1" in n for n in plan.notes)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in trunk.items())
    assert {m.checkpoint_key for m in plan.unexpected} == {"backbone.fpn_lateral2.weight",
                                                           "roi_heads.box_predictor.cls_score.weight"}


@pytest.mark.parametrize("form", ["bin", "safetensors"])
def test_counters_saved_as_floats_come_back_as_the_models_integers(tmp_path, form):
    """DeepSpeed's ``zero_to_fp32.py`` (deepspeed/utils/zero_to_fp32.py, ``parse_model_states``:
    ``buffers = {k: v.float() for k, v in state_dict["module"].items() if k in buffer_names}``) and
    timm's ``avg_checkpoints.py`` write every entry as float32, BatchNorm's ``num_batches_tracked``
    too. The model's counter stays int64 with the file's value, as ``load_state_dict`` copies it."""
    source = torchvision.models.resnet18()
    state = seeded(source.state_dict(), 10)
    state = {k: (torch.full_like(v, 1234.0, dtype=torch.float32) if k.endswith("num_batches_tracked") else v)
             for k, v in state.items()}
    path = tmp_path / f"pytorch_model.{form}"
    save_safetensors(state, path) if form == "safetensors" else torch.save(state, path)
    model = zooadapt.load("resnet18", weights=path)
    counter = model.bn1.num_batches_tracked
    assert counter.dtype == torch.int64 and counter.item() == 1234
    assert model.layer1[0].bn1.running_var.dtype == torch.float32


def test_distributed_training_folders_name_the_conversion_their_framework_ships(tmp_path):
    """torch.distributed.checkpoint's ``dcp.save`` (Lightning's FSDP sharded checkpoints too)
    writes ``.metadata`` beside ``*.distcp``; DeepSpeed's engine (deepspeed/runtime/engine.py,
    ``_save_checkpoint``) writes ``latest`` and ``global_stepN/mp_rank_00_model_states.pt`` whose
    ``module`` holds, under ZeRO-3, empty placeholders for every parameter. Each is refused with
    the conversion its framework ships, not as a missing or corrupt file."""
    import torch.distributed.checkpoint as dcp

    state = seeded(torchvision.models.resnet18().state_dict(), 11)
    dcp.save({"model": state}, checkpoint_id=str(tmp_path / "dcp"), no_dist=True)
    for weights in (tmp_path / "dcp", tmp_path / "dcp" / ".metadata", next((tmp_path / "dcp").glob("*.distcp"))):
        with pytest.raises(CheckpointFormatError, match=r"torch.distributed.checkpoint \(DCP\) folder.*dcp_to_torch"):
            zooadapt.load("resnet18", weights=weights)

    run = tmp_path / "ds"
    (run / "global_step10").mkdir(parents=True)
    (run / "latest").write_text("global_step10")
    placeholders = {k: torch.empty(0) if v.is_floating_point() else v for k, v in state.items()}
    torch.save({"module": placeholders, "ds_version": "0.16.0", "global_steps": 10, "buffer_names": [],
                "param_shapes": [{k: v.shape for k, v in state.items()}]},
               run / "global_step10" / "mp_rank_00_model_states.pt")
    with pytest.raises(CheckpointFormatError, match="DeepSpeed checkpoint folder.*zero_to_fp32.py"):
        zooadapt.load("resnet18", weights=run)
    with pytest.raises(CheckpointFormatError, match="ZeRO-3 model-states file.*zero_to_fp32.py"):
        zooadapt.load("resnet18", weights=run / "global_step10" / "mp_rank_00_model_states.pt")


def test_a_transformers_efficientnet_is_built_as_tensorflow_padded_it(tmp_path):
    """transformers' ``EfficientNetForImageClassification`` (models/efficientnet/
    modeling_efficientnet.py) ports the TensorFlow model: 'same' padding and BatchNorm eps 1e-3.
    Its tensors also fit timm's ``efficientnet_b0`` (PyTorch padding, eps 1e-5), which computes
    something else; the layout builds it as ``tf_efficientnet_b0`` is built, by name or not."""
    transformers = pytest.importorskip("transformers")

    torch.manual_seed(0)
    config = transformers.EfficientNetConfig(width_coefficient=1.0, depth_coefficient=1.0, image_size=224,  # B0
                                             hidden_dim=1280, num_labels=5, batch_norm_eps=1e-3)
    source = transformers.EfficientNetForImageClassification(config).eval()
    source.load_state_dict(seeded(source.state_dict(), 12))
    source.save_pretrained(tmp_path / "hf")
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = source(x).logits
    for name in ("efficientnet_b0", None):
        by_name = (name,) if name else ()
        model = zooadapt.load(*by_name, weights=tmp_path / "hf").eval()
        assert any("transformers-efficientnet layout" in n for n in model.zooadapt.report.plan.notes)
        with torch.no_grad():
            assert (model(x) - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_a_shallower_vit_is_not_offered_partial_loading_it_cannot_pass(tmp_path):
    """A transformers ViT-Tiny with 2 layers fills 19% of every ViT's backbone: partial=True (which
    needs half) would refuse it too, so the refusal names the builder's depth= instead, which
    loads it whole and computes what transformers computes."""
    transformers = pytest.importorskip("transformers")

    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=192, num_hidden_layers=2, num_attention_heads=3,
                                    intermediate_size=768, num_labels=4)
    source = transformers.ViTForImageClassification(config).eval()
    source.save_pretrained(tmp_path / "vit")
    with pytest.raises(IncompatibleCheckpointError) as refused:
        zooadapt.load(weights=tmp_path / "vit")
    assert "partial=True" not in str(refused.value) and "depth=N" in str(refused.value)
    model = zooadapt.load("vit_tiny_patch16_224", weights=tmp_path / "vit", depth=2).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(x), source(x).logits, atol=1e-5)


def test_an_mae_fine_tune_is_built_average_pooled_and_computes_what_mae_computes(tmp_path):
    """facebookresearch/mae ``models_vit.py``: ``VisionTransformer(global_pool=True)`` sets
    ``self.fc_norm = norm_layer(embed_dim)`` and ``del self.norm``; its ``forward_features`` takes
    ``x[:, 1:, :].mean(dim=1)`` then ``fc_norm``; ``util/misc.py`` ``save_model`` writes
    ``{'model': state_dict, 'optimizer', 'epoch', 'scaler', 'args'}``. Every tensor also fits a
    token-pooled ViT (``fc_norm`` paired with ``norm``), which computes something else: the file's
    ``fc_norm`` without ``norm`` builds the average-pooled model, the trained head kept."""
    import argparse
    from functools import partial

    import timm

    torch.manual_seed(0)
    mae = timm.models.vision_transformer.VisionTransformer(
        patch_size=16, embed_dim=384, depth=2, num_heads=6, qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=7)
    mae.fc_norm = partial(nn.LayerNorm, eps=1e-6)(384)
    del mae.norm
    state = seeded(mae.state_dict(), 5)
    mae.load_state_dict(state)
    path = tmp_path / "checkpoint-99.pth"
    torch.save({"model": state, "optimizer": {}, "epoch": 99, "scaler": {},
                "args": argparse.Namespace(global_pool=True)}, path)

    def mae_forward(x: torch.Tensor) -> torch.Tensor:  # models_vit.py: forward_features, then head
        x = mae.patch_embed(x)
        x = torch.cat((mae.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + mae.pos_embed
        for block in mae.blocks:
            x = block(x)
        return mae.head(mae.fc_norm(x[:, 1:, :].mean(dim=1)))

    model = zooadapt.load("vit_small_patch16_224", weights=path, depth=2).eval()
    plan = model.zooadapt.report.plan
    assert plan.fits and not plan.renamed and any("global_pool='avg'" in n for n in plan.notes)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(x), mae_forward(x), atol=1e-5)


def test_lightning_weight_averaging_swaps_the_sets_and_use_ema_follows(tmp_path):
    """Lightning's ``EMAWeightAveraging`` (lightning/pytorch/callbacks/weight_averaging.py,
    ``on_save_checkpoint``) writes the averaged model as ``state_dict`` and the live one as
    ``current_model_state``: the average loads by default and is called EMA, ``use_ema=False``
    loads the live weights, ``use_ema=True`` the average. Saved by a real ``ModelCheckpoint``
    during ``fit``, when the callback holds its average."""
    import lightning as L
    from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint

    class Classifier(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = torchvision.models.resnet18(num_classes=4)

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self.model(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 4, (8,)))
    trainer = L.Trainer(max_steps=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", default_root_dir=tmp_path,
                        callbacks=[EMAWeightAveraging(decay=0.5),
                                   ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1,
                                                   filename="mid")])
    trainer.fit(Classifier(), torch.utils.data.DataLoader(data, batch_size=2))
    ckpt = next(tmp_path.glob("mid*.ckpt"))
    raw = torch.load(ckpt, weights_only=False)
    average = {k.removeprefix("model."): v for k, v in raw["state_dict"].items()}
    live = {k.removeprefix("model."): v for k, v in raw["current_model_state"].items()}
    assert any(not torch.equal(average[k], live[k]) for k in average if average[k].is_floating_point())

    for use_ema, expected, label in ((None, average, "'state_dict' (EMA weights)"), (True, average, None),
                                     (False, live, "'current_model_state' (live weights)")):
        model = zooadapt.load("resnet18", weights=ckpt, use_ema=use_ema)
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in expected.items()), use_ema
        if label:
            assert model.zooadapt.report.plan.weight_set.startswith(label)


def test_lightning_checkpoint_finds_the_model_prefix(tmp_path):
    """A real Trainer's checkpoint: ``state_dict`` keys ``model.…`` beside ``optimizer_states``,
    ``lr_schedulers``, ``hyper_parameters``, ``loops``, ``callbacks``."""
    import lightning as L

    class Classifier(L.LightningModule):
        def __init__(self, lr: float = 0.1) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.model = torchvision.models.resnet18(num_classes=4)

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self.model(x), y)

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1)}

    data = torch.utils.data.TensorDataset(torch.randn(4, 3, 32, 32), torch.randint(0, 4, (4,)))
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path)
    module = Classifier()
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=2))
    ckpt = tmp_path / "epoch=0-step=1.ckpt"
    trainer.save_checkpoint(ckpt)
    raw = torch.load(ckpt, weights_only=False)
    assert {"optimizer_states", "lr_schedulers", "hyper_parameters", "state_dict"} <= set(raw)

    model = zooadapt.load("resnet18", weights=ckpt, num_classes=4)
    assert found_rules(model) == {"strip 'model.' (found)"}
    for key, value in module.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    # the plan preview takes the same path
    assert "strip 'model.' (found)" in zooadapt.plan_for("resnet18", ckpt, num_classes=4).rule_counts()


# -- 2. torch.compile and DDP, in both orders ----------------------------------------------------


@pytest.fixture
def process_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("order", ["compile-then-ddp", "ddp-then-compile"])
def test_compile_and_ddp_wrappers_in_either_order(order, process_group, tmp_path, r18):
    from torch.nn.parallel import DistributedDataParallel as DDP

    net = torchvision.models.resnet18()
    net.load_state_dict(r18)
    wrapped = DDP(torch.compile(net)) if order == "compile-then-ddp" else torch.compile(DDP(net))
    state = wrapped.state_dict()
    prefix = "module._orig_mod." if order == "compile-then-ddp" else "_orig_mod.module."
    assert next(iter(state)).startswith(prefix)
    torch.save(state, tmp_path / "wrapped.pth")
    model = zooadapt.load("resnet18", weights=tmp_path / "wrapped.pth")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in r18.items())
    assert model.zooadapt.report.plan.fits


# -- 3. timm's train.py: live and EMA weights, argparse and numpy metadata --------------------------


def timm_train_checkpoint(path: Path, live: dict, ema: dict) -> None:
    """As timm.utils.CheckpointSaver._save writes it (timm/utils/checkpoint_saver.py)."""
    args = argparse.Namespace(model="resnet18", lr=0.5, epochs=100, output=Path("/runs/x"))
    torch.save({
        "epoch": 41, "arch": args.model, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        "version": 2, "args": args, "state_dict": live, "state_dict_ema": ema, "metric": np.float64(71.3),
        "saver": {"checkpoint_files": [("checkpoint-40.pth.tar", 70.9)], "best_epoch": 40,
                  "best_metric": 70.9, "pending": (41, 71.3)},
    }, path)


def test_timm_train_checkpoint_prefers_ema_and_says_so(tmp_path, r18):
    live = {k: v + 1 if v.is_floating_point() else v for k, v in r18.items()}
    timm_train_checkpoint(tmp_path / "last.pth.tar", live, r18)
    model = zooadapt.load("resnet18", weights=tmp_path / "last.pth.tar", num_classes=2)  # no trusted=True needed
    assert torch.equal(model.conv1.weight, r18["conv1.weight"])
    assert model.zooadapt.report.plan.weight_set.startswith("'state_dict_ema' (EMA weights)")
    assert "'state_dict'" in str(model.zooadapt.report)
    live_model = zooadapt.load("resnet18", weights=tmp_path / "last.pth.tar", num_classes=2, use_ema=False)
    assert torch.equal(live_model.conv1.weight, live["conv1.weight"])


def test_use_ema_true_without_ema_weights_is_refused(tmp_path, r18):
    torch.save({"state_dict": r18, "epoch": 1}, tmp_path / "plain.pth")
    with pytest.raises(InvalidArgumentError, match="holds no EMA weights"):
        zooadapt.load("resnet18", weights=tmp_path / "plain.pth", use_ema=True)


# -- 4. detection and segmentation trunks ---------------------------------------------------------


@pytest.mark.parametrize("builder, prefix", [
    (lambda: torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None),
     "backbone.body."),
    (lambda: torchvision.models.segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None, aux_loss=True),
     "backbone."),
], ids=["fasterrcnn", "deeplabv3"])
def test_backbone_inside_a_detector_or_segmenter(builder, prefix, tmp_path):
    state = seeded(builder().state_dict(), 50)
    path = save_safetensors(state, tmp_path / "trunk.safetensors")
    model = zooadapt.load("resnet50", weights=path, num_classes=3)
    trunk = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and "fpn" not in k}
    mine = model.state_dict()
    loaded = [k for k in trunk if k in mine and not k.startswith("fc.")]
    assert len(loaded) >= 300 and all(torch.equal(mine[k], trunk[k]) for k in loaded)
    plan = model.zooadapt.report.plan
    assert plan.fits and plan.unexpected  # the detector's own heads are counted, not loaded
    report = str(model.zooadapt.report)
    assert "unused, no place in the model" in report


def test_partial_that_would_load_almost_nothing_is_refused(tmp_path):
    """A detector trunk into another architecture: even partial=True refuses a mostly random model."""
    state = seeded(torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
                   .state_dict(), 51)
    path = save_safetensors(state, tmp_path / "det.safetensors")
    with pytest.raises(IncompatibleCheckpointError, match="min_coverage=0.9"):
        zooadapt.load("resnet18", weights=path, partial=True, min_coverage=0.9)


def ssdlite_backbone_state() -> dict[str, torch.Tensor]:
    """SSDlite's backbone as torchvision's ssdlite320_mobilenet_v3_large builds it from an ImageNet
    MobileNet v3 (torchvision/models/detection/ssdlite.py: the full tail, BatchNorm eps 0.001,
    ``_mobilenet_extractor``), under the detector's ``backbone.`` prefix."""
    from functools import partial

    from torchvision.models.detection.ssdlite import _mobilenet_extractor

    norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    base = torchvision.models.mobilenet_v3_large(weights=None, norm_layer=norm_layer, reduced_tail=False)
    extractor = _mobilenet_extractor(base, 6, norm_layer)
    return seeded({f"backbone.{k}": v for k, v in extractor.state_dict().items()}, 52)


def test_ssdlite_trunk_with_the_stage_it_lacks_skipped(tmp_path):
    """SSDlite re-nests MobileNet v3's features (features.0 up to C4's expansion, features.1
    after it) and drops the classifier: structural pairing maps it once the missing
    ``pre_logits`` stage is skipped; without that, the error names the part to skip."""
    state = ssdlite_backbone_state()
    torch.save(state, tmp_path / "ssdlite.pth")
    with pytest.raises(IncompatibleCheckpointError, match="skip=\\('classifier',\\)"):
        zooadapt.load("mobilenet_v3_large", weights=tmp_path / "ssdlite.pth", num_classes=3)
    model = zooadapt.load("mobilenet_v3_large", weights=tmp_path / "ssdlite.pth", num_classes=3, skip=["pre_logits"])
    assert torch.equal(model.features[0][0].weight, state["backbone.features.0.0.0.weight"])
    assert torch.equal(model.features[16][0].weight, state["backbone.features.1.3.0.weight"])
    assert any("paired by order" in n for n in model.zooadapt.report.plan.notes)


# -- 5. self-supervised trainers ------------------------------------------------------------------


class _DINOHead(nn.Module):
    """facebookresearch/dino vision_transformer.py DINOHead (nlayers=3, no BN), at small widths."""

    def __init__(self, in_dim: int, out_dim: int = 96, hidden_dim: int = 64, bottleneck_dim: int = 32) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim),
                                 nn.GELU(), nn.Linear(hidden_dim, bottleneck_dim))
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))


class _MultiCropWrapper(nn.Module):
    """facebookresearch/dino utils.py MultiCropWrapper: the backbone's ``fc`` becomes an Identity."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        backbone.fc, backbone.head = nn.Identity(), nn.Identity()
        self.backbone, self.head = backbone, head


def test_dino_teacher_is_the_ema_weight_set(tmp_path, process_group):
    """As facebookresearch/dino main_dino.py builds and saves it for a torchvision ResNet: student
    and teacher are MultiCropWrapper(backbone, DINOHead); a network with BatchNorm has both
    wrapped in DDP (``module.backbone.…``); ``save_dict = {'student', 'teacher', 'optimizer',
    'epoch', 'args', 'dino_loss'}``."""
    import warnings

    from torch.nn.parallel import DistributedDataParallel as DDP

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # nn.utils.weight_norm, as DINO uses it
        student = DDP(_MultiCropWrapper(torchvision.models.resnet18(), _DINOHead(512)))
        teacher = DDP(_MultiCropWrapper(torchvision.models.resnet18(), _DINOHead(512)))
    student.module.load_state_dict(seeded(student.module.state_dict(), 7))
    teacher.module.load_state_dict(student.module.state_dict())  # teacher and student start the same
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1)  # ...then the student trains and the teacher follows it as a moving average
    body = {k[len("backbone."):]: v for k, v in teacher.module.state_dict().items() if k.startswith("backbone.")}
    assert next(iter(student.state_dict())).startswith("module.backbone.")
    torch.save({"student": student.state_dict(), "teacher": teacher.state_dict(), "optimizer": {}, "epoch": 100,
                "args": argparse.Namespace(arch="resnet18"), "dino_loss": {"center": torch.zeros(1, 96)}},
               tmp_path / "checkpoint.pth")
    model = zooadapt.load("resnet18", weights=tmp_path / "checkpoint.pth", num_classes=10)
    assert torch.equal(model.layer4[1].conv2.weight, body["layer4.1.conv2.weight"])
    assert "'teacher'" in model.zooadapt.report.plan.weight_set
    assert model.zooadapt.report.plan.fits  # DDP's 'module.', then the resnet family's own 'backbone.' rule
    student_model = zooadapt.load("resnet18", weights=tmp_path / "checkpoint.pth", num_classes=10, use_ema=False)
    assert torch.equal(student_model.conv1.weight, body["conv1.weight"] + 1)


class _MoCo(nn.Module):
    """facebookresearch/moco moco/builder.py MoCo (v2, ``mlp=True``): two encoders built with
    ``num_classes=dim`` whose ``fc`` becomes Linear-ReLU-fc, and the ``queue``/``queue_ptr`` buffers."""

    def __init__(self, dim: int = 128, K: int = 4096) -> None:
        super().__init__()
        self.encoder_q = torchvision.models.resnet18(num_classes=dim)
        self.encoder_k = torchvision.models.resnet18(num_classes=dim)
        for encoder in (self.encoder_q, self.encoder_k):
            dim_mlp = encoder.fc.weight.shape[1]
            encoder.fc = nn.Sequential(nn.Linear(dim_mlp, dim_mlp), nn.ReLU(), encoder.fc)
        self.register_buffer("queue", torch.randn(dim, K))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))


def test_moco_two_encoders_are_refused_until_one_is_named(tmp_path, process_group):
    """As facebookresearch/moco main_moco.py saves it: ``{'epoch', 'arch', 'state_dict':
    model.state_dict(), 'optimizer'}`` of the DDP-wrapped MoCo (``module.encoder_q.…``)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    moco = DDP(_MoCo())
    moco.module.load_state_dict(seeded(moco.module.state_dict(), 8))
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": moco.state_dict(), "optimizer": {}},
               tmp_path / "checkpoint_0199.pth.tar")
    with pytest.raises(AmbiguousCheckpointError) as err:
        zooadapt.load("resnet18", weights=tmp_path / "checkpoint_0199.pth.tar")
    assert "module.encoder_q." in str(err.value) and "module.encoder_k." in str(err.value)
    model = zooadapt.load("resnet18", weights=tmp_path / "checkpoint_0199.pth.tar",
                          rules=["strip:module.encoder_q."], num_classes=5)
    assert torch.equal(model.layer1[0].conv1.weight, moco.module.encoder_q.layer1[0].conv1.weight)
    assert "strip 'module.encoder_q.'" in model.zooadapt.report.plan.rule_counts()
    assert {m.checkpoint_key for m in model.zooadapt.report.plan.dropped} >= {"module.encoder_q.fc.0.weight"}


# -- 6. Hugging Face transformers -----------------------------------------------------------------


def test_transformers_resnet50_gives_the_same_outputs(tmp_path):
    from transformers import ResNetConfig, ResNetForImageClassification

    # microsoft/resnet-50's config.json: bottleneck, depths 3-4-6-3, stride in the 3x3 conv
    config = ResNetConfig(layer_type="bottleneck", depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048],
                          downsample_in_bottleneck=False, num_labels=1000)
    hf = ResNetForImageClassification(config).eval()
    state = seeded(hf.state_dict(), 9)
    hf.load_state_dict(state)
    path = save_safetensors(state, tmp_path / "model.safetensors")
    model = zooadapt.load("resnet50", weights=path).eval()
    assert any("transformers-resnet" in n for n in model.zooadapt.report.plan.notes)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(x).logits, rtol=1e-4, atol=1e-5)


def test_transformers_repo_without_a_file_finds_its_weights(hub, r18):
    """``hf://org/repo`` names a repository; transformers' repos hold ``pytorch_model.bin``."""
    import io

    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512],
                          downsample_in_first_stage=False, num_labels=1000)
    state = seeded(ResNetForImageClassification(config).state_dict(), 10)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    hub.add_file("microsoft/resnet-18", "pytorch_model.bin", buffer.getvalue())
    model = zooadapt.load("resnet18", weights="hf://microsoft/resnet-18")
    assert torch.equal(model.conv1.weight, state["resnet.embedder.embedder.convolution.weight"])
    assert model.zooadapt.report.source.endswith("pytorch_model.bin")


@pytest.mark.parametrize(("arch", "depths", "widths"), [
    ("convnext_tiny", [3, 3, 9, 3], [96, 192, 384, 768]),  # facebook/convnext-tiny-224's config.json
    # timm builds these with conv_mlp=True: transformers' Linear pwconv1/2 are its 1x1 convolutions
    ("convnext_atto", [2, 2, 6, 2], [40, 80, 160, 320]),
    ("convnext_femto", [2, 2, 6, 2], [48, 96, 192, 384]),
    ("convnext_pico", [2, 2, 6, 2], [64, 128, 256, 512]),
    ("convnext_nano", [2, 2, 8, 2], [80, 160, 320, 640]),
])
def test_transformers_convnext_gives_the_same_outputs(arch, depths, widths, tmp_path):
    import timm
    from transformers import ConvNextConfig, ConvNextForImageClassification

    hf = ConvNextForImageClassification(ConvNextConfig(depths=depths, hidden_sizes=widths, num_labels=1000)).eval()
    state = seeded(hf.state_dict(), 11)
    hf.load_state_dict(state)
    path = save_safetensors(state, tmp_path / "model.safetensors")
    model = zooadapt.load(arch, weights=path).eval()
    assert model.zooadapt.report.plan.coverage == 1.0
    assert isinstance(model, timm.models.convnext.ConvNeXt)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(x).logits, rtol=1e-4, atol=1e-4)


# -- 7. an independent re-implementation -----------------------------------------------------------


class _TonylinsInvertedResidual(nn.Module):
    """tonylins/pytorch-mobilenet-v2, MobileNetV2.py (a widely used re-implementation)."""

    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = int(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        layers = [] if expand_ratio == 1 else [nn.Conv2d(inp, hidden, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden),
                                               nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(inplace=True), nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class TonylinsMobileNetV2(nn.Module):
    def __init__(self, n_class=1000):
        super().__init__()
        setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
                   [6, 320, 1, 1]]
        features = [nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(inplace=True))]
        channels = 32
        for t, c, n, s in setting:
            for i in range(n):
                features.append(_TonylinsInvertedResidual(channels, c, s if i == 0 else 1, t))
                channels = c
        features.append(nn.Sequential(nn.Conv2d(channels, 1280, 1, 1, 0, bias=False), nn.BatchNorm2d(1280),
                                      nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Linear(1280, n_class)

    def forward(self, x):
        return self.classifier(self.features(x).mean(3).mean(2))


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_reimplementation_with_colliding_names_pairs_by_structure(fmt, tmp_path):
    theirs = TonylinsMobileNetV2().eval()
    state = seeded(theirs.state_dict(), 12)
    theirs.load_state_dict(state)
    # names collide with torchvision's at other shapes: features.1.conv.1.weight is a BatchNorm
    # weight here and a 1x1 convolution in torchvision
    assert state["features.1.conv.1.weight"].shape == (32,)
    path = tmp_path / f"mobilenet_v2.{fmt}"
    torch.save(state, path) if fmt == "pth" else save_safetensors(state, path)
    model = zooadapt.load("mobilenet_v2", weights=path).eval()
    plan = model.zooadapt.report.plan
    assert plan.fits and plan.coverage == 1.0
    assert any("paired by order and tensor signature" in n for n in plan.notes)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), theirs(x), rtol=1e-4, atol=1e-5)


# -- 8. wrong architecture, wrapped backbone, half heads -------------------------------------------


def test_resnet50_checkpoint_as_resnet34_names_the_architecture_it_fits(tmp_path):
    state = seeded(torchvision.models.resnet50().state_dict(), 13)
    path = save_safetensors(state, tmp_path / "r50.safetensors")
    with pytest.raises(IncompatibleCheckpointError) as err:
        zooadapt.load("resnet34", weights=path)
    text = str(err.value)
    assert "fits resnet50 (100% of its tensors); load it as 'resnet50'" in text
    assert "skip=" not in text and "partial=True" not in text  # advice that would leave it mostly random


def test_backbone_checkpoint_fills_the_backbone_of_a_users_model(tmp_path, r18):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torchvision.models.resnet18()
            self.backbone.fc = nn.Identity()
            self.head = nn.Linear(512, 3)

    net = Net()
    torch.save(r18, tmp_path / "r18.pth")
    report = zooadapt.load_weights(net, tmp_path / "r18.pth", family="resnet")
    assert torch.equal(net.backbone.layer2[0].conv1.weight, r18["layer2.0.conv1.weight"])
    assert "add 'backbone.' (found)" in report.plan.rule_counts()
    assert {m.checkpoint_key for m in report.plan.unexpected} == {"fc.weight", "fc.bias"}


def test_a_changed_head_module_is_new_as_a_whole():
    from zooadapt.loading.plan import make_plan

    plan = make_plan({"body.weight": (4, 4), "fc.weight": (1000, 2048), "fc.bias": (1000,)},
                     {"body.weight": (4, 4), "fc.weight": (1000, 512), "fc.bias": (1000,)}, head="fc")
    assert sorted(plan.new_head) == ["fc.bias", "fc.weight"]
    assert {m.checkpoint_key for m in plan.dropped} == {"fc.weight", "fc.bias"}


def test_user_rules_run_before_the_familys_in_every_entry_point(tmp_path, r18):
    torch.save({f"net.{k}": v for k, v in r18.items()}, tmp_path / "net.pth")
    model = zooadapt.load("resnet18", weights=tmp_path / "net.pth", rules=["strip:net."])
    assert model.zooadapt.report.plan.rule_counts() == {"strip 'net.'": len(r18)}
    assert zooadapt.plan_for("resnet18", tmp_path / "net.pth", rules=["strip:net."]).fits
    with pytest.raises(InvalidArgumentError, match="strip:PREFIX"):
        zooadapt.load("resnet18", weights=tmp_path / "net.pth", rules=["stripe:net."])


def test_discovery_is_one_make_plan_when_the_names_fit(monkeypatch, r18):
    """Discovery costs nothing for a checkpoint the family's rules already fit."""
    import zooadapt.loading.adapt as adapt

    calls = []
    real = adapt.make_plan
    adapt._plans.clear()  # planned afresh, not handed out from an earlier test's plan
    monkeypatch.setattr(adapt, "make_plan", lambda *a, **k: calls.append(1) or real(*a, **k))
    plan = zooadapt.plan_for("resnet18", r18)
    assert plan.fits and len(calls) == 1
    assert math.isclose(plan.backbone_coverage, 1.0)


def vit_hub_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 5's in-memory ViT names back to the Hub files' (transformers 4) names, by
    inverting transformers/conversion_mapping.py's "ViTModel" renames."""
    table = [("attention.q_proj", "attention.attention.query"), ("attention.k_proj", "attention.attention.key"),
             ("attention.v_proj", "attention.attention.value"), ("attention.o_proj", "attention.output.dense"),
             ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense"), ("vit.layers.", "vit.encoder.layer.")]
    out = {}
    for key, value in state.items():
        for new, old in table:
            key = key.replace(new, old)
        out[key] = value
    return out


@pytest.mark.parametrize("names", ["hub", "transformers5"])
def test_transformers_vit_gives_the_same_outputs(names, tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    # google/vit-base-patch16-224's layout at vit_tiny's size (embed 192, 12 blocks, 3 heads)
    config = ViTConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                       image_size=224, patch_size=16, num_labels=1000)  # transformers' LayerNorm eps, 1e-12
    hf = ViTForImageClassification(config).eval()
    state = seeded(hf.state_dict(), 14)
    hf.load_state_dict(state)
    file_state = vit_hub_names(state) if names == "hub" else state
    if names == "hub":
        assert "vit.encoder.layer.0.attention.attention.query.weight" in file_state
    path = save_safetensors(file_state, tmp_path / "model.safetensors")
    model = zooadapt.load("vit_tiny_patch16_224", weights=path).eval()
    plan = model.zooadapt.report.plan
    assert plan.fits and len(plan.fused) == 24  # weight and bias of query+key+value, 12 blocks
    assert any("with LayerNorm.eps=1e-12, as transformers' file needs" in n for n in plan.notes)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = hf(x).logits
        assert (model(x) - expected).abs().max() <= 1e-6 * expected.abs().max()
    # a ViT trained with timm's eps in transformers' names: the user's option wins, and is said
    timm_eps = zooadapt.load("vit_tiny_patch16_224", weights=path, **{"LayerNorm.eps": 1e-6})
    assert {m.eps for m in timm_eps.modules() if isinstance(m, nn.LayerNorm)} == {1e-6}
    assert any("as you asked, not the LayerNorm.eps=1e-12" in n for n in timm_eps.zooadapt.report.plan.notes)


def test_transformers_mobilenet_v2_maps_every_tensor(tmp_path):
    from functools import partial

    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    # google/mobilenet_v2_1.0_224's layout; tf_padding off so torchvision's padding computes the same
    config = MobileNetV2Config(tf_padding=False, num_labels=1000, layer_norm_eps=1e-3)
    hf = MobileNetV2ForImageClassification(config).eval()
    state = seeded(hf.state_dict(), 15)
    hf.load_state_dict(state)
    path = save_safetensors(state, tmp_path / "model.safetensors")
    # the TensorFlow port's BatchNorm eps (1e-3): the layout sets it on torchvision's model
    model = zooadapt.load("mobilenet_v2", weights=path).eval()
    plan = model.zooadapt.report.plan
    assert plan.fits and plan.coverage == 1.0 and not plan.unexpected
    assert any("with BatchNorm2d.eps=0.001, as transformers' file needs" in n for n in plan.notes)
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = hf(x).logits
        assert (model(x) - expected).abs().max() <= 1e-6 * expected.abs().max()
    # built the same way with the builder's own option: the user's option is used, the layout's too
    given = zooadapt.load("mobilenet_v2", weights=path, norm_layer=partial(nn.BatchNorm2d, eps=1e-3)).eval()
    with torch.no_grad():
        assert torch.equal(given(x), model(x))

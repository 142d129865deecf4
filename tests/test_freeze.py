"""The freeze grammar and the BatchNorm policy, on ResNet's stage map."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision
from zooadapt.plugins.resnet import STAGES

import zooadapt
from zooadapt.errors import FreezeSpecError, InvalidArgumentError
from zooadapt.plugin_api import Stage, StageMap


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("layer1-3", ("layer1", "layer2", "layer3")),
        ("stem,layer1", ("stem", "layer1")),
        ("stem-layer2", ("stem", "layer1", "layer2")),
        (":layer3", ("stem", "layer1", "layer2", "layer3")),
        ("layer3:", ("layer3", "layer4")),
        ("all", ("stem", "layer1", "layer2", "layer3", "layer4")),
        ("backbone", ("stem", "layer1", "layer2", "layer3", "layer4")),
        (2, ("stem", "layer1")),
        (0, ()),
        (None, ()),
        ("none", ()),
        (["layer4", "stem"], ("stem", "layer4")),
        ("layer2, layer1", ("layer1", "layer2")),
    ],
)
def test_grammar(spec, expected):
    assert STAGES.resolve(spec) == expected


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("layr1", "Did you mean: layer1"),
        ("layer1-7", "unknown stage 'layer7'"),
        ("layer3-1", "runs backwards"),
        (9, "there are 5"),
        (True, "ambiguous"),
        ("head", "not a stage"),
    ],
)
def test_bad_specs_list_the_stages(spec, fragment):
    with pytest.raises(FreezeSpecError) as info:
        STAGES.resolve(spec)
    assert fragment in str(info.value)
    assert "stem, layer1, layer2, layer3, layer4" in str(info.value)


def _model():
    model = zooadapt.load("resnet18", num_classes=3, pretrained=False)
    return model


def test_requires_grad_follows_stages():
    model = _model()
    zooadapt.freeze(model, "stem,layer2")
    for name, p in model.named_parameters():
        frozen = name.startswith(("conv1", "bn1", "layer2"))
        assert p.requires_grad is not frozen, name


def test_frozen_batchnorm_survives_train_and_keeps_stats():
    model = _model()
    zooadapt.freeze(model, "layer1")
    model.train()
    bn = model.layer1[0].bn1
    assert bn.training is False and isinstance(bn, torch.nn.BatchNorm2d)
    assert model.layer2[0].bn1.training is True
    stats = bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()
    model(torch.randn(2, 3, 32, 32))
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.num_batches_tracked, stats[2])


def test_bn_train_policy_lets_statistics_move():
    model = _model()
    zooadapt.freeze(model, "layer1", bn="train")
    model.train()
    bn = model.layer1[0].bn1
    before = bn.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert not torch.equal(bn.running_mean, before)
    assert not bn.weight.requires_grad


def test_unfreeze_restores_training_mode_and_grads():
    model = _model()
    zooadapt.freeze(model, "all")
    assert zooadapt.unfreeze(model, "layer3-4") == ("layer3", "layer4")  # what it unfroze
    assert zooadapt.frozen_stages(model) == ("stem", "layer1", "layer2")  # what is still frozen
    model.train()
    assert model.layer4[0].bn1.training and type(model.layer4[0].bn1) is torch.nn.BatchNorm2d
    assert model.layer4[0].conv1.weight.requires_grad
    assert not model.layer1[0].conv1.weight.requires_grad
    assert model.zooadapt.frozen == ("stem", "layer1", "layer2")


def test_frozen_state_dict_loads_into_plain_torchvision_model():
    model = _model()
    zooadapt.freeze(model, "all")
    plain = torchvision.models.resnet18(num_classes=3)
    plain.load_state_dict(model.state_dict(), strict=True)
    clone = pickle.loads(pickle.dumps(model))
    clone.train()
    assert clone.layer1[0].bn1.training is False


def test_freeze_all_leaves_only_head_trainable():
    model = _model()
    zooadapt.freeze(model, "all")
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]


def test_freeze_on_foreign_model_needs_stages_once():
    with pytest.raises(InvalidArgumentError, match="stages="):
        zooadapt.freeze(torchvision.models.resnet18(), "layer1")
    plain = torchvision.models.resnet18()
    assert zooadapt.freeze(plain, "layer1", stages=STAGES) == ("layer1",)
    assert not plain.layer1[0].conv1.weight.requires_grad
    # remembered: later calls on the same model need no stages=
    assert zooadapt.freeze(plain, "layer2") == ("layer1", "layer2")
    assert zooadapt.frozen_stages(plain) == ("layer1", "layer2")
    assert zooadapt.unfreeze(plain, "layer1-3") == ("layer1", "layer2")


def test_unfreeze_returns_the_stages_it_unfroze():
    model = _model()
    zooadapt.freeze(model, "layer1-2")
    assert zooadapt.unfreeze(model, "all") == ("layer1", "layer2")
    assert zooadapt.unfreeze(model, "all") == ()  # nothing was frozen any more
    # a stage with only its BatchNorm statistics frozen counts, a partly frozen one too
    zooadapt.freeze(model, "stem,layer1")
    model.layer3[0].conv1.weight.requires_grad_(False)
    for p in model.layer1.parameters():
        p.requires_grad_(True)
    assert zooadapt.frozen_stages(model) == ("stem",)
    assert zooadapt.unfreeze(model, ["stem", "layer1", "layer3", "layer4"]) == ("stem", "layer1", "layer3")
    assert zooadapt.frozen_stages(model) == () and type(model.layer1[0].bn1) is torch.nn.BatchNorm2d


# -- more grammar -----------------------------------------------------------------------

MOBILENET_LIKE = StageMap(
    stages=tuple(Stage(f"conv{i}", (f"model.{i - 1}",)) for i in range(1, 15)), head="fc")
HYPHENATED = StageMap(
    stages=(Stage("patch-embed", ("patch_embed",)), Stage("block-1", ("blocks.0",)),
            Stage("block-2", ("blocks.1",)), Stage("block-3", ("blocks.2",))),
    head="head")


@pytest.mark.parametrize(
    ("smap", "spec", "expected"),
    [
        (MOBILENET_LIKE, "conv1-7", tuple(f"conv{i}" for i in range(1, 8))),
        (MOBILENET_LIKE, "conv12-14", ("conv12", "conv13", "conv14")),
        (MOBILENET_LIKE, ":conv3", ("conv1", "conv2", "conv3")),
        (STAGES, "3", ("stem", "layer1", "layer2")),  # an int from a command line or a config file
        (HYPHENATED, "block-1", ("block-1",)),
        (HYPHENATED, "patch-embed-block-2", ("patch-embed", "block-1", "block-2")),
        (HYPHENATED, "block-2-3", ("block-2", "block-3")),
    ],
)
def test_grammar_on_other_maps(smap, spec, expected):
    assert smap.resolve(spec) == expected


def test_head_is_not_freezable_and_says_what_to_do():
    with pytest.raises(FreezeSpecError, match="stays trainable; freeze 'all'"):
        STAGES.resolve("fc")


# -- BatchNorm policy for every BatchNorm kind ------------------------------------------

class _Tiny(torch.nn.Module):
    """Stages with BatchNorm1d, 2d and 3d, in the order of the forward."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 1), torch.nn.BatchNorm3d(4))
        self.b = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(4))
        self.c = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        x = self.a(x).mean(2)
        x = self.b(x).mean((2, 3))
        return self.head(self.c(x))


TINY = StageMap(
    stages=(Stage("a", ("a",)), Stage("b", ("b",)), Stage("c", ("c",))), head="head")


def _stats(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "tracked" in k}


def test_batchnorm_1d_2d_3d_frozen_stats_do_not_move():
    model = _Tiny()
    zooadapt.freeze(model, "all", stages=TINY)
    model.train()
    before = _stats(model)
    model(torch.randn(4, 2, 3, 5, 5)).sum().backward()
    after = _stats(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    bns = [model.a[1], model.b[1], model.c[1]]
    assert [type(m).__name__ for m in bns] == ["FrozenBatchNorm3d", "FrozenBatchNorm2d", "FrozenBatchNorm1d"]
    assert all(not m.training and m.weight.grad is None for m in bns)
    assert model.head.weight.grad is not None


def test_sync_batchnorm_frozen_runs_on_cpu_without_process_group():
    model = zooadapt.load("resnet18", num_classes=3, pretrained=False)
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(model.layer1[0].bn1, torch.nn.SyncBatchNorm)
    zooadapt.freeze(model, ":layer4")  # every stage: no SyncBatchNorm left that would need a process group
    model.train()
    bn = model.layer2[0].bn1
    assert type(bn).__name__ == "FrozenSyncBatchNorm" and isinstance(bn, torch.nn.SyncBatchNorm)
    before = bn.running_mean.clone()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert torch.equal(bn.running_mean, before) and bn.weight.grad is None
    assert model.fc.weight.grad is not None
    plain = torchvision.models.resnet18(num_classes=3)
    plain.load_state_dict(model.state_dict(), strict=True)


def test_bn_train_after_frozen_restores_plain_batchnorm():
    model = _model()
    zooadapt.freeze(model, "layer1")
    zooadapt.freeze(model, "layer1", bn="train")
    assert type(model.layer1[0].bn1) is torch.nn.BatchNorm2d
    assert not model.layer1[0].bn1.weight.requires_grad
    assert model.zooadapt.bn == "train"


def test_frozen_stages_read_from_parameters():
    model = _model()
    zooadapt.freeze(model, "stem,layer1")
    model.conv1.weight.requires_grad_(True)
    assert zooadapt.frozen_stages(model) == ("layer1",)


# -- copies and other processes ---------------------------------------------------------

def test_deepcopy_keeps_the_policy_and_is_independent():
    import copy

    model = _model()
    zooadapt.freeze(model, "layer1")
    clone = copy.deepcopy(model)
    clone.train()
    assert type(clone.layer1[0].bn1) is type(model.layer1[0].bn1) and not clone.layer1[0].bn1.training
    clone.layer1[0].bn1.running_mean.add_(1)
    assert not torch.equal(clone.layer1[0].bn1.running_mean, model.layer1[0].bn1.running_mean)
    assert zooadapt.unfreeze(clone, "layer1") == ("layer1",)
    assert type(clone.layer1[0].bn1) is torch.nn.BatchNorm2d


_CHILD = r"""
import pickle, sys, torch
for model in pickle.loads(sys.stdin.buffer.read()):
    model.train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    frozen = sorted({type(m).__name__ for m in bns if not m.training})
    trained = sorted({type(m).__name__ for m in bns if m.training})
    print(frozen, trained, sum(not p.requires_grad for p in model.parameters()))
"""


def _timm_frozen():
    timm = pytest.importorskip("timm")
    model = timm.create_model("mobilenetv3_small_050", num_classes=3)
    smap = StageMap(
        stages=(Stage("stem", ("conv_stem", "bn1")),
                *(Stage(f"blocks{i}", (f"blocks.{i}",)) for i in range(len(model.blocks)))),
        head="classifier")
    zooadapt.freeze(model, "stem-blocks2", stages=smap)
    return timm, model


@pytest.mark.slow
def test_pickled_frozen_models_unpickle_in_a_fresh_process():
    """The frozen classes are generated at run time; another process rebuilds them from the base class."""
    import subprocess
    import sys

    model = _model()
    zooadapt.freeze(model, "layer1-2")
    _, timm_model = _timm_frozen()
    counts = [sum(not p.requires_grad for p in m.parameters()) for m in (model, timm_model)]
    out = subprocess.run([sys.executable, "-c", _CHILD], input=pickle.dumps([model, timm_model]),
                         capture_output=True, check=True).stdout.decode().splitlines()
    assert out == [f"['FrozenBatchNorm2d'] ['BatchNorm2d'] {counts[0]}",
                   f"['FrozenBatchNormAct2d'] ['BatchNormAct2d'] {counts[1]}"]


def test_timm_batchnorm_act_frozen_loads_into_plain_timm():
    timm, model = _timm_frozen()
    assert type(model.bn1).__name__ == "FrozenBatchNormAct2d"
    assert isinstance(model.bn1, timm.layers.BatchNormAct2d)
    model.train()
    before = model.bn1.running_var.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(model.bn1.running_var, before)
    plain = timm.create_model("mobilenetv3_small_050", num_classes=3)
    plain.load_state_dict(model.state_dict(), strict=True)
    assert type(plain.bn1) is timm.layers.BatchNormAct2d


def test_whole_model_torch_save_round_trip(tmp_path):
    model = _model()
    zooadapt.freeze(model, "layer3")
    torch.save(model, tmp_path / "m.pt")
    back = torch.load(tmp_path / "m.pt", weights_only=False)
    back.train()
    assert not back.layer3[0].bn1.training and back.layer2[0].bn1.training
    assert back.zooadapt.frozen == ("layer3",)


def test_predefined_frozen_classes_are_importable_by_name():
    from zooadapt.tuning.freezing import FrozenBatchNorm2d, FrozenSyncBatchNorm

    assert issubclass(FrozenBatchNorm2d, torch.nn.BatchNorm2d)
    assert issubclass(FrozenSyncBatchNorm, torch.nn.SyncBatchNorm)
    assert pickle.loads(pickle.dumps(FrozenBatchNorm2d)) is FrozenBatchNorm2d
    model = _model()
    zooadapt.freeze(model, "stem")
    assert type(model.bn1) is FrozenBatchNorm2d


def test_frozen_stages_compute_no_parameter_gradients():
    model = _model()
    zooadapt.freeze(model, ":layer3")
    model.train()
    seen = {}
    model.layer3.register_forward_hook(lambda _m, _i, out: seen.update(requires_grad=out.requires_grad))
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    # nothing below layer4 is trainable, so autograd records no graph through the frozen stages
    assert seen["requires_grad"] is False
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith(("layer4", "fc")))
    assert all(p.grad is not None for p in model.layer4.parameters())


def test_unfreeze_keeps_classes_mixed_in_after_freezing():
    """FSDP2's fully_shard swaps a module's class for ``FSDP<cls>(FSDPModule, cls)``; unfreezing a
    BatchNorm frozen before that must keep the FSDPModule base (tests/test_fsdp.py does it for real)."""

    class Marker:
        pass

    model = _model()
    zooadapt.freeze(model, "stem")
    bn = model.bn1
    bn.__class__ = type(f"Wrapped{type(bn).__name__}", (Marker, type(bn)), {"note": 1})
    model.train()
    assert not bn.training
    zooadapt.unfreeze(model, "stem")
    assert type(bn).__name__ == "WrappedBatchNorm2d" and isinstance(bn, Marker) and bn.note == 1
    assert type(bn).__mro__[1:3] == (Marker, torch.nn.BatchNorm2d) and bn.training
    zooadapt.freeze(model, "stem")
    zooadapt.unfreeze(model, "stem")
    assert type(bn).__name__ == "WrappedBatchNorm2d" and isinstance(bn, Marker)

"""Truncated multi-output backbones (seed 000): cut after the last requested stage, keys unchanged."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest
import torch
import torch.nn as nn
import torchvision
from seed000 import SeedNet

import zooadapt
from zooadapt.contract.errors import FreezeSpecError, InvalidArgumentError, PluginError
from zooadapt.host.registry import get_registry
from zooadapt.loading.features import check_features, sequential_steps
from zooadapt.loading.plan import Status
from zooadapt.testing import safetensors_bytes, seeded_state_dict

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _family(name: str):
    registry = get_registry()
    if name not in registry.families:
        pytest.skip(f"the {name} family plugin is not installed")
    return registry.family(name)


# -- ResNet: the stage map alone drives the cut -----------------------------------------------

@pytest.mark.slow
def test_resnet_cut_matches_torchvision_by_hand(resnet34_weights):
    net = zooadapt.load("resnet34", features_only=("layer1", "layer3"), freeze="stem")
    plain = torchvision.models.resnet34()
    plain.load_state_dict(resnet34_weights)
    net.eval(), plain.eval()
    with torch.no_grad():
        x = plain.maxpool(plain.relu(plain.bn1(plain.conv1(X))))
        x1 = plain.layer1(x)
        x3 = plain.layer3(plain.layer2(x1))
        out1, out3 = net(X)
    assert torch.equal(out1, x1) and torch.equal(out3, x3)

    # nothing after the cut is kept: no module, no tensor, no memory
    assert not hasattr(net, "layer4") and not hasattr(net, "fc")
    assert {k.split(".")[0] for k in net.state_dict()} == {"conv1", "bn1", "layer1", "layer2", "layer3"}
    kept = sum(p.numel() for n, p in plain.named_parameters() if not n.startswith(("layer4", "fc")))
    assert sum(p.numel() for p in net.parameters()) == kept
    # ... and the checkpoint's later tensors are reported as beyond the cut, never an error nor as
    # model keys left as built (the model does not hold them)
    plan = net.zooadapt.report.plan
    beyond = [k for k in resnet34_weights if k.startswith(("layer4.", "fc."))]
    assert sorted(m.checkpoint_key for m in plan.by_status(Status.BEYOND_CUT)) == sorted(beyond)
    assert not plan.skipped_model_keys and "skipped, left as built" not in str(net.zooadapt.report)
    assert not plan.unexpected and not plan.missing and not plan.new_head and plan.coverage == 1.0
    assert all(torch.equal(net.state_dict()[k], resnet34_weights[k]) for k in net.state_dict())


@pytest.mark.slow
def test_cut_combines_with_freeze_and_param_groups(resnet34_weights):
    net = zooadapt.load("resnet34", features_only=("layer2",), freeze="stem-layer1")
    assert net.zooadapt.stages.names == ("stem", "layer1", "layer2") and net.zooadapt.stages.head == ""
    assert net.zooadapt.frozen == ("stem", "layer1")
    net.train()
    assert not net.bn1.training and net.layer2[0].bn1.training
    groups = zooadapt.param_groups(net, lr=0.1, decay=0.5)
    assert [(g["name"], g["lr"]) for g in groups] == [("layer2", 0.05)]
    with pytest.raises(FreezeSpecError, match="stem, layer1, layer2; head: ") as info:
        zooadapt.freeze(net, "layer4")
    assert "layer4" in str(info.value)


@pytest.mark.slow
def test_out_stages_by_index_keep_the_order_given(resnet18_weights):
    net = zooadapt.load("resnet18", features_only=(2, 0, -4))
    assert net.out_stages == ("layer2", "stem", "layer1")
    shapes = [tuple(o.shape) for o in net.eval()(X)]
    assert shapes == [(2, 128, 8, 8), (2, 64, 32, 32), (2, 64, 16, 16)]  # the stem's map is before the max-pool
    assert not hasattr(net, "layer3")


@pytest.mark.slow
def test_default_out_stages_is_every_stage_without_head():
    net = zooadapt.load("resnet18", features_only=True, pretrained=False)
    assert net.out_stages == ("stem", "layer1", "layer2", "layer3", "layer4") and not hasattr(net, "fc")
    assert net.zooadapt.num_classes is None and net.zooadapt.features_only
    assert [o.shape[1] for o in net(X)] == [64, 64, 128, 256, 512]


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"features_only": ("layr2",)}, InvalidArgumentError, "Did you mean: layer2"),
        ({"features_only": ("layer1", "layer1")}, InvalidArgumentError, "twice"),
        ({"features_only": (7,)}, InvalidArgumentError, "out of range"),
        ({"features_only": ()}, InvalidArgumentError, "names no stage"),
        ({"features_only": ("layer1",), "num_classes": 3}, InvalidArgumentError, "drop num_classes"),
        ({"features_only": True, "num_classes": 3}, InvalidArgumentError, "drop num_classes"),
    ],
)
@pytest.mark.slow
def test_bad_feature_requests(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        zooadapt.load("resnet18", pretrained=False, **kwargs)


@pytest.mark.slow
def test_cut_module_copies_and_pickles():
    net = zooadapt.load("resnet18", features_only=("layer1",), pretrained=False, freeze="stem")
    net.eval()
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        clone.train()
        assert not clone.bn1.training
        assert all(torch.equal(a, b) for a, b in zip(clone.eval()(X), net(X)))


def test_a_plain_sequence_of_children_gives_the_steps():
    model = torchvision.models.resnet18()
    fam = _family("resnet")
    assert sequential_steps(model, fam.stage_map(model), "resnet") == [
        ("stem", ("conv1", "bn1", "relu", "maxpool")), ("layer1", ("layer1",)), ("layer2", ("layer2",)),
        ("layer3", ("layer3",)), ("layer4", ("layer4",))]


# -- MobileNet v1: seed 000's truncated network ----------------------------------------------

@pytest.fixture
def mobilenet_checkpoint(tmp_path):
    """A stand-in for mobilenet_sgd_rmsprop_69.526.tar: 137 tensors under module.model.*, no num_batches_tracked."""
    fam = _family("mobilenet_v1")
    with torch.device("meta"):
        model = fam.build("mobilenet_v1")
    state = {f"module.{k}": v for k, v in seeded_state_dict(model, seed=0).items()
             if not k.endswith("num_batches_tracked")}
    assert len(state) == 137
    path = tmp_path / "mobilenet_sgd_rmsprop_69.526.tar"
    torch.save({"epoch": 150, "arch": "mobilenet", "best_prec1": 69.526, "state_dict": state,
                "optimizer": {"state": {}, "param_groups": []}}, path)
    return path, state


@pytest.mark.slow
def test_seed000_first_seven_blocks_as_seven_outputs(mobilenet_checkpoint):
    path, state = mobilenet_checkpoint
    stages = tuple(f"conv{i}" for i in range(1, 8))
    net = zooadapt.load("mobilenet_v1", weights=path, features_only=stages, freeze="conv1-7")

    # the seed's way: build the truncated net and fill its keys from the checkpoint by position
    seed = SeedNet()
    names = [k for k in seed.state_dict() if not k.endswith("num_batches_tracked")]
    assert len(names) == 65
    seed.load_state_dict(dict(zip(names, list(state.values())[:65])), strict=False)
    net.eval(), seed.eval()
    with torch.no_grad():
        ours, theirs = net(X), seed(X)
    assert len(ours) == 7 and all(torch.equal(a, b) for a, b in zip(ours, theirs))

    plan = net.zooadapt.report.plan
    assert len(plan.loaded) == 65 and not plan.unexpected and not plan.missing
    skipped = sorted(m.checkpoint_key for m in plan.mappings if m.status.value == "beyond_cut")
    assert skipped == sorted(k for k in state if not k.startswith(tuple(f"module.model.{i}." for i in range(7))))
    assert len(skipped) == 137 - 65
    assert net.zooadapt.frozen == stages and not any(p.requires_grad for p in net.parameters())
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in seed.parameters())


# -- other families ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("family", "arch", "out_stages"),
    [("resnet", "resnet18", None), ("mobilenet_v1", "mobilenet_v1", None), ("mobilenet_v2", "mobilenet_v2", None),
     ("mobilenet_v3", "mobilenet_v3_small", ("stem", "stride8", "stride32")),
     ("alexnet", "alexnet", ("conv1", "conv5"))],
)
@pytest.mark.slow
def test_cut_computes_what_the_full_model_computes(family, arch, out_stages):
    diffs = check_features(_family(family), arch, out_stages=out_stages, input_size=(3, 64, 64))
    assert diffs and set(diffs) == set(out_stages or diffs) and max(diffs.values()) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize(("family", "arch"), [("alexnet", "alexnet"), ("mobilenet_v3", "mobilenet_v3_small")])
def test_families_with_pooling_before_their_last_stages_declare_a_flatten(family, arch, monkeypatch):
    """AlexNet's fc6 and MobileNet v3's pre_logits come after pooling + flatten in forward()."""
    fam = dataclasses.replace(_family(family), features=None)  # as if the plugin declared nothing
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        check_features(fam, arch, input_size=(3, 64, 64))
    declared = dataclasses.replace(fam, features=lambda model, out: sequential_steps(
        model, fam.stage_map(model), fam.name, after={"avgpool": [nn.Flatten(1)]}))
    diffs = check_features(declared, arch, input_size=(3, 64, 64))
    assert len(diffs) == (7 if family == "alexnet" else 6) and max(diffs.values()) == 0.0
    # load() uses the family's declaration
    monkeypatch.setitem(get_registry().families, family, declared)
    net = zooadapt.load(arch, pretrained=False, features_only=(-1,))
    assert net.eval()(torch.randn(1, 3, 64, 64))[0].ndim == 2


@pytest.mark.slow
def test_timm_cut_matches_timm_features_only(hub, tmp_path):
    timm = pytest.importorskip("timm")
    _family("timm")
    with torch.device("meta"):
        ref = timm.create_model("convnext_atto")
    state = seeded_state_dict(ref, seed=7)
    blob = safetensors_bytes(state)
    hub.add_file("timm/convnext_atto.d2_in1k", "model.safetensors", blob)
    stages = ("stages.0", "stages.1", "stages.2", "stages.3")
    net = zooadapt.load("convnext_atto.d2_in1k", features_only=stages, freeze="stem-stages.1")
    (tmp_path / "w.safetensors").write_bytes(blob)
    theirs = timm.create_model("convnext_atto", features_only=True, out_indices=(0, 1, 2, 3), pretrained=True,
                               pretrained_cfg_overlay={"file": str(tmp_path / "w.safetensors")})
    net.eval(), theirs.eval()
    with torch.no_grad():
        ours_out, theirs_out = net(X), theirs(X)
    assert len(ours_out) == 4 and all(torch.equal(a, b) for a, b in zip(ours_out, theirs_out))
    assert net.zooadapt.frozen == ("stem", "stages.0", "stages.1")
    plan = net.zooadapt.report.plan
    assert {m.model_key.split(".")[0] for m in plan.by_status(Status.BEYOND_CUT)} == {"head"} and not plan.unexpected
    assert not plan.skipped_model_keys


@pytest.mark.slow
def test_timm_cut_stops_before_its_head_and_final_stage():
    """timm cuts MobileNet v3 (its feature maps end the stages stem, blocks.0, .1, .3, .5: in
    stage order, not consecutive): the cut computes what the full model computes at blocks.5, and
    ``final`` is the pooled pre-logits features the classifier sees."""
    timm = pytest.importorskip("timm")
    _family("timm")
    torch.manual_seed(0)
    cut = zooadapt.load("mobilenetv3_small_050", pretrained=False, features_only=("blocks.5", "final")).eval()
    full = timm.create_model("mobilenetv3_small_050").eval()
    missing, unexpected = full.load_state_dict(cut.state_dict(), strict=False)
    assert not unexpected and {k.split(".")[0] for k in missing} == {"classifier"}
    seen = {}
    full.blocks[5].register_forward_hook(lambda _m, _a, out: seen.setdefault("blocks.5", out))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled = full.forward_head(full.forward_features(x), pre_logits=True)
        got = dict(zip(cut.out_stages, cut(x)))
    assert torch.equal(got["blocks.5"], seen["blocks.5"])
    assert torch.allclose(got["final"], pooled, rtol=0, atol=1e-6)
    net = zooadapt.load("mobilenetv3_small_050.lamb_in1k", pretrained=False, features_only=("blocks.1",), freeze="stem")
    assert not any(k.startswith(("blocks.2.", "conv_head.", "classifier.")) for k in net.state_dict())
    assert type(net.bn1).__name__ == "FrozenBatchNormAct2d"


def test_a_forward_that_is_not_a_sequence_is_refused_not_guessed():
    """ViT's blocks come through timm's forward_intermediates; its stem, which timm never
    outputs and which is no plain sequence of modules, is refused with the reason."""
    pytest.importorskip("timm")
    _family("timm")
    with pytest.raises(PluginError, match=r"\['cls_token', 'pos_embed'\] are not modules.*Family.features"):
        zooadapt.load("vit_tiny_patch16_224.augreg_in21k_ft_in1k", pretrained=False, features_only=("stem",))


def test_a_family_module_must_keep_the_model_keys(monkeypatch):
    fam = _family("resnet")

    class Renamed(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.body = nn.Sequential(model.conv1, model.bn1)

        def forward(self, x):
            return (self.body(x),)

    monkeypatch.setitem(get_registry().families, "resnet",
                        dataclasses.replace(fam, features=lambda model, out: Renamed(model)))
    with pytest.raises(PluginError, match="keep the model's module paths"):
        zooadapt.load("resnet18", pretrained=False, features_only=("stem",))

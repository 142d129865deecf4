"""load_weights: a checkpoint into a model the user built (seeds 000 and 003)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision.models as tvm
from seed000 import SeedNet, conv_dw
from torchvision.models.resnet import BasicBlock

import zooadapt
from zooadapt.contract.rules import Positional
from zooadapt.errors import IncompatibleCheckpointError, InvalidArgumentError, WeightsNotFoundError
from zooadapt.testing import safetensors_bytes
from zooadapt.testing.weights import seeded_state_dict


def _v1_checkpoint(seed: int = 0) -> dict[str, torch.Tensor]:
    from zooadapt.plugins.mobilenet import build_v1

    with torch.device("meta"):
        model = build_v1("mobilenet_v1")
    state = seeded_state_dict(model, seed)
    return {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}


@pytest.fixture(scope="module")
def seed000_tar(tmp_path_factory):
    weights = _v1_checkpoint()
    path = tmp_path_factory.mktemp("seed000") / "mobilenet_sgd_rmsprop_69.526.tar"
    torch.save({"epoch": 149, "arch": "mobilenet", "best_prec1": 69.526, "state_dict": weights,
                "optimizer": {"state": {}, "param_groups": []}}, path, _use_new_zipfile_serialization=False)
    return path, weights


def _assert_first_seven_blocks(model: SeedNet, weights: dict[str, torch.Tensor]) -> None:
    for i in range(7):
        block = getattr(model, f"conv{i + 1}")
        for sub, module in block.named_children():
            for name, tensor in module.state_dict().items():
                if name == "num_batches_tracked":
                    assert tensor.item() == 0
                    continue
                assert torch.equal(tensor, weights[f"module.model.{i}.{sub}.{name}"]), (i, sub, name)


@pytest.mark.slow
def test_seed000_truncated_mobilenet_gets_the_first_seven_blocks(seed000_tar):
    path, weights = seed000_tar
    model = SeedNet()
    report = zooadapt.load_weights(model, path, family="mobilenet_v1")
    _assert_first_seven_blocks(model, weights)
    plan = report.plan
    assert len(plan.loaded) == 5 + 6 * 10  # conv1: conv + BN; conv2-7: two convs + two BNs each
    assert all(m.rules == ("strip 'module.'", "positional (same order, shapes checked)") for m in plan.loaded)
    unexpected = {m.checkpoint_key for m in plan.unexpected}
    assert unexpected == {k for k in weights if not k.startswith(tuple(f"module.model.{i}." for i in range(7)))}
    assert len(unexpected) == 137 - 65
    assert set(plan.left_out().values()) == {"defaulted"} and len(plan.left_out()) == 13
    outs = model.eval()(torch.randn(1, 3, 224, 224))
    assert [o.shape[1] for o in outs] == [32, 64, 128, 128, 256, 256, 512]


def test_seed000_from_safetensors_recovers_the_order(tmp_path, seed000_tar):
    """safetensors stores keys sorted by name (model.10 before model.2, fc before model): the
    positional rule restores the numbered order and still finds the same seven blocks."""
    _, weights = seed000_tar
    path = tmp_path / "mobilenet_v1.safetensors"
    path.write_bytes(safetensors_bytes(weights))
    model = SeedNet()
    report = zooadapt.load_weights(model, path, rules=[Positional()])
    _assert_first_seven_blocks(model, weights)
    assert report.plan.order == "unordered" and "keeps no key order" in report.plan.notes[0]


def test_seed000_built_on_meta_gets_real_tensors(seed000_tar):
    path, weights = seed000_tar
    with torch.device("meta"):
        model = SeedNet()
    zooadapt.load_weights(model, path, rules=[Positional()])
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    _assert_first_seven_blocks(model, weights)


def test_positional_divergence_names_the_place(seed000_tar):
    """A user block that differs from the checkpoint's (conv4 with 96 channels) is refused, not loaded."""
    path, _ = seed000_tar
    model = SeedNet()
    model.conv4 = conv_dw(128, 96, 1)
    model.conv5 = conv_dw(96, 256, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(IncompatibleCheckpointError, match=r"diverges at model module #\d+ conv4\.3"):
        zooadapt.load_weights(model, path, rules=[Positional()])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # nothing half-loaded


def _changed_resnet34(num_classes: int = 10) -> nn.Module:
    """Seed 003's model: ResNet-34 whose layer4 the user rebuilt narrower (256 channels), with its own head."""
    model = tvm.resnet34(num_classes=num_classes)
    down = nn.Sequential(nn.Conv2d(256, 256, 1, 2, bias=False), nn.BatchNorm2d(256))
    model.layer4 = nn.Sequential(BasicBlock(256, 256, 2, downsample=down), BasicBlock(256, 256))
    model.fc = nn.Linear(256, num_classes)
    return model


@pytest.mark.slow
def test_seed003_changed_layer4_is_left_out_and_reported(resnet34_weights):
    model = _changed_resnet34()
    own = {k: v.clone() for k, v in model.state_dict().items()}
    report = zooadapt.load_weights(model, "resnet34", skip=("layer4",))
    state = model.state_dict()
    for key, tensor in resnet34_weights.items():
        if key.startswith(("layer4.", "fc.")):
            continue
        assert torch.equal(state[key], tensor), key
    mine = {k for k in state if k.startswith(("layer4.", "fc."))}
    assert all(torch.equal(state[k], own[k]) for k in mine)  # the user's own parts are untouched
    plan = report.plan
    assert set(plan.left_out()) == mine
    assert {v for k, v in plan.left_out().items() if k.startswith("fc.")} == {"new_head"}
    assert {v for k, v in plan.left_out().items() if k.startswith("layer4.")} == {"skipped"}
    assert {m.checkpoint_key for m in plan.skipped} == {k for k in resnet34_weights if k.startswith("layer4.")}
    assert sorted(m.checkpoint_key for m in plan.dropped) == ["fc.bias", "fc.weight"]
    assert not plan.unexpected and not plan.missing and not plan.mismatched
    assert report.family == "resnet" and report.source == "hf://timm/resnet34.tv_in1k@main/model.safetensors"
    assert "skipped" in str(report) and "new head 2: fc.weight, fc.bias" in str(report)


@pytest.mark.slow
def test_seed003_without_skip_refuses_with_the_mismatch(resnet34_weights):
    model = _changed_resnet34()
    with pytest.raises(IncompatibleCheckpointError) as info:
        zooadapt.load_weights(model, "resnet34")
    message = str(info.value)
    assert "shape mismatch: checkpoint layer4.0.bn1.bias [512] -> model layer4.0.bn1.bias [256]" in message
    assert "skip=" in message or "partial=True" in message


@pytest.mark.slow
def test_skip_that_names_nothing_is_refused(resnet34_weights):
    with pytest.raises(InvalidArgumentError, match=r"'layr4' names no part.*Did you mean: layer4"):
        zooadapt.load_weights(_changed_resnet34(), "resnet34", skip=("layr4",))


def test_missing_file_is_not_mistaken_for_a_model_name(tmp_path):
    with pytest.raises(WeightsNotFoundError):
        zooadapt.load_weights(SeedNet(), str(tmp_path / "nope.pth"))

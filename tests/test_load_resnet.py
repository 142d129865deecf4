"""load() end to end through the real huggingface_hub client against the local Hub."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import zooadapt
from zooadapt.testing import safetensors_bytes


@pytest.mark.slow
def test_resnet34_five_classes_lands_bit_exact(resnet34_weights):
    model = zooadapt.load("resnet34", num_classes=5, freeze="layer1-3")
    state = model.state_dict()
    for key, tensor in resnet34_weights.items():
        if key.startswith("fc."):
            continue
        assert torch.equal(state[key], tensor), key
    assert isinstance(model.fc, torch.nn.Linear)
    assert (model.fc.in_features, model.fc.out_features) == (512, 5)
    assert not model.fc.weight.is_meta and model.fc.weight.abs().sum() > 0
    report = model.zooadapt.report
    assert report.source == "hf://timm/resnet34.tv_in1k@main/model.safetensors"
    assert report.commit and len(report.commit) == 40
    assert sorted(m.checkpoint_key for m in report.plan.dropped) == ["fc.bias", "fc.weight"]
    assert report.plan.new_head == ["fc.weight", "fc.bias"]
    assert not report.plan.missing and not report.plan.unexpected and not report.plan.mismatched
    head = 512 * 5 + 5
    assert abs(report.coverage - (1 - head / report.total_params)) < 1e-9
    assert report.frozen == ("layer1", "layer2", "layer3")


@pytest.mark.slow
def test_no_tensor_left_on_meta(resnet34_weights):
    model = zooadapt.load("resnet34", num_classes=7)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    out = model.eval()(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


@pytest.mark.slow
def test_num_classes_none_keeps_checkpoint_head(resnet34_weights):
    model = zooadapt.load("resnet34")
    assert torch.equal(model.fc.weight, resnet34_weights["fc.weight"])
    assert model.zooadapt.report.plan.dropped == []
    assert model.zooadapt.report.coverage == 1.0


@pytest.mark.slow
def test_same_class_count_loads_head(resnet34_weights):
    model = zooadapt.load("resnet34", num_classes=1000)
    assert torch.equal(model.fc.bias, resnet34_weights["fc.bias"])


@pytest.mark.slow
def test_second_load_uses_cache(hub, resnet34_weights):
    zooadapt.load("resnet34", num_classes=5)
    sent = hub.bodies_sent[("timm/resnet34.tv_in1k", "model.safetensors")]
    zooadapt.load("resnet34", num_classes=5)
    assert hub.bodies_sent[("timm/resnet34.tv_in1k", "model.safetensors")] == sent


def test_pretrained_false_downloads_nothing(hub):
    before = sum(hub.requests.values())
    model = zooadapt.load("resnet50", num_classes=3, pretrained=False, freeze="stem")
    assert sum(hub.requests.values()) == before
    assert model.fc.out_features == 3
    assert model.zooadapt.report.plan is None
    assert not model.conv1.weight.requires_grad and model.layer1[0].conv1.weight.requires_grad


def test_local_weights_file_with_dataparallel_prefix(tmp_path, resnet18_weights):
    """Seed 003's first chore: a DataParallel checkpoint with `module.` keys, nested in a dict."""
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in resnet18_weights.items()}}
    path = tmp_path / "dp_checkpoint.pth"
    torch.save(wrapped, path)
    model = zooadapt.load("resnet18", weights=path, num_classes=4)
    assert torch.equal(model.layer3[1].bn2.running_var, resnet18_weights["layer3.1.bn2.running_var"])
    renamed = model.zooadapt.report.plan.renamed
    assert len(renamed) == len(resnet18_weights) - 2  # all but the dropped fc
    assert all(m.rules == ("strip 'module.'",) for m in renamed)


@pytest.mark.slow
def test_local_safetensors_and_revision_override(hub, tmp_path, resnet18_weights):
    path = tmp_path / "w.safetensors"
    path.write_bytes(safetensors_bytes(resnet18_weights))
    model = zooadapt.load("resnet18", weights=str(path))
    assert torch.equal(model.fc.weight, resnet18_weights["fc.weight"])
    # a tag pointing at an older commit is honoured
    other = {k: v + 1 for k, v in resnet18_weights.items()}
    old = hub.add_file("timm/resnet18.tv_in1k", "model.safetensors", safetensors_bytes(other), branch="v-other")
    hub.add_tag("timm/resnet18.tv_in1k", "pinned", old)
    model = zooadapt.load("resnet18", revision="pinned")
    assert torch.equal(model.conv1.weight, other["conv1.weight"])
    assert model.zooadapt.report.commit == old


@pytest.mark.slow
def test_quickstart_trains_and_frozen_stages_stay_bit_identical(resnet34_weights):
    """The issue's acceptance example: frozen means frozen, BatchNorm statistics included."""
    torch.manual_seed(0)
    model = zooadapt.load("resnet34", num_classes=5, freeze="layer1-3")
    optimizer = torch.optim.SGD(zooadapt.param_groups(model, lr=1e-3, head_lr=1e-2), momentum=0.9)
    frozen = ("layer1.", "layer2.", "layer3.")
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(frozen)}
    trainable_before = model.layer4[0].bn1.running_mean.clone()
    model.train()
    for _ in range(3):
        x, y = torch.randn(4, 3, 64, 64), torch.randint(0, 5, (4,))
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.state_dict()
    assert before and all(torch.equal(before[k], after[k]) for k in before)
    # the unfrozen parts did train
    assert not torch.equal(model.layer4[0].bn1.running_mean, trainable_before)
    assert not torch.equal(after["layer4.0.conv1.weight"], resnet34_weights["layer4.0.conv1.weight"])
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith(frozen))

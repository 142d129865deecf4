"""param_groups: real learning rates, frozen parameters nowhere, trainable ones exactly once."""

from __future__ import annotations

import pytest
import torch

import zooadapt


@pytest.fixture
def model():
    return zooadapt.load("resnet18", num_classes=4, pretrained=False, freeze="stem-layer1")


def _ids(groups):
    return [id(p) for g in groups for p in g["params"]]


def test_every_trainable_parameter_exactly_once(model):
    groups = zooadapt.param_groups(model, lr=1e-3, head_lr=1e-2)
    ids = _ids(groups)
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    assert [g["name"] for g in groups] == ["layer2", "layer3", "layer4", "head"]
    assert {g["name"]: g["lr"] for g in groups} == {"layer2": 1e-3, "layer3": 1e-3, "layer4": 1e-3, "head": 1e-2}


def test_layer_decay_and_no_decay(model):
    groups = zooadapt.param_groups(model, lr=0.1, head_lr=1.0, decay=0.5, weight_decay=1e-4)
    lrs = {(g["name"], g["weight_decay"]): g["lr"] for g in groups}
    assert lrs[("layer4", 1e-4)] == pytest.approx(0.05)
    assert lrs[("layer3", 1e-4)] == pytest.approx(0.025)
    assert lrs[("layer2", 0.0)] == pytest.approx(0.0125)
    assert lrs[("head", 0.0)] == 1.0
    for g in groups:
        assert all((p.ndim <= 1) == (g["weight_decay"] == 0.0) for p in g["params"])
    ids = _ids(groups)
    assert len(ids) == len(set(ids)) == sum(1 for p in model.parameters() if p.requires_grad)


def test_groups_drive_a_real_optimizer(model):
    groups = zooadapt.param_groups(model, lr=1e-3, head_lr=1e-2)
    opt = torch.optim.SGD(groups, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-3, 1e-3, 1e-2]
    table = zooadapt.format_param_groups(groups)
    assert "head" in table and "0.01" in table


def test_gradual_unfreezing_adds_a_group(model):
    opt = torch.optim.SGD(zooadapt.param_groups(model, lr=1e-3), lr=1e-3)
    zooadapt.unfreeze(model, "layer1")
    group = zooadapt.add_param_group(opt, model, lr=1e-4)
    assert group is not None and group["lr"] == 1e-4
    assert {id(p) for p in group["params"]} == {id(p) for p in model.layer1.parameters()}
    assert zooadapt.add_param_group(opt, model, lr=1e-4) is None


@pytest.mark.parametrize("kwargs", [{"lr": -1}, {"lr": 1e-3, "decay": 0}, {"lr": 1e-3, "head_lr": "big"}])
def test_bad_rates(model, kwargs):
    with pytest.raises(zooadapt.InvalidArgumentError):
        zooadapt.param_groups(model, **kwargs)

"""The freeze grammar and the BatchNorm policy, on ResNet's stage map."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision
from zooadapt.plugins.resnet import STAGES

import zooadapt
from zooadapt import FreezeSpecError


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
    assert zooadapt.unfreeze(model, "layer3-4") == ("stem", "layer1", "layer2")
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


def test_freeze_on_foreign_model_needs_stages():
    with pytest.raises(zooadapt.ZooadaptError, match="stages="):
        zooadapt.freeze(torchvision.models.resnet18(), "layer1")
    plain = torchvision.models.resnet18()
    assert zooadapt.freeze(plain, "layer1", stages=STAGES) == ("layer1",)
    assert not plain.layer1[0].conv1.weight.requires_grad

"""SyncBatchNorm and frozen stages: zooadapt's conversion keeps the freeze, torch's is noticed.

On CPU without a process group a training SyncBatchNorm computes plain batch statistics, so the
policy (which layers update their statistics under ``model.train()``) is testable here.
"""

from __future__ import annotations

import pickle
import warnings

import pytest
import torch
import torchvision

import zooadapt
from zooadapt.distributed import BatchNormPolicyWarning, check_batchnorm_policy, convert_sync_batchnorm
from zooadapt.errors import InvalidArgumentError


def _model(freeze="layer1-2", bn="frozen"):
    return zooadapt.load("resnet18", num_classes=3, pretrained=False, freeze=freeze, bn=bn)


def _bn(model, stage):
    return getattr(model, stage)[0].bn1


def test_convert_keeps_frozen_stages_frozen():
    model = convert_sync_batchnorm(_model())
    frozen, trained = _bn(model, "layer1"), _bn(model, "layer3")
    assert type(frozen).__name__ == "FrozenSyncBatchNorm" and isinstance(frozen, torch.nn.SyncBatchNorm)
    assert type(trained) is torch.nn.SyncBatchNorm
    model.train()
    assert not frozen.training and trained.training
    assert not frozen.weight.requires_grad and trained.weight.requires_grad
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    after = model.state_dict()
    moved = {k.split(".")[0] for k, v in before.items() if not torch.equal(v, after[k])}
    assert moved == {"bn1", "layer3", "layer4"}  # the stem is trainable here; layer1-2 are not
    assert frozen.weight.grad is None and trained.weight.grad is not None
    assert zooadapt.frozen_stages(model) == ("layer1", "layer2")
    assert check_batchnorm_policy(model) == ()


def test_converted_model_still_loads_into_plain_torchvision_and_pickles():
    model = convert_sync_batchnorm(_model())
    torchvision.models.resnet18(num_classes=3).load_state_dict(model.state_dict(), strict=True)
    clone = pickle.loads(pickle.dumps(model))
    clone.train()
    assert type(_bn(clone, "layer2")).__name__ == "FrozenSyncBatchNorm" and not _bn(clone, "layer2").training
    assert check_batchnorm_policy(clone) == ()


def test_raw_torch_conversion_after_a_freeze_is_noticed():
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(_model())
    assert type(_bn(model, "layer1")) is torch.nn.SyncBatchNorm  # torch rebuilt the frozen layer as a training one
    with pytest.warns(BatchNormPolicyWarning, match=r"frozen stage\(s\) layer1, layer2 .*plain SyncBatchNorm"):
        assert zooadapt.frozen_stages(model) == ("layer1", "layer2")
    with pytest.warns(BatchNormPolicyWarning, match=r"zooadapt.freeze\(model, \['layer1', 'layer2'\]\)"):
        zooadapt.param_groups(model, lr=1e-3)
    # the fix the warning gives restores the policy
    zooadapt.freeze(model, ["layer1", "layer2"])
    model.train()
    assert type(_bn(model, "layer1")).__name__ == "FrozenSyncBatchNorm" and not _bn(model, "layer1").training
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_batchnorm_policy(model) == ()


def test_bn_train_policy_and_unfreeze_are_not_false_alarms():
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(_model(bn="train"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert zooadapt.frozen_stages(model) == ("layer1", "layer2")  # bn="train": nothing to lose
    model = _model()
    zooadapt.unfreeze(model, "layer1")
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    with pytest.warns(BatchNormPolicyWarning, match=r"stage\(s\) layer2 are"):
        zooadapt.frozen_stages(model)


def test_convert_refuses_non_modules():
    with pytest.raises(InvalidArgumentError, match="torch.nn.Module"):
        convert_sync_batchnorm("resnet18")

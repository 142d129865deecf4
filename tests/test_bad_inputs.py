"""Bad input gets a ZooadaptError that names the problem and the fix; nothing half-done."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

import zooadapt
from zooadapt.errors import (
    CheckpointFormatError,
    FreezeSpecError,
    IncompatibleCheckpointError,
    InvalidArgumentError,
    UnknownModelError,
    UnsafeCheckpointError,
    WeightsNotFoundError,
    ZooadaptError,
)
from zooadapt.testing import safetensors_bytes


def test_unknown_model_suggests_near_names():
    with pytest.raises(UnknownModelError) as info:
        zooadapt.load("resnet43")
    message = str(info.value)
    assert "resnet43" in message and "Did you mean" in message and "resnet34" in message
    assert "zooadapt list" in message


@pytest.mark.parametrize("bad", [-3, 2.5, "5", True])  # 0 is timm's headless model: allowed
def test_num_classes_must_be_positive_int(bad):
    with pytest.raises(InvalidArgumentError, match="num_classes"):
        zooadapt.load("resnet18", num_classes=bad, pretrained=False)


def test_bad_freeze_spec_lists_family_stages():
    with pytest.raises(FreezeSpecError) as info:
        zooadapt.load("resnet18", pretrained=False, freeze="layer9")
    assert "stem, layer1, layer2, layer3, layer4" in str(info.value)


def test_missing_local_file():
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        zooadapt.load("resnet18", weights="/nonexistent/weights.pth")


@pytest.mark.slow
def test_truncated_safetensors(tmp_path, resnet18_weights):
    data = safetensors_bytes(resnet18_weights)
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFormatError, match="truncated or corrupt"):
        zooadapt.load("resnet18", weights=path)


def test_truncated_pickle(tmp_path, resnet18_weights):
    path = tmp_path / "full.pth"
    torch.save(resnet18_weights, path)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointFormatError):
        zooadapt.load("resnet18", weights=cut)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/zooadapt-pwned",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = "/tmp/zooadapt-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": {"conv1.weight": torch.zeros(1)}, "payload": _Payload()}, fh)
    with pytest.raises(UnsafeCheckpointError, match="trusted=True"):
        zooadapt.load("resnet18", weights=path)
    assert not os.path.exists(marker)


@pytest.mark.slow
def test_wrong_family_checkpoint_refused_with_coverage(tmp_path):
    from zooadapt.testing import torchvision_state_dict

    path = tmp_path / "r34.safetensors"
    path.write_bytes(safetensors_bytes(torchvision_state_dict("resnet34", seed=1)))
    with pytest.raises(IncompatibleCheckpointError) as info:
        zooadapt.load("resnet50", weights=path, num_classes=5)
    message = str(info.value)
    assert "shape mismatch" in message and "fits resnet34 (100% of its tensors)" in message
    assert "partial=True" not in message  # it would leave most of resnet50 random


@pytest.mark.slow
def test_wrong_family_checkpoint_offers_partial_only_when_most_of_the_backbone_loads(tmp_path, resnet18_weights):
    state = {k: v for k, v in resnet18_weights.items() if not k.startswith("layer1.")}
    path = tmp_path / "no_layer1.safetensors"
    path.write_bytes(safetensors_bytes(state))
    with pytest.raises(IncompatibleCheckpointError) as info:
        zooadapt.load("resnet18", weights=path)
    assert "skip=('layer1',)" in str(info.value) and "partial=True" in str(info.value)


@pytest.mark.slow
def test_partial_opt_in_loads_what_fits_above_min_coverage(tmp_path, resnet18_weights):
    state = {k: v for k, v in resnet18_weights.items() if not k.startswith("layer4.")}
    path = tmp_path / "no_layer4.safetensors"
    path.write_bytes(safetensors_bytes(state))
    with pytest.raises(IncompatibleCheckpointError, match="missing"):
        zooadapt.load("resnet18", weights=path)
    # layer4 holds three quarters of resnet18: partial=True alone refuses such a mostly random model
    with pytest.raises(IncompatibleCheckpointError, match="min_coverage=0.5"):
        zooadapt.load("resnet18", weights=path, partial=True)
    model = zooadapt.load("resnet18", weights=path, partial=True, min_coverage=0.2)
    assert all(k.startswith("layer4.") for k in model.zooadapt.report.plan.missing)
    assert not any(p.is_meta for p in model.parameters())


def test_every_error_is_a_zooadapt_error():
    for name in zooadapt.contract.errors.__all__:
        assert issubclass(getattr(zooadapt.contract.errors, name), ZooadaptError)


def test_a_file_that_is_no_checkpoint_is_named_as_such(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are my training notes, not weights")
    with pytest.raises(CheckpointFormatError, match="neither a PyTorch checkpoint"):
        zooadapt.load("resnet18", weights=path)

"""``out_indices=`` (timm's meaning) beside ``features_only=[stages]`` (zooadapt's), and other
libraries' spellings refused with zooadapt's named."""

from __future__ import annotations

import pytest
import torch

import zooadapt
from zooadapt import ZooadaptError
from zooadapt.errors import InvalidArgumentError
from zooadapt.loading.request import FOREIGN_SPELLINGS, OutIndices, make_request

timm = pytest.importorskip("timm")


def load(arch: str = "test_convnext", features_only=True, **kwargs):
    return zooadapt.load(arch, pretrained=False, device="meta", features_only=features_only, **kwargs)


def test_features_only_stages_count_stages_and_out_indices_count_timms_feature_maps():
    by_stage = load(features_only=[1, 3])
    by_index = load(out_indices=(1, 3))
    assert by_stage.out_stages == ("stages.0", "stages.2")  # stage 0 is the stem
    assert by_index.out_stages == ("stages.1", "stages.3")  # as timm's features_only
    assert by_index.feature_info.module_name() == ["stages.1", "stages.3"]
    assert by_stage.feature_info.module_name() == ["stages.0", "stages.2"]
    # the same outputs, however spelled, are described alike
    named = load(features_only=("stages.1", "stages.3"))
    assert named.feature_info.get_dicts() == by_index.feature_info.get_dicts()
    assert list(named.feature_info.out_indices) == [1, 3]


@pytest.mark.parametrize(("given", "stages"), [
    (2, ("stages.2", "stages.3")),  # an int: the last n, as timm
    ((-1,), ("stages.3",)),
    ((3, 0), ("stages.0", "stages.3")),  # outputs in feature order, as timm returns them
    ([0, 1, 2, 3], ("stages.0", "stages.1", "stages.2", "stages.3")),
])
def test_out_indices_mean_what_they_mean_to_timm(given, stages):
    assert load(out_indices=given).out_stages == stages


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"out_indices": (4,)}, r"index 4 is out of range for 4 feature maps: 0: stages.0 \(24 channels, stride 4\)"),
    ({"out_indices": 5}, "at most the last 4"),
    ({"out_indices": 0}, "must be >= 1"),
    ({"out_indices": (1, 1)}, "twice"),
    ({"out_indices": ("stages.1",)}, "feature-map indices"),
    ({"out_indices": (True,)}, "feature-map indices"),
    ({"out_indices": (1,), "features_only": ("stem",)}, "pass one"),
])
def test_bad_out_indices_are_refused_naming_the_fix(kwargs, fragment):
    with pytest.raises(InvalidArgumentError, match=fragment):
        load(**kwargs)


def test_out_indices_need_features_only():
    with pytest.raises(InvalidArgumentError, match="features_only=True"):
        zooadapt.load("test_convnext", pretrained=False, device="meta", out_indices=(1, 3))


def test_a_feature_map_inside_a_stage_is_served_as_timm_serves_it():
    """timm's ResNet feature 0 is act1, before the stem's max-pool: no stage ends there, so the cut
    is timm's (forward_intermediates) and the output is named feature0; maps that end stages keep
    the stage cut and the stage names."""
    net = load("test_resnet", out_indices=(0, 2))
    assert net.out_stages == ("feature0", "layer2")
    assert net.feature_info.module_name() == ["act1", "layer2"] and net.feature_info.reduction() == [2, 8]
    assert load("test_resnet", out_indices=(1, 2)).out_stages == ("layer1", "layer2")


def test_builtin_families_count_their_spatial_stages():
    """AlexNet's fc6/fc7 are no feature maps: out_indices counts conv1-conv5 only."""
    net = zooadapt.load("alexnet", pretrained=False, device="meta", features_only=True, out_indices=2)
    assert net.out_stages == ("conv4", "conv5")
    assert net.feature_info.reduction() == [16, 32] and len(net.feature_info) == 5
    with pytest.raises(InvalidArgumentError, match="out of range for 5 feature maps"):
        zooadapt.load("alexnet", pretrained=False, device="meta", features_only=True, out_indices=(5,))
    resnet = zooadapt.load("resnet18", pretrained=False, device="meta", features_only=True, out_indices=(1, 2, 3, 4))
    assert resnet.out_stages == ("layer1", "layer2", "layer3", "layer4")
    assert resnet.feature_info.channels() == [64, 128, 256, 512]
    assert resnet.feature_info.reduction() == [4, 8, 16, 32]


def test_outputs_that_are_no_feature_map_list_just_the_outputs():
    pooled = load("test_convnext", features_only=("final", "stages.1")).feature_info
    assert len(pooled) == 2 and list(pooled.out_indices) == [1, 0]  # the outputs, in stage order
    assert pooled.module_name() == ["head.norm", "stages.1"]
    assert pooled.channels() == [64, 32]
    assert pooled.reduction() == [32, 8]  # the pooled final: the stride of the map it pooled
    stem = load("test_convnext", features_only=("stem", "stages.1")).feature_info
    assert (stem.module_name(), stem.channels(), stem.reduction()) == (["stem", "stages.1"], [24, 32], [4, 8])


def test_feature_info_survives_copying_and_pickling():
    import copy
    import pickle

    net = zooadapt.load("resnet18", pretrained=False, features_only=("layer2",))
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert clone.feature_info.get_dicts() == net.feature_info.get_dicts()
    assert net.feature_info.channels() == [128] and net(torch.randn(1, 3, 64, 64))[0].shape[1] == 128


@pytest.mark.parametrize(("option", "value", "message"), [
    ("num_labels", 5, "num_labels= is transformers' name: pass num_classes=5"),
    ("torch_dtype", torch.bfloat16, "torch_dtype= is transformers' name: pass dtype=torch.bfloat16"),
    ("device_map", "cuda", "device_map= is transformers' name: pass device='cuda'"),
    ("checkpoint_path", "w.pth", "checkpoint_path= is timm's name: pass weights='w.pth'"),
])
def test_other_libraries_spellings_are_refused_naming_zooadapts(option, value, message):
    with pytest.raises(InvalidArgumentError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        zooadapt.load("resnet18", pretrained=False, **{option: value})
    assert isinstance(info.value, ZooadaptError)
    assert option in FOREIGN_SPELLINGS


@pytest.mark.parametrize("option", ["out_indices", "out_stages", "features_only"])
def test_load_options_in_model_kwargs_are_refused_naming_load(option):
    with pytest.raises(InvalidArgumentError, match=f"{option} is an option of zooadapt.load itself"):
        make_request(name="resnet18", model_kwargs={option: (1,)})


def test_the_request_carries_out_indices_until_the_model_is_built():
    request = make_request(name="x", features_only=True, out_indices=[1, 3])
    assert request.out_stages == OutIndices((1, 3))
    assert make_request(name="x", features_only=True, out_indices=2).out_stages == OutIndices(2)

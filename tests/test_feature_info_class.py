"""zooadapt's ``FeatureInfo`` answers as timm's does, and each family's cut carries its family's class.

timm's ``FeatureInfo`` is what timm users' code reads; zooadapt's core no longer imports timm, so
other families' cuts carry zooadapt's class, and the timm plugin gives timm models timm's own.
"""

from __future__ import annotations

import copy
import pickle

import pytest

import zooadapt
from zooadapt.loading.feature_info import FeatureInfo

timm_models = pytest.importorskip("timm.models")

DICTS = [
    {"module": "act1", "num_chs": 64, "reduction": 2},
    {"module": "layer1", "num_chs": 64, "reduction": 4},
    {"module": "layer2", "num_chs": 128, "reduction": 8},
    {"module": "layer3", "num_chs": 256, "reduction": 16},
    {"module": "layer4", "num_chs": 512, "reduction": 32},
]


@pytest.mark.parametrize("out_indices", [(0, 1, 2, 3, 4), (1, 3), (4, 2), (3,)])
def test_every_method_answers_as_timms(out_indices):
    ours = FeatureInfo(copy.deepcopy(DICTS), out_indices)
    theirs = timm_models.FeatureInfo(copy.deepcopy(DICTS), out_indices)
    assert ours.out_indices == theirs.out_indices and ours.info == theirs.info  # "index" filled in alike
    for method in ("channels", "reduction", "module_name"):
        for idx in (None, 2, [0, 4], (1, 3)):
            assert getattr(ours, method)(idx) == getattr(theirs, method)(idx), (method, idx)
    for keys in (None, ["num_chs"], ["module", "reduction"]):
        for idx in (None, 1, [0, 2]):
            assert ours.get_dicts(keys=keys, idx=idx) == theirs.get_dicts(keys=keys, idx=idx), (keys, idx)
    assert len(ours) == len(theirs) and [ours[i] for i in range(len(ours))] == [theirs[i] for i in range(len(theirs))]
    other = ours.from_other((0, 4))
    assert other.channels() == theirs.from_other((0, 4)).channels() == [64, 512]
    assert other.info is not ours.info  # a copy: changing one does not change the other


def test_decreasing_reductions_are_described_not_refused():
    pooled_after = [{"module": "layer2", "num_chs": 128, "reduction": 8},
                    {"module": "fc", "num_chs": 10, "reduction": 1}]
    with pytest.raises(AssertionError):  # timm's class refuses them
        timm_models.FeatureInfo(copy.deepcopy(pooled_after), (0, 1))
    assert FeatureInfo(copy.deepcopy(pooled_after), (0, 1)).reduction() == [8, 1]


def test_a_timm_models_cut_carries_timms_class_and_other_families_zooadapts():
    convnext = zooadapt.load("test_convnext", pretrained=False, device="meta", features_only=True, out_indices=(1, 3))
    resnet = zooadapt.load("resnet18", pretrained=False, device="meta", features_only=True, out_indices=(1, 2, 3, 4))
    assert type(convnext.feature_info) is timm_models.FeatureInfo and convnext.feature_info.out_indices == (1, 3)
    assert type(resnet.feature_info) is FeatureInfo
    assert resnet.feature_info.channels() == [64, 128, 256, 512] and resnet.feature_info.reduction() == [4, 8, 16, 32]
    back = pickle.loads(pickle.dumps(resnet.feature_info))
    assert back.get_dicts() == resnet.feature_info.get_dicts()

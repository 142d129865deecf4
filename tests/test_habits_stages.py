"""A user's own network: its stage map, given once (to freeze, param_groups or attach), is remembered."""

from __future__ import annotations

import copy
import pickle
import re

import pytest
import torch
import torchvision
from zooadapt.plugins.resnet import STAGES

import zooadapt
from zooadapt.errors import InvalidArgumentError, UnknownModelError
from zooadapt.plugin_api import Stage, StageMap


def _resnet():
    return torchvision.models.resnet18(num_classes=3)


def test_a_map_given_to_freeze_is_known_to_every_later_call():
    net = _resnet()
    assert zooadapt.freeze(net, "layer1-3", stages=STAGES) == ("layer1", "layer2", "layer3")
    groups = zooadapt.param_groups(net, lr=1e-3, head_lr=1e-2)  # raised before: stages unknown
    assert [g["name"] for g in groups] == ["stem", "layer4", "head"]
    assert zooadapt.frozen_stages(net) == ("layer1", "layer2", "layer3")
    opt = torch.optim.SGD(groups)
    assert zooadapt.unfreeze(net, "layer3") == ("layer3",)
    assert [g["name"] for g in zooadapt.add_param_group(opt, net, lr=1e-4)] == ["layer3"]
    assert "stem" in zooadapt.format_param_groups(opt.param_groups, net)


def test_a_map_given_to_param_groups_is_remembered_too():
    net = _resnet()
    zooadapt.param_groups(net, lr=1e-3, stages=STAGES)
    assert zooadapt.freeze(net, "all") == STAGES.names


def test_attach_by_family_and_through_wrappers():
    net = torchvision.models.mobilenet_v2(num_classes=3)
    smap = zooadapt.attach(torch.compile(net, backend="eager"), family="mobilenet_v2")
    assert smap.names[0] == "stem" and smap.head == "classifier.1"
    assert zooadapt.freeze(net, "stem-stride8")[-1] == "stride8"
    assert zooadapt.param_groups(net, lr=1e-3)[-1]["name"] == "head"


def test_the_map_travels_with_copies_and_stays_out_of_the_state_dict():
    net = _resnet()
    zooadapt.attach(net, stages=STAGES)
    state = net.state_dict()
    assert not any("zooadapt" in k for k in state)
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert zooadapt.freeze(clone, "stem") == ("stem",)
    _resnet().load_state_dict(state)  # a plain torchvision model still takes the weights


def test_a_lightning_module_holding_the_network_finds_it():
    lightning = pytest.importorskip("lightning")

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _resnet()
            zooadapt.attach(self.net, stages=STAGES)

    module = Module()
    assert zooadapt.freeze(module, "layer1") == ("layer1",)
    assert not module.net.layer1[0].conv1.weight.requires_grad
    assert zooadapt.param_groups(module, lr=1e-3)[0]["name"] == "stem"


def test_the_latest_map_wins_and_one_that_does_not_fit_is_not_kept():
    net = _resnet()
    zooadapt.attach(net, stages=STAGES)
    coarse = StageMap((Stage("early", ("conv1", "bn1", "layer1", "layer2")),
                                Stage("late", ("layer3", "layer4"))), head="fc")
    zooadapt.freeze(net, "early", stages=coarse)
    assert zooadapt.frozen_stages(net) == ("early",)
    elsewhere = StageMap((Stage("s1", ("encoder.s1",)),), head="classifier")
    with pytest.raises(InvalidArgumentError, match="no parameter of this ResNet"):
        zooadapt.param_groups(net, lr=1e-3, stages=elsewhere)
    assert [g["name"] for g in zooadapt.param_groups(net, lr=1e-3)] == ["late", "head"]  # coarse still


def test_a_loaded_model_keeps_its_own_map():
    model = zooadapt.load("resnet18", num_classes=3, pretrained=False)
    coarse = StageMap((Stage("early", ("conv1", "bn1", "layer1", "layer2")),
                                Stage("late", ("layer3", "layer4"))), head="fc")
    assert zooadapt.freeze(model, "early", stages=coarse) == ("early",)  # for that call only
    assert zooadapt.frozen_stages(model) == ("stem", "layer1", "layer2")
    with pytest.raises(InvalidArgumentError, match="loaded by zooadapt as 'resnet18'"):
        zooadapt.attach(model, stages=coarse)


@pytest.mark.parametrize(("kwargs", "error", "fragment"), [
    ({}, InvalidArgumentError, "give one of them"),
    ({"family": "resnet", "stages": STAGES}, InvalidArgumentError, "give one of them"),
    ({"family": "resnte"}, UnknownModelError, "Did you mean"),
    ({"family": 3}, InvalidArgumentError, "family=3"),
    ({"stages": {"stem": "conv1"}}, InvalidArgumentError, "zooadapt.plugin_api.StageMap"),
    ({"stages": StageMap((Stage("s", ("body",)),), head="fc")}, InvalidArgumentError,
     r"\['body'\] is not among its modules"),
])
def test_attach_refuses_what_cannot_describe_the_model(kwargs, error, fragment):
    net = _resnet()
    with pytest.raises(error, match=fragment):
        zooadapt.attach(net, **kwargs)
    assert zooadapt.frozen_stages(net) == ()  # nothing remembered


def test_a_family_whose_map_does_not_fit_names_the_one_that_does():
    net = torchvision.models.mobilenet_v2(num_classes=3)
    with pytest.raises(InvalidArgumentError, match="'resnet' family's stage map does not fit.*'mobilenet_v2'"):
        zooadapt.attach(net, family="resnet")


class _Plain(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(3, 3)
        self.out = torch.nn.Linear(3, 2)


@pytest.mark.parametrize(("build", "family"), [
    (lambda: torchvision.models.mobilenet_v2(num_classes=3), "mobilenet_v2"),
    (lambda: torchvision.models.mobilenet_v3_small(num_classes=3), "mobilenet_v3"),
    (_resnet, "resnet"),
    (_Plain, None),
])
def test_the_unknown_stages_error_names_the_family_that_fits(build, family):
    net = build()
    with pytest.raises(InvalidArgumentError) as info:
        zooadapt.param_groups(net, lr=1e-3)
    message = str(info.value)
    assert f"this {type(net).__name__} was not loaded by zooadapt" in message
    if family is None:
        assert "family=" not in message and "zooadapt.attach(model, stages=StageMap(" in message
        return
    assert f"zooadapt.attach(model, family={family!r})" in message
    assert "family='resnet'" not in message or family == "resnet"
    # the suggested call works as written
    call = re.search(r"zooadapt\.attach\(model, family='\w+'\)", message).group(0)
    eval(call, {"zooadapt": zooadapt, "model": net})
    assert zooadapt.param_groups(net, lr=1e-3)[-1]["name"] == "head"

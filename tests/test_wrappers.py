"""freeze, unfreeze, frozen_stages, param_groups and save through the wrappers training code adds.

Each wrapper prefixes parameter names (``_orig_mod.``, ``module.``, a LightningModule's attribute),
so a stage map read naively matches nothing; before this, ``freeze(torch.compile(model), ...)``
returned ``()`` and froze nothing.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import zooadapt
from zooadapt.distributed import check_batchnorm_policy, unwrap, wrapper_chain
from zooadapt.errors import FreezeSpecError, InvalidArgumentError
from zooadapt.plugin_api import Stage, StageMap


def _model(freeze=None):
    return zooadapt.load("resnet18", num_classes=3, pretrained=False, freeze=freeze)


def _frozen_names(model):
    return sorted({n.split(".")[0] for n, p in model.named_parameters() if not p.requires_grad})


def test_freeze_through_torch_compile_freezes():
    model = _model()
    compiled = torch.compile(model, backend="eager")
    assert zooadapt.freeze(compiled, "layer1-3") == ("layer1", "layer2", "layer3")
    assert _frozen_names(model) == ["layer1", "layer2", "layer3"]
    assert zooadapt.frozen_stages(compiled) == ("layer1", "layer2", "layer3")
    compiled.train()
    assert not model.layer2[0].bn1.training  # the frozen BatchNorm policy holds through the wrapper
    assert zooadapt.unfreeze(compiled, "layer3") == ("layer3",)
    assert model.layer3[0].conv1.weight.requires_grad


@pytest.mark.slow
def test_freezing_after_a_compiled_step_recompiles_with_autograd():
    """A compiled training step before and after the freeze (aot_eager traces the backward as inductor
    does): the freeze must hold in the recompiled graph."""
    model = _model()
    compiled = torch.compile(model, backend="aot_eager")
    x = torch.randn(2, 3, 32, 32)
    compiled(x).sum().backward()
    assert model.layer1[0].conv1.weight.grad is not None
    model.zero_grad(set_to_none=True)
    zooadapt.freeze(compiled, "layer1-3")
    compiled.train()
    stats = model.layer1[0].bn1.running_mean.clone()
    F.cross_entropy(compiled(x), torch.tensor([0, 1])).backward()
    assert all(p.grad is None for p in model.layer1.parameters())
    assert all(p.grad is not None for p in model.layer4.parameters())
    assert torch.equal(stats, model.layer1[0].bn1.running_mean)


def test_data_parallel_and_nested_wrappers():
    model = _model()
    wrapped = torch.compile(torch.nn.DataParallel(model), backend="eager")
    assert zooadapt.freeze(wrapped, ":layer2") == ("stem", "layer1", "layer2")
    assert zooadapt.frozen_stages(torch.nn.DataParallel(model)) == ("stem", "layer1", "layer2")
    groups = zooadapt.param_groups(wrapped, lr=1e-3, head_lr=1e-2)
    assert [g["name"] for g in groups] == ["layer3", "layer4", "head"] and groups[-1]["lr"] == 1e-2
    opt = torch.optim.SGD(groups)
    zooadapt.unfreeze(wrapped, "layer2")
    assert [(g["name"], g["lr"]) for g in zooadapt.add_param_group(opt, wrapped, lr=1e-4)] == [("layer2", 1e-4)]
    assert unwrap(wrapped) is model
    assert [type(m).__name__ for m in wrapper_chain(wrapped)] == ["OptimizedModule", "DataParallel",
                                                                          "ResNet"]


class _Holder(torch.nn.Module):
    """A training module (as a LightningModule is) holding the zooadapt model as an attribute."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.extra = torch.nn.Linear(3, 3)


def test_a_module_holding_one_zooadapt_model_is_searched():
    model = _model()
    holder = _Holder(torch.compile(model, backend="eager"))
    assert zooadapt.freeze(holder, "layer1") == ("layer1",)
    assert not model.layer1[0].conv1.weight.requires_grad and holder.extra.weight.requires_grad
    assert [g["name"] for g in zooadapt.param_groups(holder, lr=1e-3)][-1] == "head"


def test_a_module_holding_two_zooadapt_models_is_ambiguous():
    holder = _Holder(_model())
    holder.other = _model()
    with pytest.raises(InvalidArgumentError, match="several zooadapt models .*'backbone', 'other'"):
        zooadapt.freeze(holder, "layer1")


class _UnknownWrapper(torch.nn.Module):
    """A wrapper zooadapt does not know, which forwards the model's record (names are prefixed)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.zooadapt = inner.zooadapt


def test_a_spec_that_matches_no_parameter_raises_instead_of_doing_nothing():
    model = _model()
    with pytest.raises(FreezeSpecError, match=r"layer1, layer2, layer3 hold no parameter of this _UnknownWrapper"):
        zooadapt.freeze(_UnknownWrapper(model), "layer1-3")
    assert all(p.requires_grad for p in model.parameters())  # nothing changed before the error
    with pytest.raises(FreezeSpecError, match="hold no parameter"):
        zooadapt.unfreeze(_UnknownWrapper(model), "layer1")
    with pytest.raises(InvalidArgumentError, match="no parameter of this _UnknownWrapper"):
        zooadapt.param_groups(_UnknownWrapper(model), lr=1e-3)
    # naming nothing is not an error: it changes nothing on purpose
    assert zooadapt.freeze(model, None) == ()


@pytest.mark.parametrize("bn", ["fixed", None, True])
def test_unknown_bn_policy(bn):
    with pytest.raises(InvalidArgumentError, match="bn="):
        zooadapt.freeze(_model(), "layer1", bn=bn)


def test_save_a_compiled_model(tmp_path):
    model = _model(freeze="layer1")
    torch.nn.init.normal_(model.fc.weight)
    zooadapt.save(torch.compile(model, backend="eager"), tmp_path / "saved")
    back = zooadapt.load(tmp_path / "saved")
    assert torch.equal(back.fc.weight, model.fc.weight)
    assert zooadapt.frozen_stages(back) == ("layer1",)


@pytest.mark.slow
def test_lightning_module_and_fabric_module():
    lightning = pytest.importorskip("lightning")

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = _model()

    module = Module()
    assert zooadapt.freeze(module, "layer1-2") == ("layer1", "layer2")
    fabric = lightning.Fabric(accelerator="cpu", devices=1)
    wrapped = fabric.setup_module(module)
    assert type(wrapped).__name__ == "_FabricModule"
    assert zooadapt.frozen_stages(wrapped) == ("layer1", "layer2")
    assert zooadapt.unfreeze(wrapped, "layer2") == ("layer2",)
    assert [g["name"] for g in zooadapt.param_groups(wrapped, lr=1e-3)] == ["stem", "layer2", "layer3", "layer4",
                                                                           "head"]
    plain = fabric.setup_module(_model())
    assert zooadapt.freeze(plain, "stem") == ("stem",)


def test_given_stages_name_the_module_passed_not_a_model_inside_it():
    holder = _Holder(_model())
    smap = StageMap((Stage("extra", ("extra",)),), head="backbone")
    assert zooadapt.freeze(holder, "extra", stages=smap) == ("extra",)
    assert not holder.extra.weight.requires_grad
    assert all(p.requires_grad for p in holder.backbone.parameters())


@pytest.mark.parametrize("call", [
    lambda m: zooadapt.freeze(m, "layer1"), lambda m: zooadapt.unfreeze(m), zooadapt.frozen_stages,
    lambda m: zooadapt.param_groups(m, lr=1e-3), check_batchnorm_policy,
])
@pytest.mark.parametrize("bad", [None, "resnet18", 3])
def test_non_modules_are_refused_by_type(call, bad):
    with pytest.raises(InvalidArgumentError, match=f"expected a torch.nn.Module .*got {type(bad).__name__}"):
        call(bad)

"""Said, not silent: NaN/Inf weights, integer tensors cast into floats, and a plugin's build
that changes torch's global settings.

NaN or Inf values load (a checkpoint may mean them) but with a ``UserWarning`` and a line in the
report; an integer tensor for a floating parameter is refused (``IncompatibleCheckpointError``) unless a
rule converts it; a builder that leaves the default dtype, grad mode or default device changed
has it put back, with a warning naming the plugin.
"""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
import torch.nn as nn

import zooadapt
from zooadapt.contract.errors import IncompatibleCheckpointError, PluginError
from zooadapt.contract.family import Family, ModelEntry
from zooadapt.contract.stages import Stage, StageMap
from zooadapt.host.plugin_manager import load_plugins
from zooadapt.host.registry import reset_registry
from zooadapt.plugin_api import hookimpl


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def _state(**changes: torch.Tensor) -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in _net().state_dict().items()}
    state.update(changes)
    return state


# -- NaN and Inf -------------------------------------------------------------------------------


def test_nan_and_inf_weights_are_warned_about_and_reported(tmp_path):
    bad = torch.ones(8, 4)
    bad[0, 0] = float("nan")
    inf = torch.zeros(8)
    inf[3] = float("inf")
    path = tmp_path / "bad.pth"
    torch.save(_state(**{"0.weight": bad, "0.bias": inf}), path)
    model = _net()
    with pytest.warns(UserWarning, match=r"2 loaded tensors hold NaN or Inf values \(0\.weight, 0\.bias\)"):
        report = zooadapt.load_weights(model, str(path))
    assert report.nonfinite == ("0.weight", "0.bias")
    assert "NaN or Inf in 2 tensors: 0.weight, 0.bias" in str(report)
    assert report.to_dict()["nonfinite"] == ["0.weight", "0.bias"]
    assert torch.isnan(model[0].weight[0, 0])  # loaded as it is


def test_a_huge_finite_weight_whose_sum_overflows_is_not_reported(tmp_path):
    """Tensors are screened by their sum (finite sum: no NaN or Inf); a sum that overflows is
    tested element by element, so huge finite values are not called non-finite."""
    path = tmp_path / "huge.pth"
    torch.save(_state(**{"0.weight": torch.full((8, 4), 3e38), "0.bias": torch.full((8,), 60000.0).half()}), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = zooadapt.load_weights(_net(), str(path))
    assert report.nonfinite == ()


def test_a_repeated_load_remembers_the_values_and_a_rewritten_file_is_checked_again(tmp_path):
    path = tmp_path / "again.pth"
    bad = torch.ones(8, 4)
    bad[1, 1] = float("nan")
    torch.save(_state(**{"0.weight": bad}), path)
    for _ in range(2):  # the second load is answered from what the first learnt: the same warning
        with pytest.warns(UserWarning, match="NaN or Inf"):
            assert zooadapt.load_weights(_net(), str(path)).nonfinite == ("0.weight",)
    torch.save(_state(), path)  # rewritten: another identity, checked again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert zooadapt.load_weights(_net(), str(path)).nonfinite == ()


def test_finite_weights_load_without_a_warning(tmp_path):
    path = tmp_path / "good.pth"
    torch.save(_state(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = zooadapt.load_weights(_net(), str(path))
    assert report.nonfinite == () and "NaN" not in str(report)


def test_nan_in_a_named_model_load_is_warned_and_reported(hub, registry_model, resnet18_weights):
    from zooadapt.testing import safetensors_bytes

    state = dict(resnet18_weights)
    state["layer1.0.conv1.weight"] = torch.full_like(state["layer1.0.conv1.weight"], float("nan"))
    entry = registry_model("nanr18", safetensors_bytes(state))
    with pytest.warns(UserWarning, match="1 loaded tensor hold NaN or Inf values \\(layer1.0.conv1.weight\\)"):
        model = zooadapt.load(entry.name, num_classes=5)
    assert model.zooadapt.report.nonfinite == ("layer1.0.conv1.weight",)
    assert "NaN or Inf in 1 tensors: layer1.0.conv1.weight" in str(model.zooadapt.report)


# -- integers into floats ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int32, torch.bool])
def test_integer_tensor_for_a_floating_weight_is_refused(tmp_path, dtype):
    path = tmp_path / "q.pth"
    torch.save(_state(**{"2.weight": torch.ones(3, 8, dtype=dtype)}), path)
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(IncompatibleCheckpointError, match=r"checkpoint tensor 2\.weight is .*, but model 2\.weight is "
                                               r"float32.*Dequantize"):
        zooadapt.load_weights(model, str(path))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing copied


def test_a_cast_rule_says_the_integers_are_the_values(tmp_path):
    """``cast:REGEX`` (``CastIntegers``): the named keys' integer tensors load as floats, the plan
    says so, and a key the pattern does not name is still refused."""
    values = torch.arange(24, dtype=torch.int32).reshape(3, 8)
    path = tmp_path / "ints.pth"
    torch.save(_state(**{"2.weight": values}), path)
    model = _net()
    report = zooadapt.load_weights(model, str(path), rules=["cast:2\\.weight"])
    assert model[2].weight.dtype == torch.float32 and torch.equal(model[2].weight.detach(), values.float())
    assert any("cast integers" in rule for rule in report.plan.rule_counts())
    with pytest.raises(IncompatibleCheckpointError):
        zooadapt.load_weights(_net(), str(path), rules=["cast:0\\.weight"])


def test_integer_buffers_still_load(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["1.num_batches_tracked"] = torch.tensor(7)
    path = tmp_path / "bn.pth"
    torch.save(state, path)
    zooadapt.load_weights(model, str(path))
    assert model[1].num_batches_tracked.item() == 7


# -- a build that changes torch's global state -------------------------------------------------


class _Sloppy(nn.Module):
    def __init__(self, num_classes: int, change: str) -> None:
        super().__init__()
        if change == "dtype":
            torch.set_default_dtype(torch.float64)
        elif change == "grad":
            torch.set_grad_enabled(False)
        elif change == "device":
            torch.set_default_device("meta")
        self.body = nn.Linear(4, 4)
        self.out = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.out(self.body(x))


class _SloppyPlugin:
    def __init__(self, change: str) -> None:
        self.change = change

    @hookimpl
    def zooadapt_register_families(self, register):
        register(Family(name="sloppy", build=lambda arch, num_classes=10: _Sloppy(num_classes, self.change),
                        stages=StageMap((Stage("body", ("body",)),), head="out"), provider="sloppy-test",
                        copy_skeleton=False))

    @hookimpl
    def zooadapt_register_models(self, register):
        register(ModelEntry(name="sloppynet", family="sloppy", arch="sloppy"))


@pytest.fixture
def sloppy():
    plugins = []

    def install(change: str) -> None:
        plugin = _SloppyPlugin(change)
        load_plugins().register(plugin, name=f"sloppy-{change}")
        plugins.append(plugin)
        reset_registry()

    yield install
    torch.set_default_dtype(torch.float32)
    torch.set_grad_enabled(True)
    torch.set_default_device(None)
    for plugin in plugins:
        load_plugins().unregister(plugin)
    reset_registry()


@pytest.mark.parametrize("change, words", [("dtype", "default dtype"), ("grad", "grad mode"),
                                           ("device", "default device")])
@pytest.mark.parametrize("pretrained", [False, True])
def test_a_build_that_changes_global_torch_state_is_undone_and_named(sloppy, caplog, tmp_path, change, words,
                                                                      pretrained):
    sloppy(change)
    kwargs = {}
    if pretrained:
        path = tmp_path / "w.pth"
        torch.save({"body.weight": torch.ones(4, 4), "body.bias": torch.zeros(4)}, path)
        kwargs = {"weights": str(path)}
    with caplog.at_level(logging.WARNING, logger="zooadapt"):
        if change == "device" and not pretrained:  # its random weights were made on meta: no model to give
            with pytest.raises(PluginError, match=r"tensors on 'meta' \('body.weight'\) when real weights"):
                zooadapt.load("sloppynet", num_classes=2, pretrained=pretrained, **kwargs)
        else:
            zooadapt.load("sloppynet", num_classes=2, pretrained=pretrained, **kwargs)
    assert torch.get_default_dtype() == torch.float32
    assert torch.is_grad_enabled()
    assert torch.get_default_device() == torch.device("cpu")
    assert torch.zeros(1).device.type == "cpu"
    assert any("'sloppy'" in r.message and "sloppy-test" in r.message and words in r.message
               for r in caplog.records)

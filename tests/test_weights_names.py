"""``weights=`` takes a model name, a ``timm/…`` id, an ``hf://`` address or a path (issue #22).

A path that exists wins over a name; a string that is neither is refused with the four forms;
torchvision's habits (``"IMAGENET1K_V1"``, ``"DEFAULT"``, a ``ResNet50_Weights`` member) are
refused with zooadapt's spelling. Every entry point reads ``weights=`` the same way: ``load``,
``load_weights``, ``plan_for`` and ``zooadapt inspect``.
"""

from __future__ import annotations

import json

import pytest
import torch
import torchvision.models as tvm

import zooadapt
from zooadapt.cli import main
from zooadapt.contract.errors import UnknownModelError
from zooadapt.errors import IncompatibleCheckpointError, InvalidArgumentError, UnknownWeightsError, WeightsNotFoundError
from zooadapt.plugin_api import get_registry
from zooadapt.testing import safetensors_bytes, torchvision_state_dict
from zooadapt.weights.argument import registry_entry_for

R18, R34 = "timm/resnet18.tv_in1k", "timm/resnet34.tv_in1k"


def _assert_backbone(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    compared = [k for k in state if not k.startswith("fc.") and k in got]
    assert len(compared) > 50
    for key in compared:
        assert torch.equal(got[key], state[key]), key


# -- the forms that load ---------------------------------------------------------------------------


def _spellings(arch: str) -> dict[str, str]:
    repo = {"resnet18": R18, "resnet34": R34}[arch]
    return {"registry name": arch, "timm id": repo, "hf address": f"hf://{repo}",
            "hf file": f"hf://{repo}/model.safetensors", "hf revision": f"hf://{repo}@main"}


@pytest.mark.parametrize("arch", ["resnet18", "resnet34"])
@pytest.mark.parametrize("form", ["registry name", "timm id", "hf address", "hf file", "hf revision"])
def test_every_form_of_weights_loads_the_same_tensors(request, arch, form):
    state = request.getfixturevalue(f"{arch}_weights")
    model = zooadapt.load(arch, weights=_spellings(arch)[form], num_classes=3)
    _assert_backbone(model, state)


@pytest.mark.parametrize("form", ["registry name", "timm id", "hf address"])
def test_load_weights_and_plan_for_take_the_same_forms(resnet18_weights, form):
    source = _spellings("resnet18")[form]
    model = tvm.resnet18(weights=None)
    report = zooadapt.load_weights(model, source)
    _assert_backbone(model, resnet18_weights)
    assert report.plan.fits
    assert zooadapt.plan_for("resnet18", source).fits


def test_issue_22_a_model_name_as_weights_of_another_model_is_fetched(resnet18_weights):
    """The issue's own call: the name is understood (not "weights file resnet18 does not exist");
    ResNet-18's tensors do not fit ResNet-50, which is the error now."""
    with pytest.raises(IncompatibleCheckpointError) as info:
        zooadapt.load("resnet50", weights="resnet18")
    assert "does not exist" not in str(info.value)


def test_issue_22_a_timm_id_as_weights_of_another_model_is_fetched(resnet34_weights):
    with pytest.raises(IncompatibleCheckpointError) as info:
        zooadapt.load("resnet50", weights=R34)
    assert "does not exist" not in str(info.value)


def test_a_registry_model_of_another_name_lends_its_weights(registry_model):
    state = torchvision_state_dict("resnet18", seed=221)
    published = registry_model("lent18", safetensors_bytes(state))
    model = zooadapt.load("resnet18", weights=published.name, num_classes=4)
    _assert_backbone(model, state)
    assert model.zooadapt.report.commit == published.commit


def test_a_model_name_as_weights_follows_the_lock_file(hub, registry_model):
    old = torchvision_state_dict("resnet18", seed=222)
    published = registry_model("locked18", safetensors_bytes(old))
    zooadapt.lock([published.name])
    hub.add_file(published.repo, "model.safetensors", safetensors_bytes(torchvision_state_dict("resnet18", seed=223)))
    model = zooadapt.load("resnet18", weights=published.name)
    _assert_backbone(model, old)  # the locked commit, not the branch's new head


def test_cli_inspect_takes_a_timm_id(capsys, resnet34_weights):
    assert main(["inspect", R34, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tensors"] == len(resnet34_weights) and data["checkpoint"].startswith(f"hf://{R34}")


# -- a path wins -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "DEFAULT", "IMAGENET1K_V1"])
@pytest.mark.parametrize("kind", ["folder", "file"])
def test_a_path_that_exists_wins_over_a_name(tmp_path, monkeypatch, resnet18_weights, name, kind):
    """A folder or file called like a model (or like torchvision's names) in the working directory
    is what the user means: its tensors load, not the registry's."""
    mine = torchvision_state_dict("resnet18", seed=224)
    monkeypatch.chdir(tmp_path)
    if kind == "folder":
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(safetensors_bytes(mine))
    else:
        (tmp_path / name).write_bytes(safetensors_bytes(mine))
    model = zooadapt.load("resnet18", weights=name, num_classes=2)
    _assert_backbone(model, mine)
    assert registry_entry_for(name) is None


def test_a_path_object_is_always_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from pathlib import Path

    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        zooadapt.load("resnet18", weights=Path("resnet18"))


# -- neither ---------------------------------------------------------------------------------------

_FORM_WORDS = ("file or directory path", "registry model name", "timm Hub id", "hf://org/repo[@revision][/file]")


@pytest.mark.parametrize("value", ["resnet5O", "resnet_18", "timm/no_such_model.tv_in1k", "nosuchthing"])
@pytest.mark.parametrize("entry", ["load", "load_weights", "plan_for"])
def test_a_string_that_is_neither_lists_the_four_forms(tmp_path, monkeypatch, value, entry):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnknownWeightsError) as info:
        if entry == "load":
            zooadapt.load("resnet18", weights=value)
        elif entry == "load_weights":
            zooadapt.load_weights(tvm.resnet18(weights=None), value)
        else:
            zooadapt.plan_for("resnet18", value)
    message = str(info.value)
    assert f"weights={value!r}" in message and all(word in message for word in _FORM_WORDS)
    assert isinstance(info.value, WeightsNotFoundError) and isinstance(info.value, UnknownModelError)


def test_a_mistyped_name_gets_suggestions():
    with pytest.raises(UnknownWeightsError, match=r"Did you mean: resnet50"):
        zooadapt.load("resnet18", weights="resnet5O")


@pytest.mark.parametrize("value", ["no/such/file.pth", "./missing.safetensors", "my-org/my-repo"])
def test_a_missing_path_names_the_forms(tmp_path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsNotFoundError) as info:
        zooadapt.load("resnet18", weights=value)
    message = str(info.value)
    assert "does not exist" in message and "registry model name" in message and "hf://org/repo" in message


@pytest.mark.parametrize("value", [123, 1.5, ["resnet18"], b"resnet18"])
def test_a_value_of_another_type_lists_the_forms(value):
    with pytest.raises(InvalidArgumentError) as info:
        zooadapt.load("resnet18", weights=value)
    assert all(word in str(info.value) for word in _FORM_WORDS)


# -- torchvision's habits --------------------------------------------------------------------------

_TV = [("resnet18", "IMAGENET1K_V1"), ("resnet34", "IMAGENET1K_V1"), ("resnet50", "IMAGENET1K_V1"),
       ("resnet50", "IMAGENET1K_V2"), ("resnet50", "DEFAULT"), ("mobilenet_v2", "IMAGENET1K_V2"),
       ("mobilenet_v3_small", "DEFAULT"), ("alexnet", "IMAGENET1K_V1")]


@pytest.mark.parametrize(("model", "habit"), _TV)
def test_torchvision_weight_names_are_refused_with_our_spelling(model, habit):
    member = tvm.get_model_weights(model)[habit]
    with pytest.raises(InvalidArgumentError) as info:
        zooadapt.load(model, weights=habit)
    message = str(info.value)
    source = get_registry().entry(model).source.describe()
    assert f"weights={habit!r} is torchvision's name for {model}'s weights" in message
    assert f"zooadapt.load({model!r}) loads the registry's pretrained weights for it ({source})" in message
    assert f"weights={member.url!r}" in message and f"{type(member).__name__}.{member.name}" in message
    assert "Pass a file path, an hf:// address or a model name to weights=." in message


@pytest.mark.parametrize(("model", "habit"), _TV[:5])
def test_torchvision_enums_are_refused_with_our_spelling(model, habit):
    member = tvm.get_model_weights(model)[habit]
    with pytest.raises(InvalidArgumentError) as info:
        zooadapt.load(model, weights=member)
    message = str(info.value)
    assert f"weights={type(member).__name__}.{member.name} is torchvision's name for {model}'s weights" in message
    assert f"zooadapt.load({model!r}) loads the registry's pretrained weights" in message
    assert f"weights={member.url!r}" in message


def test_an_enum_given_to_load_weights_still_names_its_model():
    with pytest.raises(InvalidArgumentError, match=r"torchvision's name for resnet50's weights.*zooadapt\.load\("
                                                   r"'resnet50'\)"):
        zooadapt.load_weights(tvm.resnet50(weights=None), tvm.ResNet50_Weights.IMAGENET1K_V2)


@pytest.mark.parametrize("habit", ["IMAGENET1K_V1", "DEFAULT"])
def test_a_torchvision_name_without_a_model_is_refused_too(habit):
    with pytest.raises(InvalidArgumentError, match=rf"weights='{habit}' is torchvision's name for a model's weights.*"
                                                   r"zooadapt\.load\(NAME\)"):
        zooadapt.load_weights(tvm.resnet18(weights=None), habit)


def test_a_torchvision_name_for_a_timm_model_is_refused_plainly():
    with pytest.raises(InvalidArgumentError, match=r"torchvision's name for convnext_tiny\.in12k_ft_in1k's weights"):
        zooadapt.load("convnext_tiny", weights="IMAGENET1K_V1")

"""``weights=`` a checkpoint already in memory loads exactly as the same object saved to a file.

Before, a state dict in memory was refused ("save it first"): the user of a notebook, holding
``torch.load(...)``'s result or another model, had to write a file to load what was in hand. Now a
state dict, a training checkpoint's dict (wrappers, EMA beside live weights, an optimizer's
state) and a module are read as a file holding them is read. The oracle of every case is that
file: the same object saved with ``torch.save`` and loaded by path must give the same tensors in
the same places, the same head and the same notes; and the loaded model must share no memory
with the object passed (training it must not change the caller's dict, nor the dict the model).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from generators import (
    FAST_BUILTIN,
    FAST_TIMM,
    builtin_architectures,
    class_count,
    sample_input,
    seeded_model,
)

import zooadapt
from zooadapt.errors import CheckpointFormatError, InvalidArgumentError

FORMS = ("state_dict", "training", "ema", "module")
"""How the checkpoint is held: the fine-tune's ``state_dict()``; a training checkpoint's dict
(``module.`` keys, an epoch and an optimizer's state beside them); live and EMA weights side by
side (the EMA is what loads by default, as from a file); the fine-tuned module itself."""


def _held(model: torch.nn.Module, form: str) -> object:
    state = model.state_dict()
    if form == "state_dict":
        return state
    if form == "training":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()},
                "optimizer": optimizer.state_dict()}
    if form == "ema":
        live = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
        return {"model": live, "model_ema": state, "epoch": 3}
    return model


LARGE = ("resnet34", "resnet50", "resnet101", "resnet152", "alexnet")
"""Built-in architectures of 21M-61M parameters, each saved and loaded twice per case: one form
each, in turn (what is read does not depend on the size; the suite's time does)."""


def _cases() -> list[object]:
    fast = {arch: form for arch, form in zip((*FAST_BUILTIN, *FAST_TIMM), FORMS * 2, strict=False)}
    large = {arch: FORMS[i % len(FORMS)] for i, arch in enumerate(LARGE)}
    return [pytest.param(arch, form, marks=[] if fast.get(arch) == form else [pytest.mark.slow],
                         id=f"{arch}-{form}")
            for arch in (*builtin_architectures(), *FAST_TIMM) for form in FORMS
            if arch not in large or large[arch] == form]


def _storages(obj: object) -> set[int]:
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, torch.Tensor):
        return {obj.untyped_storage().data_ptr()} if obj.numel() else set()
    if isinstance(obj, dict):
        return set().union(*(_storages(v) for v in obj.values())) if obj else set()
    return set()


@pytest.mark.parametrize(("arch", "form"), _cases())
def test_a_checkpoint_in_memory_loads_as_the_same_object_saved_to_a_file(arch, form, tmp_path):
    classes = class_count(arch)
    source = seeded_model(arch, classes, seed=1)
    held = _held(source, form)
    torch.save(held, tmp_path / "checkpoint.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the file's own words are compared below, not silenced
        from_file = zooadapt.load(arch, weights=tmp_path / "checkpoint.pth", trusted=form == "module")
        from_memory = zooadapt.load(arch, weights=held)
    plan, filed = from_memory.zooadapt.report.plan, from_file.zooadapt.report.plan
    assert [(m.model_key, m.checkpoint_key) for m in plan.loaded] == \
        [(m.model_key, m.checkpoint_key) for m in filed.loaded]
    assert plan.notes == filed.notes and plan.new_head == filed.new_head == []
    assert from_memory.zooadapt.num_classes == classes  # the fine-tune's head, kept
    expected = from_file.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in from_memory.state_dict().items())
    if form == "ema":  # the EMA weights, as from the file, not the live ones beside them
        assert from_memory.zooadapt.report.plan.weight_set == filed.weight_set
    assert not _storages(from_memory) & _storages(held)  # nothing shared with the caller's object
    x = sample_input(arch, from_memory)
    with torch.no_grad():
        torch.testing.assert_close(from_memory.eval()(x), from_file.eval()(x), rtol=0, atol=0)


def test_the_report_names_what_was_passed():
    source = torchvision.models.resnet18(num_classes=5)
    model = zooadapt.load("resnet18", weights=source.state_dict())
    assert model.zooadapt.report.source == "an OrderedDict passed as weights= (122 tensors)"
    assert model.zooadapt.report.path is None and model.zooadapt.source == model.zooadapt.report.source
    report = zooadapt.load_weights(torchvision.models.resnet18(num_classes=5), source)
    assert report.source == "the ResNet module passed as weights= (122 tensors)"


def test_training_the_loaded_model_leaves_the_dict_as_it_was_and_the_other_way_round():
    torch.manual_seed(0)
    state = torchvision.models.resnet18(num_classes=5).state_dict()
    before = {k: v.clone() for k, v in state.items()}
    model = zooadapt.load("resnet18", weights=state, num_classes=3, freeze="layer1-2")
    with torch.no_grad():
        state["conv1.weight"].add_(1.0)
    assert torch.equal(model.conv1.weight, before["conv1.weight"])
    state["conv1.weight"].copy_(before["conv1.weight"])
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    model.train()
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    optimizer.step()
    assert all(torch.equal(state[k], before[k]) for k in state)
    assert not torch.equal(model.layer4[0].conv1.weight, state["layer4.0.conv1.weight"])  # it did train


def test_load_weights_from_the_models_own_memory_through_a_swapping_rule():
    """A checkpoint holding the target's own tensors, moved by a rule: each read is of the value
    as it was, never of one the copy already overwrote."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    swapped = {"0.weight": model[1].weight, "0.bias": model[1].bias,
               "1.weight": model[0].weight, "1.bias": model[0].bias}
    zooadapt.load_weights(model, swapped)
    assert torch.equal(model[0].weight, before["1.weight"]) and torch.equal(model[1].weight, before["0.weight"])
    assert torch.equal(model[0].bias, before["1.bias"]) and torch.equal(model[1].bias, before["0.bias"])


def test_identify_and_a_nameless_load_take_a_dict_in_memory():
    state = torchvision.models.resnet34(num_classes=7).state_dict()
    found = zooadapt.identify(state)
    assert found.best is not None and found.best.name == "resnet34" and found.best.complete
    model = zooadapt.load(weights={"state_dict": {f"module.{k}": v for k, v in state.items()}})
    assert model.zooadapt.name == "resnet34" and model.zooadapt.num_classes == 7


def test_plan_for_unwraps_a_training_checkpoint_in_memory_as_load_does():
    state = torchvision.models.resnet18().state_dict()
    plan = zooadapt.plan_for("resnet18", {"epoch": 1, "model": {f"_orig_mod.{k}": v for k, v in state.items()}})
    assert plan.coverage == 1.0 and not plan.unexpected


@pytest.mark.parametrize("device", ["meta", None])
def test_dtype_and_meta_loads_from_memory(device):
    state = torchvision.models.mobilenet_v3_small().state_dict()
    model = zooadapt.load("mobilenet_v3_small", weights=state, num_classes=4, dtype=torch.bfloat16, device=device)
    weight = model.features[0][0].weight
    assert weight.dtype == torch.bfloat16 and weight.is_meta == (device == "meta")
    if device is None:
        assert torch.equal(weight, state["features.0.0.weight"].to(torch.bfloat16))


def test_a_model_loaded_from_memory_saves_and_reloads(tmp_path):
    source = torchvision.models.resnet18(num_classes=5).eval()
    model = zooadapt.load("resnet18", weights=source.state_dict(), freeze="layer1")
    zooadapt.save(model, tmp_path / "saved")
    again = zooadapt.load(tmp_path / "saved").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(x), source(x), rtol=0, atol=0)
    assert again.zooadapt.num_classes == 5


@pytest.mark.parametrize(("held", "expected"), [
    ({"lr": 0.1, "epochs": 90}, r"weights= \(a dict in memory\) holds no tensors zooadapt recognises; its top-level "
                                r"keys are 'lr', 'epochs'"),
    ({}, r"weights= \(a dict in memory\) holds no tensors"),
    ({"conv1.weight": torch.empty(64, 3, 7, 7, device="meta")}, r"'conv1.weight' is on the 'meta' device"),
])
def test_a_mapping_that_holds_no_weights_is_refused_naming_what_it_holds(held, expected):
    with pytest.raises(CheckpointFormatError, match=expected):
        zooadapt.load("resnet18", weights=held)


@pytest.mark.slow
def test_a_big_state_dict_of_the_wrong_model_is_refused_without_printing_it():
    state = torchvision.models.vgg11().state_dict()
    with pytest.raises(zooadapt.errors.ZooadaptError) as refused:
        zooadapt.load("resnet18", weights=state)
    assert "tensor(" not in str(refused.value) and len(str(refused.value)) < 3000


def test_other_objects_are_still_refused_naming_the_forms():
    with pytest.raises(InvalidArgumentError, match=r"a checkpoint in memory: a state dict"):
        zooadapt.load("resnet18", weights=[torch.zeros(1)])

"""Two copies of a network whose names do not fit are found by order, and never guessed.

lightly builds its self-supervised models around a torchvision ResNet's
children: ``lightly-ai/lightly/examples/pytorch_lightning/byol.py`` sets ``self.backbone =
nn.Sequential(*list(resnet.children())[:-1])`` and ``self.backbone_momentum =
copy.deepcopy(self.backbone)`` beside projection and prediction heads (``BYOLProjectionHead``:
``layers`` = Linear, BatchNorm1d, ReLU, Linear); ``lightly-ai/lightly/examples/pytorch/dino.py`` names the two
copies ``student_backbone`` and ``teacher_backbone``. The keys (``backbone.4.0.conv1.weight``)
name no module of the model, so the planner pairs modules by order and tensor signature: each
prefix that could hold a copy is paired, and two copies are refused (BYOL's online and target
networks) or settled by the teacher convention (DINO), in every key order and file form.
"""

from __future__ import annotations

import copy
import random
import re

import pytest
import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file

import zooadapt
from zooadapt.contract.errors import AmbiguousCheckpointError
from zooadapt.testing import seeded_state_dict


class _Head(nn.Module):
    """lightly.models.modules.heads.ProjectionHead: its blocks in ``self.layers``."""

    def __init__(self, dims: tuple[int, int, int]) -> None:
        super().__init__()
        i, h, o = dims
        self.layers = nn.Sequential(nn.Linear(i, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(), nn.Linear(h, o))


def lightly_state(names: tuple[str, str], seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """A lightly model's state dict with its two backbones under ``names`` (each seeded apart,
    heads between them as lightly registers them), and each copy in torchvision's names."""
    resnet = torchvision.models.resnet18()
    backbone = nn.Sequential(*list(resnet.children())[:-1])
    first, second = names
    parts = {first: backbone, "projection_head": _Head((512, 64, 32)), "prediction_head": _Head((32, 64, 32)),
             second: copy.deepcopy(backbone), "projection_head_momentum": _Head((512, 64, 32))}
    state: dict[str, torch.Tensor] = {}
    torchvision_names = [k for k in resnet.state_dict() if not k.startswith("fc.")]
    as_torchvision = {}
    for i, (name, module) in enumerate(parts.items()):
        part = seeded_state_dict(module, seed + i)
        state.update({f"{name}.{k}": v for k, v in part.items()})
        if name in names:
            as_torchvision[name] = dict(zip(torchvision_names, part.values(), strict=True))
    return state, as_torchvision


def written(state: dict[str, torch.Tensor], path, form: str):
    if form == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path) + ".safetensors")
        return str(path) + ".safetensors"
    torch.save({"epoch": 3, "state_dict": state}, str(path) + ".ckpt")  # Lightning's checkpoint
    return str(path) + ".ckpt"


def reordered(state: dict[str, torch.Tensor], order: str) -> dict[str, torch.Tensor]:
    keys = list(state)
    if order == "copies swapped":  # the target network registered first (a safetensors file has no order)
        keys.sort(key=lambda k: ("momentum" not in k))
    return {k: state[k] for k in keys}


def assert_holds(model: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.items())


@pytest.mark.parametrize("form", ["ckpt", "safetensors"])
@pytest.mark.parametrize("order", ["file", pytest.param("copies swapped", marks=pytest.mark.slow)])
def test_an_online_and_a_target_network_are_refused_in_every_order(tmp_path, form, order):
    state, copies = lightly_state(("backbone", "backbone_momentum"))
    path = written(reordered(state, order), tmp_path / "byol", form)
    with pytest.raises(AmbiguousCheckpointError) as refused:
        zooadapt.load("resnet18", weights=path, num_classes=10)
    lines = re.findall(r'rules=\["(drop:[^"]+)"\]', str(refused.value))
    assert len(lines) == 2 and "'backbone.'" in str(refused.value) and "'backbone_momentum.'" in str(refused.value)
    for line, name in zip(lines, ("backbone", "backbone_momentum"), strict=True):  # each line loads its copy
        assert_holds(zooadapt.load("resnet18", weights=path, num_classes=10, rules=[line]), copies[name])


@pytest.mark.parametrize("form", ["ckpt", "safetensors"])
def test_the_users_own_strip_rule_chooses_the_copy(tmp_path, form):
    state, copies = lightly_state(("backbone_momentum", "backbone"))  # the copy asked for comes second
    path = written(state, tmp_path / "byol", form)
    model = zooadapt.load("resnet18", weights=path, num_classes=10, rules=["strip:backbone."])
    assert_holds(model, copies["backbone"])


@pytest.mark.parametrize("form", ["ckpt", pytest.param("safetensors", marks=pytest.mark.slow)])
@pytest.mark.parametrize("order", ["file", pytest.param("copies swapped", marks=pytest.mark.slow)])
def test_dino_loads_the_teacher_and_use_ema_false_the_student(tmp_path, form, order):
    state, copies = lightly_state(("student_backbone", "teacher_backbone"))
    path = written(reordered(state, order), tmp_path / "dino", form)
    teacher = zooadapt.load("resnet18", weights=path, num_classes=10)
    assert_holds(teacher, copies["teacher_backbone"])
    assert any("'student_backbone.'" in n and "'teacher_backbone.'" in n for n in teacher.zooadapt.report.plan.notes)
    student = zooadapt.load("resnet18", weights=path, num_classes=10, use_ema=False)
    assert_holds(student, copies["student_backbone"])
    assert any("as use_ema=False asks" in n for n in student.zooadapt.report.plan.notes)


@pytest.mark.parametrize("form", ["pth", "safetensors"])
def test_one_copy_saved_alone_loads_in_either_form(tmp_path, form):
    """``torch.save(model.backbone.state_dict())``, as lightly's docs save a backbone: a safetensors
    file keeps no order, and a block's ``conv1`` and ``conv2`` (the same shapes) are told apart
    by their names."""
    state, copies = lightly_state(("backbone", "backbone_momentum"))
    alone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    keys = list(alone)
    random.Random(1).shuffle(keys)
    if form == "safetensors":
        path = str(tmp_path / "backbone.safetensors")
        save_file({k: alone[k].contiguous() for k in keys}, path)
    else:
        path = str(tmp_path / "backbone.pth")
        torch.save(alone, path)
    model = zooadapt.load("resnet18", weights=path, num_classes=10)
    assert_holds(model, copies["backbone"])
    assert model.zooadapt.report.plan.fits

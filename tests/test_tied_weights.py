"""Weights shared inside a model (CoaT's convolutional position encodings: ``cpe1`` is also
``serial_blocks1.0.cpe``, the same module under two names). ``state_dict()`` lists such a
tensor under each name, but safetensors' ``save_model`` and transformers keep one name only, and
either name may be the one kept. Any one name fills the tensor; the names stay one tensor after
loading; two names with different values are refused, naming both."""

from __future__ import annotations

import generators as g
import pytest
import torch
from safetensors.torch import save_file

import zooadapt
from zooadapt.errors import IncompatibleCheckpointError
from zooadapt.loading.placement import tied_groups

ARCH = "coat_lite_tiny"


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    return g.seeded_weights(ARCH, 11)


@pytest.fixture(scope="module")
def groups() -> tuple[tuple[str, ...], ...]:
    found = tied_groups(g.build(ARCH, None, meta=True).state_dict(keep_vars=True))
    assert found, "CoaT no longer shares its position encodings: pick another architecture"
    return found


def one_name_each(state: dict[str, torch.Tensor], groups, keep: int) -> dict[str, torch.Tensor]:
    """``state`` with each tied tensor under one of its names only (the ``keep``-th)."""
    dropped = {k for group in groups for i, k in enumerate(group) if i != keep % len(group)}
    return {k: v.clone() for k, v in state.items() if k not in dropped}


def assert_tied_and_exact(model: torch.nn.Module, state: dict[str, torch.Tensor], groups) -> None:
    loaded = model.state_dict(keep_vars=True)
    for group in groups:
        first = loaded[group[0]]
        assert all(loaded[k] is first for k in group), f"{group} are no longer one tensor"
    assert [k for k, v in state.items() if not torch.equal(loaded[k].detach(), v)] == []


@pytest.mark.parametrize("keep", [0, 1], ids=["first-name", "second-name"])
def test_a_tensor_saved_under_one_of_its_names_loads_under_all(weights, groups, keep, tmp_path):
    path = tmp_path / "one_name.safetensors"
    save_file(one_name_each(weights, groups, keep), path)
    model = zooadapt.load(ARCH, weights=path)
    plan = model.zooadapt.report.plan
    assert plan.fits and plan.missing == []
    assert len(plan.tied) == sum(len(group) - 1 for group in groups)
    assert_tied_and_exact(model, weights, groups)


def test_a_tensor_saved_under_every_name_stays_one_tensor(weights, groups, tmp_path):
    path = tmp_path / "every_name.pth"
    torch.save(weights, path)
    model = zooadapt.load(ARCH, weights=path)
    assert_tied_and_exact(model, weights, groups)


def test_two_names_of_one_tensor_with_different_values_are_refused(weights, groups, tmp_path):
    state = dict(weights)
    member = groups[0][1]
    state[member] = weights[member] + 1
    path = tmp_path / "disagreeing.pth"
    torch.save(state, path)
    with pytest.raises(IncompatibleCheckpointError) as err:
        zooadapt.load(ARCH, weights=path)
    assert member in str(err.value) and groups[0][0] in str(err.value)

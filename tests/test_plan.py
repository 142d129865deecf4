"""The load plan as data: positional pairing, key order, skipping, and previewing before loading."""

from __future__ import annotations

import pytest
import torch

import zooadapt
from zooadapt.contract.rules import Positional, Rename, Renumber, Reshape, StripPrefix
from zooadapt.errors import IncompatibleCheckpointError, InvalidArgumentError
from zooadapt.loading.plan import Status, make_plan
from zooadapt.testing import safetensors_bytes

# A small "network" as (key, shape): a conv, a BatchNorm, a conv with bias, a classifier.
CONV_BN = [
    ("0.weight", (8, 3, 3, 3)),
    ("1.weight", (8,)), ("1.bias", (8,)), ("1.running_mean", (8,)), ("1.running_var", (8,)),
    ("3.weight", (16, 8, 1, 1)), ("3.bias", (16,)),
]


def _layout(prefix: str, items=CONV_BN) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}{k}": s for k, s in items}


def test_positional_pairs_modules_in_order_whatever_the_names():
    checkpoint = {**_layout("module.features."), "module.fc.weight": (10, 16), "module.fc.bias": (10,)}
    model = {**_layout("body.block."), "classifier.weight": (10, 16), "classifier.bias": (10,)}
    plan = make_plan(checkpoint, model, rules=[Positional()], head="classifier")
    assert plan.assignments() == {
        **{f"module.features.{k}": f"body.block.{k}" for k, _ in CONV_BN},
        "module.fc.weight": "classifier.weight", "module.fc.bias": "classifier.bias",
    }
    assert all(m.rules == ("strip 'module.'", "positional (same order, shapes checked)") for m in plan.loaded)
    assert plan.coverage == 1.0 and not plan.missing and not plan.unexpected


def test_positional_ignores_tensor_order_inside_a_module():
    """BatchNorm's four tensors share a shape: pairing per module by leaf name, not by position."""
    ck = dict(_layout("a."))
    shuffled = {k: ck[k] for k in ["a.0.weight", "a.1.running_var", "a.1.bias", "a.1.weight", "a.1.running_mean",
                                   "a.3.bias", "a.3.weight"]}
    plan = make_plan(shuffled, _layout("b."), rules=[Positional()], checkpoint_order="file")
    assert plan.assignments()["a.1.running_var"] == "b.1.running_var"
    assert plan.assignments()["a.1.bias"] == "b.1.bias"


def test_positional_refuses_a_divergence_and_shows_where():
    ck = _layout("x.")
    model = {**_layout("y."), "y.3.weight": (32, 8, 1, 1)}  # the third module is wider in the model
    with pytest.raises(IncompatibleCheckpointError) as info:
        make_plan(ck, model, rules=[Positional()], checkpoint_order="file")
    message = str(info.value)
    assert "diverges at model module #2" in message
    assert "y.3 {weight [32, 8, 1, 1]" in message and "x.3 {weight [16, 8, 1, 1]" in message
    assert "2 modules matched before it" in message


def test_positional_truncated_model_takes_the_first_modules():
    ck = {**_layout("model.0."), **_layout("model.1."), "fc.weight": (10, 16), "fc.bias": (10,)}
    model = {**_layout("conv1."), "head.weight": (3, 16), "head.bias": (3,)}
    plan = make_plan(ck, model, rules=[Positional()], head="head", checkpoint_order="file")
    assert set(plan.assignments().values()) == set(_layout("conv1."))
    assert {m.checkpoint_key for m in plan.unexpected} == {*_layout("model.1."), "fc.weight", "fc.bias"}
    assert plan.new_head == ["head.weight", "head.bias"]


def test_positional_defaults_num_batches_tracked_an_old_checkpoint_lacks():
    model = {**_layout("m."), "m.1.num_batches_tracked": ()}
    plan = make_plan(_layout("old."), model, rules=[Positional()], checkpoint_order="file")
    assert plan.defaulted == ["m.1.num_batches_tracked"] and not plan.missing


def _sorted(d: dict) -> dict:
    return dict(sorted(d.items()))


def test_unordered_checkpoint_follows_numbered_names_numerically():
    """safetensors stores keys sorted by name: model.10 before model.2. Numbered children are
    put back in numeric order; shapes that differ per block prove the order was recovered."""
    items, model = {}, {}
    for i in range(12):
        items[f"model.{i}.weight"] = (i + 1, 4)
        model[f"layers.{i}.weight"] = (i + 1, 4)
    plan = make_plan(_sorted(items), model, rules=[Positional()], checkpoint_order="unordered")
    assert plan.assignments() == {f"model.{i}.weight": f"layers.{i}.weight" for i in range(12)}
    assert plan.order == "unordered" and "keeps no key order" in plan.notes[0]


def test_auto_order_detects_a_name_sorted_checkpoint():
    items = {f"model.{i}.weight": (i + 1, 4) for i in range(12)}
    model = {f"layers.{i}.weight": (i + 1, 4) for i in range(12)}
    assert make_plan(_sorted(items), model, rules=[Positional()]).order == "unordered"
    with pytest.raises(IncompatibleCheckpointError):  # taken literally, the sorted order is wrong
        make_plan(_sorted(items), model, rules=[Positional()], checkpoint_order="file")


def test_unordered_named_siblings_chosen_by_shape():
    """``fc`` sorts before ``model``; the walk picks the sibling that fits the model's next module."""
    ck = {**_layout("model.0."), **_layout("model.1."), "fc.weight": (10, 16), "fc.bias": (10,)}
    model = {**_layout("conv1."), **_layout("conv2."), "out.weight": (10, 16), "out.bias": (10,)}
    plan = make_plan(_sorted(ck), model, rules=[Positional()], head="out", checkpoint_order="unordered")
    assert plan.assignments()["model.1.3.weight"] == "conv2.3.weight"
    assert plan.assignments()["fc.weight"] == "out.weight"
    assert plan.coverage == 1.0


def test_unordered_identical_named_siblings_are_ambiguous():
    ck = {"left.weight": (4, 4), "right.weight": (4, 4)}
    model = {"a.weight": (4, 4), "b.weight": (4, 4)}
    with pytest.raises(IncompatibleCheckpointError, match="ambiguous.*left, right.*torch.save"):
        make_plan(ck, model, rules=[Positional()], checkpoint_order="unordered")
    # the same file with its order trusted pairs left->a, right->b
    plan = make_plan(ck, model, rules=[Positional()], checkpoint_order="file")
    assert plan.assignments() == {"left.weight": "a.weight", "right.weight": "b.weight"}


def test_skip_reports_checkpoint_keys_the_model_does_not_have():
    ck = {"stem.weight": (4, 3), "layer4.0.weight": (8, 4), "layer4.1.weight": (8, 8), "fc.weight": (10, 8)}
    model = {"stem.weight": (4, 3), "layer4.0.weight": (6, 4), "fc.weight": (2, 6)}
    plan = make_plan(ck, model, head="fc", skip=["layer4"])
    assert [m.checkpoint_key for m in plan.skipped] == ["layer4.0.weight", "layer4.1.weight"]
    assert plan.left_out() == {"layer4.0.weight": "skipped", "fc.weight": "new_head"}
    assert not plan.unexpected and not plan.mismatched and plan.assignments() == {"stem.weight": "stem.weight"}


def test_renumber_and_rename_alternatives():
    ck = ["blocks.0.0.w", "blocks.1.0.w", "blocks.1.1.w", "blocks.10.0.w", "blocks.2.0.w"]
    rule = Renumber(r"blocks\.(\d+)\.(\d+)", "features.{}", start=1).bind(ck, ())
    assert [rule.rename(k) for k in ck] == ["features.1.w", "features.2.w", "features.3.w", "features.5.w",
                                            "features.4.w"]
    assert rule.rename("head.w") is None
    alt = Rename(r"(f\.\d)\.pwl\.(\w+)", (r"\1.block.3.\2", r"\1.block.2.\2"))
    assert alt.bind([], {"f.4.block.2.weight"}).rename("f.4.pwl.weight") == "f.4.block.2.weight"
    assert alt.bind([], {"f.4.block.3.weight"}).rename("f.4.pwl.weight") == "f.4.block.3.weight"
    assert "or" in alt.describe()


def test_plan_is_data_a_user_can_preview():
    ck = {"module.conv.weight": (4, 3, 1, 1), "proj.weight": (5, 4, 1, 1), "extra": (1,)}
    model = {"conv.weight": (4, 3, 1, 1), "linear.weight": (5, 4)}
    rename, reshape = Rename(r"proj\.(.+)", r"linear.\1"), Reshape(r"linear\.weight")
    plan = make_plan(ck, model, rules=[rename, reshape])
    rows = {row["checkpoint"]: row for row in plan.to_dict(mappings=True)["mappings"]}
    assert rows["module.conv.weight"]["rules"] == ["strip 'module.'"]
    assert rows["proj.weight"]["rules"] == [rename.describe(), reshape.describe()]
    assert rows["proj.weight"]["model"] == "linear.weight" and rows["extra"]["status"] == Status.UNEXPECTED.value
    assert plan.rule_counts() == {"strip 'module.'": 1, rename.describe(): 1, reshape.describe(): 1}
    text = str(plan)
    assert "covering 100.00%" in text and "unused, no place in the model 1: extra" in text


@pytest.mark.slow
def test_plan_for_and_inspect_checkpoint_load_nothing(tmp_path, resnet18_weights):
    path = tmp_path / "r18.safetensors"
    path.write_bytes(safetensors_bytes({f"backbone.{k}": v for k, v in resnet18_weights.items()}))
    shapes = zooadapt.inspect_checkpoint(path)
    assert shapes["backbone.fc.weight"] == (1000, 512) and len(shapes) == len(resnet18_weights)
    plan = zooadapt.inspect_checkpoint(path, "resnet18", num_classes=4)
    assert plan.coverage < 1.0 and sorted(plan.new_head) == ["fc.bias", "fc.weight"]
    assert plan.rule_counts() == {"strip 'backbone.'": len(resnet18_weights) - 2}
    assert len(plan.dropped) == 2 and not plan.missing
    mine = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 7, 2, 3, bias=False))
    plan = zooadapt.plan_for(mine, path, rules=[StripPrefix("backbone."), Positional()])
    assert plan.assignments() == {"backbone.conv1.weight": "0.weight"}
    with pytest.raises(InvalidArgumentError, match="layer5"):
        zooadapt.plan_for("resnet18", path, skip=("layer5",))
    published = zooadapt.plan_for("resnet18")  # the registry's own weights, from the (local) Hub
    assert published.coverage == 1.0 and published.rule_counts() == {"exact name": len(resnet18_weights)}


def test_a_head_of_another_form_renews_its_own_module_only():
    """``fc.weight`` of another shape makes the whole ``fc`` new (its ``bias`` is not kept beside
    a fresh weight), but a head key with no module of its own (a bare ``head`` tensor in the
    file) renews nothing outside the head: the root's other tensors still load."""
    model = {"w": (2,), "fc.weight": (5, 2), "fc.bias": (5,)}
    plan = make_plan({"w": (2,), "fc.weight": (3, 2), "fc.bias": (5,)}, model, head="fc")
    assert {m.checkpoint_key: m.status for m in plan.mappings} == {
        "w": Status.LOADED, "fc.weight": Status.DROPPED_HEAD, "fc.bias": Status.DROPPED_HEAD}
    bare = make_plan({"w": (2,), "head": (3,)}, {"w": (2,), "head.weight": (5, 2)}, head="head")
    assert {m.checkpoint_key: m.status for m in bare.mappings} == {"w": Status.LOADED, "head": Status.DROPPED_HEAD}
    assert bare.fits and bare.new_head == ["head.weight"]

"""A checkpoint loads exactly or is refused with the right cause (issue 24, parts 1, 2 and 5).

* Two copies of a network (MoCo's query and key encoders, an online and a target network)
  are always refused, whatever the file's size and key order; a documented convention (EMA,
  DINO's teacher) picks one and the report names both. Two keys that would fill one model
  tensor are refused naming both.
* ``num_classes`` left out keeps a fine-tuned checkpoint's trained head, with its labels.
* The messages say what is true: no "outside the head" without a head, no prefix comparison
  between identical prefixes, no ``skip=`` for a network with another stem or extra parts.

The MoCo files follow facebookresearch/moco: ``moco/builder.py`` builds ``encoder_q`` and
``encoder_k`` from one torchvision constructor (``num_classes=dim``, the ``fc`` replaced by
Linear-ReLU-fc when ``mlp``), registers ``queue``/``queue_ptr``; ``main_moco.py`` saves
``{'epoch', 'arch', 'state_dict': model.state_dict(), 'optimizer'}`` of the DDP-wrapped model.
"""

from __future__ import annotations

import json
import random
import re

import pytest
import torch
import torch.nn as nn
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import zooadapt
from zooadapt.cli import main
from zooadapt.contract.errors import AmbiguousCheckpointError, IncompatibleCheckpointError
from zooadapt.loading.discovery import wrapper_candidates
from zooadapt.testing import seeded_state_dict


def moco_state(arch: str, seed: int = 0, meta: bool = False) -> dict[str, torch.Tensor]:
    """The DDP-wrapped MoCo v2 state dict (``module.encoder_q.…``, ``module.encoder_k.…``,
    ``module.queue``, ``module.queue_ptr``), seeded; ``meta``: shapes only (built on meta)."""
    out: dict[str, torch.Tensor] = {}
    device = torch.device("meta" if meta else "cpu")
    for i, name in enumerate(("encoder_q", "encoder_k")):
        with device:
            encoder = getattr(torchvision.models, arch)(num_classes=128)
            width = encoder.fc.weight.shape[1]
            encoder.fc = nn.Sequential(nn.Linear(width, width), nn.ReLU(), encoder.fc)
        state = encoder.state_dict() if meta else seeded_state_dict(encoder, seed + i)
        out.update({f"module.{name}.{k}": v for k, v in state.items()})
    out["module.queue"] = torch.randn(128, 64, device=device)
    out["module.queue_ptr"] = torch.zeros(1, dtype=torch.long, device=device)
    return out


def model_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return shapes(getattr(torchvision.models, arch)().state_dict())


def reordered(state: dict[str, torch.Tensor], order: str) -> dict[str, torch.Tensor]:
    keys = list(state)
    if order == "sorted":
        keys.sort()
    elif order == "shuffled":
        random.Random(0).shuffle(keys)
    elif order == "reversed":
        keys.reverse()
    return {k: state[k] for k in keys}


def shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def rule_lines(message: str) -> list[str]:
    """Every ``rules=[...]`` line the refusal offers, as the user would copy it."""
    return re.findall(r'rules=\["strip:([^"]+)"\]', message)


# -- 1. two copies: refused, every size and order -------------------------------------------------


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("order", ["file", "sorted", "shuffled", "reversed"])
def test_moco_is_refused_for_every_depth_and_order(arch, order):
    """The ResNet-50 file used to load the momentum encoder: votes were sampled every
    len//128-th key, so whether the tie was seen depended on size and order."""
    state = reordered(moco_state(arch, meta=True), order)
    with pytest.raises(AmbiguousCheckpointError) as err:
        zooadapt.plan_for(arch, shapes(state))
    assert sorted(rule_lines(str(err.value))) == ["module.encoder_k.", "module.encoder_q."]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_the_rule_the_refusal_offers_loads_that_copy_exactly(tmp_path, arch):
    state = moco_state(arch, seed=3)
    path = tmp_path / "checkpoint_0199.pth.tar"
    torch.save({"epoch": 200, "arch": arch, "state_dict": state, "optimizer": {}}, path)
    with pytest.raises(AmbiguousCheckpointError) as err:
        zooadapt.load(arch, weights=path)
    for prefix in rule_lines(str(err.value)):
        model = zooadapt.load(arch, weights=path, rules=[f"strip:{prefix}"], num_classes=5)
        body = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
        for key, tensor in body.items():
            assert torch.equal(tensor, state[prefix + key]), (prefix, key)


def test_wrapper_candidates_do_not_depend_on_key_order():
    state = shapes(moco_state("resnet50", meta=True))
    model = model_shapes("resnet50")
    expected = wrapper_candidates(state, model)
    keys = list(state)
    for seed in range(5):
        random.Random(seed).shuffle(keys)
        assert wrapper_candidates({k: state[k] for k in keys}, model) == expected
    tops = [(w.strip, w.add) for w in expected[:2]]
    assert sorted(tops) == [("module.encoder_k.", ""), ("module.encoder_q.", "")]
    assert expected[0].elements == expected[1].elements  # every key counted: an exact tie


_NAME = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8).filter(
    lambda s: s not in ("module", "_orig_mod") and not s.startswith("_"))


@settings(max_examples=25, deadline=None)
@given(first=st.lists(_NAME, min_size=1, max_size=3), second=st.lists(_NAME, min_size=1, max_size=3),
       order=st.sampled_from(["file", "sorted", "shuffled"]))
def test_any_two_prefixes_of_one_network_are_a_tie(first, second, order):
    """Two copies under any two wrapper paths (1-3 levels) are refused, both offered; a copy
    named as an EMA or teacher copy is never generated here (the convention would pick it)."""
    a, b = ".".join(first) + ".", ".".join(second) + "."
    if a.startswith(b) or b.startswith(a) or any("ema" in p or "teacher" in p for p in (*first, *second)):
        return
    base = model_shapes("resnet18")
    state = reordered({**{a + k: s for k, s in base.items()}, **{b + k: s for k, s in base.items()}}, order)
    with pytest.raises(AmbiguousCheckpointError) as err:
        zooadapt.plan_for("resnet18", state)
    assert sorted(rule_lines(str(err.value))) == sorted([a, b])


def test_plain_keys_beside_a_prefixed_copy_are_a_tie():
    base = model_shapes("resnet18")
    state = {**base, **{"target_network." + k: s for k, s in base.items()}}
    with pytest.raises(AmbiguousCheckpointError) as err:
        zooadapt.plan_for("resnet18", state)
    message = str(err.value)
    assert "the keys as they are" in message and "target_network." in message
    assert 'drop:(?:target_network[.]).*' in message
    plan = zooadapt.plan_for("resnet18", state, rules=["drop:(?:target_network[.]).*"])
    assert plan.fits and not plan.unexpected


@pytest.mark.parametrize("copies", [("student.", "teacher."), ("model.", "model_ema."), ("net.", "ema.")])
def test_a_teacher_or_ema_copy_is_chosen_by_convention_and_named(tmp_path, copies):
    live, ema = copies
    net = torchvision.models.resnet18()
    state = {**{live + k: v for k, v in seeded_state_dict(net, 1).items()},
             **{ema + k: v for k, v in seeded_state_dict(net, 2).items()}}
    path = tmp_path / "ckpt.pth"
    torch.save(state, path)
    model = zooadapt.load("resnet18", weights=path)
    assert torch.equal(model.layer4[1].conv2.weight, state[ema + "layer4.1.conv2.weight"])
    notes = " ".join(model.zooadapt.report.plan.notes)
    assert repr(ema) in notes and repr(live) in notes and "use_ema=False" in notes
    live_model = zooadapt.load("resnet18", weights=path, use_ema=False)
    assert torch.equal(live_model.layer4[1].conv2.weight, state[live + "layer4.1.conv2.weight"])


def test_two_keys_for_one_tensor_are_refused_naming_both(tmp_path):
    """The plain weights and a second copy under 'module.': the later one used to win."""
    net = torchvision.models.resnet18()
    plain, other = seeded_state_dict(net, 1), seeded_state_dict(net, 2)
    state = {**plain, **{"module." + k: v for k, v in other.items()}}
    path = tmp_path / "twice.pth"
    torch.save(state, path)
    with pytest.raises(AmbiguousCheckpointError) as err:
        zooadapt.load("resnet18", weights=path)
    message = str(err.value)
    assert "filled twice" in message and "'conv1.weight'" in message and "'module.conv1.weight'" in message
    with pytest.raises(AmbiguousCheckpointError):  # partial=True does not make a guess acceptable
        zooadapt.load("resnet18", weights=path, partial=True)
    model = zooadapt.load("resnet18", weights=path, rules=[r"drop:module[.].*"])
    assert torch.equal(model.conv1.weight, plain["conv1.weight"])


def test_a_user_rule_that_maps_two_keys_onto_one_is_refused():
    state = model_shapes("resnet18")
    state["a.conv1.weight"] = state["b.conv1.weight"] = state.pop("conv1.weight")
    plan = zooadapt.plan_for("resnet18", state, rules=[r"rename:(?:a|b)[.](.*)=>\1"])
    assert plan.duplicates == [("conv1.weight", "a.conv1.weight", "b.conv1.weight")] and not plan.fits
    with pytest.raises(AmbiguousCheckpointError, match="'b.conv1.weight'"):
        plan.check(partial=True)


def test_a_user_rule_picks_its_copy_over_plain_keys():
    """``rules=["strip:extra."]`` says where the network is: the plain key it shares a tensor
    with is left unused, not refused."""
    state = model_shapes("resnet18")
    state["extra.conv1.weight"] = state["conv1.weight"]
    plan = zooadapt.plan_for("resnet18", state, rules=["strip:extra."])
    assert plan.fits and plan.assignments()["extra.conv1.weight"] == "conv1.weight"
    assert [m.checkpoint_key for m in plan.unexpected] == ["conv1.weight"]


# -- 2. the fine-tuned head comes back ------------------------------------------------------------


@pytest.mark.parametrize("form", ["state_dict", "training_dict", "safetensors"])
def test_a_fine_tuned_head_is_kept_with_its_labels(tmp_path, form):
    source = torchvision.models.resnet18(num_classes=5)
    source.load_state_dict(seeded_state_dict(source, 4))
    source.eval()
    state = source.state_dict()
    path = tmp_path / ("model.safetensors" if form == "safetensors" else "ft.pth")
    if form == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state if form == "state_dict" else {"state_dict": state, "epoch": 9}, path)
    labels = ["daisy", "dandelion", "rose", "sunflower", "tulip"]
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {str(i): n for i, n in enumerate(labels)}}))
    model = zooadapt.load("resnet18", weights=path).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), source(x))
    info = model.zooadapt
    assert info.num_classes == 5 and info.report.plan.kept_head == 5 and info.labels == tuple(labels)
    assert not info.report.plan.new_head and "kept the checkpoint's trained 5-class head" in str(info.report)
    fresh = zooadapt.load("resnet18", weights=path, num_classes=3)
    assert fresh.fc.out_features == 3 and fresh.zooadapt.report.plan.new_head == ["fc.weight", "fc.bias"]
    assert fresh.zooadapt.labels is None  # the names belong to the trained head


@pytest.mark.parametrize("classes", [1000, 5])
def test_the_files_own_head_brings_its_labels_whatever_its_class_count(tmp_path, classes):
    """The neighbours of the kept head: a fine-tune with the built model's own class count (1000:
    nothing to rebuild, the head loads as it is) and a call that repeats the file's count with
    num_classes=. The head is the file's in both, so are the names beside it."""
    source = torchvision.models.resnet18(num_classes=classes)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in seeded_state_dict(source, 6).items()}, str(path))
    labels = [f"kind {i}" for i in range(classes)]
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {str(i): n for i, n in enumerate(labels)}}))
    for kwargs in ({}, {"num_classes": classes}):
        model = zooadapt.load("resnet18", weights=path, **kwargs)
        assert not model.zooadapt.report.plan.new_head and model.zooadapt.labels == tuple(labels), kwargs
    assert zooadapt.load("resnet18", weights=path, num_classes=classes + 1).zooadapt.labels is None


def test_placeholder_labels_and_a_head_of_another_form_are_not_taken(tmp_path):
    source = torchvision.models.resnet18(num_classes=4)
    torch.save(source.state_dict(), tmp_path / "ft.pth")
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {str(i): f"LABEL_{i}" for i in range(4)}}))
    model = zooadapt.load("resnet18", weights=tmp_path / "ft.pth")
    assert model.zooadapt.num_classes == 4 and model.zooadapt.labels is None
    mlp = moco_state("resnet18", meta=True)  # an MLP head: not the architecture's head with another count
    plan = zooadapt.plan_for("resnet18", shapes(mlp), rules=["strip:module.encoder_q."])
    assert plan.kept_head is None and plan.new_head == ["fc.weight", "fc.bias"]


def test_labels_come_from_the_same_hub_repo_and_commit(hub, tmp_path):
    import uuid

    from zooadapt.testing import safetensors_bytes

    repo = f"me/flowers-r18-{uuid.uuid4().hex[:8]}"  # the session's Hub is shared: a repo of its own
    source = torchvision.models.resnet18(num_classes=3)
    hub.add_file(repo, "model.safetensors", safetensors_bytes(seeded_state_dict(source, 5)))
    hub.add_file(repo, "config.json", json.dumps({"id2label": {"0": "iris", "1": "lily", "2": "orchid"}}).encode())
    model = zooadapt.load("resnet18", weights=f"hf://{repo}")
    assert model.zooadapt.num_classes == 3 and model.zooadapt.labels == ("iris", "lily", "orchid")


# -- 5. messages that are true --------------------------------------------------------------------


def test_a_model_without_a_known_head_is_not_told_about_its_head(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    mine = torchvision.models.resnet18(num_classes=5)
    with pytest.raises(IncompatibleCheckpointError) as err:
        zooadapt.load_weights(mine, tmp_path / "r18.pth")
    message = str(err.value)
    assert "outside the head" not in message and "head='fc'" in message
    report = zooadapt.load_weights(mine, tmp_path / "r18.pth", head="fc")
    assert report.plan.fits


def test_a_checkpoint_without_a_stage_names_the_stage_not_identical_prefixes(tmp_path):
    state = {k: v for k, v in model_shapes("resnet50").items() if not k.startswith("layer4")}
    with pytest.raises(IncompatibleCheckpointError) as err:
        zooadapt.plan_for("resnet50", state).check(partial=False)
    message = str(err.value)
    assert "its keys begin" not in message  # the same prefixes on both sides say nothing
    assert "nothing that fits layer4" in message and "skip=('layer4',)" in message


@pytest.mark.parametrize("other", ["resnet50d", "resnet50_gn"])
def test_another_network_gets_no_skip_suggestion(other):
    """Another stem (resnet50d's deep stem) or other layers throughout: skip= would load
    most tensors into the wrong computation."""
    import timm

    state = shapes(timm.create_model(other, pretrained=False, device="meta").state_dict())
    with pytest.raises(IncompatibleCheckpointError) as err:
        zooadapt.plan_for("resnet50", state).check(partial=False)
    assert "skip=" not in str(err.value) and "partial=True loads" not in str(err.value)


def test_a_file_with_parts_the_model_lacks_gets_no_skip_suggestion():
    state = model_shapes("resnet18")
    state["layer2.0.conv1.weight"] = (7, 7)
    state["pool2.proj.weight"] = (64, 64, 1, 1)  # a part this network does not have
    with pytest.raises(IncompatibleCheckpointError) as err:
        zooadapt.plan_for("resnet18", state).check(partial=False)
    assert "skip=" not in str(err.value)


def test_a_truncated_features_model_reports_the_blocks_it_does_not_hold_as_beyond_the_cut(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    model = zooadapt.load("resnet18", weights=tmp_path / "r18.pth", features_only=["layer1"])
    plan, text = model.zooadapt.report.plan, str(model.zooadapt.report)
    assert not plan.skipped_model_keys and "skipped, left as built" not in text
    assert "beyond the features_only cut" in text and plan.skipped_share == 0.0


def test_inspect_does_not_tell_the_user_to_run_inspect(capsys, tmp_path):
    state = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("layer4")}
    torch.save(state, tmp_path / "cut.pth")
    code = main(["inspect", str(tmp_path / "cut.pth"), "--model", "resnet18", "--brief"])
    out = capsys.readouterr().out
    assert code == 0 and "To fix:" in out and "zooadapt inspect" not in out


@pytest.mark.parametrize("arch", ["vit_base_patch16_gap_224", pytest.param("vit_small_patch16_224",
                                                                            marks=pytest.mark.slow)])
def test_a_whole_network_is_not_read_as_its_blocks_alone(arch):
    """A file of a whole ViT under ``encoder.`` whose position embedding has another length:
    its blocks alone fill the model's ``blocks`` (over 90% of the file), but the file also holds
    the model's other parts (``encoder.pos_embed``, ``encoder.patch_embed``), so it is not a
    checkpoint of the ``blocks`` sub-module, and the model's other parts are not left as built
    without a word: the plan does not fit, naming the mismatch (the qwen3_vit_88m file into
    vit_base_patch16_gap_224, found by the identify sweep)."""
    import timm

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in timm.create_model(arch).state_dict().items()}
    state = {f"encoder.{k}": s for k, s in shapes.items() if not k.startswith("head.")}
    pos = state["encoder.pos_embed"]
    state["encoder.pos_embed"] = (pos[0], pos[1] * 4, pos[2])
    plan = zooadapt.plan_for(arch, state)
    assert not plan.fits
    assert [(m.checkpoint_key, m.model_key) for m in plan.mismatched] == [("encoder.pos_embed", "pos_embed")]

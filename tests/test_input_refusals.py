"""Input outside an argument's forms is refused with a typed error that names what to pass.

``features_only=`` of a type it does not take, ``format_param_groups`` given something other than
groups, a ``num_classes`` no head could hold, suggestions listed once each, and the command line's
own parse errors as one ``zooadapt: error: …`` line with exit status 2.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zooadapt
from zooadapt.cli import main
from zooadapt.contract.errors import suggest
from zooadapt.errors import InvalidArgumentError
from zooadapt.loading.features import resolve_out_stages
from zooadapt.loading.request import MAX_NUM_CLASSES, make_request
from zooadapt.testing import safetensors_bytes, torchvision_state_dict


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet18.safetensors"
    path.write_bytes(safetensors_bytes(torchvision_state_dict("resnet18", seed=18)))
    return path


@pytest.fixture(scope="module")
def resnet18() -> torch.nn.Module:
    return zooadapt.load("resnet18", pretrained=False, num_classes=3, freeze="layer1-3")


# -- features_only= -------------------------------------------------------------------------


@pytest.mark.parametrize("bad, kind", [
    (1.5, "float"), (object(), "object"), (torch.tensor(1), "Tensor"), (b"layer1", "bytes"),
    ({"layer1", "layer2"}, "set"), (bytearray(b"\x01"), "bytearray"),
])
def test_features_only_of_another_type_names_the_accepted_forms(resnet18_file, bad, kind):
    with pytest.raises(InvalidArgumentError) as info:
        zooadapt.load("resnet18", weights=resnet18_file, features_only=bad)
    message = str(info.value)
    assert message.startswith("features_only=") and f"{kind} is not accepted" in message
    assert "stage name" in message and "stage index" in message and "list or tuple" in message


@pytest.mark.parametrize("bad", [[1.5], ["layer1", None], (True,)])
def test_features_only_items_must_be_names_or_indices(bad):
    with pytest.raises(InvalidArgumentError, match="neither a stage name nor an index"):
        zooadapt.load("resnet18", pretrained=False, features_only=bad)


def test_features_only_forms_still_load(resnet18_file):
    for good, stages in [("layer2", ("layer2",)), (2, ("layer2",)), (["layer1", 4], ("layer1", "layer4")),
                         (("layer3",), ("layer3",))]:
        model = zooadapt.load("resnet18", weights=resnet18_file, features_only=good)
        assert model.zooadapt.out_stages == stages


@pytest.mark.parametrize("bad", [1.5, object(), b"layer1", torch.tensor(1)])
def test_resolve_out_stages_refuses_other_types_itself(resnet18, bad):
    with pytest.raises(InvalidArgumentError, match="is not accepted; give stage names or indices"):
        resolve_out_stages(resnet18.zooadapt.stages, bad)


# -- format_param_groups --------------------------------------------------------------------


def test_a_group_without_lr_shows_the_optimizers_default_as_a_dash(resnet18):
    groups = [{"params": list(resnet18.fc.parameters()), "name": "head"}]
    rows = zooadapt.format_param_groups(groups).rows
    assert rows[1] == ("head", "2", "1,539", "-", "-")
    torch.optim.SGD(groups, lr=0.1)  # torch takes it: its default fills the lr in (into these very dicts)
    assert zooadapt.format_param_groups(groups).rows[1] == ("head", "2", "1,539", "0.1", "0")


def test_a_single_tensor_and_named_params_are_counted_as_torch_takes_them(resnet18):
    weight, bias = resnet18.fc.weight, resnet18.fc.bias
    rows = zooadapt.format_param_groups([{"params": weight, "lr": 0.1},
                                         {"params": [("bias", bias)], "lr": torch.tensor(0.01)}]).rows
    assert rows[1][1:4] == ("1", "1,536", "0.1") and rows[2][1:4] == ("1", "3", "0.01")


@pytest.mark.parametrize("bad, words", [
    (None, "format_param_groups(NoneType)"),
    ("head", "format_param_groups(str)"),
    (3, "format_param_groups(int)"),
    ({"params": [], "lr": 0.1}, "format_param_groups(a single group)"),
    ([{"lr": 0.1}], "group 0 is a dict without 'params'"),
    ([None], "group 0 is NoneType, not a dict"),
    ([{"params": 3}], "group 0's params is int"),
    ([{"params": [1.0]}], "group 0's params holds float"),
])
def test_format_param_groups_refuses_what_is_not_groups(bad, words):
    with pytest.raises(InvalidArgumentError) as info:
        zooadapt.format_param_groups(bad)
    message = str(info.value)
    assert words in message
    assert "optimizer.param_groups" in message or "give a list of tensors" in message


def test_format_param_groups_given_the_model_says_to_pass_groups(resnet18):
    with pytest.raises(InvalidArgumentError, match=r"format_param_groups\(ResNet\): pass the groups"):
        zooadapt.format_param_groups(resnet18)
    optimizer = torch.optim.SGD(resnet18.fc.parameters(), lr=0.1)
    with pytest.raises(InvalidArgumentError, match="pass optimizer.param_groups"):
        zooadapt.format_param_groups(optimizer)
    groups = zooadapt.param_groups(resnet18, lr=1e-3)
    with pytest.raises(InvalidArgumentError, match="model=str: .* the torch.nn.Module the groups came from"):
        zooadapt.format_param_groups(groups, "resnet18")


@pytest.mark.parametrize("key, value", [("lr", None), ("lr", "1e-3"), ("weight_decay", [0.1]), ("lr", True)])
def test_a_rate_that_is_no_number_is_refused(resnet18, key, value):
    group = {"params": list(resnet18.fc.parameters()), "lr": 0.1, "name": "head", key: value}
    with pytest.raises(InvalidArgumentError) as info:
        zooadapt.format_param_groups([group])
    message = str(info.value)
    assert f"group 0 (head) has {key}={value!r}" in message and "give a number" in message
    assert "optimizer's default" in message


# -- num_classes ----------------------------------------------------------------------------


@pytest.mark.parametrize("huge, shown", [(10**12, "1,000,000,000,000"), (2**63, "9,223,372,036,854,775,808"),
                                         (MAX_NUM_CLASSES + 1, "100,000,001")])
def test_a_num_classes_no_head_could_hold_is_refused_not_blamed_on_the_plugin(resnet18_file, huge, shown):
    with pytest.raises(InvalidArgumentError) as info:
        zooadapt.load("resnet18", weights=resnet18_file, num_classes=huge)
    message = str(info.value)
    assert f"num_classes={shown}" in message and f"more than {MAX_NUM_CLASSES:,} classes" in message
    assert "plugin" not in message


def test_the_largest_num_classes_passes_the_check():
    assert make_request(name="resnet18", num_classes=MAX_NUM_CLASSES).num_classes == MAX_NUM_CLASSES


def test_cli_inspect_with_a_huge_num_classes_is_one_line(capsys, resnet18_file):
    code = main(["inspect", str(resnet18_file), "--model", "resnet18", "--num-classes", "99999999999999999999"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("zooadapt: error: num_classes=99,999,999,999,999,999,999: more than 100,000,000")
    assert "plugin" not in err


# -- suggestions ----------------------------------------------------------------------------


def test_suggestions_name_each_candidate_once():
    assert suggest("layer9", ["layer4", "layer4", "layer3", "layer3", "layer2"]) == \
        " Did you mean: layer4, layer3, layer2?"


def test_skip_of_a_missing_stage_suggests_each_stage_once(resnet18_file):
    with pytest.raises(InvalidArgumentError) as info:
        zooadapt.load("resnet18", weights=resnet18_file, skip="layer9")
    hint = str(info.value).split("Did you mean: ", 1)[1].split("?", 1)[0].split(", ")
    assert hint[:2] == ["layer4", "layer3"] and len(hint) == len(set(hint))


# -- the command line's own parse errors ------------------------------------------------------


@pytest.mark.parametrize("argv, words, hint", [
    (["info"], "the following arguments are required: name", "zooadapt info --help"),
    (["list", "--exclude"], "argument --exclude: expected one argument", "zooadapt list --help"),
    (["inspect", "x.pth", "--model", "resnet18", "--num-classes", "abc"],
     "argument --num-classes: invalid int value: 'abc'", "zooadapt inspect --help"),
    (["nosuchcommand"], "invalid choice: 'nosuchcommand'", "zooadapt --help"),
    ([], "the following arguments are required: COMMAND", "zooadapt --help"),
    (["info", "resnet18", "--bogus"], "unrecognized arguments: --bogus", "zooadapt info --help"),
    (["lock", "--check", "--nope"], "unrecognized arguments: --nope", "zooadapt lock --help"),
    (["inspect", "x.pth", "--keys", "--brief"], "not allowed with argument", "zooadapt inspect --help"),
])
def test_a_bad_command_line_is_one_error_line_and_exit_2(capsys, argv, words, hint):
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    assert info.value.code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("zooadapt: error: ")
    assert words in err and err.rstrip().endswith(f"(see {hint})")
    assert "usage:" not in err


def test_a_bad_command_line_in_a_process_is_one_line_and_exit_2():
    result = subprocess.run([sys.executable, "-m", "zooadapt", "info"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == ("zooadapt: error: the following arguments are required: name "
                             "(see zooadapt info --help)\n")


@pytest.mark.parametrize("argv", [["--help"], ["info", "--help"], ["inspect", "-h"]])
def test_help_still_prints_the_usage(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    assert info.value.code == 0 and err == "" and out.startswith("usage: zooadapt")


# -- arguments that would change nothing are refused, not ignored ----------------------------


def test_weights_with_pretrained_false_or_a_revision_are_refused(resnet18_file):
    with pytest.raises(InvalidArgumentError, match="pretrained=False builds the model with random weights"):
        zooadapt.load("resnet18", weights=resnet18_file, num_classes=3, pretrained=False)
    with pytest.raises(InvalidArgumentError, match="revision='v9' picks a commit of a Hub repository"):
        zooadapt.load("resnet18", weights=resnet18_file, num_classes=3, revision="v9")


@pytest.mark.parametrize("directory", ["", "   "])
def test_save_into_an_empty_name_is_refused_and_writes_nothing(tmp_path, monkeypatch, resnet18, directory):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidArgumentError, match="names no folder"):
        zooadapt.save(resnet18, directory)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, resnet18: torch.nn.Module) -> Path:
    return zooadapt.save(resnet18, tmp_path_factory.mktemp("saved") / "ft")


@pytest.mark.parametrize("option", [{"rules": ["strip:model."]}, {"use_ema": False}, {"skip": "layer4"}])
def test_a_saved_model_refuses_options_that_read_other_checkpoints(saved, option):
    name = next(iter(option))
    with pytest.raises(InvalidArgumentError, match=f"saved model, rebuilt whole.*drop {name}="):
        zooadapt.load(saved, **option)


def test_bn_train_on_a_saved_model_lets_its_frozen_stages_statistics_update(saved):
    kept = zooadapt.load(saved).train()
    training = zooadapt.load(saved, bn="train").train()
    assert kept.zooadapt.frozen == training.zooadapt.frozen == ("layer1", "layer2", "layer3")
    assert not kept.layer1[0].bn1.training and training.layer1[0].bn1.training
    assert not any(p.requires_grad for p in training.layer1.parameters())


@pytest.mark.parametrize("device", ["cpu:1", torch.device("cpu", 3)])
def test_a_cpu_device_index_is_refused_as_such_not_as_a_corrupt_file(resnet18_file, tmp_path, device):
    pth = tmp_path / "full.pth"
    torch.save(torch.nn.Module.state_dict(zooadapt.load("resnet18", weights=resnet18_file)), pth)
    for weights in (resnet18_file, pth):
        with pytest.raises(InvalidArgumentError, match="one CPU device, with no index; pass 'cpu'"):
            zooadapt.load("resnet18", weights=weights, device=device)


@pytest.mark.parametrize("option", [{"skip": "layer9"}, {"skip": "layer4"}, {"rules": ["strip:model."]}])
def test_options_that_read_a_checkpoint_are_refused_without_one(option):
    with pytest.raises(InvalidArgumentError, match="pretrained=False reads none"):
        zooadapt.load("resnet18", pretrained=False, **option)


@pytest.mark.parametrize("typed, meant", [
    ("efficientnet-b0", "efficientnet_b0"), ("convnext-tiny", "convnext_tiny"), ("ResNet-18", "resnet18"),
    ("Vit_Small_Patch16_224", "vit_small_patch16_224")])
def test_a_name_spelled_another_way_is_suggested_first(typed, meant):
    """Registry names and the architectures plugins list (timm's), case and separators aside."""
    with pytest.raises(zooadapt.errors.UnknownModelError, match=f"Did you mean: {meant}[,?]"):
        zooadapt.load(typed, pretrained=False)


def test_suggestions_are_unchanged_for_other_vocabularies():
    assert suggest("layer9", ["layer4", "layer4", "layer3"]) == " Did you mean: layer4, layer3?"
    assert suggest("Stem", ["stem", "layer1"]).startswith(" Did you mean: stem")

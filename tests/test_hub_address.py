"""hf:// addresses: huggingface_hub's grammar hf://org/repo[@revision][/file], the old form with a note."""

from __future__ import annotations

import warnings

import pytest
import torch

import zooadapt
from zooadapt.contract.errors import WeightsNotFoundError
from zooadapt.contract.family import WeightSource
from zooadapt.contract.hub_address import HubAddress, format_hub_address, parse_hub_address
from zooadapt.loading.saving import is_saved_directory
from zooadapt.plugin_api import get_registry
from zooadapt.weights.sources import parse_source


@pytest.mark.parametrize("text, expected", [
    ("hf://timm/resnet34.tv_in1k@main/model.safetensors",
     HubAddress("timm/resnet34.tv_in1k", "main", "model.safetensors")),
    ("hf://timm/resnet34.tv_in1k/model.safetensors", HubAddress("timm/resnet34.tv_in1k", None, "model.safetensors")),
    ("hf://org/repo", HubAddress("org/repo")),
    ("hf://org/repo@v1.0", HubAddress("org/repo", "v1.0")),
    ("hf://org/repo@refs/pr/3/sub/w.pth", HubAddress("org/repo", "refs/pr/3", "sub/w.pth")),
    ("hf://org/repo@feature%2Fx/w.bin", HubAddress("org/repo", "feature/x", "w.bin")),
    ("hf://models/org/repo@v2/w.bin", HubAddress("org/repo", "v2", "w.bin")),
    ("hf://org/repo@main/ckpt@epoch3.pth", HubAddress("org/repo", "main", "ckpt@epoch3.pth")),
])
def test_standard_form_reads_as_huggingface_hub_reads_it(text, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation note for the standard form
        assert parse_hub_address(text) == expected


@pytest.mark.parametrize("address", [
    HubAddress("timm/resnet34.tv_in1k", "main", "model.safetensors"), HubAddress("org/repo"),
    HubAddress("org/repo", "refs/pr/3", "a/b.pth"), HubAddress("org/repo", "feature/x", "w.bin"),
    HubAddress("org/repo", "0" * 40, "w.pth"),
])
def test_printed_form_reads_back_the_same(address):
    text = str(address)
    assert text == format_hub_address(address.repo_id, address.revision, address.path)
    assert parse_hub_address(text) == address


def test_weight_sources_print_the_standard_form():
    source = parse_source("hf://timm/resnet34.tv_in1k@main/model.safetensors")
    assert source == WeightSource(repo_id="timm/resnet34.tv_in1k", filename="model.safetensors", revision="main")
    assert source.describe() == "hf://timm/resnet34.tv_in1k@main/model.safetensors"
    assert parse_source("hf://org/repo") == WeightSource(repo_id="org/repo")  # model.safetensors on main
    registry = get_registry()
    assert registry.models["resnet34"].source.describe() == "hf://timm/resnet34.tv_in1k@main/model.safetensors"


@pytest.mark.parametrize("old, standard, file, revision", [
    ("hf://org/repo/w.pth@v1", "hf://org/repo@v1/w.pth", "w.pth", "v1"),
    ("hf://timm/resnet34.tv_in1k/model.safetensors@main", "hf://timm/resnet34.tv_in1k@main/model.safetensors",
     "model.safetensors", "main"),
    ("hf://org/repo/sub/dir/w.bin@refs/pr/7", "hf://org/repo@refs/pr/7/sub/dir/w.bin", "sub/dir/w.bin",
     "refs/pr/7"),
])
def test_old_form_still_reads_with_a_note(old, standard, file, revision):
    with pytest.warns(FutureWarning) as caught:
        source = parse_source(old)
    assert (source.filename, source.revision) == (file, revision)
    note = str(caught[0].message)
    assert standard in note and "old spelling" in note
    assert source.describe() == standard


def test_an_at_sign_that_cannot_start_a_revision_stays_in_the_file_name():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_hub_address("hf://org/repo/dir@x/w.pth") == HubAddress("org/repo", None, "dir@x/w.pth")


@pytest.mark.parametrize("text, words", [
    ("hf://datasets/org/data@main/train.csv", ["dataset repository", "model repositories"]),
    ("hf://spaces/org/app/app.py", ["space repository"]),
    ("hf://buckets/org/bucket/w.pth", ["bucket"]),
    ("hf://just-a-name", ["not a Hub address", "hf://org/repo"]),
    ("hf://org/repo@", ["not a Hub address"]),
    ("hf://", ["not a Hub address"]),
])
def test_other_repository_kinds_and_malformed_addresses_are_refused(text, words):
    with pytest.raises(WeightsNotFoundError) as info:
        parse_source(text)
    for word in words:
        assert word in str(info.value)
    with pytest.raises(WeightsNotFoundError):
        zooadapt.load("resnet18", weights=text)


def test_saved_model_addresses_name_a_whole_repository():
    assert is_saved_directory("hf://me/flowers")
    assert is_saved_directory("hf://me/flowers@v2")
    assert not is_saved_directory("hf://me/flowers@v2/model.safetensors")
    assert not is_saved_directory("hf://me/flowers/model.safetensors")


def test_standard_and_old_forms_load_the_same_weights(resnet18_weights):
    standard = zooadapt.load("resnet18", weights="hf://timm/resnet18.tv_in1k@main/model.safetensors")
    assert standard.zooadapt.report.source == "hf://timm/resnet18.tv_in1k@main/model.safetensors"
    with pytest.warns(FutureWarning, match="hf://timm/resnet18.tv_in1k@main/model.safetensors"):
        old = zooadapt.load("resnet18", weights="hf://timm/resnet18.tv_in1k/model.safetensors@main")
    assert old.zooadapt.report.source == standard.zooadapt.report.source
    assert torch.equal(old.layer1[0].conv1.weight, resnet18_weights["layer1.0.conv1.weight"])


def test_cli_reads_both_forms_and_prints_the_note_on_one_line(capsys, resnet18_weights):
    from zooadapt.cli import main

    assert main(["fetch", "--quiet", "hf://timm/resnet18.tv_in1k@main/model.safetensors"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("hf://timm/resnet18.tv_in1k@main/model.safetensors: "
                          "hf://timm/resnet18.tv_in1k@main/model.safetensors\n") and err == ""
    assert main(["inspect", "--brief", "hf://timm/resnet18.tv_in1k/model.safetensors@main"]) == 0
    out, err = capsys.readouterr()
    assert "checkpoint: hf://timm/resnet18.tv_in1k@main/model.safetensors" in out
    assert err.startswith("zooadapt: note: ") and err.count("\n") == 1
    assert main(["inspect", "hf://datasets/timm/imagenet"]) == 2
    assert capsys.readouterr().err.startswith("zooadapt: error: 'hf://datasets/timm/imagenet' names a dataset")

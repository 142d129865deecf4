"""Hostile writes: every file zooadapt writes appears whole or not at all, through no planted link.

``save``, ``lock`` and the digest memo write to unique temporary files created exclusively,
rename them into place, and clean up on any failure, a full disk included. Bad arguments to
the writing functions are refused with a ``ZooadaptError`` that names the fix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import zooadapt
import zooadapt.weights.atomic
from zooadapt.contract.errors import FileWriteError, ZooadaptError
from zooadapt.errors import InvalidArgumentError
from zooadapt.loading.saving import CONFIG_NAME, WEIGHTS_NAME, is_saved_directory
from zooadapt.plugin_api import WeightSource
from zooadapt.testing import safetensors_bytes
from zooadapt.weights.sources import fetch, parse_source


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "outside" / "precious"
    path.parent.mkdir()
    path.write_bytes(b"the user's own bytes")
    return path


@pytest.fixture
def model(resnet18_weights):
    return zooadapt.load("resnet18", num_classes=3)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _full_disk(*args, **kwargs):
    raise OSError(28, "No space left on device")


# -- save ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_save_never_writes_through_a_link_at_the_old_fixed_temporary_name(tmp_path, model, victim):
    out = tmp_path / "saved"
    out.mkdir()
    (out / f".{CONFIG_NAME}.tmp").symlink_to(victim)
    zooadapt.save(model, out)
    assert victim.read_bytes() == b"the user's own bytes"
    assert is_saved_directory(out)


@pytest.mark.slow
@pytest.mark.parametrize("name", [WEIGHTS_NAME, CONFIG_NAME])
def test_save_replaces_a_planted_link_instead_of_writing_through_it(tmp_path, model, victim, name):
    out = tmp_path / "saved"
    out.mkdir()
    (out / name).symlink_to(victim)
    zooadapt.save(model, out)
    assert victim.read_bytes() == b"the user's own bytes"
    assert not (out / name).is_symlink() and (out / name).is_file()
    assert torch.equal(zooadapt.load(out).fc.weight, model.fc.weight)


def test_save_on_a_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path, model, monkeypatch):
    import safetensors.torch

    def half_then_full(state, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 1000)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", half_then_full)
    out = tmp_path / "saved"
    with pytest.raises(FileWriteError, match="No space left"):
        zooadapt.save(model, out)
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_a_failed_save_keeps_the_previous_save_loadable(tmp_path, model, monkeypatch):
    import safetensors.torch

    out = zooadapt.save(model, tmp_path / "saved")
    saved = model.fc.weight.detach().clone()
    monkeypatch.setattr(safetensors.torch, "save_file", _full_disk)
    with torch.no_grad():
        model.fc.weight.add_(1)
    with pytest.raises(FileWriteError):
        zooadapt.save(model, out)
    assert _leftovers(out) == []
    assert torch.equal(zooadapt.load(out).fc.weight, saved)


@pytest.mark.slow
def test_a_save_that_fails_between_its_two_files_is_never_loadable_as_whole(tmp_path, model, monkeypatch):
    out = zooadapt.save(model, tmp_path / "saved")
    first_weights = (out / WEIGHTS_NAME).read_bytes()
    wider = zooadapt.load("resnet18", num_classes=7)
    monkeypatch.setattr(zooadapt.weights.atomic, "atomic_write", _full_disk)  # the config write fails
    with pytest.raises(FileWriteError):
        zooadapt.save(wider, out)
    assert (out / WEIGHTS_NAME).read_bytes() != first_weights  # the new weights landed…
    assert not is_saved_directory(out)  # …but without a config the folder is not a saved model
    with pytest.raises(ZooadaptError):
        zooadapt.load(out)
    assert _leftovers(out) == []


def test_save_into_a_path_that_is_a_file_is_a_clear_error(tmp_path, model):
    target = tmp_path / "a-file"
    target.write_text("x")
    with pytest.raises(FileWriteError):
        zooadapt.save(model, target)
    assert target.read_text() == "x"


@pytest.mark.slow
@pytest.mark.parametrize("directory", [None, 123, ["a"]])
def test_save_refuses_a_directory_of_the_wrong_type(model, directory):
    with pytest.raises(InvalidArgumentError, match="directory="):
        zooadapt.save(model, directory)


@pytest.mark.slow
def test_saved_files_get_ordinary_permissions(tmp_path, model):
    out = zooadapt.save(model, tmp_path / "saved")
    mask = os.umask(0o022)
    os.umask(mask)
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~mask


# -- lock ------------------------------------------------------------------------------------


@pytest.fixture
def project(registry_model, resnet18_weights):
    return registry_model("lr18", safetensors_bytes(resnet18_weights)).work


@pytest.mark.slow
def test_lock_on_a_full_disk_keeps_the_old_lock_file_and_leaves_nothing(project, monkeypatch):
    zooadapt.lock(["lr18"])
    before = (project / "zooadapt.lock").read_text()
    monkeypatch.setattr(json, "dump", _full_disk)
    with pytest.raises(FileWriteError, match="unchanged"):
        zooadapt.lock(["lr18"])
    assert (project / "zooadapt.lock").read_text() == before
    assert _leftovers(project) == []


def test_lock_replaces_a_planted_link_instead_of_writing_through_it(project, victim):
    (project / "zooadapt.lock").symlink_to(victim)
    with pytest.raises(ZooadaptError):  # the planted "lock file" is not JSON: refused, not overwritten
        zooadapt.lock(["lr18"])
    assert victim.read_bytes() == b"the user's own bytes"


@pytest.mark.slow
def test_lock_of_a_single_name_string_locks_that_model(project):
    lockfile = zooadapt.lock("lr18")
    assert set(lockfile.models) == {"lr18"}


@pytest.mark.parametrize("names", [123, [None], [""], [b"lr18"]])
def test_lock_refuses_names_of_the_wrong_type(project, names):
    with pytest.raises(InvalidArgumentError, match="names="):
        zooadapt.lock(names)


def test_lock_into_a_directory_is_refused(project):
    with pytest.raises(InvalidArgumentError, match="is a directory"):
        zooadapt.lock(["lr18"], project)


@pytest.mark.slow
@pytest.mark.parametrize("lock", [3, 1.0, ["zooadapt.lock"]])
def test_load_refuses_a_lock_argument_of_the_wrong_type(project, lock):
    with pytest.raises(InvalidArgumentError, match="lock="):
        zooadapt.load("lr18", lock=lock)


# -- weights= --------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [123, 1.5, b"/tmp/x.pth", ["a.pth"], "", "   ", "a\x00b"])
def test_weights_of_the_wrong_type_or_empty_are_refused(weights):
    with pytest.raises(InvalidArgumentError, match="weights="):
        parse_source(weights)


@pytest.mark.parametrize("weights", [123, b"/tmp/x.pth"])
def test_load_with_weights_of_the_wrong_type_is_refused(resnet18_weights, weights):
    with pytest.raises(InvalidArgumentError, match="weights="):
        zooadapt.load("resnet18", weights=weights)


def test_fetch_refuses_something_that_is_not_a_weight_source():
    with pytest.raises(InvalidArgumentError, match="WeightSource"):
        fetch("resnet18")


def test_fetch_refuses_a_revision_that_is_not_a_string(hub, resnet18_weights):
    with pytest.raises(InvalidArgumentError, match="revision="):
        fetch(WeightSource(repo_id="timm/resnet18.tv_in1k"), revision=3)


@pytest.mark.parametrize("fields", [{"url": 1}, {"path": 1}, {"repo_id": 1}, {"repo_id": "a/b", "revision": 3},
                                    {"repo_id": ["a", "b"]}], ids=lambda f: next(iter(f)))
def test_fetch_refuses_a_weight_source_holding_non_strings(fields):
    with pytest.raises(InvalidArgumentError, match="WeightSource"):
        fetch(WeightSource(**fields))


def test_fetch_refuses_a_cache_dir_of_the_wrong_type(hub, resnet18_weights):
    with pytest.raises(InvalidArgumentError, match="cache_dir="):
        fetch(WeightSource(repo_id="timm/resnet18.tv_in1k"), cache_dir=1)

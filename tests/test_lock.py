"""Lock files: pin commit + sha256 + size, verify on every later load, fail clearly on a mismatch."""

from __future__ import annotations

import hashlib
import json
import os
import time
import types

import pytest
import torch

import zooadapt
import zooadapt.weights.digests as digests
import zooadapt.weights.lockfile
from zooadapt.cli import main
from zooadapt.contract.errors import InvalidArgumentError, LockFileError, LockMismatchError
from zooadapt.host.plugin_manager import reset_plugins
from zooadapt.plugin_api import get_registry
from zooadapt.testing import safetensors_bytes, torchvision_state_dict


@pytest.fixture(scope="module")
def payloads():
    """Two versions of ResNet-18 weights (the second is what a later push to main would bring)."""
    old = torchvision_state_dict("resnet18", seed=51)
    new = {k: v + 1 if v.is_floating_point() else v for k, v in old.items()}
    return types.SimpleNamespace(old=old, old_bytes=safetensors_bytes(old), new=new, new_bytes=safetensors_bytes(new))


@pytest.fixture
def locky(registry_model, payloads):
    """A registry model ``locky`` on a Hub repo of its own, with the test in an empty directory."""
    return registry_model("locky", payloads.old_bytes)


def _requests(hub, repo: str) -> int:
    return sum(n for (_, r, _), n in hub.requests.items() if r == repo)


@pytest.mark.slow
def test_lock_records_commit_sha256_and_size(locky, payloads):
    lockfile = zooadapt.weights.lockfile.lock_models(["locky"], "zooadapt.lock")
    data = json.loads((locky.work / "zooadapt.lock").read_text())
    entry = data["models"]["locky"]
    assert data["version"] == 1 and lockfile.models["locky"].commit == locky.commit
    assert entry == {
        "source": f"hf://{locky.repo}@main/model.safetensors", "repo_id": locky.repo,
        "filename": "model.safetensors", "revision": "main", "commit": locky.commit,
        "sha256": hashlib.sha256(payloads.old_bytes).hexdigest(), "size": len(payloads.old_bytes),
    }


def test_zooadapt_lock_writes_a_custom_path(locky):
    lockfile = zooadapt.lock(["locky"], locky.work / "custom.lock")
    assert set(lockfile.models) == {"locky"} and (locky.work / "custom.lock").is_file()


@pytest.mark.slow
def test_locked_load_gets_the_locked_commit_after_the_branch_moves(hub, locky, payloads):
    zooadapt.lock(["locky"])
    moved = hub.add_file(locky.repo, "model.safetensors", payloads.new_bytes)
    model = zooadapt.load("locky")  # ./zooadapt.lock is found and applies
    assert torch.equal(model.conv1.weight, payloads.old["conv1.weight"])
    assert model.zooadapt.report.commit == locky.commit != moved
    unlocked = zooadapt.load("locky", lock=False)
    assert torch.equal(unlocked.conv1.weight, payloads.new["conv1.weight"])
    assert unlocked.zooadapt.report.commit == moved


@pytest.mark.slow
def test_warm_locked_load_makes_no_request_and_does_not_rehash(hub, locky, monkeypatch):
    zooadapt.lock(["locky"])
    zooadapt.load("locky")
    hashed = []
    real = digests.sha256_of
    monkeypatch.setattr(digests, "sha256_of", lambda path, *a: hashed.append(path) or real(path, *a))
    requests = _requests(hub, locky.repo)
    digests._memo._mem.clear()  # as in a new process: only the on-disk record remains
    zooadapt.load("locky")
    assert _requests(hub, locky.repo) == requests  # a locked commit in the cache needs no network
    assert hashed == []
    # a file rewritten in place (new mtime) is hashed again
    blob = zooadapt.fetch(get_registry().entry("locky").source).path.resolve()
    os.utime(blob, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    zooadapt.load("locky")
    assert hashed == [str(blob)]


def _edit_lock(path, **changes) -> None:
    data = json.loads(path.read_text())
    data["models"]["locky"].update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.slow
def test_sha256_mismatch_is_refused_evicted_and_explained(locky, hub_cache):
    zooadapt.lock(["locky"])
    zooadapt.load("locky")
    _edit_lock(locky.work / "zooadapt.lock", sha256="f" * 64)
    with pytest.raises(LockMismatchError) as info:
        zooadapt.load("locky")
    message = str(info.value)
    assert "'locky'" in message and "zooadapt.lock pins sha256 ffffffffffffffff" in message
    assert "removed" in message and "zooadapt lock locky" in message
    assert not list(hub_cache.rglob("blobs/*"))  # not kept as if it were good


def test_size_mismatch_is_refused(locky):
    zooadapt.lock(["locky"])
    _edit_lock(locky.work / "zooadapt.lock", size=123)
    with pytest.raises(LockMismatchError, match="pins size 123 B"):
        zooadapt.load("locky")


def test_registry_pointing_elsewhere_than_the_lock_is_refused(locky):
    zooadapt.lock(["locky"])
    locky.registry.write_text(locky.registry.read_text() + 'file = "other.safetensors"\n')
    reset_plugins()
    with pytest.raises(LockMismatchError, match="registry now points at"):
        zooadapt.load("locky")


@pytest.mark.slow
def test_revision_other_than_the_locked_one_is_refused(locky):
    zooadapt.lock(["locky"])
    with pytest.raises(LockMismatchError, match="revision 'v2' was requested"):
        zooadapt.load("locky", revision="v2")
    assert zooadapt.load("locky", revision=locky.commit).zooadapt.report.commit == locky.commit


@pytest.mark.slow
def test_which_lock_file_applies(hub, locky, payloads, monkeypatch, tmp_path):
    zooadapt.lock(["locky"], tmp_path / "elsewhere.lock")
    hub.add_file(locky.repo, "model.safetensors", payloads.new_bytes)
    assert not torch.equal(zooadapt.load("locky").conv1.weight, payloads.old["conv1.weight"])  # no lock here
    monkeypatch.setenv("ZOOADAPT_LOCK", str(tmp_path / "elsewhere.lock"))
    assert torch.equal(zooadapt.load("locky").conv1.weight, payloads.old["conv1.weight"])
    monkeypatch.setenv("ZOOADAPT_LOCK", "off")
    assert not torch.equal(zooadapt.load("locky").conv1.weight, payloads.old["conv1.weight"])
    monkeypatch.delenv("ZOOADAPT_LOCK")
    assert torch.equal(zooadapt.load("locky", lock=tmp_path / "elsewhere.lock").conv1.weight,
                       payloads.old["conv1.weight"])
    with pytest.raises(LockFileError, match="does not exist"):
        zooadapt.load("locky", lock=tmp_path / "missing.lock")


@pytest.mark.slow
def test_lock_keeps_other_entries_and_refreshes_all_without_names(hub, locky, payloads, tmp_path, monkeypatch):
    other = tmp_path / "other.safetensors"
    other.write_bytes(payloads.new_bytes)
    locky.registry.write_text(locky.registry.read_text()
                              + f'[models.local18]\nfamily = "resnet"\narch = "resnet18"\npath = "{other}"\n')
    reset_plugins()
    zooadapt.lock(["locky"])
    zooadapt.lock(["local18"])
    lockfile = zooadapt.weights.lockfile.LockFile.read("zooadapt.lock")
    assert set(lockfile.models) == {"locky", "local18"} and lockfile.models["local18"].commit is None
    moved = hub.add_file(locky.repo, "model.safetensors", payloads.new_bytes)
    refreshed = zooadapt.lock([])
    assert refreshed.models["locky"].commit == moved and set(refreshed.models) == {"locky", "local18"}
    # a locked local file that changes is refused, and never deleted
    other.write_bytes(payloads.old_bytes)
    with pytest.raises(LockMismatchError, match="It was not loaded"):
        zooadapt.load("local18")
    assert other.read_bytes() == payloads.old_bytes


def test_nothing_to_lock_is_an_error(locky):
    with pytest.raises(InvalidArgumentError, match="nothing to lock"):
        zooadapt.lock([])


@pytest.mark.slow
def test_cli_lock_then_check(locky, capsys):
    assert main(["lock", "locky", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"locky: hf://{locky.repo}@main/model.safetensors\n  commit {locky.commit}, sha256" in out
    assert main(["lock", "--check"]) == 0
    assert capsys.readouterr().out.strip() == "locky: ok"
    _edit_lock(locky.work / "zooadapt.lock", sha256="0" * 64)
    assert main(["lock", "--check"]) == 1
    assert "locky: model 'locky'" in capsys.readouterr().out
    assert main(["lock", "--check", "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["models"]
    assert list(problems) == ["locky"] and "pins sha256 0000000000000000" in problems["locky"]

"""Hostile paths: nothing outside the cache (or the folder a user gave) is read, written or deleted.

Revisions, ``hf://`` addresses, lock entries and links planted in a shared cache are the
attacker's levers here; each test pulls one and checks that zooadapt refuses with a typed
error and that a file outside the cache is exactly as it was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import zooadapt
from zooadapt.contract.errors import LockFileError
from zooadapt.errors import (
    CheckpointFormatError,
    IntegrityError,
    InvalidArgumentError,
    WeightsNotFoundError,
    WeightSourceError,
)
from zooadapt.plugin_api import WeightSource
from zooadapt.testing import safetensors_bytes
from zooadapt.weights.fetched import FetchedWeights
from zooadapt.weights.hub_cache import check_revision, discard
from zooadapt.weights.sources import fetch, parse_source

TINY = "test/hostile-paths"


@pytest.fixture(scope="module")
def tiny(hub) -> bytes:
    gen = torch.Generator().manual_seed(11)
    data = safetensors_bytes({"w": torch.randn(8, 8, generator=gen)})
    commit = hub.add_file(TINY, "model.safetensors", data)
    for tag in ("../../../escaped", "../../escaped", "..", "a/../../../../escaped", "/tmp/escaped-abs"):
        hub.add_tag(TINY, tag, commit)  # a permissive endpoint answers any revision it is asked for
    return data


def _everything(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def victim(tmp_path) -> Path:
    """A file outside every cache that an attack would like to overwrite or delete."""
    path = tmp_path / "outside" / "precious.safetensors"
    path.parent.mkdir()
    path.write_bytes(b"the user's own bytes")
    return path


# -- revisions -------------------------------------------------------------------------------

BAD_REVISIONS = ["../../../escaped", "../../escaped", "..", "a/../../../../escaped", "/tmp/escaped-abs",
                 "refs/../../x", "main/", "/main", ".hidden", "v1..2", "a b", "x~1", "x^2", "x:y", "x?", "x*",
                 "x[1", "back\\slash", "nul\x00", "new\nline", "branch.lock", "@", "x@{1}", "trailing.", ""]


@pytest.mark.parametrize("revision", BAD_REVISIONS)
def test_bad_revision_is_refused_before_any_request(hub, tiny, tmp_path, revision):
    cache = tmp_path / "cache"
    before = _everything(tmp_path)
    with pytest.raises(InvalidArgumentError, match="revision"):
        fetch(WeightSource(repo_id=TINY), revision=revision, cache_dir=cache)
    assert _everything(tmp_path) == before  # nothing written anywhere, the cache not even created


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/1", "release-2024_01", "a" * 40, "feature/x.y"])
def test_good_revisions_pass_the_check(revision):
    assert check_revision(revision) == revision


@pytest.mark.parametrize("address", [f"hf://{TINY}@..", f"hf://{TINY}@%2E%2E%2F%2E%2E%2F%2E%2E%2Fescaped",
                                     f"hf://{TINY}@..%2F..%2Fescaped/model.safetensors"])
def test_revision_in_a_hub_address_cannot_escape(hub, tiny, tmp_path, address):
    cache = tmp_path / "cache"
    source = parse_source(address)
    with pytest.raises(InvalidArgumentError, match="not a branch, tag or commit"):
        fetch(source, cache_dir=cache)
    assert not any("escaped" in p for p in _everything(tmp_path))


def test_revision_given_to_load_cannot_escape(hub, tiny, tmp_path, resnet18_weights):
    with pytest.raises(InvalidArgumentError, match="revision"):
        zooadapt.load("resnet18", revision="../../../../escaped", cache_dir=tmp_path / "cache")
    assert not any("escaped" in p for p in _everything(tmp_path))


def test_a_good_tag_still_loads(hub, tiny, tmp_path):
    commit = hub.add_file(TINY, "model.safetensors", tiny)
    hub.add_tag(TINY, "v1.0", commit)
    fetched = fetch(WeightSource(repo_id=TINY), revision="v1.0", cache_dir=tmp_path / "cache")
    assert fetched.path.read_bytes() == tiny and fetched.commit == commit


# -- lock entries ----------------------------------------------------------------------------


@pytest.fixture
def locked(registry_model, resnet18_weights):
    """A registry model ``lr18`` on its own Hub repo, locked in ./zooadapt.lock."""
    model = registry_model("lr18", safetensors_bytes(resnet18_weights))
    zooadapt.lock(["lr18"])
    return model.work / "zooadapt.lock"


def _edit(lock: Path, **changes) -> None:
    data = json.loads(lock.read_text())
    data["models"]["lr18"].update(changes)
    lock.write_text(json.dumps(data))


@pytest.mark.parametrize("changes", [
    {"commit": "../../../../escaped"},
    {"commit": "0" * 39 + "/"},
    {"commit": "A" * 40},
    {"revision": "../../escaped"},
    {"sha256": "../" * 21 + "a"},
    {"sha256": "F" * 64},
    {"size": -1},
    {"size": True},
    {"size": 1.5},
    {"repo_id": ["a", "b"]},
    {"filename": "x\x00y"},
], ids=lambda c: next(iter(c)))
@pytest.mark.slow
def test_tampered_lock_entry_is_refused(locked, tmp_path, changes):
    _edit(locked, **changes)
    before = _everything(tmp_path)
    with pytest.raises(LockFileError, match="lr18"):
        zooadapt.load("lr18")
    assert not any("escaped" in p for p in _everything(tmp_path) - before)


def test_lock_file_nested_too_deep_is_a_lock_file_error(tmp_path):
    path = tmp_path / "deep.lock"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(LockFileError, match="not readable JSON"):
        zooadapt.load("resnet18", lock=path)


# -- links planted in a shared cache -----------------------------------------------------------


def _plant(pointer: Path, target: Path) -> None:
    pointer.unlink()
    pointer.symlink_to(target)


def test_snapshot_link_to_a_file_outside_is_refused_and_its_target_kept(hub, tiny, hub_cache, victim):
    pointer = fetch(WeightSource(repo_id=TINY)).path
    _plant(pointer, victim)
    with pytest.raises(IntegrityError, match="not a blob of this repo"):
        fetch(WeightSource(repo_id=TINY))
    assert victim.read_bytes() == b"the user's own bytes"
    assert fetch(WeightSource(repo_id=TINY)).path.read_bytes() == tiny  # the planted link was removed


@pytest.mark.slow
def test_lock_mismatch_after_a_planted_link_never_deletes_its_target(locked, hub_cache, victim):
    pointer = next(hub_cache.rglob("snapshots/*/model.safetensors"))
    _plant(pointer, victim)
    with pytest.raises(IntegrityError):
        zooadapt.load("lr18")
    assert victim.read_bytes() == b"the user's own bytes"


@pytest.mark.slow
def test_lock_check_with_a_planted_link_reports_and_keeps_the_target(locked, hub_cache, victim):
    pointer = next(hub_cache.rglob("snapshots/*/model.safetensors"))
    _plant(pointer, victim)
    from zooadapt.weights.lockfile import check_lock

    problems = check_lock(locked)
    assert problems["lr18"] and "planted" in problems["lr18"]
    assert victim.exists()


@pytest.mark.slow
def test_snapshot_link_to_another_repos_blob_is_refused(hub, tiny, hub_cache, resnet18_weights):
    other = fetch(WeightSource(repo_id="timm/resnet18.tv_in1k")).path.resolve()
    pointer = fetch(WeightSource(repo_id=TINY)).path
    _plant(pointer, other)
    with pytest.raises(IntegrityError, match="not a blob of this repo"):
        fetch(WeightSource(repo_id=TINY))
    assert other.exists()


def test_snapshot_link_through_a_relative_escape_is_refused(hub, tiny, hub_cache, victim):
    pointer = fetch(WeightSource(repo_id=TINY)).path
    relative = os.path.relpath(victim, pointer.parent)
    pointer.unlink()
    pointer.symlink_to(relative)
    with pytest.raises(IntegrityError):
        fetch(WeightSource(repo_id=TINY))
    assert victim.exists()


def test_snapshot_folder_that_is_a_planted_link_is_refused_and_nothing_deleted(hub, tiny, hub_cache, victim):
    pointer = fetch(WeightSource(repo_id=TINY)).path
    commit_dir = pointer.parent
    (victim.parent / "model.safetensors").write_bytes(b"another file of the user")
    for child in commit_dir.iterdir():
        child.unlink()
    commit_dir.rmdir()
    commit_dir.symlink_to(victim.parent, target_is_directory=True)
    with pytest.raises(IntegrityError, match="link out of the cache"):
        fetch(WeightSource(repo_id=TINY))
    assert (victim.parent / "model.safetensors").read_bytes() == b"another file of the user"


def test_blob_that_is_a_planted_link_is_refused_and_its_target_kept(hub, tiny, hub_cache, victim):
    """The entry links ../../blobs/<etag> as usual, but the blob there links out of the cache."""
    blob = fetch(WeightSource(repo_id=TINY)).path.resolve()
    victim.write_bytes(tiny)  # even the right bytes: a blob must be a file of the cache, not a link
    blob.unlink()
    blob.symlink_to(victim)
    with pytest.raises(IntegrityError, match="not a blob of this repo"):
        fetch(WeightSource(repo_id=TINY))
    assert victim.read_bytes() == tiny


def test_blobs_folder_that_is_a_planted_link_is_refused_and_nothing_deleted(hub, tiny, hub_cache, victim):
    blob = fetch(WeightSource(repo_id=TINY)).path.resolve()
    elsewhere = victim.parent / "blobs-elsewhere"
    blob.parent.rename(elsewhere)
    blob.parent.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(IntegrityError, match="not a blob of this repo"):
        fetch(WeightSource(repo_id=TINY))
    assert (elsewhere / blob.name).read_bytes() == tiny


def test_blob_named_like_a_hash_but_holding_other_bytes_is_refused(hub, tiny, hub_cache):
    blob = fetch(WeightSource(repo_id=TINY)).path.resolve()
    blob.write_bytes(b"x" * len(tiny))
    with pytest.raises(IntegrityError, match="sha256 the Hub advertises"):
        fetch(WeightSource(repo_id=TINY))
    assert not blob.exists()


def test_discard_removes_a_planted_url_link_not_its_target(tmp_path, victim):
    link = tmp_path / "cache" / "w-12345678.pth"
    link.parent.mkdir()
    link.symlink_to(victim)
    assert discard(FetchedWeights(path=link, origin="https://example.invalid/w-12345678.pth", kind="url"))
    assert not link.is_symlink() and victim.read_bytes() == b"the user's own bytes"


def test_discard_never_touches_a_users_file(victim):
    assert not discard(FetchedWeights(path=victim, origin=str(victim), kind="path"))
    assert victim.exists()


def test_discard_of_an_unchecked_hub_entry_removes_only_the_link(tmp_path, victim):
    link = tmp_path / "snapshots" / ("a" * 40) / "model.safetensors"
    link.parent.mkdir(parents=True)
    link.symlink_to(victim)
    discard(FetchedWeights(path=link, origin="hf://x/y", kind="hub"))
    assert victim.exists() and not link.is_symlink()


@pytest.mark.parametrize("url", ["https://example.invalid/weights/..", "https://example.invalid/",
                                 "https://example.invalid/a/.#sha256=" + "0" * 64,
                                 "https://example.invalid/.bashrc#sha256=" + "0" * 64])
def test_url_that_names_no_file_is_refused(tmp_path, url):
    with pytest.raises(WeightSourceError, match="file name"):
        fetch(parse_source(url + ("" if "#" in url else "#sha256=" + "0" * 64)), cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("name", ["x" * 5000, "a/" * 3000 + "w.safetensors"])
def test_a_path_too_long_for_the_file_system_is_a_clear_error(name):
    with pytest.raises(WeightsNotFoundError, match="weights"):
        fetch(WeightSource(path=name, sha256="0" * 64))



# -- a saved model's config ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["../outside/precious.safetensors", "ABSOLUTE", 123])
def test_saved_config_cannot_point_the_weights_outside_its_folder(tmp_path, resnet18_weights, weights):
    model = zooadapt.load("resnet18", num_classes=3)
    out = zooadapt.save(model, tmp_path / "saved")
    outside = tmp_path / "outside" / "precious.safetensors"
    outside.parent.mkdir(exist_ok=True)
    (out / "model.safetensors").rename(outside)
    config = json.loads((out / "zooadapt.json").read_text())
    config["weights"] = str(outside) if weights == "ABSOLUTE" else weights
    (out / "zooadapt.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointFormatError, match="weights"):
        zooadapt.load(out)

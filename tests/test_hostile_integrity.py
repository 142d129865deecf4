"""Hostile bytes: a file whose sha256 is known is never accepted with other bytes.

A same-size rewrite with its mtime put back, a memo record someone else could write, a pin
too short to mean anything, a short pin forged to match: each must be caught.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

import zooadapt
import zooadapt.weights.digests as digests
from zooadapt.errors import IntegrityError, WeightSourceError
from zooadapt.plugin_api import WeightSource
from zooadapt.testing import safetensors_bytes
from zooadapt.weights.lockfile import check_lock
from zooadapt.weights.sources import fetch, parse_source

TINY = "test/hostile-integrity"


@pytest.fixture(scope="module")
def tiny(hub) -> bytes:
    gen = torch.Generator().manual_seed(5)
    data = safetensors_bytes({"w": torch.randn(32, 32, generator=gen)})
    hub.add_file(TINY, "model.safetensors", data)
    return data


@pytest.fixture
def hashed(monkeypatch) -> list[str]:
    """Paths sha256'd from now on (a memo hit hashes nothing)."""
    calls: list[str] = []
    real = digests.sha256_of
    monkeypatch.setattr(digests, "sha256_of", lambda path, *a: calls.append(str(path)) or real(path, *a))
    return calls


def _rewrite_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    st = path.stat()
    assert len(data) == st.st_size
    with open(path, "r+b") as fh:  # in place: same inode
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)


def _flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF])


# -- the memo ---------------------------------------------------------------------------------


def test_same_size_same_mtime_rewrite_of_a_hub_blob_is_caught(hub, tiny, hub_cache):
    blob = fetch(WeightSource(repo_id=TINY)).path.resolve()
    _rewrite_keeping_size_and_mtime(blob, _flip_last_byte(tiny))
    with pytest.raises(IntegrityError, match="sha256 the Hub advertises"):
        fetch(WeightSource(repo_id=TINY))


def test_same_size_same_mtime_rewrite_of_a_pinned_local_file_is_caught(tmp_path, tiny):
    path = tmp_path / "mine.safetensors"
    path.write_bytes(tiny)
    pin = hashlib.sha256(tiny).hexdigest()
    fetch(WeightSource(path=str(path), sha256=pin))
    _rewrite_keeping_size_and_mtime(path, _flip_last_byte(tiny))
    with pytest.raises(IntegrityError, match="not loaded"):
        fetch(WeightSource(path=str(path), sha256=pin))
    assert path.exists()  # a user's own file is never deleted


def test_same_size_same_mtime_rewrite_of_a_url_download_is_caught(hub, tiny, tmp_path):
    url = f"{hub.url}/{TINY}/resolve/main/model.safetensors#sha256={hashlib.sha256(tiny).hexdigest()}"
    target = fetch(parse_source(url), cache_dir=tmp_path).path
    _rewrite_keeping_size_and_mtime(target, _flip_last_byte(tiny))
    assert fetch(parse_source(url), cache_dir=tmp_path).path.read_bytes() == tiny  # noticed, downloaded again


def test_memo_spares_a_rehash_of_an_unchanged_file(hub, tiny, hub_cache, hashed):
    fetch(WeightSource(repo_id=TINY))
    digests._memo._mem.clear()
    fetch(WeightSource(repo_id=TINY))
    assert len(hashed) == 1


def test_memo_writable_by_others_is_ignored(hub, tiny, hub_cache, hashed):
    fetch(WeightSource(repo_id=TINY))
    memo = digests._memo.location()
    os.chmod(memo, 0o666)
    digests._memo._mem.clear()
    fetch(WeightSource(repo_id=TINY))
    assert len(hashed) == 2  # not trusted: hashed again


def test_lying_memo_record_in_a_shared_file_cannot_vouch_for_tampered_bytes(tmp_path, tiny):
    path = tmp_path / "mine.safetensors"
    path.write_bytes(_flip_last_byte(tiny))
    real, st = os.path.realpath(path), path.stat()
    pin = hashlib.sha256(tiny).hexdigest()
    memo = digests._memo.location()
    memo.parent.mkdir(parents=True, exist_ok=True)
    record = {real: [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, pin, None]}
    memo.write_text(json.dumps(record))
    os.chmod(memo, 0o600)
    digests._memo._mem.clear()
    fetch(WeightSource(path=str(path), sha256=pin))  # control: this user's own private record is believed
    os.chmod(memo, 0o664)  # group-writable: somebody else may have written it
    digests._memo._mem.clear()
    with pytest.raises(IntegrityError):
        fetch(WeightSource(path=str(path), sha256=pin))


def test_memo_that_is_a_link_is_ignored(tmp_path, tiny, hashed):
    memo = digests._memo.location()
    memo.parent.mkdir(parents=True, exist_ok=True)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text("{}")
    memo.unlink(missing_ok=True)
    memo.symlink_to(elsewhere)
    path = tmp_path / "mine.safetensors"
    path.write_bytes(tiny)
    fetch(WeightSource(path=str(path), sha256=hashlib.sha256(tiny).hexdigest()))
    assert elsewhere.read_text() == "{}"  # the link was replaced, never written through
    assert not memo.is_symlink()


def test_memo_written_while_the_disk_is_full_leaves_no_temporary_file(tmp_path, tiny, monkeypatch):
    path = tmp_path / "mine.safetensors"
    path.write_bytes(tiny)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dump", full)
    fetch(WeightSource(path=str(path), sha256=hashlib.sha256(tiny).hexdigest()))  # still works
    folder = digests._memo.location().parent
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_corrupt_memo_file_costs_a_rehash_not_an_error(hub, tiny, hub_cache, hashed):
    fetch(WeightSource(repo_id=TINY))
    digests._memo.location().write_text("[" * 50_000)
    digests._memo._mem.clear()
    fetch(WeightSource(repo_id=TINY))
    assert len(hashed) == 2


# -- lock --check -----------------------------------------------------------------------------


@pytest.fixture
def locked(registry_model, resnet18_weights):
    data = safetensors_bytes(resnet18_weights)
    registry_model("lr18", data)
    zooadapt.lock(["lr18"])
    return data


@pytest.mark.slow
def test_lock_check_hashes_every_file_even_when_remembered(locked, hashed):
    zooadapt.load("lr18")
    hashed.clear()
    assert check_lock() == {"lr18": None}
    assert len(hashed) == 1


@pytest.mark.slow
def test_lock_check_catches_a_same_size_same_mtime_rewrite(locked, hub_cache):
    blob = next(hub_cache.rglob("blobs/*"))
    _rewrite_keeping_size_and_mtime(blob, _flip_last_byte(locked))
    problems = check_lock()
    assert problems["lr18"] and "sha256" in problems["lr18"]


@pytest.mark.slow
def test_load_of_a_locked_model_catches_a_same_size_same_mtime_rewrite(locked, hub_cache):
    zooadapt.load("lr18")
    blob = next(hub_cache.rglob("blobs/*"))
    _rewrite_keeping_size_and_mtime(blob, _flip_last_byte(locked))
    with pytest.raises(IntegrityError):
        zooadapt.load("lr18")


# -- git-tracked (non-LFS) Hub files: named by their git blob sha1 ------------------------------


def _as_git_blob(pointer: Path, data: bytes) -> Path:
    """Rename the blob to its git sha1, as the Hub names a small file kept in git (not LFS)."""
    blob = pointer.resolve()
    git = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    renamed = blob.with_name(git)
    blob.rename(renamed)
    pointer.unlink()
    pointer.symlink_to(os.path.relpath(renamed, pointer.parent))
    return renamed


def test_git_tracked_blob_is_checked_against_its_sha1(hub, tiny, hub_cache):
    fetched = fetch(WeightSource(repo_id=TINY))
    _as_git_blob(fetched.path, tiny)
    again = fetch(WeightSource(repo_id=TINY), revision=fetched.commit)
    assert again.path.read_bytes() == tiny and again.sha256 == hashlib.sha256(tiny).hexdigest()


def test_git_tracked_blob_with_other_bytes_is_refused(hub, tiny, hub_cache):
    fetched = fetch(WeightSource(repo_id=TINY))
    blob = _as_git_blob(fetched.path, tiny)
    blob.write_bytes(_flip_last_byte(tiny))
    with pytest.raises(IntegrityError, match="git sha1"):
        fetch(WeightSource(repo_id=TINY), revision=fetched.commit)
    assert not blob.exists()


# -- pins ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pin", ["a", "abc", "1234567", "zz" * 8, "g" * 64, "0" * 65, " " + "0" * 8, 12345678])
@pytest.mark.parametrize("kind", ["hub", "path"])
def test_pin_shorter_than_8_hex_or_not_hex_is_refused(tmp_path, tiny, hub, pin, kind):
    path = tmp_path / "mine.safetensors"
    path.write_bytes(tiny)
    source = WeightSource(repo_id=TINY, sha256=pin) if kind == "hub" else WeightSource(path=str(path), sha256=pin)
    with pytest.raises(WeightSourceError, match="8 to 64 hex"):
        fetch(source)


def test_short_pin_is_upgraded_to_the_full_digest_on_first_match(tmp_path, tiny):
    path = tmp_path / "mine.safetensors"
    path.write_bytes(tiny)
    digest = hashlib.sha256(tiny).hexdigest()
    fetch(WeightSource(path=str(path), sha256=digest[:8]))
    assert digests._pins.full(digest[:8]) == digest


def test_forged_file_matching_an_upgraded_short_pin_is_refused(tmp_path, tiny):
    """A forgery that matches the 8-hex prefix (32 bits, minutes of work) but not the full digest
    recorded when the genuine file was first seen."""
    genuine = tmp_path / "genuine.safetensors"
    genuine.write_bytes(tiny)
    digest = hashlib.sha256(tiny).hexdigest()
    fetch(WeightSource(path=str(genuine), sha256=digest[:8]))
    forged = tmp_path / "forged.safetensors"
    forged.write_bytes(_flip_last_byte(tiny))
    digests._memo.put(os.path.realpath(forged), forged.stat(), digest[:8] + "f" * 56)  # stands in for a forgery
    with pytest.raises(IntegrityError, match="upgraded to the full digest"):
        fetch(WeightSource(path=str(forged), sha256=digest[:8]))


def test_upgraded_pin_applies_to_url_downloads(hub, tiny, tmp_path):
    digest = hashlib.sha256(tiny).hexdigest()
    url = f"{hub.url}/{TINY}/resolve/main/model.safetensors#sha256={digest[:10]}"
    fetch(parse_source(url), cache_dir=tmp_path)
    assert digests._pins.full(digest[:10]) == digest


def test_pin_record_writable_by_others_is_ignored(tmp_path, tiny):
    digest = hashlib.sha256(tiny).hexdigest()
    book = digests._pins.location()
    book.parent.mkdir(parents=True, exist_ok=True)
    book.write_text(json.dumps({digest[:8]: digest[:8] + "0" * 56}))
    os.chmod(book, 0o666)
    path = tmp_path / "mine.safetensors"
    path.write_bytes(tiny)
    assert fetch(WeightSource(path=str(path), sha256=digest[:8])).sha256 == digest  # the planted record is ignored


def test_strict_mode_refuses_a_short_pin(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("ZOOADAPT_STRICT_HASHES", "1")
    path = tmp_path / "mine.safetensors"
    path.write_bytes(tiny)
    digest = hashlib.sha256(tiny).hexdigest()
    with pytest.raises(WeightSourceError, match="ZOOADAPT_STRICT_HASHES"):
        fetch(WeightSource(path=str(path), sha256=digest[:16]))
    assert fetch(WeightSource(path=str(path), sha256=digest)).sha256 == digest


def test_strict_mode_refuses_a_url_pinned_only_by_its_file_name(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOOADAPT_STRICT_HASHES", "1")
    with pytest.raises(WeightSourceError, match="ZOOADAPT_STRICT_HASHES"):
        fetch(parse_source(f"{hub.url}/{TINY}/resolve/main/alexnet-owt-7be5be79.pth"), cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_strict_mode_still_loads_hub_files_checked_by_their_lfs_sha256(hub, tiny, hub_cache, monkeypatch):
    monkeypatch.setenv("ZOOADAPT_STRICT_HASHES", "1")
    assert fetch(WeightSource(repo_id=TINY)).sha256 == hashlib.sha256(tiny).hexdigest()

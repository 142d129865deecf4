"""A hostile Hub endpoint: nothing outside the cache, ever, whatever the endpoint answers.

huggingface_hub builds cache paths from the endpoint's answer: ``blobs/<ETag or X-Linked-Etag>``,
``.locks/<repo>/<etag>.lock``, ``snapshots/<X-Repo-Commit>/<file>``, and on a 404
``.no_exist/<X-Repo-Commit>/<file>``. zooadapt checks each HEAD answer the client gets as it
arrives and refuses one that could name a path outside the cache with ``HubAnswerError``,
before the client writes anything. Each test has the loopback Hub answer one hostile header, and checks that the
load is refused and that no file outside the cache folder appeared.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from zooadapt.contract.errors import HubAnswerError, HubFileNotFoundError
from zooadapt.plugin_api import WeightSource
from zooadapt.testing import Fault, safetensors_bytes
from zooadapt.weights.sources import fetch

REPO = "test/hostile-endpoint"
ESCAPES = ["../../../escaped", "../../escaped", "/tmp/zooadapt-escaped-abs", "..", "a/../../../escaped"]


@pytest.fixture(scope="module")
def published(hub) -> tuple[bytes, str]:
    data = safetensors_bytes({"w": torch.randn(4, 4, generator=torch.Generator().manual_seed(3))})
    return data, hub.add_file(REPO, "model.safetensors", data)


def _outside(root: Path, cache: Path) -> set[str]:
    """Every path under ``root`` that is not inside ``cache``."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if cache not in (p, *p.parents)}


def _refused(hub, tmp_path, headers: dict[str, str], *, filename: str = "model.safetensors",
             revision: str = "main") -> HubAnswerError:
    cache = tmp_path / "cache"
    before = _outside(tmp_path, cache)
    hub.inject(Fault(method=None, headers=headers, repo=REPO, times=10))
    try:
        with pytest.raises(HubAnswerError) as info:
            fetch(WeightSource(repo_id=REPO, filename=filename), revision=revision, cache_dir=cache)
    finally:
        hub.faults.clear()
    assert _outside(tmp_path, cache) == before, "a file outside the cache was written"
    assert not Path("/tmp/zooadapt-escaped-abs").exists()
    return info.value


@pytest.mark.parametrize("etag", ESCAPES)
@pytest.mark.parametrize("header", ["X-Linked-Etag", "ETag"])
def test_etag_naming_a_path_outside_the_cache_is_refused(hub, published, tmp_path, header, etag):
    err = _refused(hub, tmp_path, {header: f'"{etag}"'})
    assert "ETag" in str(err) and "nothing was written" in str(err)


@pytest.mark.parametrize("etag", ["not-a-hash", "0" * 39, "g" * 64, "W/\"../x\""])
def test_etag_that_is_not_a_hash_is_refused(hub, published, tmp_path, etag):
    _refused(hub, tmp_path, {"X-Linked-Etag": etag})


@pytest.mark.parametrize("commit", [*ESCAPES, "main", "0" * 39, "A" * 40])
def test_commit_that_is_not_40_hex_is_refused(hub, published, tmp_path, commit):
    err = _refused(hub, tmp_path, {"X-Repo-Commit": commit})
    assert "commit" in str(err)


@pytest.mark.parametrize("commit", ["../../../escaped", "/tmp/zooadapt-escaped-abs"])
def test_commit_on_a_404_cannot_place_a_no_exist_marker_outside(hub, published, tmp_path, commit):
    """On a 404 huggingface_hub records ``.no_exist/<X-Repo-Commit>/<file>``."""
    _refused(hub, tmp_path, {"X-Repo-Commit": commit}, filename="absent.safetensors")


def test_honest_answers_still_load(hub, published, tmp_path):
    data, commit = published
    fetched = fetch(WeightSource(repo_id=REPO), cache_dir=tmp_path / "cache")
    assert fetched.path.read_bytes() == data and fetched.commit == commit


def test_a_404_with_an_honest_commit_is_still_file_not_found(hub, published, tmp_path):
    with pytest.raises(HubFileNotFoundError):
        fetch(WeightSource(repo_id=REPO, filename="absent.safetensors"), cache_dir=tmp_path / "cache")


def _requests(hub) -> int:
    return sum(n for (method, repo, _), n in hub.requests.items() if repo == REPO)


def test_a_cached_file_pinned_to_a_commit_costs_no_request(hub, published, tmp_path):
    _, commit = published
    cache = tmp_path / "cache"
    fetch(WeightSource(repo_id=REPO), revision=commit, cache_dir=cache)
    before = _requests(hub)
    fetch(WeightSource(repo_id=REPO), revision=commit, cache_dir=cache)
    assert _requests(hub) == before


def test_a_cached_file_on_a_branch_costs_one_request_as_before(hub, published, tmp_path):
    """The client asks the branch's commit once, as it always did; the check adds no request."""
    cache = tmp_path / "cache"
    fetch(WeightSource(repo_id=REPO), cache_dir=cache)
    before = _requests(hub)
    fetch(WeightSource(repo_id=REPO), cache_dir=cache)
    assert _requests(hub) - before == 1


def test_a_cached_file_on_a_branch_is_refused_when_the_answer_turns_hostile(hub, published, tmp_path):
    cache = tmp_path / "cache"
    fetch(WeightSource(repo_id=REPO), cache_dir=cache)
    _refused(hub, tmp_path, {"X-Repo-Commit": "../../../escaped"})


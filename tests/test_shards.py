"""Sharded checkpoints (issue #23 item 5): an index and the shards it names, from a folder, an
index path or an ``hf://`` repo, loaded exactly, each shard read once; an index that disagrees
with its shards is refused naming the file and the fix; lock files pin every shard.

Checkpoints are generated: shard counts 1..4, safetensors and ``.bin`` shards, several
architectures (seeded weights from ``tests/generators.py``), written by hand in the layout
``huggingface_hub.save_torch_state_dict`` writes and by that function itself.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
import torch
from generators import build, seeded_weights

import zooadapt
import zooadapt.weights.checkpoint as checkpoint
import zooadapt.weights.hub_download as hub_download
from zooadapt.cli import main
from zooadapt.contract.errors import (
    HubFileNotFoundError,
    IntegrityError,
    LockMismatchError,
    WeightsNotFoundError,
)
from zooadapt.errors import ShardIndexError
from zooadapt.host.plugin_manager import reset_plugins
from zooadapt.weights.checkpoint import read_checkpoint
from zooadapt.weights.lockfile import check_lock

FORMATS = {"safetensors": ("model", "safetensors"), "bin": ("pytorch_model", "bin")}
ARCHS = ("mobilenet_v3_small", "mobilenet_v1", "resnet18", "test_convnext")
FAST = {("mobilenet_v3_small", "safetensors", 3), ("mobilenet_v1", "bin", 2), ("test_convnext", "safetensors", 4),
        ("mobilenet_v3_small", "bin", 1)}


def write_shards(state: dict[str, torch.Tensor], folder: Path, count: int, fmt: str = "safetensors") -> Path:
    """``state`` split in key order into ``count`` shards named and indexed as
    ``save_torch_state_dict`` names them; returns the index."""
    from safetensors.torch import save_file

    stem, ext = FORMATS[fmt]
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(state)
    size = -(-len(keys) // count)
    weight_map, total = {}, 0
    for i in range(count):
        name = f"{stem}-{i + 1:05d}-of-{count:05d}.{ext}"
        chunk = {k: state[k].contiguous().clone() for k in keys[i * size:(i + 1) * size]}
        if fmt == "safetensors":
            save_file(chunk, str(folder / name), metadata={"format": "pt"})
        else:
            torch.save(chunk, folder / name)
        weight_map.update(dict.fromkeys(chunk, name))
        total += sum(t.numel() * t.element_size() for t in chunk.values())
    index = folder / f"{stem}.{ext}.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return index


def _assert_exact(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(want) <= set(got)
    for key, tensor in want.items():
        assert got[key].dtype == tensor.dtype and torch.equal(got[key], tensor), key


def _case(arch: str, fmt: str, count: int):
    marks = [] if (arch, fmt, count) in FAST else [pytest.mark.slow]
    return pytest.param(arch, fmt, count, marks=marks, id=f"{arch}-{fmt}-{count}")


CASES = [_case(a, f, n) for a in ARCHS for f in FORMATS for n in (1, 2, 3, 4)]


# -- local: a folder, an index path, load_weights, inspect --------------------------------------------


@pytest.mark.parametrize(("arch", "fmt", "count"), CASES)
def test_sharded_checkpoint_loads_every_tensor_exactly(tmp_path, arch, fmt, count):
    state = seeded_weights(arch, seed=count)
    index = write_shards(state, tmp_path / "ckpt", count, fmt)
    by_folder = zooadapt.load(arch, weights=tmp_path / "ckpt")
    _assert_exact(by_folder.state_dict(), state)
    by_index = zooadapt.load(arch, weights=str(index))
    _assert_exact(by_index.state_dict(), state)
    assert by_folder.zooadapt.report.path == str(index)
    mine = build(arch)
    report = zooadapt.load_weights(mine, tmp_path / "ckpt")
    _assert_exact(mine.state_dict(), state)
    assert report.plan.fits


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("count", [2, 4])
def test_each_shard_is_read_once(tmp_path, monkeypatch, fmt, count):
    state = seeded_weights("mobilenet_v3_small", seed=7)
    write_shards(state, tmp_path, count, fmt)
    reads: list[str] = []
    real = checkpoint._read_file
    monkeypatch.setattr(checkpoint, "_read_file", lambda path, **kw: reads.append(path.name) or real(path, **kw))
    zooadapt.load("mobilenet_v3_small", weights=tmp_path)
    assert sorted(reads) == sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".json"))
    assert len(reads) == count


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_read_checkpoint_of_an_index_keeps_order_dtypes_and_shapes(tmp_path, fmt):
    state = {"a.weight": torch.randn(3, 4), "b.bias": torch.arange(5, dtype=torch.int64),
             "c.half": torch.randn(2, 2).half(), "d.bf16": torch.randn(7).bfloat16(), "e.empty": torch.empty(0, 3)}
    index = write_shards(state, tmp_path, 3, fmt)
    got = read_checkpoint(index)
    _assert_exact(got, state)
    assert list(got) == list(state) or fmt == "safetensors"  # pickles keep their order; safetensors sorts
    assert checkpoint.is_safetensors(index) == (fmt == "safetensors")


def test_save_torch_state_dict_layout_for_several_shard_sizes(tmp_path):
    from huggingface_hub import save_torch_state_dict, split_torch_state_dict_into_shards

    state = seeded_weights("resnet18", seed=11)
    total = sum(t.numel() * t.element_size() for t in state.values())
    for divisor in (1, 2, 3, 5):
        folder = tmp_path / f"div{divisor}"
        folder.mkdir()
        limit = total // divisor + 1
        save_torch_state_dict(state, folder, max_shard_size=limit)
        shards = split_torch_state_dict_into_shards(state, max_shard_size=limit).filename_to_tensors
        assert len([p for p in folder.iterdir() if p.suffix == ".safetensors"]) == len(shards)
        _assert_exact(zooadapt.load("resnet18", weights=folder).state_dict(), state)


@pytest.mark.slow
def test_save_torch_state_dict_bin_shards(tmp_path):
    from huggingface_hub import save_torch_state_dict

    state = seeded_weights("resnet18", seed=12)
    save_torch_state_dict(state, tmp_path, max_shard_size="8MB", safe_serialization=False)
    assert (tmp_path / "pytorch_model.bin.index.json").is_file()
    _assert_exact(zooadapt.load("resnet18", weights=tmp_path).state_dict(), state)


@pytest.mark.slow
def test_transformers_save_pretrained_shards_read_exactly(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
    torch.manual_seed(0)
    model = transformers.ResNetForImageClassification(config)
    model.save_pretrained(tmp_path, max_shard_size="2KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1
    _assert_exact(read_checkpoint(tmp_path / "model.safetensors.index.json"), model.state_dict())


def test_cli_inspect_lists_every_shards_tensors(tmp_path, capsys):
    state = seeded_weights("mobilenet_v3_small", seed=3)
    write_shards(state, tmp_path, 3)
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tensors"] == len(state) and data["format"] == "safetensors"
    assert data["path"].endswith("model.safetensors.index.json")
    assert main(["inspect", str(tmp_path), "--model", "mobilenet_v3_small", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["loads"] is True


def test_a_single_file_beside_an_index_is_preferred(tmp_path):
    """A folder holding both (a re-save as one file beside an old index) loads the one file, as
    transformers reads it."""
    state = seeded_weights("mobilenet_v3_small", seed=4)
    write_shards({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, tmp_path, 2)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    _assert_exact(zooadapt.load("mobilenet_v3_small", weights=tmp_path).state_dict(), state)


# -- local refusals -----------------------------------------------------------------------------------


def _index(path: Path) -> dict:
    return json.loads(path.read_text())


def _rewrite(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data))


def _broken(tmp_path: Path, fault: str, fmt: str) -> tuple[Path, str]:
    """A 3-shard checkpoint with one fault; returns (the index, a pattern its error must match)."""
    from safetensors.torch import save_file

    state = seeded_weights("mobilenet_v3_small", seed=5)
    index = write_shards(state, tmp_path, 3, fmt)
    data = _index(index)
    shards = list(dict.fromkeys(data["weight_map"].values()))
    first_key = next(iter(data["weight_map"]))
    if fault == "missing shard":
        (tmp_path / shards[1]).unlink()
        return index, rf"names shard '{shards[1]}', but .* does not exist: the checkpoint is incomplete"
    if fault == "tensor in two shards":
        extra = read_checkpoint(tmp_path / shards[2])
        extra[first_key] = state[first_key].clone()
        if fmt == "safetensors":
            save_file(dict(extra), str(tmp_path / shards[2]))
        else:
            torch.save(dict(extra), tmp_path / shards[2])
        return index, rf"tensor '{first_key}' is in two shards, '{shards[0]}' and '{shards[2]}'"
    if fault == "moved in the index":
        data["weight_map"][first_key] = shards[1]
        _rewrite(index, data)
        return index, rf"disagrees with the shards: tensor '{first_key}' is in shard '{shards[0]}', but the index " \
                      rf"places it in '{shards[1]}'"
    if fault == "listed but absent":
        data["weight_map"]["ghost.weight"] = shards[2]
        _rewrite(index, data)
        return index, rf"the index places tensor 'ghost.weight' in shard '{shards[2]}', which does not hold it"
    if fault == "present but unlisted":
        del data["weight_map"][first_key]
        _rewrite(index, data)
        return index, rf"shard '{shards[0]}' holds tensor '{first_key}', which the index does not list"
    if fault == "listed twice":
        text = index.read_text()
        index.write_text(text.replace('"weight_map": {', f'"weight_map": {{"{first_key}": "{shards[2]}", ', 1))
        return index, rf"places tensor '{first_key}' in two shards"
    if fault == "outside the folder":
        data["weight_map"][first_key] = f"../{shards[0]}"
        _rewrite(index, data)
        return index, r"not a file beside the index"
    if fault == "other format":
        other = "x-00001-of-00001.bin" if fmt == "safetensors" else "x-00001-of-00001.safetensors"
        data["weight_map"][first_key] = other
        _rewrite(index, data)
        return index, r"indexes \.(safetensors|bin) files"
    if fault == "no weight_map":
        _rewrite(index, {"metadata": {}})
        return index, r"has no weight_map"
    if fault == "not JSON":
        index.write_text("{not json")
        return index, r"not valid JSON"
    raise ValueError(fault)


FAULTS = ["missing shard", "tensor in two shards", "moved in the index", "listed but absent", "present but unlisted",
          "listed twice", "outside the folder", "other format", "no weight_map", "not JSON"]


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("fault", FAULTS)
def test_an_index_that_disagrees_with_its_shards_is_refused(tmp_path, fault, fmt):
    index, pattern = _broken(tmp_path, fault, fmt)
    expected = WeightsNotFoundError if fault == "missing shard" else ShardIndexError
    for weights in (tmp_path, index):
        with pytest.raises(expected, match=pattern) as info:
            zooadapt.load("mobilenet_v3_small", weights=weights)
        assert str(index) in str(info.value)
    with pytest.raises(expected, match=pattern):
        read_checkpoint(index)
    if fault != "missing shard":
        assert "save the checkpoint again" in str(info.value) or "save_torch_state_dict" in str(info.value)


def test_shards_without_an_index_are_refused_naming_the_index(tmp_path):
    write_shards(seeded_weights("mobilenet_v3_small", seed=6), tmp_path, 2).unlink()
    with pytest.raises(WeightsNotFoundError, match=r"holds checkpoint shards \(model-00001-of-00002.safetensors.*"
                                                   r"but no index.*model.safetensors.index.json"):
        zooadapt.load("mobilenet_v3_small", weights=tmp_path)


# -- the Hub --------------------------------------------------------------------------------------------


def _publish(hub, folder: Path, repo: str | None = None, branch: str = "main") -> tuple[str, str, dict[str, bytes]]:
    """Every file of ``folder`` pushed to a Hub repo (its own unless named): (repo, commit, files)."""
    repo = repo or f"test/shards-{uuid.uuid4().hex[:8]}"
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
    commit = ""
    for name, data in files.items():
        commit = hub.add_file(repo, name, data, branch=branch)
    return repo, commit, files


def _hub_case(arch: str, fmt: str, count: int):
    marks = [] if (arch, fmt, count) in FAST else [pytest.mark.slow]
    return pytest.param(arch, fmt, count, marks=marks, id=f"{arch}-{fmt}-{count}")


@pytest.mark.parametrize(("arch", "fmt", "count"), [_hub_case(a, f, n) for a in ARCHS[:2] + ARCHS[3:]
                                                     for f in FORMATS for n in (1, 2, 4)])
def test_hub_repo_of_shards_loads_exactly_each_shard_downloaded_once(hub, tmp_path, arch, fmt, count):
    state = seeded_weights(arch, seed=20 + count)
    index = write_shards(state, tmp_path / "ckpt", count, fmt)
    (tmp_path / "ckpt" / f"{FORMATS[fmt][0]}-00009-of-00009.{FORMATS[fmt][1]}").write_bytes(b"stale shard")
    repo, commit, files = _publish(hub, tmp_path / "ckpt")
    for weights in (f"hf://{repo}", f"hf://{repo}/{index.name}", f"hf://{repo}@{commit}"):
        model = zooadapt.load(arch, weights=weights)
        _assert_exact(model.state_dict(), state)
        assert model.zooadapt.report.commit == commit
    named = set(_index(index)["weight_map"].values())
    for name in files:
        assert hub.bodies_sent[(repo, name)] == (1 if name in named or name == index.name else 0), name


def test_hub_shards_are_fetched_at_the_index_commit(hub, tmp_path, monkeypatch):
    state = seeded_weights("mobilenet_v3_small", seed=30)
    write_shards(state, tmp_path / "old", 3)
    repo, old_commit, _ = _publish(hub, tmp_path / "old")
    asked: list[tuple[str, str]] = []
    real = hub_download._from_hub
    monkeypatch.setattr(hub_download, "_from_hub",
                        lambda source, **kw: asked.append((source.filename, kw["revision"])) or real(source, **kw))
    zooadapt.load("mobilenet_v3_small", weights=f"hf://{repo}/model.safetensors.index.json")
    assert asked[0] == ("model.safetensors.index.json", "main")
    shards = [rev for name, rev in asked[1:] if name.startswith("model-")]
    assert shards == [old_commit] * 3
    # the file's own head came whole: its class names are looked for beside it, at the same commit
    assert {rev for name, rev in asked[1:] if not name.startswith("model-")} <= {old_commit}
    # a later push of other shards: the old commit still loads the old tensors, exactly
    changed = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    write_shards(changed, tmp_path / "new", 3)
    _, new_commit, _ = _publish(hub, tmp_path / "new", repo=repo)
    _assert_exact(zooadapt.load("mobilenet_v3_small", weights=f"hf://{repo}").state_dict(), changed)
    old = zooadapt.load("mobilenet_v3_small", weights=f"hf://{repo}", revision=old_commit)
    _assert_exact(old.state_dict(), state)
    assert old.zooadapt.report.commit == old_commit != new_commit


def test_hub_index_naming_a_missing_shard_is_refused(hub, tmp_path, hub_cache):
    index = write_shards(seeded_weights("mobilenet_v3_small", seed=31), tmp_path / "ckpt", 3)
    (tmp_path / "ckpt" / "model-00002-of-00003.safetensors").unlink()
    repo, commit, _ = _publish(hub, tmp_path / "ckpt")
    with pytest.raises(WeightsNotFoundError) as info:
        zooadapt.load("mobilenet_v3_small", weights=f"hf://{repo}")
    assert not isinstance(info.value, HubFileNotFoundError)  # found the weights: no other file name is tried
    message = str(info.value)
    assert f"{index.name} names shard 'model-00002-of-00003.safetensors'" in message
    assert f"at commit {commit}" in message and "upload is incomplete" in message
    assert not list(hub_cache.rglob("*.incomplete"))


def test_hub_index_that_disagrees_with_its_shards_is_refused(hub, tmp_path):
    index, pattern = _broken(tmp_path / "ckpt", "moved in the index", "safetensors")
    repo, _, _ = _publish(hub, tmp_path / "ckpt")
    with pytest.raises(ShardIndexError, match=pattern):
        zooadapt.load("mobilenet_v3_small", weights=f"hf://{repo}")


def test_tampered_hub_shard_is_caught_removed_and_fetched_afresh(hub, tmp_path, hub_cache):
    state = seeded_weights("mobilenet_v3_small", seed=32)
    write_shards(state, tmp_path / "ckpt", 3)
    repo, _, files = _publish(hub, tmp_path / "ckpt")
    zooadapt.load("mobilenet_v3_small", weights=f"hf://{repo}")
    shard = "model-00002-of-00003.safetensors"
    blob = hub_cache / f"models--{repo.replace('/', '--')}" / "blobs" / hashlib.sha256(files[shard]).hexdigest()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=rf"{shard}: the cached bytes do not match the sha256 the Hub advertises"):
        zooadapt.load("mobilenet_v3_small", weights=f"hf://{repo}")
    assert not blob.exists()
    _assert_exact(zooadapt.load("mobilenet_v3_small", weights=f"hf://{repo}").state_dict(), state)


def test_offline_load_of_a_cached_sharded_repo_makes_no_request(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    state = seeded_weights("mobilenet_v3_small", seed=33)
    write_shards(state, tmp_path / "ckpt", 2)
    repo, _, _ = _publish(hub, tmp_path / "ckpt")
    zooadapt.load("mobilenet_v3_small", weights=f"hf://{repo}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = sum(hub.requests.values())
    _assert_exact(zooadapt.load("mobilenet_v3_small", weights=f"hf://{repo}").state_dict(), state)
    assert sum(hub.requests.values()) == before


# -- lock files ------------------------------------------------------------------------------------------


@pytest.fixture(params=["default file", "index file"])
def sharded_model(request, hub, tmp_path, monkeypatch):
    """A registry model ``shardy`` (a ResNet-18) whose Hub repo holds 3 shards and their index;
    the registry names the usual ``model.safetensors`` (found as its index) or the index itself."""
    state = seeded_weights("resnet18", seed=40)
    write_shards(state, tmp_path / "ckpt", 3)
    repo, commit, files = _publish(hub, tmp_path / "ckpt")
    registry = tmp_path / "registry.toml"
    file_line = 'file = "model.safetensors.index.json"\n' if request.param == "index file" else ""
    registry.write_text(f'[models.shardy]\nfamily = "resnet"\narch = "resnet18"\nhub = "{repo}"\n{file_line}')
    monkeypatch.setenv("ZOOADAPT_REGISTRY", str(registry))
    monkeypatch.delenv("ZOOADAPT_LOCK", raising=False)
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    reset_plugins()
    return type("Sharded", (), {"state": state, "repo": repo, "commit": commit, "files": files, "work": work})


def _requests(hub, repo: str) -> int:
    return sum(n for (_, r, _), n in hub.requests.items() if r == repo)


@pytest.mark.slow
def test_lock_pins_every_shard_and_a_locked_load_is_exact(hub, sharded_model, tmp_path):
    zooadapt.lock(["shardy"])
    entry = json.loads((sharded_model.work / "zooadapt.lock").read_text())["models"]["shardy"]
    files = sharded_model.files
    shards = {n: d for n, d in files.items() if n != "model.safetensors.index.json"}
    assert entry["commit"] == sharded_model.commit
    assert entry["sha256"] == hashlib.sha256(files["model.safetensors.index.json"]).hexdigest()
    assert entry["shards"] == {n: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)} for n, d in shards.items()}
    # the branch moves on; the locked load still gets the locked shards, and a warm one asks nothing
    write_shards({k: v + 1 if v.is_floating_point() else v for k, v in sharded_model.state.items()},
                 tmp_path / "new", 3)
    _publish(hub, tmp_path / "new", repo=sharded_model.repo)
    model = zooadapt.load("shardy")
    _assert_exact(model.state_dict(), sharded_model.state)
    before = _requests(hub, sharded_model.repo)
    zooadapt.load("shardy")
    assert _requests(hub, sharded_model.repo) == before
    assert check_lock() == {"shardy": None}


@pytest.mark.slow
def test_lock_catches_a_shard_other_than_the_pinned_one(sharded_model, hub_cache):
    zooadapt.lock(["shardy"])
    lock = sharded_model.work / "zooadapt.lock"
    data = json.loads(lock.read_text())
    data["models"]["shardy"]["shards"]["model-00003-of-00003.safetensors"]["sha256"] = "e" * 64
    lock.write_text(json.dumps(data))
    with pytest.raises(LockMismatchError, match=r"model-00003-of-00003.safetensors has sha256 .*pins sha256 "
                                                r"eeeeeeeeeeeeeeee.*removed"):
        zooadapt.load("shardy")
    assert check_lock()["shardy"]


def _rewrite_shard_blob(sharded_model, hub_cache, shard_name: str) -> Path:
    """Flip the last byte of a cached shard in place, keeping its size and mtime."""
    import os

    shard = sharded_model.files[shard_name]
    blob = next(p for p in hub_cache.rglob("blobs/*") if p.name == hashlib.sha256(shard).hexdigest())
    st = blob.stat()
    with open(blob, "r+b") as fh:
        fh.seek(st.st_size - 1)
        fh.write(bytes([shard[-1] ^ 0xFF]))
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    return blob


@pytest.mark.slow
@pytest.mark.parametrize("caught_by", ["lock --check", "load"])
def test_a_same_size_rewrite_of_a_locked_shard_is_caught_and_removed(sharded_model, hub_cache, caught_by):
    zooadapt.lock(["shardy"])
    blob = _rewrite_shard_blob(sharded_model, hub_cache, "model-00002-of-00003.safetensors")
    if caught_by == "lock --check":
        problems = check_lock()
        assert problems["shardy"] and "model-00002-of-00003.safetensors" in problems["shardy"]
    else:
        with pytest.raises(IntegrityError, match="model-00002-of-00003.safetensors"):
            zooadapt.load("shardy")
    assert not blob.exists()  # removed, never loaded; the next load downloads it afresh
    _assert_exact(zooadapt.load("shardy").state_dict(), sharded_model.state)

"""Hostile checkpoint contents: what comes out of a file is safe to become parameters.

``trusted`` must be a real bool; ``meta`` tensors (no data) are refused; tensors that share
memory, overlap or are stride-0 expansions are copied before they become parameters (else
an optimizer step on one changes another); buffers never carry ``requires_grad``; a corrupt
pickle is a ``CheckpointFormatError``; and a model never dies (SIGBUS) or changes because
the user's checkpoint file was overwritten after loading.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import zooadapt
from zooadapt.errors import CheckpointFormatError, InvalidArgumentError, UnsafeCheckpointError
from zooadapt.plugin_api import WeightSource
from zooadapt.testing import safetensors_bytes
from zooadapt.weights.checkpoint import is_immutable_cache_file, read_checkpoint
from zooadapt.weights.sources import fetch


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# -- trusted= --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("trusted", ["false", "False", "no", "", 0, 1, None, [], "True"])
def test_trusted_must_be_a_real_bool(tmp_path, resnet18_weights, trusted):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": resnet18_weights, "x": _Payload(str(marker))}, path)
    with pytest.raises(InvalidArgumentError, match="trusted="):
        zooadapt.load("resnet18", weights=path, trusted=trusted)
    assert not marker.exists()


def test_trusted_false_still_refuses_code(tmp_path, resnet18_weights):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": resnet18_weights, "x": _Payload(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint(path, trusted=False)
    assert not marker.exists()


# -- tensors that must not become parameters as they are --------------------------------------


def _save(tmp_path: Path, state: dict, name: str = "ckpt.pth") -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


def test_meta_tensors_are_refused(tmp_path, resnet18_weights):
    state = dict(resnet18_weights)
    state["layer1.0.conv1.weight"] = torch.empty(64, 64, 3, 3, device="meta")
    with pytest.raises(CheckpointFormatError, match="meta"):
        zooadapt.load("resnet18", weights=_save(tmp_path, state))


def test_all_meta_checkpoint_is_refused_not_loaded_as_random(tmp_path, resnet18_weights):
    state = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in resnet18_weights.items()}
    with pytest.raises(CheckpointFormatError, match="meta"):
        zooadapt.load("resnet18", weights=_save(tmp_path, state))


def _step_one(model: torch.nn.Module, name: str) -> None:
    param = dict(model.named_parameters())[name]
    with torch.no_grad():
        param.add_(1.0)


def test_tensors_sharing_one_storage_become_independent_parameters(tmp_path, resnet18_weights):
    state = dict(resnet18_weights)
    shared = state["layer1.0.conv1.weight"]
    state["layer1.0.conv2.weight"] = shared  # one tensor under two keys: torch.save keeps them shared
    model = zooadapt.load("resnet18", weights=_save(tmp_path, state))
    before = model.layer1[0].conv2.weight.detach().clone()
    _step_one(model, "layer1.0.conv1.weight")
    assert torch.equal(model.layer1[0].conv2.weight, before)


def test_overlapping_views_become_independent_parameters(tmp_path, resnet18_weights):
    state = dict(resnet18_weights)
    base = torch.randn(65)
    state["bn1.weight"], state["bn1.bias"] = base[:64], base[1:]
    model = zooadapt.load("resnet18", weights=_save(tmp_path, state))
    assert torch.equal(model.bn1.bias, base[1:])
    _step_one(model, "bn1.weight")
    assert torch.equal(model.bn1.bias, base[1:])


@pytest.mark.slow
def test_stride_zero_expanded_tensor_becomes_a_real_parameter(tmp_path, resnet18_weights):
    state = dict(resnet18_weights)
    state["bn1.weight"] = torch.tensor(0.5).expand(64)
    model = zooadapt.load("resnet18", weights=_save(tmp_path, state))
    weight = model.bn1.weight
    assert weight.stride() == (1,)
    with torch.no_grad():
        weight[0] += 1
    assert weight[1].item() == 0.5 and weight[0].item() == 1.5
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()  # an expanded parameter fails here ("unsupported operation: more than one element…")


def test_buffers_never_carry_requires_grad(tmp_path, resnet18_weights):
    state = dict(resnet18_weights)
    state["bn1.running_mean"] = torch.nn.Parameter(resnet18_weights["bn1.running_mean"].clone())
    model = zooadapt.load("resnet18", weights=_save(tmp_path, state))
    assert not model.bn1.running_mean.requires_grad
    assert type(model.bn1.running_mean) is torch.Tensor
    assert "bn1.running_mean" not in dict(model.named_parameters())


def test_parameters_saved_as_parameters_load_as_plain_tensors(tmp_path, resnet18_weights):
    state = {k: torch.nn.Parameter(v.clone(), requires_grad=v.is_floating_point()) for k, v in
             resnet18_weights.items()}
    tensors = read_checkpoint(_save(tmp_path, state))
    assert all(type(t) is torch.Tensor and not t.requires_grad for t in tensors.values())


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")
def test_sparse_tensors_are_refused_with_a_fix(tmp_path, resnet18_weights):
    state = dict(resnet18_weights)
    state["fc.weight"] = resnet18_weights["fc.weight"].to_sparse()
    with pytest.raises(CheckpointFormatError, match="to_dense"):
        read_checkpoint(_save(tmp_path, state))


# -- corrupt files ---------------------------------------------------------------------------


def _zip_with(tmp_path: Path, members: dict[str, bytes]) -> Path:
    path = tmp_path / "bad.pth"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


CORRUPTIONS = {
    "random-bytes": lambda tmp, good: _write(tmp, os.urandom(4096)),
    "truncated-zip": lambda tmp, good: _write(tmp, good[: len(good) // 2]),
    "zip-without-data-pkl": lambda tmp, good: _zip_with(tmp, {"archive/version": b"3\n"}),
    "zip-with-garbage-pickle": lambda tmp, good: _zip_with(tmp, {"archive/data.pkl": b"\x80\x02garbage",
                                                                  "archive/version": b"3\n"}),
    "legacy-pickle-truncated": lambda tmp, good: _write(tmp, pickle.dumps({"a": 1})[:-3]),
    "deep-nesting": lambda tmp, good: _write(tmp, b"\x80\x02" + b"]" * 200_000 + b"."),
    "pickle-of-a-string": lambda tmp, good: _write(tmp, pickle.dumps("just text")),
    "zip-missing-storage": lambda tmp, good: _drop_storage(tmp, good),
}


def _write(tmp: Path, data: bytes) -> Path:
    path = tmp / "bad.pth"
    path.write_bytes(data)
    return path


def _drop_storage(tmp: Path, good: bytes) -> Path:
    src = zipfile.ZipFile(io.BytesIO(good))
    members = {i.filename: src.read(i.filename) for i in src.infolist() if "/data/" not in i.filename}
    return _zip_with(tmp, members)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_pickle_is_a_checkpoint_format_error(tmp_path, kind):
    buffer = io.BytesIO()
    torch.save({"w": torch.randn(4, 4), "b": torch.randn(4)}, buffer)
    path = CORRUPTIONS[kind](tmp_path, buffer.getvalue())
    with pytest.raises(CheckpointFormatError):
        read_checkpoint(path)


@pytest.mark.parametrize("path", [None, 123, b"/tmp/x.pth"])
def test_read_checkpoint_refuses_a_path_of_the_wrong_type(path):
    with pytest.raises(InvalidArgumentError):
        read_checkpoint(path)


def test_a_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointFormatError, match="not a file"):
        read_checkpoint(tmp_path)


# -- memory maps -----------------------------------------------------------------------------


def _mapped_files() -> set[str]:
    with open("/proc/self/maps") as fh:
        return {line.split(None, 5)[5].strip() for line in fh if len(line.split(None, 5)) == 6}


needs_proc = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps")


@needs_proc
def test_a_users_own_file_is_not_left_mapped(tmp_path, resnet18_weights):
    path = tmp_path / "mine.safetensors"
    path.write_bytes(safetensors_bytes(resnet18_weights))
    model = zooadapt.load("resnet18", weights=path)
    assert str(path) not in _mapped_files()
    assert torch.equal(model.conv1.weight, resnet18_weights["conv1.weight"])


@needs_proc
def test_a_users_own_zip_pickle_is_not_left_mapped(tmp_path, resnet18_weights):
    path = _save(tmp_path, resnet18_weights, "mine.pth")
    model = zooadapt.load("resnet18", weights=path)
    assert str(path) not in _mapped_files()
    assert torch.equal(model.fc.weight, resnet18_weights["fc.weight"])


@needs_proc
def test_hub_cache_blobs_stay_mapped(hub_cache, resnet18_weights):
    model = zooadapt.load("resnet18")
    blob = fetch(WeightSource(repo_id="timm/resnet18.tv_in1k")).path.resolve()
    assert is_immutable_cache_file(blob)
    assert str(blob) in _mapped_files()
    assert torch.equal(model.layer1[0].conv1.weight, resnet18_weights["layer1.0.conv1.weight"])


def test_only_cache_blobs_count_as_immutable(tmp_path):
    plain = tmp_path / "models--org--name" / "blobs" / ("a" * 64)
    plain.parent.mkdir(parents=True)
    plain.write_bytes(b"x")
    assert is_immutable_cache_file(plain)
    assert not is_immutable_cache_file(tmp_path / "model.safetensors")
    odd = tmp_path / "elsewhere" / "blobs" / ("a" * 64)
    odd.parent.mkdir(parents=True)
    odd.write_bytes(b"x")
    assert not is_immutable_cache_file(odd)


_OVERWRITE = """
import sys, torch, zooadapt
path = sys.argv[1]
model = zooadapt.load("resnet18", weights=path, num_classes=3, pretrained=True)
before = model.layer4[1].conv2.weight.detach().clone()
sd = {k: v for k, v in model.state_dict().items()}
if path.endswith(".safetensors"):
    from safetensors.torch import save_file
    save_file({k: torch.zeros_like(v) for k, v in sd.items()}, path)
else:
    torch.save({k: torch.zeros_like(v) for k, v in sd.items()}, path)  # the common habit: same path
with open(path, "r+b") as fh:
    fh.truncate(16)  # and worse: cut short in place
model.eval()(torch.randn(2, 3, 32, 32))
assert torch.equal(model.layer4[1].conv2.weight, before), "the model changed with its file"
print("ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_overwriting_the_loaded_file_neither_crashes_nor_changes_the_model(tmp_path, resnet18_weights, suffix):
    path = tmp_path / f"mine{suffix}"
    if suffix == ".safetensors":
        path.write_bytes(safetensors_bytes(resnet18_weights))
    else:
        torch.save(resnet18_weights, path)
    script = tmp_path / "overwrite.py"
    script.write_text(_OVERWRITE)
    proc = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ZOOADAPT_LOCK": "off"})
    assert proc.returncode == 0, f"exit {proc.returncode} (SIGBUS is -7): {proc.stderr[-2000:]}"
    assert proc.stdout.strip() == "ok"


def test_deleting_the_loaded_file_changes_nothing(tmp_path, resnet18_weights):
    path = tmp_path / "mine.safetensors"
    path.write_bytes(safetensors_bytes(resnet18_weights))
    model = zooadapt.load("resnet18", weights=path)
    path.unlink()
    assert torch.equal(model.conv1.weight, resnet18_weights["conv1.weight"])

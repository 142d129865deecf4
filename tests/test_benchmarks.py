"""The load fast path the benchmark measures, and the benchmark's fairness.

``_assign`` puts tensors into their slots without ``load_state_dict``'s per-module walk; it must
change no result. (``build_on_meta``, the other half of the fast path, is tested in
``test_meta_build.py``.)
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

import zooadapt
from zooadapt.errors import CheckpointFormatError
from zooadapt.loading import meta_build, placement
from zooadapt.plugin_api import get_registry

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "benchmarks" / "bench_load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_load"] = module
    spec.loader.exec_module(module)
    return module


def test_fast_assign_matches_load_state_dict_and_defers_to_hooks():
    family = get_registry().family("resnet")
    from zooadapt.testing import torchvision_state_dict

    state = torchvision_state_dict("resnet18", seed=2)
    fast = meta_build.build_on_meta(family, "resnet18", 1000)
    placement._assign(fast, dict(state))
    slow = meta_build.build_on_meta(family, "resnet18", 1000)
    slow.load_state_dict(dict(state), assign=True)
    for (name, a), (_, b) in zip(fast.state_dict(keep_vars=True).items(), slow.state_dict(keep_vars=True).items()):
        assert torch.equal(a, b) and type(a) is type(b) and a.requires_grad == b.requires_grad, name
        assert a.data_ptr() == state[name].data_ptr()  # assigned, not copied

    hooked = meta_build.build_on_meta(family, "resnet18", 1000)
    calls = []
    hooked.layer1.register_load_state_dict_pre_hook(lambda *args, **kw: calls.append(1))
    placement._assign(hooked, dict(state))
    assert calls  # a module that customises loading gets load_state_dict itself


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet34", "mobilenet_v2", "alexnet"])
def test_benchmark_manual_way_freezes_what_zooadapt_freezes(name):
    """The comparison is fair only if the manual way freezes the same parameters."""
    bench = _bench()
    spec = bench.SPECS[name]
    model = zooadapt.load(name, pretrained=False, freeze=spec.freeze)
    ours = {n for n, p in model.named_parameters() if not p.requires_grad}
    manual = {n for n, _ in model.named_parameters() if bench.manual_frozen(name, n)}
    assert ours == manual and ours


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v3_large", "efficientnet_b0", "regnety_016", "vit_small_patch16_224",
                                  "convnext_tiny"])
@pytest.mark.slow
def test_benchmark_small_models_freeze_a_real_part(name):
    """Each timm-compared model's freeze spec names stages it has, and leaves the head training."""
    bench = _bench()
    spec = bench.SPECS[name]
    model = zooadapt.load(name, pretrained=False, freeze=spec.freeze)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    head = model.zooadapt.stages.head
    assert frozen and not any(n.startswith(head + ".") for n in frozen)
    assert any(p.requires_grad for p in model.parameters())


def _safetensors_file(path: Path, header: dict, data: bytes) -> Path:
    import json

    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


def test_mapped_safetensors_equal_the_librarys_reading(tmp_path):
    from safetensors.torch import load_file, save_file

    from zooadapt.weights.checkpoint import _map_safetensors, read_checkpoint

    state = {"half": torch.randn(3, dtype=torch.float16), "w": torch.randn(2, 5), "step": torch.tensor(7),
             "empty": torch.zeros(0, 4), "mask": torch.tensor([True, False]),
             "bf": torch.randn(5, dtype=torch.bfloat16),
             "i8": torch.arange(-3, 4, dtype=torch.int8)}
    path = tmp_path / "mixed.safetensors"
    save_file(state, path, metadata={"format": "pt"})
    mapped, ref = _map_safetensors(path), load_file(path)
    assert mapped is not None and list(mapped) == list(ref)  # same order: by offset in the file
    for key, tensor in ref.items():
        assert mapped[key].dtype == tensor.dtype and torch.equal(mapped[key], tensor), key
    got = read_checkpoint(path)
    got["w"].add_(1)  # copy-on-write: the file keeps its bytes
    assert torch.equal(load_file(path)["w"], state["w"])


@pytest.mark.parametrize("header", [
    {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2],
                                                                       "data_offsets": [4, 12]}},  # overlap
    {"a": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}, "b": {"dtype": "F32", "shape": [1],
                                                                       "data_offsets": [2, 6]}},  # misaligned
    {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},  # size disagrees with the shape
    {"a": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}},  # a dtype this reader does not know
])
def test_unusual_safetensors_go_to_the_library(tmp_path, header):
    from zooadapt.weights.checkpoint import _map_safetensors

    size = max(info["data_offsets"][1] for info in header.values())
    path = _safetensors_file(tmp_path / "odd.safetensors", header, bytes(size))
    assert _map_safetensors(path) is None


@pytest.mark.slow
def test_truncated_safetensors_still_reports_the_librarys_error(tmp_path, resnet18_weights):
    from zooadapt.testing import safetensors_bytes
    from zooadapt.weights.checkpoint import _map_safetensors

    data = safetensors_bytes(resnet18_weights)
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[:-100])
    assert _map_safetensors(path) is None
    with pytest.raises(CheckpointFormatError, match="truncated or corrupt"):
        zooadapt.plugin_api.read_checkpoint(path)


@pytest.mark.slow
def test_mapped_tensors_train_independently(tmp_path, resnet18_weights):
    """Each tensor has its own version counter: an in-place step on one parameter must not
    invalidate what autograd saved of another (views of one buffer would share the counter)."""
    from zooadapt.testing import safetensors_bytes

    path = tmp_path / "r18.safetensors"
    path.write_bytes(safetensors_bytes(resnet18_weights))
    tensors = zooadapt.plugin_api.read_checkpoint(path)
    a, b = tensors["layer4.1.conv2.weight"], tensors["layer4.1.conv1.weight"]
    before = b._version
    a.add_(1)
    assert b._version == before
    assert tensors["fc.weight"].stride() == resnet18_weights["fc.weight"].stride()
    model = zooadapt.load("resnet18", weights=path, num_classes=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):  # a version clash raises "modified by an inplace operation" in backward
        loss = model(torch.randn(2, 3, 32, 32)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.slow
def test_mapped_tensors_save_like_any_other(tmp_path, resnet18_weights):
    """torch.save of a loaded model writes each tensor's own bytes: one storage shared by
    tensors of several dtypes cannot be saved, and a shared one would be saved whole."""
    import io

    from zooadapt.testing import safetensors_bytes

    path = tmp_path / "r18.safetensors"
    path.write_bytes(safetensors_bytes(resnet18_weights))
    tensors = zooadapt.plugin_api.read_checkpoint(path)
    head = {"w": tensors["fc.weight"], "steps": tensors["bn1.num_batches_tracked"]}
    buffer = io.BytesIO()
    torch.save(head, buffer)
    assert buffer.tell() < tensors["fc.weight"].numel() * 4 + 100_000
    buffer.seek(0)
    again = torch.load(buffer)
    assert torch.equal(again["w"], resnet18_weights["fc.weight"]) and again["steps"].dtype == torch.int64
    model = zooadapt.load("resnet18", weights=path, num_classes=3)
    torch.save({"epoch": 1, "state_dict": model.state_dict()}, tmp_path / "ckpt.pth")


def test_fresh_child_reports_its_full_collections_and_cpu_time():
    """--fresh parses four numbers from each child: the GC timer counts full collections only,
    and the CPU time is the child's own (its busy loop shows up in it)."""
    bench = _bench()
    body = ("t1 = time.time()\ngc.collect(0)\ngc.collect(1)\ngc.collect()\ngc.collect(2)\n"
            "end = time.process_time() + 0.2\nwhile time.process_time() < end: pass\nt2 = time.time()\n")
    run = bench._run_fresh([sys.executable, "-c", bench._GC_TIMER + body + "print(t1, t2, *_gc[:2], flush=True)"],
                           env=dict(os.environ))
    assert run["gc_count"] == 2  # the two full collections, not the generation-0 and -1 ones
    assert 0 < run["gc"] < run["load"]
    assert run["cpu"] >= 0.2  # the child's busy loop
    assert abs(run["startup"] + run["load"] + run["exit"] - run["wall"]) < 1e-6

"""What a fresh process pays: ``zooadapt list`` and ``zooadapt info NAME`` answer without torch.

``info`` builds a model's description once (that imports torch, and timm for timm names) and
keeps it in ``$ZOOADAPT_CACHE`` under a key of the versions and sources it depends on
(``zooadapt.host.descriptions``); later processes read it back. The subprocess tests observe
the imports with ``python -X importtime``; no test here times anything (``benchmarks/bench_load.py
--fresh`` does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zooadapt.cli import info as info_cli
from zooadapt.host import descriptions
from zooadapt.host.registry import get_registry

HEAVY = ("torch", "timm", "torchvision")


def _imported(stderr: str) -> set[str]:
    """Top-level names of the modules ``-X importtime`` reports."""
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def _zooadapt(env: dict[str, str], *argv: str) -> tuple[str, set[str]]:
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "zooadapt", *argv], capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, _imported(result.stderr)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    environ = {**os.environ, "ZOOADAPT_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    environ.pop("COLUMNS", None)
    return environ


@pytest.mark.slow
def test_list_imports_neither_torch_nor_timm(env):
    _zooadapt(env, "list", "resnet*")  # the first run may build the cache of timm's names (in a child)
    out, imported = _zooadapt(env, "list")
    assert "resnet50" in out and "efficientnet_b0" in out
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "efficientnet_b0"])
def test_info_answers_from_the_cached_description_without_torch(env, name):
    """The first ``info`` builds (torch, timm for a timm name); the second reads, and says the same."""
    built, first = _zooadapt(env, "info", name, "--json")
    assert "torch" in first
    read, second = _zooadapt(env, "info", name, "--json")
    assert not second & set(HEAVY), sorted(second & set(HEAVY))
    assert read == built
    assert json.loads(read)["total_params"] > 1_000_000
    table, third = _zooadapt(env, "info", name)
    assert not third & set(HEAVY) and "stages (input to output):" in table


def test_remembered_description_is_the_built_one(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOOADAPT_CACHE", str(tmp_path))
    built = info_cli.describe("resnet18")[0]
    assert info_cli.remembered("resnet18") == built  # stored
    monkeypatch.setattr(info_cli, "describe", lambda name: pytest.fail("read back, not built again"))
    again = info_cli.remembered("resnet18")
    assert again == built and list(again) == list(built)  # the same keys, in the same order


def test_description_is_read_only_under_its_own_key(tmp_path):
    key = descriptions.description_key("resnet18", get_registry())
    assert descriptions.read_description(tmp_path, "resnet18", key) is None
    descriptions.write_description(tmp_path, "resnet18", key, {"name": "resnet18"})
    assert descriptions.read_description(tmp_path, "resnet18", key) == {"name": "resnet18"}
    for changed in ({**key, "packages": {**key["packages"], "torch": "0.0"}}, {**key, "entry": None},
                    {**key, "sources": {**key["sources"], "x.py": [1, 1]}}):
        assert descriptions.read_description(tmp_path, "resnet18", changed) is None
    assert descriptions.read_description(tmp_path, "resnet34", key) is None  # another name, another file


def test_description_key_follows_the_sources_and_the_entry(tmp_path):
    source = tmp_path / "plugin.py"
    source.write_text("x = 1\n")
    registry = get_registry()
    before = descriptions.description_key("resnet18", registry, [source])
    assert descriptions.description_key("resnet18", registry, [source]) == before  # stable
    source.write_text("x = 22\n")
    assert descriptions.description_key("resnet18", registry, [source]) != before  # an edit is a new key
    assert before["entry"] and descriptions.description_key("no_such_model", registry)["entry"] is None


def test_unwritable_cache_still_answers(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("ZOOADAPT_CACHE", str(blocker))  # a file where the directory should be
    assert info_cli.remembered("resnet18")["name"] == "resnet18"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny",
                                  "vit_small_patch16_224"])
def test_fresh_benchmark_freezes_as_many_weights_by_hand_as_zooadapt(name):
    """``bench_load.py --fresh`` freezes timm's model by parameter name: the same stages, so the
    same number of frozen weights (the layouts differ for MobileNet v3, so names cannot be compared)."""
    import importlib.util

    import timm
    import torch

    import zooadapt

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_load.py"
    spec = importlib.util.spec_from_file_location("bench_load_fresh", path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    entry = bench.SPECS[name]
    ours = zooadapt.load(name, pretrained=False, freeze=entry.freeze)
    with torch.device("meta"):
        theirs = timm.create_model(entry.timm_name.split(".")[0])
    frozen = sum(p.numel() for p in ours.parameters() if not p.requires_grad)
    by_hand = sum(p.numel() for n, p in theirs.named_parameters() if n.startswith(bench.TIMM_FROZEN[name]))
    assert frozen == by_hand and frozen


def test_no_description_is_kept_while_a_hand_registered_plugin_is_loaded(tmp_path):
    """A plugin registered in the process (a test's, a notebook's) has no version to key on."""
    import types

    from zooadapt.host.plugin_manager import get_plugin_manager

    pm = get_plugin_manager()
    pm.register(types.SimpleNamespace(), name="by_hand")
    registry = types.SimpleNamespace(pm=pm, models={})
    key = descriptions.description_key("resnet18", registry)
    assert key is None
    descriptions.write_description(tmp_path, "resnet18", key, {"name": "resnet18"})
    assert not (tmp_path / "descriptions").exists()
    assert descriptions.read_description(tmp_path, "resnet18", key) is None

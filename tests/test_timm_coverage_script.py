"""``scripts/timm_coverage.py``: how it classifies an architecture, and the README block it writes.

The script's ``check`` runs on two of timm's test models (exact) and on broken loads made by
wrapping ``zooadapt.load`` (a tensor changed, a norm's eps changed, a refusal, a crash, memory
running out), so each outcome is seen to be told apart from the others.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import zooadapt
from zooadapt.errors import IncompatibleCheckpointError

pytest.importorskip("timm")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import readme_markers  # noqa: E402
import timm_coverage  # noqa: E402


@pytest.fixture
def broken_load(monkeypatch):
    """Make ``zooadapt.load`` return (or raise) what ``change`` makes of its real result."""
    real = zooadapt.load

    def install(change):
        monkeypatch.setattr(zooadapt, "load", lambda *a, **kw: change(real(*a, **kw)) if callable(change) else
                            (_ for _ in ()).throw(change))

    return install


@pytest.mark.parametrize("arch", ["test_convnext", "test_vit"])
def test_a_tiny_architecture_loads_exactly(arch):
    row = timm_coverage.check(arch)
    assert (row["outcome"], row["reason"]) == ("exact", "")
    assert row["params"] > 0
    assert "features_only: timm's maps and feature_info" in row["notes"]
    assert not any(note.startswith("tensors only") for note in row["notes"])


def test_over_the_parameter_limit_only_tensors_are_compared():
    row = timm_coverage.check("test_vit", param_limit=1000)
    assert row["outcome"] == "exact"
    assert any(note.startswith("tensors only") for note in row["notes"])


def test_a_name_timm_cannot_build_is_not_held_against_zooadapt():
    row = timm_coverage.check("no_such_architecture_xyz")
    assert row["outcome"] == "timm cannot build"
    assert "no_such_architecture_xyz" in row["reason"]


def test_a_changed_tensor_is_wrong(broken_load):
    def change(model):
        with torch.no_grad():
            next(p for n, p in model.named_parameters() if n.startswith("stem")).add_(1.0)
        return model

    broken_load(change)
    row = timm_coverage.check("test_convnext")
    assert row["outcome"] == "wrong"
    assert row["reason"].startswith("1 tensors differ from the file's: stem.")


def test_the_same_tensors_computing_something_else_are_wrong(broken_load):
    """The issue's BatchNorm-eps case: every tensor loads, the outputs are not timm's."""
    def change(model):
        for module in model.modules():
            if hasattr(module, "eps"):
                module.eps = 0.5
        return model

    broken_load(change)
    row = timm_coverage.check("test_convnext")
    assert row["outcome"] == "wrong"
    assert row["reason"].startswith("outputs differ from timm's model")


def test_a_zooadapt_error_is_a_refusal_with_its_first_line(broken_load):
    broken_load(IncompatibleCheckpointError("the file holds two heads\nmore detail"))
    row = timm_coverage.check("test_convnext")
    assert (row["outcome"], row["reason"]) == ("refused", "IncompatibleCheckpointError: the file holds two heads")


def test_any_other_exception_is_wrong_and_memory_is_no_result(broken_load):
    broken_load(TypeError("bad operand"))
    assert timm_coverage.check("test_convnext")["reason"] == "load crashed: TypeError: bad operand"
    broken_load(MemoryError())
    assert timm_coverage.check("test_convnext")["outcome"] == "no result"


def test_the_readme_block_counts_outcomes_and_groups_reasons():
    record = {"timm": "1.0", "torch": "2.0", "total": 5, "param_limit": 100_000_000, "date": "2026-12-06",
              "duration_s": 120, "rows": {
                  "a_tiny": {"outcome": "exact", "reason": "", "notes": []},
                  "b_huge": {"outcome": "exact", "reason": "", "notes": ["tensors only (900M parameters > 100M)"]},
                  "c_s": {"outcome": "refused", "reason": "PluginError: 'c_s' has 2 heads ['x', 'y']", "notes": []},
                  "c_m": {"outcome": "refused", "reason": "PluginError: 'c_m' has 3 heads ['z']", "notes": [],
                          "commit": "abc1234"}}}
    text = timm_coverage.table(record)
    assert "Partial: 4 of 5 architectures" in text
    assert "rows checked on commits ? (3), abc1234 (1)" in text
    assert "| exact (1 with timm's outputs, 1 over 100M parameters on tensors only; 0 where" in text
    assert "| refused | PluginError: '…' has N heads […] | 2 | `c_m`, `c_s` |" in text
    record["total"] = 4
    assert "Partial" not in timm_coverage.table(record)


def test_the_readmes_table_is_the_committed_records():
    """The README's coverage table is the script's output for the committed record, not typed:
    run ``scripts/timm_coverage.py --readme-only`` after the record changes."""
    import json

    record = json.loads(timm_coverage.RECORD.read_text(encoding="utf-8"))
    readme = (timm_coverage.ROOT / "README.md").read_text(encoding="utf-8")
    assert timm_coverage.table(record) in readme


def test_the_block_is_written_between_its_markers_only():
    text = "intro\n<!-- x:start -->\nold\n<!-- x:end -->\nrest\n"
    assert readme_markers.replace_block(text, "x", "new\n") == "intro\n<!-- x:start -->\nnew\n<!-- x:end -->\nrest\n"
    with pytest.raises(readme_markers.MarkersMissingError, match="add them"):
        readme_markers.replace_block("no markers", "x", "new")


@pytest.mark.slow
def test_the_script_records_rows_and_resumes(tmp_path):
    record = tmp_path / "coverage.json"
    argv = ["--names", "test_convnext*", "--limit", "1", "--json", str(record), "--no-readme", "--quiet"]
    assert timm_coverage.main(argv) == 0
    import json

    first = json.loads(record.read_text())
    assert list(first["rows"]) == ["test_convnext"] and first["rows"]["test_convnext"]["outcome"] == "exact"
    assert timm_coverage.main([*argv, "--resume"]) == 0
    assert list(json.loads(record.read_text())["rows"]) == ["test_convnext", "test_convnext2"]
    assert timm_coverage.main([*argv, "--resume", "--commit", "f00d"]) == 0
    rows = json.loads(record.read_text())["rows"]
    assert "commit" not in rows["test_convnext"] and rows["test_convnext3"]["commit"] == "f00d"

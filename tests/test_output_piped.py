"""Piped output is never cut (issue #22): only a real terminal gets output fitted to it.

``COLUMNS`` says how wide a terminal is, not a pipe: ``zooadapt list | grep NAME`` must find
every name and every description whole, ``zooadapt fetch`` must print a cache path that opens,
and ``zooadapt info`` keeps each value on its line. In a terminal, tables fit and prose wraps
at spaces, never inside a path or a hash.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import zooadapt
from zooadapt.cli import _common, main
from zooadapt.loading.report import plain_rule
from zooadapt.plugin_api import get_registry
from zooadapt.testing import hub_environment


def run(capsys, *argv: str) -> str:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.fixture
def terminal(monkeypatch):
    """stdout as a terminal of ``columns`` columns."""
    def as_terminal(columns: int) -> None:
        monkeypatch.setattr(_common, "_is_terminal", lambda: True)
        monkeypatch.setenv("COLUMNS", str(columns))
    return as_terminal


@pytest.mark.parametrize("columns", ["40", "60", None])
def test_piped_list_cuts_nothing_whatever_columns_says(capsys, monkeypatch, columns):
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    out = run(capsys, "list", "resnet*", "mobilenet*", "--source", "registry")
    lines = out.splitlines()
    assert lines[0].split() == ["name", "source", "family", "weights", "description"]  # the weights column stays
    registry = get_registry()
    for line in lines[1:]:
        name = line.split()[0]
        entry = registry.models[name]
        assert line.rstrip().endswith(entry.description) and "…" not in line
        assert f" {zooadapt.cli.list.short_source(entry.source)} " in line


def test_list_in_a_terminal_fits_it(capsys, terminal):
    terminal(60)
    out = run(capsys, "list", "resnet*", "mobilenet*", "--source", "registry")
    assert all(len(line) <= 60 for line in out.splitlines())
    assert "…" in out  # descriptions gave way, names did not
    assert {line.split()[0] for line in out.splitlines()[1:]} >= {"resnet18", "mobilenet_v3_large"}


def _fetched_path(out: str) -> str:
    return next(line.split("-> ", 1)[1] for line in out.splitlines() if line.startswith("  -> "))


@pytest.mark.parametrize("piped", [True, False])
def test_fetch_never_cuts_the_cache_path(capsys, monkeypatch, terminal, resnet18_weights, piped):
    if piped:
        monkeypatch.setenv("COLUMNS", "40")
    else:
        terminal(40)
    out = run(capsys, "fetch", "resnet18", "--quiet", "--no-lock")
    path = _fetched_path(out)
    assert "…" not in out and Path(path).is_file() and len(path) > 40
    assert out.splitlines()[0] == "resnet18: hf://timm/resnet18.tv_in1k@main/model.safetensors"
    words = out.split()
    assert len(words[words.index("sha256") + 1].rstrip(",")) == 64  # a hash is never split over lines either


def test_info_piped_keeps_each_value_on_its_line(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    info = zooadapt.cli.info.describe("mobilenet_v2")[0]
    out = run(capsys, "info", "mobilenet_v2")
    lines = out.splitlines()
    assert lines[0] == f"{info['name']}: {info['family']}/{info['arch']}  {info['description']}"
    assert f"weights: {info['weights']}" in lines
    rules = lines[lines.index("key rules (applied in order until a key names a model key):") + 1:][:len(
        info["key_rules"])]
    assert rules == [f"  {plain_rule(r)}" for r in info["key_rules"]]
    assert any(line.startswith("preprocessing: ") and line.endswith("std 0.229,0.224,0.225") for line in lines)


def test_info_in_a_terminal_wraps_between_words_only(capsys, monkeypatch, terminal):
    monkeypatch.delenv("COLUMNS", raising=False)
    whole = run(capsys, "info", "mobilenet_v2")
    terminal(40)
    wrapped = run(capsys, "info", "mobilenet_v2")
    assert len(wrapped.splitlines()) > len(whole.splitlines())  # it did wrap

    def prose(out: str) -> list[str]:  # the words outside the stage table (a table's cells give way)
        before, _, rest = out.partition("stages (input to output):")
        return sorted((before + "key rules" + rest.partition("key rules")[2]).split())

    assert prose(wrapped) == prose(whole)  # at spaces: every word whole
    assert "hf://timm/mobilenetv2_100.ra_in1k@main/model.safetensors" in wrapped.split()


def test_prose_is_not_wrapped_when_piped(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    text = "a " * 60 + "/a/very/long/path/" + "x" * 80
    assert _common.wrap(text, 40) == text
    monkeypatch.setattr(_common, "_is_terminal", lambda: True)
    lines = _common.wrap(text, 40).splitlines()
    assert len(lines) > 1 and lines[-1].strip() == "/a/very/long/path/" + "x" * 80


@pytest.mark.slow
def test_a_real_pipe_with_columns_set_cuts_nothing(tmp_path, hub):
    env = {**os.environ, **hub_environment(hub.url, tmp_path / "hf"), "COLUMNS": "50"}
    result = subprocess.run([sys.executable, "-m", "zooadapt", "list", "resnet*", "--source", "registry"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[3] == "weights" and "…" not in result.stdout
    assert max(len(line) for line in lines) > 50

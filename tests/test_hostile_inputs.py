"""Hostile inputs: nothing hangs, nothing reads without bound, nothing escapes as a raw error.

Registry and lock files are read only when they are regular files of at most 16 MiB (a FIFO,
``/dev/zero`` or ``/dev/urandom`` is a clear error, at once); a pickle nested thousands deep or
expanding to tens of megabytes is refused before it stalls the reader; a plugin calling
``sys.exit`` is reported as a broken plugin; a 5,000-digit freeze count is a ``FreezeSpecError``.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import zooadapt
from zooadapt.contract.errors import (
    CheckpointBoundsError,
    FreezeSpecError,
    LockFileError,
    PluginError,
    RegistryError,
)
from zooadapt.contract.stages import Stage, StageMap
from zooadapt.host.registry import MAX_TEXT_BYTES, get_registry, read_registry_file
from zooadapt.plugin_api import hookimpl
from zooadapt.weights.checkpoint import MAX_PICKLE_BYTES, read_checkpoint
from zooadapt.weights.lockfile import LockFile, find_lock

HANGS = [pytest.param("fifo", id="fifo"), pytest.param("/dev/zero", id="dev-zero"),
         pytest.param("/dev/urandom", id="dev-urandom")]


def _special(kind: str, tmp_path: Path) -> str:
    if kind == "fifo":
        fifo = tmp_path / "a-fifo"
        os.mkfifo(fifo)
        return str(fifo)
    return kind


def _in_child(code: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that must finish within ``timeout`` (before the fix it hung)."""
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=timeout)


# -- registry and lock files that are not files ---------------------------------------------------------


@pytest.mark.parametrize("kind", HANGS)
def test_a_registry_file_that_is_not_a_regular_file_is_refused_at_once(kind, tmp_path):
    path = _special(kind, tmp_path)
    with pytest.raises(RegistryError, match="not a regular file"):
        read_registry_file(path)


@pytest.mark.slow
@pytest.mark.parametrize("kind", HANGS)
def test_zooadapt_registry_naming_a_fifo_or_device_fails_in_a_fresh_process_instead_of_hanging(kind, tmp_path):
    path = _special(kind, tmp_path)
    done = _in_child("import zooadapt\ntry:\n    zooadapt.list_models()\nexcept zooadapt.ZooadaptError as exc:\n"
                     "    print(type(exc).__name__, exc)\n", {"ZOOADAPT_REGISTRY": path})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "RegistryError" in done.stdout and path in done.stdout


@pytest.mark.parametrize("kind", HANGS)
def test_a_lock_file_that_is_not_a_regular_file_is_refused_at_once(kind, tmp_path, monkeypatch):
    path = _special(kind, tmp_path)
    with pytest.raises(LockFileError, match="not a regular file"):
        LockFile.read(path)
    monkeypatch.setenv("ZOOADAPT_LOCK", path)
    with pytest.raises(LockFileError, match="not a regular file"):
        find_lock()


def test_a_registry_file_over_the_cap_is_refused_without_reading_it(tmp_path):
    big = tmp_path / "big.toml"
    with open(big, "wb") as fh:
        fh.truncate(MAX_TEXT_BYTES + 1)  # sparse: nothing written, nothing read
    with pytest.raises(RegistryError, match="16 MiB"):
        read_registry_file(big)
    with pytest.raises(LockFileError, match="16 MiB"):
        LockFile.read(big)


def test_a_registry_file_that_is_not_utf8_is_a_registry_error_naming_it(tmp_path):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[models.caf\xe9]\nfamily = "resnet"\narch = "resnet18"\n')
    with pytest.raises(RegistryError, match="not UTF-8") as caught:
        read_registry_file(bad)
    assert str(bad) in str(caught.value)


def test_a_registry_path_that_is_a_directory_is_a_registry_error_naming_it(tmp_path, monkeypatch):
    with pytest.raises(RegistryError, match="is a directory") as caught:
        read_registry_file(tmp_path)
    assert str(tmp_path) in str(caught.value)
    monkeypatch.setenv("ZOOADAPT_REGISTRY", str(tmp_path))
    with pytest.raises(RegistryError, match="is a directory"):
        get_registry()


def test_a_missing_registry_file_is_a_registry_error_naming_it(tmp_path):
    with pytest.raises(RegistryError, match="does not exist") as caught:
        read_registry_file(tmp_path / "nowhere.toml")
    assert "nowhere.toml" in str(caught.value)


@pytest.mark.parametrize("text", ["models = 3\n", "[models]\nx = 1\n", "a = " + "[" * 5000 + "]" * 5000 + "\n"],
                         ids=["models-int", "model-int", "deep-arrays"])
def test_a_registry_file_of_the_wrong_shape_is_a_registry_error(tmp_path, text):
    bad = tmp_path / "shape.toml"
    bad.write_text(text)
    with pytest.raises(RegistryError):
        read_registry_file(bad)


# -- pickles past any real checkpoint's size or depth -----------------------------------------------------


def _nested(depth: int) -> dict:
    obj: dict = {"w": torch.zeros(2)}
    for _ in range(depth):
        obj = {"state_dict": obj}
    return obj


def test_a_checkpoint_nested_5000_levels_deep_is_refused_not_a_recursion_error(tmp_path):
    path = tmp_path / "deep.pth"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)  # torch.save pickles recursively
    try:
        torch.save(_nested(5000), path)
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(CheckpointBoundsError, match="nests its entries more than"):
        read_checkpoint(path)


def test_real_nesting_still_reads(tmp_path):
    path = tmp_path / "nested.pth"
    torch.save({"epoch": 1, "model": {"module": {"state_dict": {"w": torch.ones(2)}}}}, path)
    assert torch.equal(read_checkpoint(path)["w"], torch.ones(2))


def _zip_bomb(path: Path, pairs: int) -> int:
    """A real torch.save archive whose data.pkl grows a list by ``pairs`` (NONE, APPEND) opcodes,
    deflated (torch stores records uncompressed): a few kB on disk. Returns the pickle's size."""
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    original = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w") as out:
        for info in original.infolist():
            data = original.read(info.filename)
            if info.filename.endswith("data.pkl"):
                data = data[:2] + b"]" + b"Na" * pairs + b"q\x00" + data[2:]  # after PROTO 2: a list left on the stack
                size = len(data)
            out.writestr(info.filename, data, zipfile.ZIP_DEFLATED if info.filename.endswith(".pkl")
                         else zipfile.ZIP_STORED)
    return size


def test_a_small_zip_whose_pickle_expands_past_the_bound_is_refused_before_unpickling(tmp_path):
    path = tmp_path / "bomb.pth"
    size = _zip_bomb(path, MAX_PICKLE_BYTES // 2 + 1)
    assert size > MAX_PICKLE_BYTES and path.stat().st_size < 100_000
    with pytest.raises(CheckpointBoundsError, match="expands to"):
        read_checkpoint(path)


@pytest.mark.slow
def test_the_pickle_bound_is_far_above_a_real_training_checkpoint(tmp_path):
    """The measure the bound rests on: a training dict of a ResNet-152 (model, EMA, AdamW state)."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet152()
    state = model.state_dict()
    opt = torch.optim.AdamW(model.parameters())
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    path = tmp_path / "train.pth"
    torch.save({"epoch": 3, "state_dict": state, "optimizer": opt.state_dict(),
                "state_dict_ema": {k: v.clone() for k, v in state.items()}}, path)
    with zipfile.ZipFile(path) as archive:
        pickled = sum(i.file_size for i in archive.infolist() if i.filename.endswith(".pkl"))
    assert pickled * 50 < MAX_PICKLE_BYTES
    assert len(read_checkpoint(path)) == len(state)


def test_the_pickle_scan_stops_at_its_opcode_bound(tmp_path, monkeypatch):
    import zooadapt.weights.standins as standins

    monkeypatch.setattr(standins, "MAX_PICKLE_OPCODES", 1000)
    path = tmp_path / "many.pth"
    torch.save({f"w{i}": torch.zeros(1) for i in range(200)}, path)
    with pytest.raises(CheckpointBoundsError, match="opcodes"):
        standins._needed_globals(path)


# -- raw errors ----------------------------------------------------------------------------------------


@pytest.fixture
def stages() -> StageMap:
    return StageMap((Stage("stem", ("conv1",)), Stage("layer1", ("layer1",))), head="fc")


@pytest.mark.parametrize("spec", ["5" + "0" * 5000, " " + "9" * 5000, "²", "1" * 7, 10**5000, -(10**5000)],
                         ids=["5000-digits", "5000-nines", "superscript", "7-digits", "huge-int", "huge-negative"])
def test_a_freeze_count_that_is_no_count_is_a_freeze_spec_error(stages, spec):
    with pytest.raises(FreezeSpecError) as caught:
        stages.resolve(spec)
    assert len(str(caught.value)) < 1000


def test_a_small_freeze_count_still_works(stages):
    assert stages.resolve("1") == ("stem",)
    assert stages.resolve(" 2 ") == ("stem", "layer1")


class _Exiting:
    """A plugin whose every hook calls sys.exit."""

    @hookimpl
    def zooadapt_register_models(self, register):
        sys.exit("plugin register says bye")

    @hookimpl
    def zooadapt_resolve_model(self, name):
        raise SystemExit(3)

    @hookimpl
    def zooadapt_list_models(self, pattern):
        sys.exit(4)


@pytest.mark.slow
def test_a_plugin_calling_sys_exit_is_reported_not_the_end_of_the_process(caplog):
    from zooadapt.host.plugin_manager import load_plugins, plugin_failures

    load_plugins().register(_Exiting(), name="exiting")
    registry = get_registry()
    assert "resnet18" in registry.names()  # the listing went on without it
    with pytest.raises(zooadapt.ZooadaptError):
        registry.entry("no-such-model-at-all")
    failed = {(f.name, f.phase) for f in plugin_failures()}
    assert {("exiting", "zooadapt_register_models"), ("exiting", "zooadapt_resolve_model"),
            ("exiting", "zooadapt_list_models")} <= failed
    assert any("SystemExit" in f.error for f in plugin_failures())


def test_a_plugin_calling_sys_exit_is_a_plugin_error_in_strict_mode(monkeypatch):
    from zooadapt.host.plugin_manager import load_plugins

    monkeypatch.setenv("ZOOADAPT_STRICT_PLUGINS", "1")
    load_plugins().register(_Exiting(), name="exiting")
    with pytest.raises(PluginError, match="SystemExit"):
        get_registry()


def test_keyboard_interrupt_from_a_plugin_still_stops_the_process():
    from zooadapt.host.hooks import PluginHooks
    from zooadapt.host.plugin_manager import get_plugin_manager

    class Interrupted:
        @hookimpl
        def zooadapt_list_models(self, pattern):
            raise KeyboardInterrupt

    pm = get_plugin_manager()
    pm.register(Interrupted(), name="interrupted")
    with pytest.raises(KeyboardInterrupt):
        PluginHooks(pm).listed_models("*")


class _ExitingBuild:
    """A family whose build, or whose stage reader, calls sys.exit (a CLI helper called by mistake)."""

    def __init__(self, where: str) -> None:
        self.where = where

    @hookimpl
    def zooadapt_register_families(self, register):
        import torch.nn as nn

        from zooadapt.plugin_api import Family, Stage, StageMap

        def build(arch, num_classes=10):
            if self.where == "build":
                sys.exit("build says bye")
            return nn.Sequential(nn.Linear(4, 4), nn.Linear(4, num_classes))

        def stages(model):
            if self.where == "stages":
                raise SystemExit(5)
            return StageMap((Stage("body", ("0",)),), head="1")

        register(Family(name="exiting", build=build, stages=stages))

    @hookimpl
    def zooadapt_register_models(self, register):
        from zooadapt.plugin_api import ModelEntry, WeightSource

        register(ModelEntry(name="exiting-net", family="exiting", arch="net",
                            source=WeightSource(repo_id="test/exiting", filename="model.safetensors")))


@pytest.mark.parametrize("where", ["build", "stages"])
def test_a_plugin_calling_sys_exit_while_building_is_a_plugin_error(where):
    from zooadapt.host.plugin_manager import load_plugins
    from zooadapt.host.registry import reset_registry

    pm = load_plugins()
    plugin = _ExitingBuild(where)
    pm.register(plugin, name="exiting-build")
    reset_registry()
    try:
        with pytest.raises(PluginError, match="SystemExit"):
            zooadapt.load("exiting-net", pretrained=False)
    finally:
        pm.unregister(plugin)
        reset_registry()


@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "/dev/urandom"])
def test_a_pipe_or_device_as_weights_is_named_as_such_not_as_missing(special, tmp_path, capsys):
    import os

    path = tmp_path / "pipe" if special == "fifo" else special
    if special == "fifo":
        os.mkfifo(path)
    from zooadapt.cli import main

    assert main(["inspect", str(path), "--model", "resnet18"]) == 2
    err = capsys.readouterr().err
    assert "is not a regular file" in err and "does not exist" not in err

"""Weights out of any training checkpoint, with none of its code run (issue #24, part 4).

A training framework pickles its own objects beside the weights. These tests write such
checkpoints with a real package (``FRAMEWORK``: a dataclass, an Enum, classes with
``__reduce__`` and ``__setstate__``, dict/list/OrderedDict subclasses, an object holding
tensors, whole ``nn.Module`` subclasses), then make that package importable but not imported:
importing it leaves an ``IMPORTED`` marker, running any of its methods or functions a ``RAN``
marker. Reading must give every tensor exactly, import nothing and run nothing. Hostile
pickles (``os.system``, ``builtins.eval``…) are refused by name and run nothing either.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import importlib
import io
import os
import pickle
import posix
import subprocess
import sys
import textwrap
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zooadapt
from zooadapt.errors import CheckpointFormatError, MissingDependencyError, UnsafeCheckpointError
from zooadapt.weights.checkpoint import read_checkpoint
from zooadapt.weights.standins import StandIn, hostile_names, read_with_standins

FRAMEWORK = '''
"""A stand-in for a training framework: the objects its checkpoints pickle beside the weights."""
import collections
import dataclasses
import enum
import pathlib

import torch
import torchvision

_HERE = pathlib.Path(__file__).resolve().parent
(_HERE.parent / "IMPORTED").write_text("imported")


def _ran(what):
    (_HERE.parent / "RAN").write_text(what)


@dataclasses.dataclass
class Config:
    lr: float = 0.1
    epochs: int = 90
    milestones: tuple = (30, 60)


class Phase(enum.Enum):
    TRAIN = "train"
    EVAL = "eval"


class History:
    """A loss history with a tensor in it; unpickling it for real runs ``__setstate__``."""

    def __init__(self):
        self.losses = [2.5, 1.25]
        self.best = torch.tensor([0.5, 0.25])

    def __setstate__(self, state):
        _ran("History.__setstate__")
        self.__dict__.update(state)


def make_reduced(values):
    _ran("make_reduced")
    return Reduced(values)


class Reduced:
    def __init__(self, values):
        self.values = values

    def __reduce__(self):
        return (make_reduced, (self.values,))


class Meta(dict):
    """An AttributeDict-like dict subclass, with an attribute of its own."""


class Losses(list):
    pass


class Ordered(collections.OrderedDict):
    pass


class Holder:
    """A training state holding tensors in nested containers."""

    def __init__(self, inner):
        self.inner = inner

    def __setstate__(self, state):
        _ran("Holder.__setstate__")
        self.__dict__.update(state)


class MyResNet(torchvision.models.ResNet):
    """A project's ResNet-18 with a non-persistent buffer and a config attribute."""

    def __init__(self, num_classes=3):
        super().__init__(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        self.register_buffer("pixel_mean", torch.zeros(3), persistent=False)
        self.config = Config()


class Backboned(torch.nn.Module):
    """A project's model wrapping a timm backbone."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.history = History()
        self.phase = Phase.TRAIN
'''

ARCHS = {"resnet18": "torchvision", "mobilenet_v2": "torchvision", "resnet10t": "timm"}


def _model(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if ARCHS[arch] == "timm":
        import timm

        return timm.create_model(arch, num_classes=3)
    import torchvision

    return getattr(torchvision.models, arch)(num_classes=3)


class Framework:
    """The package above, written once per module under a fresh name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = f"zooadapt_absent_{uuid.uuid4().hex[:8]}"
        (root / self.name).mkdir()
        (root / self.name / "__init__.py").write_text(textwrap.dedent(FRAMEWORK))

    @contextlib.contextmanager
    def imported(self) -> Iterator[Any]:
        """The package imported (to pickle its objects); afterwards importable but not imported."""
        sys.path.insert(0, str(self.root))
        try:
            yield importlib.import_module(self.name)
        finally:
            self.forget()

    def forget(self) -> None:
        for name in [m for m in sys.modules if m == self.name or m.startswith(self.name + ".")]:
            del sys.modules[name]
        importlib.invalidate_caches()
        for marker in ("IMPORTED", "RAN"):
            (self.root / marker).unlink(missing_ok=True)

    @contextlib.contextmanager
    def absent(self) -> Iterator[None]:
        """Not importable at all (not on sys.path)."""
        while str(self.root) in sys.path:
            sys.path.remove(str(self.root))
        try:
            yield
        finally:
            sys.path.insert(0, str(self.root))

    def assert_untouched(self) -> None:
        assert self.name not in sys.modules, "the file's package was imported"
        assert not (self.root / "IMPORTED").exists(), "the file's package was imported"
        ran = self.root / "RAN"
        assert not ran.exists(), f"the file's code ran: {ran.read_text()}"


@pytest.fixture(scope="module")
def framework(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Framework]:
    fw = Framework(tmp_path_factory.mktemp("framework"))
    yield fw
    fw.forget()
    while str(fw.root) in sys.path:
        sys.path.remove(str(fw.root))


def _extras(fw: Any) -> dict[str, Any]:
    """The objects a training framework saves beside the weights, every kind the package has."""
    meta = fw.Meta(epoch=7, scale=torch.tensor([1.5]))
    meta.note = "an attribute of the dict subclass"
    return {
        "config": fw.Config(), "phase": fw.Phase.EVAL, "history": fw.History(), "reduced": fw.Reduced([1, 2]),
        "meta": meta, "losses": fw.Losses([0.5, torch.ones(2)]), "ordered": fw.Ordered(a=torch.zeros(2), b=1),
        "holder": fw.Holder({"steps": [torch.arange(3)], "ema": OrderedDict(w=torch.ones(2, 2))}),
        "args": argparse.Namespace(lr=0.1), "epoch": 7,
    }


def _assert_same_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)
    for key, tensor in want.items():
        assert got[key].dtype == tensor.dtype and torch.equal(got[key], tensor), key


def _assert_loaded(model: torch.nn.Module, want: dict[str, torch.Tensor]) -> None:
    have = model.state_dict()
    for key, tensor in want.items():
        assert torch.equal(have[key], tensor), key


def _clean_message(message: str) -> None:
    assert "\x1b" not in message and "WeightsUnpickler" not in message and "Weights only load failed" not in message


# -- training checkpoints that pickle a framework's objects -----------------------------------


@pytest.mark.parametrize("arch", ["resnet18", pytest.param("mobilenet_v2", marks=pytest.mark.slow),
                                  pytest.param("resnet10t", marks=pytest.mark.slow)])
def test_training_checkpoint_loads_without_its_framework(tmp_path, framework, arch):
    source = _model(arch)
    path = tmp_path / "last.ckpt"
    with framework.imported() as fw:
        torch.save({"state_dict": source.state_dict(), **_extras(fw)}, path)
    model = zooadapt.load(arch, weights=str(path), num_classes=3)
    _assert_loaded(model, source.state_dict())
    report = str(model.zooadapt.report)
    assert "replaced by stand-ins" in report and f"{framework.name}.History" in report
    framework.assert_untouched()


def test_read_records_the_replaced_classes_the_files_own_first(tmp_path, framework, resnet18_weights):
    path = tmp_path / "last.ckpt"
    with framework.imported() as fw:
        torch.save({"state_dict": resnet18_weights, **_extras(fw)}, path)
    tensors = read_checkpoint(path)
    _assert_same_tensors(tensors, resnet18_weights)
    own = {f"{framework.name}.{c}" for c in ("Config", "Phase", "History", "make_reduced", "Meta", "Losses",
                                              "Ordered", "Holder")}
    assert set(tensors.standins) == own
    assert "8 classes replaced by stand-ins" in tensors.describe()
    framework.assert_untouched()


def test_the_framework_objects_become_their_recorded_state(tmp_path, framework):
    path = tmp_path / "extras.pth"
    with framework.imported() as fw:
        torch.save(_extras(fw), path)
    obj = read_with_standins(path).obj
    assert obj["config"] == {"lr": 0.1, "epochs": 90, "milestones": (30, 60)}
    assert obj["phase"] == ("eval",)  # an Enum member: the value it is called with
    assert obj["history"]["losses"] == [2.5, 1.25] and torch.equal(obj["history"]["best"], torch.tensor([0.5, 0.25]))
    assert obj["reduced"] == ([1, 2],)  # a function the file calls: its arguments, never the call
    assert obj["meta"]["note"] == "an attribute of the dict subclass" and torch.equal(obj["meta"]["scale"],
                                                                                       torch.tensor([1.5]))
    assert obj["losses"][0] == 0.5 and torch.equal(obj["losses"][1], torch.ones(2))
    assert torch.equal(obj["ordered"]["a"], torch.zeros(2)) and obj["ordered"]["b"] == 1
    assert torch.equal(obj["holder"]["inner"]["ema"]["w"], torch.ones(2, 2))
    assert obj["args"] == argparse.Namespace(lr=0.1) and obj["epoch"] == 7
    framework.assert_untouched()


@pytest.mark.slow
@pytest.mark.parametrize("legacy", [False, True])
def test_read_in_a_process_where_the_framework_does_not_exist(tmp_path, framework, legacy):
    """The whole read in a fresh interpreter without the package on its path: nothing to import."""
    source = _model("resnet18", seed=3)
    path, want = tmp_path / "last.ckpt", tmp_path / "want.pth"
    with framework.imported() as fw:
        torch.save({"state_dict": source.state_dict(), **_extras(fw)}, path,
                   _use_new_zipfile_serialization=not legacy)
    torch.save(source.state_dict(), want)
    script = textwrap.dedent(f"""
        import sys, torch, zooadapt
        model = zooadapt.load("resnet18", weights={str(path)!r}, num_classes=3)
        want = torch.load({str(want)!r}, weights_only=True)
        have = model.state_dict()
        assert all(torch.equal(have[k], v) for k, v in want.items())
        assert not any(m.startswith({framework.name!r}) for m in sys.modules)
        print("ok", model.zooadapt.report.plan.weight_set)
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "replaced by stand-ins" in done.stdout
    framework.assert_untouched()


def test_legacy_format_reads_the_same(tmp_path, framework, resnet18_weights):
    path = tmp_path / "old.pth"
    with framework.imported() as fw:
        torch.save({"model": resnet18_weights, "history": fw.History()}, path, _use_new_zipfile_serialization=False)
    _assert_same_tensors(read_checkpoint(path), resnet18_weights)
    framework.assert_untouched()


# -- whole pickled modules --------------------------------------------------------------------


def test_whole_pickled_resnet_subclass_gives_its_state_dict(tmp_path, framework):
    path = tmp_path / "model.pth"
    with framework.imported() as fw:
        torch.manual_seed(1)
        net = fw.MyResNet()
        torch.save(net, path)
    want = net.state_dict()
    assert "pixel_mean" not in want  # non-persistent: not in state_dict(), so not read
    tensors = read_checkpoint(path)
    _assert_same_tensors(tensors, want)
    assert tensors.standins[0] == f"{framework.name}.MyResNet"
    _assert_loaded(zooadapt.load("resnet18", weights=str(path), num_classes=3), want)
    framework.assert_untouched()


@pytest.mark.slow
def test_whole_pickled_wrapper_of_a_timm_backbone(tmp_path, framework):
    path = tmp_path / "model.pth"
    backbone = _model("resnet10t", seed=2)
    with framework.imported() as fw:
        net = fw.Backboned(backbone)
        torch.save({"model": net, "epoch": 3}, path)
    want = net.state_dict()
    _assert_same_tensors(read_checkpoint(path), want)
    model = zooadapt.load("resnet10t", weights=str(path), num_classes=3)  # the 'backbone.' prefix is found
    _assert_loaded(model, backbone.state_dict())
    framework.assert_untouched()


# -- TorchScript --------------------------------------------------------------------------------


@pytest.mark.parametrize("arch,how", [("resnet18", "script"), pytest.param("resnet18", "trace", marks=pytest.mark.slow),
                                      pytest.param("mobilenet_v2", "script", marks=pytest.mark.slow),
                                      pytest.param("mobilenet_v2", "trace", marks=pytest.mark.slow)])
def test_torchscript_archive_gives_its_tensors_without_its_code(tmp_path, arch, how):
    source = _model(arch, seed=4).eval()
    with pytest.warns(FutureWarning):  # torch.jit is deprecated, but its archives are still around
        scripted = torch.jit.script(source) if how == "script" else torch.jit.trace(source, torch.randn(1, 3, 64, 64))
        path = tmp_path / "model.pt"
        torch.jit.save(scripted, str(path))
    tensors = read_checkpoint(path)
    _assert_same_tensors(tensors, scripted.state_dict())
    assert any(name.startswith("__torch__.torchvision.models.") for name in tensors.standins)
    assert not any("___torch_mangle_" in name for name in tensors.standins)
    _assert_loaded(zooadapt.load(arch, weights=str(path), num_classes=3), source.state_dict())


@pytest.mark.slow
def test_torchscript_with_trusted_is_still_torch_jit_load(tmp_path):
    source = _model("resnet18", seed=5).eval()
    path = tmp_path / "model.pt"
    with pytest.warns(FutureWarning):
        torch.jit.save(torch.jit.script(source), str(path))
    with pytest.warns(UserWarning, match="TorchScript"):
        tensors = read_checkpoint(path, trusted=True)
    _assert_same_tensors(tensors, source.state_dict())
    assert tensors.standins == ()


# -- random nesting -------------------------------------------------------------------------------

_TENSORS = st.builds(lambda shape, seed: torch.randn(shape, generator=torch.Generator().manual_seed(seed)),
                     st.lists(st.integers(1, 3), max_size=2).map(tuple), st.integers(0, 2**16))
_LEAVES = st.one_of(_TENSORS, st.integers(-5, 5), st.text(max_size=4), st.none(), st.floats(allow_nan=False))
_KEYS = st.text("abcxyz_", min_size=1, max_size=5)


def _tree(fw: Any) -> st.SearchStrategy[Any]:
    """Leaves in dicts, lists, tuples, OrderedDicts and the framework's objects, nested at random."""
    def wrap(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(
            st.dictionaries(_KEYS, children, max_size=3),
            st.lists(children, max_size=3),
            st.lists(children, max_size=3).map(tuple),
            st.dictionaries(_KEYS, children, max_size=3).map(OrderedDict),
            children.map(fw.Holder),
            st.dictionaries(_KEYS, children, max_size=3).map(fw.Meta),
            st.lists(children, max_size=3).map(fw.Losses),
            st.dictionaries(_KEYS, children, max_size=3).map(fw.Ordered),
        )
    return st.recursive(_LEAVES, wrap, max_leaves=12)


def _expected(obj: Any, fw: Any) -> Any:
    """What the stand-in reader should give for ``obj``: each framework object as its state."""
    if isinstance(obj, fw.Holder):
        return {"inner": _expected(obj.inner, fw)}
    if isinstance(obj, fw.Losses):  # an empty one has nothing to tell it from an object without state
        return [_expected(v, fw) for v in obj] if obj else {}
    if isinstance(obj, (fw.Meta, fw.Ordered)):
        return {k: _expected(v, fw) for k, v in obj.items()}
    if isinstance(obj, dict):
        return type(obj)((k, _expected(v, fw)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_expected(v, fw) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_expected(v, fw) for v in obj)
    return obj


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, torch.Tensor):
        return isinstance(got, torch.Tensor) and got.dtype == want.dtype and torch.equal(got, want)
    if isinstance(want, dict):
        return (isinstance(got, dict) and list(got) == list(want)
                and all(_same(got[k], v) for k, v in want.items()))
    if isinstance(want, (list, tuple)):
        return type(got) is type(want) and len(got) == len(want) and all(map(_same, got, want))
    return type(got) is type(want) and got == want


def test_random_nesting_comes_back_with_every_tensor(framework):
    with framework.imported() as fw:
        @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(_tree(fw))
        def check(tree: Any) -> None:
            buffer = io.BytesIO()
            torch.save({"payload": tree}, buffer)
            path = framework.root / "tree.pth"
            path.write_bytes(buffer.getvalue())
            got = read_with_standins(path).obj
            assert _same(got, {"payload": _expected(tree, fw)})

        check()
    framework.assert_untouched()


def test_the_state_dict_is_found_inside_any_nesting_of_extras(tmp_path, framework):
    weights = {"conv1.weight": torch.randn(4, 3, 3, 3), "fc.bias": torch.randn(2)}
    with framework.imported() as fw:
        @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])
        @given(_tree(fw))
        def check(extra: Any) -> None:
            path = tmp_path / "ckpt.pth"
            torch.save({"state_dict": weights, "extra": extra, "optimizer": {"state": extra}}, path)
            _assert_same_tensors(read_checkpoint(path), weights)

        check()
    framework.assert_untouched()


# -- refusals -------------------------------------------------------------------------------------


class _Call:
    """A pickle that calls ``func(*args)`` while being read, which is how every pickle exploit starts."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def _hostile(marker: Path) -> list[tuple[str, _Call]]:
    touch = f"open({str(marker)!r}, 'w').write('pwned')"
    return [
        ("posix.system", _Call(os.system, f"touch {marker}")),
        ("posix.system", _Call(posix.system, f"touch {marker}")),
        ("builtins.eval", _Call(builtins.eval, touch)),
        ("builtins.exec", _Call(builtins.exec, touch)),
        ("subprocess.Popen", _Call(subprocess.Popen, ["touch", str(marker)])),
        ("builtins.getattr", _Call(builtins.getattr, "text", "upper")),
        ("builtins.__import__", _Call(builtins.__import__, "os")),
    ]


def _writers() -> list[tuple[str, Any]]:
    return [
        ("torch.save", lambda obj, path: torch.save(obj, path)),
        ("torch.save legacy", lambda obj, path: torch.save(obj, path, _use_new_zipfile_serialization=False)),
        ("pickle protocol 2", lambda obj, path: path.write_bytes(pickle.dumps(obj, protocol=2))),
        ("pickle protocol 4", lambda obj, path: path.write_bytes(pickle.dumps(obj, protocol=4))),
    ]


@pytest.mark.parametrize("writer", [w for w, _ in _writers()])
@pytest.mark.parametrize("index", range(7))
def test_a_pickle_that_calls_code_is_refused_by_name_and_nothing_runs(tmp_path, resnet18_weights, writer, index):
    marker = tmp_path / "pwned"
    name, payload = _hostile(marker)[index]
    path = tmp_path / "evil.pth"
    dict(_writers())[writer]({"state_dict": {"fc.bias": torch.zeros(2)}, "callback": payload}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        read_checkpoint(path)
    assert name in str(info.value) and "ran nothing" in str(info.value)
    _clean_message(str(info.value))
    assert not marker.exists()


def test_hostile_call_hidden_in_a_framework_object_is_refused(tmp_path, framework, resnet18_weights):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    with framework.imported() as fw:
        torch.save({"state_dict": resnet18_weights, "history": fw.Holder([_Call(os.system, f"touch {marker}")])}, path)
    with pytest.raises(UnsafeCheckpointError, match="posix.system"):
        zooadapt.load("resnet18", weights=str(path))
    assert not marker.exists()
    framework.assert_untouched()


def test_hostile_names_are_told_from_merely_unknown_ones():
    assert hostile_names(["os.system", "nt.system", "builtins.eval", "subprocess.check_output", "runpy.run_path",
                          "builtins.getattr"]) == ["builtins.eval", "builtins.getattr", "nt.system", "os.system",
                                                   "runpy.run_path", "subprocess.check_output"]
    assert hostile_names(["functools.partial", "builtins.slice", "mypkg.History", "torch.nn.modules.conv.Conv2d",
                          "lightning_fabric.utilities.data.AttributeDict"]) == []


def test_stand_ins_run_nothing_they_are_given():
    cls = type("Thing", (StandIn,), {"__slots__": (), "standin_name": "mypkg.Thing"})
    thing = cls("rm -rf /", shell=True)
    thing.__setstate__({"x": 1})
    thing["k"] = "v"
    thing.append(1)
    assert thing.args == ("rm -rf /", {"shell": True}) and thing.state == {"x": 1}
    assert thing.dict_items == {"k": "v"} and thing.list_items == [1]
    with pytest.raises(AttributeError):
        thing.system  # noqa: B018 - no attribute is invented: code expecting the real object fails
    with pytest.raises(AttributeError):
        thing.anything = 1  # no __dict__: the file cannot plant attributes


def test_classes_whose_tensors_stand_ins_cannot_recover_are_named_with_the_way_out(tmp_path, framework):
    """A tensor subclass of the framework: a stand-in cannot become a tensor, so the file is refused,
    naming the class and saying when trusted=True is the way."""
    source = textwrap.dedent("""
        import torch
        class Scaled(torch.Tensor):
            pass
    """)
    (framework.root / framework.name / "tensors.py").write_text(source)
    path = tmp_path / "odd.pth"
    with framework.imported():
        scaled = importlib.import_module(f"{framework.name}.tensors").Scaled
        torch.save({"state_dict": {"w": torch.ones(2).as_subclass(scaled)}}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert f"{framework.name}.tensors.Scaled" in message and "stand-ins" in message
    assert "trusted=True" in message and f"have {framework.name} installed" in message
    _clean_message(message)
    framework.assert_untouched()


def test_trusted_with_the_package_missing_names_the_package_not_corruption(tmp_path, framework, resnet18_weights):
    path = tmp_path / "last.ckpt"
    with framework.imported() as fw:
        torch.save({"state_dict": resnet18_weights, "history": fw.History()}, path)
    with framework.absent(), pytest.raises(MissingDependencyError) as info:
        read_checkpoint(path, trusted=True)
    message = str(info.value)
    assert f"needs the package {framework.name!r}" in message and f"pip install {framework.name}" in message
    assert "corrupt" not in message and "ModuleNotFoundError" in message
    _clean_message(message)
    # and without trusted=True the same file reads, nothing imported
    _assert_same_tensors(read_checkpoint(path), resnet18_weights)
    framework.assert_untouched()


def test_a_later_protocol_is_named_not_called_corrupt(tmp_path, resnet18_weights):
    path = tmp_path / "p4.pth"
    torch.save({"state_dict": resnet18_weights}, path, pickle_protocol=4)
    with pytest.raises(UnsafeCheckpointError, match="beyond protocol 2") as info:
        read_checkpoint(path)
    _clean_message(str(info.value))
    _assert_same_tensors(read_checkpoint(path, trusted=True), resnet18_weights)


def test_a_garbled_pickle_is_still_corrupt(tmp_path):
    path = tmp_path / "garbled.pth"
    path.write_bytes(b"\x80\x02cmypkg\nThing\n" + b"\xff" * 64)
    with pytest.raises(CheckpointFormatError, match="truncated or corrupt") as info:
        read_checkpoint(path)
    assert not isinstance(info.value, UnsafeCheckpointError)


def test_a_chain_of_shared_modules_cannot_ask_for_endless_names(tmp_path, monkeypatch):
    """state_dict() names a shared module under every name it has; 2**20 names is refused, not tried."""
    import zooadapt.weights.standins as standins

    module = torch.nn.Linear(1, 1)
    for _ in range(20):
        parent = torch.nn.Module()
        parent.a = parent.b = module
        module = parent
    path = tmp_path / "shared.pth"
    torch.save(module, path)
    monkeypatch.setattr(standins, "_MAX_VISITS", 1000)
    with pytest.raises(UnsafeCheckpointError, match="nest or repeat more than 1,000 times"):
        read_checkpoint(path)


def test_trusted_with_another_version_of_the_package_says_so(tmp_path, resnet18_weights):
    name = f"zooadapt_versioned_{uuid.uuid4().hex[:8]}"
    (tmp_path / name).mkdir()
    init = tmp_path / name / "__init__.py"
    init.write_text("class History:\n    pass\n")
    path = tmp_path / "last.ckpt"
    sys.path.insert(0, str(tmp_path))
    try:
        torch.save({"state_dict": resnet18_weights, "history": importlib.import_module(name).History()}, path)
        del sys.modules[name]
        init.write_text("class Renamed:\n    pass\n")  # version 2 of the package: History is gone
        importlib.invalidate_caches()
        with pytest.raises(MissingDependencyError, match="another version of that package") as info:
            read_checkpoint(path, trusted=True)
        assert "History" in str(info.value) and "corrupt" not in str(info.value)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)
    _assert_same_tensors(read_checkpoint(path), resnet18_weights)


def test_reads_in_threads_do_not_see_each_others_stand_ins(tmp_path, framework):
    """Stand-ins are registered process-wide while a read needs them; a plain weights-only read in
    another thread that meets them still gives plain values, and each read its own tensors."""
    from concurrent.futures import ThreadPoolExecutor

    files = {}
    with framework.imported() as fw:
        for i in range(4):
            weights = {"w": torch.full((64, 64), float(i)), "b": torch.arange(i + 1)}
            path = tmp_path / f"{i}.pth"
            torch.save(fw.Meta(weights) if i % 2 else {"state_dict": weights, "h": fw.History()}, path)
            files[path] = weights
    def read(path: Path) -> bool:
        got = read_checkpoint(path)
        return list(got) == ["w", "b"] and all(torch.equal(got[k], v) for k, v in files[path].items())

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(read, list(files) * 10))
    framework.assert_untouched()

"""The package's folders are its layers (issue #13), and the module paths from before still work.

The modules sit in ``zooadapt/contract``, ``host``, ``weights``, ``tuning``, ``loading`` and
``integrations``; the layers contract in ``.importlinter`` names those folders, so each test here
that pins the folders also keeps the contract and the files in step. The old flat paths that
users, plugins, the docs or pickled models name (``zooadapt.rules``, ``zooadapt.freezing``…) are
aliases of the moved modules (``zooadapt._MOVED``): the same module object, not a copy, so
``isinstance`` and pickling keep working.
"""

from __future__ import annotations

import ast
import configparser
import importlib
import importlib.util
import pickle
import pickletools
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zooadapt

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "zooadapt"

# each layer's folder and the modules it holds (top-level files: the public API and the entry point)
FOLDERS = {
    "contract": {"errors", "family", "rules", "stages", "hookspecs", "hub_address", "saved_format", "escape"},
    "host": {"plugin_manager", "hooks", "registry", "layouts", "descriptions"},
    "weights": {"sources", "hub_probe", "lockfile", "checkpoint", "weight_sets", "atomic", "distributed", "paths",
                "standins", "argument", "shards"},
    "tuning": {"freezing", "wrappers", "optim", "parallel", "attached"},
    "loading": {"request", "pipeline", "adapt", "discovery", "plan", "plan_cache", "placement", "meta_build",
                "features", "report", "loader", "inspection", "saving", "reloading", "data", "labels", "model_card",
                "identification", "matching", "signatures", "signature_index", "rule_words"},
    "integrations": {"fsdp", "lightning"},
}
TOP_LEVEL = {"__init__", "__main__", "plugin_api"}
OTHER_PACKAGES = {"cli", "testing"}

# old path -> new path: public modules (docs, README, plugins) and those pickled models name
OLD_PATHS = {
    "errors": "contract.errors",
    "family": "contract.family",
    "rules": "contract.rules",
    "stages": "contract.stages",
    "hookspecs": "contract.hookspecs",
    "plugin_manager": "host.plugin_manager",
    "hooks": "host.hooks",
    "registry": "host.registry",
    "freezing": "tuning.freezing",
    "report": "loading.report",
    "plan": "loading.plan",
    "features": "loading.features",
    "fsdp": "integrations.fsdp",
    "lightning": "integrations.lightning",
}

# pickle.dumps(frozen, protocol=2) by zooadapt before the move (commit 97a22c7), where frozen is
# nn.BatchNorm2d(2, affine=False, track_running_stats=False) frozen by zooadapt: it names
# zooadapt.freezing._new_frozen, as every pickled model with a frozen BatchNorm does.
OLD_FROZEN_BN = (
    b"\x80\x02czooadapt.freezing\n_new_frozen\nq\x00ctorch.nn.modules.batchnorm\nBatchNorm2d\nq\x01\x85q\x02Rq\x03}q"
    b"\x04(X\x08\x00\x00\x00trainingq\x05\x88X\x0b\x00\x00\x00_parametersq\x06}q\x07(X\x06\x00\x00\x00weightq\x08NX"
    b"\x04\x00\x00\x00biasq\tNuX\x08\x00\x00\x00_buffersq\n}q\x0b(X\x0c\x00\x00\x00running_meanq\x0cNX\x0b\x00\x00"
    b"\x00running_varq\rNX\x13\x00\x00\x00num_batches_trackedq\x0eNuX\x1b\x00\x00\x00_non_persistent_buffers_setq"
    b"\x0fc__builtin__\nset\nq\x10]q\x11\x85q\x12Rq\x13X\x13\x00\x00\x00_backward_pre_hooksq\x14ccollections\n"
    b"OrderedDict\nq\x15)Rq\x16X\x0f\x00\x00\x00_backward_hooksq\x17h\x15)Rq\x18X\x16\x00\x00\x00"
    b"_is_full_backward_hookq\x19NX\x0e\x00\x00\x00_forward_hooksq\x1ah\x15)Rq\x1bX\x1a\x00\x00\x00"
    b"_forward_hooks_with_kwargsq\x1ch\x15)Rq\x1dX\x1c\x00\x00\x00_forward_hooks_always_calledq\x1eh\x15)Rq\x1fX"
    b"\x12\x00\x00\x00_forward_pre_hooksq h\x15)Rq!X\x1e\x00\x00\x00_forward_pre_hooks_with_kwargsq\"h\x15)Rq#X"
    b"\x11\x00\x00\x00_state_dict_hooksq$h\x15)Rq%X\x15\x00\x00\x00_state_dict_pre_hooksq&h\x15)Rq'X\x1a\x00\x00"
    b"\x00_load_state_dict_pre_hooksq(h\x15)Rq)X\x1b\x00\x00\x00_load_state_dict_post_hooksq*h\x15)Rq+X\x08\x00"
    b"\x00\x00_modulesq,}q-X\x0c\x00\x00\x00num_featuresq.K\x02X\x03\x00\x00\x00epsq/G>\xe4\xf8\xb5\x88\xe3h\xf1X"
    b"\x08\x00\x00\x00momentumq0G?\xb9\x99\x99\x99\x99\x99\x9aX\x06\x00\x00\x00affineq1\x89X\x13\x00\x00\x00"
    b"track_running_statsq2\x89ub."
)


def _modules_in(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("*.py")}


def _docstring(path: Path) -> str | None:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))


def _linter_contracts() -> dict[str, configparser.SectionProxy]:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter", encoding="utf-8")
    return {name.split(":")[-1]: config[name] for name in config.sections()
            if name.startswith("importlinter:contract:")}


def _names(text: str) -> list[str]:
    return [name.strip() for line in text.strip().splitlines() for name in line.split("|")]


def _is_module(dotted: str) -> bool:
    """A package or module in the repository (``zooadapt…``, or ``plugins…`` for plugins/)."""
    top, *rest = dotted.split(".")
    path = ROOT.joinpath(top, *rest)
    return (path / "__init__.py").is_file() or path.with_suffix(".py").is_file()


def test_each_layer_is_a_folder_holding_its_modules():
    for folder, modules in FOLDERS.items():
        path = PACKAGE / folder
        assert _modules_in(path) == modules | {"__init__"}, folder
        doc = _docstring(path / "__init__.py")
        assert doc and "import" in doc, f"zooadapt/{folder}/__init__.py says what the layer may import"
    assert _modules_in(PACKAGE) == TOP_LEVEL, "a module left at the top (or a file at an old path: a second copy)"
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == set(FOLDERS) | OTHER_PACKAGES


def test_the_layers_contract_names_the_folders():
    """``.importlinter``'s layers are the folders, and every module its contracts name exists:
    the test suite alone catches a module moved without its contract (lint-imports would too)."""
    contracts = _linter_contracts()
    layers = _names(contracts["layers"]["layers"])
    assert {f"zooadapt.{name}" for name in set(FOLDERS) | OTHER_PACKAGES} <= set(layers)
    for key, contract in contracts.items():
        named = [name for field in ("layers", "source_modules", "forbidden_modules", "ancestors")
                 for name in _names(contract.get(field, ""))]
        containers = _names(contract.get("containers", "")) or [""]
        for name in named:
            for container in containers:
                dotted = f"{container}.{name}" if container else name
                assert _is_module(dotted), f"{key}: {dotted} is no module of zooadapt's"


def test_the_alias_table_is_the_one_tested_here():
    assert zooadapt._MOVED == OLD_PATHS


@pytest.mark.parametrize("old", [pytest.param(old, marks=[pytest.mark.slow] if old == "lightning" else [])
                                 for old in sorted(OLD_PATHS)])
def test_an_old_path_imports_the_moved_module_itself(old):
    if old == "lightning" and importlib.util.find_spec("lightning") is None:
        pytest.skip("Lightning is not installed")
    new = importlib.import_module(f"zooadapt.{OLD_PATHS[old]}")
    assert importlib.import_module(f"zooadapt.{old}") is new
    assert sys.modules[f"zooadapt.{old}"] is new
    assert getattr(zooadapt, old) is new
    assert new.__name__ == f"zooadapt.{OLD_PATHS[old]}"  # the module keeps its own name and spec
    assert new.__spec__.name == new.__name__


def test_names_from_old_paths_are_the_same_objects():
    from zooadapt.contract.rules import StripPrefix as new_rule  # noqa: I001  (the old paths after the new one)
    from zooadapt.errors import UnknownModelError
    from zooadapt.rules import StripPrefix
    from zooadapt.stages import StageMap

    assert StripPrefix is zooadapt.rules.StripPrefix is new_rule
    assert UnknownModelError is zooadapt.UnknownModelError
    assert StageMap is zooadapt.StageMap
    assert isinstance(zooadapt.contract.rules.StripPrefix("x."), StripPrefix)


def test_an_unknown_old_path_still_fails():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("zooadapt.no_such_module")
    with pytest.raises(AttributeError):
        zooadapt.no_such_module  # noqa: B018


def test_import_zooadapt_stays_lazy():
    """``import zooadapt`` loads the plugin contract only: no torch, no loading machinery, and
    no moved module imported just because its old path has an alias."""
    code = ("import sys, zooadapt\n"
            "print(sorted(m for m in sys.modules if m.startswith('zooadapt.')\n"
            "             and not m.startswith('zooadapt.contract')))\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["[]", "False"]


@pytest.mark.slow
def test_a_pickle_made_before_the_move_loads():
    """In a fresh interpreter, as a saved model is loaded: the pickle's ``zooadapt.freezing``
    imports zooadapt and its alias; the object is a frozen BatchNorm of the moved module."""
    code = ("import pickle, sys, torch\n"
            "bn = pickle.loads(sys.stdin.buffer.read())\n"
            "import zooadapt.tuning.freezing as freezing\n"
            "assert type(bn) is freezing.FrozenBatchNorm2d, type(bn)\n"
            "assert sys.modules['zooadapt.freezing'] is freezing\n"
            "bn.train()\n"
            "assert not bn.training  # a frozen BatchNorm stays in eval mode\n"
            "print(tuple(bn(torch.ones(1, 2, 3, 3)).shape))\n")
    run = subprocess.run([sys.executable, "-c", code], input=OLD_FROZEN_BN, capture_output=True, check=False)
    assert run.returncode == 0, run.stderr.decode()
    assert run.stdout.decode().strip() == "(1, 2, 3, 3)"


def _old_paths_pickle(obj: object) -> bytes:
    """``obj`` pickled as zooadapt did before the move: protocol 2 names each class as
    ``c<module>\\n<name>\\n``, and each moved module is named by its old path."""
    data = pickle.dumps(obj, protocol=2)
    for old, new in OLD_PATHS.items():
        data = data.replace(f"czooadapt.{new}\n".encode(), f"czooadapt.{old}\n".encode())
    return data


def _zooadapt_globals(data: bytes) -> set[str]:
    return {arg.split()[0] for op, arg, _ in pickletools.genops(data)
            if op.name == "GLOBAL" and arg.startswith("zooadapt")}


def _tensors(out: object) -> list[torch.Tensor]:
    if isinstance(out, dict):
        return list(out.values())
    return list(out) if isinstance(out, (list, tuple)) else [out]  # type: ignore[list-item]


@pytest.mark.slow
def test_a_model_pickled_under_the_old_paths_loads(resnet18_weights):
    """A whole model (as ``torch.save(model)`` writes it) names the report, the plan, the stage
    map and the frozen BatchNorms; a features-only model names ``StageFeatures`` too."""
    model = zooadapt.load("resnet18", num_classes=3, freeze="layer1-3")
    features = zooadapt.load("resnet18", features_only=True)
    for original in (model, features):
        data = _old_paths_pickle(original)
        names = _zooadapt_globals(data)
        assert names and names <= {f"zooadapt.{old}" for old in OLD_PATHS}, names
        back = pickle.loads(data)
        assert type(back) is type(original)
        assert isinstance(back.zooadapt, zooadapt.loading.report.ModelInfo)
        assert back.zooadapt.report.plan.loaded == original.zooadapt.report.plan.loaded
        assert list(zooadapt.frozen_stages(back)) == list(zooadapt.frozen_stages(original))
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            want, got = original.eval()(x), back.eval()(x)
        assert all(torch.equal(a, b) for a, b in zip(_tensors(want), _tensors(got), strict=True))
    assert {"zooadapt.freezing", "zooadapt.report", "zooadapt.plan", "zooadapt.stages"} <= _zooadapt_globals(
        _old_paths_pickle(model))
    assert "zooadapt.features" in _zooadapt_globals(_old_paths_pickle(features))

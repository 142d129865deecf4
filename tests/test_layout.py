"""The package's folders are its layers (issue #13), and its public paths are real modules (#21).

The modules sit in ``zooadapt/contract``, ``host``, ``weights``, ``tuning``, ``loading`` and
``integrations``; the layers contract in ``.importlinter`` names those folders, so each test here
that pins the folders also keeps the contract and the files in step. The public paths users
write (``zooadapt.errors``, ``zooadapt.rules``, ``zooadapt.plugin_api``…) are files at the top
that re-export from the folders: no import hook, so mypy and IDEs find them.
"""

from __future__ import annotations

import ast
import configparser
import importlib
import importlib.util
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
    "contract": {"errors", "family", "rules", "stages", "hookspecs", "hub_address", "saved_format", "escape", "caches",
                 "tensor_ops"},
    "host": {"plugin_manager", "hooks", "registry", "layouts", "descriptions"},
    "weights": {"sources", "fetched", "digests", "hub_cache", "hub_download", "url_download", "local_files",
                "hub_probe", "lockfile", "checkpoint", "weight_sets", "atomic", "distributed", "paths",
                "standins", "argument", "shards", "averages", "reparametrized"},
    "tuning": {"freezing", "wrappers", "optim", "parallel", "attached"},
    "loading": {"request", "pipeline", "adapt", "discovery", "plan", "pairing", "key_families", "plan_cache",
                "placement", "meta_build", "module_settings",
                "features", "report", "loader", "inspection", "saving", "reloading", "data", "labels", "model_card",
                "identification", "matching", "signatures", "signature_index", "rule_words", "layout_build", "beside",
                "feature_info", "build_checks"},
    "integrations": {"fsdp", "lightning"},
}
# the public modules: re-exports of the folders' names, each a file of its own
PUBLIC_MODULES = {"plugin_api", "errors", "rules", "distributed", "types", "lightning"}
TOP_LEVEL = {"__init__", "__main__", *PUBLIC_MODULES}
OTHER_PACKAGES = {"cli", "testing"}

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
                if dotted.split(".")[0] not in ("zooadapt", "plugins"):  # a library a contract forbids (timm)
                    assert importlib.util.find_spec(dotted) is not None, f"{key}: {dotted} is not installed"
                    continue
                assert _is_module(dotted), f"{key}: {dotted} is no module of zooadapt's"


def test_every_public_module_is_a_real_file_and_no_import_hook_is_installed():
    """mypy and IDEs find a module by its file: each documented path is one, and importing
    zooadapt leaves ``sys.meta_path`` as it found it."""
    before = list(sys.meta_path)
    importlib.reload(zooadapt)
    assert sys.meta_path == before
    for name in PUBLIC_MODULES:
        spec = importlib.util.find_spec(f"zooadapt.{name}")
        assert spec is not None and spec.origin == str(PACKAGE / f"{name}.py"), name


def test_an_unknown_path_fails():
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


def _tensors(out: object) -> list[torch.Tensor]:
    if isinstance(out, dict):
        return list(out.values())
    return list(out) if isinstance(out, (list, tuple)) else [out]  # type: ignore[list-item]


@pytest.mark.slow
def test_a_pickled_model_loads_in_a_fresh_interpreter(resnet18_weights, tmp_path):
    """``torch.save(model)`` names zooadapt's classes by their modules' real paths (the report, the
    plan, the stage map, the frozen BatchNorms; ``StageFeatures`` for a features-only model): a new
    process unpickles them without anything imported first, and computes the same."""
    model = zooadapt.load("resnet18", num_classes=3, freeze="layer1-3").eval()
    features = zooadapt.load("resnet18", features_only=True).eval()
    x = torch.randn(1, 3, 64, 64)
    for i, original in enumerate((model, features)):
        with torch.no_grad():
            want = _tensors(original(x))
        torch.save({"model": original, "x": x, "want": want}, tmp_path / f"{i}.pt")
        code = ("import sys, torch\n"
                "saved = torch.load(sys.argv[1], weights_only=False)\n"
                "model = saved['model']\n"
                "import zooadapt\n"
                "assert isinstance(model.zooadapt, zooadapt.types.ModelInfo)\n"
                "assert list(zooadapt.frozen_stages(model)) == " + repr(list(zooadapt.frozen_stages(original))) + "\n"
                "model.train()\n"
                "assert all(not m.training for m in model.modules() if type(m).__name__.startswith('Frozen'))\n"
                "with torch.no_grad():\n"
                "    got = model.eval()(saved['x'])\n"
                "got = list(got.values()) if isinstance(got, dict) else list(got) if isinstance(got, (list, tuple)) "
                "else [got]\n"
                "assert all(torch.equal(a, b) for a, b in zip(got, saved['want'], strict=True))\n"
                "print('same')\n")
        run = subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{i}.pt")], capture_output=True, text=True,
                             check=False)
        assert run.returncode == 0 and run.stdout.strip() == "same", run.stderr


def test_the_core_never_imports_a_plugin():
    """Family knowledge stays in families: no module of zooadapt/ imports from ``plugins/``
    (installed as ``zooadapt.plugins``, which import-linter cannot see through the package-dir
    mapping), not even inside a function; a plugin reaches the core through hooks and ``Family``."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                package = path.relative_to(ROOT).with_suffix("").parts[:-1]  # ('zooadapt', 'loading')
                base = list(package[: len(package) - node.level + 1]) if node.level else []
                absolute = ".".join([*base, *(node.module or "").split(".")]).strip(".")
                if absolute.startswith("zooadapt.plugins"):
                    offenders.append(f"{path.relative_to(ROOT)}: from {absolute} import ...")
            elif isinstance(node, ast.Import):
                offenders += [f"{path.relative_to(ROOT)}: import {a.name}" for a in node.names
                              if a.name.startswith("zooadapt.plugins")]
    assert not offenders, offenders

"""Every file a comment, docstring or document names exists, and every module path the docs name imports.

A comment that points a reader at ``pins.py`` when there is none costs them a search and their
trust in the other comments. Checked: comments and docstrings (every bare string statement) of
the Python files under zooadapt/, plugins/, benchmarks/, scripts/, examples/ and tests/, and the
whole text of docs/*.md and README.md, for repository paths (a test file under tests/, a module
such as ``zooadapt/weights/sources.py``, ``docs/adapting.md``…); in the documents, also every dotted
``zooadapt.x.y``, which must resolve to a real module (not an alias of another) or an attribute of one.
"""

from __future__ import annotations

import ast
import functools
import importlib
import re
import types
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE_FOLDERS = ("zooadapt", "plugins", "benchmarks", "scripts", "examples", "tests")
DOCUMENTS = (*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md")

PATH = re.compile(r"(?<![\w./-])((?:zooadapt|plugins|benchmarks|scripts|examples|tests|docs)/(?:[\w.-]+/)*[\w.-]*\w"
                  r"\.(?:py|md|toml|json|cfg|ini|txt|sh)(?:\.gz)?)(?![\w/]|\.\w)")
DOTTED = re.compile(r"(?<![\w./-])zooadapt(?:\.[A-Za-z_]\w*)+")
FILE_NAME = re.compile(r"\.(?:json|toml|py|md|txt|yaml|cfg|lock|safetensors|pth)$")
"""``zooadapt.json`` (what ``zooadapt.save`` writes) and the like are file names, not modules."""


COMMENT = re.compile(r"(?:^|(?<=\s))#[^\n]*", re.MULTILINE)
"""A ``#`` at a line's start or after a space, to the line's end: a comment (tokenizing every file to
find them exactly takes seconds; a string literal holding a spaced ``#`` is read as one too)."""


def _prose(path: Path) -> str:
    """The comments and bare string statements (docstrings, attribute docstrings) of a Python file."""
    text = path.read_text(encoding="utf-8")
    parts = COMMENT.findall(text)
    parts += [node.value.value for node in ast.walk(ast.parse(text))
              if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
              and isinstance(node.value.value, str)]
    return "\n".join(parts)


def _python_files() -> list[Path]:
    return sorted(p for folder in CODE_FOLDERS for p in (ROOT / folder).rglob("*.py")
                  if "__pycache__" not in p.parts and ".venv" not in p.parts and "build" not in p.parts)


def _named_paths(name: str, text: str) -> list[tuple[str, str]]:
    return [(name, found) for found in dict.fromkeys(PATH.findall(text))]


@functools.lru_cache(maxsize=1)
def _all_named_paths() -> list[tuple[str, str]]:
    named = [pair for p in _python_files() for pair in _named_paths(str(p.relative_to(ROOT)), _prose(p))]
    named += [pair for doc in DOCUMENTS for pair in _named_paths(str(doc.relative_to(ROOT)), doc.read_text("utf-8"))]
    return named


def test_the_scan_finds_paths_in_comments_docstrings_and_documents(tmp_path):
    """The checks below would pass on nothing: make sure they read what they should."""
    probe = tmp_path / "probe.py"
    probe.write_text('# see tests/test_a.py\n"""Module doc naming docs/b.md."""\nX = "zooadapt/c.py"  # code\n',
                     encoding="utf-8")
    assert [p for _, p in _named_paths("probe", _prose(probe))] == ["tests/test_a.py", "docs/b.md"]
    named = {p for _, p in _all_named_paths()}
    assert "docs/adapting.md" in named  # README links it
    assert len(_documented_names()) > 20


def test_every_path_named_in_prose_exists():
    missing = [f"{where}: {path}" for where, path in _all_named_paths() if not (ROOT / path).exists()]
    assert not missing, "these comments or documents name files that do not exist:\n" + "\n".join(missing)


def _resolve(dotted: str) -> str | None:
    """None when ``dotted`` is a real module or an attribute of one (an old spelling that still
    works with a warning counts: the README names them as such); else what is wrong."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        try:
            obj: object = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and not name.startswith(exc.name):
                return f"importing {name} fails: {exc}"  # a module that exists, whose own import fails
            continue
        if getattr(obj, "__name__", name) != name:
            return f"{name} is an alias of {getattr(obj, '__name__', '?')}, not a module of its own"
        for attr in parts[n:]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # an old spelling the docs name as such
                if not hasattr(obj, attr):
                    return f"{'.'.join(parts[:n])} has no attribute {attr!r}"
                obj = getattr(obj, attr)
            if isinstance(obj, types.ModuleType) and not obj.__name__.endswith("." + attr):
                return f"{dotted} reaches {obj.__name__} through an alias"
        return None
    return "no module of that name"


def _documented_names() -> list[tuple[str, str]]:
    return [(str(doc.relative_to(ROOT)), found) for doc in DOCUMENTS
            for found in dict.fromkeys(m.rstrip(".") for m in DOTTED.findall(doc.read_text("utf-8")))
            if not FILE_NAME.search(found)]


def test_the_dotted_check_refuses_what_does_not_import():
    assert _resolve("zooadapt.loading.plan.make_plan") is None
    assert _resolve("zooadapt.plugin_manager") is not None
    assert _resolve("zooadapt.loading.no_such_module") is not None


@pytest.mark.slow  # imports every module the docs name: torch, timm, the testing helpers
def test_every_module_path_in_the_docs_imports():
    problems = [f"{where} names {dotted}: {problem}" for where, dotted in _documented_names()
                if (problem := _resolve(dotted)) is not None]
    assert not problems, "\n".join(problems)

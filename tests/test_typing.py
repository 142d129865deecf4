"""mypy passes on the package and on a program that uses every documented import path (issue 21).

The package is checked with the ``[tool.mypy]`` settings in pyproject.toml (strict on the public
API modules), as ``.ci/run`` does. The snippet, ``tests/typing/public_api_snippet.py``, is checked
on its own: errors inside the package are the first check's to report, so here only the
documented paths and what they promise to return count.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SNIPPET = ROOT / "tests" / "typing" / "public_api_snippet.py"

pytestmark = [
    pytest.mark.slow,  # mypy takes about a minute on the package without its cache
    pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                       reason="mypy is not installed; pip install -e '.[test]' installs it"),
]


def _mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_package_type_checks() -> None:
    result = _mypy()  # files, strictness and overrides: [tool.mypy] in pyproject.toml
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout, result.stdout


def test_documented_import_paths_type_check() -> None:
    result = _mypy("--follow-imports=silent", str(SNIPPET))
    assert result.returncode == 0, result.stdout + result.stderr


def test_snippet_check_catches_a_wrong_type(tmp_path: Path) -> None:
    """The snippet's check is not vacuous: a documented call assigned to a type it does not return fails."""
    wrong = tmp_path / "wrong.py"
    wrong.write_text("import zooadapt\n\nnames: int = zooadapt.list_models('resnet*')\n")
    result = _mypy("--follow-imports=silent", str(wrong))
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'expression has type "list[str]", variable has type "int"' in result.stdout

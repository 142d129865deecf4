"""Rewrite one generated block of README.md, between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``.

Counts a script measured go into the README by the script, never typed by hand, so the README
cannot drift from the last run. The markers stay; only what lies between them is replaced.
"""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


class MarkersMissingError(LookupError):
    """The README lacks the block's markers (or has them twice, or out of order)."""


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the lines between ``name``'s markers replaced by ``body``."""
    start, end = markers(name)
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise MarkersMissingError(
            f"README.md must hold the lines {start!r} and {end!r} once each, in that order; add them where "
            f"the generated block belongs")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body.strip()}\n{end}{tail}"


def write_block(name: str, body: str, readme: Path = README) -> None:
    readme.write_text(replace_block(readme.read_text(encoding="utf-8"), name, body), encoding="utf-8")

"""A checkpoint's layout in a few lines: its keys grouped into families, as a reader names them.

When neither names nor order and tensor signatures pair a file with the model, "it fills 0.0%"
says nothing a user can act on; what they need is the layout zooadapt saw, next to the model's,
to write a ``rename:`` rule or a layout plugin. A family is a module path with every number
replaced by a letter (``backbone.body.stage1.unit0.conv1.norm.weight`` is one tensor of
``backbone.body.stageN.unitM.convK.norm``): the blocks of a stage, the stages, and the numbered
layers of a block fold into one line each, and a family keeps one example key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..contract.escape import printable

__all__ = ["KeyFamily", "key_families", "describe_families"]

_NUMBER = re.compile(r"\d+")
_LETTERS = "NMKLPQRST"


@dataclass(frozen=True)
class KeyFamily:
    """Keys whose module paths differ only in their numbers."""

    pattern: str
    """The module path with its numbers as letters, in order (``layerN.M.convK``; ``(root)`` for top-level tensors)."""
    tensors: int
    example: str
    """The first key of the family, as the file holds it."""


def _pattern(key: str) -> str:
    module = key.rpartition(".")[0]
    if not module:
        return "(root)"
    numbers = iter(_LETTERS)
    return _NUMBER.sub(lambda _: next(numbers, "#"), module)


def key_families(keys: Iterable[str]) -> list[KeyFamily]:
    """The families of ``keys``, in order of first appearance (a file's order reads as its layout)."""
    counts: dict[str, int] = {}
    examples: dict[str, str] = {}
    for key in keys:
        pattern = _pattern(key)
        counts[pattern] = counts.get(pattern, 0) + 1
        examples.setdefault(pattern, key)
    return [KeyFamily(p, n, examples[p]) for p, n in counts.items()]


def describe_families(keys: Iterable[str], limit: int = 8) -> str:
    """``"5 key families: layerN.M.convK (48 tensors, e.g. layer1.0.conv1.weight), ..."``: the first
    ``limit`` families with their tensor counts and an example, then how many more there are."""
    families = key_families(keys)
    shown = [f"{printable(f.pattern)} ({f.tensors} tensor{'s' if f.tensors != 1 else ''}, e.g. {printable(f.example)})"
             for f in families[:limit]]
    more = f", and {len(families) - limit} more" if len(families) > limit else ""
    return f"{len(families)} key famil{'ies' if len(families) != 1 else 'y'}: " + ", ".join(shown) + more

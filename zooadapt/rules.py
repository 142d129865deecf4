"""Checkpoint key rules: small, printable data objects a family declares.

A rule either renames a checkpoint key (``StripPrefix``, ``Rename``), drops it (``Drop``),
converts a tensor whose layout differs but whose values are the same (``Reshape``), or asks
the planner to pair leftover keys by order with every shape checked (``Positional``).
Because rules are data, ``zooadapt inspect`` can show which rule mapped which key before
anything loads. Nothing here imports torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["KeyRule", "StripPrefix", "AddPrefix", "Rename", "Drop", "Reshape", "Positional", "DEFAULT_RULES"]


class KeyRule:
    """Base class of key rules. Subclasses override the hooks that apply to them."""

    def rename(self, key: str) -> str | None:
        """The new key when this rule applies to ``key``, else None."""
        return None

    def drops(self, key: str) -> bool:
        """True when the checkpoint key carries nothing the model should receive."""
        return False

    def converts(self, model_key: str, source_shape: tuple[int, ...], target_shape: tuple[int, ...]) -> bool:
        """True when this rule can turn a tensor of ``source_shape`` into ``target_shape``."""
        return False

    def convert(self, tensor: Any, target_shape: tuple[int, ...]) -> Any:
        return tensor

    def describe(self) -> str:
        return repr(self)

    def __str__(self) -> str:
        return self.describe()


@dataclass(frozen=True, repr=False)
class StripPrefix(KeyRule):
    """Remove a leading prefix, repeatedly (``module.`` from DataParallel, ``_orig_mod.`` from compile)."""

    prefix: str

    def rename(self, key: str) -> str | None:
        if not key.startswith(self.prefix):
            return None
        while key.startswith(self.prefix):
            key = key[len(self.prefix) :]
        return key

    def describe(self) -> str:
        return f"strip {self.prefix!r}"


@dataclass(frozen=True, repr=False)
class AddPrefix(KeyRule):
    """Prepend a prefix to keys that lack it (a bare backbone saved without its wrapper)."""

    prefix: str

    def rename(self, key: str) -> str | None:
        return None if key.startswith(self.prefix) else self.prefix + key

    def describe(self) -> str:
        return f"add {self.prefix!r}"


@dataclass(frozen=True, repr=False)
class Rename(KeyRule):
    """Regex rename: ``re.fullmatch(pattern, key)`` then ``expand(replacement)``."""

    pattern: str
    replacement: str

    def rename(self, key: str) -> str | None:
        m = re.fullmatch(self.pattern, key)
        return m.expand(self.replacement) if m else None

    def describe(self) -> str:
        return f"rename {self.pattern!r} -> {self.replacement!r}"


@dataclass(frozen=True, repr=False)
class Drop(KeyRule):
    """Checkpoint keys matching ``pattern`` (regex, full match) are ignored, e.g. auxiliary heads."""

    pattern: str

    def drops(self, key: str) -> bool:
        return re.fullmatch(self.pattern, key) is not None

    def describe(self) -> str:
        return f"drop {self.pattern!r}"


@dataclass(frozen=True, repr=False)
class Reshape(KeyRule):
    """Model keys matching ``pattern`` accept a tensor of another shape with the same number of
    elements, e.g. a 1x1 conv ``[out, in, 1, 1]`` into a ``Linear`` ``[out, in]``."""

    pattern: str

    def converts(self, model_key: str, source_shape: tuple[int, ...], target_shape: tuple[int, ...]) -> bool:
        if re.fullmatch(self.pattern, model_key) is None:
            return False
        squeeze = [d for d in source_shape if d != 1]
        return squeeze == [d for d in target_shape if d != 1]

    def convert(self, tensor: Any, target_shape: tuple[int, ...]) -> Any:
        return tensor.reshape(target_shape)

    def describe(self) -> str:
        return f"reshape {self.pattern!r}"


@dataclass(frozen=True, repr=False)
class Positional(KeyRule):
    """Pair checkpoint keys no name rule matched with model keys no checkpoint key filled, in
    order, checking every shape. Refuses (reports where they diverge) at the first shape that
    differs. ``num_batches_tracked`` buffers the checkpoint lacks are skipped and zero-filled."""

    def describe(self) -> str:
        return "positional (same order, shapes checked)"


DEFAULT_RULES: tuple[KeyRule, ...] = (StripPrefix("module."), StripPrefix("_orig_mod."))
"""Applied for every family before its own rules: DataParallel/DDP and ``torch.compile`` wrappers."""

"""Stage maps and the freeze grammar.

A family declares one ordered stage map (stage name -> module prefixes, plus its head).
Freezing, learning-rate groups, truncation and partial loading all read this one map, so
they can never disagree about where ``layer3`` ends. Nothing here imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .errors import FreezeSpecError, suggest

__all__ = ["Stage", "StageMap", "HEAD"]

HEAD = "head"
"""The pseudo-stage name of the classifier head in reports and parameter groups."""

_COUNT_DIGITS = 6
"""A freeze count longer than this is not a count of stages (no model has a million)."""

@dataclass(frozen=True)
class Stage:
    """One contiguous block of the backbone, named the way users talk about it.

    ``prefixes`` are dotted module paths (``"conv1"``, ``"layer1"``, ``"features.0"``);
    a parameter belongs to the stage when its name is a prefix or starts with ``prefix + "."``.
    """

    name: str
    prefixes: tuple[str, ...]

    def __post_init__(self) -> None:
        if isinstance(self.prefixes, str):  # a common slip: Stage("stem", "conv1")
            object.__setattr__(self, "prefixes", (self.prefixes,))


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".") or prefix == ""


@dataclass(frozen=True)
class StageMap:
    """The ordered stages of a backbone (input to output), its head, and named groups.

    ``groups`` are aliases for several stages (AlexNet: ``features`` = conv1…conv5) and
    may be used anywhere a stage name is accepted. ``extra_heads`` are further classifiers
    that go with ``head`` (a distilled model's ``head_dist``, VOLO's ``aux_head``): built for
    the same classes, replaced, trained and removed with it.
    """

    stages: tuple[Stage, ...]
    head: str
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    extra_heads: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        names = self.names
        if len(set(names)) != len(names):
            raise FreezeSpecError(f"stage names must be unique, got {names}")
        for group, members in self.groups.items():
            unknown = [m for m in members if m not in names]
            if unknown:
                raise FreezeSpecError(f"group {group!r} names unknown stages {unknown}; stages are {names}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    @property
    def heads(self) -> tuple[str, ...]:
        """``head`` and the ``extra_heads``: every module the classes are counted in."""
        return (self.head, *self.extra_heads) if self.head else ()

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise FreezeSpecError(f"unknown stage {name!r}. {self.describe()}")

    def stage_of(self, key: str) -> str | None:
        """The stage a parameter/buffer/module name belongs to: a stage name, ``HEAD`` or None."""
        # memoised: freezing and parameter groups ask about every parameter several times
        cache: dict[str, str | None] | None = self.__dict__.get("_stage_of_cache")
        if cache is None:
            cache = {}
            object.__setattr__(self, "_stage_of_cache", cache)
        try:
            return cache[key]
        except KeyError:
            found = cache[key] = self._find_stage(key)
            return found

    def _find_stage(self, key: str) -> str | None:
        """The stage of the longest prefix the key lies under (the first stage listing it wins a tie):
        the key's own dotted prefixes looked up longest first, a few dictionary lookups per key."""
        if self.head and (_under(key, self.head) or any(_under(key, h) for h in self.extra_heads)):
            return HEAD
        owners: dict[str, str] | None = self.__dict__.get("_prefix_owner")
        if owners is None:
            owners = {}
            for s in self.stages:
                for p in s.prefixes:
                    owners.setdefault(p, s.name)
            object.__setattr__(self, "_prefix_owner", owners)
        while True:
            if key in owners:
                return owners[key]
            dot = key.rfind(".")
            if dot < 0:
                return owners.get("")
            key = key[:dot]

    def describe(self) -> str:
        text = f"Stages, input to output: {', '.join(self.names)}; head: {', '.join(self.heads)}"
        if self.groups:
            text += "; groups: " + ", ".join(f"{g} ({'+'.join(m)})" for g, m in self.groups.items())
        return text + "."

    def truncated(self, last: str) -> StageMap:
        """The map of a backbone cut after stage ``last`` (no head)."""
        idx = self.names.index(self.stage(last).name)
        kept = self.stages[: idx + 1]
        kept_names = {s.name for s in kept}
        groups = {g: m for g, m in self.groups.items() if set(m) <= kept_names}
        return StageMap(kept, head="", groups=groups)

    # -- the freeze grammar -------------------------------------------------------------
    def resolve(self, spec: str | int | Sequence[str] | None) -> tuple[str, ...]:
        """Turn a freeze spec into stage names, in stage order.

        Grammar (comma-separated terms are unioned):
        ``None``/``"none"``/``""`` nothing; ``"all"``/``"backbone"`` every stage but the head;
        an int ``N`` the first N stages; ``"layer2"`` one stage or group; ``"layer1-3"`` and
        ``"stem-layer2"`` inclusive ranges; ``":layer3"`` from the first stage through layer3;
        ``"layer3:"`` from layer3 through the last stage.
        """
        if spec is None:
            return ()
        if isinstance(spec, bool):
            raise FreezeSpecError(f"freeze={spec!r} is ambiguous; use 'all' or None. {self.describe()}")
        if isinstance(spec, str) and spec.strip().isdigit() and spec.strip() not in self.names:
            spec = self._count(spec)  # "2" from a command line or a config file means the first 2 stages
        if isinstance(spec, int):
            if not 0 <= spec <= len(self.stages):
                shown = spec if abs(spec) < 10**_COUNT_DIGITS else f"<a number of {spec.bit_length():,} bits>"
                raise FreezeSpecError(
                    f"freeze={shown} asks for the first {shown} stages but there are {len(self.stages)}. "
                    f"{self.describe()}"
                )
            return self.names[:spec]
        terms: Iterable[str]
        if isinstance(spec, str):
            terms = [t.strip() for t in spec.split(",")]
        elif isinstance(spec, Sequence):
            terms = [str(t).strip() for t in spec]
        else:
            raise FreezeSpecError(f"freeze must be a string, an int, a list of names or None, not {spec!r}")
        chosen: set[str] = set()
        for term in terms:
            chosen.update(self._resolve_term(term, spec))
        return tuple(n for n in self.names if n in chosen)

    def _count(self, text: str) -> int:
        """A count of stages written as digits: a few ASCII or other decimal digits (``int`` refuses
        superscripts like "²" and, as a raw ValueError, numbers past 4,300 digits)."""
        digits = text.strip()
        if not digits.isdecimal() or len(digits) > _COUNT_DIGITS:
            shown = repr(digits) if len(digits) <= 20 else f"{digits[:8]!r}… ({len(digits):,} characters)"
            raise FreezeSpecError(
                f"freeze={shown} is not a count of stages: give a number from 0 to {len(self.stages)} (the first N "
                f"stages), or stage names. {self.describe()}")
        return int(digits)

    def _resolve_term(self, term: str, spec: object) -> tuple[str, ...]:
        names = self.names
        if term.lower() in ("", "none"):
            return ()
        if term.lower() in ("all", "backbone"):
            return names
        if term in names:
            return (term,)
        if term in self.groups:
            return self.groups[term]
        if term in (HEAD, self.head) and term:
            raise FreezeSpecError(
                f"freeze={spec!r}: the head ({self.head or 'none'}) is not a stage and stays trainable; "
                f"freeze 'all' to train only the head. {self.describe()}"
            )
        if ":" in term:
            left, _, right = term.partition(":")
            lo = self._index(left.strip(), spec) if left.strip() else 0
            hi = self._index(right.strip(), spec) if right.strip() else len(names) - 1
            return self._span(lo, hi, term, spec)
        if "-" in term:
            return self._range(term, spec)
        raise FreezeSpecError(
            f"freeze={spec!r}: {term!r} is not a stage, group or range.{suggest(term, self._vocabulary())} "
            f"{self.describe()}"
        )

    def _range(self, term: str, spec: object) -> tuple[str, ...]:
        """``"layer1-3"``/``"stem-layer2"``; stage names may contain hyphens, so every split is tried."""
        splits = [(term[:i].strip(), term[i + 1 :].strip()) for i, c in enumerate(term) if c == "-"]
        candidates = []
        for left, right in splits:
            if right.isdigit() and right not in self.names:
                # shorthand "layer1-3": the right end borrows the left end's name stem
                right = re.sub(r"\d+$", "", left) + right
            candidates.append((left, right))
            if left in self.names and right in self.names:
                return self._span(self.names.index(left), self.names.index(right), term, spec)
        left, right = candidates[0]
        return self._span(self._index(left, spec), self._index(right, spec), term, spec)

    def _vocabulary(self) -> list[str]:
        return [*self.names, *self.groups, "all", "backbone", "none"]

    def _index(self, name: str, spec: object) -> int:
        if name in self.groups:
            raise FreezeSpecError(
                f"freeze={spec!r}: group {name!r} cannot be a range end; use its stages. {self.describe()}"
            )
        try:
            return self.names.index(name)
        except ValueError:
            raise FreezeSpecError(
                f"freeze={spec!r}: unknown stage {name!r}.{suggest(name, self._vocabulary())} {self.describe()}"
            ) from None

    def _span(self, lo: int, hi: int, term: str, spec: object) -> tuple[str, ...]:
        if lo > hi:
            raise FreezeSpecError(
                f"freeze={spec!r}: range {term!r} runs backwards; write it input to output. {self.describe()}"
            )
        return self.names[lo : hi + 1]

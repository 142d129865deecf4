"""Where a checkpoint's keys fit a model when no rule says so: wrapper prefixes, found by shape.

Training code wraps models: Lightning keeps them as ``model.``, DDP as ``module.``,
``torch.compile`` as ``_orig_mod.`` (in either order with DDP), detectors as
``backbone.body.``, self-supervised trainers as ``student.``/``teacher.``, and a user's own
network may hold the backbone as ``backbone.``. Rather than list every wrapper, the planner
pairs every checkpoint key with every model key that ends the same way and has the same
shape, and counts how many parameter elements each (checkpoint prefix, model prefix) pair
would place. Every key is counted, in no particular order, so two copies of a network (a
query and a key encoder) always come out as two candidates of equal weight, whatever the
file's size or key order; the planner then plans each candidate with the family's rules and
refuses a tie. Nothing here imports torch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from math import prod

__all__ = ["CheckpointKeys", "Wrapper", "wrapper_candidates", "leading_prefixes"]

Shape = tuple[int, ...]

_DEPTH = 4
"""Prefixes of up to this many dotted components are considered (``a.b.c.d.``)."""


@dataclass(frozen=True)
class Wrapper:
    """Strip ``strip`` from checkpoint keys, then prepend ``add``: ``elements`` would land."""

    strip: str
    add: str
    elements: int


def _splits(key: str) -> list[tuple[str, str]]:
    """(prefix, rest) at each dot, keeping at least two components in ``rest`` (a lone
    ``weight`` would pair with every module of the model)."""
    out = [("", key)]
    parts = key.split(".", _DEPTH)
    end = 0
    for part in parts[: min(_DEPTH, key.count(".") - 1)]:
        end += len(part) + 1
        out.append((key[:end], key[end:]))
    return out


def _size(shape: Shape) -> int:
    return max(prod(shape), 1)


class CheckpointKeys:
    """A checkpoint's keys split once at each dot (``_splits``), with how many keys lie under
    each prefix: what wrapper voting, the shared prefixes and the planner's bounds all read."""

    def __init__(self, checkpoint: Mapping[str, Shape], elements: int | None = None) -> None:
        self.entries = [(key, tuple(shape), _size(tuple(shape)), _splits(key)) for key, shape in checkpoint.items()]
        self.splits = {key: splits for key, _, _, splits in self.entries}
        self.under = _prefix_counts(self.splits)
        """How many keys start with each dotted prefix (every prefix, whatever is left after it)."""
        self.elements = sum(size for _, _, size, _ in self.entries) if elements is None else elements
        """The whole checkpoint's elements (``elements``, when these are some of its keys)."""

    def count_under(self, keys: Iterable[str]) -> Counter[str]:
        """How many of ``keys`` lie under each dotted prefix."""
        return _prefix_counts(keys)


def _prefix_counts(keys: Iterable[str]) -> Counter[str]:
    """Keys under each dotted prefix of up to ``_DEPTH + 1`` components: every prefix the planner
    asks about is a wrapper (``_splits``, at most ``_DEPTH``) or one that encloses it, and a key of
    thousands of dots costs no more than a short one."""
    counts: Counter[str] = Counter()
    for key in keys:
        pos = key.find(".")
        depth = _DEPTH + 1
        while pos >= 0 and depth:
            counts[key[: pos + 1]] += 1
            pos = key.find(".", pos + 1)
            depth -= 1
    return counts


def wrapper_candidates(checkpoint: Mapping[str, Shape] | CheckpointKeys, model: Mapping[str, Shape],
                       scoped_share: float = 0.9) -> list[Wrapper]:
    """Every (strip, add) prefix pair under which some checkpoint elements fit model keys of
    the same shape, most elements first (ties by the shorter, then the alphabetically first
    pair, so the order never depends on the file's key order); pairs that change nothing are
    left out.

    Every key votes: the answer is exact, and the planner's tie detection relies on it (a
    sample can see one copy of a network and miss the other). A pair that adds a prefix puts
    the checkpoint inside that sub-module of the model, and such a reading must load
    ``scoped_share`` of the checkpoint's elements: sub-modules holding fewer elements than
    that cannot, and are not offered.
    """
    keys = checkpoint if isinstance(checkpoint, CheckpointKeys) else CheckpointKeys(checkpoint)
    votes: Counter[tuple[str, str]] = Counter()
    for _, shape, size, splits in keys.entries:  # a prefix to strip: each key's tails looked up directly
        for strip, rest in splits[1:]:
            found = model.get(rest)
            if found is not None and tuple(found) == shape:
                votes[(strip, "")] += size
    needed = scoped_share * keys.elements
    scopes = tuple(_roomy_prefixes(model, needed))
    if scopes:  # prefixes on both sides: the network as a sub-module big enough to hold it
        by_rest: dict[tuple[str, Shape], list[str]] = {}
        for key, shape in model.items():
            if key.startswith(scopes):
                for prefix, rest in _splits(key)[1:]:
                    if prefix in scopes:
                        by_rest.setdefault((rest, tuple(shape)), []).append(prefix)
        for _, shape, size, splits in keys.entries:
            for strip, rest in splits:
                for add in by_rest.get((rest, shape), ()):
                    if strip != add:
                        votes[(strip, add)] += size
    best = sorted(votes.items(), key=lambda kv: (-kv[1], len(kv[0][0]) + len(kv[0][1]), kv[0]))
    return [Wrapper(strip, add, n) for (strip, add), n in best]


def _roomy_prefixes(model: Mapping[str, Shape], needed: float) -> list[str]:
    """The dotted prefixes of model keys holding at least ``needed`` elements, found level by
    level: a prefix holds no more than its parent, so only roomy parents are looked into."""
    found: list[str] = []
    level = [(key, _size(tuple(shape)), 0) for key, shape in model.items()]
    while level:
        room: dict[str, int] = {}
        for key, size, start in level:
            dot = key.find(".", start)
            if dot >= 0:
                prefix = key[: dot + 1]
                room[prefix] = room.get(prefix, 0) + size
        roomy = {p for p, n in room.items() if n >= needed}
        found += sorted(roomy)
        level = [(key, size, start) for key, size, start in
                 ((k, z, k.find(".", s) + 1) for k, z, s in level) if start and key[:start] in roomy]
    return found


def leading_prefixes(keys: Iterable[str] | CheckpointKeys, share: float = 0.25) -> list[str]:
    """Prefixes (one to three components) that at least ``share`` of the keys start with, the
    most shared first (then the longest, then alphabetically): wrappers around a checkpoint
    whose names also need the family's rules. Every key counts."""
    index = keys if isinstance(keys, CheckpointKeys) else CheckpointKeys(dict.fromkeys(keys, ()))
    total = len(index.entries)
    counts = Counter(prefix for *_, splits in index.entries for prefix, _ in splits[1:4])
    common = [p for p, n in counts.items() if n >= share * total]
    return sorted(common, key=lambda p: (-counts[p], -len(p), p))

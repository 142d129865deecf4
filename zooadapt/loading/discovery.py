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
from itertools import accumulate, chain
from math import prod

from ..contract.caches import remembered

__all__ = ["CheckpointKeys", "Wrapper", "wrapper_candidates", "leading_prefixes", "wrapping_prefixes"]

Shape = tuple[int, ...]

_DEPTH = 4
"""Prefixes of up to this many dotted components are considered (``a.b.c.d.``)."""


@dataclass(frozen=True)
class Wrapper:
    """Strip ``strip`` from checkpoint keys, then prepend ``add``: ``elements`` would land."""

    strip: str
    add: str
    elements: int


def _prefixes(key: str) -> list[str]:
    """Each dotted prefix of ``key`` of up to ``_DEPTH + 1`` components (``a.b.c`` -> ``a.``,
    ``a.b.``): every prefix the planner asks about is a wrapper (at most ``_DEPTH``) or one that
    encloses it, and a key of thousands of dots costs no more than a short one."""
    return list(accumulate(part + "." for part in key.split(".", _DEPTH + 1)[:-1]))


class CheckpointKeys:
    """A checkpoint's keys with their dotted prefixes, worked out once, and how many keys lie
    under each prefix: what wrapper voting, the shared prefixes and the planner's bounds all read.

    ``entries`` holds (key, shape, elements, wrappers) per key, in file order; ``wrappers`` are
    the prefixes that may be stripped from the key: at most ``_DEPTH`` components, and at least
    two left after them (a lone ``weight`` would pair with every module of the model)."""

    def __init__(self, checkpoint: Mapping[str, Shape], elements: int | None = None) -> None:
        by_module: dict[str, tuple[list[str], list[str]]] = {}  # a module's keys share its prefixes
        self.prefixes: dict[str, list[str]] = {}
        """Each key's dotted prefixes (``_prefixes``); lists shared between keys, never changed."""
        self.entries: list[tuple[str, Shape, int, list[str]]] = []
        modules = []
        for key, shape in checkpoint.items():
            module = key[: key.rfind(".") + 1]
            modules.append(module)
            found = by_module.get(module)
            if found is None:
                every = _prefixes(module)
                # the last prefix leaves one component (up to _DEPTH + 1 dots) or lies beyond _DEPTH
                found = by_module[module] = (every, every[:-1])
            self.prefixes[key] = found[0]
            shape = tuple(shape)
            self.entries.append((key, shape, max(prod(shape), 1), found[1]))
        self.under = Counter(chain.from_iterable(self.prefixes.values()))
        """How many keys start with each dotted prefix (every prefix, whatever is left after it)."""
        self.in_module = Counter(modules)
        """How many keys each module holds directly (``a.b.`` holds ``a.b.weight``, not ``a.b.c.weight``)."""
        self.elements = sum(size for _, _, size, _ in self.entries) if elements is None else elements
        """The whole checkpoint's elements (``elements``, when these are some of its keys)."""

    def count_under(self, keys: Iterable[str]) -> Counter[str]:
        """How many of ``keys`` lie under each dotted prefix (keys of this checkpoint or not)."""
        known = self.prefixes
        return Counter(chain.from_iterable(known[key] if key in known else _prefixes(key) for key in keys))


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
    # the model's keys and shapes as one key for what is remembered per model (shapes as tuples:
    # a list given for a shape would not hash)
    model_keys, model_shapes = tuple(model), tuple(map(tuple, model.values()))
    scopes = _roomy_prefixes(_sub_module_sizes(model_keys, model_shapes), scoped_share * keys.elements)
    tails: Mapping[str, list[tuple[Shape, str]]] = {}
    if scopes:  # prefixes on both sides too: the network as a sub-module big enough to hold it
        tails = _tails_in_scopes(model_keys, model_shapes, scopes)
    stripped: Counter[str] = Counter()
    votes: Counter[tuple[str, str]] = Counter()
    get, scoped = model.get, tails.get
    for key, shape, size, wrappers in keys.entries:  # each key's tails looked up directly, once
        if tails:
            for model_shape, add in scoped(key, ()):  # nothing stripped, a scope added
                if model_shape == shape and add:
                    votes[("", add)] += size
        for strip in wrappers:
            rest = key[len(strip):]
            found = get(rest)
            if found is not None and (found == shape or tuple(found) == shape):
                stripped[strip] += size
            if tails:
                for model_shape, add in scoped(rest, ()):
                    if model_shape == shape and strip != add:
                        votes[(strip, add)] += size
    votes.update({(strip, ""): n for strip, n in stripped.items()})
    best = sorted(votes.items(), key=lambda kv: (-kv[1], len(kv[0][0]) + len(kv[0][1]), kv[0]))
    return [Wrapper(strip, add, n) for (strip, add), n in best]


@remembered("model key tails under sub-modules", 32, "the model's keys and shapes, in order, and the sub-modules")
def _tails_in_scopes(keys: tuple[str, ...], shapes: tuple[Shape, ...], scopes: tuple[str, ...]
                     ) -> dict[str, list[tuple[Shape, str]]]:
    """What follows a scope in a model key -> (that key's shape, the scope) for each, for the
    model keys under ``scopes`` (at most ``_DEPTH`` components, two at least left after them)."""
    tails: dict[str, list[tuple[Shape, str]]] = {}
    roomy = frozenset(scopes)
    for key, shape in zip(keys, shapes):
        if key.startswith(scopes):
            for prefix in _prefixes(key)[:-1]:
                if prefix in roomy:
                    tails.setdefault(key[len(prefix):], []).append((shape, prefix))
    return tails


def _roomy_prefixes(sizes: Mapping[str, int], needed: float) -> tuple[str, ...]:
    """The dotted prefixes of model keys holding at least ``needed`` elements (``sizes``: what
    each holds, worked out once per model by ``_sub_module_sizes``), shallowest first (then
    alphabetically)."""
    return tuple(sorted((p for p, n in sizes.items() if n >= needed), key=lambda p: (p.count("."), p)))


@remembered("sub-module sizes of models", 32, "the model's keys and shapes, in order")
def _sub_module_sizes(keys: tuple[str, ...], shapes: tuple[Shape, ...]) -> dict[str, int]:
    """The elements under each dotted prefix of the model's keys, at every depth."""
    sizes: dict[str, int] = {}
    for key, shape in zip(keys, shapes):
        size = max(prod(shape), 1)
        dot = key.find(".")
        while dot >= 0:
            prefix = key[: dot + 1]
            sizes[prefix] = sizes.get(prefix, 0) + size
            dot = key.find(".", dot + 1)
    return sizes


def leading_prefixes(keys: Iterable[str] | CheckpointKeys, share: float = 0.25) -> list[str]:
    """Prefixes (one to three components) that at least ``share`` of the keys start with, the
    most shared first (then the longest, then alphabetically): wrappers around a checkpoint
    whose names also need the family's rules. Every key counts."""
    index = keys if isinstance(keys, CheckpointKeys) else CheckpointKeys(dict.fromkeys(keys, ()))
    total = len(index.entries)
    # a key is wrapped by a prefix of its own unless that prefix is its module (one component left)
    counts = {p: n - index.in_module[p] for p, n in index.under.items() if p.count(".") <= 3}
    common = [p for p, n in counts.items() if n and n >= share * total]
    return sorted(common, key=lambda p: (-counts[p], -len(p), p))


def wrapping_prefixes(keys: Iterable[str]) -> list[str]:
    """The dotted prefixes every key starts with, shortest first (``module.``, then
    ``module._orig_mod.``), up to ``_DEPTH`` components: what DDP, Lightning or torch.compile put
    around a whole state dict. Exact and cheap: the first key's prefixes, each checked against
    every key until one key lacks it (a checkpoint with no wrapper costs a key or two)."""
    keys = list(keys)
    if not keys:
        return []
    out: list[str] = []
    for prefix in _prefixes(keys[0])[:_DEPTH]:
        if not all(k.startswith(prefix) for k in keys):
            break
        out.append(prefix)
    return out

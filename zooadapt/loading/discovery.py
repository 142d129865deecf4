"""Where a checkpoint's keys fit a model when no rule says so: wrapper prefixes, found by shape.

Training code wraps models: Lightning keeps them as ``model.``, DDP as ``module.``,
``torch.compile`` as ``_orig_mod.`` (in either order with DDP), detectors as
``backbone.body.``, self-supervised trainers as ``student.``/``teacher.``, and a user's own
network may hold the backbone as ``backbone.``. Rather than list every wrapper, the planner
pairs every checkpoint key with every model key that ends the same way and has the same
shape, and counts how many parameter elements each (checkpoint prefix, model prefix) pair
would place. The pair with the most is the wrapper; the planner then checks it with the
family's rules like any other rule. Nothing here imports torch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from math import prod

__all__ = ["Wrapper", "wrapper_candidates", "leading_prefixes"]

Shape = tuple[int, ...]

_DEPTH = 4
"""Prefixes of up to this many dotted components are considered (``a.b.c.d.``)."""


@dataclass(frozen=True)
class Wrapper:
    """Strip ``strip`` from checkpoint keys, then prepend ``add``: ``elements`` would land."""

    strip: str
    add: str
    elements: int


def _splits(key: str) -> Iterable[tuple[str, str]]:
    """(prefix, rest) at each dot, keeping at least two components in ``rest`` (a lone
    ``weight`` would pair with every module of the model)."""
    yield "", key
    pos = -1
    for _ in range(_DEPTH):
        pos = key.find(".", pos + 1)
        if pos < 0 or key.count(".", pos + 1) < 1:
            return
        yield key[: pos + 1], key[pos + 1 :]


def wrapper_candidates(checkpoint: Mapping[str, Shape], model: Mapping[str, Shape], limit: int = 4,
                       sample: int = 128) -> list[Wrapper]:
    """The (strip, add) prefix pairs under which the most checkpoint elements fit model keys of
    the same shape, best first; pairs that change nothing are left out.

    Votes are counted on at most ``sample`` checkpoint keys, evenly spread (the planner then
    checks each candidate on every key), so the search costs about the same for any size.
    """
    keys = list(checkpoint)
    sampled = [(k, tuple(checkpoint[k])) for k in keys[:: max(1, len(keys) // sample)]]
    total = sum(max(prod(shape), 1) for _, shape in sampled)
    # first the common case, a prefix to strip: each checkpoint key's tails looked up directly
    votes: Counter[tuple[str, str]] = Counter()
    for key, shape in sampled:
        for strip, rest in _splits(key):
            if strip and tuple(model.get(rest, ())) == shape:
                votes[(strip, "")] += max(prod(shape), 1)
    if not votes or max(votes.values()) < total / 2:
        # then prefixes on both sides: the model holds the checkpoint's network as a sub-module
        by_rest: dict[tuple[str, Shape], list[str]] = {}
        for key, shape in model.items():
            for prefix, rest in _splits(key):
                if prefix:
                    by_rest.setdefault((rest, tuple(shape)), []).append(prefix)
        for key, shape in sampled:
            for strip, rest in _splits(key):
                for add in by_rest.get((rest, shape), ()):
                    if strip != add:
                        votes[(strip, add)] += max(prod(shape), 1)
    best = sorted(votes.items(), key=lambda kv: (-kv[1], len(kv[0][0]) + len(kv[0][1])))
    return [Wrapper(strip, add, n) for (strip, add), n in best[:limit]]


def leading_prefixes(keys: Iterable[str], share: float = 0.25, limit: int = 3) -> list[str]:
    """Prefixes (one to three components) that at least ``share`` of the keys start with,
    longest first: wrappers around a checkpoint whose names also need the family's rules."""
    keys = list(keys)
    keys = keys[:: max(1, len(keys) // 256)]
    counts: Counter[str] = Counter()
    for key in keys:
        for prefix, _ in list(_splits(key))[1:4]:
            counts[prefix] += 1
    common = [p for p, n in counts.items() if n >= share * len(keys)]
    return sorted(common, key=lambda p: (-counts[p], -len(p)))[:limit]

"""``zooadapt.identify``: which architecture a checkpoint is, asked of every architecture zooadapt loads.

A file from a colleague, a paper's release or an old experiment rarely says what it is. The
answer comes from its tensors alone: the file is read as ``load`` reads it (a safetensors
header; a pickle is unpickled, weights only), then matched against the signature of every
built-in, plugin and timm architecture (``zooadapt.loading.matching``: exact bounds from the
multiset of shapes, then the real planner on the few that could fit, so a file under
``module.`` or in transformers' names is recognised as ``load`` would read it).
``load(weights=FILE)`` without a name uses the same answer (``architecture_for``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

from ..contract.errors import AmbiguousCheckpointError, IncompatibleCheckpointError
from ..contract.rules import KeyRule
from ..weights.reparametrized import find_folds, folded_shapes
from .matching import Match, match_checkpoint
from .pipeline import memory_checkpoint, read_checkpoint_for, reading_on_cpu, resolve_weights, users_default_device
from .request import WeightsLike, in_memory, make_request

__all__ = ["identify", "Identification", "Match", "architecture_for"]


@dataclass(frozen=True)
class Identification:
    """The architectures a checkpoint fits, best first (iterate, index or ``print`` it)."""

    source: str
    """Where the checkpoint came from, as the load report names it."""
    tensors: int
    matches: tuple[Match, ...]
    seconds: float

    def __iter__(self) -> Iterator[Match]:
        return iter(self.matches)

    def __len__(self) -> int:
        return len(self.matches)

    @overload
    def __getitem__(self, i: int) -> Match: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[Match, ...]: ...
    def __getitem__(self, i: int | slice) -> Match | tuple[Match, ...]:
        return self.matches[i]

    @property
    def best(self) -> Match | None:
        return self.matches[0] if self.matches else None

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.matches]

    def __str__(self) -> str:
        lines = [f"{self.source}: {self.tensors} tensors"]
        if not self.matches:
            lines.append("  no architecture takes half of its tensors")
        lines += [f"  {i}. {m}" for i, m in enumerate(self.matches, 1)]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.source, "tensors": self.tensors, "seconds": round(self.seconds, 3),
                "matches": [{"name": m.name, "family": m.family, "share": round(m.share, 6), "fits": m.fits,
                             "complete": m.complete, "coverage": round(m.coverage, 6),
                             "element_share": round(m.element_share, 6), "set_aside": m.set_aside,
                             "same_signature": list(m.same_signature)}
                            for m in self.matches]}


def identify(
    weights: WeightsLike,
    *,
    limit: int = 5,
    rules: Sequence[KeyRule | str] | None = None,
    use_ema: bool | None = None,
    trusted: bool = False,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Identification:
    """The architectures ``weights`` fits, best first, with the share of its tensors each takes.

    Args:
        weights: a local file, a URL, ``hf://org/repo[@revision][/file]``, or a state dict in
            memory (as ``load`` takes).
        limit: how many answers at most (the best ones, exactly: see ``zooadapt.loading.matching``).
        rules: key rules the file needs (``"strip:encoder_q."``), as ``load(rules=...)``.
        use_ema, trusted, revision, cache_dir: as for ``zooadapt.load``.

    Each answer (``Match``) says the name to load it by, its family, the share of the file's
    tensors it takes, whether every tensor of its backbone is filled (``fits``; both together:
    ``complete``), and other names with exactly the same tensors. Every built-in and plugin model
    and every timm architecture is considered; the first call in a new environment may describe
    architectures the shipped index lacks (a newer timm, a plugin), once, into ``$ZOOADAPT_CACHE``.
    """
    started = time.perf_counter()
    request = make_request(weights=weights, rules=rules, use_ema=use_ema, trusted=trusted, revision=revision,
                           cache_dir=cache_dir)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        from ..contract.errors import InvalidArgumentError

        raise InvalidArgumentError(f"limit={limit!r}: give how many answers you want, an integer >= 1")
    with reading_on_cpu(users_default_device()):
        if in_memory(request.weights):
            checkpoint = memory_checkpoint(request.weights, use_ema=request.use_ema, copy=False)
        else:
            _, fetched = resolve_weights(request.weights, revision=request.revision, cache_dir=request.cache_dir)
            checkpoint = read_checkpoint_for(request, fetched, shapes_only=True)
    # a pruned or weight-normalised file is identified by the plain tensors it folds into
    shapes = folded_shapes(checkpoint.shapes, find_folds(checkpoint.shapes))
    matches = match_checkpoint(shapes, limit=limit, rules=request.rules, order=checkpoint.order)
    return Identification(checkpoint.origin, len(checkpoint.shapes), tuple(matches), time.perf_counter() - started)


def architecture_for(found: Identification) -> str:
    """The name ``load(weights=FILE)`` builds when given no name: the best answer, when the file
    fits it completely and no architecture with other tensors fits it as well; else an error
    that lists the candidates and says how to choose."""
    best = found.best
    if best is not None and best.complete:
        rivals = [m for m in found.matches[1:] if m.rank() == best.rank()]
        if not rivals:
            return best.name
        names = [best, *rivals]
        raise AmbiguousCheckpointError(
            f"{found.source} fits {len(names)} architectures equally well: "
            + "; ".join(f"{m.name} ({m.family}, {m.share:.0%} of its tensors)" for m in names)
            + f". Name the one you mean: zooadapt.load({best.name!r}, weights=...).")
    if not found.matches:
        raise IncompatibleCheckpointError(
            f"{found.source} ({found.tensors} tensors) fits no architecture zooadapt knows: none takes even half of "
            "its tensors. If it is a model of your own, build it and use zooadapt.load_weights(model, FILE); "
            "`zooadapt inspect FILE` lists its keys.")
    # none of them takes the file whole, so none is said to fit it: each says what it takes of the file and
    # how much of its own backbone it fills (never "100%" of what is not whole)
    listed = "; ".join(f"{m.name} ({_short_of_whole(m.share)} of its tensors, " + (
        "its whole backbone filled" if m.fits else f"{_short_of_whole(m.coverage)} of its backbone filled") + ")"
        for m in found.matches)
    first = found.matches[0]
    if first.fits:
        how = f"zooadapt.load({first.name!r}, weights=...) loads it (the tensors it has no place for stay unused)"
    elif first.coverage >= 0.5:  # partial=True's default min_coverage
        how = f"zooadapt.load({first.name!r}, weights=..., partial=True) loads what fits"
    else:  # too little for partial=True: a smaller variant of it, built with fewer blocks, may take it whole
        how = (f"The closest fills only {first.coverage:.0%} of {first.name}'s backbone; if the file is a smaller "
               f"variant (fewer blocks or stages), pass the builder's option for it, e.g. zooadapt.load("
               f"{first.name!r}, weights=..., depth=N) for a ViT")
    raise IncompatibleCheckpointError(
        f"{found.source} fits no architecture completely, so zooadapt will not pick one: the closest are {listed}. "
        + ("Name the one you mean: " if first.fits or first.coverage >= 0.5 else "") + f"{how}.")


def _short_of_whole(share: float) -> str:
    """``share`` as a percentage that reads 100% only when it is whole (0.996 is 99%, not 100%)."""
    return f"{share if share >= 1.0 else min(share, 0.99):.0%}"

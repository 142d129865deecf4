"""The load plan: which checkpoint key goes to which model key, by which rule, shapes checked.

The plan is computed from names and shapes alone (no tensor data), so it can be printed by
``zooadapt inspect`` before anything loads; ``load`` executes it and the load report is the
plan plus what happened. Nothing downstream re-derives what the plan decided.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from math import prod
from typing import Any

from .errors import IncompatibleCheckpointError
from .rules import DEFAULT_RULES, KeyRule, Positional

__all__ = ["Status", "KeyMapping", "LoadPlan", "make_plan"]

Shape = tuple[int, ...]
_TRACKED = "num_batches_tracked"


class Status(str, Enum):
    LOADED = "loaded"
    DROPPED_HEAD = "dropped_head"  # old classifier head, replaced by a new one
    SKIPPED = "skipped"  # the user asked to leave this part of the model alone
    IGNORED = "ignored"  # a family Drop rule: the key carries nothing for this model
    UNEXPECTED = "unexpected"  # no model key takes it
    MISMATCHED = "mismatched"  # the model key exists but has another shape


@dataclass(frozen=True)
class KeyMapping:
    checkpoint_key: str
    model_key: str | None
    status: Status
    rules: tuple[str, ...] = ()
    checkpoint_shape: Shape = ()
    model_shape: Shape | None = None

    @property
    def renamed(self) -> bool:
        return self.model_key is not None and self.model_key != self.checkpoint_key


@dataclass
class LoadPlan:
    mappings: list[KeyMapping]
    missing: list[str]
    """Model keys outside the head and skipped parts that no checkpoint key fills."""
    new_head: list[str]
    """Head keys that will be freshly initialised (the checkpoint's head was dropped or absent)."""
    defaulted: list[str]
    """``num_batches_tracked`` buffers the checkpoint lacks (old checkpoints); set to zero."""
    skipped_model_keys: list[str]
    coverage: float
    """Fraction of the model's parameter elements that come from the checkpoint."""
    head: str = ""
    converters: dict[str, KeyRule] = field(default_factory=dict)

    def by_status(self, status: Status) -> list[KeyMapping]:
        return [m for m in self.mappings if m.status is status]

    @property
    def loaded(self) -> list[KeyMapping]:
        return self.by_status(Status.LOADED)

    @property
    def renamed(self) -> list[KeyMapping]:
        return [m for m in self.loaded if m.renamed]

    @property
    def dropped(self) -> list[KeyMapping]:
        return self.by_status(Status.DROPPED_HEAD)

    @property
    def unexpected(self) -> list[KeyMapping]:
        return self.by_status(Status.UNEXPECTED)

    @property
    def mismatched(self) -> list[KeyMapping]:
        return self.by_status(Status.MISMATCHED)

    def assignments(self) -> dict[str, str]:
        """checkpoint key -> model key for everything that loads."""
        return {m.checkpoint_key: m.model_key for m in self.loaded if m.model_key is not None}

    def problems(self, limit: int = 8) -> list[str]:
        """The first lines that make this plan unsafe to execute without ``partial=True``."""
        lines = [
            f"shape mismatch: checkpoint {m.checkpoint_key} {list(m.checkpoint_shape)} -> "
            f"model {m.model_key} {list(m.model_shape or ())}"
            for m in self.mismatched
        ]
        lines += [f"missing from checkpoint: {k}" for k in self.missing]
        return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])

    def check(self, *, partial: bool, what: str = "model") -> None:
        """Refuse a silent partial load: raise when backbone tensors are missing or mismatched."""
        if partial or not (self.missing or self.mismatched):
            return
        raise IncompatibleCheckpointError(
            f"the checkpoint does not fit {what}: {len(self.missing)} missing and "
            f"{len(self.mismatched)} shape-mismatched tensors outside the head; it covers "
            f"{self.coverage:.1%} of the parameters.\n  "
            + "\n  ".join(self.problems())
            + "\nCheck that the checkpoint belongs to this architecture (zooadapt inspect CHECKPOINT --model NAME "
            "shows every key), or pass partial=True to load what fits and initialise the rest."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "coverage": self.coverage,
            "loaded": len(self.loaded),
            "renamed": {m.checkpoint_key: [m.model_key, list(m.rules)] for m in self.renamed},
            "dropped_head": [m.checkpoint_key for m in self.dropped],
            "new_head": list(self.new_head),
            "missing": list(self.missing),
            "defaulted": list(self.defaulted),
            "skipped": list(self.skipped_model_keys),
            "unexpected": [m.checkpoint_key for m in self.unexpected],
            "mismatched": [
                {"checkpoint": m.checkpoint_key, "model": m.model_key,
                 "checkpoint_shape": list(m.checkpoint_shape), "model_shape": list(m.model_shape or ())}
                for m in self.mismatched
            ],
            "ignored": [m.checkpoint_key for m in self.by_status(Status.IGNORED)],
        }


def _under_any(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _rename(key: str, rules: Sequence[KeyRule], model_keys: Mapping[str, Shape]) -> tuple[str, tuple[str, ...]]:
    """Apply renaming rules in order until the key names a model key; return it and the rules used."""
    if key in model_keys:
        return key, ()
    used: list[str] = []
    for rule in rules:
        new = rule.rename(key)
        if new is not None and new != key:
            key = new
            used.append(rule.describe())
            if key in model_keys:
                break
    return key, tuple(used)


def make_plan(
    checkpoint: Mapping[str, Shape],
    model: Mapping[str, Shape],
    *,
    parameters: Iterable[str] | None = None,
    rules: Sequence[KeyRule] = (),
    head: str = "",
    skip: Sequence[str] = (),
    default_rules: bool = True,
) -> LoadPlan:
    """Plan how the ``checkpoint`` (key -> shape, in file order) fills the ``model`` (state-dict
    key -> shape, in module order).

    ``parameters`` names the model keys that are parameters (for coverage; default: all).
    ``head`` is the head's module prefix: head tensors whose shape differs are dropped, not
    errors. ``skip`` lists module prefixes the user wants left alone.
    """
    all_rules: list[KeyRule] = [*(DEFAULT_RULES if default_rules else ()), *rules]
    name_rules = [r for r in all_rules if not isinstance(r, Positional)]
    positional = any(isinstance(r, Positional) for r in all_rules)
    heads = (head,) if head else ()

    mappings: list[KeyMapping] = []
    converters: dict[str, KeyRule] = {}
    filled: set[str] = set()
    leftovers: list[tuple[str, Shape]] = []

    for ck_key, ck_shape in checkpoint.items():
        ck_shape = tuple(ck_shape)
        if any(r.drops(ck_key) for r in all_rules):
            mappings.append(KeyMapping(ck_key, None, Status.IGNORED, (), ck_shape))
            continue
        key, used = _rename(ck_key, name_rules, model)
        if key not in model:
            leftovers.append((ck_key, ck_shape))
            continue
        mappings.append(_match(ck_key, key, used, ck_shape, model[key], heads, skip, all_rules, converters))
        filled.add(key)

    if positional and leftovers:
        leftovers = _pair_by_order(leftovers, model, filled, heads, skip, mappings, checkpoint)
    mappings += [KeyMapping(k, None, Status.UNEXPECTED, (), s) for k, s in leftovers]

    loaded = {m.model_key for m in mappings if m.status is Status.LOADED}
    has_tracked = any(k.endswith(_TRACKED) for k in checkpoint)
    missing, new_head, defaulted, skipped = [], [], [], []
    for key in model:
        if key in loaded:
            continue
        if _under_any(key, heads):
            new_head.append(key)
        elif _under_any(key, skip):
            skipped.append(key)
        elif key.endswith(_TRACKED) and not has_tracked:
            defaulted.append(key)
        else:
            missing.append(key)

    param_keys = set(parameters) if parameters is not None else set(model)
    total = sum(prod(model[k]) for k in model if k in param_keys)
    covered = sum(prod(model[k]) for k in loaded if k in param_keys)
    return LoadPlan(
        mappings=mappings,
        missing=missing,
        new_head=new_head,
        defaulted=defaulted,
        skipped_model_keys=skipped,
        coverage=covered / total if total else 1.0,
        head=head,
        converters=converters,
    )


def _match(
    ck_key: str,
    key: str,
    used: tuple[str, ...],
    ck_shape: Shape,
    model_shape: Shape,
    heads: Sequence[str],
    skip: Sequence[str],
    rules: Sequence[KeyRule],
    converters: dict[str, KeyRule],
) -> KeyMapping:
    model_shape = tuple(model_shape)
    if _under_any(key, skip):
        return KeyMapping(ck_key, key, Status.SKIPPED, used, ck_shape, model_shape)
    if ck_shape == model_shape:
        return KeyMapping(ck_key, key, Status.LOADED, used, ck_shape, model_shape)
    if _under_any(key, heads):
        return KeyMapping(ck_key, key, Status.DROPPED_HEAD, used, ck_shape, model_shape)
    for rule in rules:
        if rule.converts(key, ck_shape, model_shape):
            converters[ck_key] = rule
            return KeyMapping(ck_key, key, Status.LOADED, (*used, rule.describe()), ck_shape, model_shape)
    return KeyMapping(ck_key, key, Status.MISMATCHED, used, ck_shape, model_shape)


def _pair_by_order(
    leftovers: list[tuple[str, Shape]],
    model: Mapping[str, Shape],
    filled: set[str],
    heads: Sequence[str],
    skip: Sequence[str],
    mappings: list[KeyMapping],
    checkpoint: Mapping[str, Shape],
) -> list[tuple[str, Shape]]:
    """Pair leftover checkpoint keys with unfilled model keys in order; refuse at a divergence."""
    has_tracked = any(k.endswith(_TRACKED) for k in checkpoint)
    targets = [
        k for k in model
        if k not in filled and not _under_any(k, skip) and (has_tracked or not k.endswith(_TRACKED))
    ]
    rule = Positional().describe()
    paired = 0
    for (ck_key, ck_shape), model_key in zip(leftovers, targets):
        model_shape = tuple(model[model_key])
        # the leaf names (weight/bias/running_mean…) must agree too: BatchNorm's four tensors share a
        # shape, so shapes alone cannot catch a reordered checkpoint
        if ck_shape != model_shape or ck_key.rsplit(".", 1)[-1] != model_key.rsplit(".", 1)[-1]:
            if _under_any(model_key, heads):
                # the order reached the head and the class count differs: that is the old head
                mappings.append(KeyMapping(ck_key, model_key, Status.DROPPED_HEAD, (rule,), ck_shape, model_shape))
                paired += 1
                continue
            window = [
                f"  #{i}: checkpoint {c} {list(s)}  vs  model {t} {list(model[t])}"
                for i, ((c, s), t) in enumerate(zip(leftovers, targets))
                if paired - 2 <= i <= paired + 2
            ]
            raise IncompatibleCheckpointError(
                f"positional mapping diverges at position {paired}: checkpoint key {ck_key} {list(ck_shape)} "
                f"does not fit the model's next key {model_key} {list(model_shape)}. "
                f"{paired} tensors matched before it.\n" + "\n".join(window) +
                "\nThe checkpoint's order does not follow the model's; map the keys by name instead "
                "(a Rename rule), or check that this is the right checkpoint."
            )
        mappings.append(KeyMapping(ck_key, model_key, Status.LOADED, (rule,), ck_shape, model_shape))
        paired += 1
    return leftovers[paired:]

"""The load plan: which checkpoint key goes to which model key, by which rule, shapes checked.

The plan is computed from names and shapes alone (no tensor data), so it can be printed by
``zooadapt inspect`` before anything loads; ``load`` executes it and the load report is the
plan plus what happened. Nothing downstream re-derives what the plan decided.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from math import prod
from typing import Any, Literal, overload

from ..contract.errors import IncompatibleCheckpointError
from ..contract.escape import printable
from ..contract.rules import DEFAULT_RULES, Fuse, KeyRule, Positional, Reshape, StripPrefix
from ..weights.reparametrized import Fold
from .key_families import describe_families
from .pairing import Aligner, Leftover, Module
from .rule_words import plain_rule

__all__ = ["Status", "KeyMapping", "LoadPlan", "make_plan", "keys_naming_the_model", "CheckpointOrder"]

Shape = tuple[int, ...]
_TRACKED = "num_batches_tracked"

CheckpointOrder = Literal["auto", "file", "unordered"]
"""How far the checkpoint's key order can be trusted, for ``Positional``: ``"file"`` is the
order the model had (``torch.save``), ``"unordered"`` carries no order (safetensors stores
keys sorted by dtype and name), ``"auto"`` decides from the keys (names sorted -> unordered)."""


class Status(str, Enum):
    LOADED = "loaded"
    DROPPED_HEAD = "dropped_head"  # old classifier head, replaced by a new one
    SKIPPED = "skipped"  # the user asked to leave this part of the model alone
    IGNORED = "ignored"  # a family Drop rule: the key carries nothing for this model
    UNEXPECTED = "unexpected"  # no model key takes it
    MISMATCHED = "mismatched"  # the model key exists but has another shape
    DUPLICATE = "duplicate"  # a second checkpoint key for a model key another one already fills
    BEYOND_CUT = "beyond_cut"  # for a block a features_only model does not hold (after its last stage)


@dataclass(frozen=True, slots=True, init=False)
class KeyMapping:
    checkpoint_key: str
    model_key: str | None
    status: Status
    rules: tuple[str, ...] = ()
    checkpoint_shape: Shape = ()
    model_shape: Shape | None = None

    def __init__(self, checkpoint_key: str, model_key: str | None, status: Status, rules: tuple[str, ...] = (),
                 checkpoint_shape: Shape = (), model_shape: Shape | None = None) -> None:
        # a plan makes one per checkpoint key: slots (no dictionary per mapping: less memory and
        # less for the garbage collector to scan), each set directly (the instance stays frozen)
        _set(self, "checkpoint_key", checkpoint_key)
        _set(self, "model_key", model_key)
        _set(self, "status", status)
        _set(self, "rules", rules)
        _set(self, "checkpoint_shape", checkpoint_shape)
        _set(self, "model_shape", model_shape)

    @property
    def renamed(self) -> bool:
        return self.model_key is not None and self.model_key != self.checkpoint_key


_set = object.__setattr__


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
    extra_heads: tuple[str, ...] = ()
    """Further classifier modules planned as ``head`` is (a distilled model's ``head_dist``)."""
    backbone_coverage: float = 1.0
    """The same fraction outside the head: what ``partial=True`` and ``min_coverage`` judge."""
    skipped_share: float = 0.0
    """The share of the backbone's parameter elements ``skip=`` leaves alone."""
    converters: dict[str, KeyRule] = field(default_factory=dict)
    fused: dict[str, tuple[tuple[str, ...], int]] = field(default_factory=dict)
    """A fused checkpoint key (``Fuse`` rule) -> (the keys concatenated into it, the dimension)."""
    folded: dict[str, Fold] = field(default_factory=dict)
    """A plain key made from a pruned or weight-normalised tensor's parts -> how
    (``zooadapt.weights.reparametrized``): the plan was made on the folded shapes."""
    order: str = "file"
    """The checkpoint order the positional rule relied on: ``file`` or ``unordered``."""
    notes: list[str] = field(default_factory=list)
    """Remarks a reader of the plan should see (e.g. how a positional map was ordered)."""
    hints: list[str] = field(default_factory=list)
    """Likely causes when the checkpoint does not fit (filled in by the planner's diagnosis)."""
    weight_set: str | None = None
    """Which weights of a training checkpoint were used (``state_dict_ema``…), when it held several."""
    kept_head: int | None = None
    """The class count of the checkpoint's own trained head when it loads as it is (``num_classes=None``
    and a head of another count than the registry's), else None."""
    headless: bool = False
    """Planned into the model without its head because the published model has none and neither
    does the file (``ModelEntry.headless``, ``num_classes=None``): the model returns pooled features."""
    model_parts: tuple[str, ...] = ()
    """The model's top-level modules in order (the first is its stem, the last usually its head)."""
    foreign_parts: tuple[str, ...] = ()
    """Top-level modules the checkpoint's unused keys name (after renaming) that the model lacks:
    a file with parts this network does not have."""
    layout: str | None = None
    """The foreign layout (``Layout.name``) whose rules read the keys, or None when the family's own
    names did (the keys as they are, under a wrapper, or paired by order): which layout's build
    options the model must be built with (``layout_build``)."""
    tied: dict[str, str] = field(default_factory=dict)
    """Model key -> the loaded model key it shares its tensor with (a weight tied inside the model,
    such as CoaT's ``serial_blocks1.0.cpe`` and ``cpe1``): filled through that one, whether or not
    the file holds it too (safetensors and transformers save such a tensor once)."""

    @property
    def fits(self) -> bool:
        """True when nothing outside the head and the skipped parts is missing or mismatched,
        and no model key would be filled twice."""
        return not (self.missing or self.mismatched or self.duplicates)

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

    @property
    def skipped(self) -> list[KeyMapping]:
        return self.by_status(Status.SKIPPED)

    @property
    def duplicates(self) -> list[tuple[str, str, str]]:
        """(model key, the checkpoint key that fills it, another checkpoint key that would fill
        it too): a file holding two copies of a tensor, where loading "the last one" would be a guess."""
        seconds = self.by_status(Status.DUPLICATE)
        if not seconds:
            return []
        first = {m.model_key: m.checkpoint_key for m in self.mappings
                 if m.status is not Status.DUPLICATE and m.model_key is not None}
        return [(m.model_key, first.get(m.model_key, "?"), m.checkpoint_key)
                for m in seconds if m.model_key is not None]

    def left_out(self) -> dict[str, str]:
        """Every model key the checkpoint does not fill, with the reason: ``skipped`` (asked for),
        ``new_head``, ``missing``, ``mismatched`` (a checkpoint tensor of another shape) or
        ``defaulted`` (``num_batches_tracked`` set to zero)."""
        out = {m.model_key: "mismatched" for m in self.mismatched if m.model_key is not None}
        out.update({k: "skipped" for k in self.skipped_model_keys})
        out.update({k: "new_head" for k in self.new_head})
        out.update({k: "missing" for k in self.missing})
        out.update({k: "defaulted" for k in self.defaulted})
        return out

    def rule_counts(self) -> dict[str, int]:
        """How many loaded keys each rule touched (``"exact name"`` for keys that needed none)."""
        counts: dict[str, int] = {}
        for m in self.loaded:
            for rule in m.rules or ("exact name",):
                counts[rule] = counts.get(rule, 0) + 1
        return counts

    def outcome_groups(self) -> list[tuple[str, list[str]]]:
        """What does not simply load, in the one vocabulary the report, ``inspect`` and the docs use:
        model keys (new head, skipped, missing, mismatched, defaulted) and checkpoint keys (dropped
        old head, unused, ignored)."""
        return [
            ("dropped old head", [m.checkpoint_key for m in self.dropped]),
            ("new head", list(self.new_head)),
            ("skipped, left as built", list(self.skipped_model_keys)),
            ("missing", list(self.missing)),
            ("mismatched", [f"{m.checkpoint_key} {list(m.checkpoint_shape)} -> {m.model_key} "
                            f"{list(m.model_shape or ())}" for m in self.mismatched]),
            ("defaulted", list(self.defaulted)),
            ("unused, no place in the model", [m.checkpoint_key for m in self.unexpected]),
            ("second copy of a filled key", [f"{b} (also {a}) -> {slot}" for slot, a, b in self.duplicates]),
            ("unused, meant for skipped parts", [m.checkpoint_key for m in self.skipped]),
            ("unused, beyond the features_only cut", [m.checkpoint_key for m in self.by_status(Status.BEYOND_CUT)]),
            ("ignored by a drop rule", [m.checkpoint_key for m in self.by_status(Status.IGNORED)]),
        ]

    def summary(self) -> str:
        """A few lines for a terminal: coverage, rules used, and what does not load."""
        lines = [f"plan: {len(self.loaded)} tensors load, covering {self.coverage:.2%} of the model's parameters"]
        lines += [f"  {n:5d} by {printable(plain_rule(rule))}" for rule, n in self.rule_counts().items()]
        groups = self.outcome_groups()
        for label, items in groups:
            if items:
                shown = ", ".join(items[:5]) + (f", ... (+{len(items) - 5})" if len(items) > 5 else "")
                lines.append(f"  {label} {len(items)}: {shown}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def assignments(self) -> dict[str, str]:
        """checkpoint key -> model key for everything that loads."""
        return {m.checkpoint_key: m.model_key for m in self.loaded if m.model_key is not None}

    def problems(self, limit: int = 8) -> list[str]:
        """The first lines that make this plan unsafe to execute without ``partial=True``."""
        lines = [
            f"shape mismatch: checkpoint {printable(m.checkpoint_key)} {list(m.checkpoint_shape)} -> "
            f"model {printable(m.model_key)} {list(m.model_shape or ())}"
            for m in self.mismatched
        ]
        lines += [f"missing from checkpoint: {printable(k)}" for k in self.missing]
        return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])

    def check(self, *, partial: bool, what: str = "model", min_coverage: float = 0.5, inspecting: bool = False) -> None:
        """Refuse a silent partial load.

        Without ``partial`` any missing or mismatched backbone tensor raises; with it, a plan
        that fills less than ``min_coverage`` of the backbone's parameters still raises, since
        such a "pretrained" model would be mostly random. A model key two checkpoint keys would
        fill is always refused. The message carries the planner's diagnosis (``hints``) and
        suggests ``skip=``/``partial=True`` only where they are safe (``_skippable``).
        ``inspecting``: the message is for ``zooadapt inspect``, which need not suggest itself.
        """
        if self.duplicates:
            self._refuse_duplicates(what, inspecting)
        if self.fits or (partial and self.backbone_coverage >= min_coverage):
            return
        unexpected = len(self.unexpected)
        lines = [
            f"the checkpoint does not fit {what}: {len(self.missing)} missing and {len(self.mismatched)} "
            f"shape-mismatched tensors" + (" outside the head" if self.head else "")
            + f"; it fills {self.backbone_coverage:.1%} of the "
            + ("backbone's" if self.head else "model's") + " parameters"
            + (f", and {unexpected} of its tensors have no place in the model" if unexpected else "") + ".",
        ]
        layout = self._layout_seen(min_coverage)
        lines += layout
        lines += ["  " + line for line in self.problems()]
        if partial:
            lines.append(f"partial=True refuses a load that fills less than min_coverage={min_coverage:g} of the "
                         "backbone: the result would be mostly random weights.")
        parts = self._parts(tuple)
        empty = [p for p in parts if not self._loads_under(p)]
        causes = list(self.hints)
        lookalikes = self._lookalikes()
        if lookalikes:
            shown = ", ".join(f"{ck!r} for {mk!r}" for ck, mk in lookalikes[:3])
            causes.insert(0, f"{len(lookalikes)} of the file's keys are the model's but for characters that do not "
                             f"show or only look alike ({shown}): the file's keys were written with them. Rewrite "
                             "the keys, or map them with rules=[\"rename:REGEX=>NAME\"]")
        if not self.head and parts and set(parts) == {self.model_parts[-1]} and not self.missing:
            causes.append(f"the mismatched tensors are {parts[0]}, the model's last layer, and zooadapt does not know "
                          f"this model's head: if {parts[0]} is your new classifier, pass head={parts[0]!r}")
        elif empty and not causes:
            causes.append(f"the checkpoint holds nothing that fits {' or '.join(empty)} of this model (the names "
                          "match elsewhere): it was saved from a truncated or changed network")
        lines += [f"Likely cause: {cause}" for cause in causes]
        fixes = [] if inspecting else ["zooadapt inspect CHECKPOINT --model NAME shows every key's fate"]
        if self._skippable(parts):
            reason = "to load what the file holds" if not self.mismatched else \
                f"if you changed {' and '.join(parts)} on purpose"
            fixes.append(f"{reason}, pass skip={parts!r}"
                         + ("" if self.backbone_coverage >= min_coverage else
                            f" (that leaves {1 - self.backbone_coverage:.0%} of the backbone untrained)"))
            if not partial and self.backbone_coverage >= min_coverage:
                fixes.append("partial=True loads what fits and initialises the rest")
        elif layout:
            fixes.append("rename the file's families to the model's with rules=[\"rename:REGEX=>REPLACEMENT\"] (one "
                         "rule per family, \\1 for a number the REGEX captures), or, for a framework whose files you "
                         "load often, register a layout plugin (docs/adapting.md, 'Writing a layout plugin'); or check "
                         "that this checkpoint belongs to this architecture")
        else:
            fixes.append("map the names with rules=[...] (zooadapt.rules) or check that this checkpoint belongs to "
                         "this architecture")
        lines.append("To fix: " + "; ".join(fixes) + ".")
        raise IncompatibleCheckpointError("\n".join(lines))

    def _lookalikes(self) -> list[tuple[str, str]]:
        """(unused file key, missing model key) pairs that differ only in characters a terminal does
        not show (spaces, no-break and zero-width spaces, a byte-order mark) or in look-alikes
        Unicode folds together (NFKC: a full-width dot)."""
        wanted = {_visible(k): k for k in (*self.missing, *(m.model_key for m in self.mismatched if m.model_key))}
        if not wanted:
            return []
        return [(m.checkpoint_key, wanted[seen]) for m in self.unexpected
                if (seen := _visible(m.checkpoint_key)) in wanted and m.checkpoint_key != wanted[seen]]

    def _layout_seen(self, min_coverage: float) -> list[str]:
        """When the file fills too little of the model to load: its unused keys and the model's
        unfilled ones as key families (``key_families``), so the error shows the layout zooadapt
        saw, not only a share. Empty when most of the model fills (the problems list says enough)."""
        unused = [m.checkpoint_key for m in self.unexpected]
        unfilled = [*self.missing, *(m.model_key for m in self.mismatched if m.model_key)]
        if self.backbone_coverage >= min_coverage or not unused or not unfilled:
            return []
        return [f"The file's {len(unused)} unused tensors form {describe_families(unused)}.",
                f"The model's {len(unfilled)} unfilled tensors form {describe_families(unfilled)}.",
                "No rule maps these families onto the model's by name, and no pairing by module order and tensor "
                "shapes was found."]

    def _loads_under(self, part: str) -> bool:
        """True when a tensor of ``part`` loads (a BatchNorm's step counter says nothing)."""
        return any((m.model_key == part or (m.model_key or "").startswith(part + "."))
                   and not m.model_key.endswith(_TRACKED) for m in self.loaded if m.model_key)

    def _skippable(self, parts: tuple[str, ...]) -> bool:
        """``skip=parts`` is worth suggesting only for one or two named parts that load nothing
        anyway, that are not the stem (a network with another stem is another network), when
        the file holds no parts the model lacks (``foreign_parts``: another network too) and the
        planner found no better explanation."""
        if not parts or len(parts) > 2 or self.hints or self.foreign_parts:
            return False
        if self.model_parts and self.model_parts[0] in parts:
            return False
        return not any(self._loads_under(p) for p in parts)

    def beyond_cut(self, beyond: Sequence[str], shapes: Mapping[str, Shape]) -> None:
        """For a ``features_only`` model planned against the full network (``shapes``): the
        blocks after its last stage (``beyond``) are not in the model, so they are neither
        model keys left as built nor part of what ``skip=`` leaves untrained; checkpoint keys
        meant for them are reported as such."""
        cut = frozenset(beyond)
        self.mappings = [replace(m, status=Status.BEYOND_CUT)
                         if m.status is Status.SKIPPED and m.model_key is not None and _under_any(m.model_key, cut)
                         else m for m in self.mappings]
        self.skipped_model_keys = [k for k in self.skipped_model_keys if not _under_any(k, cut)]
        skipped = sum(prod(shapes[k]) for k in self.skipped_model_keys if k in shapes)
        kept = sum(prod(shapes[k]) for k in shapes if not _under_any(k, cut))
        self.skipped_share = skipped / kept if kept else 0.0

    def _refuse_duplicates(self, what: str, inspecting: bool = False) -> None:
        from ..contract.errors import AmbiguousCheckpointError

        pairs = self.duplicates
        shown = [f"  {slot}: from {a!r} and from {b!r}" for slot, a, b in pairs[:6]]
        if len(pairs) > 6:
            shown.append(f"  ... and {len(pairs) - 6} more")
        second = sorted({b.split(".")[0] + "." for _, _, b in pairs if "." in b})
        example = f'rules=["drop:{second[0].replace(".", "[.]")}.*"]' if second else 'rules=["drop:REGEX"]'
        raise AmbiguousCheckpointError(
            f"the checkpoint fills {len(pairs)} tensors of {what} twice, from two different keys each:\n"
            + "\n".join(shown)
            + f"\nzooadapt will not guess which copy you mean (loading the later one would let the file's key order "
            f"decide).\nTo fix: drop the copy you do not want, e.g. {example}, or name the one you want with "
            'rules=["strip:PREFIX"]' + ("" if inspecting else "; zooadapt inspect CHECKPOINT --model NAME shows both")
            + ".")

    def _parts(self, as_type: type | None = None) -> Any:
        """The top-level modules holding the missing and mismatched tensors."""
        keys = [*self.missing, *(m.model_key for m in self.mismatched if m.model_key)]
        parts = list(dict.fromkeys(k.split(".")[0] for k in keys))
        return tuple(parts) if as_type is tuple else " and ".join(parts)

    def to_dict(self, mappings: bool = False) -> dict[str, Any]:
        """Counts and key lists; ``mappings=True`` adds every checkpoint key's row (for ``inspect``)."""
        out: dict[str, Any] = {
            "coverage": self.coverage,
            "backbone_coverage": self.backbone_coverage,
            "weight_set": self.weight_set,
            "kept_head": self.kept_head,
            "headless": self.headless,
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
            "duplicates": [{"model": slot, "checkpoint": [a, b]} for slot, a, b in self.duplicates],
            "skipped_checkpoint": [m.checkpoint_key for m in self.skipped],
            "rules": self.rule_counts(),
            "order": self.order,
            "notes": list(self.notes),
            "hints": list(self.hints),
        }
        if mappings:
            out["mappings"] = [
                {"checkpoint": m.checkpoint_key, "model": m.model_key, "status": m.status.value,
                 "rules": list(m.rules), "checkpoint_shape": list(m.checkpoint_shape),
                 "model_shape": None if m.model_shape is None else list(m.model_shape)}
                for m in self.mappings
            ]
        return out



def _under_any(key: str, prefixes: frozenset[str]) -> bool:
    """True when ``key`` is one of ``prefixes`` or lies under one (``a.b`` is under ``a``): each
    dotted prefix of the key is looked up (a found sub-module can leave hundreds of modules to skip)."""
    if not prefixes:
        return False
    if key in prefixes:
        return True
    depth = _depths.get(prefixes)
    if depth is None:
        if len(_depths) > 64:
            _depths.clear()
        depth = _depths[prefixes] = max(p.count(".") for p in prefixes) + 1
    dot = key.find(".")
    while dot >= 0 and depth:  # no deeper than the deepest prefix: linear in the key's length
        if key[:dot] in prefixes:
            return True
        dot = key.find(".", dot + 1)
        depth -= 1
    return False


_depths: dict[frozenset[str], int] = {}
"""How many dots the longest of a set of prefixes spans (a frozenset keeps its hash)."""


def _keys_under(keys: Iterable[str], prefixes: frozenset[str]) -> frozenset[str]:
    """The keys that are one of ``prefixes`` or lie under one (``str.startswith`` with a tuple
    runs in C: a thousand keys against many prefixes cost microseconds)."""
    if not prefixes:
        return frozenset()
    dotted = tuple(p + "." for p in prefixes)
    return frozenset(k for k in keys if k in prefixes or k.startswith(dotted))


def _rename(key: str, rules: Sequence[tuple[KeyRule, tuple[str, ...]]], model_keys: Mapping[str, Shape]
            ) -> tuple[str, tuple[str, ...]]:
    """Apply renaming rules (each with its description, as a 1-tuple) in order until the key names
    a model key; return it and the rules used (most keys use one rule: its tuple is handed out)."""
    if key in model_keys:
        return key, ()
    used: tuple[str, ...] = ()
    for rule, described in rules:
        new = rule.rename(key)
        if new is not None and new != key:
            key = new
            used = used + described if used else described
            if key in model_keys:
                break
    return key, used


def _binding_keys(keys: list[str], strips: Sequence[StripPrefix]) -> list[str]:
    """The keys a rule is bound to (``KeyRule.bind``: ``Renumber`` numbers what it finds there):
    the checkpoint's, and each as a wrapper strip among the rules leaves it, since the rules run
    one after another on a key (a layout's ``encoder.layers.N`` under ``module.`` is numbered from
    the keys without it)."""
    stripped = [new for k in keys for s in strips if (new := s.rename(k)) is not None and new != k]
    return [*keys, *stripped] if stripped else keys


def keys_naming_the_model(checkpoint: Iterable[str], model: Mapping[str, Shape], rules: Sequence[KeyRule]
                          ) -> list[str] | None:
    """The checkpoint keys whose names, after ``rules`` (bound and applied as ``make_plan`` applies
    them, its default rules not added), name a model key: every key a plan with these rules can
    load or fill twice, and perhaps more (one of another shape, one in the head). Names only, so
    a tenth of a plan's cost: the planner bounds what a reading can load with it.

    None when a rule reads more than one key's name (``Positional`` pairs leftovers by order,
    ``Fuse`` joins several keys into one): only the plan itself tells then."""
    if any(isinstance(r, (Positional, Fuse)) for r in rules):
        return None
    keys = list(checkpoint)
    binding = _binding_keys(keys, [r for r in rules if isinstance(r, StripPrefix)])
    bound = [(r.bind(binding, model), ("",)) for r in rules]
    return [k for k in keys if _rename(k, bound, model)[0] in model]


def _names_look_sorted(keys: Sequence[str]) -> bool:
    """True when the keys are in name order (up to a few dtype runs), as safetensors stores them.

    A state dict in module order steps backwards in name order at almost every module
    (``conv1.weight`` → ``bn1.weight``, ``weight`` → ``bias``); a sorted file only where its
    dtype changes.
    """
    descents = sum(1 for a, b in zip(keys, keys[1:]) if b < a)
    return len(keys) > 4 and descents <= 2


@overload
def make_plan(checkpoint: Mapping[str, Shape], model: Mapping[str, Shape], *, parameters: Iterable[str] | None = ...,
              rules: Sequence[KeyRule] = ..., head: str = ..., skip: Sequence[str] = ..., default_rules: bool = ...,
              checkpoint_order: CheckpointOrder = ..., structural: bool = ..., only_if_it_fits: Literal[False] = ...,
              chosen: Sequence[KeyRule] = ..., tied: Sequence[Sequence[str]] = ...,
              extra_heads: Sequence[str] = ...) -> LoadPlan: ...


@overload
def make_plan(checkpoint: Mapping[str, Shape], model: Mapping[str, Shape], *, parameters: Iterable[str] | None = ...,
              rules: Sequence[KeyRule] = ..., head: str = ..., skip: Sequence[str] = ..., default_rules: bool = ...,
              checkpoint_order: CheckpointOrder = ..., structural: bool = ..., only_if_it_fits: bool,
              chosen: Sequence[KeyRule] = ..., tied: Sequence[Sequence[str]] = ...,
              extra_heads: Sequence[str] = ...) -> LoadPlan | None: ...


def make_plan(
    checkpoint: Mapping[str, Shape],
    model: Mapping[str, Shape],
    *,
    parameters: Iterable[str] | None = None,
    rules: Sequence[KeyRule] = (),
    head: str = "",
    skip: Sequence[str] = (),
    default_rules: bool = True,
    checkpoint_order: CheckpointOrder = "auto",
    structural: bool = False,
    only_if_it_fits: bool = False,
    chosen: Sequence[KeyRule] = (),
    tied: Sequence[Sequence[str]] = (),
    extra_heads: Sequence[str] = (),
) -> LoadPlan | None:
    """Plan how the ``checkpoint`` (key -> shape, in file order) fills the ``model`` (state-dict
    key -> shape, in module order).

    ``parameters`` names the model keys that are parameters (for coverage; default: all).
    ``head`` is the head's module prefix: head tensors whose shape differs are dropped, not
    errors. ``skip`` lists module prefixes the user wants left alone; checkpoint keys that
    would land there are reported as skipped, whether or not the model has them.
    ``checkpoint_order`` says whether the checkpoint's key order is the model's (only the
    ``Positional`` rule uses it; see ``CheckpointOrder``).

    ``structural=True`` ignores names altogether: every checkpoint module is paired with the
    model's modules by order and tensor signature (the ``Positional`` walk over the whole file),
    for a re-implementation that names the same tensors differently.

    ``only_if_it_fits=True`` returns None as soon as the keys left cannot fill the model (a
    checkpoint under a wrapper prefix is known not to fit after a few dozen keys): the planner
    then looks for the wrapper without paying for a whole plan that was bound to fail.

    Two checkpoint keys that would fill one model key are a second copy: the later is
    ``DUPLICATE`` and the plan does not fit, unless exactly one of them was renamed by a rule in
    ``chosen`` (the user's rules, or a wrapper prefix the planner is trying as the network's
    place); then that one fills the key and the other is unused, since it belongs to the copy
    the choice leaves out.

    ``extra_heads`` are further classifier modules that go with ``head`` (a distilled model's
    second head): treated as the head is.

    ``tied`` groups model keys that name one tensor (a weight shared inside the model): the group
    is filled when any of its keys loads, the others are ``LoadPlan.tied`` to it.

    Raises ``IncompatibleCheckpointError`` when a positional map diverges or is ambiguous.
    """
    if checkpoint_order not in ("auto", "file", "unordered"):
        raise ValueError(f"checkpoint_order={checkpoint_order!r}: use 'auto', 'file' or 'unordered'")
    strips = [r for r in (*rules, *(DEFAULT_RULES if default_rules else ())) if isinstance(r, StripPrefix)]
    checkpoint, fused = _fuse(checkpoint, [r for r in rules if isinstance(r, Fuse)], strips)
    skip_prefixes = frozenset(skip)
    ck_keys = list(checkpoint)
    binding = _binding_keys(ck_keys, strips)
    all_rules: list[KeyRule] = [r.bind(binding, model) for r in (*(DEFAULT_RULES if default_rules else ()), *rules)
                                if not isinstance(r, Fuse)]
    name_rules = [(r, (r.describe(),)) for r in all_rules if not isinstance(r, Positional)]  # described once per plan
    positional = structural or any(isinstance(r, Positional) for r in all_rules)
    heads = frozenset(h for h in (head, *extra_heads) if h) if head else frozenset()
    # which model keys lie in the head or a skipped part, worked out once (planning walks them often)
    head_keys, skip_keys = _keys_under(model, heads), _keys_under(model, skip_prefixes)

    mappings: list[KeyMapping] = []
    converters: dict[str, KeyRule] = {}
    filled: set[str] = set()
    chosen_names = frozenset(r.describe() for r in chosen)
    has_chosen = bool(chosen_names)
    claims: dict[str, tuple[int, bool]] = {}
    """model key -> (index of the mapping that fills it, whether a chosen rule renamed that key)"""
    leftovers: list[Leftover] = []
    in_head: list[int] = []
    """Indices of the mappings whose key names a place in the head (what ``_renew_changed_head_modules`` reads)."""

    droppers = [r for r in all_rules if type(r).drops is not KeyRule.drops]  # most rules never drop
    casters = [r for r in all_rules if getattr(r, "casts_integers", False)]
    give_up = only_if_it_fits and not positional
    needed = sum(1 for k in model if k not in head_keys and k not in skip_keys and not k.endswith(_TRACKED)) \
        - sum(len(g) - 1 for g in tied) if give_up else 0  # a tied group is filled by one key
    for position, (ck_key, ck_shape) in enumerate(checkpoint.items()):
        if give_up and len(filled) + len(checkpoint) - position < needed:
            return None
        ck_shape = tuple(ck_shape)
        if droppers and any(r.drops(ck_key) for r in droppers):
            mappings.append(KeyMapping(ck_key, None, Status.IGNORED, (), ck_shape))
            continue
        key, used = (ck_key, ()) if structural or ck_key in model else _rename(ck_key, name_rules, model)
        if structural or key not in model:
            if droppers and key != ck_key and any(r.drops(key) for r in droppers):
                # a layout's drop under a wrapper: its patterns name the keys as the strip leaves them
                mappings.append(KeyMapping(ck_key, None, Status.IGNORED, used, ck_shape))
            elif not structural and _under_any(key, heads):  # the model's head has another form (or none)
                in_head.append(len(mappings))
                mappings.append(KeyMapping(ck_key, key, Status.DROPPED_HEAD, used, ck_shape))
            elif _under_any(key, skip_prefixes):
                mappings.append(KeyMapping(ck_key, key, Status.SKIPPED, used, ck_shape))
            else:
                leftovers.append(Leftover(ck_key, key, used, ck_shape))
            continue
        by_choice = has_chosen and not chosen_names.isdisjoint(used)
        if key in filled:  # another checkpoint key already fills it: a second copy
            index, first_by_choice = claims[key]
            if by_choice and not first_by_choice:  # the chosen copy takes the key; the earlier one is left unused
                old = mappings[index]
                converters.pop(old.checkpoint_key, None)
                mappings[index] = KeyMapping(old.checkpoint_key, None, Status.UNEXPECTED, old.rules,
                                             old.checkpoint_shape)
            else:
                # loading the later one would let key order decide: refused at check() (when it would load too)
                status = Status.DUPLICATE if ck_shape == tuple(model[key]) and by_choice == first_by_choice \
                    else Status.UNEXPECTED
                mappings.append(KeyMapping(ck_key, key if status is Status.DUPLICATE else None, status, used,
                                           ck_shape, tuple(model[key]) if status is Status.DUPLICATE else None))
                continue
        claims[key] = (len(mappings), by_choice)
        if key in head_keys:
            in_head.append(len(mappings))
        model_shape = model[key]
        if ck_shape == model_shape and type(model_shape) is tuple and not casters and key not in skip_keys:
            mappings.append(KeyMapping(ck_key, key, Status.LOADED, used, ck_shape, model_shape))  # _match's usual case
        else:
            mappings.append(_match(ck_key, key, used, ck_shape, model_shape, key in head_keys, key in skip_keys,
                                   all_rules, converters, casters))
        filled.add(key)

    order = "file"
    notes: list[str] = []
    if positional and leftovers:
        unordered = checkpoint_order == "unordered" or (checkpoint_order == "auto" and _names_look_sorted(ck_keys))
        order = "unordered" if unordered else "file"
        targets = [(k, tuple(model[k])) for k in model if k not in filled and not _under_any(k, skip_prefixes)]
        aligner = Aligner(leftovers, targets, lambda path: _under_any(path, heads), unordered, lenient=structural)
        mappings += _positional_mappings(aligner.run(), leftovers)
        leftovers = aligner.remaining()
        notes += aligner.notes
    mappings += [KeyMapping(x.key, None, Status.UNEXPECTED, x.rules, x.shape) for x in leftovers]
    model_parts = tuple(dict.fromkeys(k.split(".", 1)[0] for k in model))
    foreign_parts = _foreign_parts(leftovers, [m.checkpoint_key for m in mappings if m.status is Status.LOADED],
                                   model_parts)
    mappings = _renew_changed_head_modules(mappings, head_keys, None if positional else in_head)

    loaded = {m.model_key for m in mappings if m.status is Status.LOADED and m.model_key is not None}
    mismatched = {m.model_key for m in mappings if m.status is Status.MISMATCHED}
    has_tracked = any(k.endswith(_TRACKED) for k in checkpoint)
    tied_to = _tied_to(tied, loaded)
    missing, new_head, defaulted, skipped = [], [], [], []
    for key in model:
        if key in loaded or key in mismatched or key in tied_to:  # a mismatch is reported once, as a mismatch
            continue
        if key in head_keys:
            new_head.append(key)
        elif key in skip_keys:
            skipped.append(key)
        elif key.endswith(_TRACKED) and not has_tracked:
            defaulted.append(key)
        else:
            missing.append(key)

    param_keys = set(parameters) if parameters is not None else set(model)
    total = sum(prod(model[k]) for k in model if k in param_keys)
    covered = sum(prod(model[k]) for k in param_keys if k in loaded or k in tied_to)
    body = [k for k in model if k in param_keys and k not in head_keys and k not in skip_keys]
    body_total = sum(prod(model[k]) for k in body)
    body_covered = sum(prod(model[k]) for k in body if k in loaded or k in tied_to)
    skipped_total = sum(prod(model[k]) for k in skip_keys if k in param_keys and k not in head_keys)
    return LoadPlan(
        mappings=mappings,
        missing=missing,
        new_head=new_head,
        defaulted=defaulted,
        skipped_model_keys=skipped,
        coverage=covered / total if total else 1.0,
        head=head,
        extra_heads=tuple(h for h in extra_heads if h) if head else (),
        backbone_coverage=body_covered / body_total if body_total else 1.0,
        skipped_share=skipped_total / (body_total + skipped_total) if body_total + skipped_total else 0.0,
        converters=converters,
        fused=fused,
        order=order,
        notes=notes,
        model_parts=model_parts,
        foreign_parts=foreign_parts,
        tied=tied_to,
    )


def _tied_to(groups: Sequence[Sequence[str]], loaded: Collection[str]) -> dict[str, str]:
    """Each key of a tied group that has a loaded key -> the group's first loaded key."""
    out: dict[str, str] = {}
    for group in groups:
        source = next((k for k in group if k in loaded), None)
        if source is not None:
            out.update((k, source) for k in group if k != source)
    return out


def _foreign_parts(leftovers: Sequence[Leftover], loaded: Sequence[str], model_parts: Sequence[str]
                   ) -> tuple[str, ...]:
    """Top-level parts, unknown to the model, that unused checkpoint keys name inside the part
    of the file the network loads from (the loaded keys' common prefix): extra modules in the
    network itself. A detector's extra layers beside its ``backbone.features.`` are not counted."""
    import os.path

    common = os.path.commonprefix(list(loaded)) if loaded else ""
    scope = common[: common.rfind(".") + 1]
    known = frozenset(model_parts)
    return tuple(dict.fromkeys(top for x in leftovers if x.key.startswith(scope)
                               and (top := x.name.split(".", 1)[0]) not in known))


_INVISIBLE = re.compile("[\\s\u00a0\u200b-\u200d\u2060\ufeff]")


def _visible(key: str) -> str:
    """``key`` as it reads on a screen: compatibility forms folded, invisible characters dropped."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", key))


def _fuse(checkpoint: Mapping[str, Shape], fusers: Sequence[Fuse], strips: Sequence[StripPrefix] = ()
          ) -> tuple[Mapping[str, Shape], dict[str, tuple[tuple[str, ...], int]]]:
    """The checkpoint with each complete group of ``Fuse`` parts replaced by one key (placed
    where its first part was), and the parts of every fused key.

    A layout's parts saved under a wrapper (``module.deit.encoder…query.weight``) are found
    through the plan's ``strips``, as the other rules find the rest of the file's keys. Each
    group's parts come from one place, never mixed: where two places complete the same group
    (a copy under ``module.`` beside a plain one), the prefix the planner is trying as the
    network's place (``StripPrefix(found=True)``) is taken first, then the keys as they are,
    then the other strips; the other place's parts stay as they are (unused, and reported)."""
    if not fusers:
        return checkpoint, {}
    # where a part was found: 0 under a found prefix, 1 as it is, 2 under another strip
    sources = [(0, s) for s in strips if s.found] + [(1, None)] + [(2, s) for s in strips if not s.found]
    groups: dict[tuple[str, int, str], dict[str, str]] = {}
    owner: dict[str, Fuse] = {}
    for key in checkpoint:
        for rule in fusers:
            hit = None
            for rank, strip in sources:
                inner = key if strip is None else strip.rename(key)
                hit = rule.fused_name(inner) if inner is not None else None
                if hit is not None:
                    groups.setdefault((hit[0], rank, strip.prefix if strip else ""), {})[hit[1]] = key
                    owner[hit[0]] = rule
                    break
            if hit is not None:
                break
    fused: dict[str, tuple[tuple[str, ...], int]] = {}
    for (name, _, _), found in sorted(groups.items(), key=lambda item: item[0][1]):
        rule = owner[name]
        if name not in fused and set(found) == set(rule.parts) and name not in checkpoint:
            parts = tuple(found[p] for p in rule.parts)
            if rule.fuse_shape([tuple(checkpoint[k]) for k in parts]) is not None:
                fused[name] = (parts, rule.dim)
    if not fused:
        return checkpoint, {}
    first = {parts[0]: name for name, (parts, _) in fused.items()}
    absorbed = {k for parts, _ in fused.values() for k in parts}
    out: dict[str, Shape] = {}
    for key, shape in checkpoint.items():
        if key in first:
            name = first[key]
            parts, _ = fused[name]
            out[name] = owner[name].fuse_shape([tuple(checkpoint[k]) for k in parts]) or ()
        elif key not in absorbed:
            out[key] = shape
    return out, fused


def _renew_changed_head_modules(mappings: list[KeyMapping], head_keys: frozenset[str],
                                in_head: Sequence[int] | None) -> list[KeyMapping]:
    """A head module with one tensor of another shape is new as a whole: keeping the old
    ``fc.bias`` beside a fresh ``fc.weight`` would give a head that is half someone else's.
    Only head tensors are renewed (a bare head tensor's module is the root: the root's other
    tensors are not the head's). So only the mappings ``in_head`` names (indices of those whose
    key is a place in the head; None: every mapping) are read."""
    indices: Sequence[int] = range(len(mappings)) if in_head is None else in_head
    changed = {m.model_key.rpartition(".")[0] for i in indices
               if (m := mappings[i]).status is Status.DROPPED_HEAD and m.model_key}
    if not changed:
        return mappings
    renewed = list(mappings)
    for i in indices:
        m = renewed[i]
        if m.status is Status.LOADED and m.model_key in head_keys and m.model_key.rpartition(".")[0] in changed:
            renewed[i] = replace(m, status=Status.DROPPED_HEAD)
    return renewed


def _match(
    ck_key: str,
    key: str,
    used: tuple[str, ...],
    ck_shape: Shape,
    model_shape: Shape,
    in_head: bool,
    in_skip: bool,
    rules: Sequence[KeyRule],
    converters: dict[str, KeyRule],
    casters: Sequence[KeyRule] = (),
) -> KeyMapping:
    model_shape = tuple(model_shape)
    if in_skip:
        return KeyMapping(ck_key, key, Status.SKIPPED, used, ck_shape, model_shape)
    if ck_shape == model_shape:
        for rule in casters:  # the user said this key's integers are its values (``cast:``)
            if rule.converts(key, ck_shape, model_shape):
                converters[ck_key] = rule
                return KeyMapping(ck_key, key, Status.LOADED, (*used, rule.describe()), ck_shape, model_shape)
        return KeyMapping(ck_key, key, Status.LOADED, used, ck_shape, model_shape)
    for rule in rules:  # a head tensor too: a rule that says its values fit (a Linear head as a 1x1 conv) loads it
        if rule.converts(key, ck_shape, model_shape):
            converters[ck_key] = rule
            return KeyMapping(ck_key, key, Status.LOADED, (*used, rule.describe()), ck_shape, model_shape)
    if in_head:
        if _squeezed(ck_shape) == _squeezed(model_shape):
            # the same classifier in another layer: a Linear [C, F] for a 1x1 conv [C, F, 1, 1]
            # (timm's ResNetV2), every value where it was: kept, not replaced by a random one
            rule = Reshape(re.escape(key))
            converters[ck_key] = rule
            return KeyMapping(ck_key, key, Status.LOADED, (*used, rule.describe()), ck_shape, model_shape)
        return KeyMapping(ck_key, key, Status.DROPPED_HEAD, used, ck_shape, model_shape)
    return KeyMapping(ck_key, key, Status.MISMATCHED, used, ck_shape, model_shape)


def _squeezed(shape: Shape) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _positional_mappings(pairs: Sequence[tuple[Module, Module, bool]], leftovers: Sequence[Leftover]
                         ) -> list[KeyMapping]:
    """The mappings of module pairs found by order and signature: each checkpoint tensor to the
    same leaf of its paired model module (a ``num_batches_tracked`` the model lacks stays unexpected)."""
    rule = Positional().describe()
    rules = {x.key: x.rules for x in leftovers}
    out = []
    for cm, mm, loads in pairs:
        status = Status.LOADED if loads else Status.DROPPED_HEAD
        for leaf, (ck_key, ck_shape) in cm.leaves.items():
            if leaf in mm.leaves:
                model_key, model_shape = mm.leaves[leaf]
                out.append(KeyMapping(ck_key, model_key, status, (*rules[ck_key], rule), ck_shape, model_shape))
    return out

"""The load plan: which checkpoint key goes to which model key, by which rule, shapes checked.

The plan is computed from names and shapes alone (no tensor data), so it can be printed by
``zooadapt inspect`` before anything loads; ``load`` executes it and the load report is the
plan plus what happened. Nothing downstream re-derives what the plan decided.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from math import prod
from typing import Any, Literal

from ..contract.errors import IncompatibleCheckpointError
from ..contract.escape import printable
from ..contract.rules import DEFAULT_RULES, Fuse, KeyRule, Positional
from .rule_words import plain_rule

__all__ = ["Status", "KeyMapping", "LoadPlan", "make_plan", "CheckpointOrder"]

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
    backbone_coverage: float = 1.0
    """The same fraction outside the head: what ``partial=True`` and ``min_coverage`` judge."""
    skipped_share: float = 0.0
    """The share of the backbone's parameter elements ``skip=`` leaves alone."""
    converters: dict[str, KeyRule] = field(default_factory=dict)
    fused: dict[str, tuple[tuple[str, ...], int]] = field(default_factory=dict)
    """A fused checkpoint key (``Fuse`` rule) -> (the keys concatenated into it, the dimension)."""
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
    model_parts: tuple[str, ...] = ()
    """The model's top-level modules in order (the first is its stem, the last usually its head)."""
    foreign_parts: tuple[str, ...] = ()
    """Top-level modules the checkpoint's unused keys name (after renaming) that the model lacks:
    a file with parts this network does not have."""
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
            *("  " + line for line in self.problems()),
        ]
        if partial:
            lines.append(f"partial=True refuses a load that fills less than min_coverage={min_coverage:g} of the "
                         "backbone: the result would be mostly random weights.")
        parts = self._parts(tuple)
        empty = [p for p in parts if not self._loads_under(p)]
        causes = list(self.hints)
        if not self.head and parts and set(parts) == {self.model_parts[-1]} and not self.missing:
            causes.append(f"the mismatched tensors are {parts[0]}, the model's last layer, and zooadapt does not know "
                          f"this model's head: if {parts[0]} is your new classifier, pass head={parts[0]!r}")
        elif empty and not self.hints:
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
        else:
            fixes.append("map the names with rules=[...] (zooadapt.rules) or check that this checkpoint belongs to "
                         "this architecture")
        lines.append("To fix: " + "; ".join(fixes) + ".")
        raise IncompatibleCheckpointError("\n".join(lines))

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
        out = {
            "coverage": self.coverage,
            "backbone_coverage": self.backbone_coverage,
            "weight_set": self.weight_set,
            "kept_head": self.kept_head,
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


def _rename(key: str, rules: Sequence[tuple[KeyRule, str]], model_keys: Mapping[str, Shape]
            ) -> tuple[str, tuple[str, ...]]:
    """Apply renaming rules (each with its description) in order until the key names a model key;
    return it and the rules used."""
    if key in model_keys:
        return key, ()
    used: list[str] = []
    for rule, described in rules:
        new = rule.rename(key)
        if new is not None and new != key:
            key = new
            used.append(described)
            if key in model_keys:
                break
    return key, tuple(used)


def _names_look_sorted(keys: Sequence[str]) -> bool:
    """True when the keys are in name order (up to a few dtype runs), as safetensors stores them.

    A state dict in module order steps backwards in name order at almost every module
    (``conv1.weight`` → ``bn1.weight``, ``weight`` → ``bias``); a sorted file only where its
    dtype changes.
    """
    descents = sum(1 for a, b in zip(keys, keys[1:]) if b < a)
    return len(keys) > 4 and descents <= 2


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
    checkpoint, fused = _fuse(checkpoint, [r for r in rules if isinstance(r, Fuse)])
    skip = frozenset(skip)
    ck_keys = list(checkpoint)
    all_rules: list[KeyRule] = [r.bind(ck_keys, model) for r in (*(DEFAULT_RULES if default_rules else ()), *rules)
                                if not isinstance(r, Fuse)]
    name_rules = [(r, r.describe()) for r in all_rules if not isinstance(r, Positional)]  # described once per plan
    positional = structural or any(isinstance(r, Positional) for r in all_rules)
    heads = frozenset(h for h in (head, *extra_heads) if h) if head else frozenset()
    # which model keys lie in the head or a skipped part, worked out once (planning walks them often)
    head_keys, skip_keys = _keys_under(model, heads), _keys_under(model, skip)

    mappings: list[KeyMapping] = []
    converters: dict[str, KeyRule] = {}
    filled: set[str] = set()
    chosen_names = frozenset(r.describe() for r in chosen)
    claims: dict[str, tuple[int, bool]] = {}
    """model key -> (index of the mapping that fills it, whether a chosen rule renamed that key)"""
    leftovers: list[_Leftover] = []

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
        key, used = (ck_key, ()) if structural else _rename(ck_key, name_rules, model)
        if structural or key not in model:
            if not structural and _under_any(key, heads):  # the model's head has another form (or none)
                mappings.append(KeyMapping(ck_key, key, Status.DROPPED_HEAD, used, ck_shape))
            elif _under_any(key, skip):
                mappings.append(KeyMapping(ck_key, key, Status.SKIPPED, used, ck_shape))
            else:
                leftovers.append(_Leftover(ck_key, key, used, ck_shape))
            continue
        by_choice = bool(chosen_names) and not chosen_names.isdisjoint(used)
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
        mappings.append(_match(ck_key, key, used, ck_shape, model[key], key in head_keys, key in skip_keys,
                               all_rules, converters, casters))
        filled.add(key)

    order = "file"
    notes: list[str] = []
    if positional and leftovers:
        unordered = checkpoint_order == "unordered" or (checkpoint_order == "auto" and _names_look_sorted(ck_keys))
        order = "unordered" if unordered else "file"
        aligner = _Aligner(leftovers, model, filled, heads, skip, unordered, lenient=structural)
        mappings += aligner.run()
        leftovers = aligner.remaining()
        notes += aligner.notes
    mappings += [KeyMapping(x.key, None, Status.UNEXPECTED, x.rules, x.shape) for x in leftovers]
    model_parts = tuple(dict.fromkeys(k.split(".", 1)[0] for k in model))
    foreign_parts = _foreign_parts(leftovers, [m.checkpoint_key for m in mappings if m.status is Status.LOADED],
                                   model_parts)
    mappings = _renew_changed_head_modules(mappings)

    loaded = {m.model_key for m in mappings if m.status is Status.LOADED}
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


def _foreign_parts(leftovers: Sequence[_Leftover], loaded: Sequence[str], model_parts: Sequence[str]
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


def _fuse(checkpoint: Mapping[str, Shape], fusers: Sequence[Fuse]
          ) -> tuple[Mapping[str, Shape], dict[str, tuple[tuple[str, ...], int]]]:
    """The checkpoint with each complete group of ``Fuse`` parts replaced by one key (placed
    where its first part was), and the parts of every fused key."""
    if not fusers:
        return checkpoint, {}
    groups: dict[str, dict[str, str]] = {}
    owner: dict[str, Fuse] = {}
    for key in checkpoint:
        for rule in fusers:
            hit = rule.fused_name(key)
            if hit is not None:
                groups.setdefault(hit[0], {})[hit[1]] = key
                owner[hit[0]] = rule
                break
    fused: dict[str, tuple[tuple[str, ...], int]] = {}
    for name, found in groups.items():
        rule = owner[name]
        if set(found) == set(rule.parts) and name not in checkpoint:
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


def _renew_changed_head_modules(mappings: list[KeyMapping]) -> list[KeyMapping]:
    """A head module with one tensor of another shape is new as a whole: keeping the old
    ``fc.bias`` beside a fresh ``fc.weight`` would give a head that is half someone else's."""
    changed = {m.model_key.rpartition(".")[0] for m in mappings if m.status is Status.DROPPED_HEAD and m.model_key}
    if not changed:
        return mappings
    return [replace(m, status=Status.DROPPED_HEAD)
            if m.status is Status.LOADED and m.model_key and m.model_key.rpartition(".")[0] in changed else m
            for m in mappings]


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
    if in_head:
        return KeyMapping(ck_key, key, Status.DROPPED_HEAD, used, ck_shape, model_shape)
    for rule in rules:
        if rule.converts(key, ck_shape, model_shape):
            converters[ck_key] = rule
            return KeyMapping(ck_key, key, Status.LOADED, (*used, rule.describe()), ck_shape, model_shape)
    return KeyMapping(ck_key, key, Status.MISMATCHED, used, ck_shape, model_shape)


# -- positional pairing ------------------------------------------------------------------


@dataclass(frozen=True)
class _Leftover:
    """A checkpoint key no name rule placed: original key, renamed key, rules used, shape."""

    key: str
    name: str
    rules: tuple[str, ...]
    shape: Shape


@dataclass
class _Module:
    """The tensors of one module: leaf name (``weight``, ``running_mean``…) -> (key, shape)."""

    path: str
    leaves: dict[str, tuple[str, Shape]] = field(default_factory=dict)

    def signature(self) -> frozenset[tuple[str, Shape]]:
        return frozenset((leaf, shape) for leaf, (_, shape) in self.leaves.items() if leaf != _TRACKED)

    def show(self) -> str:
        inner = ", ".join(f"{leaf} {list(shape)}" for leaf, (_, shape) in self.leaves.items() if leaf != _TRACKED)
        return f"{self.path or '(root)'} {{{inner}}}"


def _group(items: Iterable[tuple[str, str, Shape]]) -> list[_Module]:
    """(key, dotted name, shape) -> modules in order of first appearance."""
    modules: dict[str, _Module] = {}
    for key, name, shape in items:
        path, _, leaf = name.rpartition(".")
        modules.setdefault(path, _Module(path)).leaves[leaf] = (key, shape)
    return list(modules.values())


def _pair_by_signature(ck: Sequence[_Module], model: Sequence[_Module]) -> list[tuple[_Module, _Module]] | None:
    """One block's checkpoint modules paired with the model's whatever order each defines them in,
    or None when the signatures differ or a pairing is not certain. A signature that occurs once
    on each side pairs at once; modules that share one are paired through the module each follows
    (the checkpoint's parent module when nested, like ``conv1.norm`` in ``conv1``, else the module
    before it in the file; the module before it in the model), only when that one is already paired
    and exactly one candidate follows its counterpart."""
    from collections import Counter

    if Counter(m.signature() for m in ck) != Counter(m.signature() for m in model):
        return None
    paths = {m.path for m in ck}
    anchor: dict[int, _Module | None] = {}
    for n, m in enumerate(ck):
        parent = m.path.rpartition(".")[0]
        anchor[id(m)] = next((c for c in ck if c.path == parent), None) if parent in paths else (
            ck[n - 1] if n else None)
    model_after = {id(model[n - 1]): model[n] for n in range(1, len(model))}
    counts = Counter(m.signature() for m in ck)
    pairs: dict[int, _Module] = {}
    taken: set[int] = set()
    for c in ck:
        if counts[c.signature()] == 1:
            twin = next(m for m in model if m.signature() == c.signature())
            pairs[id(c)], _ = twin, taken.add(id(twin))
    progress = True
    while progress and len(pairs) < len(ck):
        progress = False
        for c in ck:
            if id(c) in pairs:
                continue
            a = anchor[id(c)]
            if a is None:
                first = model[0]  # the block's first module follows nothing: only a first module takes it
                target = first if id(first) not in taken and first.signature() == c.signature() else None
                if target is not None and any(anchor[id(o)] is None and o is not c and o.signature() == c.signature()
                                              for o in ck):
                    target = None
            else:
                if id(a) not in pairs:
                    continue
                target = model_after.get(id(pairs[id(a)]))
            if target is None or id(target) in taken or target.signature() != c.signature():
                continue
            pairs[id(c)], progress = target, True
            taken.add(id(target))
    if len(pairs) < len(ck):
        return None
    return [(c, pairs[id(c)]) for c in ck]


@dataclass
class _Node:
    """A checkpoint module path as a tree, so an unordered file can be walked in module order."""

    module: _Module | None = None
    children: dict[str, _Node] = field(default_factory=dict)


class _Aligner:
    """Pairs leftover checkpoint modules with the model's unfilled modules, in order.

    With a trustworthy file order the checkpoint's modules are taken as they come. Without
    one (safetensors) the checkpoint is walked as a tree: numbered children in numeric order,
    named siblings chosen by which one fits the model's next module; two that fit is an
    ambiguity and refused. The head pairs last, and only with the checkpoint's last modules.
    """

    def __init__(self, leftovers: list[_Leftover], model: Mapping[str, Shape], filled: set[str],
                 heads: frozenset[str], skip: frozenset[str], unordered: bool, lenient: bool = False) -> None:
        self.leftovers = leftovers
        self.lenient = lenient
        """Stop at the first divergence and keep the pairs before it, instead of raising (structural
        matching: a trunk saved without the model's last modules still pairs as far as it goes)."""
        self.unordered = unordered
        targets = [(k, k, tuple(model[k])) for k in model if k not in filled and not _under_any(k, skip)]
        modules = _group(targets)
        self.body = [m for m in modules if not _under_any(m.path, heads) and m.signature()]
        self.head = [m for m in modules if _under_any(m.path, heads) and m.signature()]
        # a module holding only num_batches_tracked has nothing to pair by; it stays unexpected
        self.checkpoint = [m for m in _group((x.key, x.name, x.shape) for x in leftovers) if m.signature()]
        self.rules = {x.key: x.rules for x in leftovers}
        self.pairs: list[tuple[_Module, _Module]] = []
        self.used: set[str] = set()  # checkpoint module paths consumed
        self.placed: set[str] = set()  # checkpoint keys given a model key
        self.notes: list[str] = []
        self.position = 0

    # -- the walk ----------------------------------------------------------------------
    def run(self) -> list[KeyMapping]:
        try:
            self._pair_all()
        except IncompatibleCheckpointError as exc:
            if not self.lenient or not self.pairs:
                raise
            self.notes.append("pairing by order stopped: " + str(exc).splitlines()[0])
        out: list[KeyMapping] = []
        for cm, mm in self.pairs:
            out += self._mapping(cm, mm, Status.LOADED)
        for cm, mm, status in self._pair_head():
            out += self._mapping(cm, mm, status)
        return out

    def _pair_all(self) -> None:
        if self.unordered:
            self._walk(self._tree(), [])
            if self.pairs:
                self.notes.append(
                    "the checkpoint keeps no key order (safetensors stores keys sorted by name); the positional "
                    "map followed numbered module names in numeric order and chose named siblings by shape")
        else:
            j = 0
            while j < len(self.checkpoint) and self.position < len(self.body):
                module = self.checkpoint[j]
                if module.signature() == self.body[self.position].signature():
                    self._pair(module)
                    j += 1
                    continue
                j = self._pair_block(j)

    def _pair_block(self, j: int) -> int:
        """The model's next module has another signature than the checkpoint's next one: the two
        may define one block's modules in another order (a shortcut registered before the
        convolutions, a norm named inside its conv). The block (the smallest numbered module of
        the model around the diverging one, then larger ones) is paired as a whole, with the same
        number of checkpoint modules: every signature must occur as often on both sides; modules
        of one signature are told apart by the module each follows (its parent when nested, such
        as ``conv1.norm``, else the module before it), never by a guess. Returns the checkpoint
        position after the block; raises where no block pairs."""
        i = self.position
        for start, end in self._blocks_around(i):
            done = i - start  # pairs already made inside this block, undone to pair it whole
            if done > len(self.pairs) or j - done < 0 or j - done + (end - start) > len(self.checkpoint):
                continue
            ck = self.checkpoint[j - done: j - done + (end - start)]
            found = _pair_by_signature(ck, self.body[start:end])
            if found is None:
                continue
            del self.pairs[len(self.pairs) - done:]
            for cm, mm in found:
                self.pairs.append((cm, mm))
                self.used.add(cm.path)
            self.position = end
            return j - done + (end - start)
        self._diverge(self.checkpoint[j], self.body[i], [self.checkpoint[j]])
        return j  # not reached

    def _blocks_around(self, i: int) -> list[tuple[int, int]]:
        """(start, end) positions of the model's numbered modules around body[i] with at least
        two modules in this walk, smallest first (``layer1.0``; ``stages.0.blocks.0``)."""
        parts = self.body[i].path.split(".")
        out: list[tuple[int, int]] = []
        for n in range(len(parts) - 1, 0, -1):
            if not parts[n - 1].isdigit():
                continue
            prefix = ".".join(parts[:n]) + "."
            start = i
            while start > 0 and self.body[start - 1].path.startswith(prefix):
                start -= 1
            end = i
            while end < len(self.body) and self.body[end].path.startswith(prefix):
                end += 1
            if end - start >= 2 and (not out or out[-1] != (start, end)):
                out.append((start, end))
        return out

    def _pair(self, module: _Module) -> None:
        target = self.body[self.position]
        if module.signature() != target.signature():
            self._diverge(module, target, [module])
        self.pairs.append((module, target))
        self.used.add(module.path)
        self.position += 1

    def _tree(self) -> _Node:
        root = _Node()
        for module in self.checkpoint:
            node = root
            for part in module.path.split(".") if module.path else ():
                node = node.children.setdefault(part, _Node())
            node.module = module
        return root

    def _firsts(self, node: _Node) -> list[_Module]:
        """Every module that could come first in this subtree."""
        if node.module is not None:
            return [node.module]
        numbered = all(n.isdigit() for n in node.children)
        if numbered and node.children:
            first = min(node.children, key=int)
            return self._firsts(node.children[first])
        return [m for child in node.children.values() for m in self._firsts(child)]

    def _walk(self, node: _Node, path: list[str]) -> bool:
        """Pair this subtree in order; False once the model has no more modules to fill."""
        if node.module is not None:
            if self.position >= len(self.body):
                return False
            self._pair(node.module)
        if all(n.isdigit() for n in node.children):
            return all(self._walk(node.children[name], [*path, name]) for name in sorted(node.children, key=int))
        pending = dict(node.children)
        while pending:
            if self.position >= len(self.body):
                return False
            want = self.body[self.position].signature()
            fits = [n for n, child in pending.items() if any(m.signature() == want for m in self._firsts(child))]
            if len(fits) > 1:
                self._ambiguous(path, fits)
            if not fits:
                self._diverge(None, self.body[self.position], [m for c in pending.values() for m in self._firsts(c)])
            name = fits[0]
            if not self._walk(pending.pop(name), [*path, name]):
                return False
        return True

    # -- the head and the results ------------------------------------------------------
    def _pair_head(self) -> list[tuple[_Module, _Module, Status]]:
        rest = [m for m in self.checkpoint if m.path not in self.used]
        if not self.head or len(rest) != len(self.head):
            return []
        if self.unordered:
            rest.sort(key=lambda m: [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in m.path.split(".")])
        out = []
        for cm, mm in zip(rest, self.head):
            if set(cm.leaves) - {_TRACKED} != set(mm.leaves) - {_TRACKED}:
                return []
            out.append((cm, mm, Status.LOADED if cm.signature() == mm.signature() else Status.DROPPED_HEAD))
        self.used.update(cm.path for cm, _, _ in out)
        return out

    def _mapping(self, cm: _Module, mm: _Module, status: Status) -> list[KeyMapping]:
        rule = Positional().describe()
        out = []
        for leaf, (ck_key, ck_shape) in cm.leaves.items():
            if leaf not in mm.leaves:
                continue  # a num_batches_tracked the model lacks: stays unexpected
            model_key, model_shape = mm.leaves[leaf]
            self.placed.add(ck_key)
            out.append(KeyMapping(ck_key, model_key, status, (*self.rules[ck_key], rule), ck_shape, model_shape))
        return out

    def remaining(self) -> list[_Leftover]:
        """Leftover checkpoint keys the pairing did not place (they become unexpected)."""
        return [x for x in self.leftovers if x.key not in self.placed]

    # -- refusals ----------------------------------------------------------------------
    def _diverge(self, module: _Module | None, target: _Module, context: Sequence[_Module]) -> None:
        i = self.position
        lines = [f"  model #{j}: {m.show()}" for j, m in enumerate(self.body) if i - 2 <= j <= i + 1]
        if module is not None:
            got = f"the checkpoint's next module {module.show()}"
        else:
            got = "none of the checkpoint's candidates " + "; ".join(m.show() for m in context[:4])
        order_hint = (
            "The checkpoint keeps no key order (safetensors stores keys sorted by name); zooadapt rebuilt it from "
            "numbered module names and shapes, so the order itself may be what differs." if self.unordered else ""
        )
        raise IncompatibleCheckpointError(
            f"positional mapping diverges at model module #{i} {target.show()}: {got} has other tensors or "
            f"shapes. {i} modules matched before it.\n" + "\n".join(lines) + "\n" + order_hint +
            "\nPass skip=(...) for model parts the checkpoint does not hold, map the names with a Rename rule, "
            "or check that this is the right checkpoint."
        )

    def _ambiguous(self, path: list[str], names: list[str]) -> None:
        where = ".".join(path) or "the top level"
        raise IncompatibleCheckpointError(
            f"positional mapping is ambiguous at {where}: the checkpoint's modules {', '.join(sorted(names))} "
            f"could each fill the model's next module {self.body[self.position].show()}, and the file keeps no "
            "order to tell them apart (safetensors stores keys sorted by name). Map these names with a Rename "
            "rule, or use a checkpoint saved with torch.save, which keeps module order."
        )

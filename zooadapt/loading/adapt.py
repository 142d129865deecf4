"""Adapting a checkpoint to a model: the planner that tries, in order, what users' files need.

1. The user's rules, then the family's rules (``make_plan``): the checkpoints a family declares.
2. Foreign layouts (``zooadapt.host.layouts``) that recognise the keys: another codebase's names.
3. Wrapper prefixes found by shape (``zooadapt.loading.discovery``): Lightning's ``model.``, DDP and
   ``torch.compile`` in any order, a detector's ``backbone.body.``, a model that holds the
   backbone as ``backbone.``.
4. Structural pairing: the same architecture under other names, paired module by module in
   order with every tensor's name and shape checked.

Each step runs only when the ones before leave backbone tensors missing or mismatched, so a
checkpoint that fits costs one ``make_plan`` (none when this process planned it before). The
best plan wins; two wrappers that fit equally well are refused with both named. What was found
appears in the plan as a rule (``strip 'model.' (found)``) or a note. When nothing fits,
``hints`` says why it likely does not. Nothing here imports torch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from math import prod
from typing import Any

from ..contract.errors import AmbiguousCheckpointError, IncompatibleCheckpointError
from ..contract.escape import printable
from ..contract.family import Conversion, Layout
from ..contract.rules import DEFAULT_RULES, AddPrefix, Drop, KeyRule, Positional, StripPrefix
from ..host.layouts import layouts_matching, registered_layouts
from .discovery import CheckpointKeys, leading_prefixes, wrapper_candidates, wrapping_prefixes
from .plan import CheckpointOrder, KeyMapping, LoadPlan, Status, keys_naming_the_model, make_plan
from .plan_cache import PlanCache, plan_key

__all__ = ["PlanTarget", "adapt"]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class PlanTarget:
    """What a checkpoint is planned into: the model's state-dict shapes and what they mean."""

    shapes: Mapping[str, Shape]
    parameters: Sequence[str]
    head: str = ""
    skip: Sequence[str] = ()
    family: str | None = None
    """The family whose layouts apply (None: a model of the user's with no family)."""
    tied: tuple[tuple[str, ...], ...] = ()
    """Groups of model keys that name one tensor (weights shared inside the model)."""
    extra_heads: tuple[str, ...] = ()
    """Further classifiers that go with ``head`` (``StageMap.extra_heads``)."""


_plans = PlanCache()
"""Plans that fit, remembered for the process (``zooadapt.plan_cache``)."""

ArchitectureFit = Callable[[Mapping[str, Shape]], "list[tuple[str, float]]"]
"""Given the checkpoint, other architectures of the family and the share of its tensors each
would load (diagnosis only)."""


def _score(plan: LoadPlan) -> tuple[bool, float, int, int]:
    return plan.fits, round(plan.backbone_coverage, 9), -len(plan.duplicates), -len(plan.unexpected)


def _share(plan: LoadPlan) -> tuple[bool, float]:
    """What two readings of a checkpoint are compared on for a tie: whether each fits and how
    much of the backbone each fills (which leaves fewer keys unused does not make a copy right);
    the start of ``_score``."""
    return plan.fits, round(plan.backbone_coverage, 9)


def adapt(
    checkpoint: Mapping[str, Shape],
    target: PlanTarget,
    *,
    rules: Sequence[KeyRule] = (),
    family_rules: Sequence[KeyRule] = (),
    order: CheckpointOrder = "auto",
    discover: bool = True,
    use_ema: bool | None = None,
    other_architectures: ArchitectureFit | None = None,
) -> LoadPlan:
    """The plan that fills ``target`` best from ``checkpoint`` (key -> shape, file order).

    ``rules`` are the user's and run before ``family_rules``. ``discover=False`` stops after
    step 1 (the plan a family's rules alone give). ``use_ema`` settles a tie between copies of
    the network the way weight sets are settled (None or True: an EMA or teacher copy when
    exactly one of the copies is one; False: the one copy that is not). ``other_architectures``
    is consulted only when nothing fits, to name an architecture the checkpoint does fit.

    A plan that fits is remembered for the process (``zooadapt.loading.plan_cache``, keyed by
    everything the plan is made from, the registered layouts included): planning the same
    checkpoint layout into the same model again hands out a copy of it.
    """
    layouts = registered_layouts() if discover and target.family else ()
    key = plan_key(checkpoint, (tuple(target.shapes.items()), tuple(target.parameters), target.head,
                                tuple(target.skip), target.family, target.tied, target.extra_heads, order, discover,
                                use_ema, layouts),
                   rules, family_rules)
    remembered = _plans.get(key)
    if remembered is not None:
        return remembered
    plan = _adapt(checkpoint, target, rules=rules, family_rules=family_rules, order=order, discover=discover,
                  use_ema=use_ema, other_architectures=other_architectures)
    _plans.put(key, plan)
    return plan


def _adapt(
    checkpoint: Mapping[str, Shape],
    target: PlanTarget,
    *,
    rules: Sequence[KeyRule],
    family_rules: Sequence[KeyRule],
    order: CheckpointOrder,
    discover: bool,
    use_ema: bool | None,
    other_architectures: ArchitectureFit | None,
) -> LoadPlan:
    positional = any(isinstance(r, Positional) for r in (*rules, *family_rules))

    def plan_with(extra_before: Sequence[KeyRule] = (), extra_after: Sequence[KeyRule] = (),
                  structural: bool = False, scope: str = "", only_if_it_fits: bool = False,
                  subset: Mapping[str, Shape] | None = None) -> LoadPlan | None:
        # a found prefix is stripped first: it was found on the raw keys, and DDP's default
        # 'module.' rule must not cut '_orig_mod.module.' in half
        return make_plan(checkpoint if subset is None else subset, target.shapes, parameters=target.parameters,
                         rules=[*extra_before, *rules, *DEFAULT_RULES, *family_rules, *extra_after],
                         default_rules=False, head=target.head, skip=[*target.skip, *_outside(target, scope)],
                         checkpoint_order=order, structural=structural, only_if_it_fits=only_if_it_fits,
                         tied=target.tied, extra_heads=target.extra_heads,
                         chosen=[*_naming(rules), *(r for r in (*extra_before, *extra_after) if isinstance(r, _FOUND))])

    def names_with(extra_before: Sequence[KeyRule] = (), subset: Mapping[str, Shape] | None = None) -> list[str] | None:
        # the keys that plan_with's rules send onto a model key, by name alone (keys_naming_the_model)
        return keys_naming_the_model(checkpoint if subset is None else subset, target.shapes,
                                     [*extra_before, *rules, *DEFAULT_RULES, *family_rules])

    # the names as they are; when they cannot fit, the plan gives up early and is made in full
    # only if nothing else fits either
    try:
        base = plan_with(only_if_it_fits=discover and bool(checkpoint))
        diverged: IncompatibleCheckpointError | None = None
    except IncompatibleCheckpointError as exc:  # a family's positional pairing of names that need a prefix
        if not discover or not checkpoint:
            raise
        base, diverged = None, exc
    if base is not None and (not discover or not checkpoint or (base.fits and _settled(base, rules))):
        return base
    # Every other reading is planned: a candidate that cannot fit is given up after a few keys
    # once something fits (an exact test: too few keys left to fill the model), so finding the
    # second copy of a network costs little and is never skipped.
    readings: list[_Reading] = [_Reading("", base)] if base is not None else []
    fitting = base is not None and base.fits
    moving: dict[str, Shape] | None = None
    if fitting:
        # the plain reading fits beside unused keys: every rule leaves a key that names a model key
        # as it is, so only the other keys can make another reading, and only their prefixes are tried
        moving = {k: s for k, s in checkpoint.items() if k not in target.shapes}
        keys = CheckpointKeys(moving, elements=sum(max(prod(s), 1) for s in checkpoint.values()))
        bound = None
    else:
        keys = CheckpointKeys(checkpoint)
        bound = _StripBound(keys, target, base, plan_with, _naming(rules), names_with)
    for candidate in _candidates(checkpoint, keys, target):
        if bound is not None and fitting and candidate.layout is None and not candidate.add \
                and not bound.could_fit(candidate.strip):
            continue  # too few keys could land for it to fit, so it cannot tie the reading that does
        if moving is not None and not positional and candidate.strip and not candidate.add \
                and candidate.layout is None and not _moves_anything(moving, candidate.strip, plan_with, names_with):
            continue  # the plain reading again: none of the keys it renames lands in the model
        try:
            plan = candidate.plan(plan_with, checkpoint, target.shapes, only_if_it_fits=fitting)
        except IncompatibleCheckpointError:
            if not fitting:
                raise
            continue  # a positional pairing that diverges under this prefix: not a reading at all
        if plan is not None:
            readings.append(_Reading(candidate.prefix, plan, candidate.rule_line))
            if plan.fits:
                fitting = True
                if candidate.strip and not candidate.add and keys.under[candidate.strip] < len(keys.entries):
                    readings += _outside_readings(plan_with, keys, candidate.strip)  # (no keys outside: none)
    best = _pick(readings, use_ema, base)
    if diverged is not None and (best is None or not best.fits):
        raise diverged  # no other reading fits: the plain reading's own error says why
    if best is None or not best.fits:
        if base is None:
            base = plan_with()
            assert base is not None
        if best is None or _score(base) >= _score(best):
            best = base  # nothing better; several weak, equal guesses are no answer either
    if not best.fits and not (best.duplicates and not best.missing and not best.mismatched):
        # (a plan whose names fill everything, some twice, is refused for its copies: pairing by
        # order would drop them, the head with them, and guess)
        structural = _structural_copy(plan_with, keys if moving is None else CheckpointKeys(checkpoint), target,
                                      rules, use_ema)
        if structural is not None and _score(structural) > _score(best):
            best = structural
    if not best.fits:
        best.hints.extend(_diagnose(checkpoint, target, best, other_architectures))
    return best


def _moves_anything(moving: Mapping[str, Shape], strip: str, plan_with: Callable[..., LoadPlan | None],
                    names_with: Callable[..., list[str] | None]) -> bool:
    """Whether ``strip`` sends a key that does not name a model key as it is (the only keys a rule
    renames) onto the model. If none lands, planning under ``strip`` gives the plain reading's
    backbone again. Each key is renamed on its own, so planning just those keys tells (not so
    under positional pairing, which reads the whole file's order: the caller does not ask then);
    when not even their names reach a model key, the names tell, without a plan."""
    part = {k: s for k, s in moving.items() if k.startswith(strip)}
    if names_with(extra_before=[StripPrefix(strip, found=True)], subset=part) == []:
        return False
    try:
        plan = plan_with(extra_before=[StripPrefix(strip, found=True)], subset=part)
    except IncompatibleCheckpointError:
        return True
    return plan is None or any(m.model_key is not None and m.status in _LANDS for m in plan.mappings)


_LANDS = (Status.LOADED, Status.DUPLICATE, Status.MISMATCHED)


class _StripBound:
    """An exact test that a prefix to strip cannot give a plan that fits, asked only once some
    reading fits: such a plan must fill every backbone key, and under ``strip S`` the keys
    outside S are read as they are (at most those whose names reach a model key through the
    rules, ``keys_naming_the_model``; the plain reading's plan where a rule pairs or joins keys)
    while each key under S fills at most one model key. Fewer than the keys needed: no tie is
    possible, whatever the family's rules do, so the candidate is not planned."""

    def __init__(self, keys: CheckpointKeys, target: PlanTarget, base: LoadPlan | None,
                 plan_with: Callable[..., LoadPlan | None], chosen: Sequence[KeyRule],
                 names_with: Callable[[], list[str] | None]) -> None:
        self._keys, self._base, self._plan_with, self._names_with = keys, base, plan_with, names_with
        self._chosen = bool(chosen)  # the user's rules decide collisions: no bound from the plain reading
        outside = [*target.skip, target.head, *target.extra_heads] if target.head else list(target.skip)
        excluded, under = frozenset(outside), tuple(p + "." for p in outside)
        self._needed = sum(1 for k in target.shapes if not k.endswith("num_batches_tracked")
                           and k not in excluded and not k.startswith(under)) \
            - sum(len(g) - 1 for g in target.tied)  # a tied group is filled by one key
        self._loaded_under: Counter[str] | None = None
        self._loaded = -1
        self._named = keys.count_under([k for k in keys.prefixes if k in target.shapes])
        """Keys under each prefix that already name a model key: every rule leaves them as they are,
        so a prefix over such keys only renames nothing and is the plain reading."""

    def could_fit(self, strip: str) -> bool:
        if self._keys.under[strip] == self._named[strip]:
            return False  # it renames nothing: the plain reading itself, already weighed
        if self._loaded < 0:
            # the keys the plain reading can load: by name alone when no rule pairs keys by order
            # or joins them (each key is then named on its own, so a key outside the prefix names
            # the same model key under the prefix's reading), else from the plain reading's plan
            loaded = None if self._chosen else self._names_with()
            if loaded is None and not self._chosen:
                if self._base is None:  # the plain reading gave up early: made in full, once
                    try:
                        self._base = self._plan_with()
                    except IncompatibleCheckpointError:
                        self._base = None
                # a key the plain reading loads, or would load but for a key that got there first
                loaded = [m.checkpoint_key for m in self._base.mappings if m.status in _CLAIMS] \
                    if self._base is not None else None
            self._loaded_under = self._keys.count_under(loaded) if loaded is not None else None
            self._loaded = len(loaded) if loaded is not None else 0
        if self._loaded_under is None:
            return True  # no plain reading to bound the keys outside the prefix with
        return self._keys.under[strip] + self._loaded - self._loaded_under[strip] >= self._needed


_CLAIMS = (Status.LOADED, Status.DUPLICATE)


def _settled(plan: LoadPlan, rules: Sequence[KeyRule]) -> bool:
    """True when a plan that fits needs no search for other readings: every checkpoint key has
    its place (no second copy can hide among them), or the user's own rules chose the keys."""
    if not plan.unexpected:
        return True
    chosen = {r.describe() for r in _naming(rules)}
    return any(chosen.intersection(m.rules) for m in plan.loaded) or bool(
        chosen and any(m.status is Status.IGNORED for m in plan.mappings))


def _naming(rules: Sequence[KeyRule]) -> list[KeyRule]:
    """The rules that say where keys go (rename or drop them), not those that only convert a
    tensor for a build option (``in_chans``, ``img_size``): only those choose a copy."""
    return [r for r in rules if type(r).rename is not KeyRule.rename or type(r).drops is not KeyRule.drops]


_FOUND = (StripPrefix, AddPrefix)
"""The rules a candidate reading adds (a found wrapper prefix): its keys win a key they share
with keys outside the prefix, which belong to another copy."""


@dataclass
class _Reading:
    """One way the checkpoint was planned: the prefix it was read under ('' for the names as
    they are), the plan, the ``rules=`` entry that picks it, its name in messages, and whether
    it was read by dropping the keys under another prefix (another copy)."""

    prefix: str
    plan: LoadPlan
    rule_line: str = ""
    label: str = ""
    dropping: bool = False


def _outside_readings(plan_with: Callable[..., LoadPlan | None], keys: CheckpointKeys, prefix: str) -> list[_Reading]:
    """The checkpoint without the keys under ``prefix``: when a network under ``prefix`` fits
    beside other keys that fill the same tensors (the plain weights beside a ``module.`` copy),
    those other keys are a second reading, and the two must be compared, not one taken.

    The other keys are read as they are, and under each of ``prefix``'s enclosing prefixes that
    holds keys of its own: a wrapper ``run.`` holding the network and, as ``run.module.``, a
    DDP-wrapped second copy is two copies, ``run.`` being the other one."""
    drop = Drop(_drop_pattern([prefix]))
    line = f"drop:{drop.pattern}"
    readings = []
    for outer in _enclosing(prefix):
        if outer and keys.under[outer] <= keys.under[prefix]:
            continue  # nothing under it but the copy itself
        strip = [StripPrefix(outer, found=True)] if outer else []
        try:
            plan = plan_with(extra_before=[drop, *strip], only_if_it_fits=True)
        except IncompatibleCheckpointError:
            continue
        if plan is None:
            continue
        if outer:
            readings.append(_Reading(outer, plan, f'rules=["{line}", "strip:{outer}"]', dropping=True))
        elif (shared := _shared_prefix([m.checkpoint_key for m in plan.loaded])):
            # the other copy sits under a prefix of its own (paired by order: a family's positional
            # rule): named by it, so that a teacher_ copy is one
            readings.append(_Reading(shared, plan, f'rules=["{line}"]', dropping=True))
        else:
            readings.append(_Reading("", plan, f'rules=["{line}"]', f"the keys outside {prefix!r}", dropping=True))
    return readings


def _shared_prefix(keys: Sequence[str]) -> str:
    """The longest dotted prefix every key starts with ('' when none, or no keys)."""
    if not keys:
        return ""
    parts = keys[0].split(".")[:-1]
    while parts and not all(k.startswith(".".join(parts) + ".") for k in keys):
        parts.pop()
    return "".join(p + "." for p in parts)


def _enclosing(prefix: str) -> list[str]:
    """'' and each dotted prefix that encloses ``prefix`` (``a.b.c.`` -> '', 'a.', 'a.b.')."""
    parts = prefix.rstrip(".").split(".")
    return ["".join(p + "." for p in parts[:n]) for n in range(len(parts))]


def _drop_pattern(prefixes: Sequence[str]) -> str:
    return "(?:" + "|".join(p.replace(".", "[.]") for p in prefixes) + ").*"


def _pick(readings: Sequence[_Reading], use_ema: bool | None, base: LoadPlan | None) -> LoadPlan | None:
    """The best reading, or a refusal when several different ones fit equally well and no
    convention chooses (``_by_convention``); None when none is worth taking."""
    if not readings:
        return None
    scores = {id(r): _score(r.plan) for r in readings}  # each a few passes over a plan's mappings
    top = max(scores.values())
    best = next(r for r in readings if scores[id(r)] == top)
    equal = [r for r in readings if scores[id(r)][:2] == _share(best.plan)]
    if len(equal) == 1:
        return best.plan  # nothing ties it
    whole = [r for r in equal if not _mixed(r)]
    if whole and len(whole) < len(equal):  # a mixture of two copies is never meant when a whole one is there
        equal = whole
        if _mixed(best):
            best = max(whole, key=lambda r: scores[id(r)])
    ties: list[_Reading] = []
    seen: list[dict[str, str]] = []
    # the same backbone reached two ways is one answer, not two: the way that also places the
    # copy's classifier (dropping the other copy lets a family's positional rule pair it), then
    # the plainest
    for r in sorted(equal, key=lambda r: (len(r.plan.new_head), _plainness(r))):
        if (body := _body(r.plan)) not in seen:
            ties.append(r)
            seen.append(body)
    if len(ties) > 1:
        if not (best.plan.fits or best.plan.backbone_coverage >= 0.5):
            return None  # several weak, equal guesses: no answer (the base plan's error stands)
        chosen = _by_convention(ties, use_ema)
        if chosen is None:
            _refuse_ambiguous(ties, use_ema, base)
        assert chosen is not None
        left = [r for r in ties if r is not chosen]
        chosen.plan.notes.append(
            f"the checkpoint holds {len(ties)} copies of the network that fit equally well: loaded "
            f"{_name(chosen)} ({_kind(chosen.prefix)} weights, "
            + ("as use_ema=False asks" if use_ema is False else "chosen as timm and DINO's evaluation do")
            + "), left "
            + ", ".join(_name(r) for r in left)
            + (" (use_ema=False loads the live copy)" if _kind(chosen.prefix) != "live" else
               " (use_ema=True loads the EMA copy)"))
        return chosen.plan
    return best.plan


def _mixed(reading: _Reading) -> bool:
    """Whether a reading under a prefix loads keys from outside it too: with a copy of the
    network under ``P.`` beside plain keys, stripping ``P.layer1.0.`` renames a few of P's keys
    into the model and takes the rest from the plain copy. That mixture fills the model as well
    as either copy, but it is not a copy of its own (``_pick`` passes it over when a whole one ties)."""
    return bool(reading.prefix) and not reading.label and any(
        not key.startswith(reading.prefix) for m in reading.plan.loaded for key in _file_keys(reading.plan, m))


def _file_keys(plan: LoadPlan, mapping: KeyMapping) -> tuple[str, ...]:
    """The file's keys a planned tensor is made from: a fused tensor's parts (``blocks.0.attn.qkv``
    from ``module.…query``, ``key`` and ``value``), a converted one's sources (none for one the
    conversion made from nothing, such as CLIP's zero head bias), else its own key."""
    fused = plan.fused.get(mapping.checkpoint_key)
    if fused is not None:
        return fused[0]
    converted = plan.converters.get(mapping.checkpoint_key)
    if isinstance(converted, ConvertedBy):
        return converted.conversion.sources.get(converted.output, ())
    return (mapping.checkpoint_key,)


def _plainness(reading: _Reading) -> int:
    """Which of several readings that load the same tensors names them best: a prefix to strip
    that the plan used, then a layout or sub-module, then the keys as they are, then a prefix
    no key needed, then the keys left when another copy's are dropped (under a prefix, then as
    they are: the ``module.`` copy beside ``module.module.`` is named ``'module.'``)."""
    if reading.dropping:
        return 4 if reading.prefix else 5
    if reading.prefix:
        used = f"strip '{reading.prefix}' (found)"
        return 0 if any(used in m.rules for m in reading.plan.loaded) else 3
    return 1 if reading.rule_line else 2


def _body(plan: LoadPlan) -> dict[str, str]:
    """checkpoint key -> model key for what loads outside the heads (a head dropped by one
    reading and kept by another, or a distilled model's second head read by one and left by the
    other, is the same copy of the network)."""
    heads = [h for h in (plan.head, *plan.extra_heads) if h]
    under = tuple(h + "." for h in heads)
    return {c: m for c, m in plan.assignments().items() if not (m in heads or m.startswith(under))}


_EMA_PARTS = ("ema", "teacher")


def _kind(prefix: str) -> str:
    """'EMA' for a copy under an EMA or teacher prefix (``model_ema.``, ``ema.``, ``teacher.``,
    ``ema_model.``), else 'live'."""
    for part in prefix.rstrip(".").lower().split("."):
        if part in _EMA_PARTS or part.startswith(("ema_", "teacher_")) or part.endswith(("_ema", "_teacher")):
            return "EMA"
    return "live"


def _by_convention(ties: Sequence[_Reading], use_ema: bool | None) -> _Reading | None:
    """The one copy a documented convention picks: EMA (timm's ``use_ema``) or the teacher
    (DINO evaluates the teacher) unless ``use_ema=False``, then the one live copy; None when
    the convention does not single one out (a query and a key encoder, an online and a target
    network)."""
    wanted = "live" if use_ema is False else "EMA"
    picked = [r for r in ties if _kind(r.prefix) == wanted]
    return picked[0] if len(picked) == 1 else None


def _name(reading: _Reading) -> str:
    return reading.label or (f"{reading.prefix!r}" if reading.prefix else "the keys as they are")


@dataclass(frozen=True)
class _Candidate:
    """One way to read the checkpoint: a foreign layout's rules, or a wrapper prefix to strip
    from its keys and/or add to them; ``votes`` is how many elements it matched raw."""

    votes: int
    layout: Layout | None = None
    strip: str = ""
    add: str = ""

    @property
    def prefix(self) -> str:
        """The checkpoint prefix this reading takes the network from ('' for all keys)."""
        return self.strip

    @property
    def rule_line(self) -> str:
        """The ``rules=`` entries that choose this reading."""
        if self.layout is not None:
            return f"the {self.layout.name} layout" + (f" under {self.strip!r}" if self.strip else "")
        parts = ([f"strip:{self.strip}"] if self.strip else []) + ([f"add:{self.add}"] if self.add else [])
        return "rules=[" + ", ".join(f'"{p}"' for p in parts) + "]"

    def plan(self, plan_with: Callable[..., LoadPlan | None], checkpoint: Mapping[str, Shape],
             model: Mapping[str, Shape], only_if_it_fits: bool = False) -> LoadPlan | None:
        if self.layout is not None and self.layout.convert is not None:
            return _converted_plan(self.layout, plan_with, checkpoint, model, self.strip)
        if self.layout is not None:
            under = [StripPrefix(self.strip, found=True)] if self.strip else []
            plan = plan_with(extra_before=[*under, *self.layout.rules], only_if_it_fits=only_if_it_fits)
            if plan is not None:
                plan.layout = self.layout.name
                plan.notes.append(f"keys read as the {self.layout.name} layout"
                                  + (f" under {self.strip!r}" if self.strip else "")
                                  + f" ({self.layout.description or self.layout.provider})")
            return plan
        before = [StripPrefix(self.strip, found=True)] if self.strip else []
        after = [AddPrefix(self.add, found=True)] if self.add else []
        # a checkpoint of a sub-module (my_net.backbone) says nothing about the rest of the model
        plan = plan_with(extra_before=before, extra_after=after, scope=self.add, only_if_it_fits=only_if_it_fits)
        if plan is None:
            return None
        if self.add and _share_placed(checkpoint, plan) < _SCOPED_SHARE:
            return None  # a scoped plan must use the checkpoint: one block's worth inside a model is no match
        if self.add and self._holds_the_rest(plan, model):
            return None
        return plan if plan.loaded else None

    def _holds_the_rest(self, plan: LoadPlan, model: Mapping[str, Shape]) -> bool:
        """Whether keys the scoped plan leaves unused name parts of the model outside the scope:
        then the file is not a checkpoint of that sub-module but of a whole network whose other
        parts do not fit (a ViT whose ``encoder.pos_embed`` has another shape), and loading its
        blocks alone would leave the rest as built without a word.

        Strip ``encoder.blocks.``, add ``blocks.``: the two share the tail ``blocks.``, so the
        file's ``encoder.`` stands for the model's root, and ``encoder.pos_embed`` for ``pos_embed``."""
        strip, add = self.strip.rstrip(".").split("."), self.add.rstrip(".").split(".")
        tail = 0
        while tail < min(len(strip), len(add)) - (not self.strip) and strip[-1 - tail] == add[-1 - tail]:
            tail += 1
        file_root = "".join(p + "." for p in strip[: len(strip) - tail]) if self.strip else ""
        model_root = "".join(p + "." for p in add[: len(add) - tail])
        for m in plan.unexpected:
            if m.checkpoint_key.startswith(file_root):
                name = model_root + m.checkpoint_key[len(file_root):]
                if name in model and not name.startswith(self.add):
                    return True
        return False


_PLACED = (Status.LOADED, Status.DROPPED_HEAD, Status.SKIPPED)
"""What a converted key may become: loaded, an old head replaced, a part the user skips."""


@dataclass(frozen=True, repr=False, eq=False)
class ConvertedBy(KeyRule):
    """In ``LoadPlan.converters``: the planned key's tensor is ``output`` of ``conversion`` (run
    once on the file's tensors when the plan is placed), then converted by ``then`` when the
    converted tensor itself needs a build option's conversion (``in_chans``, ``img_size``)."""

    conversion: Conversion
    output: str
    then: KeyRule | None = None

    def convert(self, tensor: Any, target_shape: tuple[int, ...]) -> Any:
        return tensor if self.then is None else self.then.convert(tensor, target_shape)

    def describe(self) -> str:
        return f"{self.output!r} of {self.conversion.name}"


def _converted_plan(layout: Layout, plan_with: Callable[..., LoadPlan | None], checkpoint: Mapping[str, Shape],
                    model: Mapping[str, Shape], strip: str = "") -> LoadPlan | None:
    """The plan through a converting layout (``Layout.convert``: timm's ``checkpoint_filter_fn``),
    or None when it does not apply or its result does not fit the model completely: every
    backbone tensor filled, every converted tensor placed (timm loads a filter's result strictly),
    no tensor filled twice. The mappings name the file's key where one tensor became one model
    tensor, else the converter's own name for it; every rule list starts with the converter.
    ``strip``: the prefix of the keys it reads (a wrapper, or one copy's place beside other keys),
    taken off before the converter reads them; the keys outside it are left to the other readings."""
    assert layout.convert is not None
    conversion = layout.convert({k[len(strip):]: v for k, v in checkpoint.items() if k.startswith(strip)}
                                if strip else checkpoint, model)
    if conversion is None or not conversion.shapes:
        return None
    if strip:
        conversion = _wrapped(conversion, strip)
    plan = plan_with(extra_before=layout.rules, subset=conversion.shapes)
    if plan is None or not plan.fits or plan.fused or any(m.status not in _PLACED for m in plan.mappings):
        return None
    feeds = Counter(src for srcs in conversion.sources.values() for src in srcs)
    named: dict[str, str] = {}  # converted key -> the key the plan shows
    for key in conversion.shapes:
        srcs = conversion.sources.get(key, ())
        named[key] = srcs[0] if len(srcs) == 1 and feeds[srcs[0]] == 1 else key
    if len(set(named.values())) < len(named):
        return None  # a converter's name that is also a file key shown for another tensor: not told apart
    loaded = {m.model_key for m in plan.loaded}
    if any(member in loaded and source in loaded for member, source in plan.tied.items()):
        return None  # two names of one tied tensor, each from the converter: not checked against each other
    made, joined = [], []
    mappings: list[KeyMapping] = []
    converters: dict[str, KeyRule] = {}
    for m in plan.mappings:
        key = m.checkpoint_key
        srcs = conversion.sources.get(key, ())
        mappings.append(replace(m, checkpoint_key=named[key], rules=(f"converted by {conversion.name}", *m.rules)))
        if m.status is Status.LOADED:
            converters[named[key]] = ConvertedBy(conversion, key, plan.converters.get(key))
        if not srcs:
            made.append(key)
        elif named[key] == key and srcs != (key,):
            joined.append(f"{key} from {' + '.join(srcs)}")
    used = set(feeds)
    mappings += [KeyMapping(k, None, Status.IGNORED, (f"dropped by {conversion.name}",), tuple(s))
                 for k, s in checkpoint.items() if k not in used]
    plan.mappings, plan.converters, plan.layout = mappings, converters, layout.name
    dropped = len(checkpoint) - len(used)
    plan.notes.append(
        f"keys read as the {layout.name} layout: {len(checkpoint)} file tensors converted by {conversion.name} "
        f"into {len(conversion.shapes)}, which fit the model completely ({len(conversion.same)} of them the file's "
        "tensor as it is, under its name or another)"
        + (f"; {dropped} dropped by it" if dropped else "")
        + (f"; made by it, not from the file: {', '.join(made[:4])}" + (" ..." if len(made) > 4 else "")
           if made else "")
        + (f"; {', '.join(joined[:4])}" + (f" (+{len(joined) - 4})" if len(joined) > 4 else "") if joined else "")
        + (f" ({layout.description})" if layout.description else ""))
    return plan


def _wrapped(conversion: Conversion, prefix: str) -> Conversion:
    """``conversion`` (made from the keys without ``prefix``) for the file's own keys: its sources
    named as in the file, and its converter given the file's tensors without the prefix."""
    inner = conversion.apply

    def apply(tensors: Mapping[str, Any]) -> Mapping[str, Any]:
        return inner({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})

    return Conversion(name=conversion.name, shapes=conversion.shapes,
                      sources={k: tuple(prefix + src for src in srcs) for k, srcs in conversion.sources.items()},
                      apply=apply, same=conversion.same)


_SCOPED_SHARE = 0.9
"""A reading that puts the checkpoint inside one sub-module of the model must load at least this
share of the checkpoint's elements: one block's worth inside a model is no match."""


def _candidates(checkpoint: Mapping[str, Shape], keys: CheckpointKeys, target: PlanTarget) -> Iterator[_Candidate]:
    """Foreign layouts that recognise the keys first, then every wrapper by how much it matches
    raw, then prefixes most keys share (a wrapper around keys that also need the family's rules).

    A wrapper that puts the checkpoint inside a sub-module (``add``) is offered only when the
    sub-module holds at least ``_SCOPED_SHARE`` of the checkpoint's elements: each model tensor
    is filled once, so a smaller one could never load that much (an exact bound, not a sample)."""
    for layout in layouts_matching(checkpoint, target.family) if target.family else ():
        if layout.rules or layout.convert is not None:  # one that only sets build options reads keys as they are
            yield _Candidate(1 << 62, layout=layout)
    wrapping = wrapping_prefixes(checkpoint) if target.family else []
    for prefix in wrapping:
        # a foreign layout saved from a wrapper (DDP's module., Lightning's model.): its names under the prefix
        inner = {k[len(prefix):]: v for k, v in checkpoint.items()}
        for layout in layouts_matching(inner, target.family):
            if layout.rules or layout.convert is not None:
                yield _Candidate(1 << 61, layout=layout, strip=prefix)
    leading = leading_prefixes(keys)
    for prefix in leading if target.family else ():
        # a foreign layout's copy under a prefix beside other keys (a plain copy, another wrapper's):
        # a reading of its own, so that two copies tie and are refused rather than one taken unseen
        if prefix in wrapping:
            continue
        inner = {k[len(prefix):]: v for k, v in checkpoint.items() if k.startswith(prefix)}
        for layout in layouts_matching(inner, target.family):
            if layout.rules or layout.convert is not None:
                yield _Candidate(1 << 60, layout=layout, strip=prefix)
    tried: set[tuple[str, str]] = set()
    for wrapper in wrapper_candidates(keys, target.shapes, scoped_share=_SCOPED_SHARE):
        tried.add((wrapper.strip, wrapper.add))
        yield _Candidate(wrapper.elements, strip=wrapper.strip, add=wrapper.add)
    for prefix in leading:
        if (prefix, "") not in tried:
            yield _Candidate(0, strip=prefix)


def _share_placed(checkpoint: Mapping[str, Shape], plan: LoadPlan) -> float:
    """The model's elements the plan loads, as a share of the checkpoint's (each model tensor
    is filled once, so a sub-module with fewer elements can never reach ``_SCOPED_SHARE``)."""
    total = sum(max(prod(s), 1) for s in checkpoint.values())
    loaded = sum(max(prod(m.model_shape or m.checkpoint_shape), 1) for m in plan.loaded)
    return loaded / total if total else 0.0


def _outside(target: PlanTarget, scope: str) -> list[str]:
    """Modules of the model outside ``scope`` (a found sub-module prefix): left as they are."""
    if not scope:
        return []
    return list(dict.fromkeys(k.rpartition(".")[0] or k for k in target.shapes if not k.startswith(scope)))


def _structural(plan_with: Callable[..., LoadPlan | None], extra_before: Sequence[KeyRule] = ()) -> LoadPlan | None:
    """The checkpoint (less what ``extra_before`` drops) paired with the model by order and
    tensor signature, or None when the pairing diverges or is ambiguous (the names-based plan's
    error then stands)."""
    try:
        plan = plan_with(extra_before=extra_before, structural=True)
    except IncompatibleCheckpointError:
        return None
    assert plan is not None  # None only for only_if_it_fits=True
    if plan.loaded:
        modules = {m.checkpoint_key.rpartition(".")[0]: (m.model_key or "").rpartition(".")[0] for m in plan.loaded}
        renamed = [f"{c or '(root)'} -> {t or '(root)'}" for c, t in modules.items() if c != t]
        plan.notes.append(
            f"names did not fit, so {len(modules)} modules were paired by order and tensor signature"
            + (f"; renamed: {', '.join(renamed[:6])}" + (f", ... (+{len(renamed) - 6})" if len(renamed) > 6 else "")
               if renamed else ""))
    return plan


def _structural_copy(plan_with: Callable[..., LoadPlan | None], keys: CheckpointKeys, target: PlanTarget,
                     rules: Sequence[KeyRule], use_ema: bool | None) -> LoadPlan | None:
    """The network paired by order and tensor signature (``_structural``), once for the whole
    checkpoint and once for the keys under each prefix that holds enough keys to fill the
    backbone; two copies found that way (lightly's ``backbone.`` beside ``backbone_momentum.``,
    its ``student_backbone.`` beside ``teacher_backbone.``) are two readings, settled or refused
    as named copies are (``_pick``), whatever the file's key order.

    Every prefix that could hold a copy is paired: a fitting copy fills each of the backbone's
    parameters from a key of its own, so a prefix with fewer keys than that cannot hold one (an
    exact bound). A prefix with as many keys as the one below it holds the same keys; the longer
    one names the copy."""
    whole = _structural(plan_with)
    need = _backbone_parameters(target)
    prefixes = [p for p, n in keys.under.items() if need <= n < len(keys.entries)]
    prefixes = [p for p in prefixes if not any(q != p and q.startswith(p) and keys.under[q] == keys.under[p]
                                               for q in prefixes)]
    copies: list[_Reading] = []
    for prefix in sorted(prefixes):
        escaped = prefix.replace(".", "[.]")
        plan = _structural(plan_with, [Drop(f"(?!{escaped}).*")])
        if plan is not None and plan.fits:
            copies.append(_Reading(prefix, plan, f'rules=["drop:(?!{escaped}).*"]'))
    renaming = [r for r in rules if type(r).rename is not KeyRule.rename]
    extra = tuple(h + "." for h in target.extra_heads if h)

    def body(plan: LoadPlan) -> dict[str, str]:  # the backbone's pairs: a second classifier pairs only when it can
        return {c: m for c, m in _body(plan).items() if not m.startswith(extra)} if extra else _body(plan)

    def renamed_by_user(plan: LoadPlan) -> bool:
        return any(r.rename(m.checkpoint_key) not in (None, m.checkpoint_key) for m in plan.loaded for r in renaming)

    if renaming and any(renamed_by_user(c.plan) for c in copies):
        # the user's own rules rename the copy they read (strip:backbone.): the others are not asked for
        copies = [c for c in copies if renamed_by_user(c.plan)]
        if whole is not None and not renamed_by_user(whole):
            whole = None
    if whole is not None and copies and len({next((c.prefix for c in copies if key.startswith(c.prefix)), "")
                                             for key in body(whole)}) > 1:
        whole = None  # the pairing ran from one copy into the next: a mixture is never meant when whole ones are there
    distinct: list[_Reading] = []
    for reading in copies:  # a prefix enclosing another copy's keys and its own is no copy of its own
        if not any(body(reading.plan) == body(r.plan) for r in distinct):
            distinct.append(reading)
    if whole is not None and whole.fits and not any(body(whole) == body(r.plan) for r in distinct):
        others = [r.prefix for r in distinct]
        distinct.insert(0, _Reading("", whole, f'rules=["drop:{_drop_pattern(others)}"]' if others else ""))
    if not distinct:
        return whole
    if len(distinct) == 1:
        only = distinct[0]
        if whole is not None and body(whole) == body(only.plan):
            return whole  # one copy, read from the whole file as it stands
        only.plan.notes.append(f"read the network under {only.prefix!r}"
                               + (", the copy the given rules rename" if renaming else "")
                               + "; the keys outside it are left unused")
        return only.plan
    return _pick(distinct, use_ema, None)


def _backbone_parameters(target: PlanTarget) -> int:
    """How many of the model's parameters a checkpoint that fits must fill, each from a key of
    its own: those outside the head (a replaced head is new) and the skipped parts; 1 when parts
    are skipped by pattern (no bound then)."""
    if target.skip:
        return 1
    heads = [h for h in (target.head, *target.extra_heads) if h]
    return max(1, sum(1 for p in target.parameters if not any(p == h or p.startswith(h + ".") for h in heads)))


def _refuse_ambiguous(ties: Sequence[_Reading], use_ema: bool | None, base: LoadPlan | None) -> None:
    prefixes = [r.prefix for r in ties if r.prefix]
    lines = []
    for r in ties:
        # the keys as they are are chosen by dropping the other copies, and so is a copy a layout
        # reads (its reading is no rule a user can write: the layout reads the copy left)
        others = [p for p in prefixes if p != r.prefix]
        line = r.rule_line if r.rule_line.startswith("rules=") else (
            f'rules=["drop:{_drop_pattern(others)}"]' if others else "rules=[...]")
        lines.append(f"  {_name(r)}: {r.plan.backbone_coverage:.1%} of the backbone; load it with {printable(line)}")
    if base is not None and base.duplicates:
        slot, first, second = base.duplicates[0]
        lines.append(f"  (as the keys stand, {len(base.duplicates)} tensors would be filled twice, e.g. {slot} from "
                     f"{first!r} and from {second!r})")
    convention = "" if use_ema is False else (
        " No copy is named as an EMA or teacher copy (ema., model_ema., teacher.), so no convention picks one.")
    raise AmbiguousCheckpointError(
        f"the checkpoint holds {len(ties)} copies of the network that fit the model equally well:\n"
        + "\n".join(lines)
        + "\nzooadapt will not guess which one you mean (a student or a teacher, a query or a key encoder, an online "
        f"or a target network).{convention} Choose one with its rules= line (zooadapt inspect CHECKPOINT --model "
        "NAME --rule strip:PREFIX previews it).")


def _diagnose(checkpoint: Mapping[str, Shape], target: PlanTarget, best: LoadPlan,
              other_architectures: ArchitectureFit | None) -> list[str]:
    hints: list[str] = []
    foreign: list[Layout] = [lay for lay in layouts_matching(checkpoint) if lay.family != target.family]
    for layout in foreign[:2]:
        hints.append(f"the keys are in the {layout.name} layout ({layout.description}), which loads into the "
                     f"{layout.family!r} family, not {target.family or 'this model'!r}")
    if other_architectures is not None:
        fits = [(name, share) for name, share in other_architectures(checkpoint) if share >= 0.9]
        if fits:
            name, share = max(fits, key=lambda f: f[1])  # the first of the best: the list comes best first
            alike = [n for n, s in fits if s == share and n != name]
            hints.append(f"this checkpoint fits {name} ({share:.0%} of its tensors); load it as {name!r}"
                         + (f" (it fits {', '.join(alike[:3])} equally)" if alike else ""))
    if not hints and best.backbone_coverage < 0.5 and _tops(checkpoint) != _tops(target.shapes):
        total = sum(max(prod(s), 1) for s in checkpoint.values())
        hints.append(
            f"only {best.backbone_coverage:.0%} of the backbone matched by name and shape ("
            f"{total:,} elements in the checkpoint); its keys begin {_tops(checkpoint)}, "
            f"the model's {_tops(target.shapes)}")
    return hints


def _tops(keys: Mapping[str, object]) -> str:
    tops = list(dict.fromkeys(k.split(".")[0] for k in keys))
    return ", ".join(repr(t + ".") for t in tops[:5]) + (", ..." if len(tops) > 5 else "")

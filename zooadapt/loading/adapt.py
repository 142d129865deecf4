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

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from math import prod

from ..contract.errors import AmbiguousCheckpointError, IncompatibleCheckpointError
from ..contract.family import Layout
from ..contract.rules import DEFAULT_RULES, AddPrefix, KeyRule, StripPrefix
from ..host.layouts import layouts_matching, registered_layouts
from .discovery import leading_prefixes, wrapper_candidates
from .plan import CheckpointOrder, LoadPlan, make_plan
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


_plans = PlanCache()
"""Plans that fit, remembered for the process (``zooadapt.plan_cache``)."""

ArchitectureFit = Callable[[Mapping[str, Shape]], "list[tuple[str, float]]"]
"""Given the checkpoint, other architectures of the family and the share of its tensors each
would load (diagnosis only)."""


def _score(plan: LoadPlan) -> tuple[bool, float, int]:
    return plan.fits, round(plan.backbone_coverage, 9), -len(plan.unexpected)


def adapt(
    checkpoint: Mapping[str, Shape],
    target: PlanTarget,
    *,
    rules: Sequence[KeyRule] = (),
    family_rules: Sequence[KeyRule] = (),
    order: CheckpointOrder = "auto",
    discover: bool = True,
    other_architectures: ArchitectureFit | None = None,
) -> LoadPlan:
    """The plan that fills ``target`` best from ``checkpoint`` (key -> shape, file order).

    ``rules`` are the user's and run before ``family_rules``. ``discover=False`` stops after
    step 1 (the plan a family's rules alone give). ``other_architectures`` is consulted only
    when nothing fits, to name an architecture the checkpoint does fit.

    A plan that fits is remembered for the process (``zooadapt.loading.plan_cache``, keyed by
    everything the plan is made from, the registered layouts included): planning the same
    checkpoint layout into the same model again hands out a copy of it.
    """
    layouts = registered_layouts() if discover and target.family else ()
    key = plan_key(checkpoint, (tuple(target.shapes.items()), tuple(target.parameters), target.head,
                                tuple(target.skip), target.family, order, discover, layouts), rules, family_rules)
    remembered = _plans.get(key)
    if remembered is not None:
        return remembered
    plan = _adapt(checkpoint, target, rules=rules, family_rules=family_rules, order=order, discover=discover,
                  other_architectures=other_architectures)
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
    other_architectures: ArchitectureFit | None,
) -> LoadPlan:
    def plan_with(extra_before: Sequence[KeyRule] = (), extra_after: Sequence[KeyRule] = (),
                  structural: bool = False, scope: str = "", only_if_it_fits: bool = False) -> LoadPlan | None:
        # a found prefix is stripped first: it was found on the raw keys, and DDP's default
        # 'module.' rule must not cut '_orig_mod.module.' in half
        return make_plan(checkpoint, target.shapes, parameters=target.parameters,
                         rules=[*extra_before, *rules, *DEFAULT_RULES, *family_rules, *extra_after],
                         default_rules=False, head=target.head, skip=[*target.skip, *_outside(target, scope)],
                         checkpoint_order=order, structural=structural, only_if_it_fits=only_if_it_fits)

    # the names as they are; when they cannot fit, the plan gives up early and is made in full
    # only if nothing else fits either
    base = plan_with(only_if_it_fits=discover and bool(checkpoint))
    if base is not None and (base.fits or not discover or not checkpoint):
        return base
    best, ties, best_votes = base, [base] if base is not None else [], 0
    for candidate in _candidates(checkpoint, target):
        if best is not None and best.fits and best is not base and candidate.votes < best_votes:
            break  # candidates come in order of how much they matched raw: no later one can tie
        plan = candidate.plan(plan_with, checkpoint)
        if plan is None:
            continue
        if best is None or _score(plan) > _score(best):
            best, ties, best_votes = plan, [plan], candidate.votes
        elif _score(plan) == _score(best) and not any(plan.assignments() == t.assignments() for t in ties):
            ties.append(plan)  # the same mapping reached by two prefixes is one answer, not two
    if len(ties) > 1 and best is not base and best is not None and (best.fits or best.backbone_coverage >= 0.5):
        _refuse_ambiguous(ties)
    if best is None or not best.fits:
        if base is None:
            base = plan_with()
            assert base is not None
        if best is None or len(ties) > 1 or _score(base) >= _score(best):
            best = base  # nothing better; several weak, equal guesses are no answer either
    if not best.fits:
        structural = _structural(plan_with)
        if structural is not None and _score(structural) > _score(best):
            best = structural
    if not best.fits:
        best.hints.extend(_diagnose(checkpoint, target, best, other_architectures))
    return best


@dataclass(frozen=True)
class _Candidate:
    """One way to read the checkpoint: a foreign layout's rules, or a wrapper prefix to strip
    from its keys and/or add to them; ``votes`` is how many elements it matched raw."""

    votes: int
    layout: Layout | None = None
    strip: str = ""
    add: str = ""

    def plan(self, plan_with: Callable[..., LoadPlan], checkpoint: Mapping[str, Shape]) -> LoadPlan | None:
        if self.layout is not None:
            plan = plan_with(extra_before=self.layout.rules)
            plan.notes.append(f"keys read as the {self.layout.name} layout "
                              f"({self.layout.description or self.layout.provider})")
            return plan
        before = [StripPrefix(self.strip, found=True)] if self.strip else []
        after = [AddPrefix(self.add, found=True)] if self.add else []
        # a checkpoint of a sub-module (my_net.backbone) says nothing about the rest of the model
        plan = plan_with(extra_before=before, extra_after=after, scope=self.add)
        if self.add and _share_placed(checkpoint, plan) < 0.9:
            return None  # a scoped plan must use the checkpoint: one block's worth inside a model is no match
        return plan if plan.loaded else None


def _candidates(checkpoint: Mapping[str, Shape], target: PlanTarget) -> Iterator[_Candidate]:
    """Foreign layouts that recognise the keys first, then wrappers by how much they match raw,
    then prefixes most keys share (a wrapper around keys that also need the family's rules)."""
    for layout in layouts_matching(checkpoint, target.family) if target.family else ():
        yield _Candidate(1 << 62, layout=layout)
    tried: set[tuple[str, str]] = set()
    for wrapper in wrapper_candidates(checkpoint, target.shapes):
        tried.add((wrapper.strip, wrapper.add))
        yield _Candidate(wrapper.elements, strip=wrapper.strip, add=wrapper.add)
    for prefix in leading_prefixes(checkpoint):  # only reached while nothing fits
        if (prefix, "") not in tried:
            yield _Candidate(0, strip=prefix)


def _share_placed(checkpoint: Mapping[str, Shape], plan: LoadPlan) -> float:
    """The share of the checkpoint's elements the plan puts somewhere (loaded or a dropped head)."""
    total = sum(max(prod(s), 1) for s in checkpoint.values())
    placed = sum(max(prod(m.checkpoint_shape), 1) for m in (*plan.loaded, *plan.dropped))
    return placed / total if total else 0.0


def _outside(target: PlanTarget, scope: str) -> list[str]:
    """Modules of the model outside ``scope`` (a found sub-module prefix): left as they are."""
    if not scope:
        return []
    return list(dict.fromkeys(k.rpartition(".")[0] or k for k in target.shapes if not k.startswith(scope)))


def _structural(plan_with: Callable[..., LoadPlan]) -> LoadPlan | None:
    """The whole checkpoint paired with the model by order and tensor signature, or None when
    the pairing diverges or is ambiguous (the names-based plan's error then stands)."""
    try:
        plan = plan_with(structural=True)
    except IncompatibleCheckpointError:
        return None
    if plan.loaded:
        modules = {m.checkpoint_key.rpartition(".")[0]: (m.model_key or "").rpartition(".")[0] for m in plan.loaded}
        renamed = [f"{c or '(root)'} -> {t or '(root)'}" for c, t in modules.items() if c != t]
        plan.notes.append(
            f"names did not fit, so {len(modules)} modules were paired by order and tensor signature"
            + (f"; renamed: {', '.join(renamed[:6])}" + (f", ... (+{len(renamed) - 6})" if len(renamed) > 6 else "")
               if renamed else ""))
    return plan


def _found_rules(plan: LoadPlan) -> str:
    found = [r for m in plan.loaded for r in m.rules if r.endswith("(found)")]
    return ", ".join(dict.fromkeys(found)) or "the family's rules"


def _refuse_ambiguous(ties: Sequence[LoadPlan]) -> None:
    options = [_found_rules(p) for p in ties]
    prefixes = [o.split("'")[1] for o in options if o.startswith("strip '")]
    example = f"rules=[zooadapt.rules.StripPrefix({prefixes[0]!r})]" if prefixes else "rules=[...]"
    raise AmbiguousCheckpointError(
        f"the checkpoint holds {len(ties)} copies that fit the model equally well "
        f"({ties[0].backbone_coverage:.1%} of the backbone each): " + "; ".join(options)
        + f". zooadapt will not guess which one you mean (a student or a teacher, a query or a key encoder, live or "
        f"EMA weights). Choose one with {example} (zooadapt inspect CHECKPOINT --model NAME --rule strip:PREFIX "
        "previews it).")


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
            name, share = max(fits, key=lambda f: f[1])
            hints.append(f"this checkpoint fits {name}: {share:.0%} of its tensors load there; load it as {name!r}")
    if not hints and best.backbone_coverage < 0.5:
        total = sum(max(prod(s), 1) for s in checkpoint.values())
        hints.append(
            f"only {best.backbone_coverage:.0%} of the backbone matched by name and shape ("
            f"{total:,} elements in the checkpoint); its keys begin {_tops(checkpoint)}, "
            f"the model's {_tops(target.shapes)}")
    return hints


def _tops(keys: Mapping[str, object]) -> str:
    tops = list(dict.fromkeys(k.split(".")[0] for k in keys))
    return ", ".join(repr(t + ".") for t in tops[:5]) + (", ..." if len(tops) > 5 else "")

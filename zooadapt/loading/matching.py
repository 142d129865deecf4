"""Which architectures a checkpoint fits: every signature in the index, bounded exactly, then planned.

Two steps, both over names and shapes only (nothing here imports torch):

1. **Bounds, for every architecture.** A checkpoint tensor can only load into a tensor of the
   same shape, so matching the checkpoint's multiset of shapes against an architecture's gives,
   without looking at a single name, an upper bound on the share of the checkpoint's tensors it
   can take (a checkpoint under ``module.`` or in transformers' names has the same multiset).
   The head may have another class count, so the architecture's head counts as taking any
   tensor, up to twice as many as it has, plus two (a head of another form). The architecture
   can fit — every tensor of its backbone filled — only if its backbone's multiset is contained
   in the checkpoint's, and fit *completely* only if, besides, the bound on the share is 1.
   Shapes are compared with their size-1 dimensions removed (a family's ``Reshape`` rule turns a
   1x1 convolution into a ``Linear``), and a foreign layout that fuses tensors (transformers'
   ViT ``query``/``key``/``value``) is applied to the multiset first, for its family; the
   tensors its ``Drop`` rules set aside (a whole CLIPModel's text tower) count as taken, as its
   plan counts them placed.
2. **Plans.** The real planner (``adapt``) runs against the stored signature of every
   architecture whose bound says it may fit completely (for the "this checkpoint fits …"
   diagnosis: may fit at all), first by names — the planner's first step, milliseconds.
   Discovery (wrapper prefixes, foreign layouts, pairing by order: up to seconds for a large
   model that does not fit) runs only while no architecture fits completely, in the order of the
   bounds, for those whose names place less than half of the file, or fit beside tensors they
   leave unused: a named load reads such a file through a layout that may place those too
   (mmpretrain's ``head.fc`` beside the ``backbone.`` its family strips), and once a reading
   fits, discovery only tries the readings of the unused keys (no pairing by order). When nothing fits
   completely, the other candidates are planned in the order of their bounds until ``limit``
   answers are at least as good as the next bound could be (at most ``_MOST_NEAR_MISSES``
   plans): the file's nearest architectures, for a refusal that lists them.
   Architectures with the very same signature are planned once (per family: rules differ).
   Each is planned as ``load(NAME, weights=FILE)`` builds it for this file: where the file's
   layout asks the architecture for build options (``layout_build``: an MAE file's
   ``global_pool='avg'`` gives timm's ViT ``fc_norm`` in place of its final ``norm``), into the
   signature of that build (``signatures.as_built``), not the default one. Such options are
   hyperparameters no tensor's shape carries (pooling, eps, padding), so the bounds of the
   default build stand for them; names whose builds then differ are planned apart.

An answer ranks by whether the checkpoint fits completely (every tensor placed, every backbone
tensor filled), then by the share of the checkpoint's tensors placed (loaded, or a head of
another class count replaced), whether the plan fits, whether it matched by name rather than
by order, the share loaded as is, fewer renames (an architecture's own names beat a family's
rules that read them), and how much of the architecture's backbone is filled.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

from ..contract.errors import ZooadaptError
from ..contract.family import Layout
from ..contract.rules import Drop, Fuse, KeyRule, StripPrefix, fused_parts
from .adapt import PlanTarget, adapt
from .plan import CheckpointOrder, LoadPlan
from .signature_index import SignatureIndex, get_index
from .signatures import Signature

__all__ = ["Match", "match_checkpoint"]

Shape = tuple[int, ...]
_TRACKED = "num_batches_tracked"
_MOST_NEAR_MISSES = 40
"""When nothing fits completely, at most this many other candidates are planned (the first
``limit`` of them with discovery): a file of a large family can have hundreds of near misses."""


@dataclass(frozen=True)
class Match:
    """One architecture a checkpoint was planned into, and how well it fits."""

    name: str
    """The name to load it by: ``zooadapt.load(name, weights=...)``."""
    family: str
    share: float
    """The share of the checkpoint's tensors it takes (loaded, or a head of another class count replaced)."""
    fits: bool
    """Every tensor of the architecture's backbone is filled from the checkpoint."""
    coverage: float
    """The share of the architecture's backbone parameter elements filled."""
    element_share: float
    """The share of the checkpoint's elements it takes."""
    loaded: float
    """The share of the checkpoint's tensors it loads as they are (a replaced head is taken, not loaded)."""
    renamed: float
    """The share of the checkpoint's tensors it loads under another name (a family's renames, a
    wrapper stripped): between two architectures that take a file alike, its own names decide."""
    by_order: bool = False
    """Its names differ from the checkpoint's: modules were paired by order and tensor signature
    (a sibling architecture with the same tensors under other names ranks below one that matches by name)."""
    same_signature: tuple[str, ...] = ()
    """Other names with exactly the same tensors, which no file can tell apart: any of them loads it."""
    spoken_for: bool = False
    """A layout that recognises the file's keys speaks for this architecture's build (its zoo's
    network is built as this name: transformers' MobileNet v1 as timm's ``mobilenetv1_*``): between
    two architectures that take the file alike, the one its layout reads it into."""
    set_aside: int = 0
    """How many of the checkpoint's tensors it takes by setting them aside, as no part of this
    network (a whole CLIPModel's text tower, dropped by the layout that reads its image tower)."""

    @property
    def complete(self) -> bool:
        """The checkpoint fits completely: nothing of it left over, nothing of the backbone missing."""
        return self.fits and self.share >= 1.0

    def rank(self) -> tuple[bool, float, bool, bool, bool, float, float, float]:
        return (self.complete, round(self.share, 9), self.fits, not self.by_order, self.spoken_for,
                round(self.loaded, 9), -round(self.renamed, 9), round(self.coverage, 9))

    def __str__(self) -> str:
        state = "fits completely" if self.complete else "fits" if self.fits else (
            f"fills {self.coverage:.0%} of its backbone")
        how = ", paired by order" if self.by_order else ""
        also = f" (same tensors: {', '.join(self.same_signature)})" if self.same_signature else ""
        aside = f" ({self.set_aside} set aside as no part of it)" if self.set_aside else ""
        return f"{self.name} [{self.family}]: {self.share:.0%} of the tensors{aside}, {state}{how}{also}"


# -- step 1: bounds ---------------------------------------------------------------------------------


def _canon(shape: Shape) -> Shape:
    return tuple(d for d in shape if d != 1)


@dataclass(frozen=True)
class _Counts:
    """What bounds need of one signature, worked out once per index (shapes by number)."""

    body: dict[int, int]
    """How many tensors outside the head have each canonical shape."""
    required: tuple[tuple[int, int], ...]
    """The same without BatchNorm's ``num_batches_tracked`` (zero-filled when a file lacks it):
    what a plan that fits must fill."""
    size: int
    head: int


@dataclass(frozen=True)
class _Prepared:
    index: SignatureIndex
    shape_ids: dict[Shape, int]
    counts: dict[str, _Counts]
    group: dict[str, int]
    """Name -> the number of its signature (names with the very same tensors share one)."""


_prepared: _Prepared | None = None
_prepared_lock = threading.Lock()


def _prepare(index: SignatureIndex) -> _Prepared:
    global _prepared
    with _prepared_lock:
        if _prepared is not None and _prepared.index is index:
            return _prepared
        ids: dict[Shape, int] = {}
        canon_of: dict[Shape, int] = {}
        counts: dict[str, _Counts] = {}
        numbers: dict[Any, int] = {}
        group = {name: numbers.setdefault(sig.same_as, len(numbers)) for name, sig in index.signatures.items()}
        for name, sig in index.signatures.items():
            body: dict[int, int] = {}
            tracked: dict[int, int] = {}
            head = 0
            for key, shape in zip(sig.keys, sig.shapes):
                if sig.under_head(key):
                    head += 1
                    continue
                number = canon_of.get(shape)
                if number is None:
                    number = canon_of[shape] = ids.setdefault(_canon(shape), len(ids))
                body[number] = body.get(number, 0) + 1
                if key.endswith(_TRACKED):
                    tracked[number] = tracked.get(number, 0) + 1
            required = tuple((k, c - tracked.get(k, 0)) for k, c in body.items() if c > tracked.get(k, 0))
            counts[name] = _Counts(body, required, sum(body.values()), head)
        _prepared = _Prepared(index, ids, counts, group)
        return _prepared


@dataclass(frozen=True)
class _LayoutView:
    """The checkpoint as one recognising layout's rules make it, for the bounds of its family:
    ``whole`` with its ``Fuse`` rules applied (tensors, each with how many file tensors it stands
    for), ``kept`` the same without the tensors its ``Drop`` rules set aside (a whole CLIPModel's
    text tower), and ``dropped`` how many those are. A plan through the layout counts a dropped
    tensor as placed, so the share's bound counts it so; whether the backbone can fit is judged
    on ``whole``, since a rule before the drop may still place such a tensor."""

    whole: list[tuple[Shape, int]]
    kept: list[tuple[Shape, int]]
    dropped: int


def _layout_view(checkpoint: Mapping[str, Shape], layout: Layout) -> _LayoutView | None:
    """``checkpoint`` as ``layout``'s rules make it (``_LayoutView``); None when its rules fuse
    nothing of this checkpoint and drop nothing."""
    fuses = [r for r in layout.rules if isinstance(r, Fuse)]
    drops = [r for r in layout.rules if isinstance(r, Drop)]
    consumed: set[str] = set()
    fused: list[tuple[Shape, int]] = []
    for rule, parts in (fused_parts(checkpoint, fuses, leave_incomplete=True) or {}).values() if fuses else ():
        shape = rule.fuse_shape([checkpoint[k] for k in parts])
        if shape is not None:
            consumed.update(parts)
            fused.append((shape, len(parts)))
    dropped = {k for k in checkpoint if k not in consumed and any(r.drops(k) for r in drops)} if drops else set()
    if not consumed and not dropped:
        return None
    whole = [(s, 1) for k, s in checkpoint.items() if k not in consumed] + fused
    kept = [(s, 1) for k, s in checkpoint.items() if k not in consumed and k not in dropped] + fused
    return _LayoutView(whole, kept, len(dropped))


def _view(items: Sequence[tuple[Shape, int]], ids: Mapping[Shape, int]) -> dict[int, list[int]]:
    """Shape number -> the weights of the checkpoint's tensors of that shape, largest first (a
    shape no architecture has cannot be placed outside a head, and is left out)."""
    out: dict[int, list[int]] = defaultdict(list)
    for shape, weight in items:
        number = ids.get(_canon(shape))
        if number is not None:
            out[number].append(weight)
    for weights in out.values():
        weights.sort(reverse=True)
    return dict(out)


@dataclass(frozen=True)
class _Bound:
    """The best one architecture could do with this checkpoint, from shapes alone."""

    complete: bool
    share: float
    fits: bool
    closeness: float
    """Tensors of equal shape over tensors in either (1: the same multiset): orders the rest."""

    def key(self) -> tuple[bool, float, bool, float]:
        return self.complete, self.share, self.fits, self.closeness


def _bound(view: dict[int, list[int]], counts: _Counts, n: int, dropped: int = 0,
           whole: dict[int, list[int]] | None = None) -> _Bound:
    """The bound from ``view``; ``dropped`` file tensors beside it count as taken (a layout's
    ``Drop`` rules set them aside), and ``whole`` (default ``view``) is what the backbone must
    fit in."""
    taken = 0
    for number, weights in view.items():
        slots = counts.body.get(number)
        if slots:
            taken += min(slots, len(weights)) if weights[0] == 1 else sum(weights[:slots])
    share = min(n, taken + dropped + 2 * counts.head + 2) / n
    fit_in = view if whole is None else whole
    can_fit = all(len(fit_in.get(number, ())) >= c for number, c in counts.required)
    return _Bound(can_fit and share >= 1.0, share, can_fit, taken / max(n - dropped + counts.size - taken, 1))


# -- step 2: plans ----------------------------------------------------------------------------------


def _placed(plan: LoadPlan, checkpoint: Mapping[str, Shape]) -> tuple[float, float, float, float, bool, int]:
    """The shares of the checkpoint's tensors and elements the plan places, of its tensors it
    loads and of those it loads under another name (a fused tensor counts each of its parts, a
    converted one each file tensor its layout's conversion made it from, and a tensor the
    conversion made from nothing none); whether it paired modules by order; how many file tensors
    its rules or conversion set aside (placed, as no part of this network). Each file tensor
    counts once, however many planned tensors it feeds."""
    from .adapt import ConvertedBy
    from .plan import Status

    conversions = list({id(c.conversion): c.conversion for c in plan.converters.values()
                        if isinstance(c, ConvertedBy)}.values())

    def sources(m: Any) -> tuple[str, ...]:
        converted = plan.converters.get(m.checkpoint_key)
        if isinstance(converted, ConvertedBy):
            return converted.conversion.sources.get(converted.output, ())
        if m.checkpoint_key in plan.fused:
            return plan.fused[m.checkpoint_key][0]
        if m.checkpoint_key in checkpoint:
            return (m.checkpoint_key,)
        # a converted tensor that is not loaded (an old head replaced): its conversion's sources
        return next((c.sources[m.checkpoint_key] for c in conversions if m.checkpoint_key in c.sources), ())

    placed: set[str] = set()
    loaded: set[str] = set()
    renamed: set[str] = set()
    aside: set[str] = set()
    by_order = False
    for m in plan.mappings:
        if m.status in (Status.LOADED, Status.DROPPED_HEAD, Status.IGNORED):
            parts = [p for p in sources(m) if p in checkpoint]
            placed.update(parts)
            if m.status is Status.IGNORED:
                aside.update(parts)
            if m.status is Status.LOADED:
                loaded.update(parts)
                converted = isinstance(plan.converters.get(m.checkpoint_key), ConvertedBy)
                if m.renamed or (converted and any(p != m.model_key for p in parts)):
                    renamed.update(parts)
            by_order = by_order or any(r.startswith("positional") for r in m.rules)
    total = sum(max(prod(s), 1) for s in checkpoint.values())
    elements = sum(max(prod(checkpoint[p]), 1) for p in placed)
    n = max(len(checkpoint), 1)
    return len(placed) / n, elements / max(total, 1), len(loaded) / n, len(renamed) / n, by_order, len(aside)


def _found_prefixes(plan: LoadPlan) -> list[KeyRule]:
    """The wrapper prefixes discovery stripped (``strip 'model.' (found)``), as rules to try on
    the file's other candidates before searching again."""
    out: list[KeyRule] = []
    for described in dict.fromkeys(r for m in plan.loaded for r in m.rules if r.endswith("(found)")):
        if described.startswith("strip '"):
            rule = StripPrefix(described[len("strip '"):].rsplit("' (found)", 1)[0], found=True)
            if rule.describe() == described:
                out.append(rule)
    return out


def _layouts_asking() -> dict[str, list[Layout]]:
    """Family -> its registered layouts that declare builder options (not module settings, which
    change no tensor) for some architecture: the only ones whose build can differ from the
    signature's. Whether one applies to a file and an architecture is ``layout_build``'s to say."""
    from ..host.layouts import registered_layouts
    from .module_settings import is_module_setting

    out: dict[str, list[Layout]] = defaultdict(list)
    for layout in registered_layouts():
        if any(not is_module_setting(o) for options in layout.build_options.values() for o in options):
            out[layout.family].append(layout)
    return dict(out)


def _as_built(sig: Signature, checkpoint: Mapping[str, Shape], registry: Any,
              asks: Mapping[str, Sequence[Layout]]) -> Signature | None:
    """``sig``, or the signature of the build ``load(sig.name, weights=FILE)`` makes for this file
    when its layout asks for builder options (``layout_build``, as the named load decides it; an
    MAE file's ``global_pool='avg'`` builds ``fc_norm`` where the default build has ``norm``);
    None when that build fails or the layouts conflict, as the named load would."""
    layouts = asks.get(sig.family)
    if not layouts:
        return sig
    from .layout_build import layout_build
    from .module_settings import is_module_setting
    from .signatures import as_built

    try:
        entry = registry.entry(sig.name)
        if not any(not is_module_setting(o) for lay in layouts for o in lay.options_for(entry.arch)):
            return sig
        decided = layout_build(checkpoint, registry.family(sig.family), entry.arch, {})
        options = {k: v for k, v in (decided.options if decided else {}).items()
                   if not is_module_setting(k) and (k not in entry.build_kwargs or entry.build_kwargs[k] != v)}
        return as_built(sig, options) if options else sig
    except Exception:  # noqa: BLE001  (the build the file asks for fails: this name cannot load it)
        return None


def _layouts_reading(checkpoint: Mapping[str, Shape]) -> tuple[Mapping[str, Shape], list[Layout]]:
    """The renaming layouts that recognise the file's keys, with the keys they read: as they are,
    or, when no layout recognises those, under the first wrapper prefix (DDP's ``module.``,
    Lightning's ``model.``) under which one does, that prefix taken off: a transformers file saved
    from a wrapper is bounded as its layout reads it, as the named load plans it."""
    from ..host.layouts import layouts_matching
    from .discovery import wrapping_prefixes

    found = layouts_matching(checkpoint)
    for prefix in wrapping_prefixes(checkpoint) if not found else ():
        inner = {k[len(prefix):]: s for k, s in checkpoint.items() if k.startswith(prefix)}
        found = layouts_matching(inner)
        if found:
            return inner, found
    return checkpoint, found


def _recognising(checkpoint: Mapping[str, Shape]) -> list[Layout]:
    """The registered layouts (renaming or converting) that recognise the file's keys, as a named
    load's ``layout_build`` finds them (under a wrapper prefix when none does as they are), and
    that speak for some build (they name their zoo or declare build options)."""
    from ..host.layouts import registered_layouts
    from .discovery import wrapping_prefixes

    candidates = [lay for lay in registered_layouts() if lay.zoo or lay.build_options]
    found = [lay for lay in candidates if lay.matches(checkpoint)]
    for prefix in wrapping_prefixes(checkpoint) if candidates and not found else ():
        inner = {k[len(prefix):]: None for k in checkpoint}
        found = [lay for lay in candidates if lay.matches(inner)]
        if found:
            break
    return found


def _spoken_for(sig: Signature, recognising: Sequence[Layout], registry: Any) -> bool:
    """Whether a layout that recognises the file speaks for ``sig``'s build (``layout_build``'s test)."""
    from .layout_build import _decides

    layouts = [lay for lay in recognising if lay.family == sig.family]
    if not layouts:
        return False
    try:
        arch = registry.entry(sig.name).arch
    except Exception:  # noqa: BLE001  (a name the registry cannot build: no layout speaks for it)
        return False
    return any(_decides(lay, arch) for lay in layouts)


def _preference(sig: Signature, registered: Collection[str]) -> tuple[int, int, str]:
    """Among names with one signature, the one to show first: a registered name, then the shortest."""
    return (0 if sig.name in registered else 1), len(sig.name), sig.name


def match_checkpoint(
    checkpoint: Mapping[str, Shape],
    *,
    limit: int = 5,
    min_share: float = 0.5,
    fitting_only: bool = False,
    exclude: Collection[str] = (),
    rules: Sequence[KeyRule] = (),
    order: CheckpointOrder = "auto",
    index: SignatureIndex | None = None,
    planned: Callable[[str], Any] | None = None,
) -> list[Match]:
    """The architectures ``checkpoint`` (key -> shape) fits best, best first, at most ``limit``.

    Every architecture whose bound says it may fit completely is planned, so every complete fit
    is found. With ``fitting_only``, the answers are instead the architectures whose plan fits
    and places at least ``min_share`` of the checkpoint: every one whose bound allows that is
    planned (the "this checkpoint fits …" diagnosis). Otherwise, when nothing fits completely,
    the other candidates are planned in the order of their bounds until ``limit`` answers that
    place at least ``min_share`` are as good as the next bound allows: the file's nearest
    architectures, for a refusal that lists them.

    ``exclude``: names not to answer, nor any name with the same signature as one of them.
    ``rules`` are the user's. ``planned``, when given, is called with each name planned (tests).
    """
    from ..host.registry import get_registry

    if not checkpoint:
        return []
    prepared = _prepare(index if index is not None else get_index())
    signatures = prepared.index.signatures
    n = len(checkpoint)
    registry = get_registry()
    raw = _view([(s, 1) for s in checkpoint.values()], prepared.shape_ids)
    layout_views: dict[str, list[tuple[dict[int, list[int]], int, dict[int, list[int]]]]] = defaultdict(list)
    inner, matching = _layouts_reading(checkpoint)
    for layout in matching:
        seen = _layout_view(inner, layout)
        if seen is not None:
            whole = _view(seen.whole, prepared.shape_ids)
            kept = _view(seen.kept, prepared.shape_ids) if seen.dropped else whole
            layout_views[layout.family].append((kept, seen.dropped, whole))
    excluded = {prepared.group[e] for e in exclude if e in signatures}

    groups: dict[int, list[Signature]] = defaultdict(list)
    bounds: dict[int, _Bound] = {}
    for name, sig in signatures.items():
        number = prepared.group[name]
        if number in excluded:
            continue
        extra = layout_views.get(sig.family)
        bound = _bound(raw, prepared.counts[name], n)
        if extra:
            bound = max((bound, *(_bound(kept, prepared.counts[name], n, dropped, whole)
                                  for kept, dropped, whole in extra)), key=_Bound.key)
        if bound.share < min_share:
            continue
        groups[number].append(sig)
        held = bounds.get(number)
        bounds[number] = bound if held is None or bound.key() > held.key() else held
    ordered = sorted(bounds, key=lambda g: bounds[g].key(), reverse=True)

    learned: list[KeyRule] = []  # a wrapper prefix discovery found in this file, tried on the others first
    asks = _layouts_asking()
    recognising = _recognising(checkpoint)
    built_as: dict[str, Signature | None] = {}

    def built(sig: Signature) -> Signature | None:
        if sig.name not in built_as:
            built_as[sig.name] = _as_built(sig, checkpoint, registry, asks)
        return built_as[sig.name]

    def plan(group: int, discover: bool) -> Match | None:
        """The group's answer: planned with the family of its preferred name, and with each other
        family among its names while the answer is not complete (their rules and layouts differ)."""
        # each name as load builds it for this file (a layout's build options may change its tensors' names)
        members = [b for b in (built(s) for s in sorted(groups[group], key=lambda s: _preference(s, registry.models)))
                   if b is not None]
        best: Match | None = None
        for family_name, same_as in dict.fromkeys((s.family, s.same_as) for s in members):
            sig = next(s for s in members if s.family == family_name and s.same_as == same_as)
            if planned is not None:
                planned(sig.name)
            answer = _plan_one(sig, checkpoint, rules, order, registry, discover,
                               tuple(s.name for s in members if s is not sig and s.same_as == same_as), learned,
                               _spoken_for(sig, recognising, registry))
            if answer is not None and (best is None or answer.rank() > best.rank()):
                best = answer
            if best is not None and best.complete:
                break
        return best

    # every architecture that may fit completely (or, for the diagnosis, at all) is planned by its
    # names; discovery only while none fits by name, in order of the bounds, until one does
    certain = [g for g in ordered if bounds[g].complete or (fitting_only and bounds[g].fits)]
    found: dict[int, Match | None] = {g: plan(g, discover=False) for g in certain}

    def good(answer: Match | None) -> bool:
        return answer is not None and answer.share >= min_share and (answer.fits or not fitting_only)

    def done() -> bool:
        return any(good(a) and (a.fits if fitting_only else a.complete) and not a.by_order
                   for a in found.values() if a is not None)

    for group in certain:
        if done():
            break
        named = found[group]
        if named is None or named.share < 0.5 or (named.fits and not named.complete):
            again = plan(group, discover=True)
            if again is not None and (named is None or again.rank() > named.rank()):
                found[group] = again
    answers = [a for a in found.values() if a is not None and good(a)]
    if not fitting_only and not any(a.complete for a in answers):
        tried = 0
        for group in ordered:
            if group in found:
                continue
            bound = bounds[group]
            if len(answers) >= limit:
                answers.sort(key=Match.rank, reverse=True)
                if answers[limit - 1].rank()[:3] >= (bound.complete, round(bound.share, 9), bound.fits):
                    break  # no architecture left could rank among the answers
            if tried >= _MOST_NEAR_MISSES:
                break
            tried += 1
            answer = plan(group, discover=tried <= limit)
            if answer is not None and answer.share >= min_share:
                answers.append(answer)
    answers.sort(key=Match.rank, reverse=True)
    if answers and answers[0].complete and not fitting_only:
        answers = [a for a in answers if a.complete]  # the file's architecture is known: no near misses
    return answers[:limit]


def _plan_one(sig: Signature, checkpoint: Mapping[str, Shape], rules: Sequence[KeyRule], order: CheckpointOrder,
              registry: Any, discover: bool, same: tuple[str, ...], learned: list[KeyRule],
              spoken_for: bool = False) -> Match | None:
    """One architecture's answer. Its names are tried first (the planner's first step, a few
    milliseconds), then with the wrapper prefix discovery found for another architecture of this
    file (``learned``); the planner's discovery itself — wrappers, foreign layouts, pairing by
    order, up to seconds for a large model that does not fit — runs only when ``discover`` and
    neither places half of the checkpoint: a file whose names read is judged by them. When the
    names fit but leave tensors unused, discovery (then cheap: only the unused keys' readings)
    may place them as the named load does (a layout's head), and wins if it places more."""
    target = PlanTarget(sig.state_shapes, sig.parameters, head=sig.head, family=sig.family)
    family_rules = registry.family(sig.family).key_rules

    def plan_by(extra: Sequence[KeyRule], find: bool) -> tuple[LoadPlan, tuple[float, float, float, float, bool, int]]:
        made = adapt(checkpoint, target, rules=(*extra, *rules), family_rules=family_rules, order=order,
                     discover=find)
        return made, _placed(made, checkpoint)

    try:
        made, placed = plan_by((), False)
        if learned and placed[0] < 0.5:
            made, placed = max((made, placed), plan_by(learned, False), key=lambda p: p[1][0])
        searched = discover and placed[0] < 0.5
        if searched:
            made, placed = plan_by((), True)
            if placed[0] >= 0.5 and not learned:
                learned.extend(_found_prefixes(made))
    except ZooadaptError:
        return None  # an ambiguous or unreadable mapping: no answer from this architecture
    if discover and not searched and made.fits and placed[0] < 1.0:
        # the names fit beside tensors they leave unused: the reading a named load picks may place
        # those too (a layout's head, as mmpretrain's head.fc), and it is cheap once a reading fits
        try:
            found, found_placed = plan_by((), True)
        except ZooadaptError:
            pass  # two readings alike (load names them both): the names' answer stands
        else:
            if found.fits and found_placed[0] > placed[0]:
                made, placed = found, found_placed
    share, element_share, loaded, renamed, by_order, aside = placed
    return Match(sig.name, sig.family, share, made.fits, made.backbone_coverage, element_share, loaded, renamed,
                 by_order, same, spoken_for, aside)

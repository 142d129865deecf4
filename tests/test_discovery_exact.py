"""Exact discovery made cheap (issue 24's cost target): the fast paths answer what their
definitions say, for every input of the key grammar, not just the cases the planner meets.

* ``CheckpointKeys`` works each key's prefixes out once (shared by the keys of one module) and
  counts keys under every prefix; each count is checked against a direct scan of the keys.
* ``keys_naming_the_model`` names keys by the rules alone, a tenth of a plan's cost: it must hold
  every key a plan with the same rules loads, fills twice or finds of another shape.
* The planner's bound (``_StripBound``) skips a wrapper prefix only when the reading under it
  cannot fit or is the plain reading again: every prefix it skips is planned here.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from zooadapt.contract.errors import IncompatibleCheckpointError
from zooadapt.contract.rules import DEFAULT_RULES, AddPrefix, Drop, Fuse, KeyRule, Positional, Rename, StripPrefix
from zooadapt.loading.adapt import PlanTarget, _StripBound
from zooadapt.loading.discovery import _DEPTH, CheckpointKeys, leading_prefixes, wrapper_candidates
from zooadapt.loading.plan import Status, keys_naming_the_model, make_plan

_PART = st.sampled_from(["a", "b", "model", "module", "0", "1", "12", "layer1", "conv", "bn", "weight", "bias", ""])
_KEY = st.lists(_PART, min_size=1, max_size=9).map(".".join)
_SHAPE = st.lists(st.integers(1, 3), max_size=2).map(tuple)


def dotted_prefixes(key: str) -> list[str]:
    """Every prefix of ``key`` that ends at a dot, shortest first (the definition, by scanning)."""
    return [key[: i + 1] for i, c in enumerate(key) if c == "."]


@settings(max_examples=120, deadline=None)
@given(checkpoint=st.dictionaries(_KEY, _SHAPE, max_size=30), others=st.lists(_KEY, max_size=5))
def test_prefix_counts_and_wrappers_match_a_scan_of_the_keys(checkpoint, others):
    keys = CheckpointKeys(checkpoint)
    for key, shape, size, wrappers in keys.entries:
        every = dotted_prefixes(key)
        assert keys.prefixes[key] == every[: _DEPTH + 1]
        # a wrapper keeps at least two components after it and spans at most _DEPTH
        assert wrappers == [p for p in every[:_DEPTH] if key[len(p):].count(".") >= 1]
        assert shape == tuple(checkpoint[key]) and size == max(1, _product(shape))
    asked = {p for key in [*checkpoint, *others] for p in dotted_prefixes(key)[: _DEPTH + 1]}
    for prefix in asked:
        assert keys.under[prefix] == sum(k.startswith(prefix) for k in checkpoint)
        subset = [*list(checkpoint)[::2], *others]
        assert keys.count_under(subset)[prefix] == sum(k.startswith(prefix) for k in subset)
    assert set(keys.under) <= asked
    shared = leading_prefixes(keys)
    for prefix in {p for key in checkpoint for p in dotted_prefixes(key)[:3] if key[len(p):].count(".") >= 1}:
        holding = sum(1 for key, *_ in keys.entries if prefix in dotted_prefixes(key)[:3]
                      and key[len(prefix):].count(".") >= 1)
        assert (prefix in shared) == (holding >= 0.25 * len(checkpoint))


@settings(max_examples=100, deadline=None)
@given(model=st.dictionaries(_KEY, _SHAPE, max_size=20), extra=st.dictionaries(_KEY, _SHAPE, max_size=8),
       wrapper=st.sampled_from(["", "model.", "module.", "a.b."]))
def test_wrapper_votes_count_every_key_that_lands_by_shape(model, extra, wrapper):
    """A strip-only candidate's votes are the elements of the keys under it whose rest names a
    model key of the same shape (two components left at least), whatever else is in the file."""
    checkpoint = {**{wrapper + k: s for k, s in model.items()}, **extra}
    found = {(w.strip, w.add): w.elements for w in wrapper_candidates(checkpoint, model)}
    for strip in {p for key in checkpoint for p in dotted_prefixes(key)[:_DEPTH]}:
        expected = sum(max(1, _product(s)) for k, s in checkpoint.items() if k.startswith(strip)
                       and k[len(strip):].count(".") >= 1 and tuple(model.get(k[len(strip):], (-1,))) == tuple(s))
        assert found.get((strip, ""), 0) == expected


def _wrappers(key: str) -> list[str]:
    return [p for p in dotted_prefixes(key)[:_DEPTH] if key[len(p):].count(".") >= 1]


@settings(max_examples=100, deadline=None)
@given(model=st.dictionaries(_KEY, _SHAPE, max_size=20), extra=st.dictionaries(_KEY, _SHAPE, max_size=8),
       wrapper=st.sampled_from(["", "model.", "a.b."]), inner=st.sampled_from(["", "a.", "model.", "b.0."]))
def test_scoped_votes_count_every_key_that_lands_inside_a_sub_module(model, extra, wrapper, inner):
    """With every sub-module roomy enough (``scoped_share=0``), a (strip, add) pair's votes are
    the elements of the keys under ``strip`` whose rest, put under ``add``, names a model key
    of the same shape: the checkpoint of a sub-module (``inner``) saved under a wrapper."""
    checkpoint = {**{wrapper + k[len(inner):]: s for k, s in model.items() if k.startswith(inner)}, **extra}
    found = {(w.strip, w.add): w.elements for w in wrapper_candidates(checkpoint, model, scoped_share=0.0)}
    adds = {p for key in model for p in _wrappers(key)}
    strips = {""} | {p for key in checkpoint for p in _wrappers(key)}
    for strip in strips:
        for add in adds - {strip}:
            expected = sum(max(1, _product(s)) for k, s in checkpoint.items()
                           if (strip == "" or strip in _wrappers(k)) and k.startswith(strip)
                           and add in _wrappers(add + k[len(strip):])
                           and tuple(model.get(add + k[len(strip):], (-1,))) == tuple(s))
            assert found.get((strip, add), 0) == expected, (strip, add)


_RULE = st.one_of(
    st.sampled_from(["model.", "module.", "a.", "a.b.", "0."]).map(lambda p: StripPrefix(p)),
    st.sampled_from(["model.", "b."]).map(lambda p: AddPrefix(p)),
    st.sampled_from([(r"layer1[.](.*)", r"layer2.\1"), (r"(.*)[.]bn[.](.*)", r"\1.conv.\2")]).map(
        lambda r: Rename(*r)),
    st.sampled_from([r"b[.].*", r".*[.]bias"]).map(lambda p: Drop(p)),
)


@settings(max_examples=120, deadline=None)
@given(model=st.dictionaries(_KEY, _SHAPE, max_size=20), noise=st.dictionaries(_KEY, _SHAPE, max_size=8),
       wrapper=st.sampled_from(["", "model.", "module.", "a.b."]), rules=st.lists(_RULE, max_size=4),
       head=st.sampled_from(["", "conv", "a"]))
def test_keys_naming_the_model_hold_every_key_a_plan_places(model, noise, wrapper, rules, head):
    checkpoint = {**{wrapper + k: s for k, s in model.items()}, **noise}
    named = keys_naming_the_model(checkpoint, model, [*DEFAULT_RULES, *rules])
    assert named is not None
    plan = make_plan(checkpoint, model, rules=rules, head=head)
    placed = {m.checkpoint_key for m in plan.mappings
              if m.status in (Status.LOADED, Status.DUPLICATE, Status.MISMATCHED)}
    assert placed <= set(named)


def test_keys_naming_the_model_defer_to_the_plan_when_a_rule_reads_several_keys():
    model = {"a.weight": (2,)}
    assert keys_naming_the_model({"x.weight": (2,)}, model, [Positional()]) is None
    assert keys_naming_the_model({"x.w1": (1,), "x.w2": (1,)}, model,
                                 [Fuse(r"(?P<m>.*)[.](?P<part>w[12])", r"\g<m>.weight", ("w1", "w2"))]) is None


def _network(rng: random.Random, blocks: int, norm: str = "bn") -> dict[str, tuple[int, ...]]:
    """Conv/BatchNorm blocks with varied widths under one or two levels of modules."""
    out: dict[str, tuple[int, ...]] = {}
    for block in range(blocks):
        width = rng.choice([2, 3, 4])
        module = f"stages.{block // 3}.{block % 3}." if rng.random() < 0.7 else f"extra{block}."
        out[module + "conv.weight"] = (width, width, 1, 1)
        for name in ("weight", "bias", "running_mean", "running_var"):
            out[module + f"{norm}." + name] = (width,)
        out[module + f"{norm}.num_batches_tracked"] = ()
    out["fc.weight"], out["fc.bias"] = (5, 4), (5,)
    return out


def _plans_under(checkpoint, target, rules: list[KeyRule]):
    def plan_with(extra_before=(), only_if_it_fits=False, subset=None):
        return make_plan(checkpoint if subset is None else subset, target.shapes, parameters=target.parameters,
                         rules=[*extra_before, *DEFAULT_RULES, *rules], default_rules=False, head=target.head,
                         only_if_it_fits=only_if_it_fits,
                         chosen=[r for r in extra_before if isinstance(r, StripPrefix)])
    return plan_with


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), copies=st.integers(1, 3), plain=st.booleans(),
       renamed=st.booleans())
def test_the_bound_skips_only_prefixes_whose_reading_cannot_fit(seed, copies, plain, renamed):
    """Copies of a network under wrappers (some keys missing), with or without plain keys and
    keys the model lacks, in any order; with ``renamed`` the file names its norms as a family
    rule renames them (``bn`` -> ``norm``), so the bound must read names through the rules."""
    rng = random.Random(seed)
    model = _network(rng, rng.randint(2, 8), "norm" if renamed else "bn")
    params = [k for k in model if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    target = PlanTarget(model, params, head="fc")
    prefixes = ["model.", "module.model.", "net.0.", "ema.", "a.b.c."]
    rng.shuffle(prefixes)
    checkpoint: dict[str, tuple[int, ...]] = {}
    for prefix in ([""] if plain else []) + prefixes[:copies]:
        # a copy may lack some keys, or hold just what the model needs (the bound is tight there)
        keep = [k for k in model if rng.random() < 0.9] if rng.random() < 0.5 else \
            [k for k in model if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
        checkpoint.update({prefix + k.replace(".norm.", ".bn."): model[k] for k in keep})
    for i in range(rng.randint(0, 6)):
        checkpoint[f"projector.{i}.weight"] = (rng.randint(1, 4),)
    items = list(checkpoint.items())
    rng.shuffle(items)
    checkpoint = dict(items)
    rules: list[KeyRule] = [Rename(r"(.*)[.]bn[.](.*)", r"\1.norm.\2")] if renamed else []
    plan_with = _plans_under(checkpoint, target, rules)
    keys = CheckpointKeys(checkpoint)
    bound = _StripBound(keys, target, None, plan_with, (),
                        lambda: keys_naming_the_model(checkpoint, model, [*DEFAULT_RULES, *rules]))
    plain_reading = plan_with().assignments()
    for prefix in keys.under:
        if bound.could_fit(prefix):
            continue
        try:
            plan = plan_with([StripPrefix(prefix, found=True)])
        except IncompatibleCheckpointError:
            continue
        # skipped: it cannot fit, or it renames nothing and is the plain reading again
        assert not plan.fits or plan.assignments() == plain_reading, (prefix, sorted(checkpoint))


def _product(shape: tuple[int, ...]) -> int:
    out = 1
    for n in shape:
        out *= n
    return out

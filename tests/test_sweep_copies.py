"""The sweep of copies: every built-in architecture and each timm model module's smallest one
(``generators.swept_architectures()``), with checkpoints that hold two copies of the network.

* Two live copies (different seeds) under two random prefixes, in each key order: refused with
  ``AmbiguousCheckpointError`` naming both prefixes; the ``rules=`` line the message gives for a
  prefix (parsed from the message, not rebuilt) loads that copy bit for bit.
* An EMA/teacher-named copy beside a live one: the EMA copy loads by default, the live one with
  ``use_ema=False``, each bit for bit, and the plan's notes name both prefixes.
* A plain copy beside a prefixed one: a tie like any other, unless the prefixed one is EMA-named.
* The same weights as plain keys and under ``module.``: two keys fill each model tensor, refused
  naming both keys.
* Two copies whose names fit nothing (modules numbered): paired by order, and refused or settled
  by the teacher convention like named copies.

The refusals are checked on in-memory state dicts of shapes (``zooadapt.plan_for``: no file,
nothing allocated), the exact loads on real files through ``zooadapt.load``. The fast subset is
``generators.fast_architectures()`` in one key order; the rest is marked slow.
"""

from __future__ import annotations

import ast
import random
import re

import generators as g
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import zooadapt
from zooadapt.contract.errors import AmbiguousCheckpointError
from zooadapt.types import LoadPlan

SWEPT = g.swept_architectures()
FAST_ORDER = "shuffled"
FAST = {arch: FAST_ORDER for arch in g.fast_architectures()}

KNOWN_FAILURES: dict[tuple[str, str, str], str] = {}
"""(test, architecture, variant) -> why zooadapt fails it: each such case is ``xfail(strict=True)``,
so it fails again (as XPASS) once the library is fixed and the entry must go. Architectures
zooadapt cannot load at all are ``generators.BROKEN``."""


def cases(test: str, variants: tuple[str, ...], fast_variant: str, fast: tuple[str, ...] = tuple(FAST)) -> list[object]:
    """The sweep's cases for ``test``; ``fast`` (default: the whole fast subset) in ``fast_variant`` run fast."""
    return g.sweep_cases(test, variants, {arch: fast_variant for arch in fast}, KNOWN_FAILURES)


def assert_loaded_exactly(model: torch.nn.Module, copy: dict[str, torch.Tensor]) -> None:
    """Every tensor of the model is the copy's, bit for bit, and the model has nothing else."""
    state = model.state_dict()
    assert set(state) == set(copy)
    different = [k for k, v in copy.items() if not torch.equal(state[k], v)]
    assert different == [], f"{len(different)} tensors differ from the copy, e.g. {different[:3]}"


def loaded_prefixes(plan: LoadPlan, prefixes: tuple[str, ...]) -> set[str]:
    """Which of ``prefixes`` the loaded checkpoint keys come from ('' for a key under none)."""
    return {next((p for p in prefixes if m.checkpoint_key.startswith(p)), "") for m in plan.loaded}


def refusal(arch: str, checkpoint: object, **kwargs: object) -> str:
    with pytest.raises(AmbiguousCheckpointError) as err:
        zooadapt.plan_for(arch, checkpoint, **kwargs)
    return str(err.value)


def note_naming(plan: LoadPlan, *prefixes: str) -> str | None:
    return next((n for n in plan.notes if all(repr(p) in n for p in prefixes)), None)


# -- two live copies -------------------------------------------------------------------------------


@pytest.mark.parametrize(("arch", "order"), cases("two_copies", g.ORDERS, FAST_ORDER))
def test_two_copies_are_refused_until_one_is_named(arch, order, tmp_path):
    first, second = g.seeded_weights(arch, 1), g.seeded_weights(arch, 2)
    rng = random.Random(g.arch_seed(arch, "copies"))
    pa, pb = g.prefix_pair(rng, avoid=g.key_components(first))
    state = g.in_order(g.two_copies(first, pa, second, pb), order, seed=g.arch_seed(arch, order))

    message = refusal(arch, g.shapes_of(state))
    assert set(g.rule_lines(message)) == {pa, pb}, message

    path = tmp_path / "two_copies.pth"
    torch.save(state, path)
    with pytest.raises(AmbiguousCheckpointError) as err:
        zooadapt.load(arch, weights=path)
    lines = g.rule_lines(str(err.value))
    assert set(lines) == {pa, pb}, str(err.value)
    for prefix, copy in ((pa, first), (pb, second)):
        model = zooadapt.load(arch, weights=path, rules=lines[prefix])
        assert_loaded_exactly(model, copy)


# -- two copies whose names fit nothing: paired by order --------------------------------------------


@pytest.mark.parametrize(("arch", "variant"), cases("copies_by_order", ("live", "teacher"), "live",
                                                 ("mobilenet_v1", "test_vit")))
def test_copies_paired_by_order_are_refused_or_settled_as_named_ones(arch, variant, tmp_path):
    """Two copies whose module names fit nothing (numbered, file order kept, as ``torch.save``
    keeps it) under two prefixes: refused with a line per copy that loads it bit for bit; named
    ``student_``/``teacher_``, the teacher loads and ``use_ema=False`` the student. Each line
    loads its copy's classifier too (a family's positional rule, mobilenet_v1's, pairs it only
    once the other copy is dropped: the line drops it)."""
    first, second = g.seeded_weights(arch, 11), g.seeded_weights(arch, 12)
    rng = random.Random(g.arch_seed(arch, "by-order"))
    if variant == "teacher":
        pa, pb = "student_backbone.", "teacher_backbone."
    else:
        pa, pb = g.prefix_pair(rng, avoid=g.key_components(first))
    state = g.two_copies(g.numbered_modules(first), pa, g.numbered_modules(second), pb)
    path = tmp_path / "by_order.pth"
    torch.save(state, path)
    if variant == "teacher":
        assert loads_copy(zooadapt.load(arch, weights=path), second)
        assert loads_copy(zooadapt.load(arch, weights=path, use_ema=False), first)
        return
    message = refusal(arch, g.shapes_of(state))
    # each copy's line, by order or by a family's positional rule (mobilenet_v1's), as the message gives it
    lines = [ast.literal_eval(line) for line in re.findall(r"load it with rules=(\[.*?\])$", message, re.M)]
    assert len(lines) == 2, message
    loaded = []
    for rules in lines:
        model = zooadapt.load(arch, weights=path, rules=rules)
        assert not model.zooadapt.report.plan.new_head, (rules, message)
        loaded += [i for i, copy in enumerate((first, second)) if loads_copy(model, copy)]
    assert sorted(loaded) == [0, 1], message


def loads_copy(model: torch.nn.Module, copy: dict[str, torch.Tensor]) -> bool:
    """Every tensor is the copy's, bit for bit, but a head the report calls new (a family's
    positional rule pairs the head only where no other copy's modules are left over)."""
    state, new = model.state_dict(), set(model.zooadapt.report.plan.new_head)
    return set(state) == set(copy) and all(torch.equal(state[k], v) for k, v in copy.items() if k not in new)


# -- an EMA or teacher copy beside a live one ---------------------------------------------------------


@pytest.mark.parametrize(("arch", "variant"), cases("ema_copy", ("ema",), "ema", ("mobilenet_v1", "test_vit")))
def test_the_ema_copy_loads_by_default_and_the_live_one_on_request(arch, variant, tmp_path):
    ema, live = g.seeded_weights(arch, 3), g.seeded_weights(arch, 4)
    rng = random.Random(g.arch_seed(arch, "ema"))
    pe, pl = g.ema_pair(rng, avoid=g.key_components(ema))
    state = g.in_order(g.two_copies(live, pl, ema, pe), "shuffled", seed=g.arch_seed(arch, "ema-order"))
    path = tmp_path / "with_ema.pth"
    torch.save(state, path)

    model = zooadapt.load(arch, weights=path)
    assert_loaded_exactly(model, ema)
    assert note_naming(model.zooadapt.report.plan, pe, pl), model.zooadapt.report.plan.notes

    model = zooadapt.load(arch, weights=path, use_ema=False)
    assert_loaded_exactly(model, live)
    assert note_naming(model.zooadapt.report.plan, pe, pl), model.zooadapt.report.plan.notes


# -- a plain copy beside a prefixed one --------------------------------------------------------------


@pytest.mark.parametrize(("arch", "variant"), cases("plain_and_prefixed", ("live", "ema"), "live",
                                                 ("test_convnext", "test_efficientnet")))
def test_plain_keys_beside_a_prefixed_copy_are_two_copies(arch, variant, tmp_path):
    plain, other = g.seeded_weights(arch, 5), g.seeded_weights(arch, 6)
    rng = random.Random(g.arch_seed(arch, "plain"))
    prefix = g.random_prefix(rng, avoid=g.key_components(plain), ema=variant == "ema")
    state = g.in_order({**plain, **g.wrapped(other, prefix)}, "shuffled", seed=g.arch_seed(arch, "plain-order"))

    if variant == "live":  # a tie: refused, each copy's line loads it
        lines = g.rule_lines(refusal(arch, g.shapes_of(state)))
        assert set(lines) == {"", prefix}
        path = tmp_path / "plain_and_prefixed.pth"
        torch.save(state, path)
        for chosen, copy in (("", plain), (prefix, other)):
            assert_loaded_exactly(zooadapt.load(arch, weights=path, rules=lines[chosen]), copy)
    else:  # the prefixed copy is the EMA one: it loads by default, the plain keys with use_ema=False
        plan = zooadapt.plan_for(arch, g.shapes_of(state))
        assert loaded_prefixes(plan, (prefix,)) == {prefix}
        assert note_naming(plan, prefix), plan.notes
        plan = zooadapt.plan_for(arch, g.shapes_of(state), use_ema=False)
        assert loaded_prefixes(plan, (prefix,)) == {""}


# -- two keys for one model tensor ------------------------------------------------------------------


@pytest.mark.parametrize(("arch", "order"), cases("duplicate_slot", ("file", "module-first", "sorted", "shuffled"),
                                                  "file"))
def test_two_keys_for_one_tensor_are_refused_naming_both(arch, order, tmp_path):
    plain = g.seeded_weights(arch, 7)
    again = g.wrapped({k: v.clone() for k, v in plain.items()}, "module.")  # the same values, stored twice
    doubled = {**plain, **again}
    if order == "module-first":
        doubled = {**again, **plain}
    else:
        doubled = g.in_order(doubled, order, seed=g.arch_seed(arch, "duplicate"))

    def check(message: str) -> None:
        # every tensor is filled twice, and the message says so, naming both keys of a tensor
        counts = [int(n) for n in re.findall(r"(\d+) tensors\b[^\n]*?\btwice", message)]
        assert counts == [len(plain)], message
        quoted = set(re.findall(r"'([^']+)'", message))
        assert any(k in quoted and f"module.{k}" in quoted for k in plain), message

    with pytest.raises(AmbiguousCheckpointError) as err:
        zooadapt.plan_for(arch, g.shapes_of(doubled)).check(partial=False)
    check(str(err.value))
    if order == "file":  # the load refuses the same way
        path = tmp_path / "doubled.pth"
        torch.save(doubled, path)
        with pytest.raises(AmbiguousCheckpointError) as err:
            zooadapt.load(arch, weights=path)
        check(str(err.value))


# -- the prefix grammar, explored -------------------------------------------------------------------

GRAMMAR_ARCHS = ("resnet18", "test_vit")
_EXPLORE = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def assert_refused_then_picked(arch: str, state: dict[str, tuple[int, ...]], pair: tuple[str, str]) -> None:
    """Refused naming both prefixes; each prefix's line plans that copy and nothing of the other."""
    message = refusal(arch, state)
    lines = g.rule_lines(message)
    assert set(lines) == set(pair), message
    for prefix in pair:
        plan = zooadapt.plan_for(arch, state, rules=lines[prefix])
        assert plan.fits and loaded_prefixes(plan, tuple(sorted(pair, key=len, reverse=True))) == {prefix}


@pytest.mark.slow
@pytest.mark.parametrize("arch", GRAMMAR_ARCHS)
@_EXPLORE
@given(pair=g.prefix_pairs(), order=st.sampled_from(g.ORDERS), seed=st.integers(0, 2**16))
def test_any_two_live_prefixes_are_refused(arch, pair, order, seed):
    """Random and real wrapper names, 1-3 levels: always a tie, each prefix named with the line
    that picks it."""
    shapes = g.shapes_of(g.seeded_weights(arch, 0))
    assume(not g.components_of(pair) & g.key_components(shapes))  # a wrapper named like one of the model's modules
    assert_refused_then_picked(arch, g.in_order(g.two_copies(shapes, pair[0], shapes, pair[1]), order, seed=seed),
                               pair)


@pytest.mark.parametrize(("arch", "pair"), [
    pytest.param(arch, pair, id=f"{arch}-{'+'.join(pair)}",
                 marks=[pytest.mark.slow])
    for arch in GRAMMAR_ARCHS for pair in g.NESTED_PAIRS])
def test_a_copy_nested_in_the_other_copys_prefix_is_still_a_copy(arch, pair):
    """``a.`` holding one copy and ``a.b.`` another: stripping ``a.`` reads the second copy as
    keys ``b.…`` the model lacks, so the two readings fit equally well; a tie like any other."""
    shapes = g.shapes_of(g.seeded_weights(arch, 0))
    for order in g.ORDERS:
        assert_refused_then_picked(arch, g.in_order(g.two_copies(shapes, pair[0], shapes, pair[1]), order, seed=1),
                                   pair)


@pytest.mark.slow
@pytest.mark.parametrize("arch", GRAMMAR_ARCHS)
@_EXPLORE
@given(ema=g.prefixes(ema=True), live=g.prefixes(), order=st.sampled_from(g.ORDERS),
       seed=st.integers(0, 2**16))
def test_an_ema_named_prefix_is_chosen_by_convention(arch, ema, live, order, seed):
    shapes = g.shapes_of(g.seeded_weights(arch, 0))
    assume(not g.components_of((ema, live)) & g.key_components(shapes))
    state = g.in_order(g.two_copies(shapes, live, shapes, ema), order, seed=seed)
    by_length = tuple(sorted((ema, live), key=len, reverse=True))
    plan = zooadapt.plan_for(arch, state)
    assert plan.fits and loaded_prefixes(plan, by_length) == {ema}
    assert note_naming(plan, ema, live), plan.notes
    plan = zooadapt.plan_for(arch, state, use_ema=False)
    assert plan.fits and loaded_prefixes(plan, by_length) == {live}


@pytest.mark.parametrize(("arch", "pair"), [
    pytest.param(arch, pair, id=f"{arch}-{'+'.join(pair)}",
                 marks=[] if (arch, i) == ("test_convnext", 0) else [pytest.mark.slow])
    for arch in ("resnet50", "test_convnext") for i, pair in enumerate(g.REAL_PAIRS)])
def test_real_wrapper_pairs_are_refused(arch, pair):
    """The names real checkpoints use for two copies (MoCo's ``module.encoder_q.``/``encoder_k.``,
    BYOL's online and target networks…), including ``module.`` and ``_orig_mod.``, which are
    stripped by default when they wrap a single copy."""
    shapes = g.shapes_of(g.seeded_weights(arch, 0))
    message = refusal(arch, g.two_copies(shapes, pair[0], shapes, pair[1]))
    assert set(g.rule_lines(message)) == set(pair), message


# -- the timm selection -------------------------------------------------------------------------------


@pytest.mark.slow
def test_timm_selection_is_current():
    """``TIMM_SMALLEST`` is each timm module's smallest architecture for the installed timm
    (about a minute and a half: every timm architecture is built on meta)."""
    assert g.smallest_timm_architectures() == g.TIMM_SMALLEST, (
        "timm changed: update generators.TIMM_SMALLEST with generators.format_selection("
        "generators.smallest_timm_architectures())")


def test_the_sweep_covers_every_builtin_and_forty_timm_modules():
    builtins = g.builtin_architectures()
    assert {"resnet18", "resnet152", "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
            "alexnet"} <= set(builtins)
    assert len(g.timm_architectures()) >= 40
    modules = {m for m, _, _ in g.TIMM_SMALLEST if m not in g.TIMM_SKIPPED}
    assert len(g.timm_architectures()) == min(len(modules), g.SWEPT_TIMM) or len(g.timm_architectures()) == len(modules)
    assert set(g.fast_architectures()) <= set(SWEPT)

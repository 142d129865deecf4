"""A user's key-rule pattern cannot hang a load (issue #20).

``re`` backtracks exponentially on a nested quantifier (``(a+)+``) when a long key almost
matches: such a rule never returns. A user's rules (``rules=``, ``--rule``, rule objects alike)
are matched by the ``regex`` library with a timeout per key (``rules.MATCH_SECONDS``), and a
pattern that runs out of it is refused naming the pattern, the key and the fix. A family's own
rules are code and keep ``re``'s speed. The sweep: every rule kind that takes a pattern, as
text and as an object, with the classic catastrophic patterns.
"""

from __future__ import annotations

import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import zooadapt
from zooadapt.contract import rules as rules_module
from zooadapt.contract.rules import CastIntegers, Drop, Rename, Reshape, guarded, parse_rule
from zooadapt.errors import InvalidArgumentError
from zooadapt.loading.plan import make_plan

EVIL = [r"(a+)+b", r"(a|a)*b", r"(a|aa)+b", r"(\w+\.)*x", r"(.*a){12}b"]
LONG_KEY = "a" * 60 + "!"  # almost matches every pattern above: the worst case for backtracking
MODEL = {"fc.weight": (2, 2), "fc.bias": (2,)}


def _planned(kind: str) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """(checkpoint, model) shapes that make a plan test ``kind``'s pattern on ``LONG_KEY``: a drop
    or rename tests checkpoint keys; a reshape tests a model key whose tensor has another shape
    (a cast tests dtypes, which placement checks: its pattern is the same guarded matcher)."""
    if kind == "reshape":
        return {LONG_KEY: (4,), "fc.bias": (2,)}, {LONG_KEY: (2, 2), "fc.bias": (2,)}
    return {LONG_KEY: (2, 2)}, MODEL


@pytest.mark.parametrize("pattern", EVIL)
@pytest.mark.parametrize("kind", ["drop", "rename", "reshape"])
def test_a_catastrophic_user_pattern_answers_or_is_refused_in_bounded_time(pattern, kind):
    """With ``re`` each of these runs for hours on ``LONG_KEY``. Guarded, the ``regex`` library
    answers most of them at once (it cuts such backtracking short) and refuses the rest when
    a match runs out of time: either way the plan ends within a few ``MATCH_SECONDS``."""
    text = f"rename:{pattern}=>x" if kind == "rename" else f"{kind}:{pattern}"
    rule = guarded(parse_rule(text))
    subject, model = _planned(kind)
    start = time.perf_counter()
    try:
        make_plan(subject, model, rules=[rule])
    except InvalidArgumentError as exc:
        assert "took more than 0.25 s on the key" in str(exc) and "nested repeats" in str(exc)
        assert pattern in str(exc)
    assert time.perf_counter() - start < 10 * rules_module.MATCH_SECONDS


@pytest.mark.parametrize("kind", ["drop", "rename", "reshape"])
def test_a_pattern_that_runs_out_of_time_is_refused_naming_it_and_the_key(kind):
    pattern = r"(a|aa)+b"  # overlapping alternatives: exponential for the regex library too
    text = f"rename:{pattern}=>x" if kind == "rename" else f"{kind}:{pattern}"
    subject, model = _planned(kind)
    with pytest.raises(InvalidArgumentError, match=r"took more than 0.25 s on the key 'a{60}!'.*nested repeats"):
        make_plan(subject, model, rules=[guarded(parse_rule(text))])


@pytest.mark.parametrize("rule", [Drop(EVIL[0]), Rename(EVIL[0], "x"), Reshape(EVIL[0]), CastIntegers(EVIL[0])])
def test_rule_objects_a_user_passes_are_guarded_too(rule):
    made = guarded(rule)
    assert made.guarded and made.pattern == rule.pattern and not rule.guarded


def test_a_load_with_a_catastrophic_rule_is_refused_not_hung(tmp_path):
    model = zooadapt.load("resnet18", pretrained=False)
    state = {f"{LONG_KEY}.{k}" if k.startswith("fc.") else k: v for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "w.pth")
    start = time.perf_counter()
    with pytest.raises(InvalidArgumentError, match=r"\(a\|aa\)\+b"):
        zooadapt.load("resnet18", weights=tmp_path / "w.pth", rules=[r"drop:(a|aa)+b"])
    assert time.perf_counter() - start < 30


@settings(max_examples=60, deadline=None)
@given(pattern=st.sampled_from([r"layer(\d+)\.(\d+)\.(.+)", r"(?:module\.)?(.+)", r"blocks\.(\d+)\.(.*)",
                                r"(stem|head)\.(\w+)", r"[a-z_]+\.\d+\.(?P<rest>.+)"]),
       key=st.from_regex(r"(module\.)?(layer[1-4]|blocks|stem|head)\.[0-9]\.[a-z_]{1,8}\.(weight|bias)",
                         fullmatch=True))
def test_a_guarded_rule_answers_exactly_as_re_does(pattern, key):
    """The bound changes how long a match may take, never its answer: for ordinary patterns
    and keys, the guarded rule renames and drops exactly as the unguarded one."""
    plain, bounded = Rename(pattern, r"x.\g<0>"), guarded(Rename(pattern, r"x.\g<0>"))
    assert plain.rename(key) == bounded.rename(key)
    assert Drop(pattern).drops(key) == guarded(Drop(pattern)).drops(key)


def test_a_family_rule_is_not_guarded():
    assert not Drop("a").guarded and not Rename("a", "b").guarded

"""What zooadapt remembers within a process to make repeated loads fast (plans, safetensors
headers, stage lookups, rule prefixes), and that a remembered answer is never a stale one."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import zooadapt
import zooadapt.adapt as adapt_module
from zooadapt.adapt import PlanTarget, adapt
from zooadapt.errors import IncompatibleCheckpointError
from zooadapt.registry import get_registry
from zooadapt.rules import Drop, KeyRule, Rename, Renumber, StripPrefix, literal_prefix
from zooadapt.stages import HEAD, Stage, StageMap

# -- the prefix a rule checks before its regex ------------------------------------------------------

TRICKY = [r"(ab)?c", r"a|b", r"ab*c", r"x(?:ab|ac)d", r"[ab]c", r"a{0,2}b", r"a+b", r"(a(b)?)c",
          r"a\.b?", r"(?:blocks)\.(\d+)", r"layer(\d)\.(\d+)\.(.+)", r"(?P<stem>conv)_stem\.(.+)", r"\d+\.w", "",
          r"a(?=b)b", r"(?i:AB)c", r"ab(c|d)e"]


def _family_patterns() -> list[str]:
    registry = get_registry()
    out = set(TRICKY)
    for family in registry.families.values():
        for rule in family.key_rules:
            if isinstance(rule, (Rename, Renumber, Drop)):
                out.add(rule.pattern)
    from zooadapt.layouts import registered_layouts

    for layout in registered_layouts():
        out.update(r.pattern for r in layout.rules if isinstance(r, (Rename, Renumber, Drop)))
    return sorted(out)


PATTERNS = _family_patterns()


@pytest.mark.parametrize(("pattern", "prefix"), [
    (r"conv_stem\.(.+)", "conv_stem."), (r"(features\.\d+)\.bn1\.(.+)", "features."), (r"(ab)?c", ""),
    (r"(?i)abc", ""), (r"a|b", ""), (r"ab*c", "a"), (r"blocks\.(\d+)\.(\d+)", "blocks.")])
def test_literal_prefix_of_common_patterns(pattern, prefix):
    assert literal_prefix(pattern) == prefix


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATTERNS).flatmap(lambda p: st.tuples(st.just(p), st.from_regex(p, fullmatch=True))))
def test_every_key_a_pattern_matches_starts_with_its_literal_prefix(case):
    """The prefix test must never turn away a key the regex would match: checked on keys generated
    from every built-in family's and layout's patterns, and patterns chosen to trip a naive reader."""
    pattern, key = case
    assert re.fullmatch(pattern, key)
    assert key.startswith(literal_prefix(pattern))
    assert Drop(pattern).drops(key)
    assert Rename(pattern, "x").rename(key) is not None


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PATTERNS), st.text(alphabet="abcdefklnorstuw_.0123456789", max_size=30))
def test_a_rule_with_a_prefix_answers_as_its_regex_alone(pattern, key):
    assert Drop(pattern).drops(key) == (re.fullmatch(pattern, key) is not None)


# -- plans --------------------------------------------------------------------------------------------

CHECKPOINT = {"module.conv.weight": (4, 3, 3, 3), "module.bn.weight": (4,), "module.bn.bias": (4,),
              "module.fc.weight": (10, 4), "module.fc.bias": (10,)}
MODEL = {"conv.weight": (4, 3, 3, 3), "bn.weight": (4,), "bn.bias": (4,), "fc.weight": (5, 4), "fc.bias": (5,)}
TARGET = PlanTarget(MODEL, list(MODEL), head="fc")


@pytest.fixture
def plans(monkeypatch):
    """An empty plan cache, and a count of the plans actually made (``make_plan`` calls)."""
    adapt_module._plans.clear()
    made = []
    real = adapt_module.make_plan

    def counting(*args, **kwargs):
        made.append(kwargs.get("rules"))
        return real(*args, **kwargs)

    monkeypatch.setattr(adapt_module, "make_plan", counting)
    yield made
    adapt_module._plans.clear()


def test_the_same_checkpoint_into_the_same_model_is_planned_once(plans):
    first = adapt(CHECKPOINT, TARGET)
    assert first.fits and len(plans) == 1
    again = adapt(dict(CHECKPOINT), PlanTarget(dict(MODEL), list(MODEL), head="fc"))  # equal, not the same objects
    assert len(plans) == 1
    assert again.assignments() == first.assignments() == {f"module.{k}": k for k in MODEL if not k.startswith("fc")}
    assert [m.status for m in again.mappings] == [m.status for m in first.mappings]


def test_a_remembered_plan_is_handed_out_as_a_copy(plans):
    first = adapt(CHECKPOINT, TARGET)
    first.notes.append("the caller's note")
    first.mappings.clear()
    first.missing.append("conv.weight")
    first.weight_set = "state_dict_ema"
    again = adapt(CHECKPOINT, TARGET)
    assert again.notes == [] and again.mappings and again.missing == [] and again.weight_set is None
    assert again.fits


@pytest.mark.parametrize("change", ["checkpoint shape", "checkpoint key", "model shape", "head", "skip", "rules"])
def test_anything_a_plan_is_made_from_makes_a_new_plan(plans, change):
    checkpoint, model, head, skip, rules = dict(CHECKPOINT), dict(MODEL), "fc", (), ()
    adapt(checkpoint, PlanTarget(model, list(model), head=head))
    if change == "checkpoint shape":
        checkpoint["module.conv.weight"] = (8, 3, 3, 3)
    elif change == "checkpoint key":
        checkpoint["module.extra.weight"] = checkpoint.pop("module.bn.bias")
    elif change == "model shape":
        model["bn.weight"] = (6,)
    elif change == "head":
        head = "bn"
    elif change == "skip":
        skip = ("bn",)
    else:
        rules = (Drop(r"module\.bn\..*"),)
    plan = adapt(checkpoint, PlanTarget(model, list(model), head=head, skip=skip), rules=rules)
    assert len(plans) >= 2, f"a changed {change} was answered from the cache"
    if change in ("checkpoint shape", "model shape"):
        assert not plan.fits and plan.mismatched
    if change == "checkpoint key":
        assert "bn.bias" in plan.missing


def test_a_plan_that_does_not_fit_is_made_again_each_time(plans):
    """A failure is diagnosed afresh: its hints may depend on the registry and the plugins."""
    checkpoint = {**CHECKPOINT, "module.conv.weight": (8, 3, 3, 3)}
    adapt(checkpoint, TARGET)
    made = len(plans)
    adapt(checkpoint, TARGET)
    assert len(plans) == 2 * made and len(adapt_module._plans) == 0


def test_a_rule_with_state_of_its_own_is_never_answered_from_the_cache(plans):
    """A user's KeyRule subclass that is not a frozen dataclass may change between loads."""

    class Strip(KeyRule):
        def __init__(self, prefix: str) -> None:
            self.prefix = prefix

        def rename(self, key: str) -> str | None:
            return key[len(self.prefix):] if key.startswith(self.prefix) else None

    rule = Strip("model.")
    checkpoint = {f"model.{k}": s for k, s in MODEL.items()}
    assert adapt(checkpoint, TARGET, rules=[rule], discover=False).fits
    rule.prefix = "elsewhere."
    assert not adapt(checkpoint, TARGET, rules=[rule], discover=False).fits


def test_frozen_rules_compare_by_value(plans):
    adapt(CHECKPOINT, TARGET, rules=[StripPrefix("module.")])
    adapt(CHECKPOINT, TARGET, rules=[StripPrefix("module.")])  # a new, equal rule object
    assert len(plans) == 1
    adapt(CHECKPOINT, TARGET, rules=[StripPrefix("module.", found=True)])
    assert len(plans) == 2


def test_a_change_in_the_plugins_layouts_makes_a_new_plan(plans, monkeypatch):
    target = PlanTarget(MODEL, list(MODEL), head="fc", family="resnet")
    adapt(CHECKPOINT, target)
    adapt(CHECKPOINT, target)
    assert len(plans) == 1
    from zooadapt.family import Layout

    extra = Layout("test-layout", "resnet", r"nothing\.matches", (StripPrefix("x."),))
    monkeypatch.setattr(adapt_module, "registered_layouts", lambda: (extra,))
    adapt(CHECKPOINT, target)
    assert len(plans) == 2


def test_reloading_a_file_reads_its_current_contents(tmp_path):
    """End to end: the same path loaded, rewritten with other values, then with another shape."""
    from zooadapt.testing import torchvision_state_dict

    state = torchvision_state_dict("resnet18", seed=1)
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path))
    first = zooadapt.load("resnet18", weights=str(path), num_classes=5)
    changed = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    save_file(changed, str(path))
    second = zooadapt.load("resnet18", weights=str(path), num_classes=5)
    assert torch.equal(second.conv1.weight, state["conv1.weight"] + 1)
    assert torch.equal(first.conv1.weight, state["conv1.weight"])
    reshaped = {**changed, "conv1.weight": torch.zeros(32, 3, 7, 7)}
    save_file(reshaped, str(path))
    with pytest.raises(IncompatibleCheckpointError, match="conv1.weight"):
        zooadapt.load("resnet18", weights=str(path), num_classes=5)


# -- which stage a name belongs to ------------------------------------------------------------------


def _stage_of_reference(smap: StageMap, key: str) -> str | None:
    """The definition: the head, else the stage with the longest prefix the key lies under (the
    first listed wins a tie), else None."""
    def under(k: str, p: str) -> bool:
        return k == p or k.startswith(p + ".") or p == ""

    if smap.head and under(key, smap.head):
        return HEAD
    best = None
    for stage in smap.stages:
        for p in stage.prefixes:
            if under(key, p) and (best is None or len(p) > best[0]):
                best = (len(p), stage.name)
    return best[1] if best else None


_part = st.sampled_from(["layer1", "layer10", "0", "1", "10", "conv", "bn", "features", "a.b", "weight"])
_dotted = st.lists(_part, min_size=0, max_size=4).map(".".join)


@dataclass
class _Case:
    smap: StageMap
    keys: list[str]


@st.composite
def _cases(draw):
    prefixes = draw(st.lists(_dotted, min_size=1, max_size=6))
    stages = [Stage(f"s{i}", tuple(draw(st.lists(st.sampled_from(prefixes), min_size=1, max_size=3))))
              for i in range(draw(st.integers(1, 4)))]
    head = draw(st.sampled_from(["", "fc", "features.1", "head"]))
    return _Case(StageMap(tuple(stages), head=head), draw(st.lists(_dotted, max_size=10)))


@settings(max_examples=300, deadline=None)
@given(_cases())
def test_stage_lookup_agrees_with_its_definition(case):
    for key in case.keys:
        assert case.smap.stage_of(key) == _stage_of_reference(case.smap, key), key

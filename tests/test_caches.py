"""What zooadapt remembers within a process to make repeated loads fast (plans, safetensors
headers, stage lookups, rule prefixes, skeletons), that a remembered answer is never a stale one,
and that every such cache is one registered, bounded ``ProcessCache`` that ``clear_caches()`` empties."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import zooadapt
import zooadapt.loading.adapt as adapt_module
from zooadapt.contract.rules import Drop, KeyRule, Rename, Renumber, StripPrefix, literal_prefix
from zooadapt.contract.stages import HEAD, Stage, StageMap
from zooadapt.errors import IncompatibleCheckpointError
from zooadapt.host.registry import get_registry
from zooadapt.loading.adapt import PlanTarget, adapt

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
    from zooadapt.host.layouts import registered_layouts

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
    from zooadapt.plugin_api import Layout

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


# -- what a fresh copy knows from its skeleton ------------------------------------------------------


@pytest.mark.parametrize(("name", "freeze"), [("resnet18", "layer1-3"), ("mobilenet_v3_large", ":stride16")])
def test_a_load_from_the_skeletons_index_equals_one_that_walks_the_model(name, freeze, tmp_path, monkeypatch):
    """Modules, state-dict shapes and parameter names come from the skeleton; the model must come
    out exactly as when every step walks the model itself."""
    from zooadapt.loading import meta_build
    from zooadapt.testing import torchvision_state_dict

    path = tmp_path / f"{name}.safetensors"
    save_file(torchvision_state_dict(name, seed=3), str(path))

    def load():
        return zooadapt.load(name, weights=str(path), num_classes=5, freeze=freeze)

    indexed = load()
    assert meta_build._copied_from[indexed].state_layout() is not None  # it was copied with an index
    monkeypatch.setattr(meta_build._Skeleton, "state_layout", lambda self: None)
    walked = load()
    assert indexed.state_dict().keys() == walked.state_dict().keys()
    for key, value in walked.state_dict().items():
        if "fc." in key or "classifier.3" in key:  # the new head: random, same shape
            assert indexed.state_dict()[key].shape == value.shape
        else:
            assert torch.equal(indexed.state_dict()[key], value), key
    assert [(n, p.requires_grad) for n, p in indexed.named_parameters()] == \
        [(n, p.requires_grad) for n, p in walked.named_parameters()]
    assert [(n, type(m).__name__) for n, m in indexed.named_modules()] == \
        [(n, type(m).__name__) for n, m in walked.named_modules()]
    assert indexed.zooadapt.frozen == walked.zooadapt.frozen
    assert (indexed.zooadapt.report.trainable_params, indexed.zooadapt.report.total_params) == \
        (walked.zooadapt.report.trainable_params, walked.zooadapt.report.total_params)
    assert not any(p.is_meta for p in indexed.parameters())


def test_copies_of_one_skeleton_share_nothing_mutable(tmp_path):
    """Two loads of one architecture: a buffer or hook changed on one is not seen by the other."""
    from zooadapt.testing import torchvision_state_dict

    path = tmp_path / "r18.safetensors"
    save_file(torchvision_state_dict("resnet18", seed=4), str(path))
    a = zooadapt.load("resnet18", weights=str(path), num_classes=5, freeze="layer1")
    b = zooadapt.load("resnet18", weights=str(path), num_classes=5)
    a.bn1.running_mean.add_(1)
    a.layer1[0].register_forward_hook(lambda *args: None)
    assert not torch.equal(a.bn1.running_mean, b.bn1.running_mean)
    assert not b.layer1[0]._forward_hooks
    assert b.layer1[0].conv1.weight.requires_grad and b.zooadapt.frozen == ()
    assert b.zooadapt.stages is a.zooadapt.stages  # the stage map describes the architecture: shared, immutable


_LOAD_OPTIONS = {
    "plain": {}, "skipped stage": {"skip": ["layer4"]}, "device meta": {"device": "meta"},
    "num_classes=0": {"num_classes": 0}, "in_chans": {"in_chans": 1}, "features_only": {"features_only": True},
    "dtype": {"dtype": torch.bfloat16}, "kept head": {"num_classes": None}, "frozen": {"freeze": "layer1-3"},
    "build option": {"zero_init_residual": True},
}


def _storages(model):
    """The buffers' and parameters' memory and the objects themselves (meta ones have no memory)."""
    tensors = (*model.parameters(), *model.buffers())
    return ({("memory", t.untyped_storage().data_ptr()) for t in tensors if t.numel() and not t.is_meta}
            | {("object", id(t)) for t in tensors})


@pytest.mark.parametrize("how", sorted(_LOAD_OPTIONS))
def test_no_two_loads_share_a_parameter_or_buffer(how, tmp_path):
    """Whatever the options, two loads of one name share no tensor with each other or with the kept
    skeleton: a change to one model (a freeze, a buffer update, an optimiser step) never reaches
    the next load."""
    import warnings

    from zooadapt.loading import meta_build
    from zooadapt.testing import torchvision_state_dict

    path = tmp_path / "r18.safetensors"
    save_file(torchvision_state_dict("resnet18", seed=5), str(path))
    options = _LOAD_OPTIONS[how] if "num_classes" in _LOAD_OPTIONS[how] or how == "features_only" else {
        "num_classes": 5, **_LOAD_OPTIONS[how]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # skip= says most of the model is untrained
        first = zooadapt.load("resnet18", weights=str(path), **options)
        again = zooadapt.load("resnet18", weights=str(path), **options)
    skeletons = set().union(*(_storages(meta_build._skeletons.get(k).model) for k in meta_build._skeletons))
    assert meta_build._skeletons, "the load did not go through a kept skeleton"
    assert _storages(first) and not _storages(first) & _storages(again)
    assert not _storages(first) & skeletons and not _storages(again) & skeletons


def test_a_safetensors_read_gives_each_tensors_shape_in_file_order(tmp_path):
    """The header's shapes stand in for asking each tensor; they must be the tensors' own, in order."""
    from zooadapt.weights.checkpoint import read_checkpoint

    state = {"b.weight": torch.zeros(3, 2), "a.bias": torch.zeros(5), "c.idx": torch.zeros((), dtype=torch.int64),
             "d.half": torch.zeros(2, 1, 4, dtype=torch.float16)}
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    for _ in range(2):  # the second read comes from the remembered header layout
        tensors = read_checkpoint(path)
        assert tensors.shapes is not None
        assert list(tensors.shapes.items()) == [(k, tuple(t.shape)) for k, t in tensors.items()]
        tensors.shapes["b.weight"] = (0,)  # the caller's own dict: a change does not reach the next read
    assert read_checkpoint(path).shapes["b.weight"] == (3, 2)


def test_a_copy_owns_its_unsaved_buffers_and_tied_parameters_from_the_start():
    """Non-persistent buffers never come from a checkpoint, and a parameter shared by two modules is
    one skeleton parameter: a copy holds its own of both as soon as it is built, still tied."""
    import torch.nn as nn

    from zooadapt.loading import meta_build
    from zooadapt.plugin_api import Family

    class Net(nn.Module):
        def __init__(self, num_classes: int) -> None:
            super().__init__()
            self.embed = nn.Linear(4, 4)
            self.out = nn.Linear(4, 4)
            self.out.weight = self.embed.weight
            self.register_buffer("table", torch.arange(6.0), persistent=False)
            self.register_buffer("kept", torch.zeros(2))

    family = Family(name="unsaved", build=lambda arch, num_classes=4: Net(num_classes),
                    stages=StageMap((Stage("embed", ("embed",)),), head="out"))
    meta_build.build_on_meta(family, "net", 4)  # the skeleton
    first, index = meta_build.build_indexed_on_meta(family, "net", 4)
    skeleton = meta_build._copied_from[first].model
    assert index is not None and index.module_list[0] is first
    for name in ("table", "kept"):
        mine, theirs = getattr(first, name), getattr(skeleton, name)
        assert mine is not theirs and mine.untyped_storage().data_ptr() != theirs.untyped_storage().data_ptr()
        assert torch.equal(mine, theirs)
    assert first.out.weight is first.embed.weight and first.embed.weight is not skeleton.embed.weight
    first.table.add_(1)
    second = meta_build.build_on_meta(family, "net", 4)
    assert torch.equal(second.table, torch.arange(6.0))


# -- one registry of process-wide caches ------------------------------------------------------------


def test_a_process_cache_keeps_its_most_recent_entries_up_to_its_bound():
    from zooadapt.contract.caches import ProcessCache

    cache = ProcessCache("test: bounded", 2, "a letter")
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # now the most recently used: "b" goes first
    cache.put("c", 3)
    assert list(cache) == ["a", "c"] and cache.get("b", "gone") == "gone"
    assert cache.get_or_make("d", lambda: 4) == 4 and cache.get_or_make("d", lambda: 5) == 4
    assert len(cache) == 2 and cache.info().maxsize == 2


def test_clear_caches_empties_every_registered_cache_and_cache_info_lists_them():
    from zooadapt.contract.caches import ProcessCache, cache_info, remembered

    calls = []

    @remembered("test: remembered", 4, "the number")
    def double(n):
        calls.append(n)
        return 2 * n

    mapping = ProcessCache("test: mapping", 4, "a word")
    mapping.put("x", 1)
    assert double(3) == double(3) == 6 and calls == [3]
    listed = {info.name: info for info in cache_info()}
    assert listed["test: mapping"].size == 1 and listed["test: remembered"].size == 1
    assert listed["test: remembered"].keyed_by == "the number" and listed["test: mapping"].maxsize == 4
    zooadapt.clear_caches()
    assert len(mapping) == 0 and double(3) == 6 and calls == [3, 3]


def test_a_remembered_answer_is_keyed_by_its_context_too():
    """What the answer depends on beyond the arguments (timm's version) is part of the key."""
    from zooadapt.contract.caches import remembered

    version = ["1.0"]

    @remembered("test: versioned", 8, "the name and the version", context=lambda: version[0])
    def entry(name):
        return f"{name}@{version[0]}"

    assert entry("a") == "a@1.0"
    version[0] = "2.0"
    assert entry("a") == "a@2.0"


def test_two_caches_under_one_name_are_refused_naming_both_places():
    from zooadapt.contract.caches import CacheNameError, ProcessCache

    held = ProcessCache("test: taken", 2, "anything")
    namespace = {"__name__": "elsewhere", "__file__": "/elsewhere.py", "ProcessCache": ProcessCache}
    with pytest.raises(CacheNameError, match=r"'test: taken'.*test_caches.*elsewhere"):
        exec("ProcessCache('test: taken', 2, 'anything')", namespace)  # noqa: S102
    with pytest.raises(CacheNameError, match="at least 1"):
        ProcessCache("test: unbounded", 0, "anything")
    assert held.name == "test: taken"


def test_every_cache_zooadapt_keeps_is_registered_and_bounded():
    """The caches issue 21 names, found in the registry once their modules are imported."""
    import importlib

    from zooadapt.contract.caches import cache_info

    for module in ("zooadapt.loading.meta_build", "zooadapt.loading.placement", "zooadapt.loading.adapt",
                   "zooadapt.loading.signature_index", "zooadapt.weights.checkpoint", "zooadapt.weights.hub_probe",
                   "zooadapt.host.layouts", "zooadapt.contract.family", "zooadapt.plugins.timm_entries",
                   "zooadapt.plugins.timm_stages", "zooadapt.plugins.timm_conversions"):
        importlib.import_module(module)
    names = {info.name for info in cache_info()}
    assert {"skeletons", "non-finite keys by file", "plans", "signature indexes", "signature index files",
            "safetensors header layouts", "reachable Hub endpoints", "files seen in the Hub cache",
            "registered layouts", "anchored patterns", "literal prefixes of patterns", "compiled layout patterns",
            "timm entries", "timm names", "timm version", "timm stage maps", "sub-module sizes of models",
            "model key tails under sub-modules", "timm models rebuilt on meta for their checkpoint filters",
            "timm checkpoint filters by architecture"} <= names
    assert [info for info in cache_info() if not (0 < info.maxsize <= 4096 and info.size <= info.maxsize)] == []


def test_no_module_keeps_an_unregistered_lru_cache():
    """A new ``functools.lru_cache`` would be a cache ``clear_caches()`` cannot reach: use
    ``remembered`` (the one left makes a class, whose identity must last the process)."""
    from pathlib import Path

    root = Path(zooadapt.__file__).resolve().parent
    allowed = {"timm_conversions.py", "caches.py"}  # _traced_class: a Tensor subclass made once; caches: the registry
    found = [str(path) for folder in (root, root.parent / "plugins") if folder.is_dir()
             for path in folder.rglob("*.py")
             if "lru_cache(" in path.read_text(encoding="utf-8") and path.name not in allowed]
    assert not found, f"functools.lru_cache in {found}; use zooadapt.contract.caches.remembered"


def test_a_skeleton_is_kept_per_default_dtype():
    """A build's parameters take torch's default dtype, so a skeleton built under float32 must not
    answer a build under float64."""
    from zooadapt.loading import meta_build

    family = get_registry().family("resnet")
    assert meta_build.build_on_meta(family, "resnet18", 5).conv1.weight.dtype == torch.float32
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert meta_build.build_on_meta(family, "resnet18", 5).conv1.weight.dtype == torch.float64
    finally:
        torch.set_default_dtype(before)


def test_a_loaded_model_shares_no_storage_with_a_second_load_and_loads_again_after_clear_caches(tmp_path):
    from zooadapt.contract.caches import cache_info
    from zooadapt.testing import torchvision_state_dict

    path = tmp_path / "r18.safetensors"
    state = torchvision_state_dict("resnet18", seed=6)
    save_file(state, str(path))
    first = zooadapt.load("resnet18", weights=str(path), num_classes=5)
    second = zooadapt.load("resnet18", weights=str(path), num_classes=5)
    assert not _storages(first) & _storages(second)
    zooadapt.clear_caches()
    assert {i.name: i.size for i in cache_info()}["skeletons"] == 0
    third = zooadapt.load("resnet18", weights=str(path), num_classes=5)
    assert {i.name: i.size for i in cache_info()}["skeletons"] == 1
    assert not _storages(third) & (_storages(first) | _storages(second))
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(third.state_dict()[key], value), key
    assert third.fc.out_features == 5

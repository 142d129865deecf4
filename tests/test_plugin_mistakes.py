"""A plugin author's mistake is named as the plugin's, where it is made, not found by a user as a
wrong model or a raw error from deep inside the planner.

Found by writing the neighbours of the tested plugins. Before: ``StripPrefix("")`` never returned;
a family's ``Rename`` with a bad regex or a replacement naming a missing group raised ``re.error``
from the planner; a ``(?i)`` pattern failed to compile at its first match; a resolver returning a
string raised ``AttributeError``; a ``zooadapt_list_models`` returning a string listed its letters;
one plugin object without a hash made every plugin fail, the built-ins too; a builder ignoring
``num_classes`` gave a 1000-way model for ``num_classes=3``; lazy modules gave torch's "Can't
access the shape of an uninitialized parameter"; a stage naming no module, or a head naming none,
was blamed on the user's ``freeze=`` or on the checkpoint; a builder that made its random
weights on ``meta`` returned a model that could not run.
"""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn as nn
from fake_plugins import one_family_plugin

import zooadapt
from zooadapt.errors import InvalidArgumentError, PluginError
from zooadapt.plugin_api import Family, ModelEntry, Stage, StageMap, WeightSource, hookimpl, plugin_failures
from zooadapt.rules import AddPrefix, Drop, Rename, StripPrefix


@pytest.mark.parametrize(("make", "message"), [
    (lambda: StripPrefix(""), r"StripPrefix\(''\): give the prefix to strip"),
    (lambda: AddPrefix(""), r"AddPrefix\(''\): give the prefix to add"),
    (lambda: Rename("blk(\\d", "b"), r"Rename\('blk\(\\\\d'\): not a regular expression \(missing \)"),
    (lambda: Rename("a(b)", "\\3"), r"the replacement does not fit the pattern \(invalid group reference 3"),
    (lambda: Rename("a(b)", ("\\1", "\\g<nope>")), r"unknown group name 'nope'"),
    (lambda: Drop("["), r"Drop\('\['\): not a regular expression \(unterminated character set"),
])
def test_a_rule_that_cannot_work_is_refused_when_it_is_made(make, message):
    with pytest.raises(InvalidArgumentError, match=message):
        make()


def test_a_pattern_with_leading_flags_matches():
    rule = Rename(r"(?i)fc\.(.+)", r"head.\1")
    assert (rule.rename("FC.weight"), rule.rename("fc.bias"), rule.rename("xfc.bias")) == \
        ("head.weight", "head.bias", None)


class _Tiny(nn.Module):
    def __init__(self, num_classes: int = 10, *, head_classes: int | None = None, lazy: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.body = nn.Conv2d(8, 8, 3)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.LazyLinear(num_classes) if lazy else nn.Linear(8, head_classes or num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.body(self.stem(x))))


def _plugin(build, stages=(("stem", ("stem",)), ("body", ("body",))), head="classifier", resolve=None, key_rules=()):
    family = Family(name="tiny", build=build, architectures=("t",), key_rules=tuple(key_rules),
                    stages=StageMap(tuple(Stage(n, p) for n, p in stages), head=head))
    plugin = one_family_plugin(family, ModelEntry(name="tiny_t", family="tiny", arch="t", num_classes=10,
                                                  source=WeightSource(url="https://example.invalid/tiny.pth")))
    if resolve is not None:
        plugin.zooadapt_resolve_model = hookimpl(resolve)  # type: ignore[attr-defined]
    return plugin


@pytest.mark.parametrize("pretrained", [False, True])
@pytest.mark.parametrize(("build", "stages", "head", "message"), [
    (lambda arch, num_classes=10, **o: _Tiny(num_classes, head_classes=1000), None, "classifier",
     r"ignored num_classes=3: its head 'classifier' \(Linear, weights \[1000, 8\]\) has no layer of 3 outputs"),
    (lambda arch, num_classes=10, **o: _Tiny(num_classes, lazy=True), None, "classifier",
     r"built a lazy module \('classifier.weight' has no shape until a first forward\)"),
    (lambda arch, num_classes=10, **o: _Tiny(num_classes), (("stem", ("stem",)), ("ghost", ("ghost",))),
     "classifier", r"declared stage 'ghost' over 'ghost', which names no module or tensor of the built _Tiny"),
    (lambda arch, num_classes=10, **o: _Tiny(num_classes), None, "fc",
     r"declared the head 'fc', which names no module of the built _Tiny"),
], ids=["ignores-num-classes", "lazy", "ghost-stage", "head-missing"])
def test_a_build_that_is_not_what_the_family_declares_is_the_plugins_fault(
        build, stages, head, message, pretrained, zooadapt_register_plugin, tmp_path):
    zooadapt_register_plugin(_plugin(build, stages or (("stem", ("stem",)), ("body", ("body",))), head), "tiny")
    kwargs = {}
    if pretrained:
        torch.save(_Tiny(10).state_dict(), tmp_path / "tiny.pth")
        kwargs = {"weights": tmp_path / "tiny.pth"}
    with pytest.raises(PluginError, match=message) as refused:
        zooadapt.load("tiny_t", num_classes=3, pretrained=pretrained, **kwargs)
    assert "ZOOADAPT_DISABLE_PLUGINS=tiny" in str(refused.value)


def test_a_correct_plugin_of_the_same_shape_loads(zooadapt_register_plugin, tmp_path):
    """The nearest neighbour of the cases above: nothing is refused that is right."""
    zooadapt_register_plugin(_plugin(lambda arch, num_classes=10, **o: _Tiny(num_classes)), "tiny")
    source = _Tiny(10).eval()
    torch.save(source.state_dict(), tmp_path / "tiny.pth")
    model = zooadapt.load("tiny_t", weights=tmp_path / "tiny.pth", freeze="stem").eval()
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)
    assert not model.stem.weight.requires_grad and model.body.weight.requires_grad


def test_a_builder_that_makes_its_weights_on_meta_is_refused(zooadapt_register_plugin):
    def build(arch: str, num_classes: int = 10, **options: object) -> nn.Module:
        with torch.device("meta"):
            return _Tiny(num_classes)

    zooadapt_register_plugin(_plugin(build), "tiny")
    with pytest.raises(PluginError, match=r"tensors on 'meta' \('stem.weight'\) when real weights were asked for"):
        zooadapt.load("tiny_t", num_classes=3, pretrained=False)
    model = zooadapt.load("tiny_t", num_classes=3, pretrained=False, device="meta")  # asked for: fine
    assert all(p.is_meta for p in model.parameters())


def test_a_resolver_answering_with_a_string_is_named(zooadapt_register_plugin):
    def resolve(name):  # type: ignore[no-untyped-def]
        return "resnet18" if name == "weird" else None

    plugin = types.new_class("Resolver")()
    plugin.zooadapt_resolve_model = hookimpl(resolve)
    zooadapt_register_plugin(plugin, "resolver")
    with pytest.raises(PluginError, match=r"plugin 'resolver' answered zooadapt_resolve_model\('weird'\) with a str"):
        zooadapt.load("weird")
    assert zooadapt.load("resnet18", pretrained=False).zooadapt.name == "resnet18"  # others unaffected


def test_a_list_of_names_given_as_one_string_is_not_read_letter_by_letter(zooadapt_register_plugin):
    def list_models(pattern):  # type: ignore[no-untyped-def]
        return "abc"

    plugin = types.new_class("Lister")()
    plugin.zooadapt_list_models = hookimpl(list_models)
    zooadapt_register_plugin(plugin, "lister")
    assert not {"a", "b", "c"} & set(zooadapt.list_models("*"))
    assert any(f.name == "lister" and "not a list of model names" in f.error for f in plugin_failures())


def test_one_plugin_object_without_a_hash_leaves_the_others_working(zooadapt_register_plugin):
    def register_families(register):  # type: ignore[no-untyped-def]
        pass

    unhashable = types.SimpleNamespace(zooadapt_register_families=hookimpl(register_families))
    zooadapt_register_plugin(unhashable, "mine")
    assert "resnet34" in zooadapt.list_models("resnet3*")
    assert any(f.name == "mine" and "has no hash" in f.error for f in plugin_failures())
    assert not any(f.name in ("resnet", "timm_family", "mobilenet") for f in plugin_failures())


def test_two_copies_of_the_head_through_a_family_rule_are_refused_like_the_backbones(zooadapt_register_plugin,
                                                                                    tmp_path):
    """The neighbour of the backbone's duplicates: a file holding the classifier under its own name
    and under one the family's rule renames onto it. Before, the copies made the named plan not fit,
    pairing by order took over and dropped both: a random head for num_classes=None, no error."""
    from zooadapt.errors import AmbiguousCheckpointError

    zooadapt_register_plugin(_plugin(lambda arch, num_classes=10, **o: _Tiny(num_classes),
                                     key_rules=(Rename(r"fc\.(.*)", r"classifier.\1"),)), "tiny")
    state = _Tiny(10).state_dict()
    torch.save({**state, "fc.weight": state["classifier.weight"] + 1, "fc.bias": state["classifier.bias"]},
               tmp_path / "two_heads.pth")
    with pytest.raises(AmbiguousCheckpointError, match=r"classifier.weight: from 'classifier.weight' and from "
                                                       r"'fc.weight'"):
        zooadapt.load("tiny_t", weights=tmp_path / "two_heads.pth")
    model = zooadapt.load("tiny_t", weights=tmp_path / "two_heads.pth", rules=["drop:fc[.].*"])
    assert torch.equal(model.classifier.weight, state["classifier.weight"])  # the line it names loads one


@pytest.mark.parametrize("pretrained", [False, True])
def test_a_builder_returning_no_module_is_named_the_same_way_on_either_path(pretrained, zooadapt_register_plugin,
                                                                            tmp_path):
    """On the meta path it was "raised AttributeError: 'dict' object has no attribute 'modules'"."""
    zooadapt_register_plugin(_plugin(lambda arch, num_classes=10, **o: {"not": "a model"}), "tiny")
    kwargs = {}
    if pretrained:
        torch.save(_Tiny(10).state_dict(), tmp_path / "tiny.pth")
        kwargs = {"weights": tmp_path / "tiny.pth"}
    with pytest.raises(PluginError, match=r"returned a dict, not a torch.nn.Module"):
        zooadapt.load("tiny_t", num_classes=3, pretrained=pretrained, **kwargs)


def test_a_misspelt_hook_of_a_plugin_registered_in_the_process_is_reported(zooadapt_register_plugin):
    """Entry points were checked as they loaded; ``pm.register`` (the docs' in-process recipe) was
    not, and the misspelt hook was never called, without a word."""
    def register_familys(register):  # type: ignore[no-untyped-def]
        register(Family(name="never", build=lambda arch, num_classes=10: _Tiny(num_classes),
                        stages=StageMap((Stage("stem", ("stem",)),), head="classifier")))

    plugin = types.new_class("Misspelt")()
    plugin.zooadapt_register_familys = hookimpl(register_familys)
    zooadapt_register_plugin(plugin, "misspelt")
    assert "resnet34" in zooadapt.list_models("resnet3*")
    assert any(f.name == "misspelt" and "zooadapt_register_familys" in f.error for f in plugin_failures())
    assert not zooadapt.plugin_api.load_plugins().is_registered(plugin)


def test_the_width_of_a_sequential_head_is_known_when_it_is_removed(zooadapt_register_plugin):
    """``num_classes=0`` on a family whose head is ``Sequential(Dropout, Linear)``: the features'
    width came back None (only a head with its own ``.weight`` was read)."""
    def build(arch: str, num_classes: int = 10, **options: object) -> nn.Module:
        model = _Tiny(num_classes)
        model.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(8, num_classes))
        return model

    zooadapt_register_plugin(_plugin(build), "tiny")
    model = zooadapt.load("tiny_t", num_classes=0, pretrained=False)
    assert model.zooadapt.num_features == 8 and model(torch.randn(1, 3, 16, 16)).shape == (1, 8)

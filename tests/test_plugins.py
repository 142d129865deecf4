"""The plugin mechanism: built-ins, a plugin registered in a test, the installed example."""

from __future__ import annotations

import importlib.metadata as md
import sys

import pytest
import torch
from fake_plugins import install_entry_points

import zooadapt
from zooadapt.errors import PluginConflictError, PluginError, UnknownModelError
from zooadapt.host.plugin_manager import get_plugin_manager, load_plugins, plugin_failures, plugin_infos
from zooadapt.host.registry import build_registry, reset_registry
from zooadapt.plugin_api import DataConfig, Family, ModelEntry, Stage, StageMap, WeightSource, get_registry, hookimpl


class TinyNet(torch.nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.out = torch.nn.Linear(4, num_classes)

    def forward(self, x):
        return self.out(self.pool(self.body(x)).flatten(1))


class TinyPlugin:
    """A plugin object, as a test or a notebook would write one."""

    def __init__(self, model_name: str = "tinynet") -> None:
        self.model_name = model_name

    @hookimpl
    def zooadapt_register_families(self, register):
        register(Family(name="tiny", build=lambda arch, num_classes=10: TinyNet(num_classes),
                        stages=StageMap((Stage("body", ("body",)),), head="out")))

    @hookimpl
    def zooadapt_register_models(self, register):
        register(ModelEntry(name=self.model_name, family="tiny", arch="tiny",
                            source=WeightSource(repo_id="test/tinynet", filename="model.safetensors")))


@pytest.fixture
def with_tiny_plugin():
    pm = load_plugins()
    plugin = TinyPlugin()
    pm.register(plugin, name="tiny-test")
    from zooadapt.host.registry import reset_registry

    reset_registry()
    yield plugin
    pm.unregister(plugin)
    reset_registry()


def test_builtin_plugins_are_ordinary_plugins():
    names = {info.name for info in plugin_infos() if info.builtin}
    assert "resnet" in names
    assert load_plugins().get_plugin("resnet") is sys.modules["zooadapt.plugins.resnet"]
    assert "resnet" in get_registry().families


def test_registered_plugin_loads_through_the_hub(hub, with_tiny_plugin):
    from zooadapt.testing import safetensors_bytes, seeded_state_dict

    state = seeded_state_dict(TinyNet(), seed=5)
    hub.add_file("test/tinynet", "model.safetensors", safetensors_bytes(state))
    assert "tinynet" in zooadapt.list_models("tiny*")
    model = zooadapt.load("tinynet", num_classes=2, freeze="body")
    assert torch.equal(model.body[0].weight, state["body.0.weight"])
    assert model.out.out_features == 2 and not model.body[0].weight.requires_grad


def test_a_name_two_plugins_register_is_refused_naming_both_and_only_that_name(caplog):
    import zooadapt.plugins.resnet as resnet

    pm = get_plugin_manager()
    pm.register(resnet, name="resnet")
    pm.register(TinyPlugin(), name="first-plugin")
    pm.register(TinyPlugin(), name="second-plugin")
    with caplog.at_level("WARNING", logger="zooadapt"):
        registry = build_registry(pm)  # one installed plugin's mistake must not stop every load
    for ask in (registry.family, registry.entry):  # the family and the model named the same way: neither used
        with pytest.raises(PluginConflictError, match=r"'first-plugin' and 'second-plugin'.*ZOOADAPT_DISABLE_PLUGINS"):
            ask("tiny" if ask == registry.family else "tinynet")
    assert "tinynet" not in registry.names() and "tinynet" in registry.unavailable
    assert registry.entry("resnet18").family == "resnet" and registry.family("resnet").name == "resnet"
    warned = [r.getMessage() for r in caplog.records if "registered by 2 providers" in r.getMessage()]
    assert len(warned) == 2 and {m.split(" is ")[0] for m in warned} == {"family 'tiny'", "model 'tinynet'"}


def test_a_third_claimant_is_named_too_and_strict_mode_raises_at_once(monkeypatch):
    pm = get_plugin_manager()
    for who in ("first", "second", "third"):
        pm.register(TinyPlugin(), name=who)
    with pytest.raises(PluginConflictError, match=r"3 providers: 'first', 'second' and 'third'"):
        build_registry(pm).entry("tinynet")
    monkeypatch.setenv("ZOOADAPT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginConflictError, match="'first', 'second' and 'third'"):
        build_registry(pm)


def test_loading_a_contested_name_says_why_while_the_others_load():
    import torchvision

    pm = load_plugins()
    greedy = TinyPlugin("resnet18")
    pm.register(greedy, name="greedy-plugin")
    reset_registry()
    try:
        with pytest.raises(PluginConflictError, match=r"model 'resnet18'.*'resnet' and 'greedy-plugin'"):
            zooadapt.load("resnet18", num_classes=3)
        assert "resnet18" not in zooadapt.list_models("resnet*") and "resnet34" in zooadapt.list_models("resnet*")
        state = torchvision.models.resnet34().state_dict()
        model = zooadapt.load("resnet34", weights=state, num_classes=3)  # the rest of the family loads
        assert torch.equal(model.layer4[0].conv1.weight, state["layer4.0.conv1.weight"]) and model.fc.out_features == 3
        assert get_registry().family("tiny").provider == "greedy-plugin"  # and the plugin's own family
    finally:
        pm.unregister(greedy)
        reset_registry()


def test_model_name_clashing_with_a_registry_file(tmp_path):
    path = tmp_path / "team.toml"
    path.write_text('[models.tinynet]\nfamily = "tiny"\narch = "tiny"\n')
    pm = get_plugin_manager()
    pm.register(TinyPlugin(), name="tiny-plugin")
    with pytest.raises(PluginConflictError, match=r"'tiny-plugin'.*team.toml"):
        build_registry(pm, [path]).entry("tinynet")


def test_plugin_raising_in_a_hook_is_reported_and_skipped(caplog):
    class Broken:
        @hookimpl
        def zooadapt_register_families(self, register):
            raise RuntimeError("boom")

    pm = get_plugin_manager()
    import zooadapt.plugins.resnet as resnet

    pm.register(resnet, name="resnet")
    pm.register(Broken(), name="broken")
    reg = build_registry(pm)
    assert "resnet" in reg.families
    assert any(f.name == "broken" and "boom" in f.error for f in plugin_failures())


def _installed(dist: str) -> bool:
    try:
        md.distribution(dist)
    except md.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _installed("zooadapt-squeezenet"), reason="examples/zooadapt-squeezenet not installed")
def test_installed_example_plugin_through_entry_point(tmp_path):
    from zooadapt.testing import torchvision_state_dict

    infos = {i.name: i for i in plugin_infos()}
    assert infos["squeezenet"].distribution == "zooadapt-squeezenet" and not infos["squeezenet"].builtin
    assert {"squeezenet1_0", "squeezenet1_1"} <= set(zooadapt.list_models("squeeze*"))
    state = torchvision_state_dict("squeezenet1_1", seed=11)
    path = tmp_path / "squeezenet1_1.pth"
    torch.save(state, path)
    model = zooadapt.load("squeezenet1_1", weights=path, num_classes=3, freeze="features")
    assert torch.equal(model.features[12].expand3x3.weight, state["features.12.expand3x3.weight"])
    assert model.classifier[1].out_channels == 3
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["classifier.1.weight",
                                                                           "classifier.1.bias"]


def test_broken_entry_point_is_reported_with_distribution(monkeypatch):
    """A third-party plugin whose import fails is named with its distribution and skipped."""
    install_entry_points(monkeypatch, [("broken", "zooadapt-broken", "zooadapt_no_such_module_xyz")])
    failures = plugin_failures()
    assert any(f.distribution == "zooadapt-broken" and f.phase == "import" for f in failures)
    assert "resnet34" in zooadapt.list_models()  # the host keeps working

    monkeypatch.setenv("ZOOADAPT_STRICT_PLUGINS", "1")
    from zooadapt.host.plugin_manager import reset_plugins

    reset_plugins()
    with pytest.raises(PluginError, match="zooadapt-broken"):
        load_plugins()


def test_disabling_a_plugin_takes_its_family_and_models_away(monkeypatch, capsys):
    from zooadapt.cli import main as cli

    monkeypatch.setenv("ZOOADAPT_DISABLE_PLUGINS", "resnet")
    registry = get_registry()
    assert "resnet" not in registry.families
    assert not {"resnet18", "resnet34", "resnet50"} & set(zooadapt.list_models("resnet*"))
    assert "mobilenet_v2" in zooadapt.list_models("mobilenet*")  # the other plugins stay
    with pytest.raises(PluginError, match=r"'resnet'.*ZOOADAPT_DISABLE_PLUGINS"):
        zooadapt.load("resnet18", pretrained=False)
    with pytest.raises(PluginError, match="family 'resnet'"):
        registry.family("resnet")
    assert cli(["list", "resnet*"]) == 0
    listed = capsys.readouterr().out.split()
    assert "resnet18" not in listed and "resnet34" not in listed
    assert cli(["info", "resnet18"]) == 2
    err = capsys.readouterr().err
    assert "disabled" in err and "ZOOADAPT_DISABLE_PLUGINS" in err and "UnknownFamily" not in err


def test_registry_entry_of_a_missing_family_is_unavailable_with_the_reason(tmp_path, monkeypatch):
    path = tmp_path / "team.toml"
    path.write_text('[models.shiny]\nfamily = "shinynet"\narch = "shiny_s"\n'
                    '[models.my_resnet]\nfamily = "resnet"\narch = "resnet18"\n')
    monkeypatch.setenv("ZOOADAPT_REGISTRY", str(path))
    monkeypatch.setenv("ZOOADAPT_DISABLE_PLUGINS", "resnet")
    registry = get_registry()
    assert "no installed plugin provides its family 'shinynet'" in registry.why_unavailable("shiny")
    assert "'resnet' is disabled" in registry.why_unavailable("my_resnet")
    assert not {"shiny", "my_resnet"} & set(zooadapt.list_models())
    with pytest.raises(UnknownModelError, match="shinynet"):
        zooadapt.load("shiny", pretrained=False)


def test_a_wrapper_on_the_resolver_keeps_unknown_names_unknown():
    seen: list[object] = []

    class Observer:
        @hookimpl(wrapper=True)
        def zooadapt_resolve_model(self, name):
            result = yield
            seen.append(result)
            return result

    pm = load_plugins()
    observer = Observer()
    pm.register(observer, name="observer")
    try:
        with pytest.raises(UnknownModelError, match="no_such_model_anywhere"):
            get_registry().entry("no_such_model_anywhere")
        assert seen == [[]]  # the wrapper saw the (empty) answers of every resolver
        assert get_registry().entry("convnext_atto").family == "timm"  # and passes real answers on
    finally:
        pm.unregister(observer)


def test_two_resolvers_claiming_a_name_are_a_conflict_naming_both():
    class Claimer:
        def __init__(self, family: str) -> None:
            self.family = family

        @hookimpl
        def zooadapt_resolve_model(self, name):
            return ModelEntry(name=name, family=self.family, arch="x") if name == "contested" else None

    pm = load_plugins()
    first, second = Claimer("a"), Claimer("b")
    pm.register(first, name="first-claimer")
    pm.register(second, name="second-claimer")
    try:
        with pytest.raises(PluginConflictError, match=r"'first-claimer'.*'second-claimer'"):
            get_registry().entry("contested")
        assert get_registry().entry("resnet18").family == "resnet"  # other names unaffected
    finally:
        pm.unregister(first)
        pm.unregister(second)


def test_hooks_are_called_through_pluggy_not_by_hand():
    """``pm.trace`` sees every hook call the registry makes: nothing calls an implementation by hand."""
    from zooadapt.host.registry import reset_registry

    calls: list[str] = []
    pm = load_plugins()
    undo = pm.add_hookcall_monitoring(lambda hook, impls, kwargs: calls.append(hook), lambda *a: None)
    try:
        reset_registry()
        get_registry().entry("convnext_atto")
        zooadapt.list_models("resnet1*")
    finally:
        undo()
    assert {"zooadapt_register_families", "zooadapt_register_models", "zooadapt_resolve_model",
            "zooadapt_list_models"} <= set(calls)


def test_broken_resolver_is_named_and_others_still_resolve():
    class BrokenResolver:
        @hookimpl
        def zooadapt_resolve_model(self, name):
            raise RuntimeError("resolver bug")

    class GoodResolver:
        @hookimpl
        def zooadapt_resolve_model(self, name):
            return ModelEntry(name=name, family="resnet", arch="resnet18") if name == "my-resnet" else None

    pm = load_plugins()
    good, broken = GoodResolver(), BrokenResolver()
    pm.register(good, name="good-resolver")
    pm.register(broken, name="broken-resolver")  # registered last: asked first
    try:
        from zooadapt.host.registry import reset_registry

        reset_registry()
        assert get_registry().entry("my-resnet").arch == "resnet18"
        assert any(f.name == "broken-resolver" and f.phase == "zooadapt_resolve_model" for f in plugin_failures())
    finally:
        pm.unregister(good)
        pm.unregister(broken)


@pytest.fixture
def shufflenet_example():
    """docs/plugins.md's example plugin, registered as an installed plugin would be."""
    from test_docs import load_example

    from zooadapt.host.registry import reset_registry

    module = load_example()
    pm = load_plugins()
    pm.register(module, name="shufflenet")
    reset_registry()
    yield pm
    pm.unregister(name="shufflenet")
    reset_registry()


def test_hook_zooadapt_claims_name(shufflenet_example):
    from zooadapt.host.hooks import PluginHooks

    hooks = PluginHooks(shufflenet_example)
    assert hooks.claims_name("torchvision/shufflenet_v2_x1_0")  # the example's
    assert hooks.claims_name("timm/convnext_atto.d2_in1k")  # the timm plugin's
    assert not hooks.claims_name("checkpoints/epoch_90.pth") and not hooks.claims_name("my-org/model")
    entry = get_registry().entry("torchvision/shufflenet_v2_x1_0")
    assert entry.arch == "shufflenet_v2_x1_0"


def test_hook_zooadapt_data_config(shufflenet_example):
    import timm
    import torchvision.models as tvm

    from zooadapt.host.hooks import PluginHooks

    hooks = PluginHooks(shufflenet_example)
    with torch.device("meta"):
        shufflenet = tvm.shufflenet_v2_x0_5()
        convnext = timm.create_model("convnext_atto.d2_in1k")
        resnet = tvm.resnet18()
    assert hooks.data_config(shufflenet) == DataConfig()  # the example's answer
    got = hooks.data_config(convnext)  # the timm plugin's, from the model's pretrained_cfg, as timm reads it
    expected = timm.data.resolve_data_config(model=convnext)
    assert (got.input_size, got.interpolation, got.crop_pct) == (
        tuple(expected["input_size"]), expected["interpolation"], expected["crop_pct"])
    assert hooks.data_config(resnet) is None  # nobody's: the caller says it does not know


def test_a_resolver_that_raises_is_reported_and_the_call_repeated_without_it():
    """One broken resolver, found from the traceback, does not hide the others' answers."""
    class Broken:
        @hookimpl
        def zooadapt_resolve_model(self, name):
            return {}["boom"]  # a KeyError from inside the implementation

    pm = load_plugins()
    broken = Broken()
    pm.register(broken, name="broken-resolver")
    try:
        from zooadapt.host.registry import reset_registry

        reset_registry()
        assert get_registry().entry("convnext_atto").family == "timm"
        assert any(f.name == "broken-resolver" and "KeyError" in f.error for f in plugin_failures())
    finally:
        pm.unregister(broken)


def test_a_resolvers_verdict_does_not_hide_another_plugins_answer():
    """timm refuses ``resnet50.house_tag`` (no such tag); a plugin that knows the name still answers,
    and without it timm's verdict, with the valid tags, is what the user sees."""
    class House:
        @hookimpl
        def zooadapt_resolve_model(self, name):
            return ModelEntry(name=name, family="resnet", arch="resnet50") if name == "resnet50.house_tag" else None

    with pytest.raises(UnknownModelError, match="its tags are"):
        get_registry().entry("resnet50.house_tag")
    pm = load_plugins()
    house = House()
    pm.register(house, name="house")
    try:
        assert get_registry().entry("resnet50.house_tag").family == "resnet"
        with pytest.raises(UnknownModelError, match="its tags are"):
            get_registry().entry("resnet50.other_tag")
    finally:
        pm.unregister(house)


def test_a_conversion_names_and_fuses_keys_as_the_planner_does():
    """``plugin_api.renamed_as_planned`` and ``fused_parts``: what a layout's own conversion uses to
    name the tensors its rules would have named (rules in order until a model key; a drop is None)
    and to join a ``Fuse`` rule's parts (complete groups only, in the rule's order)."""
    from zooadapt.plugin_api import Drop, Fuse, Rename, StripPrefix, fused_parts, renamed_as_planned

    rules = [StripPrefix("m."), Rename(r"enc\.(\d+)\.(.+)", r"blocks.\1.\2"), Drop(r"junk\..*")]
    assert renamed_as_planned("m.enc.0.w", rules, {"blocks.0.w"}) == "blocks.0.w"
    assert renamed_as_planned("m.junk.w", rules, set()) is None
    assert renamed_as_planned("other.w", rules, set()) == "other.w"
    fuse = Fuse(r"b\.(?P<i>\d+)\.(?P<part>q|k|v)\.w", r"blocks.\g<i>.qkv.w", ("q", "k", "v"))
    keys = ["b.0.v.w", "b.0.q.w", "b.0.k.w", "x.w"]
    assert fused_parts(keys, [fuse]) == {"blocks.0.qkv.w": (fuse, ("b.0.q.w", "b.0.k.w", "b.0.v.w"))}
    assert fused_parts(keys[:2], [fuse]) is None  # a group missing a part
    assert fused_parts(keys, [fuse], skip=lambda key: key.startswith("b.")) == {}

"""A file's layout decides what is built: hyperparameters no tensor carries (BatchNorm eps).

torchvision and timm publish networks under the same names whose tensors fit each other's models;
torchvision built EfficientNet-B5..B7 and MobileNet v3 with BatchNorm eps 1e-3, timm (and
zooadapt's entries for timm's weights) with 1e-5. The layout is read from the file's keys before
the build (``zooadapt.loading.layout_build``), a user's own option wins, the report and the plan
say which zoo's network was built with what, and a saved model is rebuilt the same.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from zooadapt.plugins import mobilenet, torchvision_zoo_layouts

import zooadapt
from zooadapt.host.layouts import registered_layouts
from zooadapt.loading.layout_build import PluginConflictError, layout_build
from zooadapt.plugin_api import Family, Layout, StageMap
from zooadapt.testing import seeded_state_dict

EFFICIENTNET = torchvision_zoo_layouts.TORCHVISION_EFFICIENTNET
X = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))


def _family(name: str) -> Family:
    return Family(name=name, build=lambda arch, num_classes=1000: None, stages=StageMap((), head=""))


def _bn_eps(model: torch.nn.Module) -> set[float]:
    return {m.eps for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}


def _torchvision_file(name: str, tmp_path, seed: int = 0) -> tuple[torch.nn.Module, str]:
    """torchvision's model with seeded weights (BatchNorm statistics far from 0 and 1, so eps
    shows in the outputs) and its state dict saved as torchvision users save it."""
    model = torchvision.models.get_model(name, weights=None).eval()
    model.load_state_dict(seeded_state_dict(model, seed))
    path = tmp_path / f"{name}.pth"
    torch.save(model.state_dict(), path)
    return model, str(path)


def _same(reference: torch.nn.Module, model: torch.nn.Module) -> bool:
    with torch.no_grad():
        expected, got = reference.eval()(X), model.eval()(X)
    return (got - expected).abs().max().item() <= 1e-6 * expected.abs().max().item()


# -- the layout's options, as data --------------------------------------------------------------


def test_a_layouts_build_options_are_per_architecture_and_ignore_timms_tag():
    assert EFFICIENTNET.options_for("efficientnet_b5.sw_in12k_ft_in1k") == {"bn_eps": 1e-3}
    assert EFFICIENTNET.options_for("efficientnet_b7") == {"bn_eps": 1e-3}
    assert EFFICIENTNET.options_for("efficientnet_b0.ra_in1k") == {}
    keys = ["features.1.0.block.0.0.weight"]
    timm = _family("timm")
    assert layout_build(keys, timm, "efficientnet_b2", {}, [EFFICIENTNET]).options == {}  # found, builds as it is
    assert layout_build(keys, timm, "efficientnetv2_rw_s", {}, [EFFICIENTNET]) is None  # not an architecture of its
    assert layout_build(keys, _family("torchvision"), "efficientnet_b5", {}, [EFFICIENTNET]) is None  # another family
    assert layout_build(["conv_stem.weight"], timm, "efficientnet_b5", {}, [EFFICIENTNET]) is None  # timm's own file


def test_the_users_option_wins_and_the_note_says_what_the_layout_wanted():
    keys = ["features.1.0.block.0.0.weight"]
    decided = layout_build(keys, _family("timm"), "efficientnet_b6", {"bn_eps": 1e-5}, [EFFICIENTNET])
    assert decided is not None
    assert decided.options == {} and decided.overridden == {"bn_eps": 1e-3} and decided.built == {"bn_eps": 1e-5}
    note = decided.note("timm", "efficientnet_b6", {"bn_eps": 1e-5})
    assert "bn_eps=1e-05 as you asked" in note and "bn_eps=0.001" in note and "torchvision" in note
    same = layout_build(keys, _family("timm"), "efficientnet_b6", {"bn_eps": 1e-3}, [EFFICIENTNET])
    assert same is not None and same.overridden == {} and same.built == {"bn_eps": 1e-3}


def test_two_layouts_asking_for_different_values_are_refused_naming_both():
    other = Layout(name="other-efficientnet", family="timm", detect=r"features\.1\.0\.block\.0\.0\.weight", rules=(),
                   provider="someone", zoo="elsewhere", build_options={"efficientnet_b5": {"bn_eps": 1e-4}})
    with pytest.raises(PluginConflictError, match="torchvision-efficientnet.*other-efficientnet.*bn_eps="):
        layout_build(["features.1.0.block.0.0.weight"], _family("timm"), "efficientnet_b5", {}, [EFFICIENTNET, other])
    assert layout_build(["features.1.0.block.0.0.weight"], _family("timm"), "efficientnet_b5", {"bn_eps": 1e-3},
                        [EFFICIENTNET, other]).built == {"bn_eps": 1e-3}  # the user's option settles it


def test_every_torchvision_layout_names_its_zoo_and_is_registered():
    registered = {lay.name: lay for lay in registered_layouts()}
    for layout in (*torchvision_zoo_layouts.LAYOUTS, mobilenet.TORCHVISION_V3):
        assert layout.zoo == "torchvision"
        assert registered[layout.name].build_options == layout.build_options  # the registry keeps the options


# -- the report and the plan name what was built, for each torchvision layout --------------------


@pytest.mark.parametrize(("name", "layout", "options"), [
    ("mobilenet_v3_small", "torchvision-mobilenet-v3", "bn_eps=0.001"),
    ("efficientnet_b0", "torchvision-efficientnet", "no build option differs"),
    ("efficientnet_b7", "torchvision-efficientnet", "bn_eps=0.001"),
    ("convnext_tiny", "torchvision-convnext", "no build option differs"),
    ("vgg11", "torchvision-vgg", "no build option differs"),
])
def test_the_plan_says_which_zoos_network_was_built_for_each_layout(name, layout, options):
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in torchvision.models.get_model(name, weights=None).state_dict().items()}
    family = "mobilenet_v3" if name.startswith("mobilenet") else "timm"
    plan = zooadapt.plan_for(name, shapes, num_classes=1000)
    assert plan.fits
    built = [n for n in plan.notes if n.startswith("built ")]
    assert len(built) == 1 and f"the {family} family's {name}" in built[0], plan.notes
    assert "torchvision's file" in built[0] and f"the {layout} layout" in built[0] and options in built[0]
    assert built[0] in plan.summary()


# -- loads ---------------------------------------------------------------------------------------


def test_torchvisions_mobilenet_v3_file_computes_what_torchvision_computed(tmp_path):
    reference, path = _torchvision_file("mobilenet_v3_small", tmp_path)
    model = zooadapt.load("mobilenet_v3_small", weights=path, num_classes=1000)
    assert _bn_eps(model) == {1e-3}
    assert _same(reference, model)
    report = str(model.zooadapt.report)
    assert "built the mobilenet_v3 family's mobilenet_v3_small with bn_eps=0.001, as torchvision's file needs" in report
    assert model.zooadapt.build_options == {"bn_eps": 1e-3}


@pytest.mark.slow
def test_timms_mobilenet_v3_weights_still_build_with_timms_eps_in_the_same_process(tmp_path):
    """The skeleton kept for the 1e-3 build never serves timm's file, nor the other way round."""
    import timm

    _, tv_path = _torchvision_file("mobilenet_v3_small", tmp_path)
    first = zooadapt.load("mobilenet_v3_small", weights=tv_path)
    source = timm.create_model("mobilenetv3_small_100", pretrained=False).eval()
    source.load_state_dict(seeded_state_dict(source, 1))
    timm_path = tmp_path / "timm.pth"
    torch.save(source.state_dict(), timm_path)
    model = zooadapt.load("mobilenet_v3_small", weights=timm_path)
    again = zooadapt.load("mobilenet_v3_small", weights=tv_path)
    assert _bn_eps(first) == _bn_eps(again) == {1e-3}
    assert _bn_eps(model) == {1e-5}
    assert not any(n.startswith("built ") for n in model.zooadapt.report.plan.notes)
    assert model.zooadapt.build_options is None
    with torch.no_grad():
        expected, got = source(X), model.eval()(X)
    assert (got - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()


def test_the_users_build_option_wins_over_the_layouts(tmp_path):
    reference, path = _torchvision_file("mobilenet_v3_small", tmp_path)
    model = zooadapt.load("mobilenet_v3_small", weights=path, bn_eps=1e-5)
    assert _bn_eps(model) == {1e-5}
    assert not _same(reference, model)  # what the user asked for, not what torchvision computed
    note = next(n for n in model.zooadapt.report.plan.notes if n.startswith("built "))
    assert "bn_eps=1e-05 as you asked, not the bn_eps=0.001 that torchvision's files need" in note


@pytest.mark.parametrize("origin", ["torchvision", pytest.param("timm", marks=pytest.mark.slow)])
def test_a_saved_model_is_rebuilt_with_the_eps_it_was_built_with(origin, tmp_path):
    """Saved keys are torchvision's names either way (the mobilenet_v3 family builds torchvision's
    network); the saved build options, not the saved keys, decide the reload's eps."""
    if origin == "torchvision":
        _, path = _torchvision_file("mobilenet_v3_small", tmp_path)
    else:
        import timm

        source = timm.create_model("mobilenetv3_small_100", pretrained=False)
        path = tmp_path / "timm.pth"
        torch.save(seeded_state_dict(source, 2), path)
    model = zooadapt.load("mobilenet_v3_small", weights=path, num_classes=3).eval()
    zooadapt.save(model, tmp_path / "saved")
    reloaded = zooadapt.load(str(tmp_path / "saved")).eval()
    eps = {1e-3} if origin == "torchvision" else {1e-5}
    assert _bn_eps(model) == _bn_eps(reloaded) == eps
    assert _same(model, reloaded)
    zooadapt.save(reloaded, tmp_path / "again")  # saved again, the options go with it
    assert _bn_eps(zooadapt.load(str(tmp_path / "again"))) == eps


@pytest.mark.slow
def test_timms_own_efficientnet_b5_file_builds_with_timms_eps(tmp_path):
    import timm

    source = timm.create_model("efficientnet_b5", pretrained=False).eval()
    source.load_state_dict(seeded_state_dict(source, 0))
    path = tmp_path / "timm_b5.pth"
    torch.save(source.state_dict(), path)
    model = zooadapt.load("efficientnet_b5", weights=path, num_classes=1000)
    assert _bn_eps(model) == {1e-5}
    assert _same(source, model)
    assert not any(n.startswith("built ") for n in model.zooadapt.report.plan.notes)


@pytest.mark.slow
def test_torchvisions_efficientnet_b5_saved_and_reloaded_computes_the_same(tmp_path):
    reference, path = _torchvision_file("efficientnet_b5", tmp_path)
    model = zooadapt.load("efficientnet_b5", weights=path, num_classes=1000)
    assert _bn_eps(model) == {1e-3} and _same(reference, model)
    zooadapt.save(model, tmp_path / "saved")
    reloaded = zooadapt.load(str(tmp_path / "saved"))
    assert _bn_eps(reloaded) == {1e-3} and _same(reference, reloaded)


# -- the layout that reads the file decides, not every layout that recognises it ----------------


class _Layouts:
    """A plugin registering the given layouts (unregistered by the fixture)."""

    def __init__(self, *layouts: Layout) -> None:
        self.layouts = layouts

    @zooadapt.plugin_api.hookimpl
    def zooadapt_register_layouts(self, register):
        for layout in self.layouts:
            register(layout)


@pytest.fixture
def with_layouts():
    from zooadapt.host.plugin_manager import load_plugins

    pm = load_plugins()
    names = []

    def add(*layouts: Layout) -> None:
        names.append(f"layouts-{len(names)}")
        pm.register(_Layouts(*layouts), name=names[-1])

    yield add
    for name in names:
        pm.unregister(name=name)


# A layout that recognises every torchvision ResNet file (its detect names conv1) but reads
# another project's names (``stem.``): a torchvision file is not its file, whatever its detect says.
_STEM = Layout(name="stem-resnet", family="resnet", detect=r"(?:stem\.)?conv1\.weight",
               rules=(zooadapt.plugin_api.Rename(r"stem\.(.+)", r"\1"),), zoo="stem-zoo",
               build_options={"resnet18": {"BatchNorm2d.eps": 1e-3}})


def _resnet18_file(tmp_path, prefix: str = "") -> tuple[torch.nn.Module, str]:
    reference = torchvision.models.resnet18(weights=None).eval()
    reference.load_state_dict(seeded_state_dict(reference, 18))
    path = tmp_path / "r18.pth"
    torch.save({prefix + k: v for k, v in reference.state_dict().items()}, path)
    return reference, str(path)


def test_a_layout_that_recognises_the_file_but_does_not_read_it_does_not_build_the_model(tmp_path, with_layouts):
    """Before: the eps of every layout whose detect matched was built in, so a torchvision file
    that such a layout merely recognised loaded into a network computing something else."""
    with_layouts(_STEM)
    reference, path = _resnet18_file(tmp_path)
    model = zooadapt.load("resnet18", weights=path, num_classes=1000)
    assert _bn_eps(model) == {1e-5}
    assert _same(reference, model)
    assert not any(n.startswith("built ") or "stem-resnet" in n for n in model.zooadapt.report.plan.notes)
    assert model.zooadapt.build_options is None


def test_the_layout_that_reads_the_file_builds_the_model(tmp_path, with_layouts):
    """Its neighbour: the same file in the layout's own names is built as the layout asks."""
    with_layouts(_STEM)
    reference, path = _resnet18_file(tmp_path, prefix="stem.")
    model = zooadapt.load("resnet18", weights=path, num_classes=1000)
    assert _bn_eps(model) == {1e-3}
    assert not _same(reference, model)  # built with the eps the layout's zoo trained with
    note = next(n for n in model.zooadapt.report.plan.notes if n.startswith("built "))
    assert "BatchNorm2d.eps=0.001" in note and "the stem-resnet layout" in note
    assert model.zooadapt.report.plan.layout == "stem-resnet"


def test_of_two_layouts_recognising_a_file_the_note_names_the_one_that_read_it(tmp_path, with_layouts):
    """Two layouts ask for the same options; the plan reads the file with the second: the note
    names that one, not the first found."""
    decoy = Layout(name="decoy-resnet", family="resnet", detect=r"(?:stem\.)?conv1\.weight",
                   rules=(zooadapt.plugin_api.Rename(r"elsewhere\.(.+)", r"\1"),
                          zooadapt.plugin_api.Rename(r"stem\.conv1\.weight", r"nowhere.weight")),
                   zoo="decoy-zoo", build_options={"resnet18": {"BatchNorm2d.eps": 1e-3}})
    with_layouts(decoy, _STEM)
    _, path = _resnet18_file(tmp_path, prefix="stem.")
    model = zooadapt.load("resnet18", weights=path, num_classes=1000)
    assert _bn_eps(model) == {1e-3}
    note = next(n for n in model.zooadapt.report.plan.notes if n.startswith("built "))
    assert "the stem-resnet layout" in note and "decoy" not in note


# -- unless, and options-only layouts of the reading layout's zoo ------------------------------------


def test_unless_keeps_a_layout_off_a_file_with_that_key_whatever_form_the_keys_come_in():
    layout = Layout(name="one-head", family="resnet", detect=r"classifier\.weight", unless=r"classifier_distill\..+",
                    rules=())
    one, two = ["body.w", "classifier.weight"], ["body.w", "classifier.weight", "classifier_distill.weight"]
    for form in (list, set, dict.fromkeys, iter):
        assert layout.matches(form(one)) and not layout.matches(form(two))
        assert not layout.matches(form(["body.w"]))


def _options_only(zoo: str) -> Layout:
    """Recognises a stem-resnet file without an ``extra`` head and asks for ReLU(inplace=False):
    a setting that shows on the model and changes nothing it computes."""
    return Layout(name=f"stem-one-head-{zoo}", family="resnet", detect=r"stem\.fc\.weight", unless=r"stem\.extra\..+",
                  rules=(), zoo=zoo, build_options={"resnet18": {"ReLU.inplace": False}})


@pytest.mark.parametrize("zoo, lends", [("stem-zoo", True), ("another-zoo", False)])
def test_an_options_only_layout_lends_its_options_to_a_reading_layout_of_its_own_zoo_only(
        zoo, lends, tmp_path, with_layouts):
    """transformers' LeViT with one classifier: transformers-levit reads the file, and the options-only
    transformers-levit-one-classifier (same zoo) builds it distilled=False. Another zoo's options-only
    layout that recognises the file lends nothing, and a file with its ``unless`` key is not its file."""
    with_layouts(_STEM, _options_only(zoo))
    reference, path = _resnet18_file(tmp_path, prefix="stem.")
    model = zooadapt.load("resnet18", weights=path, num_classes=1000)
    assert model.zooadapt.report.plan.layout == "stem-resnet"
    assert model.relu.inplace is not lends and _bn_eps(model) == {1e-3}
    state = torch.load(path)
    torch.save({**state, "stem.extra.weight": torch.zeros(3)}, path)
    assert zooadapt.load("resnet18", weights=path, num_classes=1000, partial=True).relu.inplace


@pytest.mark.parametrize("field", ["detect", "unless"])
def test_a_layout_whose_pattern_is_no_regular_expression_is_refused_when_it_registers(field, with_layouts):
    """Not later, as a raw re.error from the first load that asks whether the layout matches: the
    plugin's hook fails, is skipped with the reason (as any failing plugin is), and loads go on."""
    from zooadapt.plugin_api import plugin_failures

    patterns = {"detect": r"stem\.conv1\.weight", "unless": "", field: "stem.(conv"}
    with_layouts(Layout(name="broken-pattern", family="resnet", rules=(), **patterns))
    assert "broken-pattern" not in {lay.name for lay in registered_layouts()}
    said = [str(f) for f in plugin_failures() if "broken-pattern" in str(f)]
    assert said and f"has {field}='stem.(conv', which is not a regular expression" in said[-1], said


def test_a_layout_name_two_plugins_register_refuses_only_the_files_it_recognises(tmp_path, with_layouts, caplog):
    """Neither claimant's reading is used (which one is right cannot be told); a file either
    recognises names both plugins, and every other file loads as before."""
    import dataclasses

    only_stem = dataclasses.replace(_STEM, detect=r"stem\.conv1\.weight", build_options={})
    with caplog.at_level("WARNING", logger="zooadapt"):
        with_layouts(only_stem)
        with_layouts(only_stem)
        assert "stem-resnet" not in {lay.name for lay in registered_layouts()}
    said = [r.getMessage() for r in caplog.records if "layout 'stem-resnet'" in r.getMessage()]
    assert len(said) == 1 and "registered by 'layouts-0' and 'layouts-1'" in said[0], said
    (tmp_path / "stem").mkdir()
    _, stem_file = _resnet18_file(tmp_path / "stem", prefix="stem.")
    with pytest.raises(PluginConflictError, match=r"'stem-resnet'.*'layouts-0' and 'layouts-1'.*ZOOADAPT_DISABLE"):
        zooadapt.load("resnet18", weights=stem_file, num_classes=1000)
    reference, plain_file = _resnet18_file(tmp_path)
    model = zooadapt.load("resnet18", weights=plain_file, num_classes=1000).eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(model(x), reference(x))

"""Every torchvision classification model loads by its torchvision name from a torchvision file.

The sweep: for each name of ``torchvision.models.list_models(module=torchvision.models)``,
torchvision builds the model with seeded weights, its own ``state_dict()`` is saved with
``torch.save``, and ``zooadapt.load(name, weights=FILE)`` must compute what torchvision's model
computes on the same input (within 1e-6 of the largest output). Then a middle stage is frozen and
checked, the head rebuilt for another class count, and ``features_only`` cut where the network has
stages of feature maps (``check_features``: every stage output equals the full model's).

A few small networks run in the fast subset, the rest are ``slow``. ``vit_h_14`` and
``regnet_y_128gf`` (630-645M parameters: a 2.5 GB file, and a forward pass of about 130 GFLOPs on
each side) get a reduced check on ``meta``: the same keys and shapes as torchvision's build, every
parameter in one stage or the head, a head for the new class count.
"""

from __future__ import annotations

import collections

import pytest
import torch
import torchvision
from zooadapt.plugins import torchvision_zoo

import zooadapt
from zooadapt.host.registry import get_registry
from zooadapt.loading.features import check_features
from zooadapt.loading.meta_build import build_on_meta
from zooadapt.plugin_api import Family
from zooadapt.testing import seeded_state_dict
from zooadapt.testing.conformance import check_family

NAMES = torchvision.models.list_models(module=torchvision.models)
HUGE = {"vit_h_14": "633M parameters", "regnet_y_128gf": "645M parameters"}
FAST = {"squeezenet1_1"}

# torchvision's files for names that another family provides (timm's weights by default) read through
# layouts: convnext_*, vgg* and efficientnet_b* (torchvision_zoo_layouts) into timm's networks, and
# mobilenet_v3_* (mobilenet.TORCHVISION_V3); efficientnet_b5-b7 and mobilenet_v3_* are built with
# torchvision's BatchNorm eps (1e-3) because the layout says so before the build (loading.layout_build).
OURS = set(torchvision_zoo.ARCHITECTURES)
INPUT = {"swin_v2_t": 256, "swin_v2_s": 256, "swin_v2_b": 256}


def _case(name: str):  # type: ignore[no-untyped-def]
    return pytest.param(name, marks=[] if name in FAST else [pytest.mark.slow], id=name)


def _reference(name: str, seed: int = 0) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """torchvision's model for ``name`` with seeded weights, built as torchvision builds it for its
    published weights (GoogLeNet: with ``transform_input``), and its state dict as torchvision
    saves it (with its metadata: MNASNet checks the version). Parameters start on ``meta`` (no
    initialisation; RegNet's builder computes widths with tensors, so no ``torch.device("meta")``),
    integer buffers (Swin's relative position index) keep their real values."""
    kwargs = {"transform_input": True, "init_weights": False} if name == "googlenet" else {}
    model = build_on_meta(_REFERENCE, name, 1000, **kwargs)
    own = model.state_dict()
    state = collections.OrderedDict(
        (key, own[key] if not own[key].is_meta and not own[key].dtype.is_floating_point else value)
        for key, value in seeded_state_dict(model, seed).items())
    state._metadata = own._metadata  # type: ignore[attr-defined]
    model.load_state_dict(state, assign=True)
    return model.eval(), state


def _torchvision_build(arch: str, num_classes: int = 1000, **kwargs: object) -> torch.nn.Module:
    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)


_REFERENCE = Family(name="torchvision-reference", build=_torchvision_build, stages=torchvision_zoo.FAMILY.stages)


def _largest(x: object) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else x[0]  # type: ignore[index]


@pytest.mark.parametrize("name", [_case(n) for n in NAMES if n not in HUGE])
def test_a_torchvision_file_computes_what_torchvision_computed(name, tmp_path):
    reference, state = _reference(name)
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    del state
    size = INPUT.get(name, 224)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    model = zooadapt.load(name, weights=path, num_classes=1000).eval()
    if name.startswith(("vgg", "convnext")):
        # timm's network: a 7x7 conv for torchvision's Linear, the same sums in another order: compare in float64
        reference, model = reference.double(), model.double()
    with torch.no_grad():
        expected, got = (_largest(m(x.to(next(m.parameters()).dtype))) for m in (reference, model))
    scale = expected.abs().max().item()
    assert (got - expected).abs().max().item() <= 1e-6 * max(scale, 1e-12), name
    del reference, model

    adapted = zooadapt.load(name, weights=path, num_classes=7, freeze=2)  # a new head, the first 2 stages frozen
    smap = get_registry().family(get_registry().entry(name).family).stage_map(adapted)
    with torch.no_grad():
        assert _largest(adapted.eval()(x)).shape == (1, 7)
    frozen = set(adapted.zooadapt.frozen)
    assert frozen == set(smap.names[:2])
    for key, param in adapted.named_parameters():
        assert param.requires_grad == (smap.stage_of(key) not in frozen), key


WRAPPERS = {"ddp": lambda state: {f"module.{k}": v for k, v in state.items()},  # DistributedDataParallel's
            "lightning": lambda state: {"state_dict": {f"model.{k}": v for k, v in state.items()}, "epoch": 3}}


@pytest.mark.parametrize(("name", "wrapper"), [
    pytest.param(name, wrapper, id=f"{name}-{wrapper}",
                 marks=[] if (name, wrapper) == ("mobilenet_v3_small", "ddp") else [pytest.mark.slow])
    for name in ("mobilenet_v3_small", "convnext_tiny", "efficientnet_b5") for wrapper in WRAPPERS])
def test_a_torchvision_file_read_through_a_layout_does_so_under_a_wrapper_too(name, wrapper, tmp_path):
    """The names read through layouts (timm's ConvNeXt for torchvision's, torchvision's BatchNorm
    eps for MobileNet v3 and EfficientNet B5-B7) saved from DDP or a Lightning module: the layout
    is read under the wrapper, so the model computes what torchvision's does."""
    reference, state = _reference(name)
    path = tmp_path / f"{name}.pth"
    torch.save(WRAPPERS[wrapper](dict(state)), path)
    model = zooadapt.load(name, weights=path, num_classes=1000).eval()
    if name.startswith("convnext"):
        reference, model = reference.double(), model.double()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1)).to(next(model.parameters()).dtype)
    with torch.no_grad():
        expected, got = reference(x), model(x)
    assert (got - expected).abs().max().item() <= 1e-6 * expected.abs().max().item(), name


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n in FAST else [pytest.mark.slow])
                                  for n in torchvision_zoo.ARCHITECTURES if n not in HUGE])
def test_freezing_a_middle_stage_freezes_exactly_its_parameters(name):
    family = get_registry().family(get_registry().entry(name).family)  # squeezenet: the example plugin's, if installed
    model = zooadapt.load(name, pretrained=False, num_classes=5, device="meta")
    smap = family.stage_map(model)
    middle = smap.names[len(smap.names) // 2]
    model = zooadapt.load(name, pretrained=False, num_classes=5, device="meta", freeze=middle)
    assert model.zooadapt.frozen == (middle,)
    for key, param in model.named_parameters():
        assert param.requires_grad == (smap.stage_of(key) != middle), key
    covered = {smap.stage_of(k) for k, _ in model.named_parameters()}
    assert None not in covered and set(smap.names) | {"head"} == covered  # every parameter, no empty stage


SPATIAL = [n for n in torchvision_zoo.ARCHITECTURES if n not in HUGE and not n.startswith("vit_")]


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n in FAST else [pytest.mark.slow]) for n in SPATIAL])
def test_features_only_equals_the_full_models_stages(name, tmp_path):
    family = get_registry().family("torchvision")
    size = INPUT.get(name, 224)
    diffs = check_features(family, name, input_size=(3, size, size), atol=1e-5)
    assert diffs
    reference, state = _reference(name, seed=3)
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    net = zooadapt.load(name, weights=path, features_only=True)
    assert net.out_stages[-1] != "head" and len(net.out_stages) >= 4


def test_a_vit_has_no_feature_stages():
    with pytest.raises(zooadapt.ZooadaptError, match="no feature-map stages"):
        zooadapt.load("vit_b_32", pretrained=False, device="meta", features_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HUGE))
def test_a_huge_torchvision_model_plans_on_meta(name):
    """Reduced check (``HUGE``): keys and shapes as torchvision builds them, stages, the head."""
    reference = build_on_meta(_REFERENCE, name, 1000)
    model = zooadapt.load(name, pretrained=False, num_classes=9, device="meta", freeze="stem")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    smap = get_registry().family("torchvision").stage_map(model)
    heads = {k for k in ours if smap.stage_of(k) == "head"}
    assert ours.keys() == theirs.keys()
    assert {k: s for k, s in ours.items() if k not in heads} == {k: s for k, s in theirs.items() if k not in heads}
    assert all(s[0] == 9 for k, s in ours.items() if k in heads)
    assert None not in {smap.stage_of(k) for k in ours}


def test_the_weights_table_is_torchvisions():
    """URLs and preprocessing are torchvision's own (its DEFAULT weights; vit_h_14: the 224 px SWAG ones)."""
    from torchvision.models import get_model_weights

    for name, (filename, crop, resize, interpolation, top1) in torchvision_zoo.WEIGHTS.items():
        enum = get_model_weights(name)
        weights = enum.IMAGENET1K_SWAG_LINEAR_V1 if name == "vit_h_14" else enum.DEFAULT
        preset = weights.transforms()
        assert weights.url == "https://download.pytorch.org/models/" + filename, name
        assert (crop, resize) == (preset.crop_size[0], preset.resize_size[0]), name
        assert interpolation == preset.interpolation.value, name
        assert float(top1) == weights.meta["_metrics"]["ImageNet-1K"]["acc@1"], name
        entry = torchvision_zoo.entry(name)
        assert entry.source.sha256 and entry.source.url.split("-")[-1].startswith(entry.source.sha256)


def test_every_torchvision_name_is_known_and_the_shared_names_keep_their_providers():
    registry = get_registry()
    families = {name: registry.entry(name).family for name in NAMES}
    assert families["convnext_tiny"] == families["vgg16"] == families["efficientnet_b0"] == "timm"
    assert families["resnet50"] == "resnet" and families["alexnet"] == "alexnet"
    assert families["mobilenet_v3_large"] == "mobilenet_v3"
    assert {n for n, f in families.items() if f == "torchvision"} <= OURS
    assert set(zooadapt.list_models("regnet_y_*")) >= {"regnet_y_400mf", "regnet_y_128gf"}


@pytest.mark.parametrize("arch", ["shufflenet_v2_x0_5", "mnasnet0_5", "regnet_x_400mf",
                                  pytest.param("googlenet", marks=pytest.mark.slow),
                                  pytest.param("swin_t", marks=pytest.mark.slow),
                                  pytest.param("vit_b_32", marks=pytest.mark.slow)])
def test_the_family_conforms(arch):
    report = check_family(torchvision_zoo.FAMILY, arch)
    assert report.head == torchvision_zoo.FAMILY.stage_map(build_on_meta(_REFERENCE, arch, 1000)).head


@pytest.mark.parametrize("name", ["swin_t", pytest.param("swin_v2_t", marks=pytest.mark.slow)])
def test_channels_last_feature_maps_report_their_channels(name):
    """torchvision's Swin returns its maps channels last (N, H, W, C): feature_info reads the
    channels from the axis that stays put when the input grows, not from position 1."""
    model = zooadapt.load(name, pretrained=False, features_only=True).eval()
    size = INPUT.get(name, 224)
    with torch.no_grad():
        maps = model(torch.randn(1, 3, size, size))
    assert model.feature_info.channels() == [m.shape[-1] for m in maps]
    assert model.feature_info.reduction() == [size // m.shape[1] for m in maps]

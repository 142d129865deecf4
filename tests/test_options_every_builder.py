"""Build options reach every builder, or are refused by name; a fine-tune with another input
layer is said with its fix.

Before: torchvision's ``MobileNetV3`` takes ``**kwargs`` and ignores them, so
``load("mobilenet_v3_small", in_chans=1)`` built an RGB model (and recorded ``in_chans=1`` for
the reload) and any misspelt option was accepted without a word; ``mobilenet_v1`` answered
``in_chans`` with a ``PluginError`` blaming the plugin. A file fine-tuned on grey images
(``conv1 = nn.Conv2d(1, 64, 7, 2, 3)``) was refused as "saved from a truncated or changed
network". The sweeps build every architecture of the built-in families and of torchvision's
list (one per builder in the fast subset) on ``meta``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torchvision

import zooadapt
from zooadapt.errors import IncompatibleCheckpointError, InvalidArgumentError
from zooadapt.plugin_api import get_registry

# the fast subset: the builders that once got it wrong, a torchvision-zoo builder and a timm one;
# the sweep takes every other architecture of the built-in families and of torchvision's list
FAST = ("resnet18", "mobilenet_v1", "mobilenet_v3_small", "regnet_x_400mf", "efficientnet_b0")


def _builtin_and_torchvision_names() -> list[str]:
    """Every built-in family's registry name and every torchvision classification model zooadapt builds."""
    names = {name for name, entry in get_registry().models.items() if entry.family != "timm"}
    names |= set(torchvision.models.list_models(module=torchvision.models))
    return sorted(names)


SLOW = [pytest.param(name, marks=[pytest.mark.slow, pytest.mark.sweep])
        for name in _builtin_and_torchvision_names() if name not in FAST]


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name", [*FAST, *SLOW])
def test_an_option_no_builder_uses_is_refused_by_name(name):
    with pytest.raises(InvalidArgumentError, match="colour_jitter"):
        zooadapt.load(name, pretrained=False, device="meta", colour_jitter=0.4)


@pytest.mark.parametrize("name", [*FAST, *SLOW])
def test_in_chans_reaches_the_input_convolution(name):
    model = zooadapt.load(name, pretrained=False, device="meta", in_chans=1)
    assert _first_conv(model).in_channels == 1
    assert model.zooadapt.build_options == {"in_chans": 1}


@pytest.mark.slow
def test_every_registry_name_refuses_an_option_it_does_not_use():
    """Every name ``zooadapt list`` gives (timm's too), built on meta: none swallows an unknown option."""
    swallowed = []
    for name in zooadapt.list_models():
        try:
            zooadapt.load(name, pretrained=False, device="meta", colour_jitter=0.4)
        except InvalidArgumentError as exc:
            assert "colour_jitter" in str(exc), name
        else:
            swallowed.append(name)
    assert swallowed == []


def _grey_finetune(arch: str, classes: int = 10) -> nn.Module:
    """A model fine-tuned on one-channel images, its input convolution replaced as the tutorials do."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=classes)
    parent_name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    grey = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None)
    owner, _, leaf = parent_name.rpartition(".")
    setattr(model.get_submodule(owner) if owner else model, leaf, grey)
    return model.eval()


@pytest.mark.parametrize("arch", ["resnet18", pytest.param("mobilenet_v3_small", marks=pytest.mark.slow),
                                  pytest.param("mobilenet_v2", marks=pytest.mark.slow)])
def test_a_grey_finetune_is_refused_naming_in_chans_and_loads_with_it(arch, tmp_path):
    source = _grey_finetune(arch)
    torch.save(source.state_dict(), tmp_path / "grey.pth")
    with pytest.raises(IncompatibleCheckpointError, match=r"takes 1 input channel where this model's takes 3.*"
                                                          r"in_chans=1"):
        zooadapt.load(arch, weights=tmp_path / "grey.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = zooadapt.load(arch, weights=tmp_path / "grey.pth", in_chans=1).eval()
    assert model.zooadapt.num_classes == 10  # its own head, kept
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=1e-5, atol=1e-5)
    saved = zooadapt.save(model, tmp_path / "saved")
    again = zooadapt.load(saved).eval()  # in_chans=1 is a recorded build option: the reload is the same network
    with torch.no_grad():
        torch.testing.assert_close(again(x), source(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_a_replaced_stem_is_refused_naming_load_weights_which_loads_it(tmp_path):
    """CIFAR's ResNet: a 3x3 stem and no max-pool. Neither the stride nor the missing pool is in the
    state dict, so zooadapt cannot rebuild it; the user's own model takes the file whole."""
    torch.manual_seed(0)
    cifar = torchvision.models.resnet18(num_classes=10)
    cifar.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    cifar.maxpool = nn.Identity()
    torch.save(cifar.state_dict(), tmp_path / "cifar.pth")
    with pytest.raises(IncompatibleCheckpointError, match=r"stem was replaced.*zooadapt\.load_weights"):
        zooadapt.load("resnet18", weights=tmp_path / "cifar.pth")
    mine = torchvision.models.resnet18(num_classes=10)
    mine.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    mine.maxpool = nn.Identity()
    report = zooadapt.load_weights(mine, tmp_path / "cifar.pth")
    assert report.plan.fits and not report.plan.unexpected
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(mine.eval()(x), cifar.eval()(x))

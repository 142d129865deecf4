"""data_config / transforms: the preprocessing the weights were trained with, as torchvision transforms."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image

import zooadapt
from zooadapt.contract.errors import InvalidArgumentError
from zooadapt.host.registry import get_registry
from zooadapt.loading.data import describe, eval_resize
from zooadapt.plugin_api import DataConfig, ModelEntry

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _photo(width=320, height=240, seed=0):
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), generator=gen, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def test_resnet_uses_torchvision_published_values():
    import torchvision

    cfg = zooadapt.data_config("resnet34")
    published = torchvision.models.ResNet34_Weights.IMAGENET1K_V1.transforms()
    assert (cfg.mean, cfg.std) == (tuple(published.mean), tuple(published.std))
    assert cfg.input_size[1:] == (published.crop_size[0],) * 2 and eval_resize(cfg) == published.resize_size[0]
    assert cfg.interpolation == published.interpolation.value
    ours = zooadapt.transforms("resnet34")(_photo())
    theirs = published(_photo())
    assert ours.shape == theirs.shape == (3, 224, 224)
    # torchvision resizes the decoded uint8 tensor, we resize the PIL image as timm does: a rounding apart
    assert (ours - theirs).abs().mean() < 0.02


@pytest.mark.slow
def test_eval_transform_gives_size_and_normalisation():
    grey = Image.new("RGB", (500, 375), (128, 64, 255))
    out = zooadapt.transforms("resnet18", train=False)(grey)
    assert type(out) is torch.Tensor and out.dtype == torch.float32 and out.shape == (3, 224, 224)
    mean, std = IMAGENET
    for c, value in enumerate((128, 64, 255)):
        assert torch.allclose(out[c], torch.full((224, 224), (value / 255 - mean[c]) / std[c]), atol=1e-6)


def test_train_transform_is_random_at_the_same_size():
    tf = zooadapt.transforms("resnet18", train=True)
    torch.manual_seed(0)
    a, b = tf(_photo()), tf(_photo())
    assert a.shape == b.shape == (3, 224, 224) and not torch.equal(a, b)


def test_mobilenet_v1_uses_imagenet_values():
    if "mobilenet_v1" not in get_registry().families:
        pytest.skip("the mobilenet plugin is not installed")
    cfg = zooadapt.data_config("mobilenet_v1")
    assert (cfg.mean, cfg.std) == IMAGENET and cfg.input_size == (3, 224, 224) and cfg.crop_pct == 0.875


@pytest.mark.slow
def test_timm_model_uses_its_pretrained_config():
    timm = pytest.importorskip("timm")
    if "timm" not in get_registry().families:
        pytest.skip("the timm plugin is not installed")
    from timm.data import create_transform, resolve_data_config

    cfg = zooadapt.data_config("convnext_atto.d2_in1k")
    expected = resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg("convnext_atto.d2_in1k").to_dict())
    assert cfg.crop_pct == expected["crop_pct"] and cfg.interpolation == expected["interpolation"] == "bicubic"
    assert cfg.input_size == tuple(expected["input_size"]) and cfg.mean == tuple(expected["mean"])
    ours, theirs = zooadapt.transforms("convnext_atto.d2_in1k")(_photo()), create_transform(**expected)(_photo())
    assert torch.allclose(ours, theirs, atol=1e-6)
    # a timm model built by timm itself answers from its own pretrained_cfg
    model = timm.create_model("convnext_atto.d2_in1k", pretrained=False)
    assert zooadapt.data_config(model) == cfg


@pytest.mark.slow
def test_models_and_saved_directories_answer_too(tmp_path):
    model = zooadapt.load("resnet18", num_classes=3, pretrained=False)
    assert zooadapt.data_config(model) == zooadapt.data_config("resnet18")
    folder = zooadapt.save(model, tmp_path)
    assert zooadapt.data_config(folder) == zooadapt.data_config(zooadapt.load(folder)) == DataConfig()
    net = zooadapt.load("resnet18", pretrained=False, features_only=("layer1",))
    assert zooadapt.data_config(net) == DataConfig()


def test_registry_entry_and_family_hook_take_precedence(monkeypatch):
    entry = get_registry().entry("resnet18")
    special = DataConfig(input_size=(3, 160, 160), interpolation="bicubic", crop_pct=0.95)
    assert zooadapt.data_config(dataclasses.replace(entry, data=special)) == special
    fam = get_registry().family("resnet")
    hooked = DataConfig(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    monkeypatch.setitem(get_registry().families, "resnet", dataclasses.replace(fam, data_for=lambda e: hooked))
    assert zooadapt.data_config("resnet18") == hooked
    assert zooadapt.data_config(ModelEntry(name="x", family="resnet", arch="resnet18", data=special)) == special


def test_non_square_input_and_describe():
    cfg = DataConfig(input_size=(3, 224, 320), crop_pct=1.0, interpolation="bicubic")
    assert eval_resize(cfg) == (224, 320)
    assert zooadapt.transforms(cfg)(_photo(640, 480)).shape == (3, 224, 320)
    line = describe("resnet18")
    assert line.startswith("3x224x224, resize 256 (bilinear), centre crop 224 (crop_pct 0.875)")
    assert "mean 0.485,0.456,0.406" in line and "std 0.229,0.224,0.225" in line


@pytest.mark.parametrize(
    ("arg", "fragment"),
    [
        (DataConfig(interpolation="cubic"), "interpolation='cubic'"),
        (DataConfig(crop_pct=0), "crop fraction"),
        (DataConfig(input_size=(224, 224)), "(channels, height, width)"),  # type: ignore[arg-type]
    ],
)
def test_bad_configs(arg, fragment):
    with pytest.raises(InvalidArgumentError) as info:
        zooadapt.transforms(arg)
    assert fragment in str(info.value)


def test_unknown_module_is_refused_with_the_fix():
    with pytest.raises(InvalidArgumentError, match="data_config\\('resnet34'\\)"):
        zooadapt.data_config(torch.nn.Linear(2, 2))

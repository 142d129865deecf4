"""``load``'s options beyond the defaults: device and dtype, build options, headless models, and
every argument checked once, with the same error from every entry point."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import zooadapt
from zooadapt.contract.errors import InvalidArgumentError
from zooadapt.errors import PluginError
from zooadapt.plugin_api import Family, ModelEntry, Stage, StageMap, hookimpl, load_plugins
from zooadapt.testing import safetensors_bytes


def test_meta_device_plans_without_reading_a_tensor(resnet18_weights, monkeypatch):
    import zooadapt.weights.checkpoint

    monkeypatch.setattr(zooadapt.weights.checkpoint, "read_checkpoint",
                        lambda *a, **k: pytest.fail("device='meta' must not read tensors"))
    model = zooadapt.load("resnet18", num_classes=4, device="meta", freeze="layer1-2")
    assert all(p.is_meta for p in model.parameters())
    plan = model.zooadapt.report.plan
    assert plan.fits and len(plan.loaded) == len(resnet18_weights) - 2  # all but the old fc
    assert model.zooadapt.frozen == ("layer1", "layer2") and not model.layer1[0].conv1.weight.requires_grad
    assert model.zooadapt.report.device == "meta"


@pytest.mark.slow
def test_dtype_casts_parameters_and_keeps_batchnorm_statistics_float32(resnet18_weights):
    model = zooadapt.load("resnet18", num_classes=3, dtype=torch.bfloat16, device="cpu")
    assert model.bn1.running_var.dtype == model.bn1.weight.dtype == torch.float32
    assert model.fc.weight.dtype == model.conv1.weight.dtype == torch.bfloat16
    assert torch.equal(model.conv1.weight, resnet18_weights["conv1.weight"].to(torch.bfloat16))
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32, dtype=torch.bfloat16))
    assert out.shape == (1, 3) and out.dtype == torch.bfloat16


@pytest.mark.slow
def test_num_classes_zero_returns_pooled_embeddings(resnet18_weights, tmp_path):
    model = zooadapt.load("resnet18", num_classes=0, freeze="stem-layer2").eval()
    assert isinstance(model.fc, nn.Identity) and model.zooadapt.num_features == 512
    assert model.zooadapt.num_classes is None and model.zooadapt.report.target == "embeddings"
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    plan = model.zooadapt.report.plan
    assert {m.checkpoint_key for m in plan.dropped} == {"fc.weight", "fc.bias"} and plan.fits
    saved = zooadapt.save(model, tmp_path / "embedder")
    again = zooadapt.load(saved)
    assert isinstance(again.fc, nn.Identity) and torch.equal(again.layer4[1].conv2.weight, model.layer4[1].conv2.weight)


@pytest.mark.slow
@pytest.mark.parametrize("in_chans", [1, 5])
def test_in_chans_adapts_the_pretrained_first_convolution(in_chans, resnet18_weights):
    from timm.models._manipulate import adapt_input_conv

    model = zooadapt.load("resnet18", num_classes=2, in_chans=in_chans)
    assert model.conv1.weight.shape == (64, in_chans, 7, 7)
    torch.testing.assert_close(model.conv1.weight, adapt_input_conv(in_chans, resnet18_weights["conv1.weight"]))
    assert torch.equal(model.layer1[0].conv1.weight, resnet18_weights["layer1.0.conv1.weight"])
    assert model(torch.randn(2, in_chans, 32, 32)).shape == (2, 2)
    assert "adapt 'conv1.weight' to" in str(model.zooadapt.report.plan.rule_counts())


@pytest.mark.slow
def test_img_size_resamples_the_position_embedding(tmp_path):
    import timm
    from timm.layers import resample_abs_pos_embed

    from zooadapt.testing import seeded_state_dict

    state = seeded_state_dict(timm.create_model("vit_tiny_patch16_224"), seed=3)
    path = tmp_path / "vit.safetensors"
    path.write_bytes(safetensors_bytes(state))
    model = zooadapt.load("vit_tiny_patch16_224", weights=path, img_size=112, drop_path_rate=0.1, num_classes=3)
    assert model.pos_embed.shape == (1, 50, 192)
    torch.testing.assert_close(model.pos_embed, resample_abs_pos_embed(state["pos_embed"], [7, 7]))
    assert model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    assert model(torch.randn(1, 3, 112, 112)).shape == (1, 3)


@pytest.mark.parametrize("arch", [
    pytest.param("vit_tiny_patch16_224", marks=pytest.mark.slow),  # a class token in pos_embed
    pytest.param("deit_tiny_distilled_patch16_224", marks=pytest.mark.slow),  # class and distillation tokens
    "vit_small_patch14_reg4_dinov2",  # no_embed_class: 5 prefix tokens, none of them in pos_embed
    pytest.param("vit_medium_patch16_reg4_gap_256", marks=pytest.mark.slow),  # registers, no class token: none
])
def test_img_size_resamples_as_timms_own_filter_does(arch, tmp_path):
    """Every prefix-token arrangement: the resampled embedding is what timm's filter gives
    (``num_prefix_tokens=0`` when the embedding holds no prefix rows), never a bare error."""
    import timm
    from timm.layers import resample_abs_pos_embed

    from zooadapt.testing import seeded_state_dict

    small = {"depth": 1}
    source = timm.create_model(arch, **small)
    state = seeded_state_dict(source, seed=5)
    path = tmp_path / "vit.safetensors"
    path.write_bytes(safetensors_bytes(state))
    model = zooadapt.load(arch, weights=path, img_size=112, num_classes=3, **small)
    prefix = 0 if source.no_embed_class else source.num_prefix_tokens
    expected = resample_abs_pos_embed(state["pos_embed"], list(model.patch_embed.grid_size), num_prefix_tokens=prefix)
    torch.testing.assert_close(model.pos_embed, expected)
    assert model(torch.randn(1, 3, 112, 112)).shape == (1, 3)


def test_a_position_embedding_the_resampling_cannot_make_is_not_claimed():
    from zooadapt.rules import ResamplePosEmbed

    rule = ResamplePosEmbed("pos_embed", (7, 7), 1)
    assert rule.converts("pos_embed", (1, 197, 192), (1, 50, 192))
    assert not rule.converts("pos_embed", (1, 198, 192), (1, 50, 192))  # 197 behind the prefix: no square
    assert not rule.converts("pos_embed", (1, 197, 192), (1, 49, 192))  # the model has no class-token row
    assert not rule.converts("pos_embed", (1, 197, 96), (1, 50, 192))
    assert not rule.converts("cls_token", (1, 197, 192), (1, 50, 192))


@pytest.mark.slow
def test_an_unknown_build_option_is_named(resnet18_weights):
    with pytest.raises(InvalidArgumentError, match="no_such_option"):
        zooadapt.load("resnet18", no_such_option=3)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"name": None}, "name=None"),
    ({"weights": 123}, "weights=123"),
    ({"trusted": "false"}, "trusted='false'"),
    ({"partial": 1}, "partial=1"),
    ({"use_ema": "yes"}, "use_ema='yes'"),
    ({"min_coverage": 2}, "min_coverage=2"),
    ({"min_coverage": float("nan")}, "min_coverage=nan"),
    ({"dtype": torch.int8}, "dtype=torch.int8"),
    ({"device": "gpu0"}, "device='gpu0'"),
    pytest.param({"device": "cuda:7"}, "CUDA device(s) visible", marks=pytest.mark.skipif(
        torch.cuda.device_count() > 7, reason="a machine with eight GPUs has cuda:7")),
    ({"rules": ["nonsense"]}, "key rule 'nonsense'"),
    ({"skip": ["layer44"]}, "Did you mean"),
    ({"in_chans": 0}, "in_chans=0"),
    ({"features_only": "layer44"}, "Did you mean: layer4"),
])
@pytest.mark.slow
def test_bad_arguments_are_named_with_the_fix(kwargs, fragment, resnet18_weights):
    given = {"name": "resnet18", **kwargs}
    with pytest.raises(InvalidArgumentError) as err:
        zooadapt.load(given.pop("name"), **given)
    assert fragment in str(err.value)


@pytest.mark.slow
def test_skip_as_one_string_means_one_stage(resnet18_weights):
    with pytest.warns(UserWarning, match="not pretrained"):  # layer4 is three quarters of resnet18
        model = zooadapt.load("resnet18", skip="layer4", partial=True)
    assert set(model.zooadapt.report.plan.skipped_model_keys) == {
        k for k in model.state_dict() if k.startswith("layer4.")}


def test_load_weights_checks_its_arguments_the_same_way(resnet18_weights, tmp_path):
    with pytest.raises(InvalidArgumentError, match="trusted='yes'"):
        zooadapt.load_weights(nn.Linear(2, 2), "resnet18", trusted="yes")
    with pytest.raises(InvalidArgumentError, match="torch.nn.Module"):
        zooadapt.load_weights("resnet18", "resnet18")  # type: ignore[arg-type]


class _BrokenBuilds:
    """A plugin whose family's build() fails in the ways plugins do."""

    @hookimpl
    def zooadapt_register_families(self, register):
        def build(arch, num_classes=1000, **kwargs):
            if arch == "raises":
                raise RuntimeError("weights table missing")
            return {"not": "a module"}

        register(Family(name="broken", build=build, stages=StageMap(
            (Stage("body", ("body",)),), head="fc"), architectures=("raises", "returns_dict")))

    @hookimpl
    def zooadapt_register_models(self, register):
        for arch in ("raises", "returns_dict"):
            register(ModelEntry(name=f"broken_{arch}", family="broken", arch=arch))


@pytest.mark.parametrize("name, fragment", [("broken_raises", "raised RuntimeError: weights table missing"),
                                            ("broken_returns_dict", "returned a dict, not a torch.nn.Module")])
def test_a_plugins_faulty_build_is_attributed_to_the_plugin(name, fragment):
    from zooadapt.host.registry import reset_registry

    pm = load_plugins()
    pm.register(_BrokenBuilds(), name="broken-builds")
    reset_registry()
    try:
        with pytest.raises(PluginError) as err:
            zooadapt.load(name, pretrained=False)
        assert fragment in str(err.value) and "'broken-builds'" in str(err.value)
        assert "ZOOADAPT_DISABLE_PLUGINS=broken-builds" in str(err.value)
    finally:
        pm.unregister(name="broken-builds")
        reset_registry()


def test_an_accelerator_gets_the_tensors_read_straight_into_it(tmp_path, resnet18_weights, monkeypatch):
    """No GPU here: the safetensors reader is asked for the device (it reads into device memory
    itself), instead of a CPU copy that is moved afterwards."""
    import safetensors.torch

    from zooadapt.weights.checkpoint import read_checkpoint

    path = tmp_path / "r18.safetensors"
    path.write_bytes(safetensors_bytes(resnet18_weights))
    asked = []
    real = safetensors.torch.load_file
    monkeypatch.setattr(safetensors.torch, "load_file", lambda p, device="cpu": asked.append(device) or real(p))
    tensors = read_checkpoint(path, device="cuda:1")
    assert asked == ["cuda:1"] and set(tensors) == set(resnet18_weights)


def test_meta_device_with_a_pickle_checkpoint(tmp_path, resnet18_weights):
    torch.save(resnet18_weights, tmp_path / "r18.pth")
    model = zooadapt.load("resnet18", weights=tmp_path / "r18.pth", device="meta", num_classes=3)
    assert all(p.is_meta for p in model.parameters()) and model.zooadapt.report.plan.fits


def test_skipping_most_of_the_backbone_says_so(resnet18_weights):
    with pytest.warns(UserWarning, match=r"leaves 9\d% of resnet18's backbone parameters at their random"):
        model = zooadapt.load("resnet18", skip=["layer3", "layer4"])
    assert model.zooadapt.report.plan.skipped_share > 0.9
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a small skip is no news
        zooadapt.load("resnet18", skip=["layer1"])

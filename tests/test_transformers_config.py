"""A transformers file's build comes from its own config.json, not from the layout's guess.

transformers' ViT and ViT-MSN files hold the very same keys, yet ViT's LayerNorm eps defaults
to 1e-12 and ViT-MSN's to 1e-6; a MobileNet v2's BatchNorm eps is its config's
``layer_norm_eps`` too. The layout's default is transformers' default; the ``config.json``
beside the file (its folder, or its Hub repo at the commit the weights came from) decides.
Each case compares with transformers' own forward on the same weights.
"""

from __future__ import annotations

import json
import shutil
import uuid

import pytest
import torch
import torch.nn as nn

import zooadapt
from zooadapt.testing import seeded_state_dict

transformers = pytest.importorskip("transformers")

_VIT = dict(hidden_size=192, num_hidden_layers=2, num_attention_heads=3, intermediate_size=768, num_labels=10)


def _seeded(model: nn.Module, seed: int) -> nn.Module:
    model.load_state_dict(seeded_state_dict(model, seed))
    return model.eval()


def _relative(model: nn.Module, reference: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        expected = reference(x).logits
        return float((model(x) - expected).abs().max() / expected.abs().max())


def _eps(model: nn.Module, kind: type[nn.Module]) -> set[float]:
    return {m.eps for m in model.modules() if isinstance(m, kind)}


_SLOW = pytest.mark.slow  # the fast subset keeps the ViT-MSN case: ViT's keys, another eps


@pytest.mark.parametrize(("model_class", "config_class", "eps"), [
    pytest.param("ViTForImageClassification", "ViTConfig", None, marks=_SLOW),  # transformers' default, 1e-12
    pytest.param("ViTForImageClassification", "ViTConfig", 1e-6, marks=_SLOW),  # trained with timm's eps
    ("ViTMSNForImageClassification", "ViTMSNConfig", None),  # ViT-MSN's default, 1e-6: ViT's keys
    pytest.param("ViTForImageClassification", "ViTConfig", 1e-5, marks=_SLOW),
])
def test_a_vit_is_built_with_the_eps_its_config_gives(model_class, config_class, eps, tmp_path):
    config = getattr(transformers, config_class)(**_VIT, **({"layer_norm_eps": eps} if eps else {}))
    source = _seeded(getattr(transformers, model_class)(config), 3)
    source.save_pretrained(tmp_path / "vit")
    model = zooadapt.load("vit_tiny_patch16_224", weights=tmp_path / "vit", depth=2).eval()
    assert _eps(model, nn.LayerNorm) == {config.layer_norm_eps}
    assert any(f"LayerNorm.eps={config.layer_norm_eps!r} (its config.json's layer_norm_eps)" in n
               for n in model.zooadapt.report.plan.notes)
    assert _relative(model, source, torch.randn(1, 3, 224, 224)) < 1e-6


@_SLOW
def test_without_a_config_the_layout_builds_transformers_default(tmp_path):
    config = transformers.ViTConfig(**_VIT)
    source = _seeded(transformers.ViTForImageClassification(config), 4)
    source.save_pretrained(tmp_path / "vit")
    (tmp_path / "bare").mkdir()
    shutil.copy(tmp_path / "vit" / "model.safetensors", tmp_path / "bare" / "model.safetensors")
    model = zooadapt.load("vit_tiny_patch16_224", weights=tmp_path / "bare" / "model.safetensors", depth=2)
    assert _eps(model, nn.LayerNorm) == {1e-12}
    assert not any("config.json" in n for n in model.zooadapt.report.plan.notes if n.startswith("built"))
    # a config.json whose value is not a number says nothing about the eps: the default again
    (tmp_path / "bare" / "config.json").write_text(json.dumps({"layer_norm_eps": "tiny"}))
    model = zooadapt.load("vit_tiny_patch16_224", weights=tmp_path / "bare" / "model.safetensors", depth=2)
    assert _eps(model, nn.LayerNorm) == {1e-12}


@_SLOW
def test_the_users_option_wins_over_the_config(tmp_path):
    config = transformers.ViTConfig(**_VIT, layer_norm_eps=1e-6)
    _seeded(transformers.ViTForImageClassification(config), 5).save_pretrained(tmp_path / "vit")
    model = zooadapt.load("vit_tiny_patch16_224", weights=tmp_path / "vit", depth=2, **{"LayerNorm.eps": 1e-5})
    assert _eps(model, nn.LayerNorm) == {1e-5}
    assert any("as you asked, not the LayerNorm.eps=1e-06" in n for n in model.zooadapt.report.plan.notes)


@_SLOW
def test_the_config_is_read_from_the_hub_at_the_weights_commit(hub, tmp_path):
    from zooadapt.testing import safetensors_bytes

    repo = f"me/vit-msn-{uuid.uuid4().hex[:8]}"  # the session's Hub is shared: a repo of its own
    config = transformers.ViTConfig(**_VIT, layer_norm_eps=1e-6)
    source = _seeded(transformers.ViTForImageClassification(config), 6)
    hub.add_file(repo, "model.safetensors", safetensors_bytes(source.state_dict()))
    first = hub.add_file(repo, "config.json", json.dumps(config.to_dict()).encode())
    hub.add_file(repo, "config.json", json.dumps({**config.to_dict(), "layer_norm_eps": 1e-3}).encode())
    pinned = zooadapt.load("vit_tiny_patch16_224", weights=f"hf://{repo}", revision=first, depth=2).eval()
    assert _eps(pinned, nn.LayerNorm) == {1e-6}
    assert _relative(pinned, source, torch.randn(1, 3, 224, 224)) < 1e-6
    latest = zooadapt.load("vit_tiny_patch16_224", weights=f"hf://{repo}", depth=2)
    assert _eps(latest, nn.LayerNorm) == {1e-3}


@_SLOW
def test_a_mobilenet_v2_takes_its_batchnorm_eps_from_the_config(tmp_path):
    config = transformers.MobileNetV2Config(tf_padding=False, num_labels=5, layer_norm_eps=1e-5)
    source = _seeded(transformers.MobileNetV2ForImageClassification(config), 7)
    source.save_pretrained(tmp_path / "mnv2")
    model = zooadapt.load("mobilenet_v2", weights=tmp_path / "mnv2").eval()
    assert _eps(model, nn.BatchNorm2d) == {1e-5}
    assert _relative(model, source, torch.randn(1, 3, 96, 96)) < 1e-6
    # saved and reloaded, the model keeps the eps it was built with
    zooadapt.save(model, tmp_path / "saved")
    assert _eps(zooadapt.load(tmp_path / "saved"), nn.BatchNorm2d) == {1e-5}


@_SLOW  # (the path setting's fast cases: tests/test_build_options_saved.py)
@pytest.mark.parametrize(("model_class", "config_class", "arch", "sizes"), [
    ("ConvNextForImageClassification", "ConvNextConfig", "convnext_atto", ([2, 2, 6, 2], [40, 80, 160, 320])),
    ("ConvNextForImageClassification", "ConvNextConfig", "convnext_tiny", ([3, 3, 9, 3], [96, 192, 384, 768])),
    ("ConvNextV2ForImageClassification", "ConvNextV2Config", "convnextv2_atto", ([2, 2, 6, 2], [40, 80, 160, 320])),
])
@pytest.mark.parametrize("eps", [None, 1e-2])
def test_a_convnexts_final_layernorm_alone_takes_the_configs_eps(model_class, config_class, arch, sizes, eps,
                                                                 tmp_path):
    """transformers' ConvNeXt builds its final LayerNorm with config.layer_norm_eps (1e-12 by
    default) and every other one with 1e-6, as timm does: the setting by path (``head.norm.eps``)
    reaches that one module, and the outputs are transformers' (before: the module was built with
    timm's 1e-6, about 1e-6 relative apart with the default and far apart with a config's 1e-2)."""
    depths, widths = sizes
    config = getattr(transformers, config_class)(depths=depths, hidden_sizes=widths, num_labels=10,
                                                 **({} if eps is None else {"layer_norm_eps": eps}))
    source = _seeded(getattr(transformers, model_class)(config), 5)
    source.save_pretrained(tmp_path / "convnext")
    model = zooadapt.load(arch, weights=tmp_path / "convnext").eval()
    assert model.head.norm.eps == (1e-12 if eps is None else eps)
    others = {m.eps for name, m in model.named_modules() if isinstance(m, nn.LayerNorm) and name != "head.norm"}
    assert others == {1e-6}
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    # float32 rounding: atto's 1x1 convolutions (conv_mlp) sum in another order than transformers' Linear
    assert _relative(model, source, x) < (1e-6 if arch == "convnext_tiny" else 3e-6)
    zooadapt.save(model, tmp_path / "saved")  # saved and reloaded, the one module keeps its eps
    assert zooadapt.load(tmp_path / "saved").head.norm.eps == model.head.norm.eps

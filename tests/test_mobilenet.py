"""MobileNet v1 (seed 000's checkpoint layout) and v2/v3 (torchvision architectures, timm weights)."""

from __future__ import annotations

import json
import re

import pytest
import torch

import zooadapt
from zooadapt.cli import main as cli
from zooadapt.plugin_api import get_registry
from zooadapt.testing import safetensors_bytes, seeded_state_dict


def _v1_meta():
    from zooadapt.plugins.mobilenet import build_v1

    with torch.device("meta"):
        return build_v1("mobilenet_v1")


def v1_training_checkpoint(seed: int = 0) -> tuple[dict, dict[str, torch.Tensor]]:
    """A stand-in for ``mobilenet_sgd_rmsprop_69.526.tar``: the training dict its author saved
    from a DataParallel model with an old PyTorch (no ``num_batches_tracked``)."""
    weights = {f"module.{k}": v for k, v in seeded_state_dict(_v1_meta(), seed).items()
               if not k.endswith("num_batches_tracked")}
    optimizer = {"state": {0: {"momentum_buffer": torch.zeros(3)}},
                 "param_groups": [{"lr": 0.0001, "momentum": 0.9, "weight_decay": 4e-05, "params": [0]}]}
    return {"epoch": 149, "arch": "mobilenet", "best_prec1": 69.526, "optimizer": optimizer,
            "state_dict": weights}, weights


@pytest.fixture(scope="module")
def seed000(tmp_path_factory):
    checkpoint, weights = v1_training_checkpoint()
    path = tmp_path_factory.mktemp("seed000") / "mobilenet_sgd_rmsprop_69.526.tar"
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    return path, weights


def test_v1_layout_is_the_published_checkpoints(seed000):
    _, weights = seed000
    assert len(weights) == 137
    pattern = re.compile(r"module\.(model\.(\d+)\.(\d)\.(weight|bias|running_mean|running_var)|fc\.(weight|bias))")
    assert all(pattern.fullmatch(k) for k in weights)
    assert {int(m.group(2)) for k in weights if (m := pattern.fullmatch(k)) and m.group(2)} == set(range(14))
    shapes = {k: tuple(v.shape) for k, v in weights.items()}
    assert shapes["module.model.0.0.weight"] == (32, 3, 3, 3)  # conv 3->32, stride 2
    assert shapes["module.model.1.0.weight"] == (32, 1, 3, 3)  # depthwise
    assert shapes["module.model.1.3.weight"] == (64, 32, 1, 1)  # pointwise
    widths = [shapes[f"module.model.{i}.3.weight"][0] for i in range(1, 14)]
    assert widths == [64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    assert shapes["module.fc.weight"] == (1000, 1024)
    model = get_registry().family("mobilenet_v1").build("mobilenet_v1")
    assert model.model[0][0].stride == (2, 2) and [model.model[i][0].stride[0] for i in (2, 4, 6, 12)] == [2] * 4


@pytest.mark.slow
def test_v1_loads_seed_000_checkpoint_unchanged(seed000):
    path, weights = seed000
    model = zooadapt.load("mobilenet_v1", weights=path, num_classes=10, freeze="conv1-7")
    state = model.state_dict()
    backbone = {k[len("module."):]: v for k, v in weights.items() if not k.startswith("module.fc.")}
    assert len(backbone) == 135
    assert all(torch.equal(state[k], v) for k, v in backbone.items())
    assert model.fc.out_features == 10 and not model.fc.weight.is_meta
    plan = model.zooadapt.report.plan
    assert len(plan.loaded) == 135 and sorted(m.checkpoint_key for m in plan.dropped) == ["module.fc.bias",
                                                                                       "module.fc.weight"]
    assert len(plan.defaulted) == 27 and all(k.endswith("num_batches_tracked") for k in plan.defaulted)
    assert not plan.missing and not plan.unexpected
    assert model.zooadapt.report.frozen == tuple(f"conv{i}" for i in range(1, 8))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n in state if n.startswith(tuple(f"model.{i}." for i in range(7)))
                      and not n.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    out = model.eval()(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_v1_reimplementation_with_other_names_loads_by_position(tmp_path, seed000):
    """A v1 checkpoint from another codebase (``features.N`` and ``classifier``) fits by order."""
    _, weights = seed000
    renamed = {re.sub(r"^module\.model\.", "features.", k).replace("module.fc.", "classifier."): v
               for k, v in weights.items()}
    path = tmp_path / "other.pth"
    torch.save(renamed, path)
    model = zooadapt.load("mobilenet_v1", weights=path)
    assert torch.equal(model.model[13][3].weight, weights["module.model.13.3.weight"])
    assert torch.equal(model.fc.weight, weights["module.fc.weight"])  # same class count: the head loads
    assert all("positional (same order, shapes checked)" in m.rules for m in model.zooadapt.report.plan.loaded)


# -- v2 / v3: torchvision architecture, timm weights ---------------------------------------

CASES = {
    "mobilenet_v2": ("mobilenetv2_100", "timm/mobilenetv2_100.ra_in1k"),
    "mobilenet_v3_large": ("mobilenetv3_large_100", "timm/mobilenetv3_large_100.ra_in1k"),
    "mobilenet_v3_small": ("mobilenetv3_small_100", "timm/mobilenetv3_small_100.lamb_in1k"),
}


def timm_reference(arch: str, seed: int) -> torch.nn.Module:
    """timm's model with its own initialisation and non-trivial BatchNorm statistics, so every
    running statistic matters to the output (variances of 0.5-1.5 keep 17 blocks from blowing
    up; a BatchNorm eps of 1e-3 instead of 1e-5 then moves the output ~1e4 times the tolerance)."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.normal_(1, 0.1)
                module.bias.normal_(0, 0.1)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_timm_weights_in_torchvision_architecture_give_timm_outputs(hub, name):
    arch, repo = CASES[name]
    reference = timm_reference(arch, seed=len(name))
    state = reference.state_dict()
    hub.add_file(repo, "model.safetensors", safetensors_bytes(state))
    model = zooadapt.load(name).eval()
    plan = model.zooadapt.report.plan
    assert type(model).__module__.startswith("torchvision.")
    assert plan.coverage == 1.0 and len(plan.loaded) == len(state)
    assert not plan.missing and not plan.unexpected and not plan.mismatched
    ours = model.state_dict()
    for ck_key, model_key in plan.assignments().items():  # every tensor lands unchanged (conv_head reshaped)
        assert torch.equal(ours[model_key].flatten(), state[ck_key].flatten()), ck_key
    if name.startswith("mobilenet_v3"):
        assert {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-5}
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(x), model(x)
    scale = expected.abs().max()
    assert expected.std() > 0.01 * scale  # the logits differ: this is not a comparison of constants
    assert (got - expected).abs().max() <= 1e-5 * scale


@pytest.mark.slow
def test_stages_are_named_by_resolution():
    """Each ``strideN`` stage's output really is N times smaller than the input."""
    for name in ("mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"):
        model = zooadapt.load(name, pretrained=False).eval()
        smap = model.zooadapt.stages
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            for index, block in enumerate(model.features):
                x = block(x)
                stage = smap.stage_of(f"features.{index}")
                expected = 2 if stage == "stem" else int(stage.removeprefix("stride"))
                assert x.shape[-1] == 64 // expected, (name, index, stage)
        assert smap.head == ("classifier.1" if name == "mobilenet_v2" else "classifier.3")


def test_info_shows_resolution_stages(capsys):
    assert cli(["info", "mobilenet_v2", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in info["stages"]] == ["stem", "stride2", "stride4", "stride8", "stride16", "stride32"]
    assert info["head"] == "classifier.1" and info["weights"].startswith("hf://timm/mobilenetv2_100.ra_in1k@")
    assert cli(["info", "mobilenet_v3_large"]) == 0
    text = capsys.readouterr().out
    assert "stride16" in text and "pre_logits" in text and "classifier.3" in text
    assert "blocks.N.M -> features.# (numbered in order from 1)" in text  # the renumber rule, in words


@pytest.mark.slow
def test_freeze_by_resolution(hub):
    reference = timm_reference("mobilenetv2_100", seed=3)
    hub.add_file("timm/mobilenetv2_100.ra_in1k", "model.safetensors", safetensors_bytes(reference.state_dict()))
    model = zooadapt.load("mobilenet_v2", num_classes=4, freeze="stem-stride8")
    frozen = {n.split(".")[1] for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {str(i) for i in range(7)}  # features.0 (stem) .. features.6 (last block at stride 8)
    assert model.classifier[1].out_features == 4 and model.classifier[1].weight.requires_grad
    assert all(not m.training for m in model.train().features[:7].modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.slow
def test_v1_has_no_published_weights_and_says_what_to_do():
    with pytest.raises(zooadapt.ZooadaptError, match="weights=PATH"):
        zooadapt.load("mobilenet_v1", num_classes=10)
    model = zooadapt.load("mobilenet_v1", pretrained=False, num_classes=10)
    assert model.fc.out_features == 10


@pytest.mark.slow
def test_v3_features_only_matches_the_full_model():
    """v3's stages continue after pooling (pre_logits): the family gives the flatten in between."""
    from zooadapt.loading.features import check_features

    diffs = check_features(get_registry().family("mobilenet_v3"), "mobilenet_v3_small",
                           input_size=(3, 96, 96))
    assert set(diffs) == {"stem", "stride4", "stride8", "stride16", "stride32", "pre_logits"}
    assert max(diffs.values()) == 0.0

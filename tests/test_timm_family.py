"""Any timm model through the timm family: names, tags, Hub ids, head, stages, listing without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import zooadapt
from zooadapt.cli import main as cli
from zooadapt.errors import UnknownModelError
from zooadapt.plugin_api import get_registry
from zooadapt.testing import safetensors_bytes, seeded_state_dict


def timm_state_dict(name: str, seed: int) -> dict[str, torch.Tensor]:
    import timm

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    return seeded_state_dict(model, seed)


@pytest.fixture(scope="module")
def convnext_atto():
    return timm_state_dict("convnext_atto", seed=7)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["convnext_atto", "convnext_atto.d2_in1k", "timm/convnext_atto.d2_in1k"])
def test_name_tag_or_hub_id_load_the_same_file(hub, convnext_atto, name):
    hub.add_file("timm/convnext_atto.d2_in1k", "model.safetensors", safetensors_bytes(convnext_atto))
    model = zooadapt.load(name, num_classes=3, freeze="stem,stages.0-1")
    report = model.zooadapt.report
    assert report.family == "timm" and report.arch == "convnext_atto.d2_in1k"
    assert report.source == "hf://timm/convnext_atto.d2_in1k@main/model.safetensors"
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in convnext_atto.items() if not k.startswith("head.fc."))
    assert model.get_classifier().out_features == 3 and sorted(report.plan.new_head) == ["head.fc.bias",
                                                                                          "head.fc.weight"]
    assert not report.plan.missing and not report.plan.unexpected
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters() if n.startswith(("stem.", "stages.0.", "stages.1."))}
    assert report.frozen == ("stem", "stages.0", "stages.1")


def test_keeping_the_published_head_and_freezing_by_count(hub):
    state = timm_state_dict("resnet10t", seed=10)
    hub.add_file("timm/resnet10t.c3_in1k", "model.safetensors", safetensors_bytes(state))
    model = zooadapt.load("resnet10t", freeze=2)
    assert torch.equal(model.fc.weight, state["fc.weight"]) and model.zooadapt.report.coverage == 1.0
    assert model.zooadapt.stages.names == ("stem", "layer1", "layer2", "layer3", "layer4")
    assert model.zooadapt.report.frozen == ("stem", "layer1")
    assert model.zooadapt.stages.stage("stem").prefixes == ("conv1", "bn1")


def test_data_config_comes_from_timms_pretrained_config():
    entry = get_registry().entry("resnet10t.c3_in1k")
    assert entry.data is not None and entry.data.input_size == (3, 176, 176)
    assert entry.data.interpolation == "bicubic" and entry.num_classes == 1000


def test_bad_names():
    with pytest.raises(UnknownModelError, match=r"no pretrained tag 'nope'.*d2_in1k"):
        zooadapt.load("convnext_atto.nope")
    with pytest.raises(UnknownModelError, match="no architecture 'convnext_zzz'"):
        zooadapt.load("timm/convnext_zzz.d2_in1k")
    with pytest.raises(UnknownModelError, match="Did you mean"):  # not a timm name: the registry's answer
        zooadapt.load("resnet43")


def test_info_shows_timm_stages(capsys):
    assert cli(["info", "convnext_atto", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in info["stages"]] == ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "final"]
    assert info["stages"][-1]["modules"] == ["head.norm"] and info["head"] == "head.fc"
    assert info["weights"] == "hf://timm/convnext_atto.d2_in1k@main/model.safetensors"


def test_stages_fall_back_to_feature_info(monkeypatch):
    import timm
    from zooadapt.plugins import timm_family

    with torch.device("meta"):
        model = timm.create_model("resnet10t", num_classes=4)

    def no_matcher(coarse=False):
        raise NotImplementedError

    monkeypatch.setattr(model, "group_matcher", no_matcher)
    smap = timm_family.stages(model)
    assert smap.names == ("stem", "layer1", "layer2", "layer3", "layer4") and smap.head == "fc"
    assert all(smap.stage_of(n) is not None for n, _ in model.named_parameters())


@pytest.mark.parametrize(("arch", "second"), [("deit_tiny_distilled_patch16_224", "head_dist"),
                                              ("levit_128s", "head_dist"), ("volo_d1_224", "aux_head")])
def test_a_second_classifier_is_part_of_the_head(arch, second):
    """timm's ``reset_classifier`` replaces a distilled model's ``head_dist`` and VOLO's ``aux_head``
    with ``head``: they are heads (replaced, trained, never frozen), not backbone."""
    import timm
    from zooadapt.plugins import timm_family

    with torch.device("meta"):
        model = timm.create_model(arch, num_classes=4)
    smap = timm_family.stages(model)
    assert smap.head == "head" and smap.extra_heads == (second,)
    assert {smap.stage_of(n) for n, _ in model.named_parameters() if n.startswith(second + ".")} == {"head"}
    assert all(smap.stage_of(n) not in (None, "head") for n, _ in model.named_parameters()
               if not n.startswith(("head.", second + ".")))


def test_list_models_includes_timm_names_and_caches_them(tmp_path, monkeypatch):
    from importlib import metadata

    from zooadapt.plugins import timm_names

    monkeypatch.setenv("ZOOADAPT_CACHE", str(tmp_path))
    names = zooadapt.list_models("convnext_at*")
    assert {"convnext_atto.d2_in1k", "convnext_atto_ols.a2_in1k"} <= set(names)
    assert all(n.startswith("convnext_at") for n in names)
    cached = json.loads((tmp_path / f"timm-names-{metadata.version('timm')}.json").read_text())
    assert "convnext_atto.d2_in1k" in cached["pretrained"] and "convnext_atto" in cached["architectures"]
    timm_names._names_for.cache_clear()


_CHILD = """
import json, sys
{patch}
import zooadapt
names = zooadapt.list_models("convnext_atto*")
print(json.dumps({{"names": names, "torch": "torch" in sys.modules, "timm": "timm" in sys.modules}}))
"""


def _child(patch: str, cache: str) -> dict:
    env = {**os.environ, "ZOOADAPT_CACHE": cache}
    out = subprocess.run([sys.executable, "-c", _CHILD.format(patch=patch)], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_listing_never_imports_torch_cold_or_warm(tmp_path):
    cold = _child("", str(tmp_path))
    assert "convnext_atto.d2_in1k" in cold["names"]
    assert not cold["torch"] and not cold["timm"]
    # warm: the cache answers; a child process to ask timm is not even possible now
    warm = _child("import subprocess; subprocess.run = None", str(tmp_path))
    assert warm["names"] == cold["names"] and not warm["torch"]


@pytest.mark.slow
def test_an_encoder_without_a_classifier_loads_headless_and_refuses_a_head():
    """timm builds ``qwen3_vit_88m_enc`` without ``get_classifier()``: it loads as it is, with stages
    and no head; ``num_classes=5`` is refused by name rather than ignored (no head would be built)."""
    from zooadapt.errors import InvalidArgumentError

    net = zooadapt.load("qwen3_vit_88m_enc", pretrained=False, device="meta")
    assert net.zooadapt.stages.head == "" and net.zooadapt.stages.names[-1] == "final"
    with pytest.raises(InvalidArgumentError, match=r"num_classes=5: 'qwen3_vit_88m_enc' has no classifier"):
        zooadapt.load("qwen3_vit_88m_enc", pretrained=False, device="meta", num_classes=5)

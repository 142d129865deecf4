"""What a process remembers is keyed by everything it depends on: each later load gives what a
fresh process would.

Found by probing the neighbours of "the first build of each architecture is copied after"
(``zooadapt.loading.meta_build``) and of the registry and signature caches. Before:
* a load under ``with torch.device("meta")`` (or ``set_default_device``) left its meta buffers to
  every later load of the architecture: timm's relative-position tables on ``meta``, and a
  forward that failed; a load under ``torch.inference_mode()`` made every later load fail (its
  inference tensors cannot become trainable), with the error blamed on the plugin;
* ``timm.layers.set_fused_attn(False)`` was ignored once the architecture had been built;
* ``img_size=160.0`` loaded after ``img_size=160`` (equal keys) where a fresh process refuses it;
* two loaded models shared timm's ``feature_info`` dicts, so one's change reached later loads;
* a family registered again with a new ``StageMap`` kept the old stages;
* a ``ZOOADAPT_REGISTRY`` file edited, or the variable set, in a running process was not seen,
  even after ``zooadapt.clear_caches()``;
* a plugin registered in the process (no installed version) had its signatures kept on disk
  under ``zooadapt``, so after its code changed the next process no longer identified its files.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import timm
import torch
import torch.nn as nn
from fake_plugins import one_family_plugin
from safetensors.torch import save_file

import zooadapt
from zooadapt.loading import meta_build
from zooadapt.plugin_api import Family, ModelEntry, Stage, StageMap, WeightSource


def _timm_file(arch: str, tmp_path, **options) -> str:
    torch.manual_seed(0)
    path = tmp_path / f"{arch}.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model(arch, **options).state_dict().items()}, str(path))
    return str(path)


def _same_model(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    """The same tensors, on the same devices, with the same flags, and the same outputs."""
    assert [(k, v.device, v.dtype, v.requires_grad) for k, v in a.state_dict(keep_vars=True).items()] == \
        [(k, v.device, v.dtype, v.requires_grad) for k, v in b.state_dict(keep_vars=True).items()]
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("setting", ["device-context", "default-device", "inference-mode"])
def test_a_load_under_a_torch_setting_leaves_later_loads_as_a_fresh_process_makes_them(setting, tmp_path):
    path = _timm_file("test_vit", tmp_path)
    relpos = _timm_file("vit_relpos_small_patch16_224", tmp_path, img_size=64, depth=1)
    zooadapt.clear_caches()
    cold = zooadapt.load("vit_relpos_small_patch16_224", weights=relpos, img_size=64, depth=1, num_classes=5)
    zooadapt.clear_caches()
    for name, weights, options in (("test_vit", path, {}),
                                   ("vit_relpos_small_patch16_224", relpos, {"img_size": 64, "depth": 1})):
        if setting == "device-context":
            with torch.device("meta"):
                zooadapt.load(name, weights=weights, num_classes=5, **options)
        elif setting == "default-device":
            torch.set_default_device("meta")
            try:
                zooadapt.load(name, weights=weights, num_classes=5, **options)
            finally:
                torch.set_default_device(None)
        else:
            with torch.inference_mode():
                zooadapt.load(name, weights=weights, num_classes=5, **options)
    warm = zooadapt.load("vit_relpos_small_patch16_224", weights=relpos, img_size=64, depth=1, num_classes=5)
    assert not any(b.is_meta or b.is_inference() for b in warm.buffers())
    assert all(p.requires_grad and not p.is_inference() for p in warm.parameters())
    warm.head.load_state_dict(cold.head.state_dict())  # the new heads are random: made the same here
    _same_model(warm, cold, torch.randn(1, 3, 64, 64))


def test_timms_layer_flags_reach_a_warm_load():
    zooadapt.load("test_vit", pretrained=False)  # the skeleton, built with fused attention
    timm.layers.set_fused_attn(False)
    try:
        model = zooadapt.load("test_vit", pretrained=False)
        assert model.blocks[0].attn.fused_attn is False
        assert timm.create_model("test_vit").blocks[0].attn.fused_attn is False  # what timm builds now
    finally:
        timm.layers.set_fused_attn(True)
    assert zooadapt.load("test_vit", pretrained=False).blocks[0].attn.fused_attn is True


@pytest.mark.parametrize(("first", "then"), [(160, 160.0), (1, True), ((160, 160), (160.0, 160.0))])
def test_options_of_equal_value_and_another_type_are_other_builds(first, then):
    family = zooadapt.host.registry.get_registry().family("timm")
    assert meta_build._key(family, "test_vit", 5, {"img_size": first}) != \
        meta_build._key(family, "test_vit", 5, {"img_size": then})


def test_a_float_image_size_is_refused_after_an_int_one_as_in_a_fresh_process():
    zooadapt.load("test_vit", pretrained=False, img_size=160)
    with pytest.raises(zooadapt.errors.InvalidArgumentError, match="img_size"):
        zooadapt.load("test_vit", pretrained=False, img_size=160.0)


def test_two_loads_share_no_feature_info(tmp_path):
    path = _timm_file("resnet10t", tmp_path)
    a = zooadapt.load("resnet10t", weights=path, num_classes=5)
    b = zooadapt.load("resnet10t", weights=path, num_classes=5)
    assert a.feature_info[0] == b.feature_info[0] and a.feature_info[0] is not b.feature_info[0]
    a.feature_info[0]["module"] = "renamed"
    assert zooadapt.load("resnet10t", weights=path, num_classes=5).feature_info[0]["module"] == "act1"


def _tiny_build(arch: str, num_classes: int = 10, **options: object) -> nn.Module:
    model = nn.Sequential()
    model.add_module("stem", nn.Conv2d(3, 8, 3))
    model.add_module("body", nn.Conv2d(8, 8, 3))
    model.add_module("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    model.add_module("fc", nn.Linear(8, num_classes))
    return model


def _tiny_plugin(stages: tuple[str, str]) -> object:
    family = Family(name="tinyfam", build=_tiny_build, architectures=("tinynet",),
                    stages=StageMap((Stage(stages[0], ("stem",)), Stage(stages[1], ("body",))), head="fc"))
    return one_family_plugin(family, ModelEntry(name="tinynet", family="tinyfam", arch="tinynet", num_classes=10,
                                                source=WeightSource(url="https://example.invalid/tiny.pth")))


def test_a_family_registered_again_with_new_stages_gets_them(tmp_path):
    from zooadapt.host.plugin_manager import load_plugins
    from zooadapt.host.registry import reset_registry

    torch.save(_tiny_build("tinynet").state_dict(), tmp_path / "tiny.pth")
    pm = load_plugins()
    first = pm.register(_tiny_plugin(("stem", "body")), name="tinyfam")
    try:
        reset_registry()
        assert zooadapt.load("tinynet", weights=tmp_path / "tiny.pth", num_classes=3).zooadapt.stages.names == \
            ("stem", "body")
        pm.unregister(name=first)
        pm.register(_tiny_plugin(("input", "features")), name="tinyfam")
        reset_registry()  # as docs/plugins.md says; no clear_caches()
        model = zooadapt.load("tinynet", weights=tmp_path / "tiny.pth", num_classes=3, freeze="input")
        assert model.zooadapt.stages.names == ("input", "features")
        assert not model.stem.weight.requires_grad and model.body.weight.requires_grad
    finally:
        pm.unregister(name="tinyfam")
        reset_registry()
        zooadapt.clear_caches()


def test_a_registry_file_edited_or_named_later_is_read_again(tmp_path, monkeypatch):
    from zooadapt.testing import torchvision_state_dict

    for arch in ("resnet18", "resnet34"):
        save_file(torchvision_state_dict(arch), str(tmp_path / f"{arch}.safetensors"))
    team = tmp_path / "team.toml"

    def entry(name: str, arch: str) -> str:
        return f'[models.{name}]\nfamily = "resnet"\narch = "{arch}"\npath = "{tmp_path / arch}.safetensors"\n'

    team.write_text(entry("teamnet", "resnet18"))
    monkeypatch.setenv("ZOOADAPT_REGISTRY", str(team))
    assert len(zooadapt.load("teamnet", num_classes=5).layer3) == 2
    team.write_text(entry("teamnet", "resnet34") + "# edited\n")
    assert len(zooadapt.load("teamnet", num_classes=5).layer3) == 6  # seen without clear_caches()
    other = tmp_path / "other.toml"
    other.write_text(entry("othernet", "resnet18"))
    monkeypatch.setenv("ZOOADAPT_REGISTRY", os.pathsep.join((str(team), str(other))))
    assert zooadapt.load("othernet", num_classes=5).zooadapt.arch == "resnet18"
    monkeypatch.delenv("ZOOADAPT_REGISTRY")
    with pytest.raises(zooadapt.errors.UnknownModelError):
        zooadapt.load("othernet", num_classes=5)


_PLUGIN_IN_A_PROCESS = textwrap.dedent('''
    import os, sys, torch, torch.nn as nn, zooadapt
    from zooadapt.plugin_api import Family, ModelEntry, Stage, StageMap, WeightSource, hookimpl, load_plugins
    from zooadapt.host.registry import reset_registry
    width = int(sys.argv[1])
    def build(arch, num_classes=10, **options):
        return nn.Sequential(nn.Conv2d(3, width, 3), nn.Conv2d(width, width, 3), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(width, num_classes))
    class Plugin:
        @hookimpl
        def zooadapt_register_families(self, register):
            register(Family(name="tinyfam", build=build, architectures=("tinynet",),
                            stages=StageMap((Stage("a", ("0",)), Stage("b", ("1",))), head="4")))
        @hookimpl
        def zooadapt_register_models(self, register):
            register(ModelEntry(name="tinynet", family="tinyfam", arch="tinynet", num_classes=10,
                                source=WeightSource(url="https://example.invalid/tiny.pth")))
    load_plugins().register(Plugin(), name="tinyfam")
    reset_registry()
    path = sys.argv[2] + f"/tiny{width}.pth"
    torch.save(build("tinynet").state_dict(), path)
    print(zooadapt.identify(path).best.name)
''')


@pytest.mark.slow
def test_a_plugin_registered_in_the_process_is_described_in_each_process(tmp_path):
    """Its code may change between two processes under one name: nothing of it is kept on disk."""
    script = tmp_path / "plugin.py"
    script.write_text(_PLUGIN_IN_A_PROCESS)
    env = {**os.environ, "ZOOADAPT_CACHE": str(tmp_path / "cache")}
    for width in (8, 16):
        run = subprocess.run([sys.executable, str(script), str(width), str(tmp_path)], env=env, capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == "tinynet", run.stdout + run.stderr
        assert "for this process" in run.stderr
    kept = list((tmp_path / "cache" / "signatures").glob("*")) if (tmp_path / "cache" / "signatures").exists() else []
    assert not any("tinyfam" in p.name or "unversioned" in p.name for p in kept)


def test_a_build_that_changed_a_torch_setting_is_not_kept():
    """A build that saw the default dtype change (a builder that forgot to set it back, or
    another thread setting it meanwhile) may mix dtypes: it is used once, never copied again."""
    calls = []

    def build(arch: str, num_classes: int = 2, **options: object) -> nn.Module:
        calls.append(1)
        first = nn.Linear(4, 4)
        torch.set_default_dtype(torch.float64)  # as if another thread did it here
        return nn.Sequential(first, nn.Linear(4, num_classes))

    family = Family(name="racy", build=build, stages=StageMap((Stage("a", ("0",)),), head="1"))
    for _ in range(2):
        model = meta_build.build_on_meta(family, "x", 2)
        assert torch.get_default_dtype() == torch.float32  # put back
    assert len(calls) == 2
    assert {p.dtype for p in model.parameters()} == {torch.float32, torch.float64}  # what that build made


@pytest.mark.parametrize("how", ["context", "set_default_device"])
def test_torchs_default_device_is_where_the_model_goes_and_files_are_still_read(how, tmp_path):
    """A safetensors file read under ``with torch.device("meta")`` made its buffer on meta and
    failed with torch's TypeError; the default device is now the model's ``device=``."""
    from zooadapt.testing import torchvision_state_dict

    path = tmp_path / "resnet18.safetensors"
    save_file(torchvision_state_dict("resnet18"), str(path))
    torch.save(torchvision_state_dict("resnet18"), tmp_path / "resnet18.pth")
    explicit = zooadapt.load("resnet18", weights=path, num_classes=5, device="meta")
    if how == "context":
        with torch.device("meta"):
            model = zooadapt.load("resnet18", weights=path, num_classes=5)
            plan = zooadapt.plan_for("resnet18", tmp_path / "resnet18.pth")
            found = zooadapt.identify(tmp_path / "resnet18.pth")
    else:
        torch.set_default_device("meta")
        try:
            model = zooadapt.load("resnet18", weights=path, num_classes=5)
            plan = zooadapt.plan_for("resnet18", tmp_path / "resnet18.pth")
            found = zooadapt.identify(tmp_path / "resnet18.pth")
        finally:
            torch.set_default_device(None)
    assert all(p.is_meta for p in model.parameters())
    assert [(k, v.shape) for k, v in model.state_dict().items()] == \
        [(k, v.shape) for k, v in explicit.state_dict().items()]
    assert plan.coverage == 1.0 and found.best.name == "resnet18"
    real = zooadapt.load("resnet18", weights=path, num_classes=5)  # and outside it, on the CPU again
    assert not any(t.is_meta for t in (*real.parameters(), *real.buffers()))


def test_an_option_holding_a_dict_or_list_is_never_a_key():
    """A model may keep the caller's dict or list, which may change later: such builds are not kept."""
    family = zooadapt.host.registry.get_registry().family("timm")
    for value in ({"a": 1}, [1, 2], {1, 2}, (1, [2])):
        assert meta_build._key(family, "test_vit", 5, {"option": value}) is None
    assert meta_build._key(family, "test_vit", 5, {"option": (1, (2.0, "x"))}) is not None

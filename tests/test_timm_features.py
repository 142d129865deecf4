"""features_only for timm models timm itself cuts: ViT/DeiT (class token), Swin, ConvNeXt's final stage.

The reference is timm's own ``forward_intermediates`` / ``features_only`` on the same seeded weights.
"""

from __future__ import annotations

import pytest
import torch

import zooadapt
from zooadapt.errors import PluginError
from zooadapt.plugin_api import get_registry
from zooadapt.testing import safetensors_bytes

timm = pytest.importorskip("timm")
X = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def publish(hub, name: str, seed: int) -> torch.nn.Module:
    """Seeded weights for ``name`` on the fake Hub; returns timm's full model holding them."""
    torch.manual_seed(seed)
    full = timm.create_model(name).eval()
    source = get_registry().entry(name).source
    hub.add_file(source.repo_id, source.filename, safetensors_bytes(full.state_dict()))
    return full


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_tiny_patch16_224"])
def test_vit_blocks_match_timms_intermediates_and_nothing_after_the_cut_is_kept(hub, name):
    full = publish(hub, name, seed=3)
    net = zooadapt.load(name, features_only=("blocks.5", "blocks.2"), freeze="stem-blocks.1").eval()
    with torch.no_grad():
        got = net(X)
        ref = full.forward_intermediates(X, indices=[2, 5], intermediates_only=True)
    assert len(got) == 2 and torch.equal(got[0], ref[1]) and torch.equal(got[1], ref[0])
    assert got[0].shape == (2, 192, 14, 14)
    names = {n for n, _ in net.named_parameters()}
    assert not any(n.startswith(("blocks.6.", "blocks.11.", "norm.", "head.")) for n in names)
    assert {n.split(".")[0] for n in names} == {"cls_token", "pos_embed", "patch_embed", "blocks"}
    assert {int(n.split(".")[1]) for n in names if n.startswith("blocks.")} == set(range(6))
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {n for n in names if n.startswith(("cls_token", "pos_embed", "patch_embed.", "blocks.0.",
                                                         "blocks.1."))}
    plan = net.zooadapt.report.plan
    assert not plan.unexpected and not plan.missing
    beyond = {m.model_key for m in plan.mappings if m.status.value == "beyond_cut"}  # not in the cut model
    assert "blocks.6.attn.qkv.weight" in beyond and "head.weight" in beyond and not plan.skipped_model_keys
    assert net.zooadapt.out_stages == ("blocks.5", "blocks.2")
    assert net.zooadapt.stages.names[-1] == "blocks.5"


@pytest.mark.slow
def test_vit_blocks_are_timms_features_and_the_final_norm_a_stage_of_its_own(hub):
    """As timm's own ``features_only`` ViT: a block's output is the plain token map (no final norm),
    by default the last three blocks, as timm's; the final norm is the stage ``final`` after the
    last block, so a cut at ``blocks.11`` leaves it out and freezing ``blocks.11`` does not freeze it."""
    full = publish(hub, "vit_tiny_patch16_224", seed=4)
    net = zooadapt.load("vit_tiny_patch16_224", features_only=("blocks.3", "blocks.11")).eval()
    default = zooadapt.load("vit_tiny_patch16_224", features_only=True).eval()
    timms = timm.create_model("vit_tiny_patch16_224", features_only=True).eval()
    timms.load_state_dict({f"model.{k}": v for k, v in full.state_dict().items() if f"model.{k}" in timms.state_dict()})
    with torch.no_grad():
        got, last_three, timm_default = net(X), default(X), timms(X)
        want = full.forward_intermediates(X, indices=list(range(12)), intermediates_only=True)
    assert torch.equal(got[0], want[3]) and torch.equal(got[1], want[11])
    assert default.out_stages == ("blocks.9", "blocks.10", "blocks.11")
    assert all(torch.equal(a, b) for a, b in zip(last_three, want[9:], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(last_three, timm_default, strict=True))
    assert not any(n.startswith(("norm.", "head.")) for n, _ in net.named_parameters())
    stages = zooadapt.load("vit_tiny_patch16_224", num_classes=3).zooadapt.stages
    assert stages.names[-2:] == ("blocks.11", "final") and stages.stage("final").prefixes == ("norm",)


@pytest.mark.slow
def test_convnext_final_stage_is_the_pooled_pre_logits(hub):
    full = publish(hub, "convnext_atto", seed=5)
    net = zooadapt.load("convnext_atto", features_only=("stages.1", "final"),
                        freeze="stem-stages.2").eval()
    with torch.no_grad():
        got = net(X)
        inter = full.forward_intermediates(X, indices=[1], intermediates_only=True)[0]
        pooled = full.forward_head(full.forward_features(X), pre_logits=True)
    assert torch.equal(got[0], inter) and torch.equal(got[1], pooled) and got[1].shape == (2, 320)
    names = {n for n, _ in net.named_parameters()}
    assert "head.norm.weight" in names and not any(n.startswith("head.fc.") for n in names)
    assert net.zooadapt.report.frozen == ("stem", "stages.0", "stages.1", "stages.2")
    assert all(p.requires_grad == n.startswith(("stages.3.", "head.norm.")) for n, p in net.named_parameters())


@pytest.mark.slow
def test_swin_matches_timms_features_only_in_nchw():
    torch.manual_seed(0)
    net = zooadapt.load("swin_tiny_patch4_window7_224", pretrained=False, features_only=("layers.0", "layers.1")).eval()
    ref_full = timm.create_model("swin_tiny_patch4_window7_224").eval()
    ref_full.load_state_dict(net.state_dict(), strict=False)
    with torch.no_grad():
        got = net(X)
        ref = ref_full.forward_intermediates(X, indices=[0, 1], intermediates_only=True)
    assert [tuple(g.shape) for g in got] == [(2, 96, 56, 56), (2, 192, 28, 28)]
    assert all(torch.equal(a, b) for a, b in zip(got, ref))
    assert not any(n.startswith(("layers.2.", "layers.3.", "norm.", "head.")) for n, _ in net.named_parameters())


@pytest.mark.slow
def test_stages_timm_does_not_offer_are_refused_naming_what_works():
    with pytest.raises(PluginError, match=r"\['stem'\].*not among the features timm computes.*'blocks.0'"):
        zooadapt.load("vit_tiny_patch16_224", pretrained=False, features_only=("stem", "blocks.1"))


@pytest.mark.slow
def test_sequential_timm_models_still_cut_any_stage():
    net = zooadapt.load("convnext_atto", pretrained=False, features_only=("stem",)).eval()
    assert type(net).__name__ == "StageFeatures" and net(X)[0].shape == (2, 40, 56, 56)
    assert {n.split(".")[0] for n, _ in net.named_parameters()} == {"stem"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hiera_tiny_224", "coat_lite_mini", "cait_xxs24_224"])
def test_feature_maps_that_end_stages_out_of_line_are_timms(name):
    """Hiera's maps end blocks.0, .2, .9 and .11 (the stages between them are no map); CoaT-Lite's
    end the stages of its serial blocks, whose patch embeddings it registers first; CaiT's
    class-attention blocks and class token run after every map (timm groups one with blocks.22).
    features_only with timm's out_indices gives timm's own features_only outputs and feature_info."""
    torch.manual_seed(5)
    full = timm.create_model(name).eval()
    ref_net = timm.create_model(name, features_only=True).eval()
    wanted = ref_net.state_dict()  # a FeatureGetterNet holds the model under ``model.``
    ref_net.load_state_dict({key: v for k, v in full.state_dict().items()
                             for key in (k, f"model.{k}") if key in wanted})
    cut = zooadapt.load(name, pretrained=False, features_only=True,
                        out_indices=tuple(ref_net.feature_info.out_indices)).eval()
    cut.load_state_dict({k: v for k, v in full.state_dict().items() if k in cut.state_dict()})
    with torch.no_grad():
        got, ref = cut(X[:1]), ref_net(X[:1])
    assert len(got) == len(ref) and all(torch.equal(g, r) for g, r in zip(got, ref))
    assert cut.feature_info.channels() == ref_net.feature_info.channels()
    assert cut.feature_info.reduction() == ref_net.feature_info.reduction()


def _timm_features_holding(name: str, full: torch.nn.Module, **kwargs) -> torch.nn.Module:
    """timm's own ``features_only`` model of ``name`` holding ``full``'s tensors (a
    ``FeatureGetterNet`` holds the model under ``model.``)."""
    ref = timm.create_model(name, features_only=True, **kwargs).eval()
    wanted = ref.state_dict()
    ref.load_state_dict({key: v for k, v in full.state_dict().items() for key in (k, f"model.{k}") if key in wanted})
    return ref


@pytest.mark.slow
@pytest.mark.parametrize(("name", "out_indices"), [
    ("crossvit_9_240", (2, 5)),  # two maps of each block, one per branch
    ("coat_tiny", (0, 1, 2, 3)),  # maps 1-3 are all parallel_blocks' (three scales)
    ("mvitv2_tiny", (0, 1, 2, 3)),  # feature_info names block.N, which the model does not have
    ("twins_pcpvt_small", (0, 1, 2, 3)),
    ("resnet18", (0, 1, 2, 3, 4)),  # map 0 is act1, inside the stem (before its max-pool)
])
def test_feature_maps_that_end_no_stage_are_cut_by_index_as_timm_does(name, out_indices):
    """Where a requested map ends no stage, the cut is timm's FeatureGetterNet's (prune, then
    forward_intermediates), on the instance: outputs, feature_info and kept tensors equal timm's own
    features_only model's; outputs are named by the stage a map ends, else feature<i>."""
    torch.manual_seed(6)
    full = timm.create_model(name).eval()
    ref = _timm_features_holding(name, full, out_indices=out_indices)
    cut = zooadapt.load(f"{name}.a1_in1k" if name == "resnet18" else name, pretrained=False, features_only=True,
                        out_indices=out_indices).eval()
    state = full.state_dict()
    assert set(cut.state_dict()) <= set(state)
    cut.load_state_dict({k: state[k] for k in cut.state_dict()})
    size = ref.pretrained_cfg["input_size"] if hasattr(ref, "pretrained_cfg") else (3, 224, 224)
    x = torch.randn(1, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want = cut(x), ref(x)
    assert len(got) == len(want) == len(out_indices) and all(torch.equal(g, w) for g, w in zip(got, want))
    assert cut.feature_info.channels() == ref.feature_info.channels()
    assert cut.feature_info.reduction() == ref.feature_info.reduction()
    assert cut.feature_info.module_name() == ref.feature_info.module_name()
    assert any(o.startswith("feature") for o in cut.out_stages)
    assert not any(k.startswith(("head.", "fc.")) for k in cut.state_dict())


@pytest.mark.slow
def test_a_map_named_feature_i_is_asked_for_by_that_name_and_reloads(tmp_path):
    """CrossViT's maps 2 and 5 are the two branches of blocks.2: no stage name tells them apart,
    so they are feature2 and feature5; features_only= takes those names, and a saved cut reloads
    to the same outputs. Mixing them with a stage that is no map is refused, naming the maps."""
    by_index = zooadapt.load("crossvit_tiny_240", pretrained=False, features_only=True, out_indices=(2, 5)).eval()
    by_name = zooadapt.load("crossvit_tiny_240", pretrained=False, features_only=["feature5", "feature2"]).eval()
    assert by_index.out_stages == by_name.out_stages == ("feature2", "feature5")
    assert by_index.zooadapt.stages.names[-1] == "blocks.2"
    back = zooadapt.load(zooadapt.save(by_index, tmp_path)).eval()
    x = torch.randn(1, 3, 240, 240, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(by_index(x), back(x)))
    with pytest.raises(zooadapt.ZooadaptError, match=r"'blocks.0' is no feature map of this model.*Feature maps: 0:"):
        zooadapt.load("crossvit_tiny_240", pretrained=False, device="meta", features_only=["blocks.0", "feature5"])


@pytest.mark.slow
def test_timms_default_maps_are_found_once_per_release_and_kept_on_disk(tmp_path, monkeypatch):
    """features_only=True means timm's default out_indices, which only timm's own features model
    tells (a meta build); a later process reads them from the cache directory instead."""
    from zooadapt.plugins import timm_features

    monkeypatch.setenv("ZOOADAPT_CACHE", str(tmp_path))
    zooadapt.clear_caches()
    net = zooadapt.load("test_vit", pretrained=False, device="meta", features_only=True)
    info = timm.create_model("test_vit", features_only=True).feature_info
    want = tuple(sorted(i % len(info) for i in info.out_indices))
    assert net.feature_info.out_indices == want
    assert list(tmp_path.glob(f"timm-default-out-indices-{timm.__version__}.json"))
    zooadapt.clear_caches()  # as a new process: only the file remains

    def no_build(arch):  # type: ignore[no-untyped-def]
        raise AssertionError(f"built timm's features model of {arch} again")

    monkeypatch.setattr(timm_features, "_timm_default_maps", no_build)
    again = zooadapt.load("test_vit", pretrained=False, device="meta", features_only=True)
    assert again.out_stages == net.out_stages


@pytest.mark.slow
@pytest.mark.parametrize("options", [{}, {"depth": 4}, {"depth": 3}, {"depth": 4, "embed_dim": 32, "num_heads": 2}])
def test_timms_default_maps_follow_the_build_options(tmp_path, monkeypatch, options):
    """The default maps depend on how the architecture was built (a ViT's last 3 of however many
    blocks it has), so they are found and kept per architecture *and* build options: a shallower
    build after the default one still gets timm's answer for that build."""
    monkeypatch.setenv("ZOOADAPT_CACHE", str(tmp_path))
    zooadapt.clear_caches()
    zooadapt.load("test_vit", pretrained=False, device="meta", features_only=True)  # the default build first
    net = zooadapt.load("test_vit", pretrained=False, device="meta", features_only=True, **options)
    info = timm.create_model("test_vit", features_only=True, **options).feature_info
    assert net.feature_info.out_indices == tuple(sorted(i % len(info) for i in info.out_indices))
    assert net.feature_info.channels() == info.channels()

"""``feature_info`` on features_only models, swept over every architecture.

timm models: the same values as ``timm.create_model(arch, features_only=True, out_indices=...)
.feature_info`` for timm's default outputs, selected with ``out_indices=`` (timm's indices).
Built-in families: channels and reduction checked against real forwards at two input sizes
(the reduction is the stride: 128 more input rows give 128 / reduction more output rows).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from generators import entry_and_family, sweep_cases

import zooadapt

timm = pytest.importorskip("timm")

FAST = {arch: "feature_info" for arch in ("mobilenet_v3_small", "mobilenet_v1", "test_convnext", "test_vit",
                                          "test_efficientnet")}
KNOWN: dict[tuple[str, str, str], str] = {}


def timm_reference(arch: str) -> object:
    """timm's own FeatureInfo for ``features_only`` with its default outputs (built on meta)."""
    from zooadapt.loading.meta_build import skip_parameter_init

    with warnings.catch_warnings(), torch.device("meta"), skip_parameter_init():
        warnings.simplefilter("ignore")
        return timm.create_model(arch, features_only=True).feature_info


def absolute(indices: tuple[int, ...], count: int) -> list[int]:
    return sorted(i % count for i in indices)


@pytest.mark.sweep
@pytest.mark.parametrize(("arch", "variant"), sweep_cases("feature_info", ["feature_info"], FAST, KNOWN))
def test_feature_info_is_timms_or_the_forwards(arch, variant):
    entry, _ = entry_and_family(arch)
    if entry.family == "timm":
        check_against_timm(arch)
    else:
        check_against_forward(arch)


def check_against_timm(arch: str) -> None:
    ref = timm_reference(arch)
    wanted = absolute(tuple(ref.out_indices), len(ref))
    # every map timm's own features_only returns, those inside a stage (ResNet's act1) too
    net = zooadapt.load(arch, pretrained=False, device="meta", features_only=True, out_indices=tuple(wanted))
    got = net.feature_info
    assert len(got) == len(ref)
    assert got.channels() == ref.channels(wanted)
    assert got.reduction() == ref.reduction(wanted)
    assert got.module_name() == ref.module_name(wanted)
    assert got.get_dicts() == ref.get_dicts(idx=wanted)
    assert [got[i] for i in range(len(got))] == [ref[i] for i in range(len(ref))]
    assert len(net.out_stages) == len(wanted)


def check_against_forward(arch: str) -> None:
    torch.manual_seed(0)
    net = zooadapt.load(arch, pretrained=False, features_only=True).eval()
    info = net.feature_info
    small, large = torch.randn(1, 3, 224, 224), torch.randn(1, 3, 352, 352)
    with torch.no_grad():
        outs_small, outs_large = net(small), net(large)
    assert len(info.channels()) == len(outs_small) == len(net.out_stages)
    maps = 0
    for chs, red, a, b in zip(info.channels(), info.reduction(), outs_small, outs_large):
        assert a.shape[1] == chs
        if a.ndim == 4:  # a feature map: the stride is exact
            assert (b.shape[2] - a.shape[2]) * red == 128, (arch, red, a.shape, b.shape)
            maps += 1
    # every output is a feature map: feature_info is the list of them, out_indices their positions
    if maps == len(outs_small):
        assert len(info) == maps and list(info.out_indices) == list(range(maps))
    modules = dict(net.named_modules())
    assert all(name in modules for name in info.module_name())


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["test_convnext", "test_resnet", "test_efficientnet", "test_vit"])
def test_out_indices_return_what_timms_features_only_returns(arch, tmp_path):
    from zooadapt.testing import seeded_state_dict

    with torch.device("meta"):
        full = timm.create_model(arch)
    path = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file(seeded_state_dict(full, seed=11), str(path))
    indices = {"test_resnet": (1, 2, 3, 4), "test_vit": (1, 3)}.get(arch, (0, 1, 2))
    net = zooadapt.load(arch, weights=path, features_only=True, out_indices=indices).eval()
    theirs = timm.create_model(arch, features_only=True, out_indices=indices, pretrained=True,
                               pretrained_cfg_overlay={"file": str(path)}).eval()
    x = torch.randn(2, *timm.data.resolve_data_config({}, model=full)["input_size"])
    with torch.no_grad():
        ours, ref = net(x), theirs(x)
    assert len(ours) == len(ref) == len(indices)
    assert all(torch.equal(a, b) for a, b in zip(ours, ref))
    assert net.feature_info.channels() == theirs.feature_info.channels()
    assert net.feature_info.reduction() == theirs.feature_info.reduction()
    assert net.feature_info.module_name() == theirs.feature_info.module_name()


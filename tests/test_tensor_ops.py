"""The option rules' tensor arithmetic (``zooadapt.contract.tensor_ops``) computes what timm's does.

zooadapt used to call timm's ``adapt_input_conv`` and ``resample_abs_pos_embed``; its own copies
must give the same tensors (bit for bit where timm's are exact), over input channel counts,
space-to-depth stems, dtypes, grids and prefix tokens.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zooadapt.contract.errors import InvalidArgumentError
from zooadapt.contract.rules import AdaptInputConv, ResamplePosEmbed
from zooadapt.contract.tensor_ops import adapt_input_conv, resample_abs_pos_embed

timm_manipulate = pytest.importorskip("timm.models._manipulate")
timm_layers = pytest.importorskip("timm.layers")

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(in_chans=st.integers(1, 8), out=st.integers(1, 6), kernel=st.sampled_from([1, 3, 7]),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]), seed=st.integers(0, 2**16))
def test_adapt_input_conv_matches_timms(in_chans, out, kernel, dtype, seed):
    weight = torch.randn(out, 3, kernel, kernel, generator=torch.Generator().manual_seed(seed)).to(dtype)
    ours = adapt_input_conv(in_chans, weight)
    theirs = timm_manipulate.adapt_input_conv(in_chans, weight.clone(), base_chans=3)
    assert ours.shape == (out, in_chans, kernel, kernel) and ours.dtype == dtype
    assert torch.equal(ours, theirs)


@SETTINGS
@given(groups=st.integers(2, 4), seed=st.integers(0, 2**16))
def test_a_space_to_depth_stem_sums_each_group_for_one_channel(groups, seed):
    weight = torch.randn(4, 3 * groups, 3, 3, generator=torch.Generator().manual_seed(seed))
    ours = adapt_input_conv(1, weight, base_chans=3)
    assert ours.shape == (4, groups, 3, 3)
    assert torch.equal(ours, timm_manipulate.adapt_input_conv(1, weight.clone(), base_chans=3))
    with pytest.raises(InvalidArgumentError, match="space-to-depth"):
        adapt_input_conv(5, weight, base_chans=3)


def test_the_same_channel_count_is_the_weight_itself_and_bad_counts_are_refused():
    weight = torch.randn(2, 3, 3, 3)
    assert adapt_input_conv(3, weight) is weight
    with pytest.raises(InvalidArgumentError, match="positive"):
        adapt_input_conv(0, weight)
    with pytest.raises(InvalidArgumentError, match="4 dimensions"):
        adapt_input_conv(1, torch.randn(2, 3))


@SETTINGS
@given(side=st.integers(2, 8), rows=st.integers(1, 10), cols=st.integers(1, 10), prefix=st.integers(0, 4),
       dim=st.sampled_from([4, 8]), dtype=st.sampled_from([torch.float32, torch.bfloat16]), seed=st.integers(0, 2**16))
def test_resample_abs_pos_embed_matches_timms(side, rows, cols, prefix, dim, dtype, seed):
    pos = torch.randn(1, prefix + side * side, dim, generator=torch.Generator().manual_seed(seed)).to(dtype)
    ours = resample_abs_pos_embed(pos, (rows, cols), num_prefix_tokens=prefix)
    theirs = timm_layers.resample_abs_pos_embed(pos.clone(), [rows, cols], num_prefix_tokens=prefix)
    assert ours.shape == (1, prefix + rows * cols, dim) and ours.dtype == dtype
    assert torch.equal(ours, theirs)
    assert torch.equal(ours[:, :prefix], pos[:, :prefix])  # class and register tokens kept as they are


def test_an_embedding_of_the_asked_square_grid_comes_back_unchanged():
    pos = torch.randn(1, 1 + 49, 8)
    assert resample_abs_pos_embed(pos, (7, 7)) is pos


def test_the_rules_convert_with_them():
    weight = torch.randn(5, 3, 3, 3)
    rule = AdaptInputConv("conv1.weight", 2)
    assert rule.converts("conv1.weight", (5, 3, 3, 3), (5, 2, 3, 3))
    assert torch.equal(rule.convert(weight, (5, 2, 3, 3)), timm_manipulate.adapt_input_conv(2, weight.clone()))
    pos = torch.randn(1, 1 + 16, 8)
    resample = ResamplePosEmbed("pos_embed", (3, 5))
    assert torch.equal(resample.convert(pos, (1, 16, 8)), timm_layers.resample_abs_pos_embed(pos, [3, 5]))


def test_importing_the_contract_imports_neither_torch_nor_timm():
    code = ("import sys, zooadapt.contract.rules, zooadapt.contract.tensor_ops; "
            "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

"""Structural pairing whatever order a block defines its modules in.

Checkpoints are generated from real state dicts (torchvision's ResNet-18 and ResNet-50, timm's
MobileNetV3 and ConvNeXt) the way other frameworks lay the same network out: a block's shortcut
registered before its convolutions, norms named inside their convs (``conv1.norm``), BatchNorm
without ``num_batches_tracked``, and other module names. Each combination must pair exactly (every
tensor checked by value against its true counterpart) or be refused with an error; never paired
wrongly.
"""

from __future__ import annotations

import itertools
import re

import pytest
import torch
import torchvision

import zooadapt
from zooadapt.contract.errors import IncompatibleCheckpointError
from zooadapt.loading.plan import Positional, make_plan

pytestmark = pytest.mark.slow


def seeded(state):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    return {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()) for k, v in state.items()}


def foreign(state, *, shortcut_first: bool, norm_in_conv: bool, tracked: bool):  # type: ignore[no-untyped-def]
    """``state`` (torchvision ResNet names) as another framework would save it. Returns the new state
    and new key -> the original key it holds."""
    blocks: dict[str, list[str]] = {}
    for k in state:
        m = re.match(r"(layer\d+\.\d+)\.", k)
        blocks.setdefault(m[1] if m else k, []).append(k)
    out, origin = {}, {}
    for keys in blocks.values():
        if shortcut_first:
            keys = [k for k in keys if ".downsample." in k] + [k for k in keys if ".downsample." not in k]
        for k in keys:
            if not tracked and k.endswith("num_batches_tracked"):
                continue
            new = re.sub(r"layer(\d+)\.(\d+)\.", r"stage\1.unit\2.", k)
            if norm_in_conv:
                new = re.sub(r"\bbn(\d)\.", r"conv\1.norm.", new)
                new = new.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
            else:
                new = new.replace("downsample.0.", "shortcut.conv.").replace("downsample.1.", "shortcut.bn.")
            new = new.replace("bn1.", "stem_bn.") if new.startswith("bn1.") else new
            out[new], origin[new] = state[k], k
    return out, origin


@pytest.mark.parametrize("arch", ["resnet18", "resnet34"])
@pytest.mark.parametrize("shortcut_first,norm_in_conv,tracked", list(itertools.product([False, True], repeat=3)))
def test_resnet_blocks_in_any_order_pair_exactly(tmp_path, arch, shortcut_first, norm_in_conv, tracked):
    state = seeded(getattr(torchvision.models, arch)().state_dict())
    ck, origin = foreign(state, shortcut_first=shortcut_first, norm_in_conv=norm_in_conv, tracked=tracked)
    path = tmp_path / "foreign.pth"
    torch.save(ck, path)
    model = zooadapt.load(arch, weights=path)
    loaded = model.state_dict()
    plan = model.zooadapt.report.plan
    assert plan.fits
    for m in plan.loaded:
        assert origin[m.checkpoint_key] == m.model_key, (m.checkpoint_key, m.model_key)
        assert torch.equal(loaded[m.model_key], state[m.model_key])


def test_same_signature_without_an_anchor_is_refused():
    """Two modules of one signature whose counterparts nothing tells apart: refused, not guessed."""
    model = {"blk.0.pre.weight": (3,), "blk.0.a.weight": (4,), "blk.0.b.weight": (4,)}
    anchored = {"x.0.pre.weight": (3,), "x.0.q.weight": (4,), "x.0.p.weight": (4,)}
    plan = make_plan(anchored, model, rules=[Positional()])
    assert plan.assignments() == {"x.0.pre.weight": "blk.0.pre.weight", "x.0.q.weight": "blk.0.a.weight",
                                  "x.0.p.weight": "blk.0.b.weight"}
    loose = {"x.0.q.weight": (4,), "x.0.p.weight": (4,), "x.0.pre.weight": (3,)}  # q and p follow nothing paired
    with pytest.raises(IncompatibleCheckpointError):
        make_plan(loose, model, rules=[Positional()])

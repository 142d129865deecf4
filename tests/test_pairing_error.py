"""A file that names a ResNet's modules its own way pairs by order and signature; one that cannot
pair is refused with the layout zooadapt saw (its key families beside the model's), not only a share.

The neighbours are generated from real torchvision state dicts the way another framework saves the
same network: every module under ``backbone.body.``, stages and blocks as ``stageN.unitM``, a
block's shortcut registered before its convolutions, each norm inside its conv (``conv1.norm``),
and BatchNorm without ``num_batches_tracked``.
"""

from __future__ import annotations

import re

import pytest
import torch
import torchvision

import zooadapt
from zooadapt.contract.errors import IncompatibleCheckpointError
from zooadapt.loading.key_families import describe_families, key_families
from zooadapt.loading.plan import make_plan


def neighbour(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``state`` (torchvision ResNet names) as another framework saves it; also new key -> original key."""
    blocks: dict[str, list[str]] = {}
    for key in state:
        block = re.match(r"(layer\d+\.\d+)\.", key)
        blocks.setdefault(block[1] if block else key, []).append(key)
    out, origin = {}, {}
    for keys in blocks.values():
        for key in [k for k in keys if ".downsample." in k] + [k for k in keys if ".downsample." not in k]:
            if key.endswith("num_batches_tracked"):
                continue
            new = re.sub(r"layer(\d+)\.(\d+)\.", r"stage\1.unit\2.", key)
            new = re.sub(r"\bbn(\d)\.", r"conv\1.norm.", new)
            new = new.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
            new = "backbone.body." + new
            out[new], origin[new] = state[key], key
    return out, origin


def shapes(arch: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = getattr(torchvision.models, arch)()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_key_families_fold_every_number_into_a_letter():
    keys = ["backbone.body.stage1.unit0.conv1.norm.weight", "backbone.body.stage4.unit2.conv3.norm.bias",
            "head.fc.weight", "cls_token", "blocks.11.mlp.fc2.weight"]
    assert [(f.pattern, f.tensors, f.example) for f in key_families(keys)] == [
        ("backbone.body.stageN.unitM.convK.norm", 2, "backbone.body.stage1.unit0.conv1.norm.weight"),
        ("head.fc", 1, "head.fc.weight"),
        ("(root)", 1, "cls_token"),
        ("blocks.N.mlp.fcM", 1, "blocks.11.mlp.fc2.weight"),
    ]
    text = describe_families(keys, limit=2)
    assert text.startswith("4 key families: backbone.body.stageN.unitM.convK.norm (2 tensors, e.g. ")
    assert text.endswith("head.fc (1 tensor, e.g. head.fc.weight), and 2 more")


def test_a_file_that_fills_nothing_is_refused_naming_both_layouts():
    """Shapes only: a wide ResNet's neighbour planned by name into resnet50 fills nothing."""
    wide, _ = neighbour(shapes("wide_resnet50_2"))  # type: ignore[arg-type]
    plan = make_plan(wide, shapes("resnet50"), head="fc")
    with pytest.raises(IncompatibleCheckpointError) as refused:
        plan.check(partial=False, what="resnet50")
    message = str(refused.value)
    assert f"The file's {len(wide)} unused tensors form 7 key families: backbone.body.convN (1 tensor, e.g. " \
           "backbone.body.conv1.weight), backbone.body.convN.norm (4 tensors" in message
    assert "backbone.body.stageN.unitM.convK.norm (192 tensors, e.g. backbone.body.stage1.unit0.conv1.norm.weight)" \
        in message
    assert "layerN.M.convK (48 tensors, e.g. layer1.0.conv1.weight)" in message
    assert "layerN.M.downsample.K (20 tensors, e.g. layer1.0.downsample.0.weight)" in message
    assert 'rules=["rename:REGEX=>REPLACEMENT"]' in message and "layout plugin" in message


def test_a_file_that_fills_most_of_the_model_is_refused_without_a_layout():
    """A few missing tensors: the problem list says enough, no families."""
    model = shapes("resnet50")
    ck = {k: s for k, s in model.items() if not k.startswith("layer4.2.conv3")}
    plan = make_plan(ck, model, head="fc")
    with pytest.raises(IncompatibleCheckpointError) as refused:
        plan.check(partial=False, what="resnet50")
    assert "missing from checkpoint: layer4.2.conv3.weight" in str(refused.value)
    assert "key famil" not in str(refused.value)


@pytest.mark.slow
def test_resnet50_neighbour_pairs_every_tensor_with_its_counterpart(tmp_path):
    state = torchvision.models.resnet50().state_dict()
    ck, origin = neighbour(state)
    torch.save(ck, tmp_path / "neighbour.pth")
    model = zooadapt.load("resnet50", weights=tmp_path / "neighbour.pth")
    plan = model.zooadapt.report.plan
    assert plan.fits and len(plan.loaded) == len(ck)
    loaded = model.state_dict()
    for m in plan.loaded:
        assert origin[m.checkpoint_key] == m.model_key, (m.checkpoint_key, m.model_key)
        assert torch.equal(loaded[m.model_key], state[m.model_key])


@pytest.mark.slow
def test_neighbour_whose_shapes_do_not_pair_names_the_families_it_saw(tmp_path):
    ck, _ = neighbour(torchvision.models.wide_resnet50_2().state_dict())
    torch.save(ck, tmp_path / "wide.pth")
    with pytest.raises(IncompatibleCheckpointError) as refused:
        zooadapt.load("resnet50", weights=tmp_path / "wide.pth")
    message = str(refused.value)
    assert "backbone.body.stageN.unitM.shortcut (4 tensors, e.g. backbone.body.stage1.unit0.shortcut.weight)" in message
    assert "layerN.M.bnK (192 tensors, e.g. layer1.0.bn1.weight)" in message
    assert "wide_resnet50_2" in message  # the planner's own diagnosis still comes first

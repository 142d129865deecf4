"""A model in several dtypes saved and loaded back: every parameter and buffer in its own dtype, bit for bit.

``zooadapt.save`` records the layers' dtype (``dtype``) and BatchNorm's (``norm_dtype``), null where
they are in several; then ``dtypes`` holds the most common of each (``layers``, ``norms``) and each
tensor that differs from what those two give back (``tensors``, by name). ``zooadapt.load(folder)``
casts each tensor after placement, and reads again from the file the ones float32 placement could
not hold (float64). A model in one dtype saves the config it always did, and folders saved before
``dtypes`` existed load as they always did.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import zooadapt
from zooadapt.errors import CheckpointFormatError

ARCHS = {"resnet18": {}, "mobilenet_v3_small": {}, "vit_tiny_patch16_224": {"depth": 2}, "convnext_atto": {},
         "efficientnet_b0": {}}
MIXES = ("head_fp32_body_bf16", "norms_fp32_body_fp16", "one_module_fp64")
FAST = {("resnet18", "head_fp32_body_bf16")}
NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def _dtypes(model: nn.Module) -> dict[str, torch.dtype]:
    """Every parameter's and buffer's dtype (non-persistent buffers too), by name."""
    return {**{f"parameter {n}": p.dtype for n, p in model.named_parameters()},
            **{f"buffer {n}": b.dtype for n, b in model.named_buffers()}}


def _mixed(arch: str, mix: str) -> nn.Module:
    model = zooadapt.load(arch, num_classes=3, pretrained=False, **ARCHS[arch])
    if mix == "head_fp32_body_bf16":
        model.to(torch.bfloat16)
        model.get_submodule(model.zooadapt.stages.head).float()
    elif mix == "norms_fp32_body_fp16":
        model.half()
        norms = [m for m in model.modules() if isinstance(m, NORMS)]
        assert norms
        for m in norms:
            m.float()
    else:  # one submodule with parameters of its own, chosen at random (seeded), in float64
        owners = [name for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
        model.get_submodule(random.Random(f"{arch}-{mix}").choice(owners)).double()
    return model


def _saved_config(folder) -> dict:
    config = json.loads((folder / "zooadapt.json").read_text())
    config.pop("save_id")
    return config


def _assert_same(model: nn.Module, back: nn.Module) -> None:
    before, after = _dtypes(model), _dtypes(back)
    assert before == after, {k: (v, after.get(k)) for k, v in before.items() if after.get(k) != v}
    saved, loaded = model.state_dict(), back.state_dict()
    assert list(saved) == list(loaded)
    assert all(saved[k].dtype == loaded[k].dtype and torch.equal(saved[k], loaded[k]) for k in saved), \
        [k for k in saved if not torch.equal(saved[k], loaded[k])]


@pytest.mark.parametrize(("arch", "mix"), [pytest.param(a, m, id=f"{a}-{m}", marks=[] if (a, m) in FAST else
                                                         [pytest.mark.slow]) for a in ARCHS for m in MIXES])
def test_a_model_in_several_dtypes_comes_back_in_each(arch, mix, tmp_path):
    model = _mixed(arch, mix)
    assert len({p.dtype for p in model.parameters()}) == 2
    folder = zooadapt.save(model, tmp_path / "saved")
    config = _saved_config(folder)
    listed = config.get("dtypes", {}).get("tensors", {})  # none where "dtype" and "norm_dtype" say it all
    assert len(listed) < len(_dtypes(model)) / 2, "only the tensors outside the most common dtypes are listed"
    back = zooadapt.load(folder)
    _assert_same(model, back)
    assert _saved_config(zooadapt.save(back, tmp_path / "again")) == config


def test_a_model_in_one_dtype_saves_the_config_it_always_did(tmp_path):
    model = zooadapt.load("resnet18", num_classes=3, pretrained=False, dtype=torch.bfloat16)
    config = _saved_config(zooadapt.save(model, tmp_path / "saved"))
    assert (config["dtype"], config["norm_dtype"]) == ("bfloat16", "float32") and "dtypes" not in config
    plain = zooadapt.load("resnet18", num_classes=3, pretrained=False)
    config = _saved_config(zooadapt.save(plain, tmp_path / "plain"))
    assert (config["dtype"], config["norm_dtype"]) == ("float32", "float32") and "dtypes" not in config


@pytest.fixture(scope="module")
def saved_mixed(tmp_path_factory):
    """A bfloat16 ResNet-18 whose head was kept float64, saved (once: the tests copy the folder)."""
    model = zooadapt.load("resnet18", num_classes=3, pretrained=False).to(torch.bfloat16)
    model.fc.double()
    with torch.no_grad():
        model.fc.weight.add_(1e-12)  # bits float32 cannot hold: read again from the file
    return model, zooadapt.save(model, tmp_path_factory.mktemp("mixed") / "saved")


def _copy(folder, tmp_path):
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def test_the_majority_is_recorded_and_only_the_rest_listed(saved_mixed):
    model, folder = saved_mixed
    config = _saved_config(folder)
    assert (config["dtype"], config["norm_dtype"]) == (None, "bfloat16")  # as before "dtypes": all float32
    assert config["dtypes"] == {"layers": "bfloat16", "norms": "bfloat16",
                                "tensors": {"fc.weight": "float64", "fc.bias": "float64"}}
    assert list(config).index("dtypes") == list(config).index("norm_dtype") + 1
    _assert_same(model, zooadapt.load(folder))


def test_a_model_all_in_float64_comes_back_bit_for_bit(tmp_path):
    model = zooadapt.load("resnet18", num_classes=3, pretrained=False).double()
    with torch.no_grad():
        model.fc.weight.add_(1e-12)  # bits float32 cannot hold
    config = _saved_config(zooadapt.save(model, tmp_path / "saved"))
    assert (config["dtype"], config["norm_dtype"]) == ("float64", "float64") and "dtypes" not in config
    _assert_same(model, zooadapt.load(tmp_path / "saved"))


def test_a_folder_saved_before_dtypes_existed_loads_as_it_did(saved_mixed, tmp_path):
    """Configs without ``dtypes``: one dtype is cast as before; ``"dtype": null`` (mixed layers) casts nothing."""
    folder = _copy(saved_mixed[1], tmp_path)
    path = folder / "zooadapt.json"
    config = json.loads(path.read_text())
    del config["dtypes"]
    path.write_text(json.dumps(config))
    back = zooadapt.load(folder)
    assert back.fc.weight.dtype == back.conv1.weight.dtype == torch.float32
    assert back.bn1.weight.dtype == torch.bfloat16
    path.write_text(json.dumps({**config, "dtype": "bfloat16"}))  # one dtype for all: the head too
    assert {p.dtype for p in zooadapt.load(folder).parameters()} == {torch.bfloat16}


def test_a_new_head_takes_the_saved_heads_dtype(saved_mixed):
    model, folder = saved_mixed
    back = zooadapt.load(folder, num_classes=5)
    assert back.fc.weight.shape == (5, 512) and back.fc.weight.dtype == torch.float64
    assert back.layer1[0].conv1.weight.dtype == torch.bfloat16
    assert torch.equal(back.layer1[0].conv1.weight, model.layer1[0].conv1.weight)


@pytest.mark.parametrize("dtypes", [  # a few fast: each case loads the model again
    {"layers": "bfloat16", "norms": "bfloat16", "tensors": {"fc.weight": "Tensor"}},
    pytest.param({"layers": "bfloat16", "norms": "bfloat16", "tensors": {"fc.weight": "int64"}},
                 marks=pytest.mark.slow),
    pytest.param({"layers": "bfloat16", "norms": "bfloat16", "tensors": {"fc.weight": 3}}, marks=pytest.mark.slow),
    {"layers": "bfloat16", "norms": "bfloat16", "tensors": {"no.such.tensor": "float16"}},
    pytest.param({"layers": "load", "norms": "bfloat16", "tensors": {}}, marks=pytest.mark.slow),
    pytest.param({"layers": "bfloat16", "norms": "bfloat16", "tensors": ["fc.weight"]}, marks=pytest.mark.slow),
    pytest.param({"fc.weight": "float64"}, marks=pytest.mark.slow), ["fc.weight"]])
def test_a_config_naming_what_is_not_a_dtype_or_a_tensor_is_refused(saved_mixed, tmp_path, dtypes):
    folder = _copy(saved_mixed[1], tmp_path)
    path = folder / "zooadapt.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "dtypes": dtypes}))
    with pytest.raises(CheckpointFormatError, match="dtype"):
        zooadapt.load(folder)

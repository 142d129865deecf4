"""Build options: the ones a builder takes, the ones set on modules, and both kept by ``save``.

A model built with options (``in_chans=1``, ``global_pool='avg'``, ``depth=2``, a LayerNorm eps
no builder takes) is a different network from the one its name builds. ``zooadapt.save`` must
record them and ``zooadapt.load(folder)`` must build the same network again; an option JSON
cannot hold is said at save time, not lost. The sweep crosses the built-in families with the
options each builder takes.
"""

from __future__ import annotations

import json
import warnings
from functools import partial

import pytest
import torch
import torch.nn as nn

import zooadapt
from zooadapt.errors import InvalidArgumentError

# (name, build options): the options a user passes to fit their data or their recipe, per family
CASES = [
    ("resnet18", {"in_chans": 1}),
    ("resnet18", {"in_chans": 4, "BatchNorm2d.eps": 1e-3}),
    ("mobilenet_v2", {"in_chans": 1}),
    ("mobilenet_v3_small", {"BatchNorm2d.momentum": 0.01}),
    ("alexnet", {"in_chans": 2}),
    ("vit_tiny_patch16_224", {"global_pool": "avg", "depth": 2}),
    ("vit_tiny_patch16_224", {"depth": 2, "LayerNorm.eps": 1e-12}),
    ("convnext_atto", {"in_chans": 1, "drop_path_rate": 0.1}),
    ("convnext_atto", {"LayerNorm2d.eps": 1e-5, "head.norm.eps": 1e-12}),  # one module apart (transformers')
    ("efficientnet_b0", {"in_chans": 1, "bn_eps": 1e-3}),
    ("regnetx_002", {"in_chans": 2}),
]
FAST = {("resnet18", "in_chans"), ("vit_tiny_patch16_224", "LayerNorm.eps")}


def _case_id(name: str, options: dict) -> str:
    return f"{name}-{'-'.join(options)}"


def _marks(name: str, options: dict) -> list:
    return [] if any((name, o) in FAST for o in options) else [pytest.mark.slow]


def _attributes(model: nn.Module, options: dict) -> dict[str, list]:
    """Every module setting's values in the model, per option."""
    out: dict[str, list] = {}
    for option in options:
        target, _, attr = option.rpartition(".")
        if not target:
            continue
        if target[0].islower():  # a module's path
            out[option] = [getattr(model.get_submodule(target), attr)]
        else:  # every module of a class but those a path setting names
            paths = {o.rpartition(".")[0] for o in options if o[0].islower() and o.endswith("." + attr)}
            out[option] = [getattr(m, attr) for n, m in model.named_modules()
                           if any(c.__name__ == target for c in type(m).__mro__) and n not in paths]
    return out


@pytest.mark.parametrize(("name", "options"), [pytest.param(n, o, id=_case_id(n, o), marks=_marks(n, o))
                                               for n, o in CASES])
def test_a_model_built_with_options_reloads_as_the_same_network(name, options, tmp_path):
    torch.manual_seed(0)
    model = zooadapt.load(name, pretrained=False, num_classes=3, **options).eval()
    for option, values in _attributes(model, options).items():
        assert values and all(v == options[option] for v in values), option
    zooadapt.save(model, tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "zooadapt.json").read_text())["build_options"] == options
    again = zooadapt.load(tmp_path / "saved").eval()
    assert again.zooadapt.build_options == options
    assert _attributes(again, options) == _attributes(model, options)
    chans = options.get("in_chans", 3)
    x = torch.randn(1, chans, 64, 64) if "vit" not in name else torch.randn(1, chans, 224, 224)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    zooadapt.save(again, tmp_path / "twice")  # saved again, the options stay with it
    assert json.loads((tmp_path / "twice" / "zooadapt.json").read_text())["build_options"] == options


def test_a_module_setting_is_keyed_apart_from_the_plain_build():
    """The skeleton cache keys on the options: a build with the setting never serves one without."""
    plain = zooadapt.load("vit_tiny_patch16_224", pretrained=False, depth=1)
    tight = zooadapt.load("vit_tiny_patch16_224", pretrained=False, depth=1, **{"LayerNorm.eps": 1e-12})
    plain_again = zooadapt.load("vit_tiny_patch16_224", pretrained=False, depth=1)
    assert {m.eps for m in tight.modules() if isinstance(m, nn.LayerNorm)} == {1e-12}
    assert {m.eps for m in plain.modules() if isinstance(m, nn.LayerNorm)} == {1e-6}
    assert {m.eps for m in plain_again.modules() if isinstance(m, nn.LayerNorm)} == {1e-6}


@pytest.mark.parametrize(("options", "words"), [
    ({"LayerNorm.eps": 1e-12}, "resnet18 has no LayerNorm module"),
    ({"BatchNorm2d.weight": 1.0}, "BatchNorm2d.weight is Parameter"),
    ({"BatchNorm2d.track_running_stats": 1}, "not a plain number, flag or string"),
    ({"nn.BatchNorm2d.eps": 1e-3}, "'Class.attribute'"),
    ({"head.norm.eps": 1e-3}, "resnet18 has no module at 'head.norm'"),
    ({"bn1.weight": 1.0}, "BatchNorm2d.weight is Parameter"),
    ({"layer1.0.bn1.eps": "1e-3"}, "holds 1e-05; give a float like it"),
    ({"Batch-Norm.eps": 1e-3}, "check the spelling"),
    ({"BatchNorm2d.eps": [1e-3]}, "takes a number, a flag or a string"),
])
def test_a_module_setting_that_cannot_apply_is_refused(options, words):
    with pytest.raises(InvalidArgumentError, match=None) as refused:
        zooadapt.load("resnet18", pretrained=False, **options)
    assert words in str(refused.value)


def test_a_module_path_setting_wins_over_its_class_setting():
    """``"bn1.eps"`` sets one module; beside ``"BatchNorm2d.eps"`` it wins for that module, whatever
    the order the options are given in."""
    for options in ({"BatchNorm2d.eps": 1e-3, "bn1.eps": 1e-4}, {"bn1.eps": 1e-4, "BatchNorm2d.eps": 1e-3}):
        model = zooadapt.load("resnet18", pretrained=False, **options)
        eps = {n: m.eps for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
        assert eps.pop("bn1") == 1e-4 and set(eps.values()) == {1e-3}, options


def test_an_option_json_cannot_hold_is_said_at_save_time(tmp_path):
    model = zooadapt.load("mobilenet_v2", pretrained=False, num_classes=3,
                          norm_layer=partial(nn.BatchNorm2d, eps=1e-3))
    with pytest.warns(UserWarning, match=r"cannot hold the build option\(s\) norm_layer=\.\.\."):
        zooadapt.save(model, tmp_path / "saved")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = zooadapt.load(tmp_path / "saved", norm_layer=partial(nn.BatchNorm2d, eps=1e-3))
    assert {m.eps for m in again.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-3}
    # the same network said with a module setting is plain data: saved, and no warning
    model = zooadapt.load("mobilenet_v2", pretrained=False, num_classes=3, **{"BatchNorm2d.eps": 1e-3})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zooadapt.save(model, tmp_path / "plain")
    assert {m.eps for m in zooadapt.load(tmp_path / "plain").modules() if isinstance(m, nn.BatchNorm2d)} == {1e-3}

"""Reports and ``zooadapt inspect`` speak in stages and words (issue #22, "Output people can read").

A plan records its rules as regular expressions; what a reader sees is the foreign layout that
renamed the keys, with its one-line summary (``resnet.encoder.stages.N -> layerN+1``), other
rules with their patterns written as keys, and a table per stage before the verdict. The
per-key list is there on asking (``--keys``), and ``--json`` keeps everything.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import zooadapt
from zooadapt.cli import main
from zooadapt.loading.report import (
    NO_STAGE,
    StageCount,
    layout_summary,
    layouts_used,
    plain_rule,
    renamed_in_words,
    stage_counts,
)
from zooadapt.plugin_api import get_registry
from zooadapt.testing import torchvision_state_dict

REGEX_BITS = ("(?:", "\\.", "(\\d+)", "(.+)", "\\1")


def transformers_key(key: str) -> str:
    """A torchvision ResNet key in Hugging Face transformers' ``ResNetForImageClassification`` names."""
    key = re.sub(r"^conv1\.", "resnet.embedder.embedder.convolution.", key)
    key = re.sub(r"^bn1\.", "resnet.embedder.embedder.normalization.", key)
    key = re.sub(r"^fc\.", "classifier.1.", key)
    m = re.match(r"layer(\d)\.(\d+)\.(.*)", key)
    if m is None:
        return key
    rest = re.sub(r"^conv(\d)\.", lambda c: f"layer.{int(c[1]) - 1}.convolution.", m[3])
    rest = re.sub(r"^bn(\d)\.", lambda c: f"layer.{int(c[1]) - 1}.normalization.", rest)
    rest = rest.replace("downsample.0.", "shortcut.convolution.").replace("downsample.1.", "shortcut.normalization.")
    return f"resnet.encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.{rest}"


@pytest.fixture(scope="module")
def transformers_resnet18(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    state = torchvision_state_dict("resnet18", seed=22)
    path = tmp_path_factory.mktemp("hf") / "hf_resnet18.pth"
    torch.save({transformers_key(k): v for k, v in state.items()}, path)
    return path, state


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return code, out


# -- rules in words -------------------------------------------------------------------------------


@pytest.mark.parametrize("rule, words", [
    (zooadapt.rules.Renumber(r"(?:resnet\.)?encoder\.stages\.(\d+)", "layer{}", start=1),
     "resnet.encoder.stages.N -> layerN+1"),
    (zooadapt.rules.Renumber(r"blocks\.(\d+)", "features.{}"), "blocks.N -> features.N"),
    (zooadapt.rules.Rename(r"(layer\d+)\.layers\.(\d+)\.layer\.0\.convolution\.(.+)", r"\1.\2.conv1.\3"),
     "layerN.layers.M.layer.0.convolution.* -> layerN.M.conv1.*"),
    (zooadapt.rules.Rename(r"classifier\.1\.(weight|bias)", r"fc.\1"),
     "classifier.1.{weight,bias} -> fc.{weight,bias}"),
    (zooadapt.rules.Rename(r"(features\.\d+)\.bn1\.(.+)", (r"\1.block.0.1.\2", r"\1.1.\2")),
     "features.N.bn1.* -> features.N.block.0.1.* or features.N.1.*"),
    (zooadapt.rules.Drop(r"aux\.(.+)"), "drop aux.*"),
    (zooadapt.rules.Fuse(r"l\.(?P<i>\d+)\.(?P<part>q|k|v)\.weight", r"b.\g<i>.qkv.weight", ("q", "k", "v")),
     "l.N.{q,k,v}.weight -> b.N.qkv.weight (concatenated)"),
    (zooadapt.rules.StripPrefix("module."), "strip 'module.'"),
])
def test_rules_read_as_the_keys_they_match(rule, words):
    assert plain_rule(rule.describe()) == words


@pytest.mark.parametrize("rule", [zooadapt.rules.Rename(r"[ab]x\.(.+)", r"y.\1"),
                                  zooadapt.rules.Rename(r"(a|b)+\.(.+)", r"y.\2"),
                                  zooadapt.rules.Drop(r"^x$"),
                                  zooadapt.rules.Rename(r"(?i)fc\.(.+)", r"head.\1")])
def test_a_pattern_words_cannot_say_is_left_as_written(rule):
    """A wrong paraphrase would be worse than the regex."""
    assert plain_rule(rule.describe()) == rule.describe()


def test_every_transformers_layout_has_a_summary_in_words():
    from zooadapt.host.layouts import registered_layouts

    layouts = {lay.name: lay for lay in registered_layouts() if lay.provider.startswith("hf_")}
    assert set(layouts) >= {"transformers-resnet", "transformers-convnext", "transformers-vit",
                            "transformers-mobilenet-v2", "transformers-regnet",
                            "transformers-convnextv2",
                            "transformers-bit",
                            "transformers-mobilenet-v1",
                            "transformers-deit",
                            "transformers-dinov2",
                            "transformers-dinov2-registers",
                            "transformers-beit",
                            "transformers-swin"}
    for lay in layouts.values():
        if not lay.rules and lay.convert is None:
            continue  # options alone (transformers-levit-one-classifier): it renames nothing
        summary = layout_summary(lay)
        assert "->" in summary and not any(bit in summary for bit in REGEX_BITS), (lay.name, summary)
    assert layout_summary(layouts["transformers-resnet"]).startswith("resnet.encoder.stages.N -> layerN+1")


def test_a_layout_without_a_summary_tells_its_stage_renumbering():
    from zooadapt.plugin_api import Layout, Rename, Renumber

    layout = Layout("x", "resnet", r"enc\.0\.w", (Renumber(r"enc\.(\d+)", "layer{}", start=1),
                                                  Rename(r"stem\.(.+)", r"conv1.\1")), "someone's ResNet")
    assert layout_summary(layout) == "enc.N -> layerN+1"


# -- the load report ------------------------------------------------------------------------------


def test_report_names_the_layout_and_its_renames_in_words(transformers_resnet18):
    path, state = transformers_resnet18
    model = zooadapt.load("resnet18", weights=path, num_classes=5, freeze="layer1-2")
    report = model.zooadapt.report
    text = str(report)
    assert "renamed 120 keys by the transformers-resnet layout (resnet.encoder.stages.N -> layerN+1" in text
    assert "layout: transformers-resnet (Hugging Face transformers ResNetForImageClassification" in text
    assert "keys read as" not in text  # the planner's note is told as the layout line, once
    assert not any(bit in text for bit in REGEX_BITS), text
    assert [lay.name for lay in layouts_used(report.plan)] == ["transformers-resnet"]
    assert torch.equal(model.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])  # the words describe a real load


def test_renamed_lines_count_other_rules_in_words():
    state = torchvision_state_dict("resnet18", seed=1)
    plan = zooadapt.plan_for("resnet18", {"module." + k: v for k, v in state.items()})
    assert renamed_in_words(plan) == [f"renamed {len(state)} keys: strip 'module.' x{len(state)}"]


# -- per stage ------------------------------------------------------------------------------------


def test_stage_counts_account_for_every_model_key():
    state = torchvision_state_dict("resnet18", seed=2)
    broken = dict(state)
    del broken["layer1.0.conv1.weight"]
    broken["layer2.0.conv1.weight"] = torch.zeros(3, 3)
    plan = zooadapt.plan_for("resnet18", broken, num_classes=7, skip="layer4")
    stages = get_registry().families["resnet"].stage_map()
    rows = {r.stage: r for r in stage_counts(plan, stages, frozen=("stem",))}
    assert list(rows) == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert rows["layer1"].missing == 1 and rows["layer2"].mismatched == 1
    assert rows["layer4"].skipped == sum(k.startswith("layer4.") for k in state) and rows["layer4"].loaded == 0
    assert rows["head"] == StageCount("head", new_head=2)
    assert rows["stem"].frozen and not rows["layer1"].frozen
    total = sum(r.loaded + r.missing + r.mismatched + r.new_head + r.skipped + r.defaulted for r in rows.values())
    assert total == len(state)  # every model key counted exactly once


def test_stage_counts_without_a_stage_map_use_top_level_modules():
    state = torchvision_state_dict("resnet18", seed=2)
    plan = zooadapt.plan_for("resnet18", state)
    rows = stage_counts(plan)
    assert [r.stage for r in rows] == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "head"]
    assert NO_STAGE not in [r.stage for r in rows]
    assert sum(r.loaded for r in rows) == len(state)


# -- inspect --------------------------------------------------------------------------------------


def test_inspect_leads_with_stages_and_verdict(capsys, transformers_resnet18):
    path, state = transformers_resnet18
    _, out = run(capsys, "inspect", str(path), "--model", "resnet18", "--num-classes", "5")
    lines = out.splitlines()
    assert len(lines) < 40  # not ~120 per-key rows
    assert lines[2].split() == ["stage", "loaded", "missing", "mismatched", "new", "head"]
    table = {line.split()[0]: line.split()[1:] for line in lines[3:9]}
    assert table["stem"] == ["6", "0", "0", "0"] and table["layer1"] == ["24", "0", "0", "0"]
    assert table["head"] == ["(fc)", "0", "0", "0", "2"]
    verdict = next(i for i, line in enumerate(lines) if line.startswith("verdict: loads as is"))
    assert verdict < 12
    assert "renamed 120 keys by the transformers-resnet layout (resnet.encoder.stages.N -> layerN+1" in out
    assert not any(line.startswith("resnet.encoder.stages.") for line in lines)  # no per-key rows
    assert not any(bit in out for bit in REGEX_BITS)
    assert lines[-1] == "each of the 122 checkpoint keys, with the rule that maps it: --keys"


def test_inspect_keys_lists_every_key_with_rules_in_words(capsys, transformers_resnet18):
    path, state = transformers_resnet18
    _, out = run(capsys, "inspect", str(path), "--model", "resnet18", "--keys")
    lines = out.splitlines()
    assert "  [3] resnet.encoder.stages.N -> layerN+1" in lines or any(
        line.endswith("] resnet.encoder.stages.N -> layerN+1") for line in lines)
    rows = [line.split() for line in lines if line.startswith(("resnet.", "classifier."))]
    assert len(rows) == len(state) and all(r[-1] == "loaded" for r in rows)
    model_key = {r[0]: r[1] for r in rows}
    assert model_key["resnet.encoder.stages.2.layers.1.layer.1.convolution.weight"] == "layer3.1.conv2.weight"


def test_inspect_json_stays_complete(capsys, transformers_resnet18):
    path, state = transformers_resnet18
    code = main(["inspect", str(path), "--model", "resnet18", "--num-classes", "5", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert len(data["keys"]) == len(state) and data["layouts"] == ["transformers-resnet"]
    assert all(row["rules"] for row in data["keys"])  # the exact rules, regexes and all
    stages = {s["stage"]: s for s in data["stages"]}
    assert stages["layer2"]["loaded"] == sum(k.startswith("layer2.") for k in state)
    assert stages["head"]["new_head"] == 2
    assert sum(s["loaded"] for s in data["stages"]) == len(state) - 2 and data["loads"] is True


def test_inspect_brief_and_keys_exclude_each_other(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["inspect", str(tmp_path / "x.pth"), "--model", "resnet18", "--keys", "--brief"])
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err

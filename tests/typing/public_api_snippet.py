"""Every documented import path, used as README.md and docs/*.md use it, for mypy to check.

Not a test and never run (the paths and Hub ids are the docs' examples): ``tests/test_typing.py``
type-checks it, so a public name that moves, loses its annotations or changes what it returns
breaks the check before it breaks a user's type-checked code. Each result is assigned to a
variable of the type the docs promise, which is the assertion. Keep it in step with the README.
"""

from __future__ import annotations

import fnmatch
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch.nn.parallel import DistributedDataParallel

import zooadapt
import zooadapt.distributed
import zooadapt.plugin_api
from zooadapt.errors import (
    CheckpointFormatError,
    DownloadError,
    FreezeSpecError,
    InvalidArgumentError,
    OfflineCacheMissError,
    UnknownModelError,
    ZooadaptError,
)
from zooadapt.host.plugin_manager import reset_plugins
from zooadapt.host.registry import reset_registry
from zooadapt.integrations.lightning import StageFinetuning as StageFinetuningByFolder
from zooadapt.lightning import StageFinetuning
from zooadapt.loading.identification import Match
from zooadapt.plugin_api import (
    DataConfig,
    Family,
    HubCard,
    Layout,
    ModelEntry,
    Rename,
    Renumber,
    Stage,
    StageMap,
    StripPrefix,
    WeightSource,
    hookimpl,
)
from zooadapt.rules import Drop, KeyRule, Positional, parse_rule
from zooadapt.testing import LocalHub, hub_environment, safetensors_bytes, torchvision_state_dict
from zooadapt.testing.conformance import check_family
from zooadapt.types import LoadPlan, LoadReport, ModelInfo


def quickstart() -> None:
    """README: the one call, the Quickstart and the recipes."""
    names: list[str] = zooadapt.list_models("resnet*")
    model: torch.nn.Module = zooadapt.load("resnet34", num_classes=5, freeze="layer1-3")
    optimizer = torch.optim.SGD(zooadapt.param_groups(model, lr=1e-3, head_lr=1e-2), momentum=0.9)
    adamw = torch.optim.AdamW(zooadapt.param_groups(model, lr=1e-4, head_lr=1e-3))
    preprocess: Any = zooadapt.transforms(model)
    data: DataConfig = zooadapt.data_config(model)
    # README: print(model.zooadapt.report). torch types a module's attributes as Tensor | Module, so a
    # type-checked program cannot read it yet; the ignore is flagged as unused once load() says more.
    print(model.zooadapt.report)  # type: ignore[union-attr]
    print(names, optimizer, adamw, preprocess, data)

    my_resnet50 = torchvision.models.resnet50()
    report: LoadReport = zooadapt.load_weights(my_resnet50, "checkpoints/epoch_90.pth", family="resnet")
    moco: torch.nn.Module = zooadapt.load("resnet50", weights="moco_v2_800ep.pth.tar",
                                          rules=["strip:module.encoder_q."])
    ema_off = zooadapt.load("resnet50", weights="output/train/last.pth.tar", use_ema=False)
    embedder = zooadapt.load("resnet50", num_classes=0)
    gray = zooadapt.load("resnet34", num_classes=2, in_chans=1, dtype=torch.bfloat16)
    net = zooadapt.load("mobilenet_v1", weights="mobilenet_sgd_rmsprop_69.526.tar",
                        features_only=[f"conv{i}" for i in range(1, 8)], freeze="conv1-7")
    convnext = zooadapt.load("convnext_atto.d2_in1k", features_only=True, out_indices=(1, 3))
    best: Match | None = zooadapt.identify("finetuned.pth").best
    print(report, moco, ema_off, embedder, gray, net, convnext, best)

    plan: LoadPlan = zooadapt.plan_for("resnet50", "checkpoints/epoch_90.pth")
    plan_or_shapes = zooadapt.inspect_checkpoint("checkpoints/epoch_90.pth", model="resnet50")
    zooadapt.fetch(WeightSource(repo_id="timm/resnet34.tv_in1k", filename="model.safetensors"))
    zooadapt.lock(["resnet34"], "zooadapt.lock")
    zooadapt.clear_caches()
    print(plan, plan_or_shapes)


def finetuning(model: torch.nn.Module, net: torch.nn.Module, device: torch.device) -> None:
    """README and docs/finetuning.md: freezing, learning-rate groups, saving, wrappers."""
    groups = zooadapt.param_groups(model, lr=1e-3, head_lr=1e-2, decay=0.7, weight_decay=0.05, include_frozen=True)
    print(zooadapt.format_param_groups(groups))
    optimizer = torch.optim.AdamW(groups)
    woken: tuple[str, ...] = zooadapt.unfreeze(model, "layer4")
    frozen: tuple[str, ...] = zooadapt.frozen_stages(model)
    again: tuple[str, ...] = zooadapt.freeze(model, "layer4", bn="train")
    added: list[dict[str, Any]] = zooadapt.add_param_group(optimizer, model, lr=1e-3, decay=0.7, weight_decay=0.05)
    smap: StageMap = zooadapt.attach(net, family="mobilenet_v2")
    zooadapt.freeze(net, "stem-stride8")
    print(woken, frozen, again, added, smap)

    saved: Path = zooadapt.save(model, "flowers-r34", labels=("daisy", "tulip"))
    zooadapt.push_to_hub(model, "me/flowers-r34", license="bsd-3-clause")
    back = zooadapt.load("hf://me/flowers-r34")
    print(saved, back)

    synced = zooadapt.distributed.convert_sync_batchnorm(model)
    ddp = DistributedDataParallel(synced.to(device), device_ids=[device.index])
    ddp = zooadapt.distributed.rewrap_ddp(ddp)
    inner: torch.nn.Module = zooadapt.distributed.unwrap(ddp)
    policy: tuple[str, ...] = zooadapt.distributed.check_batchnorm_policy(model)
    sharded = zooadapt.distributed.fully_shard_stages(zooadapt.load("resnet50", device="meta"))
    zooadapt.distributed.load_full_state_dict(sharded, None)
    zooadapt.distributed.save_sharded(sharded, "flowers-r50")
    callback = StageFinetuning(freeze="layer1-3", unfreeze={5: "layer3-4"})
    same: StageFinetuning = StageFinetuningByFolder(freeze="all", unfreeze={2: "layer4", 4: ("layer3", 1e-4)})
    print(inner, policy, callback, same)


def offline() -> None:
    """README "Trying zooadapt without the Hub" and its error names."""
    hub = LocalHub().start()
    hub.add_file("timm/resnet34.tv_in1k", "model.safetensors",
                 safetensors_bytes(torchvision_state_dict("resnet34", seed=0)))
    os.environ.update(hub_environment(hub.url, tempfile.mkdtemp()))
    try:
        zooadapt.load("resnet34", num_classes=5, freeze="layer1-3")
    except (DownloadError, OfflineCacheMissError) as exc:
        problem: ZooadaptError = exc
        print(problem)
    except (UnknownModelError, FreezeSpecError, InvalidArgumentError, CheckpointFormatError) as exc:
        print(exc)


# docs/plugins.md: a family plugin, written against zooadapt.plugin_api and zooadapt.rules
STAGES = StageMap(stages=(Stage("stem", ("conv1",)), Stage("stage2", ("stage2",))), head="fc",
                  groups={"body": ("stage2",)})
RULES: tuple[KeyRule, ...] = (StripPrefix("backbone."), Rename(r"classifier\.(weight|bias)", r"fc.\1"),
                              Renumber(r"features\.(\d+)", r"blocks.{}", start=0), Drop(r"aux\..*"), Positional(),
                              parse_rule("strip:module."))


def build(arch: str, num_classes: int = 1000, **kwargs: Any) -> torch.nn.Module:
    return torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=num_classes, **kwargs)


FAMILY = Family(name="shufflenet", build=build, stages=STAGES, key_rules=RULES,
                architectures=("shufflenet_v2_x0_5",), data=DataConfig(), description="torchvision ShuffleNet V2")


@hookimpl
def zooadapt_register_families(register: Callable[[Family], None]) -> None:
    register(FAMILY)


@hookimpl
def zooadapt_register_models(register: Callable[[ModelEntry], None]) -> None:
    register(ModelEntry(name="shufflenet_v2_x0_5", family="shufflenet", arch="shufflenet_v2_x0_5",
                        source=WeightSource(url="https://example.org/shufflenetv2_x0.5-f707e7126e.pth")))


@hookimpl
def zooadapt_list_models(pattern: str) -> Iterable[str]:
    return [name for name in ("shufflenetv2_x0.5",) if fnmatch.fnmatchcase(name, pattern)]


@hookimpl
def zooadapt_register_layouts(register: Callable[[Layout], None]) -> None:
    register(Layout(name="inhouse-shufflenet", family="shufflenet", detect=r"first_conv\.0\.weight",
                    rules=(Rename(r"first_conv\.(.+)", r"conv1.\1"),), description="an in-house export"))


@hookimpl
def zooadapt_hub_card(model: torch.nn.Module, config: dict[str, Any], folder: Path) -> HubCard | None:
    return None


def plugin_tests() -> None:
    """docs/plugins.md: the conformance check and registering a plugin in a test."""
    check_family(FAMILY, "shufflenet_v2_x0_5")
    check_family("shufflenet")
    pm = zooadapt.plugin_api.load_plugins()
    pm.register(object(), name="shufflenet")
    reset_registry()
    reset_plugins()
    info: ModelInfo | None = None
    print(info)

"""``zooadapt info NAME``: a model's stages with parameter counts, head, key rules, weights and preprocessing.

The model is built on ``meta`` (nothing allocated, nothing downloaded), so this answers
"what would I get?" before any download. The description is built once per version of zooadapt,
torch, torchvision, timm and the plugins and kept in zooadapt's cache directory
(``zooadapt.host.descriptions``): later calls for the same name import neither torch nor timm.
Key rules read as the keys they match (``features.N.conv_pw.* -> features.N.conv.0.0.*``);
``--json`` gives each rule as written. Piped, no line is wrapped: each value stays on its line, whole.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import _common as ui

if TYPE_CHECKING:
    from ..contract.family import DataConfig
    from ..contract.stages import StageMap

HELP = "stages, head, key rules, weight source, revision and preprocessing of a model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="a model name (`zooadapt list`)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def compact(prefixes: Sequence[str]) -> str:
    """``features.7, features.8, … features.13`` as ``features.7..13`` (runs of numbered siblings)."""
    out: list[str] = []
    run: list[tuple[str, int]] = []

    def flush() -> None:
        if len(run) > 2:
            out.append(f"{run[0][0]}{run[0][1]}..{run[-1][1]}")
        else:
            out.extend(f"{stem}{n}" for stem, n in run)
        run.clear()

    for prefix in prefixes:
        stem, dot, last = prefix.rpartition(".")
        stem += dot
        if last.isdigit() and run and run[-1][0] == stem and run[-1][1] + 1 == int(last):
            run.append((stem, int(last)))
            continue
        flush()
        if last.isdigit():
            run.append((stem, int(last)))
        else:
            out.append(prefix)
    flush()
    return ", ".join(out)


def _stage_params(model: Any, smap: StageMap) -> dict[str, int]:
    counts = {name: 0 for name in (*smap.names, "head", "other")}
    for pname, param in model.named_parameters():
        counts[smap.stage_of(pname) or "other"] += param.numel()
    return counts


def _locked(name: str) -> dict[str, Any] | None:
    """The lock-file pin of ``name`` (commit, sha256, size), when a lock file applies."""
    from ..weights.lockfile import find_lock

    lockfile = find_lock()
    locked = lockfile.models.get(name) if lockfile else None
    if lockfile is None or locked is None:
        return None
    return {"file": str(lockfile.path), "commit": locked.commit, "sha256": locked.sha256, "size": locked.size}


def describe(name: str) -> tuple[dict[str, Any], StageMap, DataConfig]:
    """Everything ``info`` shows, as data (the ``--json`` output), the stage map and the preprocessing."""
    from ..contract.rules import DEFAULT_RULES
    from ..loading.data import data_config
    from ..loading.meta_build import build_on_meta
    from ..loading.pipeline import resolve

    entry, family = resolve(name)
    model = build_on_meta(family, entry.arch, entry.num_classes, **dict(entry.build_kwargs))
    smap = family.stage_map(model)
    counts = _stage_params(model, smap)
    if entry.headless:  # as published: no classifier (load(name) returns pooled features)
        counts["head"] = 0
    source = entry.source
    data = data_config(entry)
    info = {
        "name": entry.name,
        "family": family.name,
        "arch": entry.arch,
        "description": entry.description,
        "provider": entry.provider,
        "weights": source.describe() if source else None,
        "revision": source.revision if source and source.repo_id else None,
        "sha256": source.sha256 if source else None,
        "locked": _locked(entry.name),
        "num_classes": 0 if entry.headless else entry.num_classes,
        "headless": entry.headless,
        "head": smap.head,
        "stages": [{"name": s.name, "modules": list(s.prefixes), "params": counts[s.name]} for s in smap.stages],
        "head_params": counts["head"],
        "other_params": counts["other"],
        "total_params": sum(counts.values()),
        "groups": {g: list(m) for g, m in smap.groups.items()},
        "key_rules": [str(r) for r in (*DEFAULT_RULES, *family.key_rules)],
        "data": {"input_size": list(data.input_size), "mean": list(data.mean), "std": list(data.std),
                 "interpolation": data.interpolation, "crop_pct": data.crop_pct},
    }
    return info, smap, data


# the modules ``describe`` builds with (not imported before it runs): their edits change the key
_BUILD_MODULES = ("loading/pipeline.py", "loading/meta_build.py", "loading/data.py", "contract/stages.py",
                  "cli/info.py")


def remembered(name: str) -> dict[str, Any]:
    """``describe(name)[0]``, read from the cache of descriptions when stored under the current key
    (no torch, no timm), else built and stored. The lock-file pin is read fresh every time."""
    from pathlib import Path

    from ..host.descriptions import description_key, read_description, write_description
    from ..host.registry import get_registry
    from ..weights.paths import cache_dir

    package = Path(__file__).resolve().parents[1]
    key = description_key(name, get_registry(), [package / f for f in _BUILD_MODULES])
    directory = cache_dir()
    info = read_description(directory, name, key)
    if info is None:
        info = describe(name)[0]
        write_description(directory, name, key, {**info, "locked": None})  # the pin is read fresh, below
    return {**info, "locked": _locked(info["name"])}  # in its place: the key is there already


def run(args: argparse.Namespace) -> int:
    from ..contract.family import DataConfig
    from ..loading.data import describe as describe_data
    from ..loading.report import plain_rule

    info = remembered(args.name)
    d = info["data"]
    data = DataConfig(input_size=tuple(d["input_size"]), mean=tuple(d["mean"]), std=tuple(d["std"]),
                      interpolation=d["interpolation"], crop_pct=d["crop_pct"])
    if args.json:
        ui.print_json(info)
        return 0
    width, limit = ui.width(), ui.table_width()
    print(ui.wrap(f"{info['name']}: {info['family']}/{info['arch']}  {info['description']}".rstrip(), width))
    print(ui.wrap(f"weights: {info['weights'] or 'none published (pass weights=PATH)'}", width))
    if info["revision"]:
        print(f"revision: {info['revision']}" + ("" if len(info["revision"]) == 40 else
                                                 " (a branch or tag: pin a commit with `zooadapt lock`)"))
    if info["locked"]:
        locked = info["locked"]
        print(ui.wrap(f"locked: commit {locked['commit'] or '-'}, sha256 {locked['sha256'][:16]}… in "
                      f"{locked['file']}", width))
    print("stages (input to output):")
    stage_rows = [(s["name"], f"{s['params']:,}", compact(s["modules"])) for s in info["stages"]]
    stage_rows.append((f"head ({info['head']})", f"{info['head_params']:,}",
                       "none as published: pooled features (num_classes=N adds one)" if info.get("headless")
                       else f"{info['num_classes']} classes"))
    if info["other_params"]:
        stage_rows.append(("(no stage)", f"{info['other_params']:,}", "trainable, outside every stage"))
    print(ui.table([("stage", "params", "modules"), *stage_rows], limit, indent="  ", keep=(0,)))
    print(f"  total {info['total_params']:,} parameters")
    if info["groups"]:
        print(ui.wrap("groups: " + "; ".join(f"{g} = {'+'.join(m)}" for g, m in info["groups"].items()), width))
    print("key rules (applied in order until a key names a model key):")
    for rule in info["key_rules"]:  # patterns as the keys they match; --json has each rule exactly
        print(ui.wrap(f"  {plain_rule(rule)}", width))
    print(ui.wrap(f"preprocessing: {describe_data(data)}", width))
    return 0

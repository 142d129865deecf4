"""The ``zooadapt`` command line: ``list``, ``info``, ``inspect``, ``plugins``, ``fetch``, ``lock``.

Every subcommand takes ``--json`` for scripts; tables fit the terminal (100 columns when
piped). Exit status: 0 on success; 2 with a one-line ``zooadapt: error: …`` on stderr and no
traceback when zooadapt refuses (any ``ZooadaptError``) or the command line is wrong; 1 when
``--check`` finds a problem; 130 on Ctrl-C. ``list`` and ``plugins`` never import torch or timm.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import ZooadaptError

if TYPE_CHECKING:
    from .family import WeightSource
    from .registry import Registry
    from .stages import StageMap

__all__ = ["main", "build_parser"]


def _width() -> int:
    """Columns to fit: the terminal's (``COLUMNS`` wins), 100 when output is not a terminal."""
    import shutil

    return max(40, shutil.get_terminal_size((100, 24)).columns)


def _clip(text: str, width: int) -> str:
    """``text`` shortened to ``width`` with an ellipsis in the middle, where keys and paths
    carry least (``layer4.2.…bn3.weight``, ``hf://timm/…_in1k``)."""
    if len(text) <= width:
        return text
    if width < 2:
        return text[:width]
    head = (width - 1 + 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def _wrap(text: str, width: int | None = None) -> str:
    """Prose lines (rules, preprocessing, errors) wrapped, continuation lines indented."""
    import textwrap

    return textwrap.fill(text, width or _width(), subsequent_indent="    ", break_on_hyphens=False)


def _table(rows: Sequence[Sequence[str]], width: int | None = None, indent: str = "") -> str:
    """Aligned columns (the first row is the header) that fit ``width``: the widest column gives
    way first, its cells clipped in the middle."""
    limit = (width or _width()) - len(indent)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    floors = [max(6, min(len(rows[0][i]), 12)) for i in range(len(widths))]
    while sum(widths) + 2 * (len(widths) - 1) > limit:
        i = max(range(len(widths)), key=lambda j: widths[j] - floors[j])
        if widths[i] <= floors[i]:
            break
        widths[i] -= 1
    return "\n".join(indent + "  ".join(_clip(c, w).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _short_source(source: WeightSource | None) -> str:
    """``hf://org/repo`` when the file and revision are the defaults (as ``weights=`` reads it)."""
    if source is None:
        return "none: weights=PATH"
    if not source.repo_id:
        return source.describe()
    text = f"hf://{source.repo_id}"
    if source.filename != "model.safetensors" or source.revision != "main":
        text += f"/{source.filename}"
    return text + (f"@{source.revision}" if source.revision != "main" else "")


def _plugin_listed(registry: Registry, pattern: str) -> dict[str, str]:
    """Names plugins list through ``zooadapt_list_models``, each with the plugin that listed it."""
    from .plugin_manager import PluginFailure, report_failure

    found: dict[str, str] = {}
    if registry.pm is None:
        return found
    for impl in registry.pm.hook.zooadapt_list_models.get_hookimpls():
        try:
            names = list(impl.function(pattern=pattern) or ())
        except Exception as exc:  # one broken plugin must not hide the others' models
            report_failure(PluginFailure(impl.plugin_name, _distribution(impl.plugin_name), "zooadapt_list_models",
                                         f"{type(exc).__name__}: {exc}"), exc)
            continue
        for name in names:
            found.setdefault(name, impl.plugin_name)
    return found


def _distribution(plugin: str) -> str:
    from .plugin_manager import plugin_infos

    return next((i.distribution for i in plugin_infos() if i.name == plugin), "?")


def _family_of_plugin(registry: Registry, plugin: str) -> str:
    families = [f.name for f in registry.families.values() if f.provider == plugin]
    return families[0] if len(families) == 1 else plugin


def cmd_list(args: argparse.Namespace) -> int:
    """Registry entries and plugin-listed names matching a pattern. Imports neither torch nor timm."""
    import fnmatch

    from .registry import get_registry

    registry = get_registry()
    rows: list[dict[str, Any]] = []
    for name, entry in registry.models.items():
        if fnmatch.fnmatchcase(name, args.pattern):
            rows.append({"name": name, "family": entry.family, "source": entry.source.describe() if entry.source
                         else None, "weights": _short_source(entry.source), "description": entry.description,
                         "provider": entry.provider})
    for name, plugin in _plugin_listed(registry, args.pattern).items():
        if name not in registry.models:
            rows.append({"name": name, "family": _family_of_plugin(registry, plugin), "source": None,
                         "weights": f"(via {plugin})", "description": "", "provider": plugin})
    rows.sort(key=lambda r: r["name"])
    if args.json:
        _print_json([{k: v for k, v in r.items() if k != "weights"} for r in rows])
        return 0
    if not rows:
        print(f"no models match {args.pattern!r}; `zooadapt list` shows every name", file=sys.stderr)
        return 0
    print(_table([("name", "family", "weights"), *[(r["name"], r["family"], r["weights"]) for r in rows]]))
    return 0


def _compact(prefixes: Sequence[str]) -> str:
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
    from .lockfile import find_lock

    lockfile = find_lock()
    locked = lockfile.models.get(name) if lockfile else None
    if lockfile is None or locked is None:
        return None
    return {"file": str(lockfile.path), "commit": locked.commit, "sha256": locked.sha256, "size": locked.size}


def cmd_info(args: argparse.Namespace) -> int:
    """Stages with parameter counts, head, key rules, weight source and revision, preprocessing."""
    from .data import data_config
    from .data import describe as describe_data
    from .loader import build_on_meta, resolve
    from .rules import DEFAULT_RULES

    entry, family = resolve(args.name)
    model = build_on_meta(family, entry.arch, entry.num_classes, **dict(entry.build_kwargs))
    smap = family.stage_map(model)
    counts = _stage_params(model, smap)
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
        "num_classes": entry.num_classes,
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
    if args.json:
        _print_json(info)
        return 0
    width = _width()
    print(_wrap(f"{entry.name}: {family.name}/{entry.arch}  {entry.description}".rstrip(), width))
    print(_wrap(f"weights: {info['weights'] or 'none published (pass weights=PATH)'}", width))
    if info["revision"]:
        print(f"revision: {info['revision']}" + ("" if len(info["revision"]) == 40 else
                                                 " (a branch or tag: pin a commit with `zooadapt lock`)"))
    if info["locked"]:
        locked = info["locked"]
        print(_wrap(f"locked: commit {locked['commit'] or '-'}, sha256 {locked['sha256'][:16]}… in {locked['file']}",
                    width))
    print("stages (input to output):")
    stage_rows = [(s["name"], f"{s['params']:,}", _compact(s["modules"])) for s in info["stages"]]
    stage_rows.append((f"head ({smap.head})", f"{counts['head']:,}", f"{entry.num_classes} classes"))
    if counts["other"]:
        stage_rows.append(("(no stage)", f"{counts['other']:,}", "trainable, outside every stage"))
    print(_table([("stage", "params", "modules"), *stage_rows], width, indent="  "))
    print(f"  total {info['total_params']:,} parameters")
    if smap.groups:
        print(_wrap("groups: " + "; ".join(f"{g} = {'+'.join(m)}" for g, m in smap.groups.items()), width))
    print("key rules (applied in order until a key names a model key):")
    for rule in info["key_rules"]:
        print(_wrap(f"  {rule}", width))
    print(_wrap(f"preprocessing: {describe_data(data)}", width))
    return 0


_ELEMENT_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                  "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                       "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def _tensors_of(path: str, trusted: bool) -> list[dict[str, Any]]:
    """Key, shape, dtype, count and bytes of every tensor, in file order; a safetensors file is
    read from its header alone, a pickle through ``read_checkpoint`` (weights-only, mmap)."""
    from math import prod
    from pathlib import Path

    from .checkpoint import is_safetensors, read_checkpoint

    if is_safetensors(Path(path)):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(path, framework="pt") as fh:
                rows = []
                for key in fh.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    piece = fh.get_slice(key)
                    shape, dtype = list(piece.get_shape()), piece.get_dtype()
                    count = prod(shape)
                    rows.append({"key": key, "shape": shape, "dtype": _SAFETENSORS_DTYPES.get(dtype, dtype.lower()),
                                 "count": count, "bytes": count * _ELEMENT_BYTES.get(dtype, 0)})
                return rows
        except (SafetensorError, OSError, ValueError):
            pass  # read_checkpoint raises the proper CheckpointFormatError
    return [{"key": k, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "count": t.numel(),
             "bytes": t.numel() * t.element_size()} for k, t in read_checkpoint(path, trusted=trusted).items()]


def _shape(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _megabytes(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def cmd_inspect(args: argparse.Namespace) -> int:
    """A checkpoint's tensors, or — with ``--model`` — the load plan, without loading anything."""
    from pathlib import Path

    from .checkpoint import is_safetensors
    from .loader import resolve_weights

    _, fetched = resolve_weights(args.checkpoint)
    path = str(fetched.path)
    described = _tensors_of(path, args.trusted)
    summary = {"checkpoint": fetched.origin, "path": path,
               "format": "safetensors" if is_safetensors(Path(path)) else "pickle", "tensors": len(described),
               "count": sum(d["count"] for d in described), "bytes": sum(d["bytes"] for d in described),
               "dtypes": sorted({d["dtype"] for d in described})}
    if args.model is None:
        if args.json:
            _print_json({**summary, "keys": described})
            return 0
        print(_wrap(f"checkpoint: {summary['checkpoint']}"))
        print(_wrap(f"{summary['format']}, {summary['tensors']} tensors, {summary['count']:,} values, "
                    f"{_megabytes(summary['bytes'])} ({', '.join(summary['dtypes'])})"))
        if not args.brief:
            print(_table([("key", "shape", "dtype", "count"),
                          *[(d["key"], _shape(d["shape"]), d["dtype"], f"{d['count']:,}") for d in described]]))
        return 0
    return _inspect_plan(args, path, summary)


def _inspect_plan(args: argparse.Namespace, path: str, summary: dict[str, Any]) -> int:
    """The plan ``zooadapt.load(MODEL, weights=CHECKPOINT)`` would follow (zooadapt.inspection)."""
    from .inspection import plan_for
    from .loader import resolve
    from .plan import Status

    entry, family = resolve(args.model)
    plan = plan_for(args.model, path, num_classes=args.num_classes, skip=args.skip, trusted=args.trusted)
    classes = args.num_classes if args.num_classes is not None else entry.num_classes
    what = f"{entry.name} ({family.name}/{entry.arch}), {classes} classes, head {plan.head or '-'}"
    data = plan.to_dict()
    loads = not (plan.missing or plan.mismatched)
    if args.json:
        rows = [{"checkpoint_key": m.checkpoint_key, "model_key": m.model_key, "status": m.status.value,
                 "rules": list(m.rules), "checkpoint_shape": list(m.checkpoint_shape),
                 "model_shape": list(m.model_shape) if m.model_shape is not None else None} for m in plan.mappings]
        _print_json({**summary, "model": what, "loads": loads, "plan": data, "keys": rows})
        return 1 if args.check and not loads else 0
    width = _width()
    print(_wrap(f"checkpoint: {summary['checkpoint']}", width))
    print(_wrap(f"{summary['format']}, {summary['tensors']} tensors, {_megabytes(summary['bytes'])}, into {what}",
                width))
    rules: dict[str, int] = {}
    for m in plan.mappings:
        for rule in m.rules:
            rules.setdefault(rule, len(rules) + 1)
    if rules:
        print(_wrap("rules: " + "  ".join(f"[{n}] {rule}" for rule, n in rules.items()), width))
    if not args.brief:
        rows = [("checkpoint key", "model key (= same)", "rule", "shape", "status")]
        for m in plan.mappings:
            model_key = "=" if m.model_key == m.checkpoint_key else (m.model_key or "-")
            rows.append((m.checkpoint_key, model_key, ",".join(str(rules[r]) for r in m.rules) or "-",
                         _shape(m.checkpoint_shape), m.status.value))
        print(_table(rows, width))
    counts = {s: len(plan.by_status(s)) for s in Status}
    print(_clip("checkpoint keys: " + ", ".join(f"{n} {s.value}" for s, n in counts.items() if n), width))
    print(f"coverage: {plan.coverage:.2%} of the model's parameters come from the checkpoint")
    for label, keys in (("new head (freshly initialised)", plan.new_head), ("missing (no checkpoint key fills)",
                        plan.missing), ("defaulted (num_batches_tracked = 0)", plan.defaulted),
                        ("skipped (left as initialised)", plan.skipped_model_keys)):
        if keys:
            print(f"{label}: {len(keys)}")
            for key in keys[: 10 if args.brief else None]:
                print("  " + _clip(key, width - 2))
            if args.brief and len(keys) > 10:
                print(f"  … and {len(keys) - 10} more")
    for m in [*plan.dropped, *plan.mismatched]:
        label = "old head dropped" if m in plan.dropped else "mismatched"
        print(_wrap(f"{label}: {m.checkpoint_key} {_shape(m.checkpoint_shape)} -> model {m.model_key} "
                    f"{_shape(m.model_shape or ())}", width))
    if loads:
        print("verdict: loads as is" + (f"; {len(plan.unexpected)} unexpected checkpoint keys are ignored"
                                        if plan.unexpected else ""))
    else:
        print(_clip(f"verdict: zooadapt.load refuses this ({len(plan.missing)} missing, {len(plan.mismatched)} "
                    "mismatched); pass partial=True to load what fits", width))
    return 1 if args.check and not loads else 0


def cmd_plugins(args: argparse.Namespace) -> int:
    """Installed plugins (distribution, version, what each provides) and those that failed, and why."""
    from .errors import PluginConflictError
    from .plugin_manager import ENTRY_POINT_GROUP, plugin_failures, plugin_infos
    from .registry import get_registry

    conflict = None
    try:
        registry = get_registry()  # runs the registration hooks, so hook failures are known too
    except PluginConflictError as exc:
        registry, conflict = None, str(exc).splitlines()[0]
    listed = _plugin_listed(registry, "*") if registry else {}
    infos, failures = plugin_infos(), plugin_failures()
    plugins = []
    for info in infos:
        families = sorted(f.name for f in registry.families.values() if f.provider == info.name) if registry else []
        models = sorted(e.name for e in registry.models.values() if e.family in families) if registry else []
        plugins.append({"name": info.name, "distribution": info.distribution, "version": info.version,
                        "builtin": info.builtin, "families": families, "models": models,
                        "listed": sum(1 for n, who in listed.items() if who == info.name and n not in models)})
    failed = [{"name": f.name, "distribution": f.distribution, "phase": f.phase, "error": f.error} for f in failures]
    if conflict:
        failed.append({"name": "?", "distribution": "?", "phase": "registration", "error": conflict})
    if args.json:
        _print_json({"plugins": plugins, "failed": failed, "entry_point_group": ENTRY_POINT_GROUP})
        return 1 if args.check and failed else 0
    width = _width()
    rows = [("plugin", "distribution", "families", "models")]
    for p in plugins:
        rows.append((p["name"], f"{p['distribution']} {p['version']}" + (" (built-in)" if p["builtin"] else ""),
                     ", ".join(p["families"]) or "-",
                     f"{len(p['models'])}" + (f" + {p['listed']} listed" if p["listed"] else "")))
    print(_table(rows, width))
    print(_wrap(f"discovery: built-ins first, then entry points of group {ENTRY_POINT_GROUP!r}; "
                "ZOOADAPT_PLUGINS allows, ZOOADAPT_DISABLE_PLUGINS blocks (comma-separated names)", width))
    if failed:
        print(f"\nfailed to load ({len(failed)}):")
        for f in failed:
            print("  " + _wrap(f"{f['name']} ({f['distribution']}), {f['phase']}: {f['error']}", width - 2))
        print(_wrap("  disable one with ZOOADAPT_DISABLE_PLUGINS=name; ZOOADAPT_STRICT_PLUGINS=1 raises with the "
                    "traceback", width))
    return 1 if args.check and failed else 0


def cmd_fetch(args: argparse.Namespace) -> int:
    """Download weights into the Hub cache now (progress bars on stderr), e.g. before going offline.

    A model listed in the lock file is fetched at its locked commit and verified, so an
    offline machine ends up with exactly the locked weights. Needs no torch for Hub files.
    """
    from .lockfile import fetch_entry
    from .registry import get_registry
    from .sources import fetch, parse_source

    rows = []
    for name in args.names:
        if "://" in name:
            fetched = fetch(parse_source(name), revision=args.revision, force=args.force, progress=not args.quiet,
                            name=name)
        else:
            fetched = fetch_entry(get_registry().entry(name), revision=args.revision, force=args.force,
                                  progress=not args.quiet, lock=False if args.no_lock else None)
        rows.append({"name": name, "source": fetched.origin, "commit": fetched.commit, "sha256": fetched.sha256,
                     "size": fetched.size, "path": str(fetched.path)})
    if args.json:
        _print_json(rows)
        return 0
    width = _width()
    for row in rows:
        print(_clip(f"{row['name']}: {row['source']}", width))
        details = [f"commit {row['commit']}" if row["commit"] else "", f"sha256 {row['sha256'] or '-'}",
                   f"{row['size'] / 1e6:.1f} MB"]
        print(_wrap("  " + ", ".join(d for d in details if d), width))
        print(_clip(f"  -> {row['path']}", width))
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    """Write the resolved commit, sha256 and size of models to a lock file, or ``--check`` one."""
    import os

    from .lockfile import LOCK_NAME, check_lock, lock_models

    path = args.file or os.environ.get("ZOOADAPT_LOCK", "").strip() or LOCK_NAME
    width = _width()
    if args.check:
        results = check_lock(path, names=args.names)
        if args.json:
            _print_json({"lock": path, "models": results})
        for name, problem in [] if args.json else results.items():
            print(_wrap(f"{name}: {'ok' if problem is None else problem}", width))
        return 0 if all(p is None for p in results.values()) else 1
    lockfile = lock_models(args.names, path, progress=not args.quiet)
    names = args.names or sorted(lockfile.models)
    if args.json:
        _print_json({"lock": str(lockfile.path), "models": {n: lockfile.models[n].to_dict() for n in names}})
        return 0
    for name in names:
        locked = lockfile.models[name]
        print(_clip(f"{name}: {locked.source}", width))
        commit = f"commit {locked.commit}, " if locked.commit else ""
        print(_wrap(f"  {commit}sha256 {locked.sha256}, {locked.size / 1e6:.1f} MB", width))
    print(f"wrote {lockfile.path}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="zooadapt", description="Pretrained backbones ready to fine-tune.",
                                     epilog="Exit status: 0 ok, 1 --check found a problem, 2 error.")
    parser.add_argument("--version", action="version", version=f"zooadapt {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="print errors in full, not one line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("list", help="list loadable models (fast: no torch)")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'resnet*'")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("info", help="stages, head, key rules, weight source, revision and preprocessing of a model")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("inspect", help="a checkpoint's tensors, or with --model how each key would load",
                       description="Show a checkpoint's tensors without loading them into a model; with --model, "
                       "which rule maps each key, the coverage, and what would be missing, unexpected or "
                       "mismatched.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a file, a URL, hf://org/repo[/file][@rev], or a "
                   "model name (its registry weights)")
    p.add_argument("--model", metavar="NAME", help="plan the load into this model (built on meta; nothing loads)")
    p.add_argument("--num-classes", type=int, metavar="N", help="classes of the head, as load(num_classes=N)")
    p.add_argument("--skip", action="append", default=[], metavar="STAGE", help="stage or module prefix to "
                   "leave alone, as load(skip=...); repeatable")
    p.add_argument("--trusted", action="store_true", help="allow a pickle that needs code execution (trusted files)")
    p.add_argument("--brief", action="store_true", help="summary only, no per-key table")
    p.add_argument("--check", action="store_true", help="exit 1 when zooadapt.load would refuse the checkpoint")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_inspect)
    p = sub.add_parser("plugins", help="installed plugins, their distributions and versions, and failures")
    p.add_argument("--check", action="store_true", help="exit 1 when a plugin failed to load")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plugins)
    p = sub.add_parser("fetch", help="download weights into the Hub cache now (e.g. before going offline)")
    p.add_argument("names", nargs="+", metavar="NAME", help="model names, or hf://org/repo/file@rev, or URLs")
    p.add_argument("--revision", help="Hub branch, tag or commit instead of the registry's")
    p.add_argument("--force", action="store_true", help="download again even when cached")
    p.add_argument("--no-lock", action="store_true", help="ignore the lock file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_fetch)
    p = sub.add_parser("lock", help="pin models' commit and sha256 in a lock file, or --check it")
    p.add_argument("names", nargs="*", metavar="NAME", help="models to (re)lock; none: refresh every locked model")
    p.add_argument("--file", help="lock file (default: $ZOOADAPT_LOCK or ./zooadapt.lock)")
    p.add_argument("--check", action="store_true", help="verify the locked models; exit 1 on a mismatch")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lock)
    return parser


def _error_line(exc: ZooadaptError, verbose: bool) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()] or [type(exc).__name__]
    if verbose or len(lines) == 1:
        return "\n".join(lines)
    return f"{lines[0]} (`zooadapt -v …` shows the details)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (``zooadapt`` and ``python -m zooadapt``)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ZooadaptError as exc:
        print(f"zooadapt: error: {_error_line(exc, args.verbose)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zooadapt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `zooadapt list | head`: the reader left early, which is fine
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

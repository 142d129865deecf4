"""``zooadapt inspect CHECKPOINT [--model NAME]``: a checkpoint's tensors, or the load plan, without loading.

Without ``--model``: every tensor's key, shape, dtype and size, read with the same reader
``load`` uses. With ``--model``: the plan ``zooadapt.load(NAME, weights=CHECKPOINT)`` would
follow (``zooadapt.plan_for``): which rule maps each key, the coverage, and what would be
missing, unexpected or mismatched. ``--rule`` adds key rules in their text spelling
(``zooadapt.rules.parse_rule``), as ``rules=[...]`` does in Python.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..contract.errors import InvalidArgumentError
from . import _common as ui

HELP = "a checkpoint's tensors, or with --model how each key would load"

STATUS_WORDS = {"loaded": "loaded", "dropped_head": "dropped old head", "skipped": "skipped", "ignored": "ignored",
                "unexpected": "unexpected", "mismatched": "mismatched"}
"""How each key's fate reads in text, in the load report's words; ``--json`` keeps the identifiers."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a file, a URL, hf://org/repo[@revision][/file], or a "
                   "model name (its registry weights)")
    p.add_argument("--model", metavar="NAME", help="plan the load into this model (built on meta; nothing loads)")
    p.add_argument("--num-classes", type=int, metavar="N", help="classes of the head, as load(num_classes=N)")
    p.add_argument("--skip", action="append", default=[], metavar="STAGE", help="stage or module prefix to "
                   "leave alone, as load(skip=...); repeatable")
    p.add_argument("--rule", action="append", default=[], metavar="RULE",
                   help="a key rule, applied before the family's: strip:PREFIX, add:PREFIX, drop:REGEX, "
                   "reshape:REGEX, cast:REGEX, rename:REGEX=>REPLACEMENT or positional; repeatable")
    p.add_argument("--trusted", action="store_true", help="allow a pickle that needs code execution (trusted files)")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--keys", action="store_true", help="with --model: also every checkpoint key, its model "
                       "key, rule and fate (and every missing or unexpected key, not the first 10)")
    shown.add_argument("--brief", action="store_true", help="summary only (the default; kept for scripts)")
    p.add_argument("--check", action="store_true", help="exit 1 when zooadapt.load would refuse the checkpoint")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def tensors_of(path: str, trusted: bool) -> list[dict[str, Any]]:
    """Key, shape, dtype, count and bytes of every tensor, read by ``zooadapt.plugin_api.read_checkpoint``
    (safetensors memory-mapped or read, pickles weights-only)."""
    from ..weights.checkpoint import read_checkpoint

    return [{"key": k, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."), "count": t.numel(),
             "bytes": t.numel() * t.element_size()} for k, t in read_checkpoint(path, trusted=trusted).items()]


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..contract.rules import parse_rule
    from ..loading.loader import resolve_weights
    from ..weights.checkpoint import is_safetensors

    rules = [parse_rule(text) for text in args.rule]
    if (rules or args.skip or args.num_classes is not None) and args.model is None:
        raise InvalidArgumentError("--rule, --skip and --num-classes describe a load plan; add --model NAME")
    _, fetched = resolve_weights(args.checkpoint)
    path = str(fetched.path)
    described = tensors_of(path, args.trusted)
    summary = {"checkpoint": fetched.origin, "path": path,
               "format": "safetensors" if is_safetensors(Path(path)) else "pickle", "tensors": len(described),
               "count": sum(d["count"] for d in described), "bytes": sum(d["bytes"] for d in described),
               "dtypes": sorted({d["dtype"] for d in described})}
    if args.model is not None:
        return _plan(args, path, summary, rules)
    if args.json:
        ui.print_json({**summary, "keys": described})
        return 0
    print(ui.wrap(f"checkpoint: {summary['checkpoint']}"))
    print(ui.wrap(f"{summary['format']}, {summary['tensors']} tensors, {summary['count']:,} values, "
                  f"{ui.megabytes(summary['bytes'])} ({', '.join(summary['dtypes'])})"))
    if not args.brief:
        print(ui.table([("key", "shape", "dtype", "count"),
                        *[(d["key"], ui.shape_text(d["shape"]), d["dtype"], f"{d['count']:,}") for d in described]],
                       ui.table_width()))
    return 0


def _stage_map(entry: Any, family: Any) -> Any:
    """The model's stages, from the family, or from the architecture built on ``meta`` (timm)."""
    from ..contract.stages import StageMap

    if isinstance(family.stages, StageMap):
        return family.stages
    from ..loading.meta_build import build_on_meta

    return family.stage_map(build_on_meta(family, entry.arch, entry.num_classes, **dict(entry.build_kwargs)))


def _stage_table(counts: list[Any], head: str, limit: int | None) -> str:
    """stage | loaded | missing | mismatched | [skipped] | [defaulted] | [new head]: optional
    columns only when some stage has one."""
    from ..contract.stages import HEAD

    columns = [("loaded", "loaded"), ("missing", "missing"), ("mismatched", "mismatched")]
    columns += [(c, label) for c, label in (("skipped", "skipped"), ("defaulted", "defaulted"),
                                            ("new_head", "new head")) if any(getattr(r, c) for r in counts)]
    rows = [("stage", *(label for _, label in columns))]
    for r in counts:
        name = f"head ({head})" if r.stage == HEAD and head else r.stage
        rows.append((name, *(str(getattr(r, c)) for c, _ in columns)))
    return ui.table(rows, limit, keep=(0,))


def _plan(args: argparse.Namespace, path: str, summary: dict[str, Any], rules: list[Any]) -> int:
    """The plan ``zooadapt.load(MODEL, weights=CHECKPOINT)`` would follow (zooadapt.loading.inspection):
    per stage first, then the verdict, then what does not simply load; each key with ``--keys``."""
    from ..loading.inspection import plan_for
    from ..loading.pipeline import resolve
    from ..loading.plan import Status
    from ..loading.report import layouts_used, notes_in_words, plain_rule, renamed_in_words, stage_counts

    entry, family = resolve(args.model)
    plan = plan_for(args.model, path, num_classes=args.num_classes, skip=args.skip, trusted=args.trusted,
                    rules=rules or None)
    classes = args.num_classes if args.num_classes is not None else plan.kept_head or entry.num_classes
    what = f"{entry.name} ({family.name}/{entry.arch}), " + (
        "no head as published (pooled features)" if plan.headless else f"{classes} classes, head {plan.head or '-'}")
    counts = stage_counts(plan, _stage_map(entry, family))
    loads = plan.fits
    if args.json:
        rows = [{"checkpoint_key": m.checkpoint_key, "model_key": m.model_key, "status": m.status.value,
                 "rules": list(m.rules), "checkpoint_shape": list(m.checkpoint_shape),
                 "model_shape": list(m.model_shape) if m.model_shape is not None else None} for m in plan.mappings]
        ui.print_json({**summary, "model": what, "user_rules": [str(r) for r in rules], "loads": loads,
                       "stages": [c.to_dict() for c in counts], "layouts": [lay.name for lay in layouts_used(plan)],
                       "plan": plan.to_dict(), "keys": rows})
        return 1 if args.check and not loads else 0
    width, limit = ui.width(), ui.table_width()
    print(ui.wrap(f"checkpoint: {summary['checkpoint']}", width))
    print(ui.wrap(f"{summary['format']}, {summary['tensors']} tensors, {ui.megabytes(summary['bytes'])}, into {what}",
                  width))
    print(_stage_table(counts, plan.head, limit))
    print(f"coverage: {plan.coverage:.2%} of the model's parameters come from the checkpoint")
    _verdict(plan, entry.name, loads, width)
    for line in [*notes_in_words(plan), *renamed_in_words(plan)]:
        print(ui.wrap(line, width))
    counts_by_status = {s: len(plan.by_status(s)) for s in Status}
    print(ui.wrap("checkpoint keys: " + ", ".join(f"{n} {STATUS_WORDS.get(s.value, s.value)}"
                                                   for s, n in counts_by_status.items() if n), width))
    shown = None if args.keys else 10
    for label, keys in (("new head (freshly initialised)", plan.new_head), ("missing (no checkpoint key fills)",
                        plan.missing), ("defaulted (num_batches_tracked = 0)", plan.defaulted),
                        ("skipped (left as initialised)", plan.skipped_model_keys),
                        ("unexpected (no place in the model)", [m.checkpoint_key for m in plan.unexpected])):
        if keys:
            print(f"{label}: {len(keys)}")
            for key in keys[:shown]:
                print("  " + ui.clip(key, None if limit is None else limit - 2))
            if shown is not None and len(keys) > shown:
                print(f"  … and {len(keys) - shown} more (--keys lists them)")
    for m in [*plan.dropped, *plan.mismatched][:shown]:
        label = "dropped old head" if m in plan.dropped else "mismatched"
        print(ui.wrap(f"{label}: {m.checkpoint_key} {ui.shape_text(m.checkpoint_shape)} -> model {m.model_key} "
                      f"{ui.shape_text(m.model_shape or ())}", width))
    if args.keys:
        _key_table(plan, limit, width, plain_rule)
    else:
        print(f"each of the {len(plan.mappings)} checkpoint keys, with the rule that maps it: --keys")
    return 1 if args.check and not loads else 0


def _verdict(plan: Any, name: str, loads: bool, width: int) -> None:
    if loads:
        print("verdict: loads as is" + (f"; {len(plan.unexpected)} unexpected checkpoint keys stay unused"
                                        if plan.unexpected else ""))
        return
    from ..contract.errors import IncompatibleCheckpointError

    print(ui.wrap(f"verdict: zooadapt.load refuses this ({len(plan.missing)} missing, {len(plan.mismatched)} "
                  f"mismatched" + (f", {len(plan.duplicates)} filled twice" if plan.duplicates else "") + ")",
                  width))
    try:  # the same diagnosis and advice load's error gives
        plan.check(partial=False, what=name, inspecting=True)
    except IncompatibleCheckpointError as exc:
        for line in str(exc).splitlines():
            if line.startswith(("Likely cause:", "To fix:")):
                print(ui.wrap(line, width))


def _key_table(plan: Any, limit: int | None, width: int, plain_rule: Any) -> None:
    """Every checkpoint key: its model key, the rules that mapped it (numbered, in words), shape, fate."""
    numbered: dict[str, int] = {}
    for m in plan.mappings:
        for rule in m.rules:
            numbered.setdefault(rule, len(numbered) + 1)
    if numbered:
        print("rules:")
        for rule, n in numbered.items():
            print(ui.wrap(f"  [{n}] {plain_rule(rule)}", width))
    rows = [("checkpoint key", "model key (= same)", "rule", "shape", "status")]
    for m in plan.mappings:
        model_key = "=" if m.model_key == m.checkpoint_key else (m.model_key or "-")
        rows.append((m.checkpoint_key, model_key, ",".join(str(numbered[r]) for r in m.rules) or "-",
                     ui.shape_text(m.checkpoint_shape), STATUS_WORDS.get(m.status.value, m.status.value)))
    print(ui.table(rows, limit))

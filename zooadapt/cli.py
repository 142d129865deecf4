"""The ``zooadapt`` command line: ``list``, ``info`` (more subcommands register here).

User errors print one line to stderr and exit 2, without a traceback. Listing never
imports torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .errors import ZooadaptError

__all__ = ["main"]


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def cmd_list(args: argparse.Namespace) -> int:
    from .registry import get_registry

    registry = get_registry()
    names = registry.names(args.pattern)
    rows = []
    for name in names:
        entry = registry.models.get(name)
        rows.append((name, entry.family if entry else "timm", entry.source.describe() if entry and entry.source
                     else ("(plugin-resolved)" if not entry else "-")))
    if args.json:
        print(json.dumps([{"name": n, "family": f, "source": s} for n, f, s in rows], indent=2))
    elif rows:
        print(_table([("name", "family", "weights"), *rows]))
    else:
        print(f"no models match {args.pattern!r}", file=sys.stderr)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .loader import build_on_meta, resolve

    entry, family = resolve(args.name)
    model = build_on_meta(family, entry.arch, entry.num_classes, **dict(entry.build_kwargs))
    smap = family.stage_map(model)
    counts = {name: 0 for name in (*smap.names, "head", "other")}
    for pname, param in model.named_parameters():
        counts[smap.stage_of(pname) or "other"] += param.numel()
    info = {
        "name": entry.name,
        "family": family.name,
        "arch": entry.arch,
        "weights": entry.source.describe() if entry.source else None,
        "sha256": entry.source.sha256 if entry.source else None,
        "num_classes": entry.num_classes,
        "head": smap.head,
        "stages": [{"name": s.name, "modules": list(s.prefixes), "params": counts[s.name]} for s in smap.stages],
        "head_params": counts["head"],
        "groups": {g: list(m) for g, m in smap.groups.items()},
        "key_rules": [str(r) for r in family.key_rules],
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{entry.name}: {family.name}/{entry.arch}  {entry.description}".rstrip())
    print(f"weights: {info['weights'] or 'none published (pass weights=PATH)'}")
    print("stages (input to output):")
    stage_rows = [(s["name"], f"{s['params']:,}", ", ".join(s["modules"])) for s in info["stages"]]
    stage_rows.append((f"head ({smap.head})", f"{counts['head']:,}", f"{entry.num_classes} classes"))
    print(_table([("  stage", "params", "modules"), *[("  " + a, b, c) for a, b, c in stage_rows]]))
    if smap.groups:
        print("groups: " + "; ".join(f"{g} = {'+'.join(m)}" for g, m in smap.groups.items()))
    print("key rules: strip 'module.', strip '_orig_mod.'" + "".join(f", {r}" for r in family.key_rules))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zooadapt", description="Pretrained backbones ready to fine-tune.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list loadable models")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'resnet*'")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("info", help="stages, head, key rules and weight source of a model")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ZooadaptError as exc:
        print(f"zooadapt: error: {exc}".splitlines()[0] if not args.__dict__.get("verbose") else str(exc),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

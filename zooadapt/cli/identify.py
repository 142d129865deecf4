"""``zooadapt identify CHECKPOINT``: which architecture a checkpoint is, and the name to load it by.

The file's tensors are matched against every architecture zooadapt loads (built-in families,
plugins, every timm architecture), as ``zooadapt.identify`` does: each answer gives the name,
its family, the share of the file's tensors it takes and whether it fits completely. Exit
status 0 when some architecture fits the file completely, 1 with ``--check`` when none does.
"""

from __future__ import annotations

import argparse

from ..contract.errors import InvalidArgumentError
from . import _common as ui

HELP = "which architecture a checkpoint fits (every built-in, plugin and timm model), best first"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a file, a URL or hf://org/repo[@revision][/file]")
    p.add_argument("--limit", type=int, default=5, metavar="N", help="at most N answers (default 5)")
    p.add_argument("--rule", action="append", default=[], metavar="RULE",
                   help="a key rule the file needs, as in `zooadapt inspect` (strip:PREFIX, ...); repeatable")
    p.add_argument("--trusted", action="store_true", help="allow a pickle that needs code execution (trusted files)")
    p.add_argument("--check", action="store_true", help="exit 1 when no architecture fits the file completely")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from ..loading.identification import identify

    if args.limit < 1:
        raise InvalidArgumentError(f"--limit {args.limit}: give how many answers you want, 1 or more")
    found = identify(args.checkpoint, limit=args.limit, rules=args.rule or None, trusted=args.trusted)
    best = found.best if found.best is not None and found.best.complete else None
    complete = best is not None
    if args.json:
        ui.print_json(found.to_dict())
        return 1 if args.check and not complete else 0
    print(ui.wrap(f"checkpoint: {found.source} ({found.tensors} tensors)"))
    if not found.matches:
        print(ui.wrap("no architecture zooadapt knows takes half of its tensors; for a model of your own, build "
                      "it and use zooadapt.load_weights(model, FILE)"))
        return 1 if args.check else 0
    rows = [("name", "family", "tensors", "fits", "same tensors")]
    for m in found.matches:
        fits = "completely" if m.complete else "yes" if m.fits else f"{m.coverage:.0%} of backbone"
        rows.append((m.name, m.family, f"{m.share:.0%}", fits + (" (by order)" if m.by_order else ""),
                     ", ".join(m.same_signature) or "-"))
    print(ui.table(rows, ui.table_width(), keep=(0,), prose=(4,)))
    if best is not None:
        print(ui.wrap(f"load it as {best.name!r}: zooadapt.load({best.name!r}, weights=...), or "
                      "zooadapt.load(weights=...) alone"))
    else:
        print(ui.wrap("no architecture fits it completely; name one to load what fits: "
                      f"zooadapt.load({found.matches[0].name!r}, weights=..., partial=True)"))
    return 1 if args.check and not complete else 0

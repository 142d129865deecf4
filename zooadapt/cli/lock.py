"""``zooadapt lock [NAME…]``: pin models' commit, sha256 and size in a lock file, or ``--check`` it.

Exit status 1 when ``--check`` finds a model whose weights differ from what the file pins.
"""

from __future__ import annotations

import argparse
import sys

from . import _common as ui

HELP = "pin models' commit and sha256 in a lock file, or --check it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="models to (re)lock; none: refresh every locked model")
    p.add_argument("--file", help="lock file (default: $ZOOADAPT_LOCK or ./zooadapt.lock)")
    p.add_argument("--check", action="store_true", help="verify the locked models; exit 1 on a mismatch")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    import os

    from ..weights.lockfile import LOCK_NAME, check_lock, lock_models

    path = args.file or os.environ.get("ZOOADAPT_LOCK", "").strip() or LOCK_NAME
    width, limit = ui.width(), ui.table_width()
    if args.check:
        results = check_lock(path, names=args.names)
        if args.json:
            ui.print_json({"lock": path, "models": results})
        else:
            for name, problem in results.items():
                print(ui.wrap(f"{name}: {'ok' if problem is None else problem}", width))
        return 0 if all(p is None for p in results.values()) else 1
    lockfile = lock_models(args.names, path, progress=not args.quiet)
    names = args.names or sorted(lockfile.models)
    if args.json:
        ui.print_json({"lock": str(lockfile.path), "models": {n: lockfile.models[n].to_dict() for n in names}})
        return 0
    for name in names:
        locked = lockfile.models[name]
        print(ui.clip(f"{name}: {locked.source}", limit))
        commit = f"commit {locked.commit}, " if locked.commit else ""
        print(ui.wrap(f"  {commit}sha256 {locked.sha256}, {locked.size / 1e6:.1f} MB", width))
    print(f"wrote {lockfile.path}", file=sys.stderr)
    return 0

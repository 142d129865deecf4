"""``zooadapt fetch NAME…``: download weights into the Hub cache now, e.g. before going offline.

A model listed in the lock file is fetched at its locked commit and verified, so an offline
machine ends up with exactly the locked weights. Hub files need no torch. Each file's address
and cache path are printed whole, on lines of their own, in a terminal too.
"""

from __future__ import annotations

import argparse

from . import _common as ui

HELP = "download weights into the Hub cache now (e.g. before going offline)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="+", metavar="NAME",
                   help="model names, hf://org/repo[@revision][/file] addresses, or URLs")
    p.add_argument("--revision", help="Hub branch, tag or commit instead of the registry's")
    p.add_argument("--force", action="store_true", help="download again even when cached")
    p.add_argument("--no-lock", action="store_true", help="ignore the lock file")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from ..host.registry import get_registry
    from ..weights.lockfile import fetch_entry
    from ..weights.sources import fetch, parse_source

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
        ui.print_json(rows)
        return 0
    for row in rows:  # addresses, hashes and paths are printed whole: a cut path is one nobody can open
        print(f"{row['name']}: {row['source']}")
        details = [f"commit {row['commit']}" if row["commit"] else "", f"sha256 {row['sha256'] or '-'}",
                   f"{row['size'] / 1e6:.1f} MB"]
        print(ui.wrap("  " + ", ".join(d for d in details if d)))
        print(f"  -> {row['path']}")
    return 0

"""The ``zooadapt`` command line: one module per command, as tox and pip lay theirs out.

``list``, ``info``, ``inspect``, ``identify``, ``fetch``, ``lock``, ``plugins``, ``env``: each
module has ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int`` and calls the library
for the work; ``_common`` holds what they share (tables, JSON, error lines). Every command takes
``--json``. Exit status: 0 on success; 2 with a one-line ``zooadapt: error: …`` on stderr
and no traceback when zooadapt refuses (any ``ZooadaptError``) or the command line is wrong;
1 when ``--check`` finds a problem; 130 on Ctrl-C. ``list``, ``plugins`` and ``env`` never
import torch or timm; ``info`` imports them once per model and version, then answers from the
description it stored (``zooadapt.host.descriptions``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from ..contract.errors import ZooadaptError
from ._common import error_line

__all__ = ["main", "build_parser", "COMMANDS"]

COMMANDS = ("list", "info", "inspect", "identify", "fetch", "lock", "plugins", "env")
"""Command names, in the order ``--help`` shows them; each is the module ``zooadapt.cli.<name>``."""


def command(name: str) -> ModuleType:
    """The module of one command (imported here, not at package import: ``list`` stays cheap)."""
    return importlib.import_module(f"{__name__}.{name}")


class _Parser(argparse.ArgumentParser):
    """argparse's parser with the error line the README promises: ``zooadapt: error: …`` alone on
    stderr and exit status 2, for the root and every command (``add_subparsers`` makes its parsers
    of this class), where argparse prints its usage block first and names the command
    (``zooadapt info: error: …``). The hint names the ``--help`` that shows the usage."""

    def error(self, message: str) -> NoReturn:
        from ..contract.escape import printable

        self.exit(2, f"zooadapt: error: {printable(' '.join(message.split()))} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(prog="zooadapt", description="Pretrained backbones ready to fine-tune.",
                     epilog="Exit status: 0 ok, 1 --check found a problem, 2 error.")
    parser.add_argument("--version", action="version", version=f"zooadapt {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="print errors in full, not one line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = command(name)
        doc = (module.__doc__ or "").strip().split("\n\n")
        about = " ".join(doc[1].split()).replace("``", "`") if len(doc) > 1 else None  # the docstring, as prose
        p = sub.add_parser(name, help=module.HELP, description=about)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def _note(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: object = None,
          line: str | None = None) -> None:
    """A warning as one line on stderr (``zooadapt: note: …``), not Python's two-line format."""
    word = "note" if issubclass(category, (FutureWarning, DeprecationWarning)) else "warning"
    print(f"zooadapt: {word}: {message}", file=sys.stderr)


def _leave_to_the_os() -> None:
    """Before the ``zooadapt`` process ends: move every object into the collector's permanent
    generation, so the interpreter's last collections do not walk them. A command that imported
    torch (and timm) leaves ~400,000 objects, and those collections took ~0.9 s of a ~1.1 s exit
    here; the memory goes back to the OS either way. Only for the process's own command line
    (``argv`` None): a caller of ``main([...])`` (tests, scripts) keeps its collector as it was."""
    import gc

    if "torch" in sys.modules:
        gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (``zooadapt`` and ``python -m zooadapt``)."""
    try:
        return _main(argv)
    finally:
        if argv is None:
            _leave_to_the_os()


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)  # parse_args, but the hint names the command's --help
    if extra:
        commands = next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
    with warnings.catch_warnings():  # restored on return: only this command's warnings are reshaped
        warnings.showwarning = _note
        try:
            return int(args.run(args) or 0)
        except ZooadaptError as exc:
            print(f"zooadapt: error: {error_line(exc, args.verbose)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("zooadapt: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:  # `zooadapt list | head`: the reader left early, which is fine
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0

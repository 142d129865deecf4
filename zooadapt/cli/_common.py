"""What every command shares: fitting tables to the terminal, JSON, one-line errors, a slow-step notice.

Output rules: only a real terminal (``sys.stdout.isatty()``) gets output fitted to it. There,
tables fit its width (``COLUMNS`` wins) and over-long cells are shortened in the middle, except
the columns that identify a row (model names), which are never cut, and prose is wrapped at
spaces, never inside a word (a path, an address or a hash stays whole and may run past the
edge). Piped (``zooadapt list | grep NAME``), nothing is cut or wrapped, whatever ``COLUMNS``
says: a pipe has no width, a shortened name is a name ``grep`` cannot find, and a value split
over two lines is two half-values.

Every text a command prints may hold names it did not choose (a checkpoint's keys, a file name):
``clip``, ``wrap``, ``table`` and ``error_line`` write their control characters as escapes
(``zooadapt.contract.escape``), so no key can drive the terminal and no path can cut a line.
"""
from __future__ import annotations

import json
import shutil
import sys
import textwrap
import threading
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from ..contract.errors import ZooadaptError
from ..contract.escape import printable, printable_lines

__all__ = ["width", "table_width", "clip", "wrap", "fits", "table", "print_json", "error_line", "SlowNotice",
           "shape_text", "megabytes"]

PIPE_WIDTH = 100
"""Width ``width()`` falls back to where the terminal's is unknown."""


def _is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


def width() -> int:
    """The terminal's columns: ``COLUMNS``, else what the terminal says, else 100."""
    return max(40, shutil.get_terminal_size((PIPE_WIDTH, 24)).columns)


def table_width() -> int | None:
    """Columns a table must fit in a terminal, or None when stdout is not one (nothing is cut)."""
    return width() if _is_terminal() else None


def clip(text: str, limit: int | None) -> str:
    """``text`` shortened to ``limit`` with an ellipsis in the middle, where keys and paths carry
    least (``layer4.2.…bn3.weight``); unchanged when it fits or ``limit`` is None. Control
    characters are escaped first (``printable``), so the length counted is the length printed."""
    text = printable(text)
    if limit is None or len(text) <= limit:
        return text
    if limit < 2:
        return text[:limit]
    head = limit // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head):]


def wrap(text: str, limit: int | None = None) -> str:
    """Prose wrapped at spaces to ``limit`` (default the terminal's width), continuation lines
    indented; never inside a word, and not at all when stdout is not a terminal. Control
    characters (a newline in a path included) are escaped: one call prints one paragraph."""
    text = printable(text)
    if not _is_terminal():
        return text
    return textwrap.fill(text, limit or width(), subsequent_indent="    ", break_on_hyphens=False,
                         break_long_words=False)


def fits(rows: Sequence[Sequence[str]], limit: int | None, indent: str = "") -> bool:
    """Whether ``table(rows)`` fits ``limit`` without clipping anything."""
    return limit is None or sum(max(len(r[i]) for r in rows) + 2 for i in range(len(rows[0]))) - 2 + len(indent) \
        <= limit


def table(rows: Sequence[Sequence[str]], limit: int | None = None, indent: str = "",
          keep: Iterable[int] = (), prose: Iterable[int] = ()) -> str:
    """Aligned columns (the first row is the header). With a ``limit``, the widest column gives
    way first, its cells clipped in the middle (``prose`` columns at the end); the columns in
    ``keep`` never give way, so a row whose kept cells alone are wider than the limit runs past
    it rather than lose its name."""
    kept, ends = set(keep), set(prose)
    rows = [[printable(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    if limit is not None:
        room = limit - len(indent)
        floors = [widths[i] if i in kept else max(6, min(len(rows[0][i]), 12)) for i in range(len(widths))]
        while sum(widths) + 2 * (len(widths) - 1) > room:
            i = max(range(len(widths)), key=lambda j: widths[j] - floors[j])
            if widths[i] <= floors[i]:
                break
            widths[i] -= 1
    def cell(i: int, text: str, w: int) -> str:
        if i in kept or len(text) <= w:
            return text
        return text[:w - 1] + "…" if i in ends else clip(text, w)

    return "\n".join(indent + "  ".join(cell(i, c, w).ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                     for r in rows)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def megabytes(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def error_line(exc: ZooadaptError, verbose: bool) -> str:
    """The message of a refusal: its first line (and how to see the rest), or all of it; any
    control character a quoted key or path brought along is escaped (the message's own line
    breaks stay)."""
    lines = [printable_lines(line) for line in str(exc).strip().split("\n") if line.strip()] or [
        type(exc).__name__]
    if verbose or len(lines) == 1:
        return "\n".join(lines)
    return f"{lines[0]} (`zooadapt -v …` shows the details)"


class SlowNotice:
    """Says on stderr what is taking long, once a step has run for ``after`` seconds.

    A quick step prints nothing; a slow one (the first ``zooadapt list`` builds the cache of
    timm's names in a child process: 5-20 s) says what it is doing, and in a terminal counts
    the seconds, so a user knows it is working and that later runs are fast.
    """

    after = 1.0

    def __init__(self, message: str, after: float | None = None) -> None:
        self.message = message
        self.delay = self.after if after is None else after
        self.shown = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zooadapt-slow-notice", daemon=True)
        self._started = 0.0
        self._tty = sys.stderr.isatty() if hasattr(sys.stderr, "isatty") else False

    def _run(self) -> None:
        if self._done.wait(self.delay):
            return
        print(f"zooadapt: {self.message} …", end="" if self._tty else "\n", file=sys.stderr, flush=True)
        self.shown.set()
        while self._tty and not self._done.wait(1.0):
            print(f"\rzooadapt: {self.message} … {time.monotonic() - self._started:.0f} s", end="",
                  file=sys.stderr, flush=True)

    def __enter__(self) -> SlowNotice:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._done.set()
        self._thread.join()
        if self.shown.is_set() and self._tty:
            print(f"\rzooadapt: {self.message}: done in {time.monotonic() - self._started:.0f} s", file=sys.stderr)

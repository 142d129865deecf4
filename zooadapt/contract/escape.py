"""Text from a file or an endpoint, made safe to print: control characters written as escapes.

A checkpoint's key names, a file name and a Hub's answer are chosen by whoever made them. Printed
raw, an ``ESC`` sequence in a key retitles the terminal or clears the screen, a newline in a path
cuts an error line in two (the second half reads as a line of its own), and a right-to-left
override reorders what follows. ``printable`` writes each such character the way ``repr`` does
(``\\x1b``, ``\\n``, ``\\u202e``) and leaves every other character, and text without any, as it is.
Every message and CLI line that quotes a key or a path passes it through here.
"""

from __future__ import annotations

import re

__all__ = ["printable", "printable_lines"]

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""C0 controls (newline and tab included), DEL, C1 controls (``\\x9b`` is a one-byte CSI), line and
paragraph separators, and the bidirectional marks and overrides."""

_UNSAFE_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    return repr(m[0])[1:-1] if m[0] not in "\u2028\u2029" else f"\\u{ord(m[0]):04x}"


def printable(text: object) -> str:
    """``str(text)`` with every control character written as its escape (``a\\x1b[2Jb``), on one line."""
    text = text if isinstance(text, str) else str(text)
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


def printable_lines(text: object) -> str:
    """``printable`` for a message of several lines: its newlines stay, everything else is escaped."""
    text = text if isinstance(text, str) else str(text)
    return _UNSAFE_BUT_NEWLINE.sub(_escape, text) if _UNSAFE_BUT_NEWLINE.search(text) else text

"""Key rules in words: a rule's description with its patterns written as the keys they match.

Plans record each rule by ``KeyRule.describe()``, which quotes its regex exactly (what ``inspect
--json`` and a bug report need). People read ``layerN.layers.M.layer.0.convolution.* ->
layerN.M.conv1.*`` more easily than the regex behind it: ``plain_rule`` writes that, for the
patterns it can say safely, and leaves any other as written. Used by the load report, ``zooadapt
info``/``inspect`` and ``LoadPlan.summary()``. Nothing here imports torch.
"""

from __future__ import annotations

import re

__all__ = ["plain_rule"]


class _Unreadable(Exception):
    """A pattern with more than literal text, numbers, optional prefixes and alternatives."""


class _PatternWords:
    """A key pattern written as the keys it matches: ``\\d+`` as N, M, K…, ``.+`` as ``*``, an
    optional prefix as the prefix, alternatives as ``{a,b}``; anything else is unreadable."""

    def __init__(self, pattern: str) -> None:
        self.p, self.i, self.count = pattern, 0, 0
        self.groups: dict[str, str] = {}
        self.letters = iter("NMKJL")

    def run(self) -> tuple[str, dict[str, str]]:
        alternatives = self._sequence()
        if self.i != len(self.p) or len(alternatives) != 1:
            raise _Unreadable(self.p)
        return alternatives[0], self.groups

    def _sequence(self) -> list[str]:
        alternatives = [""]
        while self.i < len(self.p) and self.p[self.i] != ")":
            c = self.p[self.i]
            if c == "|":
                alternatives.append("")
                self.i += 1
                continue
            if c == "\\":
                text = self._escape()
            elif c == "(":
                text = self._group()
            elif c == "." and self.p[self.i + 1:self.i + 2] in ("+", "*"):
                self.i += 2 + (self.p[self.i + 2:self.i + 3] == "?")
                text = "*"
            elif c in "[]{}*+?^$":
                raise _Unreadable(self.p)
            else:  # a literal, or a bare ``.`` (any character; in a key, the dot it was meant as)
                text = c
                self.i += 1
            alternatives[-1] += text
        return alternatives

    def _escape(self) -> str:
        char = self.p[self.i + 1:self.i + 2]
        self.i += 2
        if char == "d":
            self.i += self.p[self.i:self.i + 1] == "+"
            return next(self.letters, "#")
        if char and not char.isalnum():
            return char
        raise _Unreadable(self.p)

    def _group(self) -> str:
        name = None
        if self.p.startswith("(?:", self.i):
            self.i += 3
            number = None
        elif self.p.startswith("(?P<", self.i):
            end = self.p.index(">", self.i)
            name, self.i = self.p[self.i + 4:end], end + 1
            self.count += 1
            number = self.count
        elif self.p.startswith("(?", self.i):
            raise _Unreadable(self.p)
        else:
            self.i += 1
            self.count += 1
            number = self.count
        alternatives = self._sequence()
        if self.p[self.i:self.i + 1] != ")":
            raise _Unreadable(self.p)
        self.i += 1
        text = alternatives[0] if len(alternatives) == 1 else "{" + ",".join(alternatives) + "}"
        after = self.p[self.i:self.i + 1]
        if after == "?":  # an optional prefix (``(?:resnet\.)?``): told as the keys that have it
            self.i += 1
        elif after and after in "*+{":
            raise _Unreadable(self.p)
        if number is not None:
            self.groups[str(number)] = text
            if name:
                self.groups[name] = text
        return text


def _replacement(template: str, groups: dict[str, str]) -> str:
    def group(m: re.Match[str]) -> str:
        try:
            return groups[m[1] or m[2]]
        except KeyError:
            raise _Unreadable(template) from None

    out = re.sub(r"\\(?:g<(\w+)>|(\d+))", group, template)
    if "\\" in out:
        raise _Unreadable(template)
    return out


def _rename(m: re.Match[str]) -> str:
    text, groups = _PatternWords(m["pattern"]).run()
    choices = m["to"][1:-1].split("' or '")
    return f"{text} -> " + " or ".join(_replacement(c, groups) for c in choices)


def _renumber(m: re.Match[str]) -> str:
    text, groups = _PatternWords(m["pattern"]).run()
    target, start = m["to"], int(m["start"])
    if target.count("N") != 1:
        raise _Unreadable(target)
    if len(groups) == 1:  # one index: the checkpoint's stage N becomes N + start
        index = groups["1"]
        return f"{text} -> {target.replace('N', f'{index}+{start}' if start else index)}"
    return f"{text} -> {target.replace('N', '#')} (numbered in order from {start})"


def _fuse(m: re.Match[str]) -> str:
    text, groups = _PatternWords(m["pattern"]).run()
    return f"{text} -> {_replacement(m['to'], groups)} (concatenated)"


def _drop(m: re.Match[str]) -> str:
    return "drop " + _PatternWords(m["pattern"]).run()[0]


def _reshape(m: re.Match[str]) -> str:
    return "reshape " + _PatternWords(m["pattern"]).run()[0] + " (same values, another shape)"


_RULE_FORMS = (
    (re.compile(r"rename '(?P<pattern>.*?)' -> (?P<to>'.*')"), _rename),
    (re.compile(r"renumber '(?P<pattern>.*)' -> '(?P<to>.*)' in order from (?P<start>\d+)"), _renumber),
    (re.compile(r"fuse '(?P<pattern>.*)' \([^)]*\) -> '(?P<to>.*)'"), _fuse),
    (re.compile(r"drop '(?P<pattern>.*)'"), _drop),
    (re.compile(r"reshape '(?P<pattern>.*)'"), _reshape),
)


def plain_rule(text: str) -> str:
    """A rule's description (``KeyRule.describe()``, as plans record it) with its patterns written
    as the keys they match: ``rename '(layer\\d+)\\.layers\\.(\\d+)\\.layer\\.0\\.convolution\\.(.+)' ->
    '\\1.\\2.conv1.\\3'`` reads ``layerN.layers.M.layer.0.convolution.* -> layerN.M.conv1.*``. A
    pattern that is more than literal text, numbers, optional prefixes and alternatives is
    left as written: a wrong paraphrase would be worse than a regex."""
    for form, words in _RULE_FORMS:
        m = form.fullmatch(text)
        if m is not None:
            try:
                return words(m)
            except _Unreadable:
                return text
    return text

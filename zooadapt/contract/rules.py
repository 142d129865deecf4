"""Checkpoint key rules: small, printable data objects a family declares.

A rule either renames a checkpoint key (``StripPrefix``, ``Rename``, ``Renumber``), drops it
(``Drop``), converts a tensor whose layout differs but whose values are the same (``Reshape``),
or asks the planner to pair leftover keys by order with every shape checked (``Positional``).
Because rules are data, ``zooadapt inspect`` can show which rule mapped which key before
anything loads. Nothing here imports torch (nor any family's library): the two rules that change
values for build options (``AdaptInputConv``, ``ResamplePosEmbed``) compute with torch only when
they convert a tensor (``tensor_ops``).

Rules see one key at a time. The two that need context get it once per plan through
``bind(checkpoint_keys, model_keys)``: ``Renumber`` counts the checkpoint's blocks, and a
``Rename`` with alternatives picks the replacement the model actually has.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from math import prod
from typing import Any, ClassVar, cast

from .caches import remembered

__all__ = ["KeyRule", "StripPrefix", "AddPrefix", "Rename", "Renumber", "Drop", "Reshape", "CastIntegers", "Positional",
           "Fuse",
           "AdaptInputConv", "ResamplePosEmbed",
           "DEFAULT_RULES", "parse_rule", "renamed_as_planned", "fused_parts"]


class KeyRule:
    """Base class of key rules. Subclasses override the hooks that apply to them."""

    def __post_init__(self) -> None:
        """A rule is checked when it is made, where the mistake is: an empty prefix (which would
        strip nothing forever), a pattern that is no regular expression, a replacement naming a
        group its pattern lacks. A family's rule that fails here fails its plugin's registration,
        named, instead of a load deep inside the planner."""
        from .errors import InvalidArgumentError

        kind = type(self).__name__
        prefix = getattr(self, "prefix", None)
        if prefix is not None and (not isinstance(prefix, str) or not prefix):
            raise InvalidArgumentError(f"{kind}({prefix!r}): give the prefix to {kind[:-6].lower()}, e.g. 'module.'")
        pattern = getattr(self, "pattern", None)
        if pattern is None:
            return
        if not isinstance(pattern, str):
            raise InvalidArgumentError(f"{kind}({pattern!r}): the pattern must be a regular expression, as text")
        try:
            re.compile(pattern)  # the error as the pattern was written (the anchored one wraps it)
            compiled = _anchored(pattern)
        except re.error as exc:
            raise InvalidArgumentError(f"{kind}({pattern!r}): not a regular expression ({exc})") from None
        templates = getattr(self, "replacement", ())
        for template in (templates,) if isinstance(templates, str) else templates:
            try:
                compiled.sub(template, "")  # parses the template: a group the pattern lacks fails here
            except (re.error, IndexError, TypeError) as exc:
                raise InvalidArgumentError(
                    f"{kind}({pattern!r}, {template!r}): the replacement does not fit the pattern ({exc}); it may "
                    f"name the pattern's {compiled.groups} group(s) as \\1.. or \\g<name>") from None

    def rename(self, key: str) -> str | None:
        """The new key when this rule applies to ``key``, else None."""
        return None

    def drops(self, key: str) -> bool:
        """True when the checkpoint key carries nothing the model should receive."""
        return False

    def converts(self, model_key: str, source_shape: tuple[int, ...], target_shape: tuple[int, ...]) -> bool:
        """True when this rule can turn a tensor of ``source_shape`` into ``target_shape``."""
        return False

    def convert(self, tensor: Any, target_shape: tuple[int, ...]) -> Any:
        return tensor

    def bind(self, checkpoint_keys: Sequence[str], model_keys: Collection[str]) -> KeyRule:
        """This rule specialised to one checkpoint and model (called once per plan); most rules
        need no context and return themselves."""
        return self

    def describe(self) -> str:
        return repr(self)

    def __str__(self) -> str:
        return self.describe()

    @functools.cached_property
    def _prefix(self) -> str:
        """The literal start of a pattern rule's ``pattern`` (``literal_prefix``), worked out on
        first use and kept on the rule: pattern rules test it before their regex."""
        return literal_prefix(getattr(self, "pattern", ""))


@dataclass(frozen=True, repr=False)
class StripPrefix(KeyRule):
    """Remove a leading prefix, repeatedly (``module.`` from DataParallel, ``_orig_mod.`` from compile)."""

    prefix: str
    found: bool = False
    """True when the planner discovered this prefix (reported as ``strip 'model.' (found)``)."""

    def rename(self, key: str) -> str | None:
        if not key.startswith(self.prefix):
            return None
        step = len(self.prefix)
        end = step
        while key.startswith(self.prefix, end):  # counted, then cut once: linear in the key's length
            end += step
        return key[end:]

    def describe(self) -> str:
        return f"strip {_quote(self.prefix)}" + (" (found)" if self.found else "")


@dataclass(frozen=True, repr=False)
class AddPrefix(KeyRule):
    """Prepend a prefix to keys that lack it (a bare backbone saved without its wrapper)."""

    prefix: str
    found: bool = False
    """True when the planner discovered this prefix (the backbone sits inside a larger model)."""

    def rename(self, key: str) -> str | None:
        return None if key.startswith(self.prefix) else self.prefix + key

    def describe(self) -> str:
        return f"add {_quote(self.prefix)}" + (" (found)" if self.found else "")


def _quote(text: str) -> str:
    """A pattern or prefix in quotes, as written (``repr`` would double every backslash)."""
    return f"'{text}'"


@remembered("anchored patterns", 512, "the pattern")
def _anchored(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled once, to match a whole key (``re.fullmatch(pattern, key)`` looks the
    pattern up in ``re``'s cache on every call, a third of planning a 300-key checkpoint)."""
    return re.compile(_whole(pattern))


_GLOBAL_FLAGS = re.compile(r"\(\?[aiLmsux]+\)")


def _whole(pattern: str) -> str:
    """``pattern`` made to match a whole key: wrapped in a group and ``\\Z``, its leading global
    flags (``(?i)``) kept in front, where ``re`` requires them."""
    flags = _GLOBAL_FLAGS.match(pattern)
    head = flags.group() if flags else ""
    return f"{head}(?:{pattern[len(head):]})\\Z"


@remembered("literal prefixes of patterns", 512, "the pattern")
def literal_prefix(pattern: str) -> str:
    """The text every key ``pattern`` fully matches begins with ('' when that cannot be told).

    A rule tests ``key.startswith(prefix)`` before it runs its regex: a family's rules are tried
    in turn on every key, and most keys are turned away by the first few characters (planning a
    timm MobileNet checkpoint calls about 3,000 rules). The prefix is read from ``re``'s own parse
    of the pattern: literal characters, descending into groups that are not repeated, stopping at
    anything else; a case-insensitive pattern has none.
    """
    try:
        try:
            from re import _parser as parser  # type: ignore[attr-defined]
        except ImportError:  # Python 3.10
            import sre_parse as parser
        parsed = parser.parse(pattern)
        if parsed.state.flags & re.IGNORECASE:
            return ""
        out: list[str] = []
        _literals(list(parsed), out, parser)
        return "".join(out)
    except Exception:  # an internal of re changed shape: no prefix, every key goes to the regex
        return ""


def _literals(items: list[Any], out: list[str], parser: Any) -> bool:
    """Append the leading literal characters of ``items``; True when all of them were literal."""
    for op, arg in items:
        if op is parser.LITERAL:
            out.append(chr(arg))
        elif op is parser.SUBPATTERN and not (arg[1] & re.IGNORECASE):
            if not _literals(list(arg[-1]), out, parser):
                return False
        else:
            return False
    return True


def _expand(pattern: str, template: str, key: str, guarded: bool = False) -> str:
    """``re.fullmatch(pattern, key).expand(template)`` for a key that matches, with the template
    parsed once: ``Match.expand`` re-parses it on every call, which made planning a timm
    MobileNet checkpoint (300 keys x 17 rules) cost 5 ms. ``sub`` caches parsed templates."""
    return str(_matcher(pattern, guarded).sub(template, key, count=1))


MATCH_SECONDS = 0.25
r"""The longest one match of a user's pattern may take. A user's rule (``rules=``, ``--rule``) is
matched by the ``regex`` library with this timeout: a nested quantifier (``(a+)+``,
``(\w+\.)*x``) backtracks exponentially on a long key with ``re``, and would never return. A
real pattern on a real key takes microseconds. A family's own rules are code, run with ``re``."""


class _GuardedPattern:
    """A user's pattern, ``regex``-compiled to match whole keys, each match bounded in time."""

    def __init__(self, pattern: str) -> None:
        import regex

        self.pattern = pattern
        self._compiled = regex.compile(_whole(pattern))

    def _bounded(self, call: Callable[..., Any], key: str, *args: Any, **kwargs: Any) -> Any:
        from .errors import InvalidArgumentError

        try:
            return call(*args, key, timeout=MATCH_SECONDS, **kwargs)
        except TimeoutError:
            shown = key if len(key) <= 80 else f"{key[:60]}... ({len(key):,} characters)"
            raise InvalidArgumentError(
                f"the key rule pattern {self.pattern!r} took more than {MATCH_SECONDS} s on the key {shown!r}: "
                "a quantifier inside a quantifier (such as (a+)+ or (\\w+\\.)*) backtracks without end on long "
                "keys. Rewrite it without nested repeats (e.g. [\\w.]+ instead of (\\w+\\.)*)") from None

    def match(self, key: str) -> Any:
        return self._bounded(self._compiled.match, key)

    def sub(self, template: str, key: str, count: int = 0) -> str:
        return str(self._bounded(self._compiled.sub, key, template, count=count))


@remembered("guarded patterns", 256, "the pattern")
def _guarded(pattern: str) -> _GuardedPattern:
    return _GuardedPattern(pattern)


def _matcher(pattern: str, guarded: bool) -> Any:
    """What matches ``pattern`` against whole keys: ``re`` for a family's rules, the time-bounded
    ``regex`` for a user's (``guarded``)."""
    return _guarded(pattern) if guarded else _anchored(pattern)


def guarded(rule: KeyRule) -> KeyRule:
    """``rule`` with its patterns matched under ``MATCH_SECONDS`` per key: for rules a user gives."""
    if getattr(rule, "guarded", None) is False:  # a rule with patterns (a dataclass with that field)
        return cast(KeyRule, replace(cast(Any, rule), guarded=True))
    return rule


@dataclass(frozen=True, repr=False)
class Rename(KeyRule):
    """Regex rename: ``re.fullmatch(pattern, key)`` then ``expand(replacement)``.

    ``replacement`` may be a tuple of alternatives: the first whose result is a key of the
    model wins (torchvision's MobileNet v3 puts a projection at ``block.3`` after a
    squeeze-excitation and at ``block.2`` without one; the key names the same tensor).
    """

    pattern: str
    replacement: str | tuple[str, ...]
    _model: frozenset[str] | None = field(default=None, compare=False)
    guarded: bool = False
    def _choices(self) -> tuple[str, ...]:
        return (self.replacement,) if isinstance(self.replacement, str) else tuple(self.replacement)

    def rename(self, key: str) -> str | None:
        if not key.startswith(self._prefix) or _matcher(self.pattern, self.guarded).match(key) is None:
            return None
        results = [_expand(self.pattern, r, key, self.guarded) for r in self._choices()]
        if self._model is not None:
            for result in results:
                if result in self._model:
                    return result
        return results[0]

    def bind(self, checkpoint_keys: Sequence[str], model_keys: Collection[str]) -> KeyRule:
        if len(self._choices()) < 2:
            return self
        return replace(self, _model=frozenset(model_keys))

    def describe(self) -> str:
        return f"rename {_quote(self.pattern)} -> " + " or ".join(_quote(r) for r in self._choices())


@dataclass(frozen=True, repr=False)
class Renumber(KeyRule):
    r"""Flatten nested block indices into one running index, in order.

    ``Renumber(r"blocks\.(\d+)\.(\d+)", "features.{}", start=1)`` turns timm's
    ``blocks.I.J.rest`` into torchvision's ``features.N.rest``, where N counts the distinct
    ``(I, J)`` of the checkpoint in numeric order from ``start``. The numbering comes from the
    checkpoint itself (bound once per plan), so one rule serves every depth configuration.
    """

    pattern: str
    target: str
    start: int = 0
    _table: tuple[tuple[tuple[int, ...], int], ...] | None = field(default=None, compare=False)
    guarded: bool = False
    def _match(self, key: str) -> tuple[tuple[int, ...], str] | None:
        if not key.startswith(self._prefix):
            return None
        m = _matcher(self.pattern + r"\.(.+)", self.guarded).match(key)
        if m is None:
            return None
        *indices, rest = m.groups()
        return tuple(int(i) for i in indices), rest

    def bind(self, checkpoint_keys: Sequence[str], model_keys: Collection[str]) -> KeyRule:
        found = sorted({hit[0] for k in checkpoint_keys if (hit := self._match(k)) is not None})
        return replace(self, _table=tuple((idx, self.start + n) for n, idx in enumerate(found)))

    def rename(self, key: str) -> str | None:
        hit = self._match(key)
        if hit is None or self._table is None:
            return None
        number = dict(self._table).get(hit[0])
        return None if number is None else f"{self.target.format(number)}.{hit[1]}"

    def describe(self) -> str:
        return f"renumber {_quote(self.pattern)} -> {_quote(self.target.format('N'))} in order from {self.start}"


@dataclass(frozen=True, repr=False)
class Drop(KeyRule):
    """Checkpoint keys matching ``pattern`` (regex, full match) are ignored, e.g. auxiliary heads."""

    pattern: str
    guarded: bool = False
    def drops(self, key: str) -> bool:
        return key.startswith(self._prefix) and _matcher(self.pattern, self.guarded).match(key) is not None

    def describe(self) -> str:
        return f"drop {_quote(self.pattern)}"


@dataclass(frozen=True, repr=False)
class CastIntegers(KeyRule):
    """Model keys matching ``pattern`` take an integer tensor of the same shape as their values,
    cast to the parameter's floating dtype (``cast:REGEX``): for a file that stores such weights
    as integers on purpose. Without it, an integer tensor for a floating parameter is refused
    (``IncompatibleCheckpointError``), since it is usually a quantized model's codes, not its weights."""

    pattern: str
    guarded: bool = False
    casts_integers: ClassVar[bool] = True

    def converts(self, model_key: str, source_shape: tuple[int, ...], target_shape: tuple[int, ...]) -> bool:
        return (tuple(source_shape) == tuple(target_shape)
                and _matcher(self.pattern, self.guarded).match(model_key) is not None)

    def convert(self, tensor: Any, target_shape: tuple[int, ...]) -> Any:
        return tensor  # placement casts to the parameter's dtype

    def describe(self) -> str:
        return f"cast integers {_quote(self.pattern)}"


@dataclass(frozen=True, repr=False)
class Reshape(KeyRule):
    """Model keys matching ``pattern`` accept a tensor of another shape with the same number of
    elements, e.g. a 1x1 conv ``[out, in, 1, 1]`` into a ``Linear`` ``[out, in]``."""

    pattern: str
    guarded: bool = False

    def converts(self, model_key: str, source_shape: tuple[int, ...], target_shape: tuple[int, ...]) -> bool:
        if _matcher(self.pattern, self.guarded).match(model_key) is None:
            return False
        squeeze = [d for d in source_shape if d != 1]
        return squeeze == [d for d in target_shape if d != 1]

    def convert(self, tensor: Any, target_shape: tuple[int, ...]) -> Any:
        return tensor.reshape(target_shape)

    def describe(self) -> str:
        return f"reshape {_quote(self.pattern)}"


@dataclass(frozen=True, repr=False)
class Positional(KeyRule):
    """Pair checkpoint modules no name rule matched with the model's unfilled modules, in
    order, requiring the same tensor names (weight, bias, running_mean…) and shapes in each.

    Pairing is per module, so the order of tensors inside a module does not matter; the order
    of modules does. A ``torch.save`` file keeps the order its model had. A safetensors file
    does not: it stores tensors sorted by dtype and name, so ``model.10`` precedes ``model.2``
    and ``bn1`` precedes ``conv1``. For such files the planner rebuilds the order from the
    names: numbered children (``model.0``, ``model.1``…) in numeric order, named siblings by
    which one fits the model's next module; it refuses when two named siblings would fit
    (the map is ambiguous). The first module whose tensors differ stops the map with a
    report of where checkpoint and model diverge. The model's head pairs with what is left of
    the checkpoint only when that is as many modules with the same tensor names (a head of
    another class count is then dropped, not an error); otherwise the rest is unexpected.
    BatchNorm's ``num_batches_tracked``, absent from old checkpoints, is zero-filled.
    """

    def describe(self) -> str:
        return "positional (same order, shapes checked)"


@dataclass(frozen=True, repr=False)
class AdaptInputConv(KeyRule):
    """The pretrained input convolution ``[out, 3, k, k]`` into one with ``in_chans`` inputs,
    as timm's ``adapt_input_conv`` does it (``tensor_ops``): summed over RGB for one channel,
    repeated and rescaled for more. ``load(..., in_chans=N)`` adds it for the model's first
    convolution, whatever its family."""

    model_key: str
    in_chans: int

    def converts(self, model_key: str, source_shape: tuple[int, ...], target_shape: tuple[int, ...]) -> bool:
        return (model_key == self.model_key and len(source_shape) == 4 and len(target_shape) == 4
                and target_shape[1] == self.in_chans and source_shape[0] == target_shape[0]
                and source_shape[2:] == target_shape[2:])

    def convert(self, tensor: Any, target_shape: tuple[int, ...]) -> Any:
        from .tensor_ops import adapt_input_conv

        return adapt_input_conv(self.in_chans, tensor)

    def describe(self) -> str:
        return f"adapt {_quote(self.model_key)} to {self.in_chans} input channels"


@dataclass(frozen=True, repr=False)
class ResamplePosEmbed(KeyRule):
    """An absolute position embedding resampled to another grid (``img_size=``), as timm's
    checkpoint filters do with ``resample_abs_pos_embed`` (``tensor_ops``: bicubic, prefix tokens kept)."""

    model_key: str
    grid: tuple[int, int]
    num_prefix_tokens: int = 1

    def converts(self, model_key: str, source_shape: tuple[int, ...], target_shape: tuple[int, ...]) -> bool:
        """Only what the resampling makes exactly the model's shape: a square grid behind the
        prefix tokens, the same width, and the model's prefix plus grid."""
        if model_key != self.model_key or len(source_shape) != 3 or len(target_shape) != 3 \
                or source_shape[0] != 1 or source_shape[-1] != target_shape[-1]:
            return False
        grid = source_shape[1] - self.num_prefix_tokens
        side = math.isqrt(grid) if grid > 0 else 0
        return side * side == grid and tuple(target_shape[:2]) == (1, self.num_prefix_tokens + prod(self.grid))

    def convert(self, tensor: Any, target_shape: tuple[int, ...]) -> Any:
        from .tensor_ops import resample_abs_pos_embed

        return resample_abs_pos_embed(tensor, self.grid, num_prefix_tokens=self.num_prefix_tokens)

    def describe(self) -> str:
        return f"resample {_quote(self.model_key)} to a {self.grid[0]}x{self.grid[1]} grid"


@dataclass(frozen=True, repr=False)
class Fuse(KeyRule):
    r"""Several checkpoint tensors become one model tensor, concatenated along ``dim``.

    transformers' ViT keeps attention's ``query``, ``key`` and ``value`` projections apart; timm
    keeps one ``qkv`` projection. ``pattern`` must contain a group named ``part`` whose values
    are listed in ``parts`` (in concatenation order); keys that match are grouped by
    ``match.expand(replacement)``, and a group with every part becomes one tensor of that name,
    which the other rules then map like any key. The plan records the parts; the tensors are
    concatenated only when the plan is executed.
    """

    pattern: str
    replacement: str
    parts: tuple[str, ...]
    dim: int = 0
    guarded: bool = False

    def fused_name(self, key: str) -> tuple[str, str] | None:
        """(the fused key, this key's part) when ``key`` is one of the parts, else None."""
        m = _matcher(self.pattern, self.guarded).match(key)
        if m is None or m.group("part") not in self.parts:
            return None
        return m.expand(self.replacement), m.group("part")

    def fuse_shape(self, shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...] | None:
        """The concatenated shape, or None when the parts do not line up."""
        first = shapes[0]
        if any(len(s) != len(first) or any(a != b for i, (a, b) in enumerate(zip(s, first)) if i != self.dim)
               for s in shapes):
            return None
        return tuple(sum(s[self.dim] for s in shapes) if i == self.dim else d for i, d in enumerate(first))

    def describe(self) -> str:
        return f"fuse {_quote(self.pattern)} ({'+'.join(self.parts)}) -> {_quote(self.replacement)}"


DEFAULT_RULES: tuple[KeyRule, ...] = (StripPrefix("module."), StripPrefix("_orig_mod."))
"""Applied for every family before its own rules: DataParallel/DDP and ``torch.compile`` wrappers."""


def renamed_as_planned(key: str, rules: Sequence[KeyRule], model: Collection[str]) -> str | None:
    """``key`` through ``rules`` as the planner applies them (in order, until it names a model
    key); None when a rule drops it. A layout's conversion (``Layout.convert``) names the tensors
    it makes with it, as the layout's rules would have named them."""
    for rule in rules:
        if rule.drops(key):
            return None
        new = rule.rename(key)
        if new is not None:
            key = new
            if key in model:
                break
    return key


def fused_parts(checkpoint: Collection[str], fuses: Sequence[Fuse],
                skip: Callable[[str], bool] = lambda key: False, *, leave_incomplete: bool = False
                ) -> dict[str, tuple[Fuse, tuple[str, ...]]] | None:
    """Each ``Fuse`` group of a checkpoint, as the planner joins them (a converting layout's plan
    applies no Fuse, so its conversion does): fused key -> (its rule, its parts' keys in
    concatenation order; ``Fuse.fuse_shape`` gives the joined shape). None when a group misses a
    part (a query without its key: no qkv to make), or with ``leave_incomplete`` that group left
    out, its keys as they are. ``skip``: keys the caller converts itself."""
    groups: dict[tuple[int, str], dict[str, str]] = {}
    for key in checkpoint:
        if skip(key):
            continue
        hit = next(((n, found) for n, f in enumerate(fuses) if (found := f.fused_name(key)) is not None), None)
        if hit is not None:
            number, (fused, part) = hit
            groups.setdefault((number, fused), {})[part] = key
    out: dict[str, tuple[Fuse, tuple[str, ...]]] = {}
    for (number, fused), parts in groups.items():
        rule = fuses[number]
        if set(parts) != set(rule.parts):
            if leave_incomplete:
                continue
            return None
        out[fused] = (rule, tuple(parts[p] for p in rule.parts))
    return out


_RULE_KINDS: dict[str, tuple[Callable[[str], KeyRule], str]] = {
    "strip": (StripPrefix, "strip:PREFIX"),
    "add": (AddPrefix, "add:PREFIX"),
    "drop": (Drop, "drop:REGEX"),
    "reshape": (Reshape, "reshape:REGEX"),
    "cast": (CastIntegers, "cast:REGEX"),
}


def parse_rule(text: str) -> KeyRule:
    """A key rule from its command-line spelling (``zooadapt inspect --rule``).

    ``strip:PREFIX``, ``add:PREFIX``, ``drop:REGEX``, ``reshape:REGEX``, ``cast:REGEX``, ``rename:REGEX=>REPLACEMENT``
    (``\\1`` refers to a group) and ``positional``. Raises ``InvalidArgumentError`` naming the forms.
    """
    from .errors import InvalidArgumentError

    forms = ", ".join([*(form for _, form in _RULE_KINDS.values()), "rename:REGEX=>REPLACEMENT", "positional"])
    if not isinstance(text, str):
        raise InvalidArgumentError(f"a key rule must be text or a zooadapt.rules object, not {type(text).__name__}")
    kind, sep, arg = text.partition(":")
    if kind == "positional" and not arg:
        return Positional()
    if not sep or not arg:
        raise InvalidArgumentError(f"key rule {text!r}: write one of {forms}")
    if kind == "rename":
        pattern, arrow, replacement = arg.partition("=>")
        if not arrow:
            raise InvalidArgumentError(f"key rule {text!r}: a rename needs '=>' between pattern and replacement")
        _check_regex(pattern, text)
        return Rename(pattern, replacement)
    if kind not in _RULE_KINDS:
        raise InvalidArgumentError(f"key rule {text!r}: unknown kind {kind!r}; write one of {forms}")
    if kind in ("drop", "reshape", "cast"):
        _check_regex(arg, text)
    return _RULE_KINDS[kind][0](arg)


def _check_regex(pattern: str, text: str) -> None:
    from .errors import InvalidArgumentError

    try:
        re.compile(pattern)
    except re.error as exc:
        raise InvalidArgumentError(f"key rule {text!r}: {pattern!r} is not a regular expression ({exc})") from None

"""Pairing by order and tensor signature: checkpoint modules the names did not place, paired
with the model's unfilled modules.

The ``Positional`` rule and structural matching (``make_plan(structural=True)``, tried when no
name fits) hand the plan's leftover keys to ``Aligner``, which walks both sides module by module.
Within a block it pairs modules whatever order each side defines them in (``pair_by_signature``);
where two pairings are possible it refuses rather than guesses. The plan turns the pairs into
its mappings (``plan.make_plan``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..contract.errors import IncompatibleCheckpointError

__all__ = ["Leftover", "Module", "group_modules", "pair_by_signature", "Aligner"]

Shape = tuple[int, ...]
_TRACKED = "num_batches_tracked"


@dataclass(frozen=True)
class Leftover:
    """A checkpoint key no name rule placed: original key, renamed key, rules used, shape."""

    key: str
    name: str
    rules: tuple[str, ...]
    shape: Shape


@dataclass
class Module:
    """The tensors of one module: leaf name (``weight``, ``running_mean``…) -> (key, shape)."""

    path: str
    leaves: dict[str, tuple[str, Shape]] = field(default_factory=dict)

    def signature(self) -> frozenset[tuple[str, Shape]]:
        return frozenset((leaf, shape) for leaf, (_, shape) in self.leaves.items() if leaf != _TRACKED)

    def show(self) -> str:
        inner = ", ".join(f"{leaf} {list(shape)}" for leaf, (_, shape) in self.leaves.items() if leaf != _TRACKED)
        return f"{self.path or '(root)'} {{{inner}}}"


def group_modules(items: Iterable[tuple[str, str, Shape]]) -> list[Module]:
    """(key, dotted name, shape) -> modules in order of first appearance."""
    modules: dict[str, Module] = {}
    for key, name, shape in items:
        path, _, leaf = name.rpartition(".")
        modules.setdefault(path, Module(path)).leaves[leaf] = (key, shape)
    return list(modules.values())


def pair_by_signature(ck: Sequence[Module], model: Sequence[Module]) -> list[tuple[Module, Module]] | None:
    """One block's checkpoint modules paired with the model's whatever order each defines them in,
    or None when the signatures differ or a pairing is not certain. A signature that occurs once
    on each side pairs at once; modules that share one are paired through the module each follows
    (the checkpoint's parent module when nested, like ``conv1.norm`` in ``conv1``, else the module
    before it in the file; the module before it in the model), only when that one is already paired
    and exactly one candidate follows its counterpart; the last module of a signature left unpaired
    takes the last counterpart of that signature left."""
    from collections import Counter

    if Counter(m.signature() for m in ck) != Counter(m.signature() for m in model):
        return None
    paths = {m.path for m in ck}
    anchor: dict[int, Module | None] = {}
    for n, m in enumerate(ck):
        parent = m.path.rpartition(".")[0]
        anchor[id(m)] = next((c for c in ck if c.path == parent), None) if parent in paths else (
            ck[n - 1] if n else None)
    model_after = {id(model[n - 1]): model[n] for n in range(1, len(model))}
    counts = Counter(m.signature() for m in ck)
    pairs: dict[int, Module] = {}
    taken: set[int] = set()
    for c in ck:
        if counts[c.signature()] == 1:
            twin = next(m for m in model if m.signature() == c.signature())
            pairs[id(c)] = twin
            taken.add(id(twin))
    progress = True
    while progress and len(pairs) < len(ck):
        progress = False
        for c in ck:
            if id(c) in pairs:
                continue
            a = anchor[id(c)]
            if a is None:
                first = model[0]  # the block's first module follows nothing: only a first module takes it
                target = first if id(first) not in taken and first.signature() == c.signature() else None
                if target is not None and any(anchor[id(o)] is None and o is not c and o.signature() == c.signature()
                                              for o in ck):
                    target = None
            else:
                if id(a) not in pairs:
                    continue
                target = model_after.get(id(pairs[id(a)]))
            if target is None or id(target) in taken or target.signature() != c.signature():
                continue
            pairs[id(c)], progress = target, True
            taken.add(id(target))
        if not progress:
            progress = _pair_the_last_left(ck, model, pairs, taken)
    if len(pairs) < len(ck):
        return None
    return [(c, pairs[id(c)]) for c in ck]


def _pair_the_last_left(ck: Sequence[Module], model: Sequence[Module], pairs: dict[int, Module],
                        taken: set[int]) -> bool:
    """Pair each signature's one module left with its one counterpart left (both sides hold a signature
    equally often and the other pairs are certain, so this one is too): a bottleneck's shortcut
    registered first has conv3's signature and follows nothing, yet once conv3 pairs through conv2
    it is the only one left. True when a pair was made."""
    made = False
    for c in ck:
        if id(c) in pairs:
            continue
        signature = c.signature()
        if sum(1 for o in ck if id(o) not in pairs and o.signature() == signature) != 1:
            continue
        left = [m for m in model if id(m) not in taken and m.signature() == signature]
        if len(left) == 1:
            pairs[id(c)] = left[0]
            taken.add(id(left[0]))
            made = True
    return made


@dataclass
class _Node:
    """A checkpoint module path as a tree, so an unordered file can be walked in module order."""

    module: Module | None = None
    children: dict[str, _Node] = field(default_factory=dict)


class Aligner:
    """Pairs leftover checkpoint modules with the model's unfilled modules, in order.

    With a trustworthy file order the checkpoint's modules are taken as they come. Without
    one (safetensors) the checkpoint is walked as a tree: numbered children in numeric order,
    named siblings chosen by which one fits the model's next module; two that fit is an
    ambiguity and refused. The head pairs last, and only with the checkpoint's last modules.
    """

    def __init__(self, leftovers: list[Leftover], targets: Iterable[tuple[str, Shape]], in_head: Callable[[str], bool],
                 unordered: bool, lenient: bool = False) -> None:
        """``targets``: the model's unfilled keys (key, shape) in module order, outside skipped parts;
        ``in_head``: whether a model module path lies in the head (paired last)."""
        self.leftovers = leftovers
        self.lenient = lenient
        """Stop at the first divergence and keep the pairs before it, instead of raising (structural
        matching: a trunk saved without the model's last modules still pairs as far as it goes)."""
        self.unordered = unordered
        modules = group_modules((k, k, tuple(shape)) for k, shape in targets)
        self.body = [m for m in modules if not in_head(m.path) and m.signature()]
        self.head = [m for m in modules if in_head(m.path) and m.signature()]
        # a module holding only num_batches_tracked has nothing to pair by; it stays unexpected
        self.checkpoint = [m for m in group_modules((x.key, x.name, x.shape) for x in leftovers) if m.signature()]
        self.pairs: list[tuple[Module, Module]] = []
        self.used: set[str] = set()  # checkpoint module paths consumed
        self.placed: set[str] = set()  # checkpoint keys given a model key
        self.notes: list[str] = []
        self.position = 0

    # -- the walk ----------------------------------------------------------------------
    def run(self) -> list[tuple[Module, Module, bool]]:
        """(checkpoint module, model module, whether it loads) for every pair, the body's first, then
        the head's (a head module of another shape pairs but does not load: the head is new)."""
        try:
            self._pair_all()
        except IncompatibleCheckpointError as exc:
            if not self.lenient or not self.pairs:
                raise
            self.notes.append("pairing by order stopped: " + str(exc).splitlines()[0])
        out = [(cm, mm, True) for cm, mm in self.pairs] + self._pair_head()
        for cm, mm, _ in out:
            self.placed.update(ck_key for leaf, (ck_key, _) in cm.leaves.items() if leaf in mm.leaves)
        return out

    def _pair_all(self) -> None:
        if self.unordered:
            self._walk(self._tree(), [])
            if self.pairs:
                self.notes.append(
                    "the checkpoint keeps no key order (safetensors stores keys sorted by name); the positional "
                    "map followed numbered module names in numeric order and chose named siblings by shape "
                    "(by name where two had the same shapes)")
        else:
            j = 0
            while j < len(self.checkpoint) and self.position < len(self.body):
                module = self.checkpoint[j]
                if module.signature() == self.body[self.position].signature():
                    self._pair(module)
                    j += 1
                    continue
                j = self._pair_block(j)

    def _pair_block(self, j: int) -> int:
        """The model's next module has another signature than the checkpoint's next one: the two
        may define one block's modules in another order (a shortcut registered before the
        convolutions, a norm named inside its conv). The block (the smallest numbered module of
        the model around the diverging one, then larger ones) is paired as a whole, with the same
        number of checkpoint modules: every signature must occur as often on both sides; modules
        of one signature are told apart by the module each follows (its parent when nested, such
        as ``conv1.norm``, else the module before it), never by a guess. Returns the checkpoint
        position after the block; raises where no block pairs."""
        i = self.position
        for start, end in self._blocks_around(i):
            done = i - start  # pairs already made inside this block, undone to pair it whole
            if done > len(self.pairs) or j - done < 0 or j - done + (end - start) > len(self.checkpoint):
                continue
            ck = self.checkpoint[j - done: j - done + (end - start)]
            found = pair_by_signature(ck, self.body[start:end])
            if found is None:
                continue
            del self.pairs[len(self.pairs) - done:]
            for cm, mm in found:
                self.pairs.append((cm, mm))
                self.used.add(cm.path)
            self.position = end
            return j - done + (end - start)
        self._diverge(self.checkpoint[j], self.body[i], [self.checkpoint[j]])
        return j  # not reached

    def _blocks_around(self, i: int) -> list[tuple[int, int]]:
        """(start, end) positions of the model's numbered modules around body[i] with at least
        two modules in this walk, smallest first (``layer1.0``; ``stages.0.blocks.0``)."""
        parts = self.body[i].path.split(".")
        out: list[tuple[int, int]] = []
        for n in range(len(parts) - 1, 0, -1):
            if not parts[n - 1].isdigit():
                continue
            prefix = ".".join(parts[:n]) + "."
            start = i
            while start > 0 and self.body[start - 1].path.startswith(prefix):
                start -= 1
            end = i
            while end < len(self.body) and self.body[end].path.startswith(prefix):
                end += 1
            if end - start >= 2 and (not out or out[-1] != (start, end)):
                out.append((start, end))
        return out

    def _pair(self, module: Module) -> None:
        target = self.body[self.position]
        if module.signature() != target.signature():
            self._diverge(module, target, [module])
        self.pairs.append((module, target))
        self.used.add(module.path)
        self.position += 1

    def _tree(self) -> _Node:
        root = _Node()
        for module in self.checkpoint:
            node = root
            for part in module.path.split(".") if module.path else ():
                node = node.children.setdefault(part, _Node())
            node.module = module
        return root

    def _firsts(self, node: _Node) -> list[Module]:
        """Every module that could come first in this subtree."""
        if node.module is not None:
            return [node.module]
        numbered = all(n.isdigit() for n in node.children)
        if numbered and node.children:
            first = min(node.children, key=int)
            return self._firsts(node.children[first])
        return [m for child in node.children.values() for m in self._firsts(child)]

    def _walk(self, node: _Node, path: list[str]) -> bool:
        """Pair this subtree in order; False once the model has no more modules to fill."""
        if node.module is not None:
            if self.position >= len(self.body):
                return False
            self._pair(node.module)
        if all(n.isdigit() for n in node.children):
            return all(self._walk(node.children[name], [*path, name]) for name in sorted(node.children, key=int))
        pending = dict(node.children)
        while pending:
            if self.position >= len(self.body):
                return False
            want = self.body[self.position].signature()
            fits = [n for n, child in pending.items() if any(m.signature() == want for m in self._firsts(child))]
            if len(fits) > 1:
                # siblings alike in shape (a block's conv1 and conv2) are told apart by name where
                # exactly one of them is named as a part of the model's module is ('4.0.conv1' for
                # 'layer1.0.conv1'): the name says it, not the order the file lost
                named = [n for n in fits if n in self.body[self.position].path.split(".")]
                if len(named) != 1:
                    self._ambiguous(path, fits)
                fits = named
            if not fits:
                self._diverge(None, self.body[self.position], [m for c in pending.values() for m in self._firsts(c)])
            name = fits[0]
            if not self._walk(pending.pop(name), [*path, name]):
                return False
        return True

    # -- the head and the results ------------------------------------------------------
    def _pair_head(self) -> list[tuple[Module, Module, bool]]:
        rest = [m for m in self.checkpoint if m.path not in self.used]
        if not self.head or len(rest) != len(self.head):
            return []
        if self.unordered:
            rest.sort(key=lambda m: [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in m.path.split(".")])
        out = []
        for cm, mm in zip(rest, self.head):
            if set(cm.leaves) - {_TRACKED} != set(mm.leaves) - {_TRACKED}:
                return []
            out.append((cm, mm, cm.signature() == mm.signature()))
        self.used.update(cm.path for cm, _, _ in out)
        return out

    def remaining(self) -> list[Leftover]:
        """Leftover checkpoint keys the pairing did not place (they become unexpected); after ``run``."""
        return [x for x in self.leftovers if x.key not in self.placed]

    # -- refusals ----------------------------------------------------------------------
    def _diverge(self, module: Module | None, target: Module, context: Sequence[Module]) -> None:
        i = self.position
        lines = [f"  model #{j}: {m.show()}" for j, m in enumerate(self.body) if i - 2 <= j <= i + 1]
        if module is not None:
            got = f"the checkpoint's next module {module.show()}"
        else:
            got = "none of the checkpoint's candidates " + "; ".join(m.show() for m in context[:4])
        order_hint = (
            "The checkpoint keeps no key order (safetensors stores keys sorted by name); zooadapt rebuilt it from "
            "numbered module names and shapes, so the order itself may be what differs." if self.unordered else ""
        )
        raise IncompatibleCheckpointError(
            f"positional mapping diverges at model module #{i} {target.show()}: {got} has other tensors or "
            f"shapes. {i} modules matched before it.\n" + "\n".join(lines) + "\n" + order_hint +
            "\nPass skip=(...) for model parts the checkpoint does not hold, map the names with a Rename rule, "
            "or check that this is the right checkpoint."
        )

    def _ambiguous(self, path: list[str], names: list[str]) -> None:
        where = ".".join(path) or "the top level"
        raise IncompatibleCheckpointError(
            f"positional mapping is ambiguous at {where}: the checkpoint's modules {', '.join(sorted(names))} "
            f"could each fill the model's next module {self.body[self.position].show()}, and the file keeps no "
            "order to tell them apart (safetensors stores keys sorted by name). Map these names with a Rename "
            "rule, or use a checkpoint saved with torch.save, which keeps module order."
        )

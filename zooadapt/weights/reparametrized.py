"""Weights saved through one of torch's reparametrizations, folded back into the plain tensors
the saved model computed with.

A model pruned with ``torch.nn.utils.prune`` saves ``conv1.weight_orig`` and ``conv1.weight_mask``
in place of ``conv1.weight``; one under weight normalisation ``fc.weight_g`` and ``fc.weight_v``
(``torch.nn.utils.weight_norm``) or ``fc.parametrizations.weight.original0`` and ``original1``
(``torch.nn.utils.parametrizations.weight_norm``); one under spectral normalisation
``weight_orig``, ``weight_u`` and ``weight_v`` (``torch.nn.utils.spectral_norm``) or
``parametrizations.weight.original`` with ``parametrizations.weight.0._u`` and ``._v``. The
plain architecture has ``conv1.weight``: the tensor the module's forward computes from those
parts, which is what is folded here, by torch's own formula (prune: ``orig * mask``; weight
norm: ``torch._weight_norm(v, g, dim)``; spectral norm: ``orig / sigma`` with the saved power
iteration's ``sigma = u . (W v)``, as an evaluating module computes it). The folded model
computes what the saved one did in ``eval()``; it trains its weights plainly from there.

Names and shapes decide which keys form a group (``find_folds``, no tensor read), so a plan is
made on the folded shapes before anything loads; the values are folded when the plan places
them (``FoldedTensors``). A model that has such keys itself (your own pruned module) takes the
file as it is: a kind the model uses is never folded. A ``torch.nn.utils.parametrize``
parametrization of any other kind cannot be evaluated without its code: such keys are named in
a ``IncompatibleCheckpointError`` that says how to save the plain weights instead.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from math import prod
from typing import TYPE_CHECKING, Any, Literal

from ..contract.errors import IncompatibleCheckpointError

if TYPE_CHECKING:
    import torch

__all__ = ["Fold", "FoldKind", "find_folds", "folded_shapes", "FoldedTensors", "describe_folds"]

Shape = tuple[int, ...]
FoldKind = Literal["pruned", "weight_norm", "spectral_norm", "parametrized_weight_norm",
                   "parametrized_spectral_norm"]

_WHAT: dict[FoldKind, str] = {
    "pruned": "pruned (torch.nn.utils.prune: X_orig * X_mask)",
    "weight_norm": "weight-normalised (torch.nn.utils.weight_norm: X_g, X_v)",
    "spectral_norm": "spectrally normalised (torch.nn.utils.spectral_norm: X_orig / sigma from X_u, X_v)",
    "parametrized_weight_norm": "weight-normalised (torch.nn.utils.parametrizations.weight_norm: original0, "
                                "original1)",
    "parametrized_spectral_norm": "spectrally normalised (torch.nn.utils.parametrizations.spectral_norm: "
                                  "original / sigma from 0._u, 0._v)",
}

_LEGACY = re.compile(r"(?P<stem>.+)_(?P<part>orig|mask|g|u|v)")
_LEGACY_ENDINGS = ("_orig", "_mask", "_g", "_u", "_v")
_PARAMETRIZED = re.compile(r"(?P<module>(?:.+\.)?)parametrizations\.(?P<name>[^.]+)\.(?P<part>.+)")


@dataclass(frozen=True)
class Fold:
    """One plain tensor made from the file's parts of a reparametrized one."""

    key: str
    """The plain tensor's key (``conv1.weight``)."""
    kind: FoldKind
    parts: tuple[str, ...]
    """The file's keys in the formula's order: prune (orig, mask); weight norm (g, v); spectral
    norm (orig, u, v)."""
    dim: int | None = None
    """The weight-norm dimension (-1: the whole tensor), or for spectral norm the one its shape
    alone tells (None: both fit, a square kernel: torch's own rule decides when the tensor is
    placed, 1 for a ``ConvTranspose``, else 0)."""


def find_folds(shapes: Mapping[str, Shape], model_keys: Collection[str] = ()) -> dict[str, Fold]:
    """Each complete group of reparametrized parts in ``shapes`` (key -> shape), by its plain key,
    in file order; none of a kind that ``model_keys`` use themselves (the model takes those as
    they are). Raises ``IncompatibleCheckpointError`` for a ``parametrize`` parametrization of
    another kind, unless the model has parametrizations of its own."""
    found = _groups(shapes)
    parametrized = any("parametrizations." in k for k in shapes)
    if not found and not parametrized:
        return {}  # the usual file: the model's keys need no look
    own = {fold.kind for fold in _groups(dict.fromkeys(model_keys, ()), check_shapes=False).values()}
    folds = {key: fold for key, fold in found.items() if fold.kind not in own and key not in shapes}
    if parametrized and not any("parametrizations." in k for k in model_keys):
        taken = {part for fold in folds.values() for part in fold.parts}
        unknown = [k for k in shapes if k not in taken and _PARAMETRIZED.fullmatch(k)]
        if unknown:
            shown = ", ".join(unknown[:4]) + (f", +{len(unknown) - 4} more" if len(unknown) > 4 else "")
            names = sorted({m["name"] for k in unknown if (m := _PARAMETRIZED.fullmatch(k)) is not None})
            name = repr(names[0]) if len(names) == 1 else "NAME (" + ", ".join(map(repr, names)) + ")"
            raise IncompatibleCheckpointError(
                f"the checkpoint holds {len(unknown)} tensors of a torch.nn.utils.parametrize parametrization "
                f"zooadapt cannot evaluate without its code ({shown}); it folds weight_norm, spectral_norm and "
                "pruning only. Save the plain weights instead: call "
                f"torch.nn.utils.parametrize.remove_parametrizations(module, {name}) on each parametrized "
                "module (leave_parametrized=True keeps what it computes), then save model.state_dict().")
    return folds


def _groups(shapes: Mapping[str, Shape], check_shapes: bool = True) -> dict[str, Fold]:
    legacy: dict[str, dict[str, str]] = {}
    parametrized: dict[str, dict[str, str]] = {}
    for key in shapes:
        if "parametrizations." in key:
            if (m := _PARAMETRIZED.fullmatch(key)) is not None:
                parametrized.setdefault(m["module"] + m["name"], {})[m["part"]] = key
        elif key.endswith(_LEGACY_ENDINGS) and (m := _LEGACY.fullmatch(key)) is not None:
            legacy.setdefault(m["stem"], {})[m["part"]] = key
    if not legacy and not parametrized:
        return {}
    found = [fold for stem, parts in legacy.items() if (fold := _legacy_fold(stem, parts, shapes, check_shapes))]
    found += [fold for name, parts in parametrized.items()
              if (fold := _parametrized_fold(name, parts, shapes, check_shapes))]
    owner = {part: fold for fold in found for part in fold.parts}
    return {fold.key: fold for key in shapes if (fold := owner.get(key)) is not None}  # where its first part was


def _legacy_fold(stem: str, parts: dict[str, str], shapes: Mapping[str, Shape], check: bool) -> Fold | None:
    names = set(parts)
    if names == {"orig", "mask"}:
        orig, mask = parts["orig"], parts["mask"]
        if check and tuple(shapes[orig]) != tuple(shapes[mask]):
            return None
        return Fold(stem, "pruned", (orig, mask))
    if names == {"g", "v"}:
        dim = _norm_dim(shapes[parts["g"]], shapes[parts["v"]]) if check else 0
        return None if dim is None else Fold(stem, "weight_norm", (parts["g"], parts["v"]), dim)
    if names == {"orig", "u", "v"}:
        spectral = (parts["orig"], parts["u"], parts["v"])
        dims = _spectral_dims(*(shapes[k] for k in spectral)) if check else (0,)
        return None if not dims else Fold(stem, "spectral_norm", spectral, dims[0] if len(dims) == 1 else None)
    return None


def _parametrized_fold(name: str, parts: dict[str, str], shapes: Mapping[str, Shape], check: bool) -> Fold | None:
    names = set(parts)
    if names == {"original0", "original1"}:
        dim = _norm_dim(shapes[parts["original0"]], shapes[parts["original1"]]) if check else 0
        return None if dim is None else Fold(name, "parametrized_weight_norm",
                                             (parts["original0"], parts["original1"]), dim)
    if names == {"original", "0._u", "0._v"}:
        spectral = (parts["original"], parts["0._u"], parts["0._v"])
        dims = _spectral_dims(*(shapes[k] for k in spectral)) if check else (0,)
        return None if not dims else Fold(name, "parametrized_spectral_norm", spectral,
                                          dims[0] if len(dims) == 1 else None)
    return None


def _norm_dim(g: Shape, v: Shape) -> int | None:
    """The dimension a weight norm's ``g`` keeps (``norm_except_dim``): -1 when it is one number
    over the whole tensor; None when ``g`` is no such norm of ``v``."""
    g, v = tuple(g), tuple(v)
    if not v:
        return None
    if not g or (len(g) != len(v) and prod(g) == 1):
        return -1
    if len(g) != len(v) or any(a not in (1, b) for a, b in zip(g, v)):
        return None
    kept = [d for d, (a, b) in enumerate(zip(g, v)) if a == b and b != 1]
    if len(kept) > 1:
        return None
    if kept:
        return kept[0]
    ones = [d for d, b in enumerate(v) if b == 1]
    return ones[0] if ones else None  # any dimension of size 1 gives the same norm


def _spectral_dims(weight: Shape, u: Shape, v: Shape) -> tuple[int, ...]:
    """The dimensions a spectral norm's ``u`` and ``v`` fit (torch uses 0, 1 for ConvTranspose)."""
    if len(u) != 1 or len(v) != 1 or len(weight) < 1:
        return ()
    total = prod(weight)
    return tuple(d for d in range(min(2, len(weight))) if weight[d] == u[0] and total // max(weight[d], 1) == v[0])


def folded_shapes(shapes: Mapping[str, Shape], folds: Mapping[str, Fold]) -> dict[str, Shape]:
    """``shapes`` with each group's parts replaced by its plain key, where its first part was."""
    if not folds:
        return dict(shapes)
    owner = {part: fold for fold in folds.values() for part in fold.parts}
    out: dict[str, Shape] = {}
    for key, shape in shapes.items():
        fold = owner.get(key)
        if fold is None:
            out[key] = shape
        elif fold.key not in out:
            out[fold.key] = tuple(shapes[fold.parts[1 if fold.kind.endswith("weight_norm") else 0]])
    return out


def describe_folds(folds: Mapping[str, Fold]) -> str:
    """The sentence the load report carries about the folded tensors."""
    counts: dict[FoldKind, list[str]] = {}
    for fold in folds.values():
        counts.setdefault(fold.kind, []).append(fold.key)
    kinds = "; ".join(f"{len(keys)} {_WHAT[kind]}, e.g. {keys[0]}" for kind, keys in counts.items())
    return (f"folded {len(folds)} reparametrized tensors into the plain weights the saved model computed with "
            f"in eval(): {kinds}")


class FoldedTensors(Mapping[str, Any]):
    """The file's tensors with each fold's plain key computed from its parts on first use (and
    kept): what a plan made on ``folded_shapes`` places."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], folds: Mapping[str, Fold],
                 transposed: Collection[str] = ()) -> None:
        self._tensors, self._folds, self._transposed = tensors, folds, frozenset(transposed)
        self._made: dict[str, torch.Tensor] = {}

    def __getitem__(self, key: str) -> torch.Tensor:
        fold = self._folds.get(key)
        if fold is None:
            return self._tensors[key]
        if key not in self._made:
            self._made[key] = fold_tensor(fold, [self._tensors[k] for k in fold.parts],
                                          transposed=key in self._transposed)
        return self._made[key]

    def __iter__(self) -> Iterator[str]:
        return iter(folded_shapes({k: () for k in self._tensors}, self._folds))

    def __len__(self) -> int:
        return len(self._tensors) - sum(len(f.parts) - 1 for f in self._folds.values())


def fold_tensor(fold: Fold, parts: list[torch.Tensor], *, transposed: bool = False) -> torch.Tensor:
    """The plain tensor, by the formula the reparametrizing module's forward uses. ``transposed``:
    the tensor goes into a ``ConvTranspose`` (whose spectral norm torch takes over dimension 1),
    which decides a spectral norm whose shape fits both dimensions (a square kernel)."""
    import torch

    with torch.no_grad():
        if fold.kind == "pruned":
            orig, mask = parts
            return orig * mask
        if fold.kind.endswith("weight_norm"):
            g, v = parts
            assert fold.dim is not None
            return torch._weight_norm(v, g, fold.dim)
        weight, u, v = parts
        dim = fold.dim if fold.dim is not None else int(transposed)
        matrix = _as_matrix(weight, dim)
        if fold.kind == "spectral_norm":
            sigma = torch.dot(u, torch.mv(matrix, v))
        else:
            sigma = torch.vdot(u, torch.mv(matrix, v))
        return weight / sigma


def _as_matrix(weight: torch.Tensor, dim: int) -> torch.Tensor:
    if dim != 0:
        weight = weight.permute(dim, *(d for d in range(weight.dim()) if d != dim))
    return weight.reshape(weight.size(0), -1)

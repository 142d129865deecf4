"""Truncated, multi-output backbones cut from a family's stage map (seed 000).

Seed 000 rewrites MobileNet by hand to get the outputs of its first seven blocks and drop
the rest. Here the stage map already says which modules form each stage, so the cut is
generic: the kept modules run stage by stage, the requested stages' outputs are returned,
and nothing after the last requested stage is kept, loaded or computed. Modules keep their
paths (``layer1.0.conv1.weight`` stays ``layer1.0.conv1.weight``), so the family's key rules,
freezing and learning-rate groups work on the cut model exactly as on the full one.

The forward order comes from the family when it declares ``Family.features`` (needed where
the forward is more than running modules one after another: AlexNet's flatten, a ViT's
class token). Otherwise it is read from the model: its children in registration order,
descending into ``nn.Sequential``/``nn.ModuleList`` containers that hold stages; modules of no
stage that sit next to a stage's last module (ResNet's ReLU and max-pool after ``bn1``) end
that stage, so a stage's output is what the next stage receives. A stage whose forward cannot
be read that way (a parameter used in code, a container that is not a Sequential) is refused,
never guessed. ``check_features`` compares every stage output with the full model's.

The full architecture is built on ``meta`` and cut before any tensor is allocated; the load
plan is made against the full model, so checkpoint tensors beyond the cut are reported as
skipped and never read from the (memory-mapped) file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from ..contract.errors import InvalidArgumentError, PluginError, suggest
from ..contract.stages import HEAD, StageMap

if TYPE_CHECKING:
    from ..contract.family import Family
    from .plan import CheckpointOrder, LoadPlan

__all__ = ["StageFeatures", "Step", "sequential_steps", "resolve_out_stages", "cut_features", "check_features",
           "FeatureCut"]

Step = tuple[str, Sequence[str | nn.Module]]
"""One stage of the forward order: ``(stage name, (module path or parameterless module, ...))``."""


def resolve_out_stages(smap: StageMap, out_stages: str | int | Sequence[str | int] | None) -> tuple[str, ...]:
    """Stage names for ``out_stages``: names, a group, or indices (timm's ``out_indices``); None = all.

    The order is the one given (outputs come back in that order); duplicates are refused.
    """
    names = smap.names
    if out_stages is None:
        return names
    items: Sequence[str | int] = [out_stages] if isinstance(out_stages, (str, int)) else list(out_stages)
    chosen: list[str] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise InvalidArgumentError(f"out_stages={out_stages!r}: give stage names or indices. {smap.describe()}")
        if isinstance(item, int):
            if not -len(names) <= item < len(names):
                raise InvalidArgumentError(
                    f"out_stages={out_stages!r}: index {item} is out of range for {len(names)} stages. "
                    f"{smap.describe()}")
            chosen.append(names[item])
        elif item in names:
            chosen.append(item)
        elif item in smap.groups:
            chosen.extend(smap.groups[item])
        else:
            raise InvalidArgumentError(
                f"out_stages={out_stages!r}: {item!r} is not a stage of this model."
                f"{suggest(item, [*names, *smap.groups])} {smap.describe()}")
    if not chosen:
        raise InvalidArgumentError(f"out_stages={out_stages!r} names no stage. {smap.describe()}")
    dupes = sorted({n for n in chosen if chosen.count(n) > 1})
    if dupes:
        raise InvalidArgumentError(f"out_stages={out_stages!r} names {', '.join(dupes)} twice; name each stage once")
    return tuple(chosen)


def _is_container(module: nn.Module) -> bool:
    return isinstance(module, (nn.Sequential, nn.ModuleList))


def _parent(path: str) -> str:
    return path.rpartition(".")[0]


def sequential_steps(
    model: nn.Module,
    smap: StageMap,
    family: str = "?",
    *,
    upto: str | None = None,
    after: Mapping[str, Sequence[nn.Module]] | None = None,
) -> list[Step]:
    """The forward order of ``model``'s stages through ``upto`` (default: all), read from its modules.

    Valid when the forward runs the model's children in registration order (ResNet,
    MobileNet, ConvNeXt, EfficientNet), descending into ``Sequential``/``ModuleList``
    containers that hold stages. Modules between two stages that sit next to the earlier
    stage (ResNet's ReLU and max-pool after ``bn1``) end it; the rest (a pooling outside the
    container) start the next one; modules after the last stage belong to the head.
    ``after`` adds parameterless modules the forward applies as functions, e.g.
    ``after={"avgpool": [nn.Flatten(1)]}`` for AlexNet and MobileNet v3. Only the stages
    through ``upto`` must be readable this way; a ``PluginError`` says why one is not.
    """
    wanted = list(smap.names[: smap.names.index(upto) + 1]) if upto else list(smap.names)
    prefixes = [p for s in smap.stages for p in s.prefixes]
    hint = (f"family {family!r} must declare Family.features (the forward order of its stages) for a cut "
            f"after {wanted[-1]!r}")
    modules = dict(model.named_modules())
    problem = ""
    order: list[tuple[str | None, str]] = []

    def walk(path: str, module: nn.Module) -> bool:
        """Append (stage or None, path) in registration order; False where the order becomes unknown."""
        nonlocal problem
        for name, child in module.named_children():
            cpath = f"{path}.{name}" if path else name
            inner = [p for p in prefixes if p.startswith(cpath + ".")]
            owner = smap.stage_of(cpath)
            if inner and (owner is not None or not _is_container(child)):
                problem = (f"{cpath!r} ({type(child).__name__}) holds the stage modules {inner}, and the order in "
                           "which it runs them is unknown")
                return False
            if inner:
                if not walk(cpath, child):
                    return False
            else:
                order.append((owner, cpath))
        return True

    walk("", model)
    steps: list[tuple[str, list[str | nn.Module]]] = []
    gap: list[str] = []  # modules of no stage since the last stage module
    for owner, path in order:
        if owner == HEAD:
            break
        if owner is None:
            gap.append(path)
            continue
        if steps and steps[-1][0] == owner:
            steps[-1][1].extend([*gap, path])
        elif any(s == owner for s, _ in steps):
            problem = problem or f"stage {owner!r} is split around other modules"
            break
        else:
            split = 0
            if steps:
                home = _parent(str(steps[-1][1][-1]))
                while split < len(gap) and _parent(gap[split]) == home:
                    split += 1
                steps[-1][1].extend(gap[:split])
            steps.append((owner, [*gap[split:], path]))
        gap = []
    found = [s for s, _ in steps]
    stray = [p for name in wanted for p in smap.stage(name).prefixes if p not in modules]
    if stray:  # a parameter (a ViT's cls_token) is used by code in forward, not by a module we could run
        problem = f"the stage prefixes {stray} are not modules"
    if stray or found[: len(wanted)] != wanted:
        reason = problem or f"its modules are registered in the stage order {found}, not {list(smap.names)}"
        raise PluginError(f"cannot read the forward order of {type(model).__name__}: {reason}; {hint}")
    steps = steps[: len(wanted)]
    for anchor, extra in (after or {}).items():
        hits = [items for _, items in steps if anchor in items]
        if hits:
            at = hits[0].index(anchor) + 1
            hits[0][at:at] = list(extra)
    return [(s, tuple(p)) for s, p in steps]


def _holder_for(original: nn.Module) -> nn.Module:
    return nn.Sequential() if isinstance(original, nn.Sequential) else nn.Module()


class StageFeatures(nn.Module):
    """A backbone cut after its last requested stage; ``forward`` returns the requested outputs.

    Built from a full model and its forward order (``steps``): the modules of the kept stages
    are re-registered at their original paths (so state-dict keys do not change), intermediate
    containers become holders, and everything after the cut is dropped. ``forward(x)`` returns
    a tuple in the order of ``out_stages`` (``dict(zip(m.out_stages, m(x)))`` names them).
    """

    def __init__(self, model: nn.Module, steps: Sequence[Step], out_stages: Sequence[str]) -> None:
        super().__init__()
        order = [s for s, _ in steps]
        unknown = [s for s in out_stages if s not in order]
        if unknown or not out_stages:
            raise InvalidArgumentError(f"out_stages {list(out_stages)} must name some of the stages {order}")
        last = max(order.index(s) for s in out_stages)
        self.out_stages: tuple[str, ...] = tuple(out_stages)
        self._steps: list[tuple[str, tuple[str, ...]]] = []
        for stage, items in steps[: last + 1]:
            paths: list[str] = []
            for item in items:
                if isinstance(item, str):
                    self._adopt(model, item)
                    paths.append(item)
                else:  # a parameterless module the family adds to the forward (AlexNet's flatten)
                    if any(True for _ in item.parameters()) or any(True for _ in item.buffers()):
                        raise PluginError(
                            f"a module in the forward order of stage {stage!r} holds tensors but has no path in the "
                            "model; name it by its path instead")
                    if "_extra" not in self._modules:
                        self._extra = nn.Module()
                    name = str(len(self._extra._modules))
                    self._extra.add_module(name, item)
                    paths.append(f"_extra.{name}")
            self._steps.append((stage, tuple(paths)))
        self._check_disjoint()

    def _adopt(self, model: nn.Module, path: str) -> None:
        parts = path.split(".")
        new: nn.Module = self
        old = model
        for part in parts[:-1]:
            old = old.get_submodule(part)
            child = new._modules.get(part)
            if child is None:
                child = _holder_for(old)
                new.add_module(part, child)
            new = child
        new.add_module(parts[-1], old.get_submodule(parts[-1]))

    def _check_disjoint(self) -> None:
        paths = [p for _, ps in self._steps for p in ps]
        for p in paths:
            if paths.count(p) > 1 or any(q.startswith(p + ".") for q in paths):
                raise PluginError(f"the forward order runs {p!r} twice or with modules inside it; list each once")

    @property
    def stage_names(self) -> tuple[str, ...]:
        """Every stage this module computes, input to output (the last is the cut)."""
        return tuple(s for s, _ in self._steps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs: dict[str, torch.Tensor] = {}
        for stage, paths in self._steps:
            for path in paths:
                x = self.get_submodule(path)(x)
            outputs[stage] = x
        return tuple(outputs[s] for s in self.out_stages)

    def extra_repr(self) -> str:
        return f"out_stages={self.out_stages}"


@dataclass
class FeatureCut:
    """A cut backbone and what it needs for loading: the full model's keys and what was dropped."""

    module: nn.Module
    stages: StageMap
    """The stage map of the cut backbone: the kept stages, no head."""
    out_stages: tuple[str, ...]
    full_shapes: dict[str, tuple[int, ...]]
    beyond: list[str]
    """State-dict keys of the full model that the cut drops (later stages, the head)."""

    def plan(self, tensors: Mapping[str, torch.Tensor], rules: Sequence[Any], skip: Sequence[str] = (),
             order: CheckpointOrder = "auto") -> LoadPlan:
        """Plan against the *full* model, so checkpoint tensors beyond the cut are reported as
        skipped (with the model key they would have filled), never unexpected or an error;
        coverage counts only the kept parameters."""
        from .plan import make_plan

        params = [n for n, _ in self.module.named_parameters()]
        return make_plan({k: tuple(t.shape) for k, t in tensors.items()}, self.full_shapes, parameters=params,
                         rules=rules, head="", skip=[*skip, *self.beyond], checkpoint_order=order)


def _family_steps(family: Family, model: nn.Module, smap: StageMap, out_stages: tuple[str, ...]) -> Any:
    if family.features is None:
        last = max(out_stages, key=smap.names.index)
        return sequential_steps(model, smap, family.name, upto=last)
    hook: Callable[..., Any] = family.features
    return hook(model, out_stages)


def cut_features(
    family: Family,
    model: nn.Module,
    smap: StageMap,
    out_stages: str | int | Sequence[str | int] | None,
) -> FeatureCut:
    """Cut ``model`` (full, usually still on ``meta``) after the last of ``out_stages``."""
    wanted = resolve_out_stages(smap, out_stages)
    full_shapes = {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items()}
    made = _family_steps(family, model, smap, wanted)
    module = made if isinstance(made, nn.Module) else StageFeatures(model, list(made), wanted)
    kept = set(module.state_dict(keep_vars=True))
    foreign = sorted(kept - set(full_shapes))
    if foreign:
        raise PluginError(
            f"family {family.name!r} cut a backbone whose tensors {foreign[:4]} are not the full model's; the cut "
            "module must keep the model's module paths so checkpoint keys still apply")
    last = max(smap.names.index(s) for s in wanted)
    kept_stages = set(smap.names[: last + 1])
    lost = [k for k in full_shapes if smap.stage_of(k) in kept_stages and k not in kept]
    if lost:
        raise PluginError(
            f"the cut backbone of family {family.name!r} leaves out tensors of the stages it keeps ({lost[:4]}), so "
            "it would not compute what the full model computes; the family must declare Family.features")
    return FeatureCut(module=module, stages=smap.truncated(smap.names[last]), out_stages=wanted,
                      full_shapes=full_shapes, beyond=[k for k in full_shapes if k not in kept])


def check_features(family: Family, arch: str, *, out_stages: Sequence[str | int] | None = None,
                   input_size: tuple[int, int, int] | None = None, atol: float = 0.0,
                   **build_kwargs: Any) -> dict[str, float]:
    """Check that a family's cut backbone computes what its full model computes.

    Builds ``arch`` with random weights, cuts it after ``out_stages`` (default: keeping every
    stage), and compares each stage's
    output with the full model's: the input its next stage's first module receives, or for the
    last stage the output of its last module. Returns the largest absolute difference per
    compared stage; raises ``AssertionError`` above ``atol``. Call it from a plugin's tests.
    """
    torch.manual_seed(0)
    model = family.build(arch, num_classes=family.default_num_classes, **build_kwargs).eval()
    smap = family.stage_map(model)
    cut = cut_features(family, model, smap, out_stages)
    steps = getattr(cut.module, "_steps", None)
    if steps is None:  # the family built its own module: compare what can be named
        raise AssertionError(f"family {family.name!r} returns its own features module; check it in its own tests")
    x = torch.randn(2, *(input_size or family.data.input_size))
    with torch.no_grad():
        got = dict(zip(cut.out_stages, cut.module(x)))
    expected: dict[str, torch.Tensor] = {}
    handles = []

    def keep(stage: str, value: torch.Tensor) -> None:
        expected.setdefault(stage, value.detach().clone())

    for i, (stage, paths) in enumerate(steps):
        if i + 1 < len(steps):
            first = steps[i + 1][1][0]
            if first.startswith("_extra."):
                continue  # the next stage starts with an added module (a flatten): checked through it
            handles.append(model.get_submodule(first).register_forward_pre_hook(
                lambda _m, args, stage=stage: keep(stage, args[0])))
        elif not paths[-1].startswith("_extra."):
            handles.append(model.get_submodule(paths[-1]).register_forward_hook(
                lambda _m, _a, out, stage=stage: keep(stage, out)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    shapes = {s: (tuple(got[s].shape), tuple(expected[s].shape)) for s in cut.out_stages if s in expected}
    wrong = {s: v for s, v in shapes.items() if v[0] != v[1]}
    assert not wrong, f"family {family.name!r} ({arch}): stage output shapes (cut, full) differ: {wrong}"
    diffs = {s: float((got[s] - expected[s]).abs().max()) for s in cut.out_stages if s in expected}
    bad = {s: d for s, d in diffs.items() if d > atol}
    assert not bad, f"family {family.name!r} ({arch}): the cut backbone differs from the full model at {bad}"
    return diffs

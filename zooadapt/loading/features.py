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

Users arrive with timm's habits, so the cut also speaks timm's language for its outputs:

* ``feature_info``: every cut carries a ``FeatureInfo`` (``channels()``, ``reduction()``,
  ``module_name()``, ``get_dicts()``), describing the outputs in their order: timm's own class
  for a timm model (the family's ``Family.feature_info``), zooadapt's (``feature_info``) for others.
* ``out_indices``: positions among the model's *feature maps*, where ``out_stages`` indices are
  positions in the stage map (ConvNeXt's stage map starts with its stem, timm's feature maps do
  not). A timm model's feature maps are timm's (the timm plugin names them: a ``features`` hook
  may carry ``feature_maps(model, smap)``); another family's are its stages whose output is a
  spatial map, in stage order, found by running the model on ``meta``. A map that ends no stage
  is served where the hook also carries ``by_index`` (the family's own cut, as timm's
  ``FeatureGetterNet``), named ``feature<i>``; ``default_maps`` says which maps
  ``features_only=True`` means (timm's default ``out_indices``).

``feature_info`` lists the feature maps, with the outputs' positions as ``out_indices``, exactly
as timm's does whenever every output is one of them (so ``out_stages=("stages.1", "stages.3")``
and ``out_indices=(1, 3)`` describe ConvNeXt alike, and as timm does). An output that is no
feature map (ConvNeXt's stem or pooled ``final``, AlexNet's ``fc6``) cannot be placed in that
list, so then it lists just the outputs, in stage order. A pooled output's ``reduction`` is the
one of the map it pooled (the last before it), which keeps timm's rule that reductions never
decrease.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from ..contract.errors import InvalidArgumentError, PluginError, ZooadaptError, suggest
from ..contract.stages import HEAD, StageMap
from .request import OutIndices

if TYPE_CHECKING:
    from ..contract.family import Family
    from .plan import CheckpointOrder, LoadPlan

__all__ = ["StageFeatures", "Step", "FeatureMap", "sequential_steps", "resolve_out_stages", "resolve_out_indices",
           "cut_features", "check_features", "FeatureCut", "meta_copy", "map_indices", "MAP_NAME"]

Step = tuple[str, Sequence[str | nn.Module]]
"""One stage of the forward order: ``(stage name, (module path or parameterless module, ...))``."""

FeatureMap = tuple["str | None", dict[str, Any]]
"""One feature map of a model, in timm's order: the stage whose output it is (None when it is
the output of a module inside a stage, which no cut returns) and timm's info dict
(``module``, ``num_chs``, ``reduction``)."""


def resolve_out_stages(smap: StageMap, out_stages: str | int | Sequence[str | int] | None) -> tuple[str, ...]:
    """Stage names for ``out_stages``: names, a group, or indices (timm's ``out_indices``); None = all.

    The order is the one given (outputs come back in that order); duplicates are refused.
    """
    names = smap.names
    if out_stages is None:
        return names
    if isinstance(out_stages, (str, int)):
        items: Sequence[object] = [out_stages]
    elif isinstance(out_stages, Sequence) and not isinstance(out_stages, (bytes, bytearray)):
        items = list(out_stages)
    else:  # load() refuses these in make_request; a direct caller gets the same words, not a bare TypeError
        raise InvalidArgumentError(f"features_only={out_stages!r}: {type(out_stages).__name__} is not accepted; "
                                   f"give stage names or indices, one or a list or tuple of them. {smap.describe()}")
    chosen: list[str] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise InvalidArgumentError(f"features_only={out_stages!r}: give stage names or indices. {smap.describe()}")
        if isinstance(item, int):
            if not -len(names) <= item < len(names):
                raise InvalidArgumentError(
                    f"features_only={out_stages!r}: index {item} is out of range for {len(names)} stages. "
                    f"{smap.describe()}")
            chosen.append(names[item])
        elif item in names:
            chosen.append(item)
        elif item in smap.groups:
            chosen.extend(smap.groups[item])
        else:
            raise InvalidArgumentError(
                f"features_only={out_stages!r}: {item!r} is not a stage of this model."
                f"{suggest(item, [*names, *smap.groups])} {smap.describe()}")
    if not chosen:
        raise InvalidArgumentError(f"features_only={out_stages!r} names no stage. {smap.describe()}")
    dupes = sorted({n for n in chosen if chosen.count(n) > 1})
    if dupes:
        raise InvalidArgumentError(f"features_only={out_stages!r} names {', '.join(dupes)} twice; name each stage once")
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


def resolve_out_indices(smap: StageMap, selection: OutIndices, maps: Sequence[FeatureMap]) -> tuple[str, ...]:
    """Stage names for timm's ``out_indices`` among ``maps`` (the model's feature maps), in
    feature order as timm returns them; an int n is the last n; negative indices count from the end."""
    given = selection.indices
    chosen: list[str] = []
    for i in map_indices(smap, selection, maps):
        stage, info = maps[i]
        if stage is None:
            offered = [j for j, (s, _) in enumerate(maps) if s is not None]
            if not offered:
                raise InvalidArgumentError(
                    f"out_indices={given!r}: none of this model's feature maps ends a stage (each is inside one, or "
                    f"one of several maps of one module), and zooadapt's cuts end at stages, so timm's indices "
                    f"cannot be served here; name stages with features_only=[stages], or use timm's own "
                    f"forward_intermediates(). Feature maps: {_describe_maps(maps)}. {smap.describe()}")
            raise InvalidArgumentError(
                f"out_indices={given!r}: feature map {i} is the output of {info.get('module')!r}, inside a stage of "
                f"this model, and zooadapt's cuts end at stages; choose among out_indices {offered}, or name stages "
                f"with features_only=[stages]. Feature maps: {_describe_maps(maps)}. {smap.describe()}")
        chosen.append(stage)
    return tuple(chosen)


def map_indices(smap: StageMap, selection: OutIndices, maps: Sequence[FeatureMap]) -> list[int]:
    """timm's ``out_indices`` as positions among ``maps``, ascending (timm's output order); checked."""
    given = selection.indices
    if not maps:
        raise InvalidArgumentError(
            f"out_indices={given!r}: zooadapt cannot tell the feature maps of this model, so timm's indices mean "
            f"nothing here; name the outputs with features_only=[stages] instead. {smap.describe()}")
    count = len(maps)
    if isinstance(given, int):
        if given > count:
            raise InvalidArgumentError(f"out_indices={given}: the model has {count} feature maps, so at most the last "
                                       f"{count}: {_describe_maps(maps)}")
        taken = list(range(count - given, count))
    else:
        taken = []
        for i in given:
            if not -count <= i < count:
                raise InvalidArgumentError(f"out_indices={given!r}: index {i} is out of range for {count} feature "
                                           f"maps: {_describe_maps(maps)}")
            taken.append(i % count)
    dupes = sorted({i for i in taken if taken.count(i) > 1})
    if dupes:
        raise InvalidArgumentError(f"out_indices={given!r} names feature map(s) {dupes} twice; name each once")
    return sorted(taken)


def _describe_maps(maps: Sequence[FeatureMap]) -> str:
    return ", ".join(
        f"{i}: {stage or 'inside a stage: ' + str(info.get('module'))} ({info.get('num_chs')} channels, "
        f"stride {info.get('reduction')})" for i, (stage, info) in enumerate(maps))


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
    out_stages: str | int | Sequence[str | int] | OutIndices | None,
) -> FeatureCut:
    """Cut ``model`` (full, usually still on ``meta``) after the last of ``out_stages`` (names,
    indices into the stage map, or timm's ``OutIndices``); the cut carries ``feature_info``."""
    input_size = _input_size(family, model)
    maps, known = _feature_maps(family, model, smap, input_size)
    ending = tuple(i for i, (stage, _) in enumerate(maps) if stage is not None)
    by_index: Callable[..., nn.Module] | None = getattr(family.features, "by_index", None)
    if out_stages is None and getattr(family.features, "feature_maps", None) is not None:
        # a family that names its feature maps (timm) means by features_only=True what its own
        # features_only returns (``default_maps``: timm's out_indices, the last 3 blocks of a ViT);
        # else every map a stage ends with, or every map where none does and the family cuts by map
        defaults: Callable[..., tuple[int, ...] | None] | None = getattr(family.features, "default_maps", None)
        chosen = defaults(model) if defaults is not None and by_index is not None else None
        if chosen and all(0 <= i < len(maps) for i in chosen):
            out_stages = OutIndices(tuple(chosen))  # the family's own default (timm's out_indices)
        elif ending:
            out_stages = OutIndices(ending)
        elif maps and by_index is not None:
            out_stages = OutIndices(tuple(range(len(maps))))
    if by_index is not None and maps:
        indices = _index_cut_indices(smap, out_stages, maps)
        if indices is not None:
            return _cut_by_index(family, by_index, model, smap, indices, maps)
    if isinstance(out_stages, OutIndices):
        wanted = resolve_out_indices(smap, out_stages, maps)
    else:
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
    info = _feature_info(family, module, smap, wanted, maps, known, input_size)
    if info is not None:
        module.feature_info = info
    return FeatureCut(module=module, stages=smap.truncated(smap.names[last]), out_stages=wanted,
                      full_shapes=full_shapes, beyond=[k for k in full_shapes if k not in kept])


MAP_NAME = "feature{}"
"""The name of an output that is feature map i of a model where that map ends no stage: it is not
a stage, so ``features_only=["feature5"]`` names it back (a saved cut reloads by it)."""


def _map_index(item: object, count: int) -> int | None:
    text = item if isinstance(item, str) else ""
    if text.startswith("feature") and text[7:].isdigit() and int(text[7:]) < count:
        return int(text[7:])
    return None


def _index_cut_indices(smap: StageMap, out_stages: object, maps: Sequence[FeatureMap]) -> list[int] | None:
    """The feature maps to cut by index, where the family cuts by map (``by_index``): timm's
    ``out_indices`` when one of the chosen maps ends no stage, or names that include a
    ``feature<i>``; None where the cut at stage ends serves the request."""
    if isinstance(out_stages, OutIndices):
        taken = map_indices(smap, out_stages, maps)
        return taken if any(maps[i][0] is None for i in taken) else None
    items = [out_stages] if isinstance(out_stages, str) else list(out_stages) if isinstance(
        out_stages, (list, tuple)) else []
    if not any(_map_index(i, len(maps)) is not None and i not in smap.names for i in items):
        return None
    of_stage = {stage: i for i, (stage, _) in enumerate(maps) if stage is not None}
    taken = []
    for item in items:
        index = _map_index(item, len(maps)) if item not in smap.names else of_stage.get(item)
        if index is None:
            raise InvalidArgumentError(
                f"features_only={out_stages!r}: {item!r} is no feature map of this model, and names of feature maps "
                f"(feature<i>) cannot be mixed with stages that are none. Feature maps: {_describe_maps(maps)}")
        taken.append(index)
    if len(set(taken)) < len(taken):
        raise InvalidArgumentError(f"features_only={out_stages!r} names a feature map twice; name each once")
    return sorted(taken)


def _cut_by_index(family: Family, by_index: Callable[..., nn.Module], model: nn.Module, smap: StageMap,
                  indices: list[int], maps: Sequence[FeatureMap]) -> FeatureCut:
    """The family's cut keeping feature maps ``indices`` (timm: ``prune_intermediate_layers`` and
    ``forward_intermediates``, as timm's ``FeatureGetterNet``). Outputs are named by the stage a map
    ends, else ``feature<i>``; the cut's stage map is the modules of each stage it keeps
    (``_kept_stages``)."""
    full_shapes = {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items()}
    names = tuple(maps[i][0] or MAP_NAME.format(i) for i in indices)
    module = by_index(model, indices, names)
    kept = set(module.state_dict(keep_vars=True))
    foreign = sorted(kept - set(full_shapes))
    if foreign:
        raise PluginError(f"family {family.name!r} cut a backbone whose tensors {foreign[:4]} are not the full model's")
    stages = _kept_stages(family, smap, full_shapes, kept, indices)
    module.feature_info = _make_info(family, [copy.deepcopy(info) for _, info in maps], tuple(indices))
    return FeatureCut(module=module, stages=stages, out_stages=names, full_shapes=full_shapes,
                      beyond=[k for k in full_shapes if k not in kept])


def _kept_stages(family: Family, smap: StageMap, full_shapes: Mapping[str, Any], kept: set[str],
                 indices: list[int]) -> StageMap:
    """The stage map of a cut that kept the tensors ``kept``: each stage with the modules the cut
    keeps (HRNet's maps come from ``incre_modules``, one module of its stage ``final``, whose
    downsampling and final layer the cut drops). A module whose own tensors the cut keeps in part
    could not be frozen as the stage says, and stages kept must be the first ones: either is refused."""
    from ..contract.stages import Stage

    def under(key: str, prefix: str) -> bool:
        return key == prefix or key.startswith(prefix + ".")

    def held_prefixes(prefix: str, stage: str) -> list[str]:
        """``prefix`` if the cut keeps all of it, else the modules inside it that it keeps whole
        (SelecSLS's maps end inside its conv ``head``: ``head.0``, ``head.1`` stay, the rest goes)."""
        keys = [k for k in full_shapes if under(k, prefix)]
        held = [k for k in keys if k in kept]
        if not held or len(held) == len(keys):
            return [prefix] if held else []
        children = list(dict.fromkeys(prefix + "." + k[len(prefix) + 1:].split(".")[0] for k in keys if k != prefix))
        if prefix in keys or not children:
            raise PluginError(
                f"the cut of family {family.name!r} for feature maps {indices} keeps part of {prefix!r} "
                f"(stage {stage!r}: {len(held)} of {len(keys)} tensors), which could not be frozen as it is")
        return [p for child in children for p in held_prefixes(child, stage)]

    out: list[Stage] = []
    for stage in smap.stages:
        prefixes = [p for prefix in stage.prefixes for p in held_prefixes(prefix, stage.name)]
        if prefixes:
            out.append(Stage(stage.name, tuple(prefixes)))
    names = [st.name for st in out]
    if not out or names != list(smap.names[: len(names)]):
        raise PluginError(f"the cut of family {family.name!r} for feature maps {indices} keeps the stages {names}, "
                          f"not the first ones of {list(smap.names)}")
    groups = {g: m for g, m in smap.groups.items() if set(m) <= set(names)}
    return StageMap(tuple(out), head="", groups=groups)


# -- feature_info: the outputs described as timm describes them -------------------------------------

_Known = dict[str, tuple[dict[str, Any], bool]]
"""stage -> (timm-style info dict, whether its output is a spatial map)."""

_PROBE_STEP = 64
"""Probes run at the input size and this much larger: a stride s that divides it shows as exactly
``_PROBE_STEP / s`` more rows, where one size alone rounds (AlexNet: 224 -> 13 rows reads as 17, not 16)."""


def _input_size(family: Family, model: nn.Module) -> tuple[int, int, int]:
    """The input the probes run at: the model's pretrained config where it has one (timm's, whose
    ViTs take only their own size), else the family's."""
    cfg = getattr(model, "pretrained_cfg", None)
    size = cfg.get("input_size") if isinstance(cfg, Mapping) else None
    if isinstance(size, (tuple, list)) and len(size) == 3 and all(isinstance(v, int) for v in size):
        return (size[0], size[1], size[2])
    return tuple(family.data.input_size)  # type: ignore[return-value]


def meta_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose tensors are on ``meta``: shapes without allocating or touching
    the original (a family's ``features`` hook may rebuild what it is given)."""
    memo: dict[int, Any] = {}
    for t in itertools.chain(module.parameters(), module.buffers()):
        empty = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(empty, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else empty
    return copy.deepcopy(module, memo)


def _run_on_meta(module: nn.Module, input_size: Sequence[int]) -> list[tuple[int, ...]]:
    module.eval()
    with torch.no_grad():
        out = module(torch.empty(1, *input_size, device="meta"))
    outputs = out if isinstance(out, (tuple, list)) else (out,)
    return [tuple(o.shape) for o in outputs]


def _measure(module: nn.Module, input_size: tuple[int, int, int]) -> list[tuple[int, int | None]]:
    """(channels, reduction) of each output of ``module`` (already on ``meta``); reduction None for an
    output that is no spatial map (pooled, flattened, or not growing with the input)."""
    first = _run_on_meta(module, input_size)
    c, h, w = input_size
    try:
        second: list[tuple[int, ...]] | None = _run_on_meta(module, (c, h + _PROBE_STEP, w + _PROBE_STEP))
    except Exception:  # noqa: BLE001  (a model that takes one input size only: a ViT without dynamic size)
        second = None
    out: list[tuple[int, int | None]] = []
    for i, shape in enumerate(first):
        if len(shape) != 4:
            out.append((shape[-1], None))
            continue
        other = second[i] if second is not None and len(second[i]) == 4 else None
        # channels last (torchvision's Swin: N, H, W, C) where the rows are what grows with the input
        last = other is not None and other[1] != shape[1] and other[3] == shape[3]
        chs, axis = (shape[3], 1) if last else (shape[1], 2)
        rows = shape[axis]
        grown = other[axis] - rows if other is not None else None
        if grown == 0:
            out.append((chs, None))
        elif grown is not None and _PROBE_STEP % grown == 0:
            out.append((chs, _PROBE_STEP // grown))
        else:
            out.append((chs, max(1, round(h / rows))))
    return out


def _output_module(module: nn.Module, smap: StageMap, stage: str) -> str:
    """The module whose output is ``stage``'s: the last module its step runs, else its last prefix."""
    for name, paths in getattr(module, "_steps", ()):
        if name == stage:
            real = [p for p in paths if not p.startswith("_extra.")]
            if real:
                return real[-1]
    return smap.stage(stage).prefixes[-1]


def _probe_stages(family: Family, model: nn.Module, smap: StageMap, input_size: tuple[int, int, int]) -> _Known:
    """Every stage's output, from the full model cut after its last stage and run on a ``meta`` copy."""
    replica = meta_copy(model)
    made = _family_steps(family, replica, smap, smap.names)
    module = made if isinstance(made, nn.Module) else StageFeatures(replica, list(made), smap.names)
    order = list(getattr(module, "out_stages", smap.names))
    return {stage: ({"module": _output_module(module, smap, stage), "num_chs": chs, "reduction": red}, red is not None)
            for stage, (chs, red) in zip(order, _measure(module, input_size))}


def _feature_maps(family: Family, model: nn.Module, smap: StageMap,
                  input_size: tuple[int, int, int]) -> tuple[list[FeatureMap], _Known]:
    """The model's feature maps (what ``out_indices`` counts) and what is known of each stage's output."""
    named: Callable[..., Any] | None = getattr(family.features, "feature_maps", None)
    if named is not None:  # the family names them (timm: its own feature_info)
        try:
            return [(stage, dict(info)) for stage, info in named(model, smap)], {}
        except ZooadaptError:
            return [], {}
    try:
        known = _probe_stages(family, model, smap, input_size)
    except Exception:  # noqa: BLE001  (a stage that cannot be run on its own or on meta: no maps, said when asked)
        return [], {}
    return [(s, info) for s, (info, spatial) in known.items() if spatial], known


def _feature_info(family: Family, module: nn.Module, smap: StageMap, wanted: tuple[str, ...],
                  maps: Sequence[FeatureMap], known: _Known, input_size: tuple[int, int, int]) -> Any:
    """The ``feature_info`` of the outputs ``wanted`` of the cut ``module`` (see the module docstring)."""
    index = {stage: i for i, (stage, _) in enumerate(maps) if stage is not None}
    if maps and all(s in index for s in wanted):
        return _make_info(family, [copy.deepcopy(info) for _, info in maps], tuple(index[s] for s in wanted))
    known = {**{s: (dict(info), True) for s, info in maps if s is not None}, **known}
    missing = [s for s in wanted if s not in known]
    if missing:
        try:
            measured = _measure(meta_copy(module), input_size)
        except Exception as exc:  # noqa: BLE001  (a forward that cannot run on meta: the cut still works)
            warnings.warn(f"features_only: could not run {type(module).__name__} on meta to describe its outputs "
                          f"({type(exc).__name__}: {exc}); it has no feature_info", UserWarning, stacklevel=4)
            return None
        for stage, (chs, red) in zip(wanted, measured):
            if stage in missing:
                known[stage] = ({"module": _output_module(module, smap, stage), "num_chs": chs, "reduction": red},
                                red is not None)
    order = [s for s in smap.names if s in wanted]
    entries = []
    stride: int | None = None  # of the last spatial map so far
    for stage in smap.names:
        info, spatial = known.get(stage, ({}, False))
        if spatial:
            stride = info["reduction"]
        if stage in wanted:
            entry = copy.deepcopy(info)
            entry.pop("index", None)
            if not spatial:  # pooled before any map: it pooled the input itself
                entry["reduction"] = stride if stride is not None else input_size[1]
            entries.append(entry)
    return _make_info(family, entries, tuple(order.index(s) for s in wanted))


def _make_info(family: Family, entries: list[dict[str, Any]], out_indices: tuple[int, ...]) -> Any:
    """The family's ``FeatureInfo`` (timm's, for timm models), else zooadapt's."""
    if family.feature_info is not None:
        return family.feature_info(entries, out_indices)
    from .feature_info import FeatureInfo

    return FeatureInfo(entries, out_indices)


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

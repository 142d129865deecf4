"""``features_only`` for timm models: the backbone cut after its last requested stage.

Models whose forward runs their stages in order are cut by zooadapt's generic machinery
(``sequential_steps``); the others (ViT/DeiT with a class token, Swin, a ConvNeXt asked for its
``final`` stage) are cut by timm itself, ``prune_intermediate_layers`` on the model instance,
and answer with timm's ``forward_intermediates``.

``feature_maps`` tells zooadapt which stage's output each of timm's feature maps is, so that
``out_indices=`` means what it means to timm and ``feature_info`` reports timm's own values;
``feature_info`` (the family's ``Family.feature_info``) makes it timm's own ``FeatureInfo`` class.
"""

from __future__ import annotations

import contextlib
import json
from functools import cache
from typing import TYPE_CHECKING, Any

from zooadapt.plugin_api import PluginError, ProcessCache, StageMap, cache_dir, sequential_steps

from .timm_names import _write_atomically
from .timm_stages import stages

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

__all__ = ["features", "feature_maps", "feature_info"]


def features(model: nn.Module, out_stages: tuple[str, ...]) -> Any:
    """``Family.features``: the cut of ``model`` (usually on ``meta``) for ``out_stages``.

    A model whose forward runs its stages in order gets zooadapt's generic steps (any stage,
    the stem included). Otherwise timm cuts it: ``prune_intermediate_layers`` truncates the
    instance in place, so module paths (and checkpoint keys) stay the full model's, and the
    forward returns ``forward_intermediates``' outputs for the requested stages. A stage's
    output is then timm's intermediate (``NCHW``, prefix tokens dropped, as timm's
    ``features_only``); where timm's grouping puts the final norm into the last block's stage
    (ViT), that stage's output is normed; a ``final`` stage of its own (ConvNeXt's
    ``head.norm``, Swin's ``norm``) returns the pooled pre-logits features the classifier sees.
    """

    smap = stages(model)
    try:  # timm's own features first: they match timm's features_only (Swin's NHWC blocks -> NCHW)
        timm_cut = _intermediate_plan(model, smap, out_stages)
    except PluginError as exc:
        timm_problem = str(exc)
    else:
        return timm_cut.apply(model)
    try:
        return sequential_steps(model, smap, "timm", upto=max(out_stages, key=smap.names.index))
    except PluginError as exc:
        raise PluginError(f"{timm_problem}; and zooadapt cannot cut it as a sequence either: {exc}") from None


def feature_maps(model: nn.Module, smap: StageMap) -> list[tuple[str | None, dict[str, Any]]]:
    """timm's feature maps of ``model`` (its ``feature_info``, in timm's order), each with the stage
    whose output it is: the stage that ends with the feature's module (``_feature_stages``) where
    those stages come in stage order (the stage output is then timm's intermediate; Hiera's maps
    end ``blocks.0``, ``blocks.2``…, the stages between them are no map), else the stage whose
    forward ends with the feature's module; None where the feature is a module inside a stage
    (timm's ResNet ``act1``, before the stem's max-pool) or one of two maps of one module
    (CrossViT's two branches), which no cut at a stage end returns."""
    info = getattr(model, "feature_info", None)
    dicts = [f for f in info if isinstance(f, dict)] if isinstance(info, list) else []
    anchors = [f.get("module") if isinstance(f.get("module"), str) else "" for f in dicts]
    if not dicts or not any(anchors):
        return []
    held = _feature_stages(model, smap, anchors)  # TResNet names its first map's module '': no stage
    if _in_stage_order(smap, held):
        return [(s, dict(f)) for s, f in zip(held, dicts)]
    try:
        steps = sequential_steps(model, smap, "timm")
    except PluginError:
        steps = []
    ends = {str(paths[-1]): stage for stage, paths in steps if paths and isinstance(paths[-1], str)}
    return [(ends.get(str(a)) if anchors.count(a) == 1 else None, dict(f)) for a, f in zip(anchors, dicts)]


def _module_paths(model: nn.Module, anchors: list[str]) -> list[str | None]:
    """Each feature module's path in ``model``: itself, or the one module path that ends with it
    (Gemma 4's ViT names its encoder's ``blocks.N`` as the encoder sees them); None for none."""
    modules = {n for n, _ in model.named_modules()}

    def path(anchor: str) -> str | None:
        if anchor in modules:
            return anchor
        found = [p for p in modules if p.endswith("." + anchor)]
        return found[0] if len(found) == 1 else None

    return [path(a) if a else None for a in anchors]


def _feature_stages(model: nn.Module, smap: StageMap, anchors: list[str],
                    paths: list[str | None] | None = None) -> list[str | None]:
    """The stage ending with each feature module: the stage the module is in when it is one, else
    the last of the stages its parameters are in (CoaT's ``serial_blocks1`` is the stages of its
    two blocks), when that stage holds nothing outside the module; the last feature's stage may
    hold more (the final norm timm applies to it, ``normed``). None where no stage ends there.
    ``paths``: the modules' paths (``_module_paths``), when the caller has them."""
    order = list(smap.names)
    params: list[str] = []  # read only for a feature module that is no stage's (a container of several)
    held: list[str | None] = []
    for i, (anchor, path) in enumerate(zip(anchors, paths or _module_paths(model, anchors))):
        stage = smap.stage_of(path) if path is not None else None
        if path is not None and stage is None:
            params = params or [n for n, _ in model.named_parameters()]
            inside = {smap.stage_of(n) for n in params if n == path or n.startswith(path + ".")}
            if inside and all(s in order for s in inside):
                stage = max(inside, key=lambda s: order.index(str(s)))  # type: ignore[arg-type]
                last = i == len(anchors) - 1
                if not last and not all(p == path or p.startswith(path + ".") for p in smap.stage(str(stage)).prefixes):
                    stage = None
        held.append(stage if stage in order and anchors.count(anchor) == 1 else None)
    return held


def _in_stage_order(smap: StageMap, held: list[str | None]) -> bool:
    order = list(smap.names)
    positions = [order.index(s) if s in order else -1 for s in held]
    return bool(positions) and min(positions) >= 0 and all(a < b for a, b in zip(positions, positions[1:]))


def by_index(model: nn.Module, indices: list[int], names: tuple[str, ...]) -> nn.Module:
    """The cut for timm's feature maps ``indices`` where one of them ends no stage (CrossViT's two
    branches, CoaT's parallel blocks, MViTv2's and Twins' ``block.N``, ResNet's ``act1``): what
    timm's own ``FeatureGetterNet`` does, on the instance so module paths stay the full model's.
    ``prune_intermediate_layers`` keeps what those maps need (no head, no final norm) and the
    forward returns ``forward_intermediates(x, indices, intermediates_only=True)``; ``names``
    name the outputs (``out_stages``)."""
    kind = type(model).__name__
    if not (hasattr(model, "forward_intermediates") and hasattr(model, "prune_intermediate_layers")):
        raise PluginError(
            f"features_only: timm offers no intermediate features for {kind} (no forward_intermediates / "
            "prune_intermediate_layers); load it without features_only=True and use its forward_features()")
    taken = model.prune_intermediate_layers(list(indices), prune_norm=True)  # type: ignore[operator]
    model.__class__ = _by_index_class(type(model))
    model.zooadapt_maps = (tuple(taken if taken is not None else indices), names)  # type: ignore[assignment]
    return model


def default_maps(model: nn.Module) -> tuple[int, ...] | None:
    """The feature maps timm's own ``create_model(arch, features_only=True, **options)`` returns
    for ``model``'s architecture and build options (its ``out_indices``: the last 3 blocks of a
    ViT, of however many it was built with; every map of a CNN, ResNet's ``act1`` included), so that
    zooadapt's ``features_only=True`` means the same; None where timm's own features_only fails.
    Built on ``meta`` once per architecture, options and timm release; options that have no exact
    text (a module passed as ``act_layer``) are not remembered."""
    cfg = getattr(model, "pretrained_cfg", None)
    arch = cfg.get("architecture") if isinstance(cfg, dict) else None
    if not isinstance(arch, str) or not arch:
        return None
    import timm

    # timm records what create_model was given (``_model_args``); the head's size changes no map
    options = {k: v for k, v in getattr(model, "_model_args", {}).items() if k not in _NO_MAP_OPTIONS}
    try:
        key = f"{arch} {json.dumps(options, sort_keys=True)}" if options else arch
    except (TypeError, ValueError):
        return _timm_default_maps(arch, options)
    return _default_maps.get_or_make((key, timm.__version__, str(cache_dir())),
                                     lambda: _remembered_default_maps(key, arch, options, timm.__version__))


_NO_MAP_OPTIONS = frozenset({"num_classes", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay",
                             "checkpoint_path", "features_only", "out_indices", "device", "dtype"})

_default_maps: ProcessCache[tuple[str, str, str], tuple[int, ...] | None] = ProcessCache(
    "timm default out_indices", 256, "the architecture and its build options, timm's version and the cache directory")


def _remembered_default_maps(key: str, arch: str, options: dict[str, Any], version: str) -> tuple[int, ...] | None:
    """``_timm_default_maps``, kept across processes in the plugin's cache directory per timm
    release under ``key`` (the architecture and its options): a first ``features_only=True`` load
    otherwise builds timm's own features model too (30-120 ms). A file that cannot be read or
    written is only not used."""
    path = cache_dir() / f"timm-default-out-indices-{version}.json"
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and key in known:
        value = known[key]
        return tuple(int(i) for i in value) if isinstance(value, list) else None
    found = _timm_default_maps(arch, options)
    with contextlib.suppress(OSError):
        _write_atomically(path, {**(known if isinstance(known, dict) else {}),
                                 key: list(found) if found is not None else None})
    return found


def _timm_default_maps(arch: str, options: dict[str, Any]) -> tuple[int, ...] | None:
    import warnings

    import timm
    import torch

    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            info = timm.create_model(arch, pretrained=False, features_only=True, **options).feature_info
        count = len(info)
        return tuple(sorted(int(i) % count for i in info.out_indices))
    except Exception:  # noqa: BLE001  (timm's own features_only does not build here: zooadapt's default stands)
        return None


features.feature_maps = feature_maps  # type: ignore[attr-defined]  # read by zooadapt's cut (see its docstring)
features.by_index = by_index  # type: ignore[attr-defined]
features.default_maps = default_maps  # type: ignore[attr-defined]


def feature_info(entries: list[dict[str, Any]], out_indices: tuple[int, ...]) -> Any:
    """``Family.feature_info``: timm's own ``FeatureInfo`` of a cut's outputs, as timm's
    ``features_only`` models carry it. timm refuses reductions that decrease; a cut's pooled output
    after a finer map may have them, so then the same object is filled in without timm's check."""
    from timm.models import FeatureInfo

    try:
        return FeatureInfo(entries, out_indices)
    except AssertionError:  # describe the outputs, do not refuse them
        info = FeatureInfo.__new__(FeatureInfo)
        for i, entry in enumerate(entries):
            entry.setdefault("index", i)
        info.info, info.out_indices = entries, out_indices
        return info


class _IntermediatePlan:
    """Which timm feature index (or the final pooled features) answers each requested stage."""

    def __init__(self, out_stages: tuple[str, ...], index_of: dict[str, int], normed: str | None,
                 final: str | None, count: int) -> None:
        self.out_stages = out_stages
        self.count = count  # timm's feature maps (model.feature_info becomes zooadapt's FeatureInfo of the outputs)
        self.index_of = index_of  # stage -> timm feature index, for the requested feature stages
        self.normed = normed if normed in out_stages else None  # the stage that also owns the final norm
        self.final = final if final in out_stages else None  # the stage after the features (pooled)
        self.needs_norm = self.normed is not None or self.final is not None

    def apply(self, model: nn.Module) -> nn.Module:
        if self.final is not None:  # every stage runs; only the classifier goes
            model.reset_classifier(0)  # type: ignore[operator]
        else:
            indices = sorted(self.index_of.values())
            model.prune_intermediate_layers(  # type: ignore[operator]
                indices, prune_norm=not self.needs_norm, prune_head=True)
        model.__class__ = _features_class(type(model))
        model.zooadapt_features = self  # type: ignore[assignment]
        return model


def _intermediate_plan(model: nn.Module, smap: StageMap, out_stages: tuple[str, ...]) -> _IntermediatePlan:
    kind = type(model).__name__
    info = getattr(model, "feature_info", None)
    anchors = [f.get("module") for f in info] if isinstance(info, list) else []
    if not (hasattr(model, "forward_intermediates") and hasattr(model, "prune_intermediate_layers")
            and anchors and all(anchors)):
        raise PluginError(
            f"features_only: timm offers no intermediate features for {kind} (no forward_intermediates / "
            "prune_intermediate_layers with feature_info). Load it without features_only=True and use its "
            "forward_features(), or pick another timm model")
    paths = _module_paths(model, [str(a) for a in anchors])
    held = _feature_stages(model, smap, [str(a) for a in anchors], paths)
    if not _in_stage_order(smap, held):
        raise PluginError(
            f"features_only: timm's feature modules of {kind} ({anchors}) do not each end a stage, in stage order "
            f"({list(smap.names)}), so timm's features cannot be named by stage")
    feature_stages = [str(s) for s in held]
    order = list(smap.names)
    index_of = {s: i for i, s in enumerate(feature_stages)}
    after = order[order.index(feature_stages[-1]) + 1:]
    final = after[0] if len(after) == 1 else None
    offered = [*index_of, *([final] if final else [])]
    refused = [s for s in out_stages if s not in offered]
    if refused or len(after) > 1:
        raise PluginError(
            f"features_only: stage(s) {refused or after} of {kind} are not among the features timm computes "
            f"(forward_intermediates: {offered}); choose features_only=[...] among them")
    # the last feature stage may own more than its feature module (ViT: blocks.11 and the final norm)
    owner = feature_stages[-1]
    last = paths[-1] or str(anchors[-1])
    normed = owner if any(p != last and not p.startswith(last + ".") for p in smap.stage(owner).prefixes) else None
    return _IntermediatePlan(out_stages, {s: index_of[s] for s in out_stages if s in index_of}, normed, final,
                             len(anchors))


class _TimmFeatures:
    """Mixed into a pruned timm model's class: ``forward`` returns the requested stages' outputs."""

    zooadapt_features: _IntermediatePlan

    @property
    def out_stages(self) -> tuple[str, ...]:
        return self.zooadapt_features.out_stages

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        spec = self.zooadapt_features
        run: Any = self.forward_intermediates  # type: ignore[attr-defined]
        got: dict[str, torch.Tensor] = {}
        plain = {s: i for s, i in spec.index_of.items() if s != spec.normed}
        if spec.final is not None:
            indices = sorted(plain.values()) or [spec.count - 1]
            last, inter = run(x, indices=indices, intermediates_only=False)
            got[spec.final] = self.forward_head(last, pre_logits=True)  # type: ignore[attr-defined]
        elif plain:
            inter = run(x, indices=sorted(plain.values()), intermediates_only=True, stop_early=True)
        if plain:
            by_index = dict(zip(sorted(plain.values()), inter))
            got.update({s: by_index[i] for s, i in plain.items()})
        if spec.normed is not None:  # timm applies the norm to the intermediates it returns
            got[spec.normed] = run(x, indices=[spec.index_of[spec.normed]], norm=True, intermediates_only=True)[0]
        return tuple(got[s] for s in spec.out_stages)


@cache
def _features_class(cls: type) -> type:
    """``cls`` with the features forward: the instance keeps every attribute and module path."""
    return type(f"{cls.__name__}Features", (_TimmFeatures, cls), {"__module__": __name__})


class _TimmMaps:
    """Mixed into a pruned timm model's class by ``by_index``: the forward of timm's ``FeatureGetterNet``."""

    zooadapt_maps: tuple[tuple[int, ...], tuple[str, ...]]

    @property
    def out_stages(self) -> tuple[str, ...]:
        return self.zooadapt_maps[1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        run: Any = self.forward_intermediates  # type: ignore[attr-defined]
        return tuple(run(x, indices=list(self.zooadapt_maps[0]), norm=False, output_fmt="NCHW",
                         intermediates_only=True))


@cache
def _by_index_class(cls: type) -> type:
    return type(f"{cls.__name__}Features", (_TimmMaps, cls), {"__module__": __name__})

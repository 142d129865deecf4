"""The one load pipeline: request -> names -> weights -> tensors -> model -> plan -> placement -> report.

``load``, ``load_weights``, ``plan_for``/``inspect`` and the reload of a saved directory are
thin entry points that describe what they want as a ``LoadRequest`` and run the steps below,
each a small function whose output is a plain value. A capability added to a step (a found
wrapper prefix, a foreign layout, EMA weights, a device) therefore works in every entry point
and in the CLI at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..contract.errors import IncompatibleCheckpointError, InvalidArgumentError, PluginError, ZooadaptError
from ..contract.family import Family, ModelEntry, WeightSource
from ..contract.stages import StageMap
from ..host.registry import get_registry
from .adapt import PlanTarget, adapt
from .plan import CheckpointOrder, KeyMapping, LoadPlan
from .report import LoadReport, ModelInfo
from .request import LoadRequest

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from ..weights.fetched import FetchedWeights
    from .features import FeatureCut
    from .layout_build import LayoutBuild
    from .meta_build import ModelIndex

__all__ = ["Checkpoint", "resolve", "resolve_weights", "fetch_weights", "read_checkpoint_for", "plan_checkpoint",
           "run_load", "run_load_weights", "run_plan"]

log = logging.getLogger("zooadapt")

Shape = tuple[int, ...]


# -- step 1: names ------------------------------------------------------------------------------


def resolve(name: str) -> tuple[ModelEntry, Family]:
    """The registry entry and family for a model name (raises with suggestions when unknown)."""
    registry = get_registry()
    entry = registry.entry(name)
    return entry, registry.family(entry.family)


# -- step 2: weights ----------------------------------------------------------------------------

_REPO_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth", "pytorch_model.pth")
"""Tried in order for ``hf://org/repo`` with no file: what transformers, timm and others publish."""


def fetch_weights(request: LoadRequest, entry: ModelEntry | None) -> FetchedWeights:
    """The request's ``weights`` as given, else the registry entry's (at its locked commit,
    verified). Under torch.distributed one process per node downloads while the others wait."""
    from ..weights.distributed import fetch_once
    from ..weights.lockfile import fetch_entry
    from ..weights.sources import fetch, parse_source

    if request.weights is not None:
        request, named = _registry_weights(request)  # a model name as weights= (issue #22)
        entry = named or entry
    if request.weights is not None:
        weights = request.weights
        assert isinstance(weights, (str, os.PathLike, WeightSource))  # one in memory is read where it is (read_weights)
        sources = _weight_candidates(weights, parse_source(weights))
        name = entry.name if entry else None

        def get(commit: str | None) -> FetchedWeights:
            return _first_found(sources, lambda s: fetch(s, revision=commit or request.revision,
                                                         cache_dir=request.cache_dir, name=name))

        return fetch_once(get, enabled=request.distributed)
    if entry is None or entry.source is None:
        raise ZooadaptError(
            f"model {entry.name if entry else request.name!r} has no published weights in the registry; pass "
            "weights=PATH (a local checkpoint) or pretrained=False for random initialisation")
    return fetch_once(lambda commit: fetch_entry(entry, revision=commit or request.revision,
                                                 cache_dir=request.cache_dir, lock=request.lock),
                      enabled=request.distributed)


def _weight_candidates(weights: Any, source: WeightSource) -> list[WeightSource]:
    """``hf://org/repo`` without a file stands for the repository's weights file, whichever of
    the usual names it has; everything else is the one source it names."""
    import warnings

    from ..contract.hub_address import is_hub_address, parse_hub_address

    if not is_hub_address(weights):
        return [source]
    with warnings.catch_warnings():  # parse_source has already given the old-spelling note once
        warnings.simplefilter("ignore", FutureWarning)
        names_no_file = parse_hub_address(weights).path is None
    return [replace(source, filename=f) for f in _REPO_WEIGHT_FILES] if names_no_file else [source]


def _first_found(sources: Sequence[WeightSource], get: Any) -> FetchedWeights:
    from ..contract.errors import HubFileNotFoundError

    for source in sources[:-1]:
        try:
            return get(source)
        except HubFileNotFoundError:
            continue
    try:
        return get(sources[-1])
    except HubFileNotFoundError as exc:
        if len(sources) == 1:
            raise
        raise HubFileNotFoundError(
            f"hf://{sources[0].repo_id} holds none of the usual weight files ({', '.join(_REPO_WEIGHT_FILES)}); "
            f"name the file: weights='hf://{sources[0].repo_id}/FILE' (or pass weights=PATH to a local file)") from exc


# -- step 3: tensors ----------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """The checkpoint's shapes (always), its tensors (unless only a plan is wanted) and how far
    its key order can be trusted."""

    shapes: dict[str, Shape]
    tensors: dict[str, torch.Tensor] | None
    order: CheckpointOrder
    origin: str
    weight_set: str | None = None
    identity: tuple[Any, ...] | None = None
    """The file read and its state when read (path, device, inode, size, mtime_ns, ctime_ns, and
    what chose the weights): what was learnt of its values is remembered under it."""


def read_checkpoint_for(request: LoadRequest, fetched: FetchedWeights, *, shapes_only: bool) -> Checkpoint:
    """Read the fetched file: every tensor, or for a plan or a ``meta`` build only the shapes
    (a safetensors header; a pickle must still be unpickled)."""
    from ..weights.checkpoint import is_safetensors, read_checkpoint
    from ..weights.weight_sets import averaged_model_counter_keys

    path = Path(fetched.path)
    order: CheckpointOrder = "unordered" if is_safetensors(path) else "file"
    if shapes_only and order == "unordered":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
            for counter in averaged_model_counter_keys(shapes, shapes.__getitem__):  # as a full read leaves them
                del shapes[counter]
            return Checkpoint(shapes, None, order, fetched.origin)
        except (SafetensorError, OSError, ValueError):
            pass  # the full read below raises the proper CheckpointFormatError
    device = request.device if request.device is not None and request.device.type != "meta" else None
    # a Hub file was checked to be a blob of its repo: immutable, so it may stay mapped (no need to ask again)
    mapped = True if fetched.kind == "hub" and fetched.blob is not None else None
    tensors = read_checkpoint(path, trusted=request.trusted, use_ema=request.use_ema, device=device, mmap=mapped)
    shapes = tensors.shapes if tensors.shapes is not None else {k: tuple(t.shape) for k, t in tensors.items()}
    return Checkpoint(shapes, None if shapes_only else tensors, order, fetched.origin, tensors.describe(),
                      _file_identity(path, request))


def _file_identity(path: Path, request: LoadRequest) -> tuple[Any, ...] | None:
    """``Checkpoint.identity`` for one regular file (a shard index names other files: none)."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    if not path.is_file() or path.name.endswith(".index.json"):
        return None
    return (str(path.resolve()), status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns,
            request.use_ema, request.trusted)


def state_dict_checkpoint(state: Mapping[str, Any]) -> Checkpoint:
    """A state dict given in memory (tensors, or plain shapes for a preview) as a checkpoint."""
    import torch

    if state and not all(isinstance(v, (tuple, list, torch.Size)) for v in state.values()):
        return memory_checkpoint(state, use_ema=None, copy=False)  # tensors, or a training checkpoint's dict
    shapes = {k: tuple(v) for k, v in state.items()}
    return Checkpoint(shapes, None, "file", "state dict")


def memory_checkpoint(weights: Any, *, use_ema: bool | None, copy: bool,
                      device: torch.device | None = None) -> Checkpoint:
    """``weights=`` given in memory (a state dict, a training checkpoint's dict, a module), read
    as a file holding it is (``read_in_memory``): its tensors copied (to ``device``), or, with
    ``copy=False``, the caller's own."""
    import torch.nn as nn

    from ..weights.checkpoint import read_in_memory

    tensors = read_in_memory(weights, use_ema=use_ema, device=device, copy=copy)
    shapes = {k: tuple(t.shape) for k, t in tensors.items()}
    kind = type(weights).__name__
    article = "the" if isinstance(weights, nn.Module) else "an" if kind[:1] in tuple("AEIOUaeiou") else "a"
    what = f"{article} {kind}{' module' if isinstance(weights, nn.Module) else ''}"
    origin = f"{what} passed as weights= ({len(shapes)} tensors)"
    return Checkpoint(shapes, tensors, "file", origin, tensors.describe())


def read_weights(request: LoadRequest, entry: ModelEntry | None, *, shapes_only: bool,
                 copy: bool = True) -> tuple[FetchedWeights | None, Checkpoint]:
    """Steps 2 and 3 together: the weights fetched and read; or, given in memory, read from there
    (None in place of the fetched file), their tensors copied unless ``copy=False`` or
    ``shapes_only`` (then the caller's own, which must not become the model's)."""
    from .request import in_memory

    if not in_memory(request.weights):
        fetched = fetch_weights(request, entry)
        return fetched, read_checkpoint_for(request, fetched, shapes_only=shapes_only)
    device = request.device if request.device is not None and request.device.type != "meta" else None
    checkpoint = memory_checkpoint(request.weights, use_ema=request.use_ema, copy=copy and not shapes_only,
                                   device=device)
    if shapes_only:
        checkpoint.tensors = None
    return None, checkpoint


# -- step 4: the model --------------------------------------------------------------------------


@dataclass
class Target:
    """The module the checkpoint goes into, with what zooadapt knows of it."""

    model: nn.Module
    entry: ModelEntry | None
    family: Family | None
    stages: StageMap | None
    fresh: bool
    """Built by zooadapt on ``meta`` (tensors are assigned) rather than the user's (copied in place)."""
    cut: FeatureCut | None = None
    num_features: int | None = None
    headless: bool = False
    converters: tuple[Any, ...] = ()
    """Rules the build options need (``in_chans``, ``img_size``); they run with the user's rules."""
    state: dict[str, Any] | None = None
    """``model.state_dict(keep_vars=True)``, taken once when planning and reused to place tensors."""
    index: ModelIndex | None = None
    """The model's modules and state-dict shapes from its skeleton (no walk), while the tree is as
    copied; None for the user's module, a model built afresh or one a build option changed (set
    to None when a step replaces a module)."""
    layout: LayoutBuild | None = None
    """What the checkpoint's layout asked of the build (``layout_build``): options no tensor carries."""


def build_target(request: LoadRequest, entry: ModelEntry, family: Family, *, on_meta: bool,
                 layout: LayoutBuild | None = None) -> Target:
    """The named architecture, with parameters on ``meta`` unless it gets random weights.

    Build options go to the family's builder. ``in_chans`` is the one every family takes: a
    builder that does not know it (torchvision's) builds for RGB and its first convolution is
    replaced; either way the pretrained weights are adapted when they load (``AdaptInputConv``).
    """
    from .build_checks import build_problem
    from .meta_build import build_family, build_indexed_on_meta, stage_map_of

    classes = entry.num_classes if request.num_classes in (None, 0) else request.num_classes
    kwargs = {**entry.build_kwargs, **(layout.options if layout else {}), **request.model_kwargs}
    in_chans = kwargs.get("in_chans")
    if in_chans is not None and (isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1):
        raise InvalidArgumentError(f"in_chans={in_chans!r}: give the number of input channels, an integer >= 1")

    index: ModelIndex | None = None
    input_replaced = False

    def build(options: dict[str, Any]) -> nn.Module:
        nonlocal index
        if on_meta:
            model, index = build_indexed_on_meta(family, entry.arch, classes, **options)
            return model
        return build_family(family, entry.arch, classes, options)

    try:
        try:
            model = build(kwargs)
        except TypeError as exc:
            if in_chans is None or "in_chans" not in str(exc):
                raise
            model = _replace_input_conv(build({k: v for k, v in kwargs.items() if k != "in_chans"}), in_chans)
            input_replaced = True
    except TypeError as exc:
        if request.model_kwargs:
            raise InvalidArgumentError(
                f"{entry.name}: the {family.name!r} family's builder refused the build options "
                f"{sorted(request.model_kwargs)} ({exc}); check their names and values") from None
        raise _plugin_fault(family, entry, f"raised {type(exc).__name__}: {exc}") from exc
    except (ZooadaptError, KeyboardInterrupt):
        raise
    except BaseException as exc:  # a plugin's bug (a SystemExit too): say whose, and keep the process
        raise _plugin_fault(family, entry, f"raised {type(exc).__name__}: {exc}") from exc
    import torch.nn as nn

    if not isinstance(model, nn.Module):
        raise _plugin_fault(family, entry, f"returned a {type(model).__name__}, not a torch.nn.Module")

    def check(smap: StageMap) -> None:  # what the build gave against what the family declares
        problem = build_problem(model, smap, classes, on_meta=on_meta)
        if problem is not None:
            raise _plugin_fault(family, entry, problem)

    try:
        smap = stage_map_of(family, model, check) if on_meta else family.stage_map(model)
    except (ZooadaptError, KeyboardInterrupt):
        raise
    except BaseException as exc:
        raise _plugin_fault(family, entry, f"could not name the stages ({type(exc).__name__}: {exc})") from exc
    if not on_meta:
        check(smap)
    target = Target(model, entry, family, smap, fresh=on_meta, converters=_option_converters(model, kwargs),
                    index=index, layout=layout)
    if input_replaced:
        target.index = None  # the tree changed: the index no longer describes it
    if request.num_classes == 0 and not smap.head and entry.headless:
        pass  # published as an encoder with no head at all: already as asked
    elif request.num_classes == 0:
        _remove_head(target)
    elif request.num_classes is not None and not request.features_only and not smap.head:
        raise InvalidArgumentError(
            f"num_classes={request.num_classes}: {entry.name!r} has no classifier ({type(model).__name__}, an "
            "encoder), so there is no head to build for those classes; load it without num_classes (its outputs "
            "are the encoder's) and put your own head on it, or use features_only=True for its stage outputs")
    if request.features_only:
        from .features import cut_features

        target.cut = cut_features(family, model, smap, request.out_stages)
        target.index = None
        target.model, target.stages = target.cut.module, target.cut.stages
    return target


def _plugin_fault(family: Family, entry: ModelEntry, what: str) -> PluginError:
    who = family.provider or family.name
    return PluginError(
        f"the {family.name!r} family (plugin {who!r}) {what} while building {entry.arch!r} for {entry.name!r}. "
        f"This is a fault in the plugin: report it to its authors, or disable it with ZOOADAPT_DISABLE_PLUGINS={who}")


def _first_conv(model: nn.Module) -> tuple[str, nn.Module] | None:
    import torch.nn as nn

    return next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def _replace_input_conv(model: nn.Module, in_chans: int) -> nn.Module:
    """The model's first convolution rebuilt for ``in_chans`` inputs (same device, meta or not)."""
    import torch.nn as nn

    found = _first_conv(model)
    if found is None:
        raise InvalidArgumentError(f"in_chans={in_chans}: this model has no Conv2d input layer to adapt")
    name, conv = found
    assert isinstance(conv, nn.Conv2d)
    new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,  # type: ignore[arg-type]
                    conv.groups if conv.groups == 1 else in_chans, conv.bias is not None, conv.padding_mode,
                    device=conv.weight.device, dtype=conv.weight.dtype)
    parent_name, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, leaf, new)
    return model


def _option_converters(model: nn.Module, kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
    """Rules that adapt pretrained tensors to build options: ``in_chans``, ``img_size``."""
    from ..contract.rules import AdaptInputConv, ResamplePosEmbed

    out: list[Any] = []
    in_chans = kwargs.get("in_chans")
    if in_chans not in (None, 3):
        found = _first_conv(model)
        if found is not None:
            out.append(AdaptInputConv(f"{found[0]}.weight" if found[0] else "weight", int(in_chans)))
    if kwargs.get("img_size") is not None and hasattr(model, "pos_embed") and hasattr(model, "patch_embed"):
        grid = getattr(model.patch_embed, "grid_size", None)
        if grid is not None:
            # timm's own filter: a pos_embed without the prefix tokens' rows (no_embed_class: DINOv2
            # with registers) is resampled with none
            prefix = 0 if getattr(model, "no_embed_class", False) else int(getattr(model, "num_prefix_tokens", 1))
            out.append(ResamplePosEmbed("pos_embed", (int(grid[0]), int(grid[1])), prefix))
    return tuple(out)


def _remove_head(target: Target) -> None:
    """``num_classes=0``: the head becomes ``nn.Identity``, so the model returns pooled features."""
    import torch.nn as nn

    smap = target.stages
    assert smap is not None
    if not smap.head:
        raise InvalidArgumentError(f"num_classes=0: the {target.family.name if target.family else ''!r} family "
                                   "declares no head to remove; use features_only=True for its stage outputs")
    for path in smap.heads:  # a distilled model's second head too: both would return logits
        parent_name, _, leaf = path.rpartition(".")
        parent = target.model.get_submodule(parent_name) if parent_name else target.model
        if path == smap.head:
            # the head's first layer with a weight takes the pooled features (a Sequential(Dropout,
            # Linear) head's Linear, a Linear alone, a 1x1 convolution)
            head = getattr(parent, leaf)
            weight = next((p for n, p in head.named_parameters() if n.endswith("weight") and p.ndim >= 2), None)
            target.num_features = int(weight.shape[1]) if weight is not None else None
        setattr(parent, leaf, nn.Identity())
    reset = getattr(target.model, "reset_classifier", None)
    if smap.extra_heads and callable(reset):
        # several classifiers: the model's own reset (timm's API) knows how its forward combines
        # them (VOLO drops its auxiliary head rather than adding pooled features twice)
        reset(0)
    target.headless = True
    target.index = None


def user_target(request: LoadRequest, entry: ModelEntry | None) -> Target:
    """A module the user built, with the family (named, or the checkpoint's registry model's)
    lending its rules and, when its stage map describes the module, its stage names."""
    registry = get_registry()
    family = registry.family(request.family) if request.family else None
    if family is None and entry is not None:
        family = registry.family(entry.family)
    assert request.model is not None
    smap = fitting_stage_map(family, request.model) if family is not None else None
    return Target(request.model, entry, family, smap, fresh=False)


def fitting_stage_map(family: Family, model: nn.Module) -> StageMap | None:
    """The family's stage map if it describes ``model`` (every stage and the head name a module
    or parameter of it), else None: a model the user built may name its parts differently."""
    from ..tuning.attached import fits

    try:
        smap = family.stage_map(model)
    except Exception:  # a user's variant may not follow the family's layout
        return None
    return smap if fits(model, smap) else None


# -- step 5: the plan ---------------------------------------------------------------------------


def _model_shapes(model: nn.Module) -> tuple[dict[str, Shape], list[str]]:
    state = model.state_dict(keep_vars=True)
    return {k: tuple(v.shape) for k, v in state.items()}, [n for n, _ in model.named_parameters()]


def _head_of(request: LoadRequest, target: Target) -> str:
    if request.head is not None:
        return request.head
    if target.stages is not None and target.stages.head:
        return target.stages.head
    if target.family is None:
        return ""
    try:
        head = target.family.stage_map(target.model).head
    except Exception:  # a user's module the family's stage reader does not understand
        return ""
    return head if head in dict(target.model.named_modules()) else ""


def skip_prefixes(skip: Sequence[str], smap: StageMap | None, model_keys: Mapping[str, Any],
                  checkpoint_keys: Mapping[str, Any]) -> list[str]:
    """``skip`` as module prefixes (stage names expanded); an entry that names nothing is refused,
    since a typo would otherwise load the very tensors the user meant to keep."""
    from ..contract.errors import suggest

    out: list[str] = []
    for item in skip:
        if smap is not None and (item in smap.names or item in smap.groups):
            prefixes = [p for stage in smap.resolve(item) for p in smap.stage(stage).prefixes]
        else:
            prefixes = [item]
        if not any(k == p or k.startswith(p + ".") for p in prefixes for k in (*model_keys, *checkpoint_keys)):
            tops = sorted({k.split(".")[0] for k in model_keys})
            vocabulary = [*tops, *(smap.names if smap else ())]
            raise InvalidArgumentError(
                f"skip={tuple(skip)!r}: {item!r} names no part of the model or the checkpoint."
                f"{suggest(item, vocabulary)} Give stage names"
                + (f" ({', '.join(smap.names)})" if smap else "")
                + f" or module prefixes (top level: {', '.join(tops[:12])}).")
        out += prefixes
    return out


def plan_checkpoint(request: LoadRequest, target: Target, checkpoint: Checkpoint) -> LoadPlan:
    """The plan for this checkpoint into this target, adapted as far as it needs (``adapt``); a
    pruned or weight-normalised file's parts planned as the plain tensors they fold into
    (``zooadapt.weights.reparametrized``), unless the model has such parts itself."""
    from ..weights.reparametrized import describe_folds, find_folds, folded_shapes
    from .placement import tied_groups

    full_shapes: Mapping[str, tuple[int, ...]]
    if target.cut is not None:
        full_shapes = target.cut.full_shapes
        params = [n for n, _ in target.model.named_parameters()]
        tied = tied_groups(target.model.state_dict(keep_vars=True))
        skip = skip_prefixes(request.skip, target.stages, full_shapes, checkpoint.shapes) + list(target.cut.beyond)
        head = ""
    elif target.index is not None:  # known from the skeleton: no walk
        full_shapes, params = target.index.shapes, list(target.index.parameters)
        tied = () if len(target.index.parameter_keys) == len(params) else tied_groups(
            {k: target.index.tensor(k) for k in target.index.parameter_keys})
        skip = skip_prefixes(request.skip, target.stages, full_shapes, checkpoint.shapes)
        head = _head_of(request, target)
    else:
        target.state = target.model.state_dict(keep_vars=True)
        full_shapes = {k: tuple(v.shape) for k, v in target.state.items()}
        params = [n for n, _ in target.model.named_parameters()]
        tied = tied_groups(target.state)
        skip = skip_prefixes(request.skip, target.stages, full_shapes, checkpoint.shapes)
        head = _head_of(request, target)
        if target.headless and target.stages is not None:
            head = target.stages.head
    family = target.family
    extra_heads = target.stages.extra_heads if target.stages is not None and head == target.stages.head else ()
    folds = find_folds(checkpoint.shapes, full_shapes)
    plan = adapt(
        folded_shapes(checkpoint.shapes, folds) if folds else checkpoint.shapes,
        PlanTarget(full_shapes, params, head=head, skip=skip, family=family.name if family else None, tied=tied,
                   extra_heads=extra_heads),
        rules=(*request.rules, *target.converters), family_rules=family.key_rules if family else (),
        order=checkpoint.order, discover=request.discover, use_ema=request.use_ema,
        other_architectures=_other_architectures(request, target),
    )
    plan.weight_set = checkpoint.weight_set
    if not plan.fits and (stem := _stem_hint(request, target, plan) or _folded_batchnorm_hint(plan)):
        plan.hints.append(stem)
    if quantized := _quantization_aware(plan):
        (plan.notes if plan.fits else plan.hints).append(quantized)
    if folds:
        plan.folded = folds
        plan.notes.append(describe_folds(folds))
    if target.cut is not None and target.cut.beyond:
        plan.beyond_cut(target.cut.beyond, full_shapes)
    return plan


def plan_named_model(request: LoadRequest, entry: ModelEntry, family: Family, checkpoint: Checkpoint,
                     fetched: FetchedWeights | None = None) -> tuple[LoadRequest, Target, LoadPlan]:
    """The named architecture built on ``meta`` and the checkpoint planned into it.

    ``num_classes=None`` means "the checkpoint's head": when the file's head differs from the
    built one only in its class count (a model fine-tuned to 5 classes), the architecture is
    built again with that count and the trained head loads with the rest. The request
    returned carries the class count used. ``fetched``: where the file came from, for the
    ``config.json`` beside it that a layout may read its build from.
    """
    import functools

    from .beside import metadata_json
    from .layout_build import layout_build

    config = functools.cache(lambda: metadata_json(fetched, "config.json", cache_dir=request.cache_dir)) \
        if fetched is not None else None
    layout = layout_build(_plain_shapes(checkpoint), family, entry.arch, request.model_kwargs, config=config) \
        if request.discover else None
    if layout is None and headless_request(request, entry) is not request:
        # published without a head: a file with nothing a head could be (its own published file)
        # plans into the headless model at once, as the planning with the head below would end
        try:
            headless = _published_headless(request, entry, family, checkpoint, None)
        except ZooadaptError:
            headless = None  # the planning below names what is wrong, as it would without this shortcut
        if headless is not None and headless[2].fits and not (headless[2].dropped or headless[2].unexpected):
            return headless
    target = build_target(request, entry, family, on_meta=True, layout=layout)
    plan = plan_checkpoint(request, target, checkpoint)
    if layout is not None:
        layout, target, plan = _built_as_read(request, entry, family, checkpoint, layout, target, plan, config)
    if layout is not None:  # which zoo's network was built, with what: the file's layout decided
        plan.notes.append(layout.note(family.name, entry.arch, request.model_kwargs))
    def as_published() -> tuple[LoadRequest, Target, LoadPlan]:
        """A new random head where neither the published model (``ModelEntry.headless``) nor the
        file has one (a ``num_classes=0`` model saved with ``torch.save``, a self-supervised
        backbone): the model without it, computing what the file's model computed."""
        nothing_for_a_head = entry.headless or not (plan.dropped or plan.unexpected)
        if request.num_classes is None and not request.features_only and plan.fits and plan.new_head \
                and nothing_for_a_head and not _unplaced_classifier(request, target, plan):
            return _published_headless(request, entry, family, checkpoint, layout)
        return request, target, plan

    if request.num_classes is not None or request.features_only or not plan.fits or not plan.dropped:
        return as_published()
    classes = checkpoint_head_classes(plan, entry.num_classes)
    if classes is None or classes == entry.num_classes:
        return as_published()
    kept = replace(request, num_classes=classes)
    kept_target = build_target(kept, entry, family, on_meta=True, layout=layout)
    kept_plan = plan_checkpoint(kept, kept_target, checkpoint)
    if layout is not None:
        kept_plan.notes.append(layout.note(family.name, entry.arch, request.model_kwargs))
    if not kept_plan.fits or kept_plan.new_head or any(not _fake_quant(m.checkpoint_key) for m in kept_plan.dropped):
        return as_published()  # the head cannot be taken whole: a new one (or none), as the report says
    kept_plan.kept_head = classes
    kept_plan.notes.append(
        f"kept the checkpoint's trained {classes}-class head (num_classes=None); num_classes=N gives a new "
        "N-way head instead")
    return kept, kept_target, kept_plan


HEADLESS_NOTE = ("its published weights carry no classifier: the model returns pooled features "
                 "(num_classes=0){as_timm}; num_classes=N adds a new N-way head")


def headless_request(request: LoadRequest, entry: ModelEntry) -> LoadRequest:
    """``num_classes=0`` where the request leaves the head to the entry and the entry's published
    weights have none (``ModelEntry.headless``): the model as published, not a random head."""
    if entry.headless and request.num_classes is None and not request.features_only:
        return replace(request, num_classes=0)
    return request


def _published_headless(request: LoadRequest, entry: ModelEntry, family: Family, checkpoint: Checkpoint,
                        layout: LayoutBuild | None) -> tuple[LoadRequest, Target, LoadPlan]:
    """A file with no head of its own (of a headless entry, or none at all), planned into the model
    without its head."""
    headless = replace(request, num_classes=0)
    target = build_target(headless, entry, family, on_meta=True, layout=layout)
    plan = plan_checkpoint(headless, target, checkpoint)
    if layout is not None:
        plan.notes.append(layout.note(family.name, entry.arch, request.model_kwargs))
    if target.stages is None or not target.stages.head:
        return headless, target, plan  # an encoder built without any head: nothing was removed
    if entry.headless:
        as_timm = ", as timm's create_model(pretrained=True) builds it" if family.name == "timm" else ""
        plan.notes.append(HEADLESS_NOTE.format(as_timm=as_timm))
    else:
        plan.notes.append(f"the file holds no classifier: the model returns the pooled features its network "
                          f"computed (num_classes=0), not a random {entry.num_classes}-way head; num_classes=N adds "
                          "a new N-way head")
    plan.headless = True
    return headless, target, plan


def _built_as_read(request: LoadRequest, entry: ModelEntry, family: Family, checkpoint: Checkpoint,
                   layout: LayoutBuild, target: Target, plan: LoadPlan, config: Callable[[], Any] | None
                   ) -> tuple[LayoutBuild | None, Target, LoadPlan]:
    """The build options of the layout that read the file, not of every layout whose ``detect``
    matched its keys: a file two layouts recognise is built as the one its plan reads it with.
    A file read in the family's own names (as they are, under a wrapper, paired by order, or
    through a converter of no zoo of its own, such as timm's ``checkpoint_filter_fn``, whose
    output is timm's names) is built as the layouts that only set options ask; a file a layout
    reads, as that layout and the options-only layouts of its own zoo ask (transformers' LeViT
    with one classifier is read by transformers-levit and built one-headed by
    transformers-levit-one-classifier), never as another zoo's. When that
    differs from what built ``target``, the model is built again and the file planned again;
    the second plan is kept when it reads the file the same way (else the first, which the
    note then names)."""
    from ..host.layouts import registered_layouts
    from .layout_build import layout_build

    layouts = [lay for lay in registered_layouts() if lay.family == family.name]
    read_by = next((lay for lay in layouts if lay.name == plan.layout), None)
    in_family_names = read_by is None or (read_by.convert is not None and not read_by.zoo and not read_by.build_options)
    reading = [lay for lay in layouts if lay is read_by or (
        not lay.rules and lay.convert is None
        and (in_family_names or (read_by is not None and bool(lay.zoo) and lay.zoo == read_by.zoo)))]
    agreed = layout_build(_plain_shapes(checkpoint), family, entry.arch, request.model_kwargs, layouts=reading,
                          config=config)
    if agreed is not None and agreed.options == layout.options:
        return agreed, target, plan  # the same build: only the note's layout may change
    if agreed is None and not layout.options:
        return None, target, plan
    again = build_target(request, entry, family, on_meta=True, layout=agreed)
    replanned = plan_checkpoint(request, again, checkpoint)
    if replanned.layout != plan.layout:
        return layout, target, plan
    return agreed, again, replanned


def _plain_shapes(checkpoint: Checkpoint) -> Mapping[str, Shape]:
    """The file's shapes as a layout reads them: a pruned or weight-normalised tensor's parts as
    the plain tensor they fold into (the architectures zooadapt builds have no such parts)."""
    from ..weights.reparametrized import find_folds, folded_shapes

    try:
        folds = find_folds(checkpoint.shapes)
    except IncompatibleCheckpointError:
        return checkpoint.shapes  # a parametrization only the model can take: its plan decides
    return folded_shapes(checkpoint.shapes, folds) if folds else checkpoint.shapes


def checkpoint_head_classes(plan: LoadPlan, built: int | None) -> int | None:
    """The class count of the checkpoint's head, when it differs from the built head only in
    that count (each head tensor's first dimension), else None (another head altogether)."""
    counts: set[int] = set()
    for m in plan.dropped:
        if _fake_quant(m.checkpoint_key):
            continue  # a QAT head's fake-quant scales: beside the classifier, not part of it
        ck, built_shape = tuple(m.checkpoint_shape), m.model_shape
        if built_shape is None:
            return None  # a head module the built model does not have (an MLP head, a second head)
        if ck == tuple(built_shape):
            continue  # renewed only because a sibling tensor changed
        if not ck or not built_shape or _trailing(ck) != _trailing(built_shape) or built_shape[0] != built:
            return None  # (a Linear [C, F] is the same head as a 1x1 convolution [C, F, 1, 1])
        counts.add(int(ck[0]))
    return counts.pop() if len(counts) == 1 and min(counts) > 0 else None


def _trailing(shape: Sequence[int]) -> tuple[int, ...]:
    """A head tensor's dimensions after the class count, less those of size 1."""
    return tuple(d for d in shape[1:] if d != 1)


def _other_architectures(request: LoadRequest, target: Target) -> Any:
    """For the diagnosis of a checkpoint that does not fit: the architectures in the signature
    index (every built-in, plugin and timm architecture) that take at least 90% of its tensors,
    best first, as (name, share); never the model being loaded nor one with its very signature.
    Only called when nothing fits, so the index is read only for a failing load."""
    if target.family is None or target.entry is None or not target.fresh:
        return None
    current = target.entry.name

    def fits(checkpoint: Mapping[str, Shape]) -> list[tuple[str, float]]:
        from .matching import match_checkpoint

        try:
            matches = match_checkpoint(checkpoint, limit=3, min_share=0.9, exclude=(current,), rules=request.rules)
        except ZooadaptError as exc:  # no index here (a damaged install): diagnose without it
            log.debug("no architecture diagnosis: %s", exc)
            return []
        return [(m.name, m.share) for m in matches if m.fits]

    return fits


# -- step 6 and 7: placement, head, freezing, report ---------------------------------------------


def _place(request: LoadRequest, target: Target, plan: LoadPlan, checkpoint: Checkpoint, what: str) -> tuple[str, ...]:
    """Put the planned tensors in place; returns (and warns about) the keys holding NaN or Inf."""
    from .placement import assign_planned, check_tied, copy_planned, materialise, retie, warn_nonfinite

    assert checkpoint.tensors is not None
    tensors: Mapping[str, torch.Tensor] = checkpoint.tensors
    if plan.folded:
        from ..weights.reparametrized import FoldedTensors

        tensors = FoldedTensors(tensors, plan.folded, transposed=_transposed_folds(target.model, plan))
    check_tied(plan, tensors)
    if target.fresh:
        device = request.device
        nonfinite = assign_planned(target.model, plan, tensors, device=device, state=target.state,
                                   index=target.index, known=checkpoint.identity)
        retie(target.model, plan)
        placed = {m.model_key for m in plan.loaded if m.model_key} | set(plan.defaulted) | set(plan.tied)
        materialise(target.model, device=device or "cpu", modules=_unplaced_modules(placed, target.index))
        if device is not None:
            target.model.to(device)  # buffers the build computed itself (non-persistent); the rest is there
    else:
        import torch

        with torch.no_grad():
            nonfinite = copy_planned(target.model, plan, tensors, known=checkpoint.identity)
    warn_nonfinite(nonfinite, what, stacklevel=4)  # _place, run_load, the entry point: the caller's line
    return nonfinite


def _transposed_folds(model: nn.Module, plan: LoadPlan) -> set[str]:
    """The folded keys whose spectral norm fits both dimensions and whose model module is a
    ``ConvTranspose``: torch normalises those over dimension 1 (``Fold.dim``)."""
    import torch.nn as nn

    out = set()
    for mapping in plan.loaded:
        fold = plan.folded.get(mapping.checkpoint_key)
        if fold is None or fold.dim is not None or not mapping.model_key:
            continue
        module = model.get_submodule(mapping.model_key.rpartition(".")[0])
        if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            out.add(mapping.checkpoint_key)
    return out


def _unplaced_modules(placed: set[str], index: ModelIndex | None) -> list[tuple[str, nn.Module]] | None:
    """The modules with a parameter placement did not fill (what ``materialise`` must look at),
    from the index; None (look at every module) without one."""
    if index is None:
        return None
    return index.named(sorted({index.slots[k][0] for k in index.parameter_keys - placed}))


def cast_keeping_norms(model: nn.Module, dtype: torch.dtype | None, norms: torch.dtype | None = None) -> None:
    """Floating parameters and buffers to ``dtype``, except BatchNorm layers: they stay float32
    (AMP's ``keep_batchnorm_fp32``), since their statistics need the precision and torch's
    kernels take a low-precision input with float32 BatchNorm but not a mix inside the layer;
    ``norms``: the BatchNorm layers' own dtype, where a saved model had them in another (None
    for either: left as it is)."""
    from torch.nn.modules.batchnorm import _NormBase

    for module in model.modules():
        wanted = norms if isinstance(module, _NormBase) else dtype
        if wanted is None:
            continue
        for param in module._parameters.values():
            if param is not None and param.dtype.is_floating_point and param.dtype != wanted:
                param.data = param.data.to(wanted)
        for name, buf in module._buffers.items():
            if buf is not None and buf.dtype.is_floating_point and buf.dtype != wanted:
                module._buffers[name] = buf.to(wanted)


def count_parameters(model: nn.Module, parameters: Iterable[nn.Parameter] | None = None) -> tuple[int, int]:
    """(trainable, total) parameter elements (of ``parameters`` when the caller has listed them)."""
    total = trainable = 0
    for p in model.parameters() if parameters is None else parameters:
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def _finish(request: LoadRequest, target: Target, plan: LoadPlan | None, fetched: FetchedWeights | None,
            started: float, origin: str | None = None) -> nn.Module:
    from ..tuning.freezing import freeze as _freeze
    from ..tuning.freezing import freeze_listed

    entry, family, model = target.entry, target.family, target.model
    assert entry is not None and family is not None and target.stages is not None
    if request.dtype is not None:
        cast_keeping_norms(model, request.dtype)
    num_classes = None if target.cut is not None or target.headless else (
        request.num_classes or entry.num_classes)
    info = ModelInfo(
        name=entry.name, family=family.name, arch=entry.arch, stages=target.stages, num_classes=num_classes,
        source=fetched.origin if fetched else origin, revision=fetched.commit if fetched else None,
        num_features=target.num_features, freeze_spec=request.freeze,
        features_only=target.cut is not None, out_stages=target.cut.out_stages if target.cut else None,
    )
    info.build_options, info.unsaved_options = _recorded_build_options(request, target)
    model.zooadapt = info  # type: ignore[assignment]
    index = target.index  # still the tree as copied: placing and casting replace tensors, not modules
    if index is not None:
        named = [(n, index.tensor(n)) for n in index.parameters]
        batchnorms = index.named(index.batchnorms)  # all _set_bn would look at
        frozen = freeze_listed(model, target.stages, request.freeze, bn=request.bn, parameters=named,
                               modules=batchnorms) if request.freeze is not None else ()
        parameters = [p for _, p in named]
    else:
        frozen = _freeze(model, request.freeze, bn=request.bn) if request.freeze is not None else ()
        parameters = list(model.parameters())
    trainable, total = count_parameters(model, parameters)
    report = LoadReport(
        model=entry.name, family=family.name, arch=entry.arch,
        source=fetched.origin if fetched else origin, path=str(fetched.path) if fetched else None,
        commit=fetched.commit if fetched else None, plan=plan, num_classes=num_classes, frozen=frozen,
        trainable_params=trainable, total_params=total, seconds=time.perf_counter() - started,
        target="features" if target.cut is not None else "embeddings" if target.headless else "classifier",
        device=str(first.device) if (first := next(iter(parameters), None)) is not None else None,
    )
    info.report = report
    log.info("%s", report)
    return model


# -- the entry points' sequences ----------------------------------------------------------------


def users_default_device() -> torch.device | None:
    """The device torch's factories use now, when it is not the CPU: set with
    ``torch.set_default_device`` or a ``with torch.device(...)`` block around the call. ``load``
    takes it as ``device=`` when none is given (``meta``: a plan and a skeleton, as
    ``device="meta"``), as a model built under it would be."""
    import torch

    device = torch.get_default_device()
    return None if device.type == "cpu" else device


@contextlib.contextmanager
def reading_on_cpu(default: torch.device | None) -> Iterator[None]:
    """Run a load with the CPU as torch's default device when the user's is another
    (``users_default_device``): files are read, and tensors made, where zooadapt places them
    itself, never on ``meta`` by accident (a safetensors read made its buffer there and failed).
    Nothing is entered otherwise: a device context costs every torch call of the load."""
    if default is None:
        yield
        return
    import torch

    with torch.device("cpu"):
        yield


def run_load(request: LoadRequest) -> nn.Module:
    """name -> family -> weights -> tensors -> model on meta -> plan -> placement -> head -> freeze -> report."""
    from ..tuning.attached import loaded_info

    started = time.perf_counter()
    assert request.name is not None
    entry, family = resolve(request.name)
    if not request.pretrained and request.weights is None:
        request = headless_request(request, entry)  # random weights, built as the published model is
        if request.device is not None and request.device.type == "meta":
            target = build_target(request, entry, family, on_meta=True)
        else:
            target = build_target(request, entry, family, on_meta=False)
            if request.device is not None:
                target.model.to(request.device)
        return _finish(request, target, None, None, started)
    meta = request.device is not None and request.device.type == "meta"
    fetched, checkpoint = read_weights(request, entry, shapes_only=meta)
    request, saved_options = _saved_build_options(request, entry)
    request, target, plan = plan_named_model(request, entry, family, checkpoint, fetched)
    if saved_options:
        given = ", ".join(f"{k}={v!r}" for k, v in saved_options.items())
        plan.notes.append(f"built with {given}, as the saved model beside the file was (its zooadapt.json)")
    plan.check(partial=request.partial, what=f"{entry.name} ({family.name}/{entry.arch})",
               min_coverage=request.min_coverage)
    unplaced = _unplaced_classifier(request, target, plan)
    if unplaced:
        import warnings

        plan.notes.append(unplaced)
        warnings.warn(unplaced, UserWarning, stacklevel=3)
    elif request.num_classes is None and (multilayer := _multilayer_head_note(plan)):
        plan.notes.append(multilayer)
    if plan.skipped_share > 0.5:  # asked for, so not an error; but say that the model is mostly untrained
        import warnings

        warnings.warn(
            f"skip={request.skip!r} leaves {plan.skipped_share:.0%} of {entry.name}'s backbone parameters at their "
            "random initialisation: most of this model is not pretrained. Skip fewer stages if that is not what you "
            "meant.", UserWarning, stacklevel=3)
    nonfinite = _place(request, target, plan, checkpoint, entry.name) if not meta else ()
    model = _finish(request, target, plan, fetched, started, origin=checkpoint.origin)
    info = loaded_info(model)
    assert info is not None and info.report is not None  # _finish records both on every model it returns
    if nonfinite:
        info.report.nonfinite = nonfinite
    if fetched is not None and (plan.kept_head or (request.weights is not None and _head_from_the_file(plan))):
        # the file's own head, whatever its class count (1000 as the built model's, or the count
        # num_classes= repeated): the names beside the file are its classes. Registry weights are
        # not asked (a Hub request on every default load for names no repo of theirs holds)
        from .labels import labels_beside

        info.labels = labels_beside(fetched, info.num_classes, cache_dir=request.cache_dir)
    return model


def _recorded_build_options(request: LoadRequest, target: Target) -> tuple[dict[str, Any] | None, tuple[str, ...]]:
    """(the build options a reload must repeat, the user's options JSON cannot hold): the layout's
    as built and every option the user gave whose value is plain data. A registry entry's own
    options are not among them: the reload builds the same entry."""
    import json

    options = dict(target.layout.built) if target.layout is not None else {}
    unsaved = []
    for name, value in request.model_kwargs.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            unsaved.append(name)
            continue
        options[name] = value
    return options or None, tuple(unsaved)


def _saved_build_options(request: LoadRequest, entry: ModelEntry) -> tuple[LoadRequest, dict[str, Any]]:
    """``weights=`` the file (or folder) ``zooadapt.save`` wrote, with a name: the build options its
    model was built with (``zooadapt.json`` beside it; a torchvision EfficientNet-B5's BatchNorm
    eps, which no tensor carries) go to the build, as ``load(folder)`` gives them; the user's own
    options win. Returns the request and the options it took from the file."""
    from ..contract.saved_format import is_saved_directory, read_saved_config

    if not isinstance(request.weights, (str, os.PathLike)) or not request.discover:
        return request, {}
    path = Path(request.weights).expanduser()
    folder = path if path.is_dir() else path.parent
    if not is_saved_directory(folder):
        return request, {}
    try:
        config = read_saved_config(folder)
    except ZooadaptError:
        return request, {}  # not a save of ours after all: read as any other file
    options = {k: v for k, v in (config.get("build_options") or {}).items() if k not in request.model_kwargs}
    same_arch = str(config.get("arch", "")).partition(".")[0] == entry.arch.partition(".")[0]
    if not options or not same_arch:
        return request, {}
    return replace(request, model_kwargs={**options, **request.model_kwargs}), options


_FAKE_QUANT = (".weight_fake_quant.", ".activation_post_process.")


def _fake_quant(key: str) -> bool:
    """Whether ``key`` belongs to a fake-quant module or observer of a QAT-prepared model."""
    return any(marker in key for marker in _FAKE_QUANT)


def _quantization_aware(plan: LoadPlan) -> str:
    """What to say of a file saved from a model prepared for quantization-aware training
    (``torch.ao.quantization.prepare_qat``): its fake-quant modules' scales and observers have no
    place in the float model, which then loads the float weights and computes without fake
    quantization (a note), or, fused for quantization (``fuse_model``: ``conv1.bn.weight``), does
    not fit at all (a hint). "" for any other file."""
    unused = [m.checkpoint_key for m in (*plan.unexpected, *plan.dropped) if _fake_quant(m.checkpoint_key)]
    if not unused:
        return ""
    what = (f"the file is a model prepared for quantization-aware training (torch.ao.quantization.prepare_qat): its "
            f"{len(unused)} fake-quant scales and observer statistics (e.g. {unused[0]}) have no place in this float "
            "model")
    if plan.fits:
        return (what + ", which loads the file's float weights and computes without fake quantization (so not "
                "what the saved model computed with it on). To run it quantized, prepare the model as it was and "
                "load the file into it with load_state_dict")
    return (what + ", and its modules were fused for quantization or renamed, so its names are not the float "
            "model's. Load the float model saved before prepare_qat, or prepare the model as it was and load the "
            "file into it with load_state_dict")


def _folded_batchnorm_hint(plan: LoadPlan) -> str:
    """Why a file whose BatchNorm layers are all missing, and whose convolutions carry biases the
    model's lack, does not load: its BatchNorm was folded into the convolutions for inference
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``, ``torch.fx.experimental.optimization.fuse``, an
    export). The folding cannot be undone into the same numbers, so the file is another network
    for training. "" for any other misfit."""
    statistics = {k.rpartition(".")[0] for k in plan.missing if k.endswith(".running_var")}
    if not statistics or any(k.rpartition(".")[0] not in statistics for k in plan.missing):
        return ""
    loaded = {m.checkpoint_key for m in plan.loaded}
    biases = [m.checkpoint_key for m in plan.unexpected if m.checkpoint_key.endswith(".bias")
              and m.checkpoint_key[: -len("bias")] + "weight" in loaded]
    if not biases:
        return ""
    return (f"its {len(statistics)} BatchNorm layers are missing and {len(biases)} convolutions carry a bias the "
            f"model's have none of (e.g. {biases[0]}): BatchNorm was folded into the convolutions for inference "
            "(fuse_conv_bn_eval, torch.fx's fuse, an export). Folded, the two layers are one, and they cannot be "
            "told apart again; load the checkpoint saved before fusing")


def _stem_hint(request: LoadRequest, target: Target, plan: LoadPlan) -> str:
    """Why a file whose only misfit is the model's input convolution does not load: a model
    fine-tuned on other images (``conv1 = nn.Conv2d(1, 64, ...)`` for grey scans: the build
    option ``in_chans`` rebuilds it), or one whose stem was replaced (CIFAR's 3x3 convolution
    without the max-pool: what a state dict does not hold). "" for any other misfit, and for
    the user's own module (which zooadapt does not build)."""
    if not target.fresh or target.entry is None:
        return ""
    found = _first_conv(target.model)
    if found is None or plan.missing or len(plan.mismatched) != 1:
        return ""
    wrong = plan.mismatched[0]
    weight = f"{found[0]}.weight" if found[0] else "weight"
    if wrong.model_key != weight or wrong.model_shape is None or len(wrong.checkpoint_shape) != 4:
        return ""
    file_shape, model_shape = tuple(wrong.checkpoint_shape), tuple(wrong.model_shape)
    if file_shape[0] == model_shape[0] and file_shape[2:] == model_shape[2:]:
        if "in_chans" in request.model_kwargs:
            return ""
        plural = "s" if file_shape[1] != 1 else ""
        return (f"the file's {wrong.checkpoint_key} {list(file_shape)} takes {file_shape[1]} input channel{plural} "
                f"where this model's takes {model_shape[1]}: a model fine-tuned on {file_shape[1]}-channel images. "
                f"Pass in_chans={file_shape[1]} to build it so")
    return (f"the file's input convolution {wrong.checkpoint_key} {list(file_shape)} is not this model's "
            f"{list(model_shape)}: its stem was replaced (a CIFAR-style 3x3 stem, say), and a state dict does not hold "
            "its stride, padding or what replaced the max-pool. Build that model yourself and load the file with "
            "zooadapt.load_weights(model, file)")


def _unplaced_classifier(request: LoadRequest, target: Target, plan: LoadPlan) -> str:
    """The sentence to say when the file holds a trained classifier this model's head could take
    (an unused weight of the head's input size) but gets a new random head instead, with no
    num_classes= asking for one: the file's own predictions would be lost without a word. ""
    otherwise."""
    if request.num_classes is not None or request.weights is None or not plan.new_head:
        return ""
    weight = next((k for k in plan.new_head if k.endswith("weight")), None)
    try:
        shape = tuple(target.model.get_parameter(weight).shape) if weight else ()
    except AttributeError:
        return ""
    if len(shape) < 2:
        return ""
    restructured = _restructured_head(plan, shape, weight.rpartition(".")[0])  # type: ignore[union-attr]
    if restructured:
        return restructured
    unused = [m.checkpoint_key for m in plan.unexpected]

    def alone(key: str) -> bool:
        """Nothing else unused under its top-level name but its own module's tensors: not a layer of a
        projection MLP (MoCo v2's fc.0 -> fc.2), nor of a second copy of the network another rule left."""
        top, module = key.partition(".")[0], key.rpartition(".")[0]
        return all(k.rpartition(".")[0] == module for k in unused if k.partition(".")[0] == top)

    def classifier(m: KeyMapping) -> bool:
        """Of the head's input size; or, in a file a layout read, a transformers ``classifier``
        (every ``*ForImageClassification`` names it so) of another input (DINOv2's CLS + mean)."""
        dims = [d for d in m.checkpoint_shape if d != 1]
        if dims[1:] == [shape[1]]:
            return True
        return plan.layout is not None and len(dims) == 2 and m.checkpoint_key.endswith("classifier.weight")

    found = [m for m in plan.unexpected if alone(m.checkpoint_key) and classifier(m)]
    if not found:
        return ""
    first = found[0]
    classes = [d for d in first.checkpoint_shape if d != 1][0]
    module = first.checkpoint_key.rpartition(".")[0]
    head = weight.rpartition(".")[0]  # type: ignore[union-attr]
    extra = [h for h in (target.stages.extra_heads if target.stages is not None else ()) if h
             and any(k == h or k.startswith(h + ".") for k in plan.new_head)]
    if extra:  # a distilled DeiT's head and head_dist, averaged: one classifier in one of them computes something else
        heads = ", ".join([head, *extra])
        return (f"the file holds a trained {classes}-class classifier ({first.checkpoint_key} "
                f"{list(first.checkpoint_shape)}) that has no place in this model's heads ({heads}, which its "
                f"output combines): loaded into {head} alone, it would be combined with a random {extra[0]}, so the "
                f"heads are new and random. Pass num_classes={classes} to say that is what you want, or load the "
                "file into an architecture with one head")
    if plan.layout is not None:  # the layout maps what computes the same: its classifier pools otherwise
        return (f"the file holds a trained {classes}-class classifier ({first.checkpoint_key} "
                f"{list(first.checkpoint_shape)}) that the {plan.layout} layout, which read the file, does not place "
                f"in this model's head ({head}); a layout maps a classifier only where the head computes what the "
                f"file's model did. The head is new and random: pass num_classes={classes} to say that is what you "
                "want")
    rule = "rename:" + re.escape(module) + r"\.(.+)=>" + head + r".\1"
    return (f"the file holds a trained {classes}-class classifier ({first.checkpoint_key} "
            f"{list(first.checkpoint_shape)}) that nothing placed in the model's head ({head}), so the head is new "
            f"and random: pass num_classes={classes} to say that is what you want, or rules=[r'{rule}'] to load the "
            "file's classifier")


def _restructured_head(plan: LoadPlan, shape: tuple[int, ...], head: str) -> str:
    """The sentence for a file whose head is one layer with weights of this head's input size
    under a module this model's head lacks (``fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(512,
    5))``: ``fc.1.weight``), dropped for a new random head. What sat beside it (Dropout, an
    activation) leaves no tensor in a state dict, so the head is not rebuilt from it; the
    sentence gives the rule that loads the layer as the head. "" for any other plan (several
    layers: ``__multilayer_head_note``)."""
    foreign = [m for m in plan.dropped if m.model_shape is None and m.model_key]
    if not foreign:
        return ""
    layers: dict[str, list[int]] = {}
    for m in foreign:
        if m.checkpoint_key.endswith("weight") and len(m.checkpoint_shape) >= 2:
            layers[m.checkpoint_key.rpartition(".")[0]] = [d for d in m.checkpoint_shape if d != 1] or [1]
    if not layers:
        return ""
    if len(layers) == 1:
        (module, dims), = layers.items()
        if dims[1:] == [shape[1]]:
            rule = "rename:" + re.escape(module) + r"\.(.+)=>" + head + r".\1"
            return (f"the file's head is of another structure than this model's ({head}): its one layer with weights, "
                    f"{module} {dims}, takes this head's input size, but what sat beside it (Dropout, an activation) "
                    "leaves nothing in a state dict, so zooadapt does not rebuild it, and the head is new and random. "
                    f"If the rest of it was Dropout, rules=[r'{rule}'] loads that layer as the head (what the file's "
                    f"model computed in eval()); pass num_classes={dims[0]} to say a new head is what you want")
    return ""


def _multilayer_head_note(plan: LoadPlan) -> str:
    """The report's note for a file whose head has several layers with weights where this
    model's has one: a self-supervised projection head (MoCo v2's ``fc.0`` -> ``fc.2``), whose
    loss is the point of its checkpoint and deserves no warning, or an MLP classifier, which the
    state dict does not describe (``_restructured_head``). "" for any other plan."""
    layers = [f"{m.checkpoint_key.rpartition('.')[0]} {[d for d in m.checkpoint_shape if d != 1]}"
              for m in plan.dropped if m.model_shape is None and m.model_key
              and m.checkpoint_key.endswith("weight") and len(m.checkpoint_shape) >= 2]
    if len(layers) < 2 or not plan.new_head:
        return ""
    return (f"the file's head has {len(layers)} layers with weights ({', '.join(layers)}), a projection head or an MLP "
            "classifier; what sat between them (activations, Dropout) leaves nothing in a state dict, so it is not "
            "rebuilt and the model's head is new. To keep a trained MLP classifier, build the model with it and load "
            "the file with zooadapt.load_weights(model, file)")


def _head_from_the_file(plan: LoadPlan) -> bool:
    """Whether the model's head was loaded from the checkpoint (none of it new)."""
    head = plan.head
    return bool(head) and not plan.new_head and any(
        m.model_key == head or (m.model_key or "").startswith(head + ".") for m in plan.loaded)


def run_load_weights(request: LoadRequest) -> LoadReport:
    """weights -> tensors -> plan against the user's module -> copy in place -> report."""
    started = time.perf_counter()
    request, entry = _registry_weights(request)
    # copied from where it is, a checkpoint in memory need not be copied first; unless it is the
    # model's own memory, which the copy would overwrite while still reading it (a rule swapping two keys)
    fetched, checkpoint = read_weights(request, entry, shapes_only=False, copy=False)
    target = user_target(request, entry)
    if fetched is None and checkpoint.tensors is not None:
        _keep_apart(target.model, checkpoint.tensors)
    plan = plan_checkpoint(request, target, checkpoint)
    plan.check(partial=request.partial, what=type(target.model).__name__, min_coverage=request.min_coverage)
    nonfinite = _place(request, target, plan, checkpoint, checkpoint.origin)
    trainable, total = count_parameters(target.model)
    family = target.family
    return LoadReport(
        model=entry.name if entry else type(target.model).__name__, family=family.name if family else "-",
        arch=entry.arch if entry else type(target.model).__name__, source=checkpoint.origin,
        path=str(fetched.path) if fetched else None, commit=fetched.commit if fetched else None, plan=plan,
        num_classes=None, trainable_params=trainable, total_params=total,
        seconds=time.perf_counter() - started, target="your model", nonfinite=nonfinite,
    )


def _keep_apart(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Clone each of ``tensors`` that shares memory with ``model``'s parameters or buffers."""
    own = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())
           if t.numel() and not t.is_meta}
    for key, tensor in tensors.items():
        if tensor.numel() and tensor.untyped_storage().data_ptr() in own:
            tensors[key] = tensor.clone()


def run_plan(request: LoadRequest, checkpoint: Any = None) -> LoadPlan:
    """The plan alone (nothing allocated, nothing read beyond a safetensors header): the target
    is a named model built on ``meta`` or the user's module; ``checkpoint`` a state dict, or
    None to fetch ``request.weights`` (or the named model's registry weights)."""
    named_model: tuple[ModelEntry, Family] | None = None
    entry: ModelEntry | None  # the weights' registry entry, if any (the named model's own when none)
    if request.model is None:
        assert request.name is not None
        entry, family = resolve(request.name)
        if request.family is not None:
            family = get_registry().family(request.family)
        named_model = entry, family
        request, weights_entry = _registry_weights(request)
        entry = weights_entry or entry
    else:
        request, entry = _registry_weights(request)
    fetched = None
    if isinstance(checkpoint, Mapping):
        contents = state_dict_checkpoint(checkpoint)
    else:
        if request.weights is None and entry is None:
            raise InvalidArgumentError("pass the checkpoint to plan for a model you built")
        fetched, contents = read_weights(request, entry, shapes_only=True)
    if named_model is not None:
        return plan_named_model(request, *named_model, contents, fetched)[2]
    return plan_checkpoint(request, user_target(request, entry), contents)


def _registry_weights(request: LoadRequest) -> tuple[LoadRequest, ModelEntry | None]:
    """A model name given as the weights stands for that model's registry weights (its entry).
    What ``weights=`` accepts is decided in ``zooadapt.weights.argument`` (a path that exists wins;
    torchvision's weight names and strings that are neither are refused there)."""
    from ..weights.argument import registry_entry_for

    entry = registry_entry_for(request.weights, model=request.name)
    return (replace(request, weights=None), entry) if entry is not None else (request, None)


def resolve_weights(source: Any, *, revision: str | None = None,
                    cache_dir: Any = None) -> tuple[ModelEntry | None, FetchedWeights]:
    """A checkpoint given as a model name (its registry weights), a file, a URL or ``hf://…``,
    fetched to a local file; the entry is returned when a name was given."""
    from .request import make_request

    request, entry = _registry_weights(make_request(weights=source, revision=revision, cache_dir=cache_dir))
    return entry, fetch_weights(request, entry)

"""One validated description of a load, shared by every entry point.

``load``, ``load_weights``, ``plan_for``/``inspect`` and the reload of a saved directory all
describe what they want as a ``LoadRequest``; ``make_request`` checks every argument once, in
this one place, so a bad value gets the same clear error whichever entry point it came
through, and the pipeline's steps can trust what they read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from ..contract.errors import InvalidArgumentError
from ..contract.family import WeightSource
from ..contract.rules import KeyRule, guarded, parse_rule

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from ..tuning.freezing import BNPolicy

__all__ = ["LoadRequest", "OutIndices", "make_request", "in_memory", "FOREIGN_SPELLINGS", "MAX_NUM_CLASSES"]

WeightsLike = Union[str, os.PathLike[str], WeightSource, Mapping[str, Any], "nn.Module"]
"""What ``weights=`` takes: a file, URL, ``hf://`` address or model name (a ``str`` or path),
a ``WeightSource``, or a checkpoint already in memory (a state dict, a training checkpoint's
dict, or a module whose weights to take)."""


@dataclass(frozen=True)
class OutIndices:
    """timm's ``out_indices``, carried in ``LoadRequest.out_stages`` until the model is built.

    Unlike ``out_stages`` indices (positions in the stage map), these are positions among the
    model's *feature maps*, which only the built model can tell (``zooadapt.loading.features``
    resolves them): an ``int`` n means the last n, as in timm."""

    indices: int | tuple[int, ...]


FOREIGN_SPELLINGS: dict[str, tuple[str, str]] = {
    "num_labels": ("transformers'", "num_classes"),
    "torch_dtype": ("transformers'", "dtype"),
    "device_map": ("transformers'", "device"),
    "checkpoint_path": ("timm's", "weights"),
}
"""Options other libraries spell differently: name -> (whose, zooadapt's name). They reach
``load`` as build options, where a builder would refuse them with a bare ``TypeError`` (or, for
timm's ``checkpoint_path``, load a file behind zooadapt's back); refused up front instead, naming
the zooadapt spelling."""


@dataclass(frozen=True)
class LoadRequest:
    """Everything one load needs to know, checked. See ``zooadapt.load`` for the meaning of each."""

    name: str | None = None
    """A registry or plugin model name (``load``, ``plan_for("resnet50", …)``); for ``load``, None
    until the architecture of ``weights`` is identified (``zooadapt.loading.identification``)."""
    model: nn.Module | None = None
    """A module the user built (``load_weights``, ``plan_for(my_net, …)``)."""
    family: str | None = None
    weights: WeightsLike | None = None
    revision: str | None = None
    cache_dir: str | os.PathLike[str] | None = None
    lock: str | os.PathLike[str] | bool | None = None
    distributed: bool | None = None
    pretrained: bool = True
    num_classes: int | None = None
    rules: tuple[KeyRule, ...] = ()
    skip: tuple[str, ...] = ()
    head: str | None = None
    partial: bool = False
    min_coverage: float = 0.5
    discover: bool = True
    trusted: bool = False
    use_ema: bool | None = None
    features_only: bool = False
    out_stages: Any = None
    freeze: Any = None
    bn: BNPolicy = "frozen"
    device: torch.device | None = None
    dtype: torch.dtype | None = None
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)


MAX_NUM_CLASSES = 10**8
"""The largest ``num_classes`` accepted. The largest heads in use (extreme classification, face
recognition with partial FC) have tens of millions of classes, sharded over many devices; a
``Linear`` head of 10^8 classes on even 512 features holds 5.1e10 weights, 205 GB in float32, more
than one accelerator or most hosts hold. A larger number is a slip (an id, a sample count), and
the family's builder would fail on it with an allocation or int64 overflow error that blames
the plugin."""


def _is_weights(value: object) -> bool:
    return isinstance(value, (str, os.PathLike, WeightSource)) or in_memory(value)


def in_memory(weights: object) -> bool:
    """``weights=`` a checkpoint already in memory: a mapping (a state dict, or a training
    checkpoint's dict holding one) or a module (its weights)."""
    if isinstance(weights, Mapping):
        return True
    import sys

    nn = sys.modules.get("torch.nn")  # a module can only exist once torch is imported
    return nn is not None and isinstance(weights, nn.Module)


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{name}={value!r}: pass True or False (a {type(value).__name__} is not accepted, "
                                   "since any non-empty value would read as True)")
    return value


def _rules(rules: object) -> tuple[KeyRule, ...]:
    if rules is None:
        return ()
    if isinstance(rules, (str, KeyRule)):
        rules = [rules]
    if not isinstance(rules, Sequence):
        raise InvalidArgumentError(f"rules={rules!r}: give a list of zooadapt.rules objects or rule strings "
                                   "such as 'strip:model.'")
    out = []
    for rule in rules:
        if isinstance(rule, KeyRule):
            out.append(guarded(rule))
        else:
            out.append(guarded(parse_rule(rule)))  # raises InvalidArgumentError naming the forms
    return tuple(out)  # a user's patterns run time-bounded (rules.MATCH_SECONDS), a family's as code


def _skip(skip: object) -> tuple[str, ...]:
    if skip is None:
        return ()
    if isinstance(skip, str):
        return (skip,) if skip else ()
    if not isinstance(skip, Sequence) or not all(isinstance(s, str) and s for s in skip):
        raise InvalidArgumentError(f"skip={skip!r}: give stage names or module prefixes, e.g. skip=('layer4',)")
    return tuple(skip)


def _device(device: object) -> torch.device | None:
    if device is None:
        return None
    import torch

    try:
        # any object on purpose: torch judges what it accepts, and its reason goes into our message
        parsed = torch.device(device)  # type: ignore[call-overload]
    except (RuntimeError, TypeError) as exc:
        raise InvalidArgumentError(f"device={device!r}: not a torch device ({exc}); e.g. 'cpu', 'cuda', 'cuda:1', "
                                   "'meta'") from None
    if parsed.type == "cuda" and (not torch.cuda.is_available() or (parsed.index or 0) >= torch.cuda.device_count()):
        raise InvalidArgumentError(
            f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s) visible to torch "
            f"(torch.cuda.is_available() is {torch.cuda.is_available()}); load on 'cpu', or check "
            "CUDA_VISIBLE_DEVICES and that torch was built with CUDA")
    if parsed.type == "cpu" and parsed.index not in (None, 0):
        # torch.device accepts 'cpu:1', but torch.load cannot restore a tensor there
        raise InvalidArgumentError(f"device={device!r}: there is one CPU device, with no index; pass 'cpu'")
    return parsed


def _dtype(dtype: object) -> torch.dtype | None:
    if dtype is None:
        return None
    import torch

    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."), dtype)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InvalidArgumentError(f"dtype={dtype!r}: give a floating torch dtype such as torch.bfloat16, "
                                   "torch.float16 or torch.float32")
    return dtype


def _out_indices(value: object) -> OutIndices:
    hint = "give timm's out_indices: feature-map indices such as (1, 2, 3, 4), or an int n for the last n"
    if isinstance(value, bool) or not isinstance(value, (int, Sequence)) or isinstance(value, str):
        raise InvalidArgumentError(f"out_indices={value!r}: {hint}")
    if isinstance(value, int):
        if value < 1:
            raise InvalidArgumentError(f"out_indices={value!r}: an int n asks for the last n feature maps; "
                                       f"n must be >= 1. Or {hint}")
        return OutIndices(value)
    items = tuple(value)
    if not items or not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
        raise InvalidArgumentError(f"out_indices={value!r}: {hint}")
    return OutIndices(items)


_OUT_STAGES_FORMS = ("True, a stage name such as 'layer4', a stage index (0 is usually the stem), or a list or tuple "
                     "of them")


def _out_stages(value: object) -> None:
    """Refuse a ``features_only=`` selection of a type outside its forms before anything is built.

    A set is refused too: outputs come back in the order given, and a set has none (the order of
    strings in a set changes from one process to the next); bytes would read as a list of ints."""
    if isinstance(value, OutIndices) or (isinstance(value, (str, int)) and not isinstance(value, bool)):
        return
    if not isinstance(value, Sequence) or isinstance(value, (bytes, bytearray)):
        why = (" (a set has no order, and outputs come back in the order given)"
               if isinstance(value, (set, frozenset)) else "")
        raise InvalidArgumentError(f"features_only={value!r}: {type(value).__name__} is not accepted{why}; "
                                   f"give {_OUT_STAGES_FORMS}")
    bad = [item for item in value if isinstance(item, bool) or not isinstance(item, (str, int))]
    if bad:
        raise InvalidArgumentError(f"features_only={value!r}: {bad[0]!r} ({type(bad[0]).__name__}) is neither a "
                                   f"stage name nor an index; give {_OUT_STAGES_FORMS}")


def _foreign_options(options: Mapping[str, Any], where: str) -> None:
    """Refuse options spelled as other libraries spell them, naming zooadapt's spelling."""
    for key, value in options.items():
        if key in FOREIGN_SPELLINGS:
            whose, ours = FOREIGN_SPELLINGS[key]
            raise InvalidArgumentError(f"{key}= is {whose} name: pass {ours}={value!r} to zooadapt.load")
        if key in ("out_indices", "out_stages", "features_only"):
            raise InvalidArgumentError(f"{key} is an option of zooadapt.load itself, not a build option: pass "
                                       f"{key}={value!r} to load() instead of in {where}")


def make_request(**given: Any) -> LoadRequest:
    """A ``LoadRequest`` from keyword arguments, each checked; a bad one raises
    ``InvalidArgumentError`` naming the argument, the value and what to pass instead."""
    name = given.get("name")
    if "name" in given and name is None and given.get("weights") is None:
        raise InvalidArgumentError("name=None: give a model name such as 'resnet34' (zooadapt list shows them), a "
                                   "directory written by zooadapt.save, or weights=FILE alone to load the "
                                   "architecture the file fits (zooadapt.identify)")
    if name is not None:
        if isinstance(name, os.PathLike):
            name = os.fspath(name)
        if not isinstance(name, str) or not name.strip():
            raise InvalidArgumentError(f"name={name!r}: give a model name such as 'resnet34' (zooadapt list shows "
                                       "them) or a directory written by zooadapt.save")
        given["name"] = name
    model = given.get("model")
    if model is not None:
        import torch.nn as nn

        if not isinstance(model, nn.Module):
            raise InvalidArgumentError(f"model={type(model).__name__}: give a torch.nn.Module (or a model name)")
    family = given.get("family")
    if family is not None and (not isinstance(family, str) or not family):
        raise InvalidArgumentError(f"family={family!r}: give a family name such as 'resnet' (zooadapt plugins)")
    weights = given.get("weights")
    if weights is not None and not _is_weights(weights):
        from ..weights.argument import weights_type_error  # names the forms; a torchvision enum gets our spelling

        raise weights_type_error(weights, name if isinstance(name, str) else None)
    if weights is not None and given.get("pretrained") is False:
        raise InvalidArgumentError(
            "pretrained=False builds the model with random weights, and weights= names weights to load; pass one "
            "(weights=... alone loads them)")
    revision = given.get("revision")
    if revision is not None and (not isinstance(revision, str) or not revision):
        raise InvalidArgumentError(f"revision={revision!r}: give a Hub branch, tag or 40-hex commit")
    num_classes = given.get("num_classes")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 0):
        raise InvalidArgumentError(
            f"num_classes={num_classes!r}: give the number of classes in your dataset (an integer >= 1), 0 for the "
            "backbone with its pooling and no head (embeddings), or None to keep the checkpoint's head")
    if num_classes is not None and num_classes > MAX_NUM_CLASSES:
        raise InvalidArgumentError(
            f"num_classes={num_classes:,}: more than {MAX_NUM_CLASSES:,} classes, which no one head holds (with 512 "
            "features, 10^8 classes are already 205 GB of float32 weights); give the number of classes in your "
            "dataset")
    for flag in ("pretrained", "partial", "trusted", "features_only", "discover"):
        if flag in given:
            _bool(flag, given[flag])
    use_ema = given.get("use_ema")
    if use_ema is not None:
        _bool("use_ema", use_ema)
    min_coverage = given.get("min_coverage", 0.5)
    if (isinstance(min_coverage, bool) or not isinstance(min_coverage, (int, float)) or math.isnan(min_coverage)
            or not 0 <= min_coverage <= 1):
        raise InvalidArgumentError(f"min_coverage={min_coverage!r}: give the share of the backbone that must load, "
                                   "between 0 and 1 (default 0.5)")
    bn = given.get("bn", "frozen")
    if bn not in ("frozen", "train"):
        raise InvalidArgumentError(f"bn={bn!r}: use 'frozen' (statistics fixed) or 'train' (statistics update)")
    out_indices = given.pop("out_indices", None)
    if out_indices is not None:
        if given.get("out_stages") is not None:
            raise InvalidArgumentError(
                f"out_indices={out_indices!r} and features_only={given['out_stages']!r}: pass one. out_indices= "
                "counts feature maps as timm does, with features_only=True; features_only=[...] names stages (or "
                "counts them in model.zooadapt.stages)")
        if not given.get("features_only"):
            raise InvalidArgumentError(f"out_indices={out_indices!r} selects the feature maps of a headless "
                                       "backbone, as in timm's features_only: pass features_only=True")
        given["out_stages"] = _out_indices(out_indices)
    if given.get("out_stages") is not None and not given.get("features_only"):
        raise InvalidArgumentError("out_stages= selects the outputs of a headless backbone: pass the stages as "
                                   "features_only=[...]")
    if given.get("out_stages") is not None:
        _out_stages(given["out_stages"])
    if given.get("features_only") and num_classes is not None:
        raise InvalidArgumentError("features_only=True returns the backbone without a head; drop num_classes=")
    head = given.get("head")
    if head is not None and not isinstance(head, str):
        raise InvalidArgumentError(f"head={head!r}: give your classifier's module prefix, e.g. 'fc'")
    model_kwargs = given.get("model_kwargs") or {}
    if not isinstance(model_kwargs, Mapping) or not all(isinstance(k, str) for k in model_kwargs):
        raise InvalidArgumentError(f"model_kwargs={model_kwargs!r}: give a dict of build options, e.g. "
                                   "{'drop_path_rate': 0.1}")
    build_options = given.pop("build_options", {})
    _foreign_options(build_options, "the keyword arguments passed on to the builder")
    _foreign_options(model_kwargs, "model_kwargs")
    model_kwargs = {**model_kwargs, **build_options}
    given.update(rules=_rules(given.get("rules")), skip=_skip(given.get("skip")), min_coverage=float(min_coverage),
                 device=_device(given.get("device")), dtype=_dtype(given.get("dtype")), model_kwargs=dict(model_kwargs))
    idle = [name for name in ("skip", "rules") if given[name]]
    if given.get("pretrained") is False and weights is None and idle:
        raise InvalidArgumentError(
            f"{'= and '.join(idle)}= choose how a checkpoint is read, and pretrained=False reads none (the model "
            f"keeps its random initialisation); drop {'= and '.join(idle)}=, or load weights")
    return LoadRequest(**given)

"""timm's own checkpoint conversions, as a layout of the timm family.

About 60 timm model modules hand ``build_model_with_cfg`` a ``pretrained_filter_fn`` (mostly
``checkpoint_filter_fn(state_dict, model)``) that turns the original authors' checkpoints into
timm's names and layouts: Facebook's ConvNeXt, torchvision's VGG (a linear classifier that is a
7x7 convolution in timm), Microsoft's Swin (downsampling moved to the next stage), the DeiT, BEiT
and EVA releases. zooadapt reuses them rather than rewriting them as rules: one layout,
``timm-checkpoint-filter``, whose ``convert`` runs the architecture's own filter.

* **Which filter.** The one the architecture's module passes as ``pretrained_filter_fn``, read
  from the module's source (``ast``, nothing guessed): a module that passes several, or one
  computed at run time, has none here.
* **Which model.** A plan sees shapes only; the filter wants the model (it reads shapes and
  window sizes from it). This plugin's ``build`` remembers what it built (``remember_build``),
  by the state dict's shapes; the filter runs with that model (on ``meta``). Two architectures
  with the same shapes whose filters differ, or give different results, are not converted.
* **What it makes of the file.** The filter runs once on stand-ins: ``meta`` tensors of the
  file's shapes, each tagged with its key, the tags following every torch operation (a
  ``__torch_function__`` subclass). What comes out is the converted checkpoint's keys and
  shapes and, for each, the file's keys its value was computed from: the plan shows each
  tensor's fate, and the report names the filter (``converted by timm's convnext
  checkpoint_filter_fn``). A filter that cannot run on stand-ins (it reads values) is not used.
* **When.** The planner tries the layout when the names do not fit as they are, and uses it only
  when the filter's result fits the model completely (``zooadapt.loading.adapt``); the load then
  runs the filter on the real tensors, so the model holds exactly what
  ``model.load_state_dict(checkpoint_filter_fn(state_dict, model))`` gives it.
"""

from __future__ import annotations

import ast
import functools
import inspect
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from zooadapt.plugin_api import Conversion, Layout, ProcessCache, hookimpl, remembered

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["TIMM_CHECKPOINT_FILTER", "AVERAGE_POOLED_VIT", "TRANSFORMERS_EFFICIENTNET", "remember_build", "filter_for",
           "convert"]

Shape = tuple[int, ...]

_BUILDS_KEPT = 256
_builds: OrderedDict[frozenset[tuple[str, Shape]], dict[str, tuple[weakref.ref[nn.Module], dict[str, Any]]]] = \
    OrderedDict()
"""The state dict's shapes of each model this plugin built -> {architecture: (the model, its build
options)}. Weak: the skeleton zooadapt keeps per architecture (on ``meta``) holds it; a model that
is gone, or whose structure a later step changed (a features-only cut prunes the skeleton's own
copy), is built again on ``meta`` from its options when a conversion needs it."""
_lock = threading.Lock()


def _shapes(model: nn.Module) -> frozenset[tuple[str, Shape]]:
    return frozenset((k, tuple(v.shape)) for k, v in model.state_dict().items())


def remember_build(arch: str, model: nn.Module, **options: Any) -> None:
    """Called by the family's ``build``: which architecture, built with which options, has these
    state-dict shapes."""
    shapes = _shapes(model)
    with _lock:
        _builds.setdefault(shapes, {})[arch] = (weakref.ref(model), dict(options))
        _builds.move_to_end(shapes)
        while len(_builds) > _BUILDS_KEPT:
            _builds.popitem(last=False)


_rebuilds: ProcessCache[tuple[Any, ...], Any] = ProcessCache(
    "timm models rebuilt on meta for their checkpoint filters", 32, "the architecture and its build options")
"""The models ``_rebuilt`` made, on ``meta`` and never handed out: planning a file against many
architectures (identification) asks for the same ones again once the skeletons' copies are gone."""


def _rebuilt(arch: str, options: dict[str, Any], shapes: frozenset[tuple[str, Shape]]) -> nn.Module | None:
    """``arch`` built again on ``meta`` with its options, if it still has ``shapes``; kept by
    what a build depends on, as zooadapt's skeletons are (the default dtype its parameters take)."""
    import torch

    key = (arch, torch.get_default_dtype(), *sorted(options.items()))
    try:
        hash(key)
    except TypeError:  # an option that is not hashable (a module, a list): built every time
        model = _built_on_meta(arch, options)
    else:
        model = _rebuilds.get_or_make(key, lambda: _built_on_meta(arch, options))
    return model if model is not None and _shapes(model) == shapes else None


def _built_on_meta(arch: str, options: dict[str, Any]) -> nn.Module | None:
    import timm
    import torch

    from zooadapt.plugin_api import skip_parameter_init

    try:
        with torch.device("meta"), skip_parameter_init():  # shapes alone: no initialiser need run
            model = timm.create_model(arch, pretrained=False, **options)
    except Exception:  # noqa: BLE001  (an architecture that cannot be built on meta: no conversion)
        return None
    return model


def _models_for(model_shapes: Mapping[str, Shape]) -> list[tuple[str, nn.Module]]:
    """The architectures built here with exactly these shapes; failing that, those whose shapes
    hold all of them (the model with its head removed: ``num_classes=0``)."""
    wanted = frozenset((k, tuple(s)) for k, s in model_shapes.items())
    with _lock:
        exact = _builds.get(wanted)
        records = [(wanted, exact)] if exact is not None else [(k, r) for k, r in _builds.items() if wanted <= k]
        entries = [(shapes, arch, ref(), options) for shapes, record in records
                   for arch, (ref, options) in record.items()]
    found = []
    for shapes, arch, model, options in entries:
        if model is None or _shapes(model) != shapes:
            model = _rebuilt(arch, options, shapes)
        if model is not None:
            found.append((arch, model))
    return found


@remembered("timm checkpoint filters by architecture", 4096, "the architecture")
def filter_for(arch: str) -> tuple[str, Callable[..., Any]] | None:
    """(name for messages, filter) for a timm architecture: what its module passes as
    ``pretrained_filter_fn``, read from the module's source; None when it passes none, several,
    or one only known at run time."""
    import timm.models

    try:
        module = sys.modules[timm.models.model_entrypoint(arch).__module__]
        tree = ast.parse(inspect.getsource(module))
    except Exception:  # not a timm architecture, or no source to read
        return None
    given = {ast.unparse(kw.value): kw.value for node in ast.walk(tree) if isinstance(node, ast.Call)
             for kw in node.keywords if kw.arg == "pretrained_filter_fn"}
    if len(given) != 1:
        return None
    (node,) = given.values()
    keywords: dict[str, Any] = {}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "partial" \
            and len(node.args) == 1:
        try:
            keywords = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
        except ValueError:
            return None
        node = node.args[0]
    if not isinstance(node, ast.Name) or not callable(fn := getattr(module, node.id, None)):
        return None  # a parameter or a computed value, not the module's own function
    short = module.__name__.rpartition(".")[2]
    name = f"timm's {short} {node.id}" + (f"({', '.join(f'{k}={v!r}' for k, v in keywords.items())})"
                                           if keywords else "")
    return name, functools.partial(fn, **keywords) if keywords else fn


def _run(fn: Callable[..., Any], state: dict[str, Any], model: nn.Module) -> Any:
    """The filter called as timm's ``load_pretrained`` calls it: with the model when it takes one."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    return fn(state, model) if len(params) >= 2 else fn(state)


# -- stand-ins that remember where their values came from -------------------------------------------


@functools.lru_cache(maxsize=1)
def _traced_class() -> type:
    import torch
    from torch.utils._pytree import tree_flatten, tree_map

    class Traced(torch.Tensor):
        """A ``meta`` tensor carrying the file keys its value was computed from."""

        sources: frozenset[str] = frozenset()

        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            kwargs = kwargs or {}
            found = frozenset().union(*(getattr(a, "sources", ()) for a in tree_flatten((args, kwargs))[0]
                                        if isinstance(a, torch.Tensor)))
            with torch._C.DisableTorchFunctionSubclass():
                out = func(*args, **kwargs)
            name = getattr(func, "__name__", "")
            if args and isinstance(args[0], Traced) and (name == "__setitem__" or (
                    name.endswith("_") and not name.startswith("__"))):
                args[0].sources = args[0].sources | found  # written in place

            def tag(value: Any) -> Any:
                if not isinstance(value, torch.Tensor):
                    return value
                if isinstance(value, Traced):
                    value.sources = value.sources | found
                    return value
                with torch._C.DisableTorchFunctionSubclass():
                    traced = value.as_subclass(Traced)
                traced.sources = found
                return traced

            return tree_map(tag, out)

    return Traced


def _trace(fn: Callable[..., Any], checkpoint: Mapping[str, Shape], model: nn.Module
           ) -> tuple[dict[str, Shape], dict[str, tuple[str, ...]], frozenset[str]] | None:
    """The filter run on stand-ins of the file: (converted key -> shape, converted key -> file keys
    it came from in file order, converted keys that are a file tensor as it is); None when it
    cannot run on them."""
    import torch

    traced = _traced_class()
    order = {k: n for n, k in enumerate(checkpoint)}
    stand_ins: dict[str, Any] = {}
    for key, shape in checkpoint.items():
        t = torch.empty(tuple(shape), device="meta").as_subclass(traced)
        t.sources = frozenset((key,))
        stand_ins[key] = t
    try:
        out = _run(fn, dict(stand_ins), model)
    except Exception:  # it reads values, or the file is not what it converts
        return None
    if not isinstance(out, Mapping):
        return None
    shapes: dict[str, Shape] = {}
    sources: dict[str, tuple[str, ...]] = {}
    same: set[str] = set()
    originals = {id(v): k for k, v in stand_ins.items()}
    for key, value in out.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            return None
        shapes[key] = tuple(value.shape)
        sources[key] = tuple(sorted(getattr(value, "sources", ()), key=order.__getitem__))
        if id(value) in originals:
            same.add(key)
    return shapes, sources, frozenset(same)


def convert(checkpoint: Mapping[str, Shape], model_shapes: Mapping[str, Shape]) -> Conversion | None:
    """``Layout.convert`` for the timm family: the architecture's filter run on the file's
    shapes, or None when there is no filter, it cannot run on stand-ins, it changes nothing, or
    two architectures with these shapes would convert differently."""
    found = _models_for(model_shapes)
    filters = {filter_for(arch) for arch, _ in found}
    if len(filters) != 1 or None in filters:
        return None
    ((name, fn),) = filters  # type: ignore[misc]
    results = [_trace(fn, checkpoint, model) for _, model in found]
    first = results[0]
    if first is None or any(r != first for r in results[1:]):
        return None
    shapes, sources, same = first
    if list(shapes) == list(checkpoint) and same == frozenset(shapes):
        return None  # every tensor as it was, under its own name: nothing to convert
    model = found[0][1]
    return Conversion(name=name, shapes=shapes, sources=sources, same=same,
                      apply=functools.partial(_apply, fn, model))


def _apply(fn: Callable[..., Any], model: nn.Module, tensors: Mapping[str, Any]) -> Mapping[str, Any]:
    return _run(fn, dict(tensors), model)


TIMM_CHECKPOINT_FILTER = Layout(
    name="timm-checkpoint-filter",
    family="timm",
    detect=r"(?s).+",
    rules=(),
    convert=convert,
    description="the original authors' checkpoints through the timm architecture's own checkpoint filter "
                "(Facebook's ConvNeXt, torchvision's VGG, Microsoft's Swin, DeiT III, BEiT, EVA, ...)",
)


AVERAGE_POOLED_VIT = Layout(
    name="vit-average-pooled",
    family="timm",
    detect=r"fc_norm\.weight",
    rules=(),  # timm's own names: only the pooling differs
    zoo="an average-pooled ViT",  # the report: "... with global_pool='avg', as an average-pooled ViT's file needs"
    description="a ViT fine-tuned on the mean of its patch tokens, with fc_norm and no final norm (MAE's "
                "models_vit.py with global_pool=True: 'self.fc_norm = norm_layer(embed_dim); del self.norm')",
    # timm's VisionTransformer builds fc_norm (and no final norm) exactly when it pools by average;
    # the tensors are the same for a token-pooled model, which pairs fc_norm with norm and computes
    # something else (MAE's forward: x[:, 1:].mean(1) -> fc_norm -> head)
    build_options={"vit_*": {"global_pool": "avg"}, "deit_*": {"global_pool": "avg"},
                   "deit3_*": {"global_pool": "avg"}},
)


TRANSFORMERS_EFFICIENTNET = Layout(
    name="transformers-efficientnet",
    family="timm",
    detect=r"(?:efficientnet\.)?embeddings\.convolution\.weight",
    rules=(),  # transformers' names pair with timm's module by module (the planner's pairing by order)
    zoo="transformers",
    description="transformers' EfficientNetForImageClassification (modeling_efficientnet.py), a port of the "
                "TensorFlow model: padding as TensorFlow's 'same' and BatchNorm eps 1e-3 (config.batch_norm_eps), "
                "as timm's tf_efficientnet_* builds",
    # timm's _gen_efficientnet for tf_ variants: kwargs.setdefault('bn_eps', BN_EPS_TF_DEFAULT), pad_type='same'
    build_options={"efficientnet_b[0-8]": {"bn_eps": 1e-3, "pad_type": "same"}},
)


@hookimpl
def zooadapt_register_layouts(register):  # type: ignore[no-untyped-def]
    register(TIMM_CHECKPOINT_FILTER)
    register(AVERAGE_POOLED_VIT)
    register(TRANSFORMERS_EFFICIENTNET)

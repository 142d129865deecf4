"""``load`` and ``load_weights``: the public entry points of the one load pipeline.

Each turns its arguments into a ``LoadRequest`` (checked once, in ``zooadapt.loading.request``) and runs
the pipeline's steps (``zooadapt.loading.pipeline``): name -> family -> weights -> tensors -> plan ->
model -> head -> freeze -> report. Nothing here decides anything the pipeline decides.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..contract.errors import InvalidArgumentError
from ..contract.rules import KeyRule
from ..tuning.freezing import BNPolicy
from .meta_build import build_on_meta
from .pipeline import (
    fitting_stage_map,
    reading_on_cpu,
    resolve,
    resolve_weights,
    run_load,
    run_load_weights,
    users_default_device,
)
from .report import LoadReport
from .request import LoadRequest, WeightsLike, make_request

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

__all__ = ["load", "load_weights", "build_on_meta", "resolve", "resolve_weights", "fitting_stage_map"]


def load(
    name: str | os.PathLike[str] | None = None,
    *,
    num_classes: int | None = None,
    freeze: str | int | Sequence[str] | None = None,
    weights: WeightsLike | None = None,
    revision: str | None = None,
    pretrained: bool = True,
    bn: BNPolicy = "frozen",
    partial: bool = False,
    min_coverage: float = 0.5,
    skip: Sequence[str] | str = (),
    rules: Sequence[KeyRule | str] | None = None,
    use_ema: bool | None = None,
    trusted: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    lock: str | os.PathLike[str] | bool | None = None,
    distributed: bool | None = None,
    features_only: bool | str | int | Sequence[str | int] = False,
    out_indices: int | Sequence[int] | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    **build_options: Any,
) -> nn.Module:
    """Build a pretrained backbone ready to fine-tune, in one call.

    Args:
        name: a registry name (``zooadapt list``), a name a plugin resolves, or a directory
            written by ``zooadapt.save`` (rebuilt as saved: head, frozen stages, BatchNorm policy).
            Omitted, with ``weights=FILE``: the architecture the file fits completely
            (``zooadapt.identify``); a file that fits none, or several equally, is refused with
            the candidates and their shares.
        num_classes: classes of your task; the old head is replaced by a fresh one when it
            differs. 0 removes the head (the model returns pooled embeddings; ``model.zooadapt
            .num_features`` is their width). None keeps the checkpoint's head, your fine-tune's
            class count included (with its class names when the file's metadata has them:
            ``model.zooadapt.labels``).
        freeze: stages to freeze, e.g. ``"layer1-3"``, ``"stem,layer1"``, ``":layer3"``, ``"all"``, 2.
        weights: a local checkpoint file, a URL, or ``hf://org/repo[@revision][/file]``, instead
            of the registry's source. Training checkpoints (Lightning, timm's train.py, DDP,
            ``torch.compile``, detectors, self-supervised trainers, transformers) are adapted:
            see docs/adapting.md.
        revision: Hub branch, tag or commit, overriding the registry's.
        pretrained: False builds with random initialisation and downloads nothing.
        bn: ``"frozen"`` keeps BatchNorm statistics fixed in frozen stages; ``"train"`` lets them update.
        partial: load what fits when backbone tensors are missing or mismatched, instead of
            raising; still raises when less than ``min_coverage`` of the backbone would load.
        min_coverage: the share of the backbone's parameters ``partial=True`` requires (default 0.5).
        skip: stage names or module prefixes to leave at their initialisation.
        rules: key rules (``zooadapt.rules`` objects or strings such as ``"strip:model."``) that
            run before the family's.
        use_ema: a training checkpoint's EMA weights (True) or live weights (False); default:
            EMA when the file has them, as timm does. True takes a Lightning SWA average where
            the file has no EMA. The report says which set was used.
        trusted: allow a pickle checkpoint that needs code execution (only for files you trust).
        cache_dir: Hub cache directory (default: huggingface_hub's, from ``HF_HOME``/``HF_HUB_CACHE``).
        lock: lock file pinning commit and sha256 (default: ``$ZOOADAPT_LOCK``, else ``./zooadapt.lock``
            if present); False ignores lock files.
        distributed: under an initialised torch.distributed group (default: auto), one process per
            node downloads while the others wait; every rank must then call ``load``. False opts out.
        features_only: True returns the backbone without its head, as a module whose forward
            returns the output of every stage (a tuple, in order); or the stages to return, in
            that order: stage names (``"layer2,layer4"``, ``["layer2", "layer4"]``), group names,
            or indices into the stage map, ``model.zooadapt.stages.names`` of the full model, where
            0 is usually the stem (so on ConvNeXt ``features_only=[1, 3]`` is ``stages.0`` and
            ``stages.2``). ``model.feature_info`` describes the outputs as timm's ``FeatureInfo``
            does (``channels()``, ``reduction()``, ``module_name()``).
        out_indices: timm's spelling, with ``features_only=True``: indices into the model's feature
            maps, as ``timm.create_model(..., features_only=True, out_indices=...)`` counts them
            (on ConvNeXt ``(1, 3)`` is ``stages.1`` and ``stages.3``); an int n is the last n. For
            timm models these are timm's feature maps; for the other families, the stages whose
            output is a spatial map, in stage order. Outputs come in feature order, as timm returns them.
        device: where the parameters go (``"cuda"``…): each tensor moves there on its own, with no
            full CPU copy first. ``"meta"`` plans and builds without reading any tensor (for sharding).
        dtype: floating parameters in this dtype (``torch.bfloat16``…); BatchNorm layers stay
            float32 (as AMP's ``keep_batchnorm_fp32``), which torch's kernels expect.
        **build_options: passed to the family's builder, as timm's ``create_model`` takes them
            (``drop_path_rate=0.1``, ``img_size=384`` for timm models); an option the builder
            refuses raises naming it, and another library's spelling of a zooadapt option
            (``num_labels=``, ``torch_dtype=``, ``checkpoint_path=``) raises naming zooadapt's
            (``zooadapt.loading.request.FOREIGN_SPELLINGS``). ``model_kwargs={...}`` and
            ``out_stages=`` still work, with a ``DeprecationWarning``, until zooadapt 0.3.

    The returned model carries ``model.zooadapt`` (stages, frozen stages, load report).
    """
    out_stages, model_kwargs = _old_spellings(build_options)
    if features_only is not None and not isinstance(features_only, bool):  # the stages themselves
        if out_stages is not None:
            raise InvalidArgumentError(f"features_only={features_only!r} and out_stages={out_stages!r}: pass the "
                                       "stages once, as features_only=")
        out_stages, features_only = features_only, True
    request = make_request(
        name=name, num_classes=num_classes, freeze=freeze, weights=weights, revision=revision, pretrained=pretrained,
        bn=bn, partial=partial, min_coverage=min_coverage, skip=skip, rules=rules, use_ema=use_ema, trusted=trusted,
        cache_dir=cache_dir, lock=lock, distributed=distributed, features_only=features_only, out_stages=out_stages,
        out_indices=out_indices, device=device, dtype=dtype, model_kwargs=model_kwargs, build_options=build_options,
    )
    from ..contract.saved_format import is_saved_directory
    from ..tuning.attached import loaded_info
    from .reloading import load_saved

    default = users_default_device()
    if default is not None and request.device is None:  # as torch's factories take it: where the model goes
        request = replace(request, device=default)
    with reading_on_cpu(default):
        identified = request.name is None
        if identified:
            request = replace(request, name=_identified(request))
        if is_saved_directory(request.name):
            return load_saved(request)
        model = run_load(request)
    info = loaded_info(model)
    assert info is not None and info.report is not None  # run_load records both on every model it returns
    plan = info.report.plan
    if identified and plan is not None:  # the report says the name was not given but found
        plan.notes.insert(0, f"architecture {request.name!r} identified from the file's tensors (zooadapt.identify)")
    return model


def _old_spellings(build_options: dict[str, Any]) -> tuple[Any, Any]:
    """``out_stages=`` and ``model_kwargs=``, taken out of ``build_options`` with a
    ``DeprecationWarning`` naming today's spelling (each was a second way to say one thing)."""
    import warnings

    out_stages = build_options.pop("out_stages", None)
    model_kwargs = build_options.pop("model_kwargs", None)
    if out_stages is not None:
        warnings.warn(f"load(out_stages={out_stages!r}) is now load(features_only={out_stages!r}); out_stages= "
                      "works until zooadapt 0.3", DeprecationWarning, stacklevel=3)
    if model_kwargs is not None:
        warnings.warn("load(model_kwargs={...}) is now load(..., **build_options): pass the builder's options as "
                      f"keywords ({', '.join(f'{k}=...' for k in model_kwargs) or 'drop_path_rate=0.1'}); "
                      "model_kwargs= works until zooadapt 0.3", DeprecationWarning, stacklevel=3)
    return out_stages, model_kwargs


def _identified(request: LoadRequest) -> str:
    """The name of the architecture ``request.weights`` fits completely (or the refusal)."""
    from .identification import architecture_for, identify

    assert request.weights is not None
    found = identify(request.weights, rules=list(request.rules), use_ema=request.use_ema, trusted=request.trusted,
                     revision=request.revision, cache_dir=request.cache_dir)
    return architecture_for(found)


def load_weights(
    model: nn.Module,
    source: WeightsLike,
    *,
    family: str | None = None,
    rules: Sequence[KeyRule | str] | None = None,
    skip: Sequence[str] | str = (),
    head: str | None = None,
    partial: bool = False,
    min_coverage: float = 0.5,
    use_ema: bool | None = None,
    trusted: bool = False,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> LoadReport:
    """Load a checkpoint (a registry name, a file, a URL or ``hf://…``) into a model you built.

    The checkpoint is planned against your model exactly as ``load`` plans it, wrapper prefixes
    and foreign layouts included (``zooadapt.plan_for(model, source)`` shows the plan without
    copying anything), then copied in place, so the model may already sit on a GPU or have your
    own layers; a backbone checkpoint fills ``my_net.backbone`` when that is where it fits.

    Args:
        family: lends its key rules, and its stage names when its stage map fits your model
            (so ``skip=("layer4",)`` means ResNet's layer4). A model name as ``source``
            implies its family.
        rules: key rules that run before the family's, e.g. ``["strip:encoder_q."]`` or
            ``[zooadapt.rules.Positional()]``.
        skip: stage names or module prefixes to leave untouched.
        head: your classifier's module prefix (default: the family's): a head of another
            shape is left as you built it instead of raising.
        partial: leave model tensors the checkpoint does not fill as they are, instead of
            raising (still raises below ``min_coverage`` of the backbone).

    Returns the load report: ``report.plan.left_out()`` lists every tensor of your model the
    checkpoint did not fill and why; ``report.plan.unexpected`` the checkpoint keys your model
    has no place for (never an error).
    """
    request = make_request(model=model, weights=source, family=family, rules=rules, skip=skip, head=head,
                           partial=partial, min_coverage=min_coverage, use_ema=use_ema, trusted=trusted,
                           revision=revision, cache_dir=cache_dir)
    with reading_on_cpu(users_default_device()):
        return run_load_weights(request)

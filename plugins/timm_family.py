"""The timm family: any timm model, by name (``convnext_atto``, ``convnext_atto.d2_in1k``) or by
Hub id (``timm/convnext_atto.d2_in1k``).

Everything comes from timm itself: the Hub repo and file from the model's pretrained config,
the architecture from ``timm.create_model``, the head from its classifier API
(``get_classifier``), and the stages from the grouping timm defines for layer-wise learning
rates (``group_matcher(coarse=True)``: stem, then one group per stage). Parameters timm leaves
ungrouped besides the classifier (ConvNeXt's final norm, EfficientNet's ``conv_head`` when not
grouped) form a last stage named ``final``. A model without a group matcher falls back to its
``feature_info`` stages.

``features_only=True`` (see ``features``): models whose forward runs their stages in order are
cut by zooadapt's generic machinery; the others (ViT/DeiT with a class token, Swin, a ConvNeXt
asked for its ``final`` stage) are cut by timm itself, ``prune_intermediate_layers`` on the
model instance, and answer with timm's ``forward_intermediates``.

``zooadapt list`` must not import torch or timm, so timm's pretrained names are cached in a JSON
file keyed by timm's version (``$ZOOADAPT_CACHE``, else ``$XDG_CACHE_HOME/zooadapt``, else
``~/.cache/zooadapt``), built on first use in a subprocess.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from functools import cache, lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zooadapt import (
    DataConfig,
    Family,
    InvalidArgumentError,
    ModelEntry,
    PluginError,
    Stage,
    StageMap,
    UnknownModelError,
    WeightSource,
    hookimpl,
)
from zooadapt.paths import cache_dir

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

log = logging.getLogger("zooadapt")

HUB_PREFIXES = ("timm/", "hf-hub:timm/", "hf_hub:timm/")
FINAL = "final"
_HEAD = "\0head"  # the classifier's label while stages are computed (no stage can be named so)

# -- timm's names, without importing timm -------------------------------------------------


def timm_version() -> str | None:
    try:
        return metadata.version("timm")
    except metadata.PackageNotFoundError:
        return None


_NAMES_SCRIPT = (
    "import json, sys, timm\n"
    "json.dump({'timm': timm.__version__, 'pretrained': timm.list_models(pretrained=True),\n"
    "           'architectures': timm.list_models()}, sys.stdout)\n"
)


def _names_from_timm(import_ok: bool) -> dict[str, Any]:
    """Ask timm for its names: in this process when timm is imported already or the caller is
    about to need torch anyway (``import_ok``), else in a child process, so ``zooadapt list``
    never imports torch."""
    if import_ok or "timm" in sys.modules:
        import timm

        return {"timm": timm.__version__, "pretrained": timm.list_models(pretrained=True),
                "architectures": timm.list_models()}
    result = subprocess.run([sys.executable, "-c", _NAMES_SCRIPT], capture_output=True, text=True, timeout=300,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"listing timm's models failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout)


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@lru_cache(maxsize=4)
def _names_for(version: str, directory: str, import_ok: bool) -> tuple[frozenset[str], tuple[str, ...]]:
    path = Path(directory) / f"timm-names-{version}.json"
    data: dict[str, Any] | None = None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if not data or data.get("timm") != version:
        data = _names_from_timm(import_ok)
        try:
            _write_atomically(path, data)
        except OSError as exc:  # a read-only home still lists, just without the cache
            log.debug("could not cache timm's names at %s: %s", path, exc)
    return frozenset(data.get("architectures", ())), tuple(data.get("pretrained", ()))


def timm_names(import_ok: bool = False) -> tuple[frozenset[str], tuple[str, ...]]:
    """timm's architecture names and pretrained ``arch.tag`` names (empty without timm).

    ``import_ok``: on a cold cache, ask timm in this process (the caller needs torch anyway).
    """
    version = timm_version()
    if version is None:
        return frozenset(), ()
    return _names_for(version, str(cache_dir()), import_ok)


# -- names -> entries ---------------------------------------------------------------------


def split_name(name: str) -> tuple[str, str]:
    """``timm/convnext_atto.d2_in1k`` -> (``convnext_atto``, ``d2_in1k``); the tag may be empty."""
    for prefix in HUB_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    arch, _, tag = name.partition(".")
    return arch, tag


def resolve(name: str) -> ModelEntry | None:
    """A timm model name or ``timm/`` Hub id as a registry entry, or None for other names."""
    arch, tag = split_name(name)
    if not arch or "/" in arch or not re.fullmatch(r"[\w\-]+", arch):
        return None
    architectures, _ = timm_names(import_ok=True)
    if arch not in architectures:
        if name.startswith(HUB_PREFIXES):
            raise UnknownModelError(
                f"{name!r}: timm {timm_version() or '(not installed)'} has no architecture {arch!r}. "
                "Upgrade timm if the model is newer, or check the name with zooadapt.list_models('pattern*')."
            )
        return None
    from timm.models import get_arch_pretrained_cfgs, get_pretrained_cfg

    full = f"{arch}.{tag}" if tag else arch
    try:
        cfg = get_pretrained_cfg(full)
    except RuntimeError:
        tags = sorted(get_arch_pretrained_cfgs(arch))
        raise UnknownModelError(
            f"timm model {arch!r} has no pretrained tag {tag!r}; its tags are {', '.join(tags) or 'none'}"
        ) from None
    source = None
    data = None
    num_classes = 1000
    if cfg is not None:
        tag = tag or (cfg.tag or "")
        if cfg.hf_hub_id:
            repo, _, revision = cfg.hf_hub_id.partition("@")
            source = WeightSource(repo_id=repo, filename=cfg.hf_hub_filename or "model.safetensors",
                                  revision=revision or "main")
        elif isinstance(cfg.url, str) and cfg.url:
            source = WeightSource(url=cfg.url)
        num_classes = cfg.num_classes or 1000
        data = _data_config(cfg)
    arch_tag = f"{arch}.{tag}" if tag else arch
    return ModelEntry(
        name=name, family="timm", arch=arch_tag, source=source, num_classes=num_classes, data=data,
        description=f"timm {arch_tag}" + ("" if source else " (no pretrained weights: pass weights=PATH)"),
        provider="timm_family",
    )


def _data_config(cfg: Any) -> DataConfig | None:
    try:
        return DataConfig(
            input_size=tuple(cfg.input_size), mean=tuple(cfg.mean), std=tuple(cfg.std),  # type: ignore[arg-type]
            interpolation=cfg.interpolation or "bicubic", crop_pct=float(cfg.crop_pct or 0.875),
        )
    except (TypeError, ValueError):
        return None


# -- the architecture, its head and its stages --------------------------------------------


def build(arch: str, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    import timm

    return timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)


def classifier_path(model: nn.Module) -> str:
    """The module path of the classifier timm's ``get_classifier()`` returns."""
    get = getattr(model, "get_classifier", None)
    if get is None:
        raise InvalidArgumentError(f"{type(model).__name__} has no get_classifier(); it is not a timm classifier")
    classifier = get()
    paths = {id(module): name for name, module in model.named_modules()}
    if isinstance(classifier, (tuple, list)):
        names = [paths.get(id(c), "?") for c in classifier]
        raise InvalidArgumentError(
            f"{type(model).__name__} has {len(names)} classifier heads ({', '.join(names)}); zooadapt replaces "
            "one head. Use the model's non-distilled variant."
        )
    path = paths.get(id(classifier))
    if not path or not any(True for _ in classifier.parameters()):
        raise InvalidArgumentError(f"{type(model).__name__}'s classifier has no parameters; build it with num_classes")
    return path


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _block_patterns(matcher: Any) -> list[re.Pattern[str]]:
    spec = matcher.get("blocks") if isinstance(matcher, dict) else None
    if isinstance(spec, str):
        return [re.compile(spec)]
    if isinstance(spec, (list, tuple)):
        return [re.compile(item[0]) for item in spec if isinstance(item, (list, tuple)) and item]
    return []


def _stage_name(first: str, patterns: list[re.Pattern[str]]) -> str | None:
    """What timm's block pattern matched on the group's first parameter: ``layer1``, ``stages.0``."""
    for pattern in patterns:
        m = pattern.match(first)
        if m and m.group(0).strip("."):
            return m.group(0).strip(".")
    return None


def _labels_from_groups(model: nn.Module, head: str) -> dict[str, str] | None:
    """Parameter -> stage name, from timm's coarse ``group_matcher``; None when the model has none."""
    try:
        matcher = model.group_matcher(coarse=True)  # type: ignore[operator]
    except (AttributeError, NotImplementedError, TypeError):
        return None
    from timm.models import group_parameters

    groups = sorted(group_parameters(model, matcher).items())
    stem = re.compile(matcher["stem"]) if isinstance(matcher, dict) and isinstance(matcher.get("stem"), str) else None
    patterns = _block_patterns(matcher)
    labels: dict[str, str] = {}
    used: set[str] = set()
    for index, (lid, params) in enumerate(groups):
        body = [p for p in params if not _under(p, head)]
        if not body:
            continue
        if index == 0 and stem is not None and stem.match(body[0]):
            name = "stem"
        elif len(body) < len(params):  # the group timm leaves for what no pattern matched: head and neck
            name = FINAL
        else:
            name = _stage_name(body[0], patterns) or f"stage{lid}"
        if name in used:
            name = f"{name}_{lid}"
        used.add(name)
        labels.update({p: name for p in body})
    return labels


def _labels_from_feature_info(model: nn.Module, names: list[str], head: str) -> dict[str, str] | None:
    """Parameter -> stage name from ``feature_info``: each feature module ends a stage."""
    info = getattr(model, "feature_info", None)
    anchors = [f["module"] for f in info if isinstance(f, dict) and f.get("module")] if isinstance(info, list) else []
    if not anchors:
        return None
    labels: dict[str, str] = {}
    pending: list[str] = []
    for name in names:
        if _under(name, head):
            continue
        hit = next((a for a in anchors if _under(name, a)), None)
        if hit is None:
            pending.append(name)
            continue
        # parameters before the first stage are the stem; between stages they lead into the next one
        labels.update({p: hit if labels else "stem" for p in pending})
        pending = []
        labels[name] = hit
    labels.update({p: FINAL for p in pending})
    return labels


def _compress(labels: dict[str, str]) -> list[Stage]:
    """Stages as few module prefixes as possible: the highest module whose parameters all share a
    label. ``labels`` includes the head's parameters, so no stage prefix swallows the head."""
    seen: dict[str, set[str]] = {}
    for name, label in labels.items():
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            seen.setdefault(".".join(parts[:i]), set()).add(label)
    prefixes: dict[str, list[str]] = {}
    for name, label in labels.items():
        parts = name.split(".")
        chosen = next(p for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if seen[p] == {label})
        bucket = prefixes.setdefault(label, [])
        if chosen not in bucket:
            bucket.append(chosen)
    return [Stage(label, tuple(p)) for label, p in prefixes.items() if label != _HEAD]


def stages(model: nn.Module) -> StageMap:
    """The stage map of a timm model, read from the model (see the module docstring)."""
    head = classifier_path(model)
    names = [n for n, _ in model.named_parameters()]
    labels = _labels_from_groups(model, head) or _labels_from_feature_info(model, names, head)
    if not labels:
        labels = {n: "body" for n in names if not _under(n, head)}
    ordered = {n: _HEAD if _under(n, head) else labels[n] for n in names if n in labels or _under(n, head)}
    found = _compress(ordered)
    final = [s for s in found if s.name == FINAL]
    return StageMap(tuple([s for s in found if s.name != FINAL] + final), head=head)


# -- features_only: the backbone cut after its last requested stage -------------------------


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
    from zooadapt.features import sequential_steps

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


class _IntermediatePlan:
    """Which timm feature index (or the final pooled features) answers each requested stage."""

    def __init__(self, out_stages: tuple[str, ...], index_of: dict[str, int], normed: str | None,
                 final: str | None) -> None:
        self.out_stages = out_stages
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
    feature_stages = [str(smap.stage_of(a)) for a in anchors]
    order = list(smap.names)
    start = order.index(feature_stages[0]) if feature_stages[0] in order else -1
    ok = start >= 0 and feature_stages == order[start:start + len(anchors)]
    if not ok:
        raise PluginError(
            f"features_only: timm's feature modules of {kind} ({anchors}) do not line up one to one with its "
            f"stages {order}, so timm's features cannot be named by stage")
    index_of = {s: i for i, s in enumerate(feature_stages)}
    after = order[start + len(anchors):]
    final = after[0] if len(after) == 1 else None
    offered = [*index_of, *([final] if final else [])]
    refused = [s for s in out_stages if s not in offered]
    if refused or len(after) > 1:
        raise PluginError(
            f"features_only: stage(s) {refused or after} of {kind} are not among the features timm computes "
            f"(forward_intermediates: {offered}); choose out_stages among them")
    # the last feature stage may own more than its feature module (ViT: blocks.11 and the final norm)
    owner = feature_stages[-1]
    normed = owner if smap.stage(owner).prefixes != (anchors[-1],) else None
    return _IntermediatePlan(out_stages, {s: index_of[s] for s in out_stages if s in index_of}, normed, final)


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
            indices = sorted(plain.values()) or [len(self.feature_info) - 1]  # type: ignore[attr-defined]
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


@hookimpl
def zooadapt_register_families(register):  # type: ignore[no-untyped-def]
    register(Family(
        name="timm",
        build=build,
        stages=stages,
        features=features,
        data=DataConfig(interpolation="bicubic"),
        description="any timm model: name, name.tag or timm/ Hub id; stages from timm's own grouping",
    ))


@hookimpl
def zooadapt_resolve_model(name):  # type: ignore[no-untyped-def]
    return resolve(name)


@hookimpl
def zooadapt_list_models(pattern):  # type: ignore[no-untyped-def]
    _, pretrained = timm_names()
    return [n for n in pretrained if fnmatch.fnmatchcase(n, pattern)]

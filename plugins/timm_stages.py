"""A timm model's head and stages, read from the model.

The head is the module ``get_classifier()`` returns; the stages are the grouping timm defines
for layer-wise learning rates (``group_matcher(coarse=True)``: stem, then one group per stage),
in timm's group order, which is the forward's. Parameters timm leaves ungrouped besides the
classifier (ConvNeXt's final norm), those after timm's last feature module in its group
(EfficientNet's ``conv_head``, grouped by timm with the last block), and those timm's own
``prune_intermediate_layers`` drops when only the feature maps are wanted (CaiT's and XCiT's
class attention) form a last stage named ``final``, so no stage holds both a feature map and
what runs after the last one. A model without a group matcher falls back to its
``feature_info`` stages.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from zooadapt.plugin_api import InvalidArgumentError, ProcessCache, Stage, StageMap

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["FINAL", "classifier_path", "stages"]

FINAL = "final"
_HEAD = "\0head"  # the classifier's label while stages are computed (no stage can be named so)


_SECOND_HEADS = ("head_dist", "aux_head")
"""Classifiers timm's ``reset_classifier`` replaces beside ``get_classifier()``'s: the distillation
head (DeiT, LeViT, EfficientFormer, SwiftFormer, PiT, FastViT, RepViT...) and VOLO's token-wise
auxiliary head. They are built with ``num_classes`` too, so they are heads, not backbone."""


def classifier_path(model: nn.Module) -> str:
    """The module path of the classifier timm's ``get_classifier()`` returns (the first, for a
    distilled model's pair)."""
    return classifier_paths(model)[0]


def classifier_paths(model: nn.Module) -> tuple[str, ...]:
    """Every classifier timm's ``reset_classifier`` replaces, ``get_classifier()``'s first; ``("",)``
    for a timm model without ``get_classifier()`` (an encoder such as ``qwen3_vit_88m_enc``: its
    stage map names no head); any other module without it is no timm classifier."""
    get = getattr(model, "get_classifier", None)
    if get is None:
        if type(model).__module__.startswith("timm."):  # an encoder timm builds without a classifier
            return ("",)
        raise InvalidArgumentError(f"{type(model).__name__} has no get_classifier(); it is not a timm classifier")
    classifier = get()
    paths = {id(module): name for name, module in model.named_modules()}
    found = [paths.get(id(c)) for c in (classifier if isinstance(classifier, (tuple, list)) else (classifier,))]
    path = found[0]
    if not path or not any(True for _ in model.get_submodule(path).parameters()):
        raise InvalidArgumentError(f"{type(model).__name__}'s classifier has no parameters; build it with num_classes")
    extra = [p for p in found[1:] if p] + [n for n in _SECOND_HEADS if n in model._modules and n not in found
                                           and any(True for _ in model._modules[n].parameters())]
    return (path, *dict.fromkeys(extra))


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
    """Parameter -> stage name, from timm's coarse ``group_matcher``; None when the model has none
    (or, as RDNet, asserts that it has no coarse grouping: ``feature_info`` then names the stages)."""
    try:
        matcher = model.group_matcher(coarse=True)  # type: ignore[operator]
    except (AttributeError, AssertionError, NotImplementedError, TypeError):
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
    """The stage map of a timm model, read from the model (see the module docstring).

    Remembered per class and parameter names: every load of an architecture asks again, and
    timm's grouping is a function of the architecture (EfficientNet-B0: 1.5 ms a time)."""
    names = tuple(n for n, _ in model.named_parameters())
    if "group_matcher" in model.__dict__ or "get_classifier" in model.__dict__:  # patched on the instance
        return _read_stages(model, list(names))
    return _stages_for(type(model), names, model)


_stage_cache: ProcessCache[tuple[type, tuple[str, ...]], StageMap] = ProcessCache(
    "timm stage maps", 64, "the model's class (timm's code, so its version) and its parameter names")


def _stages_for(cls: type, names: tuple[str, ...], model: nn.Module) -> StageMap:
    return _stage_cache.get_or_make((cls, names), lambda: _read_stages(model, list(names)))


def _anchors(model: nn.Module) -> list[str]:
    """timm's feature modules (``feature_info``'s ``module``), in timm's order."""
    info = getattr(model, "feature_info", None)
    found = [f.get("module") for f in info if isinstance(f, dict)] if isinstance(info, list) else []
    return [str(a) for a in found] if found and all(found) else []


def _final_after_last_feature(model: nn.Module, labels: dict[str, str], names: list[str]) -> dict[str, str]:
    """``labels`` with the parameters that follow timm's last feature module inside its group moved
    to ``final``. timm groups EfficientNet's ``conv_head``/``bn2`` (and MobileNet v3's, RegNet's…)
    with the last block for layer decay, so the stage ``blocks.6`` would not end where the feature
    map ``blocks.6`` does, and ``features_only`` could not return it; as a stage of its own, the
    head's convolution is what it is, the network's last step before pooling. The same holds for
    whatever else timm puts in the groups of the last feature module and the model registers after
    it (ViT's final norm, CoaT-Lite's ``norm4`` beside ``serial_blocks4.1``): it runs after the last
    feature map."""
    anchors = _anchors(model)
    if not anchors:
        return labels
    # a feature module timm left ungrouped with the neck (Qwen3-ViT's last block beside its merger)
    # is a stage of its own, not part of what runs after the feature maps
    labels = {n: next((a for a in anchors if _under(n, a)), label) if label == FINAL else label
              for n, label in labels.items()}
    last = anchors[-1]
    owners = {labels[n] for n in names if _under(n, last) and n in labels} - {FINAL}
    if not owners:
        return labels
    # only what the model registers after the feature module: SelecSLS groups its whole conv head
    # (head.0-3) and its last map is head.3, so head.0-2 run before it and stay in its stage
    end = max(i for i, n in enumerate(names) if _under(n, last))
    after = set(names[end + 1:])
    return {n: FINAL if label in owners and n in after else label for n, label in labels.items()}


def _dropped_with_the_head(model: nn.Module, labels: dict[str, str]) -> dict[str, str]:
    """``labels`` with what timm itself drops when only the feature maps are wanted moved to ``final``.

    CaiT's class token and class-attention blocks run after every feature map, but timm groups the
    first class-attention block with ``blocks.22`` (for layer decay), so that stage would hold both
    a feature map and what runs after the last one, and no cut could end where the map does. Which
    parameters run after the features is timm's knowledge: ``prune_intermediate_layers`` keeping
    every feature map (with the head and final norm) removes exactly them, so it is asked, on a
    ``meta`` copy. XCiT's class-attention blocks, groups of their own after the last map, go to
    ``final`` the same way, and so does the final norm of a model whose ``feature_info`` names
    modules it does not have (MViTv2, Twins). Only asked where a stage holding a feature module
    also holds parameters outside every feature module, where stages other than ``final`` follow
    the last map's, or where no feature module is found (else the answer could change no label)."""
    anchors = _anchors(model)
    if not anchors or not hasattr(model, "prune_intermediate_layers"):
        return labels

    def featured(name: str) -> bool:
        return any(_under(name, a) for a in anchors)

    with_maps = {label for name, label in labels.items() if featured(name)} - {FINAL}
    order = list(dict.fromkeys(labels.values()))  # timm's group order
    last = max((order.index(label) for label in with_maps), default=len(order))
    mixed = any(label in with_maps and not featured(name) for name, label in labels.items())
    unnamed = not with_maps  # feature_info names modules the model does not have (MViTv2's, Twins' block.N)
    if not (mixed or unnamed) and not [label for label in order[last + 1:] if label != FINAL]:
        return labels
    from zooadapt.plugin_api import meta_copy

    pruned = meta_copy(model)
    try:
        pruned.prune_intermediate_layers(len(anchors), prune_norm=True, prune_head=True)  # type: ignore[operator]
    except Exception:  # noqa: BLE001  (timm's surgery does not apply to this model: its groups stand)
        return labels
    kept = {n for n, _ in pruned.named_parameters()}
    return {n: FINAL if n not in kept else label for n, label in labels.items()}


def _read_stages(model: nn.Module, names: list[str]) -> StageMap:
    head, *extra = classifier_paths(model)
    labels = _labels_from_groups(model, head) or _labels_from_feature_info(model, names, head)
    if not labels:
        labels = {n: "body" for n in names if not _under(n, head)}
    labels = _dropped_with_the_head(model, _final_after_last_feature(model, labels, names))

    def in_head(name: str) -> bool:
        return _under(name, head) or any(_under(name, h) for h in extra)

    ordered = {n: _HEAD if in_head(n) else labels[n] for n in names if n in labels or in_head(n)}
    # stages run in timm's group order (the forward's), not in the order the model registers its
    # parameters: CoaT registers every patch embedding before any block
    rank = {label: i for i, label in enumerate(dict.fromkeys(labels.values()))}
    found = sorted(_compress(ordered), key=lambda s: (s.name == FINAL, rank.get(s.name, len(rank))))
    return StageMap(tuple(found), head=head, extra_heads=tuple(extra))

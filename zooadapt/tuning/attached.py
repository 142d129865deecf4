"""Stage maps remembered on a model zooadapt did not load: given once, known to every later call.

A model from ``zooadapt.load`` carries its stage map in ``model.zooadapt``. A network the user
built has none, so ``zooadapt.freeze(net, "layer1-3", stages=smap)`` worked and the next
``param_groups(net)`` raised until ``stages=`` came again. Now a map that fits the model, given
to any call (``freeze``, ``unfreeze``, ``param_groups``…) or to :func:`attach`, is kept on the
model as a plain attribute (as the frozen-BatchNorm record is): ``deepcopy`` and pickling carry
it, the state dict does not, and a LightningModule holding the model is searched for it as for a
loaded one. It is not ``model.zooadapt``: that attribute means "built by zooadapt", which ``save``
and ``data_config`` rely on to rebuild the model by name.

Reading a family's map from a model (``attach(net, family=...)``, and the error that suggests
one) is the only reason this layer looks into the registry, and it does so only then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..contract.errors import InvalidArgumentError
from ..contract.stages import StageMap
from .wrappers import STAGES_ATTR, unwrap

if TYPE_CHECKING:
    import torch.nn as nn

    from ..loading.report import ModelInfo

__all__ = ["attach"]


def loaded_info(model: object) -> ModelInfo | None:
    """``model.zooadapt``, what zooadapt knows about a model it loaded (not searched for inside it), or None.

    Typed for the checker: torch's stubs type every attribute of a module as ``Tensor | Module``."""
    return getattr(model, "zooadapt", None)


def remembered(model: object) -> StageMap | None:
    """The stage map remembered on ``model`` itself (not searched for inside it), or None."""
    found = getattr(model, "__dict__", {}).get(STAGES_ATTR)
    return found if isinstance(found, StageMap) else None


def fits(model: nn.Module, smap: StageMap) -> bool:
    """Whether every stage prefix and the head name a module or parameter of ``model``.

    The criterion ``zooadapt.load(model=...)`` uses to lend a family's stage names to a user's
    module: a map written for other names would freeze nothing, so it is not kept."""
    prefixes = [p for s in smap.stages for p in s.prefixes] + ([smap.head] if smap.head else [])
    if not prefixes:
        return False
    names = {n for n, _ in model.named_modules()} | {n for n, _ in model.named_parameters()}
    return all(p in names for p in prefixes)


def remember(model: nn.Module, smap: StageMap) -> None:
    """Keep ``smap`` on a model zooadapt did not load, if it fits; the latest map given wins.

    A loaded model keeps the map it was loaded with (a ``stages=`` given to one call on it is
    for that call only)."""
    if "zooadapt" in getattr(model, "__dict__", {}) or remembered(model) is smap:
        return
    if fits(model, smap):
        model.__dict__[STAGES_ATTR] = smap


def _family_maps(model: nn.Module) -> list[tuple[str, StageMap]]:
    """``(family, map)`` for every registered family whose stage map fits ``model``, best first.

    Best: the family named like the model's class (``mobilenet_v2`` for ``MobileNetV2``; a
    MobileNet v2 also fits v3's reader), then the one with the most stages."""
    from ..host.registry import get_registry

    try:
        families = list(get_registry().families.values())
    except Exception:  # a broken plugin set: the suggestion is a courtesy, not worth a second error
        return []
    cls = type(model).__name__.lower()
    found = []
    for order, family in enumerate(families):
        try:
            smap = family.stage_map(model)
        except Exception:  # a family reading a layout it does not know
            continue
        if isinstance(smap, StageMap) and fits(model, smap):
            named = family.name.replace("_", "").lower() in cls
            found.append((not named, -len(smap.stages), order, family.name, smap))
    return [(name, smap) for *_, name, smap in sorted(found, key=lambda f: f[:3])]


def unknown_stages_error(model: nn.Module) -> InvalidArgumentError:
    """The error for a model with no known stage map, suggesting the family whose map fits it."""
    what = type(model).__name__
    maps = _family_maps(model)
    if maps:
        family, smap = maps[0]
        fix = (f"its parameters fit the {family!r} family's stage map ({smap.describe()}), so "
               f"zooadapt.attach(model, family={family!r}) once, or pass "
               f"stages=zooadapt.plugin_api.get_registry().family({family!r}).stage_map(model)")
    else:
        fix = ("no installed family's stage map fits it, so describe it once, e.g. zooadapt.attach(model, "
               "stages=StageMap((Stage('stem', ('conv1', 'bn1')), Stage('body', ('blocks',))), head='fc')) "
               "with this model's module names (from zooadapt.plugin_api import Stage, StageMap)")
    return InvalidArgumentError(
        f"this {what} was not loaded by zooadapt and no stage map was given for it, so its stages are unknown; "
        f"{fix}. A map given once (to attach, freeze, param_groups…) is remembered for every later call.")


def attach(model: nn.Module, family: str | None = None, *, stages: StageMap | None = None) -> StageMap:
    """Tell zooadapt once what the stages of your own network are; every later call knows them.

    ``family`` names a registered family whose stage map describes the model
    (``attach(torchvision.models.mobilenet_v2(), family="mobilenet_v2")``); ``stages`` gives the
    map itself. Returns the map, now remembered on the model: ``freeze``, ``unfreeze``,
    ``frozen_stages``, ``param_groups``, ``add_param_group`` and Lightning's
    ``StageFinetuning`` then need no ``stages=`` (a ``stages=`` given to any of them is
    remembered the same way). ``model`` may be wrapped (``torch.compile``, DDP…): the map is
    kept on the model inside. A model loaded by zooadapt already knows its stages; attaching
    another map to it raises. A map whose stage prefixes or head are not modules of the model
    raises ``InvalidArgumentError`` rather than freezing nothing later.
    """
    import torch.nn as nn

    if (family is None) == (stages is None):
        raise InvalidArgumentError(
            "attach(model, family=..., stages=...): give one of them, a family name (e.g. family='resnet') or "
            "stages=zooadapt.plugin_api.StageMap(...)")
    inner = unwrap(model, search=False)
    if not isinstance(inner, nn.Module):
        raise InvalidArgumentError(f"attach needs a torch.nn.Module, got {type(model).__name__}")
    if "zooadapt" in inner.__dict__:
        info = inner.__dict__["zooadapt"]
        raise InvalidArgumentError(
            f"this model was loaded by zooadapt as {info.name!r} and knows its stages "
            f"({info.stages.describe()}); pass stages= to a single call to use other names")
    if family is not None:
        smap = _family_stage_map(inner, family)
    elif not isinstance(stages, StageMap):
        raise InvalidArgumentError(
            f"stages={stages!r}: pass a zooadapt.plugin_api.StageMap, e.g. StageMap((Stage('stem', ('conv1',)), ...), "
            "head='fc')")
    else:
        smap = stages
    if not fits(inner, smap):
        names = {n for n, _ in inner.named_modules()} | {n for n, _ in inner.named_parameters()}
        missing = [p for s in smap.stages for p in s.prefixes if p not in names]
        missing += [smap.head] if smap.head and smap.head not in names else []
        example = next((n for n, _ in inner.named_children()), None)
        raise InvalidArgumentError(
            f"the stage map does not fit this {type(inner).__name__}: {missing or 'no stage'} "
            f"{'is' if len(missing) == 1 else 'are'} not among its modules (its top-level modules are named like "
            f"{example!r}). Write the map with this model's module names.")
    inner.__dict__[STAGES_ATTR] = smap
    return smap


def _family_stage_map(model: nn.Module, family: object) -> StageMap:
    from ..host.registry import get_registry

    if not isinstance(family, str):
        raise InvalidArgumentError(f"family={family!r}: a family name, e.g. 'resnet' (zooadapt list shows them)")
    fam = get_registry().family(family)  # UnknownModelError names the installed ones
    try:
        smap = fam.stage_map(model)
    except Exception as exc:
        raise InvalidArgumentError(
            f"the {family!r} family cannot read stages from this {type(model).__name__} ({exc}); pass "
            "stages=zooadapt.plugin_api.StageMap(...) written for its module names") from None
    if not fits(model, smap):
        others = [name for name, _ in _family_maps(model) if name != family]
        hint = f" The {others[0]!r} family's map fits it." if others else ""
        raise InvalidArgumentError(
            f"the {family!r} family's stage map does not fit this {type(model).__name__} ({smap.describe()}).{hint}"
            " Pass stages=zooadapt.plugin_api.StageMap(...) written for its module names")
    return smap

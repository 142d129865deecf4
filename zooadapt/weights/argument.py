"""What ``weights=`` accepts, read in one place: a path, a model name, a ``timm/…`` id, an address.

``weights=`` (of ``load``, ``load_weights``, ``plan_for`` and ``zooadapt inspect``) takes

- a path that exists: a checkpoint file, a folder holding one, or a sharded checkpoint's index
  (``shards.py``); a path that exists wins over a model of the same name;
- a registry or plugin model name (``"resnet18"``): that model's registered weights, fetched as
  ``zooadapt.load("resnet18")`` fetches them (at the locked commit when a lock file lists it);
- a ``timm/…`` Hub id (``"timm/resnet34.tv_in1k"``), a name the timm plugin claims although it
  reads like a relative path;
- an ``hf://org/repo[@revision][/file]`` address, or an https URL pinned by ``#sha256=``.

Anything else is refused with the forms listed. torchvision's habits — ``weights="IMAGENET1K_V1"``,
``weights="DEFAULT"``, a ``ResNet50_Weights.IMAGENET1K_V1`` enum — are refused with zooadapt's
spelling: torchvision's file is not the registry's (the registry publishes timm's copies on the
Hub, and nothing here proves them byte-identical), so mapping one onto the other would be a guess.
The message gives both exact spellings: the model name, and torchvision's own URL.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..contract.errors import InvalidArgumentError, UnknownModelError, UnknownWeightsError
from ..contract.family import WeightSource

if TYPE_CHECKING:
    from ..contract.family import ModelEntry

__all__ = ["FORMS", "UnknownWeightsError", "registry_entry_for", "weights_type_error", "is_torchvision_weights_name"]

FORMS = ("weights= takes one of:\n"
         "  - a file or directory path (a checkpoint, a folder holding one, or a sharded checkpoint's "
         "model.safetensors.index.json), or an https:// URL ending in #sha256=<hex>\n"
         "  - a registry model name: its registered weights, e.g. weights='resnet18' (`zooadapt list` shows them)\n"
         "  - a timm Hub id, e.g. weights='timm/resnet34.tv_in1k'\n"
         "  - an hf:// address, hf://org/repo[@revision][/file], e.g. weights='hf://timm/resnet18.tv_in1k'\n"
         "  - a checkpoint in memory: a state dict (or a training checkpoint's dict holding one), or a module")

_CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".tar", ".ckpt", ".pkl", ".json")
_TORCHVISION_NAME = re.compile(r"^(?:DEFAULT|[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*_V\d+)$")
"""torchvision's weight enum member names: ``DEFAULT``, ``IMAGENET1K_V1``, ``IMAGENET1K_SWAG_E2E_V1``."""



def is_torchvision_weights_name(text: object) -> bool:
    return isinstance(text, str) and bool(_TORCHVISION_NAME.match(text))


def _reads_as_path(text: str) -> bool:
    """True when ``text`` can only be meant as a path (it does not exist, or it would have won)."""
    if text.endswith(_CHECKPOINT_SUFFIXES) or text.startswith(("/", "./", "../", "~", ".\\", "..\\")):
        return True
    if os.sep not in text and "/" not in text and (os.altsep is None or os.altsep not in text):
        return False
    from ..host.hooks import PluginHooks  # a name with a slash (timm's "timm/…" ids) only if a plugin claims it
    from ..host.plugin_manager import load_plugins

    return not PluginHooks(load_plugins()).claims_name(text)


def registry_entry_for(weights: object, *, model: str | None = None) -> ModelEntry | None:
    """The registry entry whose weights ``weights`` names, or None when it is a path, URL, Hub
    address or ``WeightSource`` (fetched as such).

    Raises ``InvalidArgumentError`` for torchvision's weight names (with zooadapt's spelling,
    for ``model`` when known) and ``UnknownWeightsError`` for a string that is neither a path
    that exists nor a model name.
    """
    if weights is None or isinstance(weights, (WeightSource, os.PathLike)) or not isinstance(weights, str):
        return None
    if "://" in weights or not weights.strip() or "\x00" in weights:
        return None  # parse_source reads (or refuses) these
    try:
        if Path(weights).expanduser().exists():
            return None
    except (OSError, ValueError):  # a name too long to be a path, or one with odd characters
        pass
    if is_torchvision_weights_name(weights):
        raise torchvision_habit_error(weights, model)
    if _reads_as_path(weights):
        return None  # fetch raises WeightsNotFoundError for it, naming the forms
    from ..host.registry import get_registry

    try:
        return get_registry().entry(weights)
    except UnknownModelError as exc:
        known = str(exc)
        hint = known[known.index("Did you mean"):].split("?", 1)[0] + "? " if "Did you mean" in known else ""
        raise UnknownWeightsError(
            f"weights={weights!r} is neither a file or directory that exists nor a model name zooadapt knows. "
            f"{hint}{FORMS}") from None


def weights_type_error(weights: object, model: str | None = None) -> InvalidArgumentError:
    """The error for a ``weights=`` value of a type zooadapt does not read (a torchvision enum gets
    zooadapt's spelling)."""
    if _torchvision_enum(weights):
        return torchvision_habit_error(weights, model)
    shown = repr(weights)
    if len(shown) > 200:
        shown = shown[:200] + f"... ({len(shown):,} characters)"
    return InvalidArgumentError(f"weights={shown} (of type {type(weights).__name__}) is not something zooadapt "
                                f"reads as weights. {FORMS}\n  - or a zooadapt.plugin_api.WeightSource")


def _torchvision_enum(value: object) -> bool:
    import enum

    return isinstance(value, enum.Enum) and any(
        cls.__name__ == "WeightsEnum" and cls.__module__.startswith("torchvision.") for cls in type(value).__mro__)


def torchvision_habit_error(weights: Any, model: str | None) -> InvalidArgumentError:
    """``weights="IMAGENET1K_V1"``, ``"DEFAULT"`` or ``ResNet50_Weights.IMAGENET1K_V1``, refused
    with what to write instead: the model's name, or torchvision's own file by its URL."""
    member, arch = _torchvision_member(weights, model)
    shown = f"weights={weights!r}" if isinstance(weights, str) else f"weights={type(weights).__name__}.{weights.name}"
    about = f"{arch}'s" if arch else "a model's"
    what = f" ({type(member).__name__}.{member.name})" if member is not None else ""
    name = model or arch
    entry = _entry_or_none(name)
    if entry is not None and entry.source is not None:
        registry = (f"zooadapt.load({entry.name!r}) loads the registry's pretrained weights for it "
                    f"({entry.source.describe()})")
    elif name:
        registry = f"zooadapt.load({name!r}) loads the weights zooadapt knows for it"
    else:
        registry = "zooadapt.load(NAME) loads a model with its registered weights (`zooadapt list` shows the names)"
    url = getattr(member, "url", None)
    exact = (f"; to load exactly torchvision's file, pass weights={url!r} (its name carries the sha256 prefix "
             "torchvision checks)") if isinstance(url, str) and url else ""
    return InvalidArgumentError(
        f"{shown} is torchvision's name for {about} weights{what}, which zooadapt does not map onto its own: "
        f"{registry}{exact}. Pass a file path, an hf:// address or a model name to weights=.")


def _entry_or_none(name: str | None) -> ModelEntry | None:
    if not name:
        return None
    from ..host.registry import get_registry

    try:
        return get_registry().entry(name)
    except Exception:  # noqa: BLE001  (only a message is at stake: any failure leaves the generic wording)
        return None


def _torchvision_member(weights: Any, model: str | None) -> tuple[Any, str | None]:
    """(the torchvision enum member meant, torchvision's model name) as far as torchvision says."""
    if not isinstance(weights, str):
        return weights, _torchvision_model_of(type(weights))
    entry = _entry_or_none(model)
    arch = entry.arch if entry is not None else model
    if not arch:
        return None, None
    try:
        from torchvision.models import get_model_weights

        member = get_model_weights(arch)[weights]
    except Exception:  # noqa: BLE001  (torchvision missing, not a torchvision model, or no such member)
        return None, arch
    return member, arch


def _torchvision_model_of(enum_class: type) -> str | None:
    try:
        from torchvision.models import get_model_weights, list_models

        for name in list_models():
            if get_model_weights(name) is enum_class:
                return name
    except Exception:  # noqa: BLE001  (only a message is at stake)
        return None
    return None

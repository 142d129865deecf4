"""Build options no builder takes: one hyperparameter set on every module of a class.

Some networks differ from the architecture that holds their tensors only in a number kept on
their modules, with no constructor argument that reaches it: transformers builds its ViT with
``LayerNorm(eps=1e-12)`` where timm's ViT has 1e-6, and its MobileNet v2 with BatchNorm eps 1e-3
where torchvision's builder takes only a ``norm_layer`` callable. The tensors load either way
and the model computes something else (ViT: about 1e-4 relative), with nothing in any tensor to
say so.

Such an option is spelled ``"Class.attribute"`` (``"LayerNorm.eps"``): a name with a period,
which no Python keyword argument can be, so it never collides with a builder's own option. It
travels with the other build options: a layout declares it (``Layout.build_options``), the user
may give it (``load(..., **{"LayerNorm.eps": 1e-6})``, which wins), the report names it, it keys
the skeleton cache, and ``zooadapt.save`` records it for the reload. ``build_family`` hands the
builder the rest and sets these on the model it returns: on every module whose class, or a base
class, has that name. One that reaches no module, or an attribute that is not a plain number,
flag or string, is refused rather than ignored. Nothing here imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..contract.errors import InvalidArgumentError

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["is_module_setting", "split_module_settings", "apply_module_settings", "same_kind"]

_SETTING = re.compile(r"([A-Za-z_]\w*)\.([A-Za-z_]\w*)")
_PLAIN = (bool, int, float, str)


def is_module_setting(option: str) -> bool:
    """Whether a build option is a module setting (its name has a period), not a builder's keyword."""
    return "." in option


def split_module_settings(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[tuple[str, str], Any]]:
    """(the builder's own options, {(class name, attribute): value}); a malformed setting's name
    is refused."""
    given: dict[str, Any] = {}
    settings: dict[tuple[str, str], Any] = {}
    for option, value in options.items():
        if not is_module_setting(option):
            given[option] = value
            continue
        match = _SETTING.fullmatch(option)
        if match is None:
            raise InvalidArgumentError(
                f"build option {option!r}: a name with a period sets one attribute on every module of a class, "
                "spelled 'Class.attribute' (e.g. 'LayerNorm.eps'); check the spelling")
        if not isinstance(value, _PLAIN):
            raise InvalidArgumentError(
                f"build option {option!r}={value!r}: a module setting takes a number, a flag or a string")
        settings[(match[1], match[2])] = value
    return given, settings


def same_kind(current: Any, value: Any) -> bool:
    """Whether ``value`` may replace ``current``: a flag for a flag, a number for a number (an
    int for a float and back), a string for a string."""
    if isinstance(current, bool) or isinstance(value, bool):
        return isinstance(current, bool) and isinstance(value, bool)
    if isinstance(current, (int, float)):
        return isinstance(value, (int, float))
    return isinstance(current, str) and isinstance(value, str)


def apply_module_settings(model: nn.Module, settings: Mapping[tuple[str, str], Any], arch: str) -> None:
    """Set each ``(class, attribute)`` on every module of ``model`` that is an instance of a class
    of that name; refuse one that reaches none, or would replace something other than a plain
    value (a tensor, a submodule, a method)."""
    for (class_name, attribute), value in settings.items():
        reached = 0
        for module in model.modules():
            if not any(cls.__name__ == class_name for cls in type(module).__mro__):
                continue
            current = getattr(module, attribute, None)
            if not isinstance(current, _PLAIN) or isinstance(current, bool) != isinstance(value, bool):
                raise InvalidArgumentError(
                    f"build option '{class_name}.{attribute}': {type(module).__name__}.{attribute} is "
                    f"{type(current).__name__}, not a plain number, flag or string this option could set; "
                    "name another attribute")
            if not same_kind(current, value):
                raise InvalidArgumentError(
                    f"build option '{class_name}.{attribute}'={value!r}: {type(module).__name__}.{attribute} holds "
                    f"{current!r}; give a {type(current).__name__} like it")
            setattr(module, attribute, value)
            reached += 1
        if not reached:
            raise InvalidArgumentError(
                f"build option '{class_name}.{attribute}': {arch} has no {class_name} module to set it on; "
                "name a class the model has (print(model) shows them), or drop the option")

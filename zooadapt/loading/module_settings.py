"""Build options no builder takes: one hyperparameter set on every module of a class.

Some networks differ from the architecture that holds their tensors only in a number kept on
their modules, with no constructor argument that reaches it: transformers builds its ViT with
``LayerNorm(eps=1e-12)`` where timm's ViT has 1e-6, and its MobileNet v2 with BatchNorm eps 1e-3
where torchvision's builder takes only a ``norm_layer`` callable. The tensors load either way
and the model computes something else (ViT: about 1e-4 relative), with nothing in any tensor to
say so.

Such an option is spelled ``"Class.attribute"`` (``"LayerNorm.eps"``): a name with a period,
which no Python keyword argument can be, so it never collides with a builder's own option. Where
one module differs from the others of its class (transformers' ConvNeXt builds its final
LayerNorm with ``config.layer_norm_eps``, 1e-12, and the others with 1e-6), the module's path in
the model names it instead: ``"head.norm.eps"`` (a path begins in lower case, a class in upper
case). A path's setting is applied after the class settings, so it wins over them. It
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

_SETTING = re.compile(r"([A-Z]\w*)\.([A-Za-z_]\w*)")
_PATH_SETTING = re.compile(r"([a-z_0-9][\w]*(?:\.\w+)*)\.([A-Za-z_]\w*)")
_PLAIN = (bool, int, float, str)

Setting = tuple[str, str, str]
"""("class" or "path", the class name or the module's path, the attribute)."""


def is_module_setting(option: str) -> bool:
    """Whether a build option is a module setting (its name has a period), not a builder's keyword."""
    return "." in option


def split_module_settings(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[Setting, Any]]:
    """(the builder's own options, {("class" | "path", class name | module path, attribute): value}),
    the class settings first; a malformed setting's name is refused."""
    given: dict[str, Any] = {}
    by_class: dict[Setting, Any] = {}
    by_path: dict[Setting, Any] = {}
    for option, value in options.items():
        if not is_module_setting(option):
            given[option] = value
            continue
        match = _SETTING.fullmatch(option)
        path = None if match is not None else _PATH_SETTING.fullmatch(option)
        if match is None and path is None:
            raise InvalidArgumentError(
                f"build option {option!r}: a name with a period sets one attribute, on every module of a class "
                "('Class.attribute', e.g. 'LayerNorm.eps') or on the module at a path ('path.attribute', e.g. "
                "'head.norm.eps'); check the spelling")
        if not isinstance(value, _PLAIN):
            raise InvalidArgumentError(
                f"build option {option!r}={value!r}: a module setting takes a number, a flag or a string")
        if match is not None:
            by_class[("class", match[1], match[2])] = value
        else:
            assert path is not None
            by_path[("path", path[1], path[2])] = value
    return given, {**by_class, **by_path}


def same_kind(current: Any, value: Any) -> bool:
    """Whether ``value`` may replace ``current``: a flag for a flag, a number for a number (an
    int for a float and back), a string for a string."""
    if isinstance(current, bool) or isinstance(value, bool):
        return isinstance(current, bool) and isinstance(value, bool)
    if isinstance(current, (int, float)):
        return isinstance(value, (int, float))
    return isinstance(current, str) and isinstance(value, str)


def apply_module_settings(model: nn.Module, settings: Mapping[Setting, Any], arch: str) -> None:
    """Set each class setting on every module of ``model`` that is an instance of a class of that
    name, then each path setting on the module at that path; refuse one that reaches no module,
    or would replace something other than a plain value (a tensor, a submodule, a method)."""
    for (kind, target, attribute), value in settings.items():
        option = f"{target}.{attribute}"
        if kind == "path":
            try:
                modules = [model.get_submodule(target)]
            except AttributeError:
                raise InvalidArgumentError(
                    f"build option {option!r}: {arch} has no module at {target!r} to set {attribute} on; name a "
                    "module path the model has (print(model) shows them) as 'path.attribute', or a class as "
                    "'Class.attribute' (e.g. 'LayerNorm.eps'), or drop the option") from None
        else:
            modules = [m for m in model.modules() if any(cls.__name__ == target for cls in type(m).__mro__)]
        for module in modules:
            _set(module, attribute, value, option)
        if not modules:
            raise InvalidArgumentError(
                f"build option {option!r}: {arch} has no {target} module to set it on; "
                "name a class the model has (print(model) shows them), or drop the option")


def _set(module: nn.Module, attribute: str, value: Any, option: str) -> None:
    current = getattr(module, attribute, None)
    if not isinstance(current, _PLAIN) or isinstance(current, bool) != isinstance(value, bool):
        raise InvalidArgumentError(
            f"build option {option!r}: {type(module).__name__}.{attribute} is {type(current).__name__}, not a "
            "plain number, flag or string this option could set; name another attribute")
    if not same_kind(current, value):
        raise InvalidArgumentError(
            f"build option {option!r}={value!r}: {type(module).__name__}.{attribute} holds {current!r}; give a "
            f"{type(current).__name__} like it")
    setattr(module, attribute, value)

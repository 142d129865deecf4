"""What a checkpoint's layout asks of the build: the hyperparameters its tensors cannot carry.

torchvision and timm publish networks under the same names (``efficientnet_b5``,
``mobilenet_v3_large``, ``convnext_tiny``) whose tensors fit each other's models, yet torchvision
built EfficientNet-B5 to B7 and MobileNet v3 with BatchNorm eps 1e-3 where timm (and zooadapt's
entries for timm's weights) use 1e-5. Every tensor would load and the model would compute
something else (a relative error near 1e-4), with nothing in any tensor to say so. So the file's
layout is read from its keys before anything is built (``Layout.matches``), and the options the
layout declares for the architecture (``Layout.build_options``; where the ``config.json`` beside
the file gives one, its value: ``Layout.config_options``) go to the family's builder, and
with them into the skeleton cache's key (``meta_build``): a skeleton built for one eps never
serves a file that needs the other.

A user's own build option wins (a file saved from a model built with timm's eps in torchvision's
names is indistinguishable from torchvision's own), and the note says which value the layout
would have chosen. ``discover=False`` (the plan a family's rules alone give, as a saved model's
reload asks) reads no layout. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..contract.errors import PluginConflictError
from ..contract.family import Family, Layout
from .discovery import wrapping_prefixes

__all__ = ["LayoutBuild", "layout_build"]



@dataclass(frozen=True)
class LayoutBuild:
    """The build a file's layout decided: ``options`` go to the builder (the layout's, less those
    the user gave), ``overridden`` holds the layout's values that the user's options replaced,
    ``built`` every option the layout names with the value the model was built with (what a saved
    model must be rebuilt with)."""

    layout: Layout
    options: Mapping[str, Any] = field(default_factory=dict)
    overridden: Mapping[str, Any] = field(default_factory=dict)
    built: Mapping[str, Any] = field(default_factory=dict)
    from_config: Mapping[str, str] = field(default_factory=dict)
    """Option -> the key of the file's ``config.json`` its value was read from."""

    def note(self, family: str, arch: str, user_options: Mapping[str, Any]) -> str:
        """The report's line: which zoo's network was built, with which options, and why."""
        zoo = self.layout.zoo or self.layout.name
        zoo += "'" if zoo.endswith("s") else "'s"  # transformers' file, torchvision's file
        built = f"built the {family} family's {arch.partition('.')[0]}"
        why = f"(the {self.layout.name} layout)"
        if self.overridden:
            yours = ", ".join(f"{k}={user_options[k]!r}" for k in self.overridden)
            theirs = ", ".join(f"{k}={v!r}" for k, v in self.overridden.items())
            return (f"{built} with {yours} as you asked, not the {theirs} that {zoo} files need {why}; "
                    "leave the option out to build as the file's zoo did")
        if self.options:
            given = ", ".join(f"{k}={v!r}" + (f" (its config.json's {self.from_config[k]})" if k in self.from_config
                                              else "") for k, v in self.options.items())
            return f"{built} with {given}, as {zoo} file needs {why}"
        return f"built the {family} family's {arch.partition('.')[0]} for {zoo} file {why}: no build option differs"


def layout_build(keys: Iterable[str], family: Family, arch: str, user_options: Mapping[str, Any],
                 layouts: Iterable[Layout] | None = None,
                 config: Callable[[], Mapping[str, Any] | None] | None = None) -> LayoutBuild | None:
    """The build the file's layout asks of ``family``'s ``arch``: None when no layout of the
    family that names its zoo or declares build options recognises the keys. ``layouts``:
    the candidates (default: every registered layout of the family). ``config``: reads the
    ``config.json`` beside the file (None when it has none), called only for a layout that
    takes options from it (``Layout.config_options``)."""
    if layouts is None:
        from ..host.layouts import registered_layouts

        layouts = registered_layouts()
    # every load asks: the keys are read only for the layouts that speak for this architecture
    deciding = [lay for lay in layouts if lay.family == family.name and _decides(lay, arch)]
    keys = keys if isinstance(keys, Mapping) else list(keys)  # a Mapping: literal patterns are one lookup
    found = [lay for lay in deciding if lay.matches(keys)]
    for prefix in wrapping_prefixes(keys) if deciding and not found else ():
        # the same file saved from a wrapper (DDP's module., Lightning's model.): the keys under it decide
        inner = {k[len(prefix):]: None for k in keys}
        found = [lay for lay in deciding if lay.matches(inner)]
        if found:
            break
    if not found:
        return None
    wanted: dict[str, tuple[Any, Layout]] = {}
    from_config: dict[str, str] = {}
    for layout in found:
        asked = layout.options_for(arch)
        for option, (key, value) in _configured(layout, asked, config).items():
            asked[option] = value
            from_config[option] = key
        for option, value in asked.items():
            if option in wanted and wanted[option][0] != value and option not in user_options:
                other = wanted[option][1]
                raise PluginConflictError(
                    f"the file matches two layouts that build {arch} differently: {_who(other)} asks for "
                    f"{option}={wanted[option][0]!r}, {_who(layout)} for {option}={value!r}. Pass {option}=... to "
                    "load() to choose, or disable one plugin with ZOOADAPT_DISABLE_PLUGINS")
            wanted[option] = (value, layout)
    chosen = next((lay for lay in found if lay.options_for(arch)), found[0])
    options = {k: v for k, (v, _) in wanted.items() if k not in user_options}
    overridden = {k: v for k, (v, _) in wanted.items() if k in user_options and user_options[k] != v}
    built = {k: user_options.get(k, v) for k, (v, _) in wanted.items()}
    return LayoutBuild(chosen, options, overridden, built, {k: v for k, v in from_config.items() if k in options})


def _configured(layout: Layout, asked: Mapping[str, Any], config: Callable[[], Mapping[str, Any] | None] | None
                ) -> dict[str, tuple[str, Any]]:
    """Option -> (the config.json key, its value), for the options the layout asks of this
    architecture that the file's config.json gives as plain values."""
    wanted = {key: option for key, option in layout.config_options.items() if option in asked}
    if not wanted or config is None:
        return {}
    found = config() or {}  # a value of another kind than the layout's default is not this option's
    values = {key: _as_option(asked[option], _config_value(found, key)) for key, option in wanted.items()}
    return {option: (key, values[key]) for key, option in wanted.items() if values[key] is not _ABSENT}


def _as_option(default: Any, value: Any) -> Any:
    """The config.json's ``value`` as the option whose layout default is ``default``: a flag for a
    flag, a number for a number, a string for a string, and a JSON list for a tuple or list of
    such (Swin v2's ``pretrained_window_sizes``), as a tuple; ``_ABSENT`` for any other kind."""
    from .module_settings import same_kind

    if value is _ABSENT:
        return _ABSENT
    if isinstance(default, (tuple, list)):
        if not isinstance(value, (tuple, list)) or not default:
            return _ABSENT
        return tuple(value) if all(same_kind(default[0], v) for v in value) else _ABSENT
    return value if same_kind(default, value) else _ABSENT


_ABSENT = object()


def _config_value(config: Mapping[str, Any], key: str) -> Any:
    """``config[key]``, or for a dotted key the value nested under its parts (``vision_config.
    hidden_act``: a whole CLIPModel's config.json keeps the image tower's settings there); ``_ABSENT``
    when the config has none."""
    if key in config:
        return config[key]
    value: Any = config
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _ABSENT
        value = value[part]
    return value


def _decides(layout: Layout, arch: str) -> bool:
    """Whether the layout speaks for this architecture's build: it declares options for it (an
    empty mapping for "builds as it is"), or it names its zoo and declares no options at all."""
    import fnmatch

    if not layout.build_options:
        return bool(layout.zoo)
    base = arch.partition(".")[0]
    return any(fnmatch.fnmatchcase(base, pattern) for pattern in layout.build_options)


def _who(layout: Layout) -> str:
    return f"{layout.name!r}" + (f" (plugin {layout.provider!r})" if layout.provider else "")

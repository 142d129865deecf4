"""An architecture's tensor signature: what ``load`` would build for a name, as plain data.

``identify`` and the "this checkpoint fits …" diagnosis plan a checkpoint into every
architecture zooadapt can load. Building ~1,400 models to learn their state dicts takes the
better part of half an hour, so each architecture is described once by its signature — its
state-dict keys and shapes in module order, which keys are buffers or second names of a
shared parameter, its head and its family — and the planner runs on that (``PlanTarget``), no
model built. ``signature_index`` keeps the signatures; this module says which names need one
(``wanted``) and computes one (``compute``) exactly as ``load`` builds: the registry entry,
its family, ``build_on_meta`` with the entry's class count and options, the family's stage map.

A file's layout may ask the architecture for build options of its own (``Layout.build_options``:
MAE's average-pooled ViT is timm's ViT built with ``global_pool='avg'``, so its final norm is
``fc_norm``); ``as_built`` describes that build, once per process, for the few names a file is
planned into (``matching``), as ``load`` would build it for that file.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..contract.caches import ProcessCache

__all__ = ["Signature", "Wanted", "wanted", "compute", "as_built"]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Signature:
    """One loadable name's architecture as its state dict describes it."""

    name: str
    family: str
    source: str
    """What the architecture comes from, and at which version: ``timm==1.0.31``, ``zooadapt``
    (a built-in family), ``zooadapt-squeezenet==0.1.0`` (a plugin's distribution)."""
    recipe: str
    """How ``load`` builds it (family, architecture, class count, options): a registry entry
    pointed at another architecture no longer matches its stored signature."""
    head: str
    keys: tuple[str, ...]
    shapes: tuple[Shape, ...]
    buffers: frozenset[int] = frozenset()
    """Positions of the keys that are buffers (running statistics…), not parameters."""
    aliases: frozenset[int] = frozenset()
    """Positions of parameter keys that name a parameter already listed (a tied weight)."""
    _shape_map: dict[str, Shape] | None = field(default=None, compare=False, repr=False)

    @property
    def state_shapes(self) -> dict[str, Shape]:
        """key -> shape, in state-dict order (what ``PlanTarget.shapes`` takes)."""
        if self._shape_map is None:
            object.__setattr__(self, "_shape_map", dict(zip(self.keys, self.shapes)))
        assert self._shape_map is not None
        return self._shape_map

    @property
    def parameters(self) -> list[str]:
        """``named_parameters()``'s names: the keys that are not buffers nor second names."""
        skip = self.buffers | self.aliases
        return [k for i, k in enumerate(self.keys) if i not in skip]

    def under_head(self, key: str) -> bool:
        return bool(self.head) and (key == self.head or key.startswith(self.head + "."))

    @property
    def same_as(self) -> tuple[Any, ...]:
        """What two names with indistinguishable architectures share."""
        return self.keys, self.shapes, self.head, self.buffers


@dataclass(frozen=True)
class Wanted:
    """A name the index must describe, and what its signature must have been computed from."""

    name: str
    family: str
    source: str
    recipe: str


def _source_of(family_name: str, registry: Any) -> str:
    """What a family's architectures come from (``Family.source``: ``timm==1.0.31``), else
    ``zooadapt`` for the built-in families, ``DIST==VERSION`` for an installed plugin's, and
    ``unversioned:NAME`` for a plugin registered in this process (``UNVERSIONED``)."""
    from ..host.plugin_manager import plugin_infos

    family = registry.families.get(family_name)
    if family is not None and family.source is not None:
        return str(family.source())
    provider = family.provider if family is not None else ""
    info = next((i for i in plugin_infos() if i.name == provider), None)
    if info is None:  # registered in this process (pm.register), not installed: no version to key by
        return f"{UNVERSIONED}{provider or family_name}"
    if info.builtin:
        return "zooadapt"
    return f"{info.distribution}=={info.version}"


UNVERSIONED = "unversioned:"
"""The start of the source of a family whose plugin was registered in the running process
rather than installed: its code may change between processes under the same name, so its
signatures are computed in each process and never kept on disk."""


def _recipe(family: str, arch: str, num_classes: int, build_kwargs: Mapping[str, Any]) -> str:
    options = ",".join(f"{k}={v!r}" for k, v in sorted(build_kwargs.items()))
    return f"{family}/{arch}/{num_classes}/{options}"


def wanted(*, listed_names: bool = True, listed: Mapping[str, Collection[str]] | None = None) -> list[Wanted]:
    """Every name ``load`` accepts without a tag: the registry's entries (built-in families,
    plugins, ``registry.toml`` and ``ZOOADAPT_REGISTRY`` files) and, with ``listed_names``, the
    architectures a family lists (``Family.listed``: timm's; a registered name shadows them, as it
    does in ``load``). ``listed`` maps a source (``timm==1.0.31``) to its names when the caller
    knows them (the shipped index lists them); otherwise the family is asked, and nothing here
    imports the family's library."""
    from ..host.registry import get_registry

    registry = get_registry()
    out = []
    for entry in registry.models.values():
        if entry.name in registry.unavailable or entry.family not in registry.families:
            continue
        out.append(Wanted(entry.name, entry.family, _source_of(entry.family, registry),
                          _recipe(entry.family, entry.arch, entry.num_classes, entry.build_kwargs)))
    if not listed_names:
        return out
    for name, family in registry.families.items():
        if family.listed is None:
            continue
        source = _source_of(name, registry)
        known = (listed or {}).get(source)
        architectures = known if known is not None else family.listed()
        out += [Wanted(n, name, source, f"{name}/{n}") for n in sorted(architectures) if n not in registry.models]
    return out


def compute(want: Wanted) -> Signature:
    """Build the name's architecture on ``meta`` as ``load`` does and read its signature
    (raises what the build raises: the caller records the failure)."""
    from ..host.registry import get_registry
    from .meta_build import build_on_meta, clear_skeletons

    registry = get_registry()
    entry = registry.entry(want.name)
    family = registry.family(entry.family)
    try:
        model = build_on_meta(family, entry.arch, entry.num_classes, **dict(entry.build_kwargs))
        return _read(want, family.stage_map(model).head, model)
    finally:
        clear_skeletons()  # thousands of architectures: keep none of them


_built: ProcessCache[tuple[Any, ...], Signature] = ProcessCache(
    "signatures of layout builds", 64, "the name, its recipe (family, architecture, class count, the entry's "
    "options), the family's build function and the options the file's layout adds")


def as_built(sig: Signature, options: Mapping[str, Any]) -> Signature:
    """``sig``'s architecture built with ``options`` besides its registry entry's (what a file's
    layout asks of it: ``layout_build``), as ``load`` builds it for that file (raises what the
    build raises). Built with no initialisation and thrown away: no skeleton is kept for it (a
    skeleton costs several builds, and a file is planned into dozens of architectures)."""
    from ..host.registry import get_registry
    from .meta_build import build_family, skip_parameter_init

    registry = get_registry()
    entry = registry.entry(sig.name)
    family = registry.family(entry.family)
    kwargs = {**entry.build_kwargs, **options}

    def make() -> Signature:
        with skip_parameter_init():
            model = build_family(family, entry.arch, entry.num_classes, kwargs)
        want = Wanted(sig.name, sig.family, sig.source, _recipe(entry.family, entry.arch, entry.num_classes, kwargs))
        return _read(want, family.stage_map(model).head, model)

    key = (sig.name, sig.recipe, family.build, tuple(sorted(options.items())))
    try:
        hash(key)
    except TypeError:  # an option that is not hashable: described every time
        return make()
    return _built.get_or_make(key, make)


def _read(want: Wanted, head: str, model: Any) -> Signature:
    """The built model's signature."""
    state = model.state_dict(keep_vars=True)
    params = {id(p) for p in model.parameters()}
    buffers, aliases, seen = set(), set(), set()
    for i, value in enumerate(state.values()):
        if id(value) not in params:
            buffers.add(i)
        elif id(value) in seen:
            aliases.add(i)
        else:
            seen.add(id(value))
    return Signature(want.name, want.family, want.source, want.recipe, head, tuple(state),
                     tuple(tuple(int(d) for d in v.shape) for v in state.values()), frozenset(buffers),
                     frozenset(aliases))

"""What a plugin declares about a backbone family, and the registry entries that point at weights.

These are plain data classes so a plugin is a few declarations plus a ``build`` function.
Nothing here imports torch: ``zooadapt list`` reads families and entries without it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .caches import remembered
from .rules import KeyRule, literal_prefix
from .stages import StageMap

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["Family", "ModelEntry", "WeightSource", "DataConfig", "Layout", "Conversion", "HubCard"]


@dataclass(frozen=True)
class DataConfig:
    """The preprocessing the weights were trained with."""

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    crop_pct: float = 0.875


@dataclass(frozen=True)
class HubCard:
    """What a plugin adds to a model ``push_to_hub`` uploads (the ``zooadapt_hub_card`` hook).

    ``tags`` join the card's tags. ``library`` names the library whose own files the plugin wrote
    beside the model, so that library loads the upload too (timm: its ``config.json``); the card
    then names it as ``library_name`` (the Hub shows its snippet and widgets) and shows
    ``snippet``, Python that loads the upload with it, ``{repo_id}`` standing for the repository.
    """

    tags: tuple[str, ...] = ()
    library: str | None = None
    snippet: str = ""


@dataclass(frozen=True)
class WeightSource:
    """Where a model's weights live: exactly one of a Hub file, a URL, or a local path.

    ``revision`` is a branch, tag or 40-hex commit; ``sha256`` (full or a prefix of at least
    8 hex digits) is checked after download when given.
    """

    repo_id: str | None = None
    filename: str = "model.safetensors"
    revision: str = "main"
    url: str | None = None
    path: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        given = [x for x in (self.repo_id, self.url, self.path) if x]
        if len(given) != 1:
            from .errors import RegistryError

            raise RegistryError(
                f"a weight source needs exactly one of hub repo, url or path, got {given or 'none'}"
            )

    def describe(self) -> str:
        if self.repo_id:  # huggingface_hub's form: hf://org/repo@revision/file
            from .hub_address import format_hub_address

            return format_hub_address(self.repo_id, self.revision, self.filename)
        return self.url or str(self.path)


@dataclass(frozen=True)
class ModelEntry:
    """A loadable model name: which family builds it, which architecture, and its weights."""

    name: str
    family: str
    arch: str
    source: WeightSource | None = None
    num_classes: int = 1000
    description: str = ""
    data: DataConfig | None = None
    build_kwargs: Mapping[str, Any] = field(default_factory=dict)
    provider: str = "registry.toml"
    """Who registered it (a file or plugin name): named in conflict errors."""
    headless: bool = False
    """The published weights carry no classifier (DINOv2, SigLIP, SAM, CLIP towers: timm's
    pretrained config says ``num_classes=0``): ``load(name)`` with no ``num_classes`` then
    returns the pooled features, as timm's ``create_model(name, pretrained=True)`` does, rather
    than a random ``num_classes``-way head. ``num_classes`` stays the width the head is built
    with when one is asked for; a file with a trained head keeps it."""


BuildFn = Callable[..., "nn.Module"]
StagesFn = Callable[["nn.Module"], StageMap]


@dataclass(frozen=True)
class Family:
    """A backbone family as a plugin declares it.

    ``build(arch, num_classes=N, **build_kwargs)`` returns the architecture with an N-class
    head; zooadapt calls it on the ``meta`` device, so it must not touch tensor data.
    ``stages`` is a fixed ``StageMap`` or a function of the built model (timm: stages read
    from the model). ``key_rules`` turn checkpoint keys into this architecture's keys.
    """

    name: str
    build: BuildFn
    stages: StageMap | StagesFn
    key_rules: tuple[KeyRule, ...] = ()
    architectures: tuple[str, ...] = ()
    default_num_classes: int = 1000
    data: DataConfig = field(default_factory=DataConfig)
    description: str = ""
    provider: str = ""
    features: Callable[..., Any] | None = None
    """Optional: ``features(model, out_stages)`` -> the forward order of the stages, as steps
    ``[(stage, (module path or parameterless module, ...)), ...]`` (zooadapt cuts and runs them),
    or a ready multi-output module keeping the model's module paths. Needed only when the
    forward does more than run the model's children in order (see ``zooadapt.loading.features``).
    The function may carry attributes that speak in feature maps (timm's plugin sets all three):
    ``feature_maps(model, smap)`` -> ``[(stage or None, info dict), ...]``, the model's maps and the
    stage each ends; ``by_index(model, indices, names)`` -> a module returning maps ``indices``
    where one ends no stage; ``default_maps(model)`` -> the maps ``features_only=True`` means."""
    feature_info: Callable[[list[dict[str, Any]], tuple[int, ...]], Any] | None = None
    """Optional: ``feature_info(dicts, out_indices)`` -> what a ``features_only`` cut carries as
    ``model.feature_info``, from timm-style info dicts (``module``, ``num_chs``, ``reduction``) and
    the outputs' positions among them (timm: timm's own ``FeatureInfo``, so code that checks for
    timm's class keeps working). None: zooadapt's ``FeatureInfo``, with the same methods."""
    listed: Callable[[], Collection[str]] | None = None
    """Optional: the architecture names ``load`` accepts for this family beyond the registry's
    entries, read without importing the library (timm: its architectures, from the plugin's name
    cache); ``zooadapt.identify`` indexes their tensor signatures."""
    source: Callable[[], str] | None = None
    """Optional: what the family's architectures come from, at which version (timm:
    ``timm==1.0.31``): signatures computed for one source are cached under it. None: ``zooadapt``
    for a built-in family, the plugin's distribution and version for another."""
    data_for: Callable[[ModelEntry], DataConfig | None] | None = None
    """Optional: the preprocessing of one entry's weights when it depends on more than the
    family (timm: the tag's pretrained config); None or a None result falls back to ``data``."""
    build_settings: Callable[[], Hashable] | None = None
    """Optional: the library's process-wide settings ``build`` reads, as a hashable value (timm:
    the flags of ``timm.layers.config``, such as fused attention, exportable, scriptable). A
    skeleton built under some settings is copied only under the same; None: ``build`` depends
    on its arguments alone (and torch's default dtype and device, which zooadapt keys by itself)."""
    copy_skeleton: bool = True
    """``zooadapt.load`` builds an architecture once per process and copies that skeleton for
    later loads (``zooadapt.loading.meta_build``). False when ``build`` depends on more than its
    arguments (global settings that change between loads), so each load runs ``build``."""

    def stage_map(self, model: nn.Module | None = None) -> StageMap:
        if isinstance(self.stages, StageMap):
            return self.stages
        if model is None:
            raise TypeError(f"family {self.name!r} reads its stages from a built model; pass one")
        return self.stages(model)


@remembered("compiled layout patterns", 256, "the pattern")
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@remembered("literal layout patterns", 256, "the pattern")
def _literal(pattern: str) -> str | None:
    """The one key ``pattern`` matches when it is plain text (``features\\.1\\.0\\.layer_scale``), else None."""
    prefix = literal_prefix(pattern)
    return prefix if prefix and re.escape(prefix) == pattern else None


def _any_key(pattern: str, keys: Iterable[str]) -> bool:
    """Whether some key fully matches ``pattern``."""
    literal = _literal(pattern)
    if literal is not None and isinstance(keys, (Mapping, AbstractSet)):  # one lookup, not a scan
        return literal in keys
    compiled, prefix = _compiled(pattern), literal_prefix(pattern)  # the prefix turns most keys away
    return any(k.startswith(prefix) and compiled.fullmatch(k) for k in keys)


Shape = tuple[int, ...]


@dataclass(frozen=True, eq=False)
class Conversion:
    """A whole-state-dict conversion, found for one checkpoint and one model: what another
    codebase's converter (timm's ``checkpoint_filter_fn``) makes of the file, told from names and
    shapes before anything loads, and the function that makes it from the real tensors.

    ``shapes`` is the converted checkpoint (key -> shape, in the converter's order); ``sources``
    names, for each converted key, the file's keys its value was computed from (empty: made by
    the converter, such as a zero bias); ``same`` lists the converted keys that are a file's tensor
    as it is (only renamed). ``apply(tensors)`` runs the converter on the file's tensors and
    returns the converted state dict. Compared by identity: each is one run of a converter.
    """

    name: str
    shapes: Mapping[str, Shape]
    sources: Mapping[str, tuple[str, ...]]
    apply: Callable[[Mapping[str, Any]], Mapping[str, Any]]
    same: frozenset[str] = frozenset()


ConvertFn = Callable[[Mapping[str, Shape], Mapping[str, Shape]], "Conversion | None"]


@dataclass(frozen=True)
class Layout:
    """One foreign naming of a family's architecture.

    ``detect`` is a regular expression; the layout applies to a checkpoint when it fully
    matches at least one key. ``rules`` run after the user's rules and before the family's.

    ``convert`` (optional) is for a layout no renaming describes, where values change too (a 1x1
    convolution that was a linear layer, a downsampling moved to the next stage): given the
    checkpoint's shapes and the model's, the ``Conversion`` of the whole state dict, or None when
    it does not apply to them. The planner plans the converted keys (and uses the layout only
    when they fit the model completely); the load applies the conversion to the real tensors.
    Such a layout recognises a file only by converting it into a model, so it is offered for its
    own family's models only, never named for another family's.

    ``zoo`` and ``build_options`` are for a file from another zoo whose network the family builds
    under the same name (torchvision's ``efficientnet_b5`` file, timm's ``efficientnet_b5``): the
    tensors fit either way, but what they compute also depends on hyperparameters no tensor
    carries (BatchNorm eps, padding). ``zoo`` names whose files these are ("torchvision"), for the
    report; ``build_options`` maps architecture patterns (``fnmatch``, ``"*"`` for all, a timm
    tag ignored) to the options the family's builder must get for such a file, e.g.
    ``{"efficientnet_b[567]": {"bn_eps": 1e-3}}``. The layout is read from the file's keys before
    the model is built (``zooadapt.loading.layout_build``); a user's own option wins, and the
    report says which was built.

    ``config_options`` maps keys of the ``config.json`` a file's library writes beside it (in
    its folder, or its Hub repository at the same commit) to build options: where the file has
    one, its value replaces the layout's default for an option the layout declares for the
    architecture. transformers' ``ViTConfig.layer_norm_eps`` is 1e-12 by default but 1e-6 in a
    ViT-MSN file with the very same keys: ``{"layer_norm_eps": "LayerNorm.eps"}``. A dotted key
    reads a nested value (``"vision_config.hidden_act"``: a whole CLIPModel's config.json keeps its
    image tower's settings there); of two keys giving one option, the later one wins.

    ``unless`` (a regular expression, optional) is what tells apart two files whose keys ``detect``
    alone cannot: the layout does not apply to a checkpoint with a key that fully matches it.
    transformers' LeViT classifier with one head (``classifier.*``) is built ``distilled=False``,
    its distilled twin (``classifier_distill.*`` too) as the architecture is: two layouts, one
    detecting ``classifier``, ``unless`` ``classifier_distill``.
    """

    name: str
    family: str
    detect: str
    rules: tuple[KeyRule, ...]
    description: str = ""
    provider: str = ""
    convert: ConvertFn | None = None
    zoo: str = ""
    build_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)
    config_options: Mapping[str, str] = field(default_factory=dict, hash=False)
    unless: str = ""

    def matches(self, keys: Iterable[str]) -> bool:
        if self.unless and not isinstance(keys, Collection):
            keys = list(keys)  # an iterator, read twice
        return _any_key(self.detect, keys) and not (self.unless and _any_key(self.unless, keys))

    def options_for(self, arch: str) -> dict[str, Any]:
        """The build options a file in this layout needs from ``arch`` (every matching pattern's,
        later patterns winning); empty when it needs none."""
        import fnmatch

        base = arch.partition(".")[0]  # timm's "efficientnet_b5.sw_in12k": the architecture is the part before
        out: dict[str, Any] = {}
        for pattern, options in self.build_options.items():
            if fnmatch.fnmatchcase(base, pattern):
                out.update(options)
        return out

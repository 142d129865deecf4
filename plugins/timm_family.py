"""The timm family: any timm model, by name (``convnext_atto``, ``convnext_atto.d2_in1k``) or by
Hub id (``timm/convnext_atto.d2_in1k``).

Everything comes from timm itself; this module declares the family and answers the hooks, and
one module per job does the work:

* ``timm_names``: timm's names without importing timm (a cache file, so ``zooadapt list`` stays fast);
* ``timm_entries``: names -> registry entries (Hub repo, file, preprocessing from the pretrained config);
* ``timm_stages``: the head and the stages, read from the built model;
* ``timm_features``: ``features_only`` cuts;
* ``timm_hub``: what a ``push_to_hub`` upload gains from timm (its ``config.json``, the ``timm`` tag).
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Any

from zooadapt.plugin_api import DataConfig, Family, hookimpl

from .timm_conversions import remember_build, zooadapt_register_layouts
from .timm_entries import claims, data_config_from_cfg, resolve
from .timm_features import feature_info, features
from .timm_hub import hub_card
from .timm_names import timm_names
from .timm_names import timm_version as _timm_version
from .timm_stages import stages

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["build", "stages", "features", "resolve", "zooadapt_register_layouts"]


def build(arch: str, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    import timm

    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
    remember_build(arch, model, num_classes=num_classes, **kwargs)  # for timm's checkpoint filters (timm_conversions)
    return model


@hookimpl
def zooadapt_register_families(register):  # type: ignore[no-untyped-def]
    register(Family(
        name="timm",
        build=build,
        stages=stages,
        features=features,
        feature_info=feature_info,
        data=DataConfig(interpolation="bicubic"),
        description="any timm model: name, name.tag or timm/ Hub id; stages from timm's own grouping",
        listed=_listed,
        source=_source,
        build_settings=_build_settings,
    ))


def _build_settings() -> tuple[tuple[str, object], ...]:
    """timm's process-wide layer flags, which its constructors read (``set_fused_attn``,
    ``set_exportable``, ``set_scriptable``, ``set_no_jit``, ``set_reentrant_ckpt``...): every
    upper-case flag of ``timm.layers.config``, so that one a later timm adds is keyed too."""
    from timm.layers import config

    global _FLAGS
    if _FLAGS is None:  # which names are flags is fixed by timm's source; their values are read every time
        _FLAGS = tuple(sorted(k for k, v in vars(config).items()
                              if k.lstrip("_").isupper() and isinstance(v, (bool, int, float, str))))
    return tuple((name, getattr(config, name, None)) for name in _FLAGS)


_FLAGS: tuple[str, ...] | None = None


def _listed() -> frozenset[str]:
    """timm's architecture names, from the plugin's cache (no timm import on a warm cache)."""
    return timm_names()[0]


def _source() -> str:
    """The timm release the architectures come from: their signatures are cached per release."""
    return f"timm=={_timm_version()}"


@hookimpl
def zooadapt_resolve_model(name):  # type: ignore[no-untyped-def]
    return resolve(name)


@hookimpl
def zooadapt_list_models(pattern):  # type: ignore[no-untyped-def]
    _, pretrained = timm_names()
    return [n for n in pretrained if fnmatch.fnmatchcase(n, pattern)]


@hookimpl
def zooadapt_claims_name(name):  # type: ignore[no-untyped-def]
    return True if claims(name) else None


@hookimpl
def zooadapt_data_config(model):  # type: ignore[no-untyped-def]
    cfg = getattr(model, "pretrained_cfg", None)
    return data_config_from_cfg(cfg) if cfg else None


@hookimpl
def zooadapt_hub_card(model, config, folder):  # type: ignore[no-untyped-def]
    return hub_card(model, config, folder)

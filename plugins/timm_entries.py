"""timm names as registry entries: ``convnext_atto``, ``convnext_atto.d2_in1k``, ``timm/convnext_atto.d2_in1k``.

The Hub repo and file come from the tag's pretrained config, and so does the preprocessing
(``data_config_from_cfg``, also used for any timm model zooadapt is handed).
"""

from __future__ import annotations

import re
from typing import Any

from zooadapt.plugin_api import DataConfig, ModelEntry, UnknownModelError, WeightSource, remembered

from .timm_names import timm_names, timm_version

__all__ = ["HUB_PREFIXES", "split_name", "resolve", "claims", "data_config_from_cfg"]

HUB_PREFIXES = ("timm/", "hf-hub:timm/", "hf_hub:timm/")


def claims(name: str) -> bool:
    """True for ``timm/…`` Hub ids: model names, although they read like relative paths."""
    return name.startswith(HUB_PREFIXES)


def split_name(name: str) -> tuple[str, str]:
    """``timm/convnext_atto.d2_in1k`` -> (``convnext_atto``, ``d2_in1k``); the tag may be empty."""
    for prefix in HUB_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    arch, _, tag = name.partition(".")
    return arch, tag


@remembered("timm entries", 256, "the name and timm's version", context=timm_version)
def resolve(name: str) -> ModelEntry | None:
    """A timm model name or ``timm/`` Hub id as a registry entry, or None for other names
    (remembered per name and timm version: timm's pretrained configs come with its version)."""
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
    num_classes, headless = 1000, False
    if cfg is not None:
        tag = tag or (cfg.tag or "")
        if cfg.hf_hub_id:
            repo, _, revision = cfg.hf_hub_id.partition("@")
            source = WeightSource(repo_id=repo, filename=cfg.hf_hub_filename or "model.safetensors",
                                  revision=revision or "main")
        elif isinstance(cfg.url, str) and cfg.url:
            source = WeightSource(url=cfg.url)
        num_classes = cfg.num_classes or 1000
        headless = cfg.num_classes == 0  # published without a classifier: timm builds these headless
        data = data_config_from_cfg(cfg)
    arch_tag = f"{arch}.{tag}" if tag else arch
    return ModelEntry(
        name=name, family="timm", arch=arch_tag, source=source, num_classes=num_classes, data=data,
        description=f"timm {arch_tag}" + ("" if source else " (no pretrained weights: pass weights=PATH)"),
        provider="timm_family", headless=headless,
    )


def data_config_from_cfg(cfg: Any) -> DataConfig | None:
    """The preprocessing in a timm pretrained config (a ``PretrainedCfg`` or its dict), resolved
    the way timm resolves it (``timm.data.resolve_data_config``); None when it holds none."""
    from timm.data import resolve_data_config

    raw = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    try:
        resolved = resolve_data_config(pretrained_cfg=raw)
        return DataConfig(
            input_size=tuple(resolved["input_size"]), mean=tuple(resolved["mean"]),  # type: ignore[arg-type]
            std=tuple(resolved["std"]), interpolation=str(resolved["interpolation"]),  # type: ignore[arg-type]
            crop_pct=float(resolved["crop_pct"]),
        )
    except (KeyError, TypeError, ValueError):
        return None

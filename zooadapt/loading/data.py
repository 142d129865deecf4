"""The preprocessing the weights expect, and torchvision transforms that apply it.

Fine-tuning with another normalisation or resize than the weights were trained with costs
accuracy without any error. The answer comes from where the weights are described, most
specific first: a saved model's own record, the registry entry (``[models.X.data]``), the
family's answer for that entry (timm: the tag's pretrained config), a plugin's answer for a model
zooadapt did not load (``zooadapt_data_config``; timm's reads a timm model's ``pretrained_cfg``),
then the family's default (torchvision's published ImageNet values). What a family's library
knows stays in its plugin: nothing here imports one.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..contract.errors import InvalidArgumentError
from ..contract.family import DataConfig, ModelEntry

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["data_config", "transforms", "describe", "eval_resize"]

_INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")


def _from_mapping(data: Mapping[str, Any]) -> DataConfig:
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields}
    return DataConfig(**values)


def _for_entry(entry: ModelEntry) -> DataConfig:
    from ..host.registry import get_registry

    if entry.data is not None:
        return entry.data
    family = get_registry().family(entry.family)
    if family.data_for is not None:
        found = family.data_for(entry)
        if found is not None:
            return found
    return family.data


def data_config(model_or_name: nn.Module | ModelEntry | str | os.PathLike[str]) -> DataConfig:
    """Input size, mean, std, interpolation and crop fraction the weights were trained with.

    Takes a model loaded by zooadapt (or any timm model), a registry name, a ``ModelEntry``,
    or a directory written by ``zooadapt.save``.
    """
    if isinstance(model_or_name, ModelEntry):
        return _for_entry(model_or_name)
    if isinstance(model_or_name, (str, os.PathLike)):
        from ..contract.saved_format import is_saved_directory, read_saved_config

        text = os.fspath(model_or_name)
        if is_saved_directory(text) and not text.startswith("hf://"):
            config = read_saved_config(text)
            if config.get("data"):
                return _from_mapping(config["data"])
            text = config["model"]
        from .pipeline import resolve

        return _for_entry(resolve(text)[0])
    from ..tuning.freezing import _unwrap

    model = _unwrap(model_or_name)
    info = getattr(model, "zooadapt", None)
    if info is not None:
        saved = info.data
        if saved:
            return _from_mapping(saved)
        from .pipeline import resolve

        return _for_entry(resolve(info.name)[0])
    from ..host.hooks import PluginHooks  # a model zooadapt did not load: its family's plugin may know (timm's does)
    from ..host.plugin_manager import load_plugins

    known = PluginHooks(load_plugins()).data_config(model)
    if known is not None:
        return known
    raise InvalidArgumentError(
        f"zooadapt does not know the preprocessing of this {type(model).__name__}: pass a model loaded by "
        "zooadapt.load, a timm model, or a registry name (e.g. data_config('resnet34'))")


def _size(cfg: DataConfig) -> tuple[int, int]:
    if len(cfg.input_size) != 3 or min(cfg.input_size) < 1:
        raise InvalidArgumentError(f"input_size={cfg.input_size!r}: expected (channels, height, width)")
    return int(cfg.input_size[1]), int(cfg.input_size[2])


def eval_resize(cfg: DataConfig) -> int | tuple[int, int]:
    """The resize before the centre crop: the crop divided by ``crop_pct`` (224 / 0.875 = 256),
    as timm and torchvision compute it; an int resizes the shorter side."""
    if not 0 < cfg.crop_pct <= 1:
        raise InvalidArgumentError(f"crop_pct={cfg.crop_pct!r}: the crop fraction must be in (0, 1]")
    h, w = _size(cfg)
    if h == w:
        return math.floor(h / cfg.crop_pct)
    return math.floor(h / cfg.crop_pct), math.floor(w / cfg.crop_pct)


def _interpolation(name: str) -> Any:
    from torchvision.transforms import InterpolationMode

    if name not in _INTERPOLATIONS:
        raise InvalidArgumentError(f"interpolation={name!r}: expected one of {', '.join(_INTERPOLATIONS)}")
    return InterpolationMode(name)


def transforms(model_or_name: nn.Module | ModelEntry | str | os.PathLike[str] | DataConfig, *,
               train: bool = False) -> Any:
    """torchvision transforms matching the weights' preprocessing, for PIL images or uint8 tensors.

    ``train=False``: resize to ``crop / crop_pct``, centre-crop, scale to [0, 1], normalise —
    what the weights were evaluated with. ``train=True``: random-resized crop and horizontal
    flip at the same size and interpolation, then the same normalisation. Returns plain
    float tensors (C, H, W).
    """
    import torch
    from torchvision.transforms import v2

    cfg = model_or_name if isinstance(model_or_name, DataConfig) else data_config(model_or_name)
    size = _size(cfg)
    interpolation = _interpolation(cfg.interpolation)
    if train:
        geometry = [v2.RandomResizedCrop(size, interpolation=interpolation, antialias=True),
                    v2.RandomHorizontalFlip()]
    else:
        geometry = [v2.Resize(eval_resize(cfg), interpolation=interpolation, antialias=True), v2.CenterCrop(size)]
    return v2.Compose([
        *geometry,  # on the PIL image when given one, as the published pipelines resize
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(cfg.mean), std=list(cfg.std)),
        v2.ToPureTensor(),
    ])


def describe(model_or_name: nn.Module | ModelEntry | str | os.PathLike[str] | DataConfig) -> str:
    """One line for ``zooadapt info`` and logs, e.g. ``3x224x224, resize 256 (bilinear), centre
    crop 224 (crop_pct 0.875), mean 0.485,0.456,0.406, std 0.229,0.224,0.225``."""
    cfg = model_or_name if isinstance(model_or_name, DataConfig) else data_config(model_or_name)
    h, w = _size(cfg)
    resize = eval_resize(cfg)
    crop = f"{h}" if h == w else f"{h}x{w}"
    resize_text = f"{resize}" if isinstance(resize, int) else f"{resize[0]}x{resize[1]}"

    def nums(values: tuple[float, ...]) -> str:
        return ",".join(f"{v:.4g}" for v in values)

    return (f"{'x'.join(str(int(v)) for v in cfg.input_size)}, resize {resize_text} ({cfg.interpolation}), "
            f"centre crop {crop} (crop_pct {cfg.crop_pct:g}), mean {nums(cfg.mean)}, std {nums(cfg.std)}")

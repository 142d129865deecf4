"""``feature_info`` of a ``features_only`` cut: the outputs described the way timm describes them.

Users arrive with timm's habits, so a cut answers timm's ``FeatureInfo`` questions. A family may
supply its own class (``Family.feature_info``: the timm plugin gives timm's, so a timm model's
cut carries exactly what ``timm.create_model(..., features_only=True)`` carries); every other
family's cut gets this class, which has the same attributes and methods without importing timm.
Unlike timm's, it does not refuse reductions that decrease (a family's pooled output after a
finer map): it describes the outputs, it does not judge them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

__all__ = ["FeatureInfo"]

Index = int | Sequence[int] | None


class FeatureInfo:
    """Info dicts (``module``, ``num_chs``, ``reduction``, ``index``) of a model's feature maps, and
    ``out_indices``: the positions of the ones the cut returns, in the order it returns them."""

    def __init__(self, feature_info: list[dict[str, Any]], out_indices: Sequence[int]) -> None:
        for i, info in enumerate(feature_info):
            info.setdefault("index", i)
        self.info = feature_info
        self.out_indices = tuple(out_indices)

    def from_other(self, out_indices: Sequence[int]) -> FeatureInfo:
        """The same feature maps with other outputs selected."""
        return FeatureInfo(copy.deepcopy(self.info), out_indices)

    def get(self, key: str, idx: Index = None) -> Any:
        """``key`` of each output (``idx`` None), of the maps at the positions ``idx``, or of map ``idx``."""
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]  # type: ignore[index]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: Index = None) -> Any:
        """The info dicts (only ``keys`` when given) of the outputs, or of the maps ``idx`` names."""
        def pick(i: int) -> dict[str, Any]:
            return self.info[i] if keys is None else {k: self.info[i][k] for k in keys}

        if idx is None:
            return [pick(i) for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [pick(i) for i in idx]
        return pick(idx)  # type: ignore[arg-type]

    def channels(self, idx: Index = None) -> Any:
        """Channels of each output (or of the maps ``idx`` names)."""
        return self.get("num_chs", idx)

    def reduction(self, idx: Index = None) -> Any:
        """Output stride of each output (or of the maps ``idx`` names)."""
        return self.get("reduction", idx)

    def module_name(self, idx: Index = None) -> Any:
        """The module whose output each output is (or of the maps ``idx`` names)."""
        return self.get("module", idx)

    def __getitem__(self, item: int) -> dict[str, Any]:
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo(channels={self.channels()}, reduction={self.reduction()}, modules={self.module_name()})"

"""Key rules: how a checkpoint's names become a model's (``load(..., rules=[...])``).

``rules=`` takes these objects or their text spelling (``"strip:model."``, ``"rename:A=>B"``…,
``zooadapt.rules.parse_rule``). Plugin authors find the same classes in ``zooadapt.plugin_api``.
"""

from __future__ import annotations

from .contract.rules import (
    DEFAULT_RULES,
    AdaptInputConv,
    AddPrefix,
    CastIntegers,
    Drop,
    Fuse,
    KeyRule,
    Positional,
    Rename,
    Renumber,
    ResamplePosEmbed,
    Reshape,
    StripPrefix,
    parse_rule,
)

__all__ = ["KeyRule", "StripPrefix", "AddPrefix", "Rename", "Renumber", "Drop", "Reshape", "CastIntegers", "Positional",
           "Fuse", "AdaptInputConv", "ResamplePosEmbed", "DEFAULT_RULES", "parse_rule"]

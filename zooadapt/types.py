"""The classes zooadapt's functions return, for annotations and ``isinstance``.

``load`` returns a plain ``torch.nn.Module`` whose ``model.zooadapt`` is a ``ModelInfo`` (stages,
frozen stages, the ``LoadReport`` with its ``LoadPlan``); ``features_only=True`` returns a
``StageFeatures``; ``param_groups`` a ``ParamGroups`` (a list of optimizer groups that prints as a
table).
"""

from __future__ import annotations

from .contract.family import DataConfig
from .contract.stages import Stage, StageMap
from .loading.features import StageFeatures
from .loading.plan import LoadPlan
from .loading.report import LoadReport, ModelInfo
from .tuning.optim import ParamGroups

__all__ = ["ModelInfo", "LoadReport", "LoadPlan", "StageFeatures", "ParamGroups", "Stage", "StageMap", "DataConfig"]

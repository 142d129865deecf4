"""``StageFinetuning``: gradual unfreezing by stage name in Lightning (``pip install zooadapt[lightning]``).

The callback lives in ``zooadapt.integrations.lightning``; this is its public path. Importing it
without Lightning installed raises ``MissingDependencyError`` naming the install command.
"""

from __future__ import annotations

from .integrations.lightning import StageFinetuning

__all__ = ["StageFinetuning"]

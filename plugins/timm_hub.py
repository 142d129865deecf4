"""What a ``push_to_hub`` upload gains from timm (the ``zooadapt_hub_card`` hook).

A timm classifier's upload also holds ``config.json`` as timm's own ``save_for_hf`` writes it
(architecture, classes, preprocessing, ``label_names``), so ``timm.create_model("hf-hub:REPO",
pretrained=True)`` loads the fine-tune without zooadapt; the card then names timm as its library.
Any upload of a timm model, or of weights that came from timm (its Hub repositories), is tagged
``timm``, as the Hub lists timm's models.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zooadapt.plugin_api import HubCard

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["hub_card"]

SNIPPET = 'import timm\n\nmodel = timm.create_model("hf-hub:{repo_id}", pretrained=True)'


def hub_card(model: nn.Module, config: Mapping[str, Any], folder: Path) -> HubCard | None:
    """The ``timm`` tag for timm's models and weights, and timm's ``config.json`` for a timm
    classifier (not a cut backbone, whose ``config.json`` timm could not rebuild)."""
    ours = config.get("family") == "timm"
    from_timm = "timm" in str((config.get("base_weights") or {}).get("source"))
    if not (ours or from_timm):
        return None
    if not ours or config.get("features_only") or not config.get("num_classes"):
        return HubCard(tags=("timm",))
    from timm.models import save_for_hf

    labels = config.get("labels")
    with tempfile.TemporaryDirectory(prefix="zooadapt-timm-") as tmp:
        save_for_hf(model, tmp, model_config={"label_names": list(labels)} if labels else None,
                    safe_serialization=True)
        shutil.copyfile(Path(tmp) / "config.json", Path(folder) / "config.json")
    return HubCard(tags=("timm",), library="timm", snippet=SNIPPET)

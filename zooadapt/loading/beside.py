"""The small metadata files a library writes beside a weights file, read from where the file came.

transformers' ``save_pretrained`` puts a ``config.json`` beside ``model.safetensors``, and
``zooadapt.save`` its ``zooadapt.json``: the class names of a trained head (``labels``) and the
hyperparameters no tensor carries (``layout_build``: a ViT's LayerNorm eps) are read from them.
They are read from the file's own folder, or from its Hub repository at the commit the weights
came from (never a newer one); one that is missing, too large (16 MB) or unreadable is None,
as a file that has none.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..weights.fetched import FetchedWeights

__all__ = ["metadata_text", "metadata_json"]

_METADATA_LIMIT = 16 << 20


def metadata_text(fetched: FetchedWeights, name: str, *, cache_dir: Any = None) -> str | None:
    """The text of the file ``name`` beside the weights, or None."""
    from ..contract.errors import ZooadaptError

    if fetched.kind == "path":
        path = Path(fetched.path).parent / name
        try:
            if not path.is_file() or path.stat().st_size > _METADATA_LIMIT:
                return None
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
    if fetched.kind != "hub":
        return None
    from ..weights.sources import fetch, parse_source

    source = parse_source(fetched.origin)
    if source.repo_id is None or source.filename is None:
        return None
    folder = source.filename.rpartition("/")[0]
    beside = replace(source, filename=f"{folder}/{name}" if folder else name, sha256=None)
    try:
        got = fetch(beside, revision=fetched.commit or source.revision, cache_dir=cache_dir)
        if got.size > _METADATA_LIMIT:
            return None
        return Path(got.path).read_text(encoding="utf-8")
    except (ZooadaptError, OSError, UnicodeDecodeError):
        return None


def metadata_json(fetched: FetchedWeights, name: str, *, cache_dir: Any = None) -> dict[str, Any] | None:
    """The JSON object in the file ``name`` beside the weights; None when there is none, or it
    is not a JSON object."""
    text = metadata_text(fetched, name, cache_dir=cache_dir)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None

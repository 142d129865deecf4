"""The saved-model format: ``model.safetensors`` plus ``zooadapt.json``, and how to recognise one.

Shared by the writing side (``zooadapt.loading.saving``), the reading side
(``zooadapt.loading.reloading``) and anything that only needs to ask "is this a saved model, and
what does its config say" (``zooadapt.loading.data``), so none of them imports another.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import CheckpointFormatError

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "FORMAT", "FORMAT_VERSION", "hub_repo", "is_saved_directory",
           "read_saved_config"]

CONFIG_NAME = "zooadapt.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "zooadapt-saved-model"
FORMAT_VERSION = 1


def hub_repo(text: str) -> Any:
    """The ``HubAddress`` of ``hf://org/repo[@revision]`` (a whole repository, as ``push_to_hub``
    uploads it), else None; a malformed ``hf://`` address raises, naming the right form."""
    from .hub_address import is_hub_address, parse_hub_address

    if not is_hub_address(text):
        return None
    address = parse_hub_address(text)
    return address if address.path is None else None


def is_saved_directory(name: object) -> bool:
    """True for a directory written by ``save`` or an ``hf://org/repo[@revision]`` address of one."""
    if not isinstance(name, (str, os.PathLike)):
        return False
    text = os.fspath(name)
    if hub_repo(text) is not None:
        return True
    try:  # os.path rather than pathlib: every load by name asks this first
        return os.path.isfile(os.path.join(os.path.expanduser(text), CONFIG_NAME))
    except (OSError, ValueError):  # a registry name too long or odd for the file system
        return False


def read_saved_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``zooadapt.json`` of a saved directory, checked."""
    path = Path(directory).expanduser() / CONFIG_NAME
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointFormatError(f"{path.parent} holds no {CONFIG_NAME}; it was not written by zooadapt.save") \
            from None
    except (OSError, ValueError) as exc:
        raise CheckpointFormatError(f"{path} is not readable JSON ({exc}); save the model again") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointFormatError(f"{path} is not a zooadapt saved-model config (format {FORMAT!r} expected)")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointFormatError(
            f"{path} was written by zooadapt {config.get('zooadapt_version')} (format "
            f"{config['format_version']}); upgrade zooadapt to load it")
    for key in ("model", "num_classes"):
        if key not in config:
            raise CheckpointFormatError(f"{path} lacks {key!r}; save the model again")
    return config

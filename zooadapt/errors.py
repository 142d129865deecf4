"""Every error zooadapt raises on purpose: ``except zooadapt.errors.UnknownModelError``.

All of them derive from ``zooadapt.ZooadaptError`` (also here), so ``except ZooadaptError`` tells
"zooadapt refused" apart from a bug. Each class names a kind of problem a caller may handle on its
own; the message says which case it was and what to do.

``MERGED`` lists the classes that were folded into a broader one (one was raised in one place and
no caller told them apart): their old names still answer here, with a ``DeprecationWarning``
naming the class to catch instead, until zooadapt 0.3.
"""

from __future__ import annotations

import warnings
from typing import Any

from .contract import errors as _errors
from .contract.errors import *  # noqa: F403
from .contract.errors import MERGED

__all__ = [*_errors.__all__, "MERGED"]


def __getattr__(name: str) -> Any:
    new = MERGED.get(name)
    if new is None:
        raise AttributeError(f"module 'zooadapt.errors' has no attribute {name!r}")
    warnings.warn(f"zooadapt.errors.{name} is now zooadapt.errors.{new} (the message says which case it was); "
                  "the old name works until zooadapt 0.3", DeprecationWarning, stacklevel=2)
    return globals()[new]

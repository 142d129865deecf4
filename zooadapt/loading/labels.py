"""Class names of a fine-tuned model: given as a list, or read from a torchvision ``ImageFolder``.

``zooadapt.save(model, dir, labels=...)`` and ``push_to_hub(..., labels=...)`` store them in
``zooadapt.json`` (and the model card); ``zooadapt.load(dir)`` gives them back as
``model.zooadapt.labels``, in class-index order, so predictions can be named.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..contract.errors import InvalidArgumentError

__all__ = ["check_labels"]


def check_labels(labels: Any, num_classes: int | None) -> tuple[str, ...] | None:
    """``labels`` as a tuple of names, checked against the head: a list of strings, or a dataset
    with a ``classes`` list (torchvision's ``ImageFolder`` and ``DatasetFolder``); None stays None."""
    if labels is None:
        return None
    given = getattr(labels, "classes", labels)
    if isinstance(given, (str, bytes)) or not isinstance(given, Sequence):
        raise InvalidArgumentError(
            f"labels={labels!r}: give the class names as a list of strings in class-index order, or a dataset "
            "with .classes (torchvision ImageFolder)")
    names = tuple(given)
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise InvalidArgumentError(f"labels: every class name must be a non-empty string; got {bad[:3]!r}")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise InvalidArgumentError(f"labels: {twice[:5]!r} appear more than once; each class needs its own name")
    if not num_classes:
        raise InvalidArgumentError("labels= names the classes of a head, and this model has none (features-only or "
                                   "num_classes=0); drop labels=")
    if len(names) != num_classes:
        raise InvalidArgumentError(
            f"labels: {len(names)} names for a {num_classes}-class head; give one name per class, in class-index "
            "order (for an ImageFolder, load the model with num_classes=len(dataset.classes))")
    return names

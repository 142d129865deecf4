"""Class names of a fine-tuned model: given as a list, or read from a torchvision ``ImageFolder``.

``zooadapt.save(model, dir, labels=...)`` and ``push_to_hub(..., labels=...)`` store them in
``zooadapt.json`` (and the model card); ``zooadapt.load(dir)`` gives them back as
``model.zooadapt.labels``, in class-index order, so predictions can be named.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..contract.errors import InvalidArgumentError
from .beside import metadata_json

if TYPE_CHECKING:
    from ..weights.fetched import FetchedWeights

__all__ = ["check_labels", "labels_beside"]


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


def labels_beside(fetched: FetchedWeights, num_classes: int | None, *, cache_dir: Any = None) -> tuple[str, ...] | None:
    """The class names a checkpoint's own metadata gives for its head, when it has any: the
    ``zooadapt.json`` of a directory ``zooadapt.save`` wrote, or transformers' ``config.json``
    (``id2label``) beside the weights file, in a local folder or the same Hub repository and
    commit. None when there are none, when they are transformers' placeholders (``LABEL_0``…),
    or when their count is not the head's."""
    from ..contract.saved_format import CONFIG_NAME

    for name in (CONFIG_NAME, "config.json"):
        config = metadata_json(fetched, name, cache_dir=cache_dir)
        names = _names_in(config) if config is not None else None
        if names is not None:
            return names if num_classes is not None and len(names) == num_classes else None
    return None


def _names_in(config: dict[str, Any]) -> tuple[str, ...] | None:
    labels = config.get("labels")
    if isinstance(labels, list) and labels and all(isinstance(n, str) and n for n in labels):
        return tuple(labels)
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        by_index = {int(k): v for k, v in id2label.items()}
    except (TypeError, ValueError):
        return None
    if sorted(by_index) != list(range(len(by_index))) or not all(isinstance(v, str) and v for v in by_index.values()):
        return None
    names = tuple(by_index[i] for i in range(len(by_index)))
    if all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        return None  # transformers' default names: no labels were given
    return names

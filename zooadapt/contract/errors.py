"""Every error zooadapt raises on purpose, under one base class.

Users catch ``ZooadaptError`` to handle "zooadapt refused" separately from bugs; each
subclass names one kind of problem a caller may want to handle on its own (a kind raised in one
place that no caller told apart was folded into its parent: ``MERGED``). Messages say which case
it was and what to do about it. Users import them from ``zooadapt.errors``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "ZooadaptError",
    "InvalidArgumentError",
    "UnknownModelError",
    "FreezeSpecError",
    "PluginError",
    "PluginConflictError",
    "RegistryError",
    "WeightSourceError",
    "WeightsNotFoundError",
    "HubRepoNotFoundError",
    "HubRevisionNotFoundError",
    "HubFileNotFoundError",
    "DownloadError",
    "OfflineCacheMissError",
    "IntegrityError",
    "LockFileError",
    "LockMismatchError",
    "CheckpointFormatError",
    "UnsafeCheckpointError",
    "IncompatibleCheckpointError",
    "AmbiguousCheckpointError",
    "FileWriteError",
    "MissingDependencyError",
    "CheckpointChangedError",
    "CheckpointBoundsError",
    "HubAnswerError",
    "ShardIndexError",
    "UnknownWeightsError",
    "SignatureIndexError",
]


class ZooadaptError(Exception):
    """Base class of every error zooadapt raises deliberately."""


class InvalidArgumentError(ZooadaptError, ValueError):
    """An argument has a value zooadapt cannot use (e.g. ``num_classes=0``)."""


class UnknownModelError(ZooadaptError, KeyError):
    """No registry entry or plugin knows the requested model name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""



class FreezeSpecError(ZooadaptError, ValueError):
    """A freeze specification names stages the family does not have or is malformed."""


class PluginError(ZooadaptError):
    """A plugin failed to import or misbehaved in a hook (raised in strict mode)."""


class PluginConflictError(PluginError):
    """Two plugins registered the same model or family name."""



class RegistryError(ZooadaptError):
    """registry.toml (or a plugin's model entry) is malformed."""


class WeightSourceError(ZooadaptError):
    """Weights could not be fetched from their source."""


class WeightsNotFoundError(WeightSourceError, FileNotFoundError):
    """The repository, revision, file, URL or local path does not exist."""


class HubRepoNotFoundError(WeightsNotFoundError):
    """The Hub has no repository with that id (or it is private and no token was sent)."""


class HubRevisionNotFoundError(WeightsNotFoundError):
    """The Hub repository exists but has no such branch, tag or commit."""


class HubFileNotFoundError(WeightsNotFoundError):
    """The Hub repository and revision exist but hold no file of that name."""


class DownloadError(WeightSourceError):
    """The Hub or a URL did not deliver the file (5xx, timeout, broken connection), even after retries."""



class OfflineCacheMissError(WeightSourceError):
    """Offline mode is on and the weights are not in the local cache."""


class IntegrityError(WeightSourceError):
    """Downloaded or cached bytes do not match the expected size or sha256."""


class LockFileError(ZooadaptError):
    """The lock file is missing, unreadable or malformed."""


class LockMismatchError(IntegrityError):
    """The weights, their source or the requested revision differ from what the lock file pins."""


class CheckpointFormatError(ZooadaptError):
    """The file is not a checkpoint zooadapt can read (truncated, corrupt, unknown layout)."""


class UnsafeCheckpointError(CheckpointFormatError):
    """A pickle checkpoint needs arbitrary code execution to load; refused without opt-in."""


class IncompatibleCheckpointError(ZooadaptError):
    """The checkpoint does not fit the model: backbone tensors are missing or have other shapes."""


class AmbiguousCheckpointError(IncompatibleCheckpointError):
    """The checkpoint holds several copies that fit the model equally well (a student and a
    teacher, a query and a key encoder); the user must say which one to load."""


class FileWriteError(ZooadaptError, OSError):
    """A file zooadapt writes (a saved model, a lock file) could not be written: disk full,
    no permission, read-only file system. Nothing half-written was left behind."""


class MissingDependencyError(ZooadaptError, ImportError):
    """An optional feature needs a package that is not installed (e.g. ``zooadapt.lightning``
    needs ``lightning``: ``pip install zooadapt[lightning]``)."""


def suggest(name: str, candidates: Iterable[str], n: int = 5) -> str:
    """Return ``" Did you mean: a, b?"`` for the closest candidates, or ``""`` when none is close."""
    pool = list(dict.fromkeys(candidates))  # once each, in order: callers may pool names from several sources

    def spelled(text: str) -> str:  # case and separators aside: 'ResNet-18' is 'resnet18'
        return text.lower().replace("-", "").replace("_", "")

    # what the user meant, spelled another way; for a tagged name (timm's 'convnext_tiny.fb_in1k') its architecture
    same = list(dict.fromkeys(c.partition(".")[0] if spelled(c) != spelled(name) else c for c in pool
                              if spelled(name) in (spelled(c), spelled(c.partition(".")[0]))))
    close = same + [c for c in difflib.get_close_matches(name, pool, n=n, cutoff=0.6) if c not in same]
    if not close:
        lowered = name.lower()
        close = [c for c in pool if lowered in c.lower()]
    close = close[:n]
    return f" Did you mean: {', '.join(close)}?" if close else ""


class CheckpointChangedError(CheckpointFormatError):
    """The file was rewritten, replaced or deleted while it was being read (a training job saving
    ``last.pth`` while another process loads it), twice in a row: what was read would mix two
    versions, so nothing is returned. Load again once the writer is done."""


class CheckpointBoundsError(CheckpointFormatError):
    """A checkpoint's pickle is larger, longer or deeper than any real checkpoint's (a crafted
    file, e.g. a small zip whose compressed pickle expands to millions of opcodes): refused
    before it is unpickled."""


class HubAnswerError(DownloadError):
    """A Hub endpoint answered with a commit, ETag, size or location that cannot be what the Hub
    sends (a ``../`` in an ETag, a commit that is not 40 hex digits): a hostile or broken
    endpoint. Refused before huggingface_hub builds a cache path from it; nothing was written."""



class ShardIndexError(CheckpointFormatError):
    """A sharded checkpoint's index is malformed or disagrees with its shards (a tensor in two
    shards, or in another shard than the index says)."""


class UnknownWeightsError(WeightsNotFoundError, UnknownModelError):
    """``weights=`` names neither a path that exists nor a model: a file not found (it is a
    ``WeightsNotFoundError``) or an unknown model name (an ``UnknownModelError``) alike."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class SignatureIndexError(ZooadaptError):
    """The signature index shipped with zooadapt is missing or unreadable (a damaged install)."""


# Old class name -> the class it was merged into (``zooadapt.errors`` answers the old names with a
# DeprecationWarning until zooadapt 0.3).
MERGED: dict[str, str] = {
    "UnknownFamilyError": "UnknownModelError",
    "PluginDisabledError": "PluginError",
    "HubUnreachableError": "DownloadError",
    "WeightsVanishedError": "WeightsNotFoundError",
    "SaveInterruptedError": "CheckpointFormatError",
    "IntegerCastError": "IncompatibleCheckpointError",
    "MissingShardError": "WeightsNotFoundError",
}

"""Lock files: the exact commit, sha256 and size of the weights each model of a project uses.

``zooadapt lock resnet34 convnext_tiny`` (or ``zooadapt.lock(["resnet34"], "zooadapt.lock")``)
resolves every name now — branch to commit, file to sha256 — and writes them to a JSON
file meant to be committed next to the code. Later loads of a locked model fetch that
commit (no network at all once it is cached) and check size and sha256; anything else
raises ``LockMismatchError`` saying what differs and how to re-lock on purpose.

Which lock file applies: ``load(..., lock=PATH)``; else ``$ZOOADAPT_LOCK`` (a path, or
``off``); else ``./zooadapt.lock`` when it exists. ``lock=False`` ignores lock files.
Models not in the lock file load as usual; ``weights=`` bypasses the lock (it names
other weights explicitly).

Two ``zooadapt lock`` commands at once both keep their entries: each resolves its models first,
then re-reads the file, adds its entries and writes it under the file's lock
(``atomic.exclusive``). A lock file is read only when it is a regular file of at most
``host.registry.MAX_TEXT_BYTES`` (16 MiB): ``ZOOADAPT_LOCK=/dev/zero`` is an error, not a hang.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..contract.errors import (
    FileWriteError,
    InvalidArgumentError,
    LockFileError,
    LockMismatchError,
    WeightsNotFoundError,
    ZooadaptError,
)
from ..contract.escape import printable
from ..contract.family import ModelEntry, WeightSource
from .digests import cached_sha256
from .fetched import FetchedWeights
from .hub_cache import check_revision, discard
from .sources import fetch

__all__ = ["LOCK_NAME", "LockFile", "LockedModel", "find_lock", "lock", "lock_models", "check_lock", "fetch_entry"]

LOCK_NAME = "zooadapt.lock"
FORMAT_VERSION = 1
_OFF = ("0", "off", "false", "no", "none")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")

LockArg = str | os.PathLike[str] | bool | None


@dataclass(frozen=True)
class LockedModel:
    """What one model resolved to when it was locked."""

    source: str
    sha256: str
    size: int
    commit: str | None = None
    repo_id: str | None = None
    filename: str | None = None
    revision: str | None = None
    url: str | None = None
    path: str | None = None
    shards: dict[str, dict[str, Any]] | None = None
    """A sharded checkpoint (``sha256``/``size`` are then its index's): each shard, as the index
    names it, -> ``{"sha256": …, "size": …}``."""

    @classmethod
    def from_dict(cls, name: str, data: Any, where: Path) -> LockedModel:
        if not isinstance(data, dict):
            raise LockFileError(f"{where}: entry {name!r} is not a table; regenerate it with `zooadapt lock {name}`")
        known = {f for f in cls.__dataclass_fields__}
        try:
            model = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise LockFileError(f"{where}: entry {name!r} is incomplete ({exc}); regenerate it with "
                                f"`zooadapt lock {name}`") from exc
        if (not (isinstance(model.sha256, str) and _SHA256.match(model.sha256)) or type(model.size) is not int
                or model.size < 0):
            raise LockFileError(f"{where}: entry {name!r} has no valid sha256/size; regenerate it with "
                                f"`zooadapt lock {name}`")
        model._check_fields(name, where)
        return model

    def _check_fields(self, name: str, where: Path) -> None:
        """Every field a lock file supplies is checked before it names a path or a revision: a commit
        of ``../..`` would otherwise make the Hub client write outside its cache."""
        def bad(what: str) -> LockFileError:
            return LockFileError(f"{where}: entry {name!r} has an invalid {what}; a lock file holds only what "
                                 f"`zooadapt lock` wrote. Restore it from version control or regenerate it with "
                                 f"`zooadapt lock {name}`")

        for field_name in ("source", "commit", "repo_id", "filename", "revision", "url", "path"):
            value = getattr(self, field_name)
            if value is not None and (not isinstance(value, str) or "\x00" in value):
                raise bad(field_name)
        if self.commit is not None and not _COMMIT.match(self.commit):
            raise bad(f"commit {self.commit!r} (not 40 hex digits)")
        if self.revision is not None:
            try:
                check_revision(self.revision)
            except InvalidArgumentError:
                raise bad(f"revision {self.revision!r}") from None
        if self.shards is not None:
            if not isinstance(self.shards, dict) or not self.shards:
                raise bad("shards table")
            for shard, pin in self.shards.items():
                if (not isinstance(shard, str) or not shard or "\x00" in shard or "\\" in shard
                        or shard.startswith("/") or any(p in ("", ".", "..") for p in shard.split("/"))):
                    raise bad(f"shard name {shard!r}")
                if (not isinstance(pin, dict) or not isinstance(pin.get("sha256"), str)
                        or not _SHA256.match(pin["sha256"]) or type(pin.get("size")) is not int or pin["size"] < 0):
                    raise bad(f"sha256/size for shard {shard!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def check_source(self, name: str, source: WeightSource, revision: str | None, where: Path) -> None:
        """The registry still points where it pointed when locked, and no other revision is asked for."""
        now = (source.repo_id, source.filename if source.repo_id else None, source.url, source.path)
        then = (self.repo_id, self.filename if self.repo_id else None, self.url, self.path)
        if now != then or (source.repo_id and source.revision != self.revision):
            raise LockMismatchError(
                f"model {name!r}: the registry now points at {source.describe()}, but {where} locked "
                f"{self.source}. Run `zooadapt lock {name}` to lock the new source on purpose, or load with "
                "lock=False to ignore the lock file."
            )
        if revision is not None and revision not in (self.revision, self.commit):
            raise LockMismatchError(
                f"model {name!r}: revision {revision!r} was requested, but {where} pins revision "
                f"{self.revision!r} at commit {self.commit}. Drop revision=, re-lock with `zooadapt lock {name}` "
                "after changing the registry, or load with lock=False."
            )


@dataclass
class LockFile:
    """A lock file on disk: model name -> ``LockedModel``."""

    path: Path
    models: dict[str, LockedModel] = field(default_factory=dict)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> LockFile:
        from ..host.registry import read_text_file

        where = Path(path)
        try:
            data = json.loads(read_text_file(where, LockFileError, "name a lock file written by `zooadapt lock` "
                                             "(load(lock=PATH), $ZOOADAPT_LOCK or ./zooadapt.lock)"))
        except FileNotFoundError:
            raise LockFileError(
                f"lock file {printable(where)} does not exist; create it with `zooadapt lock NAME...`") from None
        except (OSError, ValueError, RecursionError) as exc:
            raise LockFileError(f"lock file {where} is not readable JSON ({exc}); regenerate it with "
                                "`zooadapt lock` or restore it from version control") from exc
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION or not isinstance(
                data.get("models"), dict):
            raise LockFileError(f"lock file {where} is not a zooadapt lock file of version {FORMAT_VERSION}; "
                                "regenerate it with `zooadapt lock NAME...`")
        return cls(where, {name: LockedModel.from_dict(name, entry, where) for name, entry in data["models"].items()})

    def write(self) -> None:
        """Write atomically (a temporary file renamed into place), names sorted for small diffs."""
        body = {
            "version": FORMAT_VERSION,
            "about": "Written by `zooadapt lock`; commit it. Loads of these models fetch the locked commit and "
                     "check sha256 and size. Update with `zooadapt lock NAME`.",
            "models": {name: self.models[name].to_dict() for name in sorted(self.models)},
        }
        from .atomic import atomic_write

        try:
            with atomic_write(self.path) as fh:
                json.dump(body, fh, indent=2)
                fh.write("\n")
        except OSError as exc:
            raise FileWriteError(
                f"could not write lock file {self.path} ({exc.strerror or exc}); it is unchanged and no temporary "
                "file was left. Free disk space or fix the folder's permissions, then run `zooadapt lock` again."
            ) from exc


def find_lock(lock: LockArg = None) -> LockFile | None:
    """The lock file that applies: ``lock`` if a path; else ``$ZOOADAPT_LOCK``; else ``./zooadapt.lock``."""
    if lock is False:
        return None
    if not (lock is None or lock is True or isinstance(lock, (str, os.PathLike))):
        raise InvalidArgumentError(f"lock={lock!r}: give a lock file path, True (require ./zooadapt.lock), False "
                                   "(ignore lock files) or None (the default: $ZOOADAPT_LOCK, else ./zooadapt.lock)")
    if lock is not None and lock is not True:
        return LockFile.read(lock)
    env = os.environ.get("ZOOADAPT_LOCK")
    if env is not None and env.strip():
        if env.strip().lower() in _OFF:
            return None
        return LockFile.read(env)
    default = Path.cwd() / LOCK_NAME
    if default.is_file():
        return LockFile.read(default)
    if lock is True:
        raise LockFileError(f"lock=True but there is no {LOCK_NAME} here ({Path.cwd()}) and ZOOADAPT_LOCK is not "
                            "set; create one with `zooadapt lock NAME...`")
    return None


def _locked(name: str, source: WeightSource, fetched: FetchedWeights) -> LockedModel:
    sha = fetched.sha256 or cached_sha256(fetched.path)
    shards = {shard: {"sha256": got.sha256 or cached_sha256(got.path), "size": got.size}
              for shard, got in fetched.shards} or None
    return LockedModel(
        source=source.describe(), sha256=sha, size=fetched.size, commit=fetched.commit,
        repo_id=source.repo_id, filename=source.filename if source.repo_id else None,
        revision=source.revision if source.repo_id else None, url=source.url, path=source.path, shards=shards,
    )


def _entry(name: str) -> ModelEntry:
    from ..host.registry import get_registry

    entry = get_registry().entry(name)
    if entry.source is None:
        raise InvalidArgumentError(f"model {name!r} has no published weights to lock; lock only models whose "
                                   "registry entry names a Hub file, URL or path")
    return entry


def lock_models(
    names: Iterable[str] = (),
    path: str | os.PathLike[str] = LOCK_NAME,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> LockFile:
    """Resolve ``names`` now (branch -> commit, file -> sha256) and record them in the lock file at ``path``.

    Existing entries for other models are kept; with no names, every model already in the
    file is re-resolved (an update of the whole lock). Downloads what is not cached.
    """
    if isinstance(names, str):
        names = [names]  # zooadapt.lock("resnet18"): one name, not its letters
    wanted_names = list(names) if isinstance(names, Iterable) else None
    if wanted_names is None or not all(isinstance(n, str) and n for n in wanted_names):
        raise InvalidArgumentError(f"names={names!r}: give model names as a list of strings, e.g. "
                                   "zooadapt.lock(['resnet34'])")
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidArgumentError(f"path={path!r}: give the lock file's path as a str or Path")
    target = Path(path)
    if target.is_dir():
        raise InvalidArgumentError(f"path={os.fspath(path)!r} is a directory; give the lock file's path, e.g. "
                                   f"{os.path.join(os.fspath(path), LOCK_NAME)!r}")
    lockfile = LockFile.read(target) if target.exists() else LockFile(target)
    wanted = wanted_names or sorted(lockfile.models)
    if not wanted:
        raise InvalidArgumentError(f"nothing to lock: name the models (zooadapt lock resnet34 ...); {target} "
                                   "has no entries to refresh")
    resolved: dict[str, LockedModel] = {}
    for name in wanted:  # downloads, outside the lock: another `zooadapt lock` need not wait for them
        resolved[name] = _vanished_as_error(name, _resolve, name, cache_dir=cache_dir, progress=progress)
    from .atomic import exclusive

    with exclusive(target, what="updating the lock file"):
        # read again under the lock: entries another command wrote since are kept
        lockfile = LockFile.read(target) if target.exists() else LockFile(target)
        lockfile.models.update(resolved)
        lockfile.write()
    return lockfile


def _resolve(name: str, *, cache_dir: str | os.PathLike[str] | None, progress: bool) -> LockedModel:
    entry = _entry(name)
    assert entry.source is not None
    return _locked(name, entry.source, fetch(entry.source, cache_dir=cache_dir, progress=progress, name=name))


def _vanished_as_error(name: str, get: Any, *args: Any, **kwargs: Any) -> Any:
    """``get(*args, **kwargs)``, with a raw ``FileNotFoundError`` (a cached file deleted while it was fetched or
    hashed: ``hf cache delete`` running meanwhile) turned into ``WeightsNotFoundError``."""
    try:
        return get(*args, **kwargs)
    except FileNotFoundError as exc:
        if isinstance(exc, ZooadaptError):
            raise
        raise WeightsNotFoundError(
            f"model {name!r}: {exc.filename or 'a cached file'} was deleted while zooadapt was fetching or checking it "
            f"(`hf cache delete` or a cleanup running meanwhile). Download it again: zooadapt fetch {name} --force, "
            "or load again (a missing cached file is fetched anew).") from exc


def fetch_entry(
    entry: ModelEntry,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    lock: LockArg = None,
    progress: bool = False,
    force: bool = False,
    rehash: bool = False,
) -> FetchedWeights:
    """Fetch a registry model's weights, at the locked commit and verified when a lock file lists it.

    ``rehash`` hashes the file even when an unchanged copy was hashed before (``lock --check``).
    """
    if entry.source is None:
        raise ZooadaptError(
            f"model {entry.name!r} has no published weights in the registry; pass weights=PATH "
            "(a local checkpoint) or pretrained=False for random initialisation"
        )
    return _vanished_as_error(entry.name, _fetch_entry, entry, revision=revision, cache_dir=cache_dir, lock=lock,
                              progress=progress, force=force, rehash=rehash)


def _fetch_entry(entry: ModelEntry, *, revision: str | None, cache_dir: str | os.PathLike[str] | None,
                 lock: LockArg, progress: bool, force: bool, rehash: bool) -> FetchedWeights:
    source = entry.source
    assert source is not None  # fetch_entry refused an entry without published weights
    lockfile = find_lock(lock)
    locked = lockfile.models.get(entry.name) if lockfile else None
    if locked is None or lockfile is None:
        return fetch(source, revision=revision, cache_dir=cache_dir, progress=progress, force=force,
                     name=entry.name, rehash=rehash)
    locked.check_source(entry.name, source, revision, lockfile.path)
    fetched = fetch(source, revision=locked.commit or revision, cache_dir=cache_dir, progress=progress,
                    force=force, name=entry.name, rehash=rehash)
    _check_locked_file(entry.name, fetched, locked.size, locked.sha256, locked, lockfile.path, rehash)
    got_shards = dict(fetched.shards)
    if (locked.shards or {}).keys() != got_shards.keys():
        raise LockMismatchError(
            f"model {entry.name!r}: {fetched.origin} names the shards {sorted(got_shards) or 'none (one file)'}, but "
            f"{lockfile.path} pins {sorted(locked.shards or {}) or 'none (one file)'}. It was not loaded. If the "
            f"weights changed on purpose, run `zooadapt lock {entry.name}`.")
    for shard, got in fetched.shards:
        pin = (locked.shards or {})[shard]
        _check_locked_file(entry.name, got, pin["size"], pin["sha256"], locked, lockfile.path, rehash)
    return fetched


def _check_locked_file(name: str, fetched: FetchedWeights, size_pin: int, sha_pin: str, locked: LockedModel,
                       where: Path, rehash: bool) -> None:
    """One file (the checkpoint, its index or one of its shards) has the size and sha256 the lock pins."""
    size = fetched.size
    sha = fetched.sha256 or cached_sha256(fetched.path, rehash=rehash)
    if size != size_pin or sha != sha_pin:
        removed = discard(fetched)
        got = f"size {size:,} B" if size != size_pin else f"sha256 {sha[:16]}…"
        want = f"size {size_pin:,} B" if size != size_pin else f"sha256 {sha_pin[:16]}…"
        raise LockMismatchError(
            f"model {name!r}: {fetched.origin} has {got}, but {where} pins {want}"
            f"{' at commit ' + locked.commit if locked.commit else ''}. "
            f"{'The cached file was removed and not loaded. ' if removed else 'It was not loaded. '}"
            f"If the weights changed on purpose, run `zooadapt lock {name}`; otherwise fetch again "
            "(the cached copy was corrupt or tampered with)."
        )


def check_lock(lock: LockArg = None, *, cache_dir: str | os.PathLike[str] | None = None,
               names: Sequence[str] = ()) -> dict[str, str | None]:
    """Fetch and verify every locked model (or ``names``); ``{name: None if fine else the error message}``."""
    lockfile = find_lock(True if lock is None else lock)
    assert lockfile is not None
    results: dict[str, str | None] = {}
    for name in names or sorted(lockfile.models):
        try:
            fetch_entry(_entry(name), cache_dir=cache_dir, lock=lockfile.path, rehash=True)
            results[name] = None if name in lockfile.models else f"{name} is not in {lockfile.path}"
        except ZooadaptError as exc:
            results[name] = str(exc)
    return results


lock = lock_models
"""``zooadapt.lock(names, path)``: the public name of ``lock_models``."""

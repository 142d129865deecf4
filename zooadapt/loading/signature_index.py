"""The signature index: every loadable architecture's state-dict signature, shipped and extended.

Which architecture a checkpoint fits can only be answered against all of them, and building
~1,400 models on ``meta`` takes over 20 minutes. So zooadapt ships their signatures
(``signatures.json.gz`` beside this module, written by ``scripts/build_signature_index.py`` for
the timm version it names and the built-in families) and computes at run time only what that
file lacks: a newer timm's new architectures, a plugin's models, a registry file's entries.
Those are written to ``$ZOOADAPT_CACHE/signatures/SOURCE.json.gz``, one file per source and
version (``timm-1.0.32``, ``zooadapt-squeezenet-0.1.0``), so each is computed once per machine,
with progress on stderr. A name whose build fails is kept as a failure with its reason, so it is
not built again either.

A signature stored for timm X is reused under timm Y for the same name: an architecture keeps
its layout across timm releases (timm's own pretrained files depend on it), and rebuilding all
of them for every upgrade would cost the half hour the index exists to save. Plugin models are
recomputed when their distribution's version changes; there are few. A plugin registered in the
running process (not installed) has no version: its models are described in each process and
never written to the cache.

File format (gzip'd JSON): a table of key strings and one of shapes, shared by all records;
each record lists its keys as differences between successive key numbers (a model's keys are
mostly numbered consecutively, so the list is mostly ones and compresses to little), its shapes
by number, and the positions of its buffers and tied parameters, also as differences.
"""

from __future__ import annotations

import gzip
import json
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

from ..contract.caches import ProcessCache
from ..contract.errors import SignatureIndexError
from .signatures import UNVERSIONED, Signature, Wanted, compute, wanted

__all__ = ["SignatureIndex", "SignatureIndexError", "get_index", "clear_index", "read_index", "write_index",
           "record_line", "merge_lines", "shipped_path", "cache_path", "BUNDLED_SOURCES", "FORMAT"]

FORMAT = 1


BUNDLED_SOURCES = ("timm", "zooadapt")
"""The sources whose signatures ship with the package (the rest live in each user's cache)."""


def shipped_path() -> Path:
    return Path(__file__).with_name("signatures.json.gz")


def cache_path(source: str) -> Path:
    from ..weights.paths import cache_dir

    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in source.replace("==", "-"))
    return cache_dir() / "signatures" / f"{safe}.json.gz"


# -- records as lines (the generator's workers) and as files --------------------------------------


def record_line(item: Signature | Wanted, *, error: str | None = None) -> str:
    """One JSON line: a signature, or a name whose build failed and why."""
    head = {"name": item.name, "family": item.family, "source": item.source, "recipe": item.recipe}
    if error is not None or not isinstance(item, Signature):
        return json.dumps({**head, "error": error or "no signature"})
    return json.dumps({**head, "head": item.head, "keys": list(item.keys), "shapes": [list(s) for s in item.shapes],
                       "buffers": sorted(item.buffers), "aliases": sorted(item.aliases)})


def _signature(raw: dict[str, Any]) -> Signature:
    return Signature(raw["name"], raw["family"], raw["source"], raw["recipe"], raw["head"], tuple(raw["keys"]),
                     tuple(tuple(s) for s in raw["shapes"]), frozenset(raw["buffers"]), frozenset(raw["aliases"]))


def merge_lines(lines: Iterable[str], out: Path, listed: Mapping[str, Sequence[str]] | None = None
                ) -> tuple[int, int]:
    """Write the index from the generator's lines (a later line for a name wins), with
    ``listed`` (source -> every name it has); returns the number of signatures and of failures."""
    signatures: dict[str, Signature] = {}
    failures: dict[str, tuple[Wanted, str]] = {}
    for line in lines:
        raw = json.loads(line)
        if "error" in raw:
            failures[raw["name"]] = (Wanted(raw["name"], raw["family"], raw["source"], raw["recipe"]), raw["error"])
            signatures.pop(raw["name"], None)
        else:
            signatures[raw["name"]] = _signature(raw)
            failures.pop(raw["name"], None)
    write_index(out, signatures.values(), failures.values(), listed=listed)
    return len(signatures), len(failures)


def _deltas(numbers: Sequence[int]) -> list[int]:
    return [b - a for a, b in zip([0, *numbers], numbers)]


def write_index(path: Path, signatures: Iterable[Signature], failures: Iterable[tuple[Wanted, str]], *,
                listed: Mapping[str, Sequence[str]] | None = None, level: int = 9) -> None:
    """Write signatures and failures as one compressed file (gzip ``level``), atomically, the
    same bytes for the same content (records sorted by name, no timestamp in the gzip header).
    ``listed``: source -> all the names it has (the shipped file lists timm's architectures, so
    a process with that timm need not ask timm for them)."""
    from ..weights.atomic import atomic_write

    keys: dict[str, int] = {}
    shapes: dict[tuple[int, ...], int] = {}
    records = []
    for sig in sorted(signatures, key=lambda s: s.name):
        key_ids = [keys.setdefault(k, len(keys)) for k in sig.keys]
        shape_ids = [shapes.setdefault(s, len(shapes)) for s in sig.shapes]
        records.append([sig.name, sig.family, sig.source, sig.recipe, sig.head, _deltas(key_ids), shape_ids,
                        _deltas(sorted(sig.buffers)), _deltas(sorted(sig.aliases))])
    failed = [[w.name, w.family, w.source, w.recipe, why] for w, why in sorted(failures, key=lambda f: f[0].name)]
    doc = {"format": FORMAT, "keys": list(keys), "shapes": [list(s) for s in shapes], "records": records,
           "failures": failed, "listed": {k: sorted(v) for k, v in sorted((listed or {}).items())}}
    data = gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), compresslevel=level, mtime=0)
    with atomic_write(path, binary=True) as fh:
        fh.write(data)


@dataclass
class _File:
    signatures: dict[str, Signature] = field(default_factory=dict)
    failures: dict[str, tuple[Wanted, str]] = field(default_factory=dict)
    listed: dict[str, list[str]] = field(default_factory=dict)


def read_index(path: Path) -> _File:
    """A signature file's records (an unreadable or foreign-format file reads as empty: its
    signatures are computed again)."""
    try:
        doc = json.loads(gzip.decompress(path.read_bytes()))
    except (OSError, ValueError, EOFError):
        return _File()
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return _File()
    keys, shapes = doc["keys"], [tuple(s) for s in doc["shapes"]]
    out = _File()
    for name, family, source, recipe, head, key_deltas, shape_ids, buffers, aliases in doc["records"]:
        out.signatures[name] = Signature(
            name, family, source, recipe, head, tuple(map(keys.__getitem__, accumulate(key_deltas))),
            tuple(map(shapes.__getitem__, shape_ids)), frozenset(accumulate(buffers)), frozenset(accumulate(aliases)))
    for name, family, source, recipe, why in doc["failures"]:
        out.failures[name] = (Wanted(name, family, source, recipe), why)
    out.listed = {k: list(v) for k, v in doc.get("listed", {}).items()}
    return out


# -- the index for this installation --------------------------------------------------------------


@dataclass(frozen=True)
class SignatureIndex:
    """The signatures of every name this installation can load, and the names that failed to build."""

    signatures: dict[str, Signature]
    failures: dict[str, str]
    computed: tuple[str, ...] = ()
    """Names this call had to build (missing from the shipped file and the cache)."""


_lock = threading.Lock()
_files: ProcessCache[tuple[Any, ...], _File] = ProcessCache(
    "signature index files", 8, "the file's path, size, mtime_ns, ctime_ns and inode")
_indexes: ProcessCache[tuple[Any, ...], SignatureIndex] = ProcessCache(
    "signature indexes", 1, "the shipped file's identity and every name wanted, with its source (timm's or a "
    "plugin's version) and recipe")


def _stamp(path: Path) -> tuple[Any, ...] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _read_cached(path: Path) -> _File:
    stamp = _stamp(path)
    if stamp is None:
        return _File()
    return _files.get_or_make(stamp, lambda: read_index(path))


def _reusable(sig: Signature | Wanted, want: Wanted, shipped: bool) -> bool:
    if sig.recipe != want.recipe or sig.family != want.family:
        return False
    if sig.source == want.source:
        return True
    return shipped and sig.source.startswith("timm==") and want.source.startswith("timm==")


def get_index(*, progress: bool = True) -> SignatureIndex:
    """The index for the names loadable here (``signatures.wanted``): the shipped file, then the
    cache, then what neither holds, computed now and added to the cache."""
    with _lock:
        shipped = _read_cached(shipped_path())
        if not shipped.signatures:  # else every architecture would be built here: half an hour
            raise SignatureIndexError(
                f"the signature index shipped with zooadapt ({shipped_path()}) is missing or unreadable, so no "
                "checkpoint can be matched to an architecture; reinstall zooadapt (or, from a checkout, run "
                "scripts/build_signature_index.py)")
        wants = tuple(wanted(listed=shipped.listed))
        key = (_stamp(shipped_path()), wants)
        found = _indexes.get(key)
        if found is not None:
            return found
        signatures: dict[str, Signature] = {}
        failures: dict[str, str] = {}
        missing: dict[str, list[Wanted]] = {}
        for want in wants:
            kept = () if want.source.startswith(UNVERSIONED) else ((_read_cached(cache_path(want.source)), False),)
            for file, from_shipped in ((shipped, True), *kept):
                sig = file.signatures.get(want.name)
                if sig is not None and _reusable(sig, want, from_shipped):
                    signatures[want.name] = sig
                    break
                failed = file.failures.get(want.name)
                if failed is not None and _reusable(failed[0], want, from_shipped):
                    failures[want.name] = failed[1]
                    break
            else:
                missing.setdefault(want.source, []).append(want)
        computed: list[str] = []
        for source, todo in missing.items():
            new_sigs, new_failures = _compute_all(source, todo, progress)
            signatures.update({s.name: s for s in new_sigs})
            failures.update({w.name: why for w, why in new_failures})
            computed += [w.name for w in todo]
            if source.startswith(UNVERSIONED):
                continue  # its code may differ in the next process: kept in this one only (_indexes)
            path = cache_path(source)
            held = read_index(path)
            held.signatures.update({s.name: s for s in new_sigs})
            held.failures.update({w.name: (w, why) for w, why in new_failures})
            try:
                write_index(path, held.signatures.values(), held.failures.values())
            except OSError as exc:  # a read-only cache: still answers, computes again next time
                if progress:
                    print(f"zooadapt: could not keep the signatures in {path}: {exc}", file=sys.stderr)
        return _indexes.put(key, SignatureIndex(signatures, failures, tuple(computed)))


def _compute_all(source: str, todo: list[Wanted], progress: bool) -> tuple[list[Signature], list[tuple[Wanted, str]]]:
    signatures: list[Signature] = []
    failures: list[tuple[Wanted, str]] = []
    if progress:
        kept = ("for this process: a plugin registered in it has no version to keep them under"
                if source.startswith(UNVERSIONED) else f"once: kept in {cache_path(source)}")
        print(f"zooadapt: describing {len(todo)} architecture{'s' if len(todo) != 1 else ''} of {source} that the "
              f"signature index lacks ({kept})", file=sys.stderr)
    for i, want in enumerate(todo, 1):
        try:
            signatures.append(compute(want))
        except Exception as exc:  # noqa: BLE001  (a model that does not build is recorded, not fatal)
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            failures.append((want, f"{type(exc).__name__}: {message}"[:300]))
        if progress and (i == len(todo) or i % 10 == 0):
            print(f"zooadapt:   {i}/{len(todo)} ({want.name})", file=sys.stderr)
    return signatures, failures


def clear_index() -> None:
    """Forget the index read in this process (``zooadapt.clear_caches()`` does this too)."""
    with _lock:
        _files.clear()
        _indexes.clear()

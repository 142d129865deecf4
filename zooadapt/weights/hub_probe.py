"""Failing at once when the Hub cannot be reached and the weights are not cached.

huggingface_hub takes a failed request for a flaky network: when its first request fails and
the file is not cached, it retries five times with backoff (about 24 s and six "Retrying"
lines) before it gives up. When the Hub's host does not resolve (no DNS: an offline or
air-gapped machine), refuses the connection or has no route, no retry can help; a new user's
first ``zooadapt.load("resnet34")`` then looks hung. So before a download that needs the
network, zooadapt asks once whether the endpoint's host resolves and accepts a connection,
and if it does not, raises ``DownloadError`` at once, naming the ways forward.

Only a cache miss is probed: a cached file is served by huggingface_hub's own fallback,
which does not retry; ``HF_HUB_OFFLINE=1`` needs no probe; an endpoint reached through a
proxy is left to huggingface_hub (the proxy, not this machine, resolves it); a timeout is
inconclusive and left to huggingface_hub too. A reachable endpoint is remembered for the
process, so the probe costs one connection per process, and only on a download.

The endpoint's answers are checked here too (``answers_checked``): huggingface_hub names cache
files after the ETag and the commit the endpoint sends (``blobs/<etag>``, its ``.lock``,
``snapshots/<commit>``, on a 404 ``.no_exist/<commit>``), so an endpoint answering ``../`` would
make it write outside the cache. Each HEAD answer the client gets is checked as it arrives, before
the client builds a path from it: no request of zooadapt's own (a warm load costs what it did),
and no gap between a look of zooadapt's and the client's own request for an endpoint to change
its answer in.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from ..contract.caches import ProcessCache
from ..contract.errors import DownloadError, HubAnswerError
from ..contract.escape import printable
from ..contract.family import WeightSource

__all__ = ["check_reachable", "unreachable_reason", "answers_checked"]

PROBE_TIMEOUT = 5.0
"""Seconds a connection attempt may take before the probe calls it inconclusive."""

_NO_ROUTE = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL}
_reachable: ProcessCache[str, bool] = ProcessCache(
    "reachable Hub endpoints", 16, "the endpoint's URL (HF_ENDPOINT as huggingface_hub read it)")
"""Endpoints that answered (or could not be told unreachable) in this process: not probed again."""
_lock = threading.Lock()


def _proxied(scheme: str, host: str) -> bool:
    proxies = urllib.request.getproxies()
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(host)


def unreachable_reason(endpoint: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why ``endpoint`` certainly cannot be reached from here (its host does not resolve, refuses
    connections or has no route), or None when it can be, or when that cannot be told quickly."""
    parts = urlsplit(endpoint)
    host = parts.hostname
    if not host or _proxied(parts.scheme, host):
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None  # a malformed port: huggingface_hub reports it better
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"its host {host!r} cannot be resolved ({exc.strerror or exc})"
    except OSError:
        return None
    failures = []
    for family, kind, proto, _, address in addresses:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout)
                sock.connect(address)
            return None
        except OSError as exc:
            if exc.errno not in _NO_ROUTE:
                return None  # a timeout or something odd: not certain, let huggingface_hub try
            failures.append(exc)
    if not failures:
        return None
    first = failures[0]
    what = "refused the connection" if first.errno == errno.ECONNREFUSED else "cannot be reached (no route)"
    return f"{host}:{port} {what} ({os.strerror(first.errno or 0)})"


_seen_cached: ProcessCache[tuple[str, str, str, str], bool] = ProcessCache(
    "files seen in the Hub cache", 256, "the repo, file name, revision and Hub cache directory")
"""Files found in the Hub cache before: found again without a look (the probe only decides how
fast a load without a network fails, or, for a commit, that no request is needed; a file removed
since is downloaded as usual)."""


def _cached(source: WeightSource, revision: str, cache_dir: str | os.PathLike[str] | None) -> bool:
    from huggingface_hub import constants, try_to_load_from_cache

    assert source.repo_id is not None
    key = (source.repo_id, source.filename, revision, os.fspath(cache_dir or constants.HF_HUB_CACHE))
    if key in _seen_cached:
        return True
    folder = None if cache_dir is None else os.fspath(cache_dir)  # huggingface_hub's annotation: str or Path
    found = isinstance(try_to_load_from_cache(source.repo_id, source.filename, cache_dir=folder,
                                              revision=revision), str)
    if found:
        _seen_cached.put(key, True)
    return found


def forget_cached() -> None:
    """Forget which files were found in the cache (after zooadapt removed one from it)."""
    _seen_cached.clear()


def check_reachable(source: WeightSource, revision: str, *, cache_dir: str | os.PathLike[str] | None = None,
                    force: bool = False, name: str | None = None) -> None:
    """Raise ``DownloadError`` when ``source`` must be downloaded and the Hub certainly cannot
    be reached; return at once when the file is cached, offline mode is on, or the Hub answered before."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return
    endpoint = constants.ENDPOINT
    if endpoint in _reachable:  # asked first: cheaper than the cache lookup below
        return
    if not force and _cached(source, revision, cache_dir):
        return
    reason = unreachable_reason(endpoint)
    if reason is None:
        _reachable.put(endpoint, True)
        return
    from ..contract.hub_address import format_hub_address

    address = format_hub_address(source.repo_id or "", revision, source.filename)
    raise DownloadError(
        f"cannot reach the Hugging Face Hub at {endpoint}: {reason}; and {address} is not in the Hub cache. "
        f"Without a network, pass weights=PATH to a local checkpoint, or prefetch with `zooadapt fetch "
        f"{name or address}` on a connected machine (same HF_HOME, or copy the cache) and set HF_HUB_OFFLINE=1 "
        "here. To try zooadapt with no Hub at all, serve stand-in weights from zooadapt.testing.LocalHub "
        "(see README, 'Trying zooadapt without the Hub'). If a proxy is needed, set HTTPS_PROXY; if the Hub "
        "is elsewhere, HF_ENDPOINT."
    )


# -- the endpoint's answer, checked before huggingface_hub builds a path from it ----------------

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_BLOB_NAME = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_HEADER_COMMIT = "X-Repo-Commit"


def _answer_refused(address: str, what: str) -> HubAnswerError:
    return HubAnswerError(
        f"the Hub endpoint {printable(_endpoint())} answered for {address} with {what}: no Hub sends that, and "
        "huggingface_hub would have built a cache path from it (possibly outside the cache). Refused before "
        "anything was written: nothing was written. Check HF_ENDPOINT (a mirror or proxy that rewrites headers?), "
        "or pass weights=PATH to a local copy.")


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _check_commit(commit: object, address: str) -> None:
    if commit is not None and not (isinstance(commit, str) and _HEX40.match(commit)):
        raise _answer_refused(address, f"X-Repo-Commit {printable(repr(commit))}, which is not a 40-hex commit")


_watching = threading.local()


def _answer_hook(response: Any) -> None:
    """huggingface_hub's client runs this on every response; it acts only in a thread inside
    ``answers_checked`` and only on a HEAD (the answer the client builds paths from)."""
    address = getattr(_watching, "address", None)
    if address is None or response.request.method != "HEAD":
        return
    headers = response.headers
    _check_commit(headers.get(_HEADER_COMMIT), address)
    etag = headers.get("X-Linked-Etag") or headers.get("ETag")
    if etag is not None:
        from huggingface_hub.file_download import _normalize_etag

        normal = _normalize_etag(etag)
        if not (normal and _BLOB_NAME.match(normal)):
            raise _answer_refused(address, f"ETag {printable(repr(etag))}, which is not a sha256 or git sha1")


@contextlib.contextmanager
def answers_checked(address: str) -> Iterator[None]:
    """While the client downloads, refuse (``HubAnswerError``) any HEAD answer whose commit is not
    40 hex or whose ETag (``X-Linked-Etag``, else ``ETag``) is not a sha256 or git sha1, before the
    client builds a path from it. The check is a response hook on huggingface_hub's shared HTTP
    client, inert outside this block and in every other thread (the sync client runs hooks in the
    calling thread)."""
    from huggingface_hub.utils import get_session

    hooks = get_session().event_hooks
    with _lock:
        if _answer_hook not in hooks.setdefault("response", []):
            hooks["response"].append(_answer_hook)
    _watching.address = printable(address)
    try:
        yield
    finally:
        _watching.address = None

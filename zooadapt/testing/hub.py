"""A loopback server that answers file requests the way the Hugging Face Hub does.

The real ``huggingface_hub.hf_hub_download`` runs against it unchanged (point ``HF_ENDPOINT``
at ``hub.url`` before huggingface_hub is imported), so tests, the demo and the benchmarks
exercise zooadapt's real download path on a machine without internet.

It answers ``HEAD``/``GET /{repo}/resolve/{revision}/{file}`` with ``X-Repo-Commit``,
``ETag`` and ``Content-Length`` (and ``Range`` requests), and 404 with
``X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound`` otherwise. Faults can be
queued to test error handling: a status code, a truncated or corrupted body, a delay, or
headers a hostile endpoint would send (``Fault(headers={"X-Linked-Etag": "../../x"})``).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

__all__ = ["LocalHub", "Fault", "hub_environment"]

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+(?:/[^/]+)?)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


@dataclass
class Fault:
    """One injected misbehaviour, applied to the next matching request.

    ``status``: answer with this HTTP status instead. ``truncate``: send only this many body
    bytes (but the full Content-Length). ``corrupt``: flip the body's bytes (same length).
    ``delay``: seconds to sleep before answering, or, with ``pause_after``, after sending that
    many body bytes (a download stalled mid-file, e.g. to kill the client then). ``method``:
    "GET", "HEAD" or None for both. ``repo``: only requests for this repo id (None: any).
    ``times``: how many matching requests it applies to. ``headers``: response headers to send
    instead of (or besides) the usual ones, on an answer or a 404 alike (a hostile endpoint's
    ``ETag``, ``X-Linked-Etag``, ``X-Repo-Commit``, ``X-Linked-Size``, ``Location``…); an empty
    value drops the header.
    """

    status: int | None = None
    truncate: int | None = None
    corrupt: bool = False
    delay: float = 0.0
    method: str | None = "GET"
    times: int = 1
    pause_after: int | None = None
    repo: str | None = None
    headers: dict[str, str] | None = None


def hub_environment(url: str, cache: str | os.PathLike[str]) -> dict[str, str]:
    """Environment variables that point huggingface_hub at a local hub and a private cache."""
    return {
        "HF_ENDPOINT": url,
        "HF_HOME": str(cache),
        "HF_HUB_CACHE": str(Path(cache) / "hub"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client killed or timed out mid-request
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class LocalHub:
    """An in-memory Hub: repos -> branches -> commits -> files."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._files: dict[str, dict[str, dict[str, bytes]]] = {}  # repo -> commit -> file -> bytes
        self._refs: dict[str, dict[str, str]] = {}  # repo -> branch -> commit
        self._lock = threading.Lock()
        self.faults: list[Fault] = []
        self._etags: dict[int, tuple[bytes, str]] = {}  # id(file bytes) -> (bytes, sha256)
        self.requests: Counter[tuple[str, str, str]] = Counter()  # (method, repo, file) -> count
        self.bodies_sent: Counter[tuple[str, str]] = Counter()  # full GET bodies per (repo, file)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

            def do_GET(self) -> None:
                hub._answer(self, body=True)

        self._server = _QuietServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- content ----------------------------------------------------------------------
    def add_file(self, repo_id: str, filename: str, data: bytes, branch: str = "main") -> str:
        """Add or replace a file on a branch; returns the new commit hash (40 hex)."""
        with self._lock:
            commits = self._files.setdefault(repo_id, {})
            refs = self._refs.setdefault(repo_id, {})
            previous = dict(commits.get(refs.get(branch, ""), {}))
            previous[filename] = data
            digest = hashlib.sha1(repo_id.encode())
            for name in sorted(previous):
                digest.update(name.encode() + hashlib.sha256(previous[name]).digest())
            commit = digest.hexdigest()
            commits[commit] = previous
            refs[branch] = commit
            return commit

    def add_tag(self, repo_id: str, tag: str, commit: str) -> None:
        with self._lock:
            self._refs[repo_id][tag] = commit

    def inject(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    # -- serving ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        if isinstance(host, bytes):  # typeshed allows a bytes host (a Unix socket path); a TCP server has a str
            host = host.decode()
        return f"http://{host}:{port}"

    def start(self) -> LocalHub:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="zooadapt-local-hub",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _take_fault(self, method: str, repo: str) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self.faults):
                if fault.method in (None, method) and fault.repo in (None, repo):
                    fault.times -= 1
                    if fault.times <= 0:
                        del self.faults[i]
                    return fault
        return None

    def _answer(self, req: BaseHTTPRequestHandler, body: bool) -> None:
        method = "GET" if body else "HEAD"
        m = _RESOLVE.match(req.path.split("?", 1)[0])
        if not m:
            return self._error(req, 404, "RepoNotFound", "not a resolve URL")
        repo, revision, filename = m.group("repo"), unquote(m.group("rev")), unquote(m.group("file"))
        with self._lock:
            self.requests[(method, repo, filename)] += 1
        fault = self._take_fault(method, repo)
        if fault and fault.delay and fault.pause_after is None:
            time.sleep(fault.delay)
        if fault and fault.status:
            return self._error(req, fault.status, None, f"injected {fault.status}")
        with self._lock:
            commits = self._files.get(repo)
            refs = self._refs.get(repo, {})
            commit = refs.get(revision) or (revision if commits and revision in commits else None)
            files = commits.get(commit) if commits and commit else None
            data = files.get(filename) if files is not None else None
        if commits is None:
            return self._error(req, 404, "RepoNotFound", f"Repository {repo} not found")
        if files is None:
            return self._error(req, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
        if data is None:
            return self._error(req, 404, "EntryNotFound", f"{filename} does not exist", commit=commit,
                               extra=fault.headers if fault else None)

        etag = self._etag(data)
        start, status = 0, 200
        rng = req.headers.get("Range")
        if body and rng and (rm := re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())):
            start, status = int(rm.group(1)), 206
        payload = data[start:]
        headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Content-Length": str(len(payload)),
                   "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        req.send_response(status)
        self._send_headers(req, headers, fault.headers if fault else None)
        if not body:
            return
        if fault and fault.corrupt:
            payload = bytes(b ^ 0xFF for b in payload[:64]) + payload[64:]
        if fault and fault.truncate is not None:
            payload = payload[: fault.truncate]
            req.close_connection = True
        try:
            if fault and fault.pause_after is not None:
                req.wfile.write(payload[: fault.pause_after])
                req.wfile.flush()
                time.sleep(fault.delay)
                payload = payload[fault.pause_after :]
            req.wfile.write(payload)
            req.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return
        if start == 0 and not (fault and fault.truncate is not None):
            with self._lock:
                self.bodies_sent[(repo, filename)] += 1

    def _etag(self, data: bytes) -> str:
        # hashing a 100 MB file on every HEAD would add ~60 ms the real Hub does not cost
        with self._lock:
            cached = self._etags.get(id(data))
            if cached is not None and cached[0] is data:
                return cached[1]
        etag = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._etags[id(data)] = (data, etag)
        return etag

    @staticmethod
    def _send_headers(req: BaseHTTPRequestHandler, headers: Mapping[str, str | None],
                      extra: Mapping[str, str | None] | None) -> None:
        """Send ``headers`` with a fault's ``extra`` ones replacing them (an empty or None value drops one)."""
        merged = {**headers, **(extra or {})}
        for name, value in merged.items():
            if value:
                req.send_header(name, value)
        req.end_headers()

    def _error(self, req: BaseHTTPRequestHandler, status: int, code: str | None, message: str,
               commit: str | None = None, extra: dict[str, str] | None = None) -> None:
        body = f'{{"error": "{message}"}}'.encode()
        headers = {"X-Error-Code": code or "", "X-Error-Message": message, "X-Repo-Commit": commit or "",
                   "Content-Type": "application/json", "Content-Length": str(len(body))}
        req.send_response(status)
        self._send_headers(req, headers, extra)
        if req.command != "HEAD":
            req.wfile.write(body)

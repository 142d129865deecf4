"""Build the signature index shipped with zooadapt (zooadapt/loading/signatures.json.gz).

    .venv/bin/python scripts/build_signature_index.py                # all names, 2 workers
    .venv/bin/python scripts/build_signature_index.py --workers 4 --work /tmp/sig

Every name the index must describe for the installed timm and the built-in families
(``zooadapt.loading.signatures.wanted``; third-party plugins' and registry files' models are
left to each user's cache) is built on ``meta`` once, in worker processes that each take every
Nth name and append one JSON line per name to a file in ``--work``. A worker that dies (a model
that crashes the interpreter) is restarted and resumes after the names it has written; a build
that runs past ``--timeout`` seconds or raises is recorded as a failure with its reason. The
lines are then merged into the compressed index. Run it again after upgrading timm (the index
says which version it describes); ``zooadapt identify`` covers a newer timm's new names by itself,
in the user's cache.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "zooadapt" / "loading" / "signatures.json.gz"


def _done(path: Path) -> set[str]:
    if not path.exists():
        return set()
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            names.add(json.loads(line)["name"])
        except (ValueError, KeyError):
            continue  # a line cut short by a crash: built again
    return names


class _Timeout(Exception):
    pass


def _alarm(signum, frame):  # noqa: ARG001
    raise _Timeout()


def worker(part: int, parts: int, work: Path, timeout: int) -> None:
    """Append a line per name of this worker's share that the file does not hold yet."""
    from zooadapt.loading.signature_index import BUNDLED_SOURCES, record_line
    from zooadapt.loading.signatures import compute, wanted

    names = [w for w in wanted() if w.source.split("==")[0] in BUNDLED_SOURCES][part::parts]
    out = work / f"part{part}.jsonl"
    done = _done(out)
    signal.signal(signal.SIGALRM, _alarm)
    with out.open("a", encoding="utf-8") as fh:
        for i, want in enumerate(names):
            if want.name in done:
                continue
            started = time.perf_counter()
            signal.alarm(timeout)
            try:
                line = record_line(compute(want))
            except _Timeout:
                line = record_line(want, error=f"building it on meta took more than {timeout} s")
            except Exception as exc:  # noqa: BLE001  (any build failure is recorded with its reason)
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                line = record_line(want, error=f"{type(exc).__name__}: {message}"[:300])
            finally:
                signal.alarm(0)
            fh.write(line + "\n")
            fh.flush()
            print(f"[{part}] {i + 1}/{len(names)} {want.name} {time.perf_counter() - started:.1f}s",
                  file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("build/signature-index"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--timeout", type=int, default=600, help="seconds one build may take")
    parser.add_argument("--part", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--merge-only", action="store_true", help="merge the work directory's lines")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.part is not None:
        worker(args.part, args.workers, args.work, args.timeout)
        return 0
    started = time.perf_counter()
    if not args.merge_only:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        for attempt in range(5):  # a worker killed by a crashing model resumes where it stopped
            procs = [subprocess.Popen([sys.executable, __file__, "--part", str(i), "--workers", str(args.workers),
                                       "--work", str(args.work), "--timeout", str(args.timeout)], env=env)
                     for i in range(args.workers)]
            codes = [p.wait() for p in procs]
            if not any(codes):
                break
            print(f"workers exited with {codes}; resuming (attempt {attempt + 2})", file=sys.stderr)
    import timm

    from zooadapt.loading.signature_index import merge_lines

    lines = [line for i in range(args.workers)
             for line in (args.work / f"part{i}.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    # every timm architecture, shadowed names included: a process with this timm need not ask timm
    records, failures = merge_lines(lines, args.out, listed={f"timm=={timm.__version__}": timm.list_models()})
    size = args.out.stat().st_size
    print(f"wrote {args.out}: {records} architectures, {failures} failed to build, {size / 1e6:.2f} MB, "
          f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

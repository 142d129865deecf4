"""Run a two-process torch.distributed job for a test: one worker script, two ranks, on the CPU.

The worker is called as ``worker.py RANK PORT OUT_DIR`` (``PORT`` is unused: the ranks meet
through a file store in ``OUT_DIR``, so no port can be taken between choosing and binding it)
and writes ``rankN.json`` into ``OUT_DIR`` as its last step. A rank that fails makes the test fail with its log; a
job that hangs is killed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

_EPILOGUE = """
import os as _os, sys as _sys
_sys.stdout.flush()
_sys.stderr.flush()
_os._exit(0)
"""
"""Appended to every worker: once it has written its results it leaves without running C++
static destructors, which now and then abort ("terminate called without an active exception")
on threads that gloo or torch.compile left behind, turning a finished job into a failed one."""


def run_two_ranks(work: Path, worker: str, *, env_for: Callable[[int], Mapping[str, str]] | None = None,
                  timeout: float = 240) -> list[dict[str, Any]]:
    """Start both ranks of ``worker`` (source text) in ``work``; return what each recorded."""
    script = work / "worker.py"
    script.write_text(worker + _EPILOGUE)
    procs = []
    for rank in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_for(rank) if env_for else {})}
        procs.append(subprocess.Popen([sys.executable, str(script), str(rank), "0", str(work)], env=env, cwd=work,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    for proc in procs:
        try:
            logs.append(proc.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail(f"the two-rank job in {work} hung for {timeout:.0f} s")
    for rank, (proc, log) in enumerate(zip(procs, logs)):
        assert proc.returncode == 0, f"rank {rank} exited with {proc.returncode}:\n{log}"
    return [json.loads((work / f"rank{rank}.json").read_text()) for rank in range(2)]

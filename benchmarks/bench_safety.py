"""What zooadapt's safety checks cost: reading a user's own file into memory instead of mapping it,
and checking a file's remembered sha256 instead of hashing it again.

A checkpoint in the Hugging Face cache (``blobs/``) is never rewritten in place, so it stays
memory-mapped; a user's own file is read into memory, because a map of it dies with SIGBUS
(and the file is truncated) when the user writes the same path again with ``torch.save``.
This measures both ways on the same files, one thread, medians of ``--repeat`` reads in
alternating blocks, and prints the cost per MB and as a ratio of a whole ``zooadapt.load``.

    .venv/bin/python benchmarks/bench_safety.py            # ~30 s
    .venv/bin/python benchmarks/bench_safety.py --json out.json
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _median_ms(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
        del result
    return statistics.median(times) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--models", nargs="+", default=["resnet50", "alexnet"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="zooadapt-bench-safety-"))
    atexit.register(shutil.rmtree, workdir, True)  # its files are hundreds of MB: nothing is left behind
    os.environ["ZOOADAPT_CACHE"] = str(workdir / "zooadapt-cache")
    import torch

    import zooadapt
    from zooadapt.testing import safetensors_bytes, torchvision_state_dict
    from zooadapt.weights.checkpoint import read_checkpoint
    from zooadapt.weights.digests import _memo, cached_sha256, sha256_of

    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    for arch in args.models:
        state = torchvision_state_dict(arch, seed=1)
        for suffix in (".safetensors", ".pth"):
            path = workdir / f"{arch}{suffix}"
            if suffix == ".safetensors":
                path.write_bytes(safetensors_bytes(state))
            else:
                torch.save(state, path)
            size_mb = path.stat().st_size / 1e6
            half = max(args.repeat // 2, 1)
            mapped, copied = [], []
            for _ in range(2):  # alternating blocks: drift of the machine hits both alike
                mapped.append(_median_ms(lambda p=path: read_checkpoint(p, mmap=True), half))
                copied.append(_median_ms(lambda p=path: read_checkpoint(p, mmap=False), half))
            load_ms = _median_ms(lambda p=path, a=arch: zooadapt.load(a, weights=p, num_classes=5), half)
            hash_ms = _median_ms(lambda p=path: sha256_of(p), 3)
            cached_sha256(path)
            memo_ms = _median_ms(lambda p=path: cached_sha256(p), 50)
            _memo._mem.clear()
            memo_disk_ms = _median_ms(lambda p=path: (_memo._mem.clear(), cached_sha256(p)), 20)
            row = {"file": path.name, "mb": round(size_mb, 1), "mapped_ms": round(min(mapped), 2),
                   "copied_ms": round(min(copied), 2), "load_ms": round(load_ms, 1),
                   "copy_ms_per_mb": round((min(copied) - min(mapped)) / size_mb, 3),
                   "sha256_ms": round(hash_ms, 1), "memo_ms": round(memo_ms, 3), "memo_disk_ms": round(memo_disk_ms, 3)}
            rows.append(row)
    print(f"{'file':24} {'MB':>6} {'mapped':>9} {'copied':>9} {'ms/MB':>6} {'load (copied)':>14} "
          f"{'sha256':>8} {'memo':>8} {'memo (disk)':>12}")
    for r in rows:
        print(f"{r['file']:24} {r['mb']:6.0f} {r['mapped_ms']:7.1f}ms {r['copied_ms']:7.1f}ms "
              f"{r['copy_ms_per_mb']:6.2f} {r['load_ms']:12.1f}ms {r['sha256_ms']:6.0f}ms {r['memo_ms']:6.3f}ms "
              f"{r['memo_disk_ms']:10.3f}ms")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

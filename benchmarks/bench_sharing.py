"""What sharing tensors between a kept skeleton and each copy saves of a warm load (issue 21).

    .venv/bin/python benchmarks/bench_sharing.py                    # resnet50, convnext_tiny, vit_small (~1 min)
    .venv/bin/python benchmarks/bench_sharing.py --models resnet50 --repeat 40

A model copied from a kept skeleton (``zooadapt.loading.meta_build``) may start out holding the
skeleton's own meta parameters and buffers, and get its own only for what the checkpoint did not
replace; or it may get its own of everything when it is copied (new meta parameters, cloned
buffers) and then have nearly all of them replaced. This runs warm loads both ways, alternated
(one of each per round, the order flipped every round, so drift of a loaded machine hits both
alike), single-threaded, from the same local Hub and seeded files as ``bench_load.py``, and
reports the medians and what sharing saves as a share of the warm load without it.

"Without sharing" is whatever the code does when the copy is made with ``share=False``; when the
pipeline no longer shares (it does not since issue 21), both columns measure the same code and
the saving reads about 0%.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_load import SPECS, load_zooadapt, prepare  # noqa: E402

MODELS = ("resnet50", "convnext_tiny", "vit_small_patch16_224")


@contextlib.contextmanager
def sharing(on: bool) -> Iterator[None]:
    """Copies made from skeletons share the skeleton's tensors (``on``) or never do."""
    from zooadapt.loading import meta_build

    skeleton = meta_build._Skeleton
    original = skeleton.copy_indexed
    if not hasattr(original, "__code__") or "share" not in original.__code__.co_varnames:
        yield  # this version has no switch: both ways are the same code
        return

    def forced(self: object, share: bool = True) -> object:
        return original(self, on)  # type: ignore[arg-type]

    skeleton.copy_indexed = forced  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        skeleton.copy_indexed = original  # type: ignore[method-assign]


def measure(name: str, setup: dict[str, object], repeat: int) -> dict[str, list[float]]:
    spec = SPECS[name]
    times: dict[str, list[float]] = {"shared": [], "own": []}
    for mode in ("shared", "own"):  # warm: imports, skeleton, header caches, plan cache
        with sharing(mode == "shared"):
            load_zooadapt(spec, setup)
    for round_ in range(repeat):
        order = ("shared", "own") if round_ % 2 == 0 else ("own", "shared")
        for mode in order:
            with sharing(mode == "shared"):
                started = time.perf_counter()
                model = load_zooadapt(spec, setup)
                times[mode].append(time.perf_counter() - started)
            del model
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeat", type=int, default=30, help="rounds (one load each way per round)")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="zooadapt-bench-sharing-"))
    atexit.register(shutil.rmtree, workdir, True)  # the models' files: nothing is left behind
    setup = prepare(workdir, models)

    import torch

    torch.set_num_threads(1)
    print(f"{'model':<24} {'shared ms':>10} {'own ms':>10} {'saved':>7}   (medians of {args.repeat} alternated)")
    for name in models:
        times = measure(name, setup, args.repeat)
        shared, own = statistics.median(times["shared"]), statistics.median(times["own"])
        print(f"{name:<24} {shared * 1e3:>10.1f} {own * 1e3:>10.1f} {(own - shared) / own:>7.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

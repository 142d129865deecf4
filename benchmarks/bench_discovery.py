"""What exact discovery costs: planning a wrapped checkpoint, every key scored, at 1,000-10,000 keys.

    .venv/bin/python benchmarks/bench_discovery.py                      # this tree, ~1 min
    .venv/bin/python benchmarks/bench_discovery.py --compare a667eea    # beside an older commit (~3 min)

Discovery (``zooadapt.loading.adapt``) scores every wrapper prefix on every checkpoint key, in no
particular order, and plans every candidate that could tie (issue 24: the sampled vote of before
saw one copy of a network and missed the other). This measures what that costs on the case
discovery exists for, a checkpoint whose names do not fit as they are:

* ``wrapped N``: a network of N state-dict keys saved under a Lightning-style ``model.`` prefix
  (found, then planned);
* ``two copies N``: the same network twice, under ``online.`` and ``target.`` (both planned, the
  tie found and refused);
* ``resnet152 Lightning``: bench_plan.py's 1,000-key file (ResNet-152 and a projection head under
  ``model.``) into the resnet family's ``resnet152``, its key rules applied.

The networks are plain stacks of conv/BatchNorm blocks of N keys (no family: only the planner
is timed, not a model build). Each figure is the median of ``--repeat`` runs of ``adapt`` with the
plan cache emptied before each (what a process's first load of a file pays; a repeat is a cache
hit). ``--compare REV`` runs the same measurement on another commit's ``zooadapt`` (a git
worktree), alternating fresh processes on each tree ``--rounds`` times (a shared machine's slow
minute then falls on both), and prints each case's median over the rounds, the ratio of those, and
the lowest and highest ratio of a single round.

Targets (issue 24): a 1,000-key plan within 2x of the sampled planner's time; time per key flat
from 1,000 to 10,000 keys (linear).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SIZES = (1000, 2500, 5000, 10000)


def network(keys: int) -> dict[str, tuple[int, ...]]:
    """``keys`` state-dict keys of conv/BatchNorm blocks (6 keys each) with varied widths."""
    out: dict[str, tuple[int, ...]] = {}
    block = 0
    while len(out) < keys:
        width = 16 * (1 + block % 8)
        stage, index = divmod(block, 50)
        p = f"stages.{stage}.blocks.{index}."
        out[p + "conv.weight"] = (width, width, 3, 3)
        for name in ("weight", "bias", "running_mean", "running_var"):
            out[p + "bn." + name] = (width,)
        out[p + "bn.num_batches_tracked"] = ()
        block += 1
    return dict(list(out.items())[:keys])


def measure(repeat: int) -> dict[str, dict[int, float]]:
    from zooadapt.contract.errors import AmbiguousCheckpointError
    from zooadapt.loading import adapt as adapt_module
    from zooadapt.loading.adapt import PlanTarget, adapt

    results: dict[str, dict[int, float]] = {"wrapped": {}, "two copies": {}}
    resnet = _resnet152_lightning()
    for size in SIZES:
        model = network(size)
        params = [k for k in model if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
        target = PlanTarget(model, params)
        cases = {
            "wrapped": {"model." + k: s for k, s in model.items()},
            "two copies": {**{"online." + k: s for k, s in model.items()},
                           **{"target." + k: s for k, s in model.items()}},
        }
        for name, checkpoint in cases.items():
            times = []
            for _ in range(repeat):
                adapt_module._plans.clear()
                start = time.perf_counter()
                try:
                    plan = adapt(checkpoint, target)
                    outcome = "fits" if plan.fits else "does not fit"
                except AmbiguousCheckpointError:
                    outcome = "refused as ambiguous"
                times.append(time.perf_counter() - start)
            results[name][size] = statistics.median(times) * 1000
            results.setdefault(f"{name} outcome", {})[size] = outcome  # type: ignore[assignment]
    times = []
    target, family_rules, checkpoint = resnet
    for _ in range(repeat):
        adapt_module._plans.clear()
        start = time.perf_counter()
        plan = adapt(checkpoint, target, family_rules=family_rules)
        times.append(time.perf_counter() - start)
    results["resnet152 Lightning"] = {len(checkpoint): statistics.median(times) * 1000}
    results["resnet152 Lightning outcome"] = {len(checkpoint): "fits" if plan.fits else "does not fit"}  # type: ignore
    return results


def _resnet152_lightning() -> tuple[object, object, dict[str, tuple[int, ...]]]:
    """bench_plan.py's 1,000-key case: torchvision ResNet-152 (932 tensors) and a 68-tensor
    projection head, every key under Lightning's ``model.``, into the resnet family's resnet152."""
    import torch
    import torchvision

    from zooadapt.loading.adapt import PlanTarget
    from zooadapt.loading.meta_build import build_on_meta
    from zooadapt.loading.pipeline import resolve

    with torch.device("meta"):
        state = {k: tuple(v.shape) for k, v in torchvision.models.resnet152().state_dict().items()}
    for i in range(34):
        state[f"projector.{i}.weight"], state[f"projector.{i}.bias"] = (64, 64), (64,)
    entry, family = resolve("resnet152")
    model = build_on_meta(family, entry.arch, 5)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items()}
    target = PlanTarget(shapes, [n for n, _ in model.named_parameters()], head="fc", family="resnet")
    return target, family.key_rules, {f"model.{k}": v for k, v in state.items()}


@contextlib.contextmanager
def _worktree(rev: str) -> Iterator[Path]:
    """Commit ``rev`` checked out in a temporary git worktree (removed afterwards)."""
    root = Path(__file__).resolve().parents[1]
    work = Path(tempfile.mkdtemp(prefix="zooadapt-bench-rev-"))
    subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(work), rev], check=True,
                   capture_output=True)
    try:
        yield work
    finally:
        subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(work)], capture_output=True)


def _measured_in(tree: Path | None, repeat: int) -> dict[str, dict[str, Any]]:
    """The measurement in a fresh process: on this tree's ``zooadapt`` (None) or on ``tree``'s."""
    env = dict(os.environ) if tree is None else {**os.environ, "PYTHONPATH": str(tree)}
    cwd = Path(__file__).resolve().parents[1] if tree is None else tree
    out = subprocess.run([sys.executable, __file__, "--repeat", str(repeat), "--json"], env=env, check=True,
                         capture_output=True, text=True, cwd=cwd).stdout
    return json.loads(out)


def _compared(rev: str, repeat: int, rounds: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[float]]]:
    """Both trees measured in ``rounds`` alternating pairs of processes (a shared machine's slow
    minute then falls on both): each case's median over the rounds, and each round's ratio."""
    here_runs, there_runs = [], []
    with _worktree(rev) as work:
        for _ in range(rounds):
            here_runs.append(_measured_in(None, repeat))
            there_runs.append(_measured_in(work, repeat))
    here, there, ratios = _across(here_runs), _across(there_runs), {}
    for name, row in here.items():
        if not name.endswith("outcome"):
            for size in row:
                ratios[f"{name} {size}"] = sorted(float(h[name][size]) / float(t[name][size])
                                                  for h, t in zip(here_runs, there_runs))
    return here, there, ratios


def _across(runs: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each case's median over runs (outcomes: the first run's; every run gives the same)."""
    out: dict[str, dict[str, Any]] = {}
    for name, row in runs[0].items():
        out[name] = {size: row[size] if name.endswith("outcome") else statistics.median(float(r[name][size])
                                                                                       for r in runs)
                     for size in row}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--compare", metavar="REV", help="also measure commit REV and print the ratio")
    parser.add_argument("--rounds", type=int, default=3,
                        help="with --compare: alternate a process on each tree this many times (default 3)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.json:
        here = measure(args.repeat)
        print(json.dumps({k: {str(n): v for n, v in row.items()} for k, row in here.items()}))
        return 0
    if args.compare:
        mine, other, ratios = _compared(args.compare, args.repeat, args.rounds)
    else:
        mine = {k: {str(n): v for n, v in row.items()} for k, row in measure(args.repeat).items()}
        other, ratios = None, {}
    import zooadapt

    print(f"planning with discovery, median of {args.repeat}, plan cache emptied before each "
          f"(zooadapt {zooadapt.__version__}, python {sys.version.split()[0]})"
          + (f"; {args.rounds} rounds alternating a process on each tree, medians over the rounds"
             if other else ""))
    head = f"{'case':<20} {'keys':>6} {'this tree':>12} {'per key':>9} {'outcome':<22}"
    if other:
        head += f" {args.compare:>12} {'ratio':>7} {'per round':>13} {'outcome there':<22}"
    print(head)
    for name in ("resnet152 Lightning", "wrapped", "two copies"):
        for size in (SIZES if name != "resnet152 Lightning" else (1000,)):
            ms = float(mine[name][str(size)])
            line = (f"{name:<20} {size:>6} {ms:>10.1f}ms {ms * 1000 / size:>7.1f}us "
                    f"{mine[name + ' outcome'][str(size)]:<22}")
            if other:
                theirs = float(other[name][str(size)])
                spread = ratios[f"{name} {size}"]
                line += (f" {theirs:>10.1f}ms {ms / theirs:>6.2f}x {f'{spread[0]:.2f}-{spread[-1]:.2f}x':>13} "
                         f"{other[name + ' outcome'][str(size)]:<22}")
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

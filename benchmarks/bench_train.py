"""Training-step cost of frozen stages: step time and peak memory, frozen vs nothing frozen.

    .venv/bin/python benchmarks/bench_train.py                   # resnet34 + resnet50 (~1-2 min on 2 cores)
    .venv/bin/python benchmarks/bench_train.py --models resnet50 --batch 16 --size 224 --steps 10

Each model is built with ``zooadapt.load(name, num_classes=10, pretrained=False, freeze=spec)``
(weights do not change timing) for each freeze spec, with an SGD optimizer (momentum) over
``zooadapt.param_groups`` and one fixed batch. Each frozen spec runs twice: with the optimizer
over the trainable parameters only (``groups=trainable``) and over every stage
(``param_groups(..., include_frozen=True)``, ``groups=all``, the gradual-unfreezing setup). The
frozen parameters then sit in the optimizer without a gradient; the savings must not change.
Time: one process per model holds all specs and interleaves their steps round by round (a
shared CPU's load drifts alike for all), median of
``--steps`` full training steps (zero_grad, forward, loss, backward, optimizer step) after
``--warmup``. Memory: a fresh process per spec resets the kernel's peak-RSS counter
(``/proc/self/clear_refs`` = 5) after building and reports the peak growth over the first two
steps (activations kept for backward, gradients, momentum). Both are shown as ratios to
nothing frozen, with checks that frozen stages cost no gradient computation:

* ``grads``: no frozen parameter ever receives a ``.grad`` or optimizer state (momentum);
  every trainable one does;
* ``backward through frozen``: whether autograd records a graph through the frozen stages.
  With ``freeze="layer1-3"`` the stem stays trainable, so the gradient for the stem's weights
  must still flow back *through* layer1-3 (input gradients only, no weight gradients). With
  ``":layer3"`` (stem through layer3) nothing below layer4 is trainable: the activations there
  do not require grad and no backward runs through those stages at all.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Any

SPECS = ("none", "layer1-3", "layer1-3+all", ":layer3", ":layer3+all")
"""Freeze specs; ``+all``: the optimizer holds every stage (``param_groups(..., include_frozen=True)``)."""


def _memory_kib() -> tuple[int, int]:
    """(peak RSS, current RSS) of this process in KiB, from /proc (Linux)."""
    with open("/proc/self/status") as fh:
        text = fh.read()
    return (int(re.search(r"VmHWM:\s+(\d+)", text).group(1)),  # type: ignore[union-attr]
            int(re.search(r"VmRSS:\s+(\d+)", text).group(1)))  # type: ignore[union-attr]


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _setup(name: str, spec: str, batch: int, size: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    import zooadapt

    torch.manual_seed(0)
    freeze, _, groups = spec.partition("+")
    model = zooadapt.load(name, num_classes=10, pretrained=False, freeze=None if freeze == "none" else freeze)
    model.train()
    opt = torch.optim.SGD(zooadapt.param_groups(model, lr=0.01, include_frozen=groups == "all"), momentum=0.9)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return {"model": model, "step": step, "spec": spec, "optimizer": opt}


def _checks(run: dict[str, Any]) -> dict[str, Any]:
    """One step with a hook on layer3: which gradients exist, and whether autograd saw layer1-3."""
    import zooadapt

    model = run["model"]
    seen: dict[str, bool] = {}
    hook = model.layer3.register_forward_hook(lambda _m, _i, out: seen.update(requires_grad=out.requires_grad))
    run["step"]()
    hook.remove()
    frozen = [p for p in model.parameters() if not p.requires_grad]
    trainable = [p for p in model.parameters() if p.requires_grad]
    state = run["optimizer"].state
    held = {id(p) for g in run["optimizer"].param_groups for p in g["params"]}
    return {
        "frozen_stages": list(zooadapt.frozen_stages(model)),
        "trainable": sum(p.numel() for p in trainable), "total": sum(p.numel() for p in model.parameters()),
        "in_optimizer": sum(p.numel() for p in model.parameters() if id(p) in held),
        "grads_ok": all(p.grad is None and p not in state for p in frozen)
        and all(p.grad is not None and p in state for p in trainable),
        "backward_through_frozen": bool(frozen) and seen.get("requires_grad", False),
    }


def time_child(name: str, batch: int, size: int, warmup: int, steps: int) -> list[dict[str, Any]]:
    """All freeze specs of one model in one process, their steps interleaved round by round, so a
    change in machine load (a shared CPU) hits every spec alike and the ratios stay fair."""
    runs = [_setup(name, spec, batch, size) for spec in SPECS]
    results = [{"model": name, "freeze": r["spec"], **_checks(r), "times": []} for r in runs]
    for _ in range(max(0, warmup - 1)):
        for r in runs:
            r["step"]()
    for _ in range(steps):
        for r, res in zip(runs, results):
            started = time.perf_counter()
            r["step"]()
            res["times"].append(time.perf_counter() - started)
    for res in results:
        res["step_ms"] = statistics.median(res.pop("times")) * 1000
    return results


def memory_child(name: str, spec: str, batch: int, size: int) -> float | None:
    """Peak RSS growth (MiB) over the first two training steps, in a process of its own: what
    training adds to the built model (activations kept for backward, gradients, momentum).
    Measured from the first step on, so the allocator cannot hide it in memory freed earlier."""
    run = _setup(name, spec, batch, size)
    if not _reset_peak():
        return None
    _, before = _memory_kib()
    run["step"]()
    run["step"]()
    peak, _ = _memory_kib()
    return (peak - before) / 1024


def _child(args: list[str]) -> Any:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"benchmark child {args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    common = ["--batch", str(args.batch), "--size", str(args.size), "--threads", str(args.threads)]
    results = []
    for name in args.models:
        timed = _child(["time", name, "-", *common, "--warmup", str(args.warmup), "--steps", str(args.steps)])
        print(f"  timed {name}", file=sys.stderr, flush=True)
        for res in timed:
            res["peak_mib"] = None if args.no_memory else _child(["memory", name, res["freeze"], *common])
        print(f"  measured memory of {name}", file=sys.stderr, flush=True)
        results += timed
    return results


def table(results: list[dict[str, Any]]) -> str:
    base = {r["model"]: r for r in results if r["freeze"] == "none"}
    rows = [("model", "freeze", "groups", "trainable", "in optim", "step ms", "x none", "peak MiB", "x none", "grads",
             "bwd thru frozen")]
    for r in results:
        b = base[r["model"]]
        mem = r["peak_mib"]
        freeze, _, groups = r["freeze"].partition("+")
        rows.append((
            r["model"], freeze, groups or "trainable", f"{r['trainable'] / r['total']:.0%}",
            f"{r['in_optimizer'] / r['total']:.0%}", f"{r['step_ms']:.0f}",
            f"{r['step_ms'] / b['step_ms']:.2f}", "-" if mem is None else f"{mem:.0f}",
            "-" if mem is None or not b["peak_mib"] else f"{mem / b['peak_mib']:.2f}",
            "ok" if r["grads_ok"] else "FAIL",
            "-" if r["freeze"] == "none" else "yes" if r["backward_through_frozen"] else "no",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet34", "resnet50"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=160, help="input height and width")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: steadier on a shared machine; ratios hold at any count)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-spec memory subprocesses")
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "MODEL", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        kind, name, spec = args.child
        result = (time_child(name, args.batch, args.size, args.warmup, args.steps) if kind == "time"
                  else memory_child(name, spec, args.batch, args.size))
        print(json.dumps(result))
        return 0
    print(f"training step on CPU ({args.threads} thread{'s' if args.threads > 1 else ''}), batch {args.batch}x3x"
          f"{args.size}x{args.size}, SGD with momentum; median of {args.steps} steps after {args.warmup} warm-up, "
          "specs interleaved; peak memory growth of the first two steps, each spec in its own process", file=sys.stderr)
    results = run(args)
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0 if all(r["grads_ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

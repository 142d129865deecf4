"""Check every timm architecture against zooadapt, and write the counts into README.md.

    nice -n 19 .venv/bin/python scripts/timm_coverage.py                 # every name (hours)
    .venv/bin/python scripts/timm_coverage.py --resume                   # go on where the record stops
    .venv/bin/python scripts/timm_coverage.py --names 'levit_*' --limit 5 --json /tmp/levit.json
    .venv/bin/python scripts/timm_coverage.py --readme-only              # the table from the record

Issue #23 asks that every architecture ``timm.create_model`` builds loads its own timm file. The
sweeps in ``tests/`` cover the smallest architecture of each timm module; this covers all of
``timm.list_models()`` (about 1,400), too slow for CI, so it runs before a release and its record,
``scripts/timm_coverage.json``, is committed. For each name (``check``):

1. timm builds it (on ``meta``), else the row is *timm cannot build* (not held against zooadapt);
2. its seeded state dict, saved as timm saves it (safetensors), loads with
   ``zooadapt.load(name, weights=FILE, num_classes=5)``; every tensor outside the head equals the
   file's, and up to ``--param-limit`` parameters the outputs on one input equal timm's model's
   (``timm.create_model(name, num_classes=5)``, given zooadapt's tensors) within 1e-6 of the largest
   output;
   bigger models are checked on tensors only and the row says so;
3. the state dict's keys and shapes are those of ``timm.create_model(name, num_classes=5)``, the
   model a timm user fine-tunes: every head replaced (both of a distilled model, an auxiliary head
   too). For most models that is ``reset_classifier(5)``'s too; iFormer's ``reset_classifier``
   drops the distillation head its ``*_distilled`` architectures are built with, which
   ``create_model`` keeps;
4. every parameter is in a named stage or the head, and no stage is empty (as
   ``tests/test_torchvision_zoo.py`` checks a stage map);
5. ``features_only=True`` gives the feature maps timm's own ``features_only=True`` gives (its
   default ``out_indices``), with timm's ``feature_info`` (channels, reduction, module), where
   timm's own ``features_only`` works.

A row is *exact*, *refused* (zooadapt raised a ``ZooadaptError``: its class and first line),
*wrong* (what differed, or a crash that is not a ``ZooadaptError``), *timm cannot build*, or
*no result* (the worker ran past ``--timeout``, ran out of memory or died; the row says which).
Each name runs in a worker process, so a crash is one row, not the end of the run.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import fnmatch
import json
import os
import re
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
RECORD = SCRIPTS / "timm_coverage.json"
BLOCK = "timm-coverage"
OUTCOMES = ("exact", "refused", "wrong", "no result", "timm cannot build")
NUM_CLASSES = 5
TOLERANCE = 1e-6
"""Outputs may differ by this much relative to the largest output: the same tensors in the same
architecture compute the same, up to a kernel's summation order (safetensors tensors are not
64-byte aligned, which can change it, by about 1e-8)."""


# -- one architecture ---------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def _quiet() -> Any:
    import contextlib
    import warnings

    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def _timm_on_meta(name: str, **kwargs: Any) -> Any:
    import timm
    import torch

    from zooadapt.loading.meta_build import skip_parameter_init

    with _quiet(), torch.device("meta"), skip_parameter_init():
        return timm.create_model(name, pretrained=False, **kwargs)


def _shapes(state: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _save_as_timm(state: dict[str, Any], path: Path) -> None:
    """``safetensors.torch.save_file`` of the state dict, as timm's ``save_for_hf`` writes it;
    a tensor held under two names (tied weights) is written twice, as safetensors requires."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    out = {}
    for key, tensor in state.items():
        out[key] = tensor.clone() if id(tensor) in seen else tensor.contiguous()
        seen.add(id(tensor))
    save_file(out, str(path))


def _listed(items: list[str], n: int = 4) -> str:
    return ", ".join(items[:n]) + (f" … (+{len(items) - n})" if len(items) > n else "")


def _head_difference(ours: dict[str, tuple[int, ...]], timms: dict[str, tuple[int, ...]]) -> str | None:
    missing = [k for k in timms if k not in ours]
    extra = [k for k in ours if k not in timms]
    shapes = [f"{k} {list(ours[k])} (timm {list(timms[k])})" for k in timms if k in ours and ours[k] != timms[k]]
    if not (missing or extra or shapes):
        return None
    parts = [f"missing {_listed(missing)}" if missing else "", f"extra {_listed(extra)}" if extra else "",
             f"shapes {_listed(shapes, 2)}" if shapes else ""]
    found = "; ".join(p for p in parts if p)
    return f"num_classes={NUM_CLASSES}: not the state dict of timm's create_model(num_classes={NUM_CLASSES}): {found}"


def _stage_problem(model: Any) -> str | None:
    """Every parameter in a named stage or the head, no stage empty (``StageMap.stage_of``)."""
    smap = model.zooadapt.stages
    owner = {k: smap.stage_of(k) for k, _ in model.named_parameters()}
    outside = [k for k, s in owner.items() if s is None]
    empty = [s for s in smap.names if s not in set(owner.values())]
    if outside:
        return f"stages: {len(outside)} parameters in no stage and not in the head: {_listed(outside)}"
    if empty:
        return f"stages: empty stages {_listed(empty)}"
    if not smap.names:
        return "stages: the stage map names no stage"
    return None


def _features_problem(name: str) -> tuple[str | None, str]:
    """zooadapt's ``features_only=True`` against timm's own ``features_only=True``: the same feature
    maps (timm's default ``out_indices``), with timm's ``feature_info`` (channels, reduction,
    module); (problem or None, note)."""
    import zooadapt

    try:
        ref = _timm_on_meta(name, features_only=True).feature_info
    except Exception as exc:  # noqa: BLE001  (timm's own features_only does not work here)
        return None, f"features_only: timm's fails ({_first_line(exc)[:80]})"
    wanted = sorted(i % len(ref) for i in ref.out_indices)
    with _quiet():
        net = zooadapt.load(name, pretrained=False, device="meta", features_only=True)
    got = net.feature_info
    # a name zooadapt's own family builds (resnet50: torchvision's ResNet) has that architecture's
    # module names (relu, not act1); its maps must still be timm's
    family = net.zooadapt.family
    checks = [("channels", got.channels(), ref.channels(wanted)), ("reduction", got.reduction(), ref.reduction(wanted))]
    if family == "timm":
        checks.append(("module", got.module_name(), ref.module_name(wanted)))
    for what, ours, theirs in checks:
        if list(ours) != list(theirs):
            return f"features_only: {what} {list(ours)}, timm's {list(theirs)} (out_indices {wanted})", ""
    if family != "timm":
        return None, f"features_only: timm's maps (channels, reduction), built by zooadapt's {family} family"
    return None, "features_only: timm's maps and feature_info"


def check(name: str, *, param_limit: int = 100_000_000, max_params: int = 0,
          folder: Path | None = None) -> dict[str, Any]:
    """Check one timm architecture; the row for the record (``outcome``, ``reason``, ``notes``…).
    Above ``max_params`` parameters (0: no limit) nothing is loaded: *no result*, for this machine."""
    started = time.perf_counter()
    row: dict[str, Any] = {"outcome": "exact", "reason": "", "notes": []}
    try:
        _check(name, param_limit, max_params, folder, row)
    except _Outcome as stop:
        row["outcome"], row["reason"] = stop.outcome, stop.reason
    except Exception as exc:  # noqa: BLE001  (the checks' own steps: seeding, saving, timm's reference)
        stop = _failure("check", exc)
        row["outcome"], row["reason"] = stop.outcome, stop.reason
    row["seconds"] = round(time.perf_counter() - started, 2)
    return row


class _Outcome(Exception):
    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome, self.reason = outcome, reason


def _failure(what: str, exc: Exception) -> _Outcome:
    """A ``ZooadaptError`` is a refusal; any other exception a zooadapt bug. Either way, memory
    that ran out (the worker's ``--max-memory-gb``, possibly wrapped in a plugin's error) means
    the architecture was not checked."""
    if isinstance(exc, MemoryError) or re.search(r"can't allocate memory|Cannot allocate memory", str(exc)):
        return _Outcome("no result", f"out of memory ({what}) under the worker's memory cap")
    from zooadapt.errors import ZooadaptError

    prefix = "" if what == "load" else f"{what}: "
    if isinstance(exc, ZooadaptError):
        return _Outcome("refused", prefix + _first_line(exc))
    return _Outcome("wrong", f"{what} crashed: {_first_line(exc)}")


def _check(name: str, param_limit: int, max_params: int, folder: Path | None, row: dict[str, Any]) -> None:
    import torch
    from safetensors import safe_open

    import zooadapt
    from zooadapt.testing import seeded_state_dict

    try:
        source = _timm_on_meta(name)
    except Exception as exc:  # noqa: BLE001  (any failure of timm's own constructor)
        raise _Outcome("timm cannot build", _first_line(exc)) from None
    row["params"] = sum(p.numel() for p in source.parameters())
    if max_params and row["params"] > max_params:
        raise _Outcome("no result", f"not run: {row['params'] / 1e6:.0f}M parameters, over --max-params "
                                    f"{max_params / 1e6:.0f}M")
    try:
        # an encoder timm builds without a classifier (``*_enc``) has no head to build: it loads as it is
        classes = {"num_classes": NUM_CLASSES} if hasattr(source, "get_classifier") else {}
        if not classes:
            row["notes"].append("an encoder without a classifier: loaded without num_classes")
        timms = _shapes(_timm_on_meta(name, **classes).state_dict())
    except Exception as exc:  # noqa: BLE001
        raise _Outcome("timm cannot build", f"num_classes={NUM_CLASSES}: {_first_line(exc)}") from None
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = Path(tmp) / "model.safetensors"
        _save_as_timm(seeded_state_dict(source, seed=0), path)  # not kept: a huge model's memory goes to the load
        try:
            with _quiet():
                model = zooadapt.load(name, weights=path, **classes).eval()
        except Exception as exc:  # noqa: BLE001
            raise _failure("load", exc) from None
        ours = model.state_dict()
        problem = _head_difference(_shapes(ours), timms)
        if problem:
            raise _Outcome("wrong", problem)
        smap = model.zooadapt.stages
        with safe_open(str(path), "pt") as file:
            differ = [k for k in file.keys() if k in ours and smap.stage_of(k) != "head"  # noqa: SIM118
                      and not torch.equal(ours[k], file.get_tensor(k))]
    if differ:
        raise _Outcome("wrong", f"{len(differ)} tensors differ from the file's: {_listed(differ)}")
    problem = _stage_problem(model)
    if problem:
        raise _Outcome("wrong", problem)
    if row["params"] <= param_limit:
        problem = _outputs_problem(name, model, ours, row["notes"], classes)
        if problem:
            raise _Outcome("wrong", problem)
    else:
        row["notes"].append(f"tensors only ({row['params'] / 1e6:.0f}M parameters > {param_limit / 1e6:.0f}M)")
    del model, ours
    try:
        problem, note = _features_problem(name)
    except Exception as exc:  # noqa: BLE001
        raise _failure("features_only", exc) from None
    row["notes"].append(note)
    if problem:
        raise _Outcome("wrong", problem)


def _outputs_problem(name: str, model: Any, ours: dict[str, Any], notes: list[str],
                     classes: dict[str, int]) -> str | None:
    """timm's own model, built for ``NUM_CLASSES`` as ``timm.create_model(name, num_classes=5)`` builds
    it and given zooadapt's tensors, against zooadapt's."""
    import timm
    import timm.data
    import torch

    # built as a user builds it: timm's initialisers run (skipping them leaves the pruned models'
    # adapted layers on meta, and load_state_dict into meta is a silent no-op)
    with _quiet():
        reference = timm.create_model(name, pretrained=False, **classes)
        reference.load_state_dict(ours)
    reference.eval()
    size = timm.data.resolve_data_config({}, model=reference)["input_size"]
    x = torch.randn(1, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = reference(x), model(x)
    if not isinstance(want, torch.Tensor) or not isinstance(got, torch.Tensor) or want.shape != got.shape:
        return f"outputs: zooadapt's {_kind(got)}, timm's {_kind(want)}"
    scale = float(want.abs().max())
    error = float((want - got).abs().max()) / (scale or 1.0)
    if error <= TOLERANCE:
        return None
    # zooadapt's tensors are views of the memory-mapped file, at offsets that are not 64-byte
    # aligned; some CPU kernels take another path there (sums in another order). The same tensors
    # copied to aligned memory must then give timm's outputs: that tells kernel numerics from a
    # wrong load, and the row says both figures.
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = tensor.data.clone()
        aligned = float((want - model(x)).abs().max()) / (scale or 1.0)
    if aligned <= TOLERANCE:
        notes.append(f"outputs: {error:.1e} of the largest output as loaded (unaligned memory-mapped tensors take "
                     f"other CPU kernels), {aligned:.1e} with the same tensors aligned")
        return None
    return f"outputs differ from timm's model: max error {error:.1e} of the largest output"


def _kind(out: Any) -> str:
    return f"shape {list(out.shape)}" if hasattr(out, "shape") else type(out).__name__


# -- workers ------------------------------------------------------------------------------------


def worker(param_limit: int, max_params: int, threads: int, memory_gb: float) -> None:
    """Read names from stdin, one a line; answer one JSON row a line on the original stdout.
    Everything else the checks print goes to stderr, so it cannot break a row. Its memory is
    capped (``RLIMIT_DATA``: allocations, not the file's read-only mapping), so a huge model fails
    here with a MemoryError rather than wake the kernel's OOM killer on a shared machine."""
    import resource

    answer = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    if memory_gb > 0:
        cap = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(ROOT))
    for line in sys.stdin:
        name = line.strip()
        if name:
            row = check(name, param_limit=param_limit, max_params=max_params)
            # a big model loaded leaves the heap fragmented: the next name gets a fresh worker
            loaded = not row["reason"].startswith("not run")
            retire = loaded and (row.get("params", 0) > param_limit or row["outcome"] == "no result")
            answer.write(json.dumps({"name": name, **row, "retire": retire}) + "\n")
            if retire:
                return


class _Worker:
    def __init__(self, args: argparse.Namespace, threads: int) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--param-limit", str(args.param_limit),
                   "--max-params", str(args.max_params), "--threads", str(threads),
                   "--max-memory-gb", str(args.max_memory_gb)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=args.log_file or subprocess.DEVNULL, text=True, cwd=ROOT)
        self.name: str | None = None
        self.since = 0.0

    def send(self, name: str) -> None:
        assert self.process.stdin is not None
        self.name, self.since = name, time.monotonic()
        self.process.stdin.write(name + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        import signal

        kind = signal.Signals(-code).name
        return f"the worker was killed ({kind}{', out of memory?' if kind == 'SIGKILL' else ''})"
    return f"the worker exited with status {code}"


def run(names: list[str], args: argparse.Namespace, record: dict[str, Any]) -> None:
    """Check ``names`` in ``args.jobs`` workers, saving the record after every row."""
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    todo = list(names)
    workers: list[_Worker] = []
    selector = selectors.DefaultSelector()
    started = time.monotonic()
    done = 0
    last = started

    def finish(name: str, row: dict[str, Any]) -> None:
        nonlocal done, last
        done += 1
        record["rows"][name] = {**row, **({"commit": args.commit} if args.commit else {})}
        record["duration_s"] = round(record.get("duration_s", 0) + time.monotonic() - last, 1)
        last = time.monotonic()
        _save(record, args.json)
        if not args.quiet:
            print(f"[{done}/{len(names)}] {name} {row['outcome']}"
                  f"{': ' + row['reason'] if row['reason'] else ''} ({row.get('seconds', 0):.0f} s)", flush=True)

    def lost(w: _Worker, reason: str) -> None:
        assert w.name is not None
        finish(w.name, {"outcome": "no result", "reason": reason, "notes": [],
                        "seconds": round(time.monotonic() - w.since, 1)})
        start(w)

    def start(w: _Worker | None) -> None:
        if w is not None:
            selector.unregister(w.process.stdout)
            workers.remove(w)
            w.stop()
        if todo:
            new = _Worker(args, threads)
            workers.append(new)
            selector.register(new.process.stdout, selectors.EVENT_READ, new)
            new.send(todo.pop(0))

    for _ in range(min(args.jobs, len(todo))):
        start(None)
    while workers:
        for key, _ in selector.select(timeout=5):
            w: _Worker = key.data
            line = w.process.stdout.readline()
            if line:
                row = json.loads(line)
                retire = row.pop("retire", False)
                finish(row.pop("name"), row)
                if retire:
                    w.name = None
                    start(w)
                elif todo:
                    w.send(todo.pop(0))
                else:
                    selector.unregister(w.process.stdout)
                    workers.remove(w)
                    w.process.stdin.close()
                    w.process.wait()
            else:  # the worker died in the middle of a name
                lost(w, _death(w.process.wait()))
        for w in list(workers):
            if w.name is not None and time.monotonic() - w.since > args.timeout:
                lost(w, f"ran past the time limit of {args.timeout} s")
    if not args.quiet:
        print(f"{done} architectures in {time.monotonic() - started:.0f} s")


# -- the record and the README table ----------------------------------------------------------------


def _save(record: dict[str, Any], path: Path) -> None:
    record["rows"] = dict(sorted(record["rows"].items()))
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def group_of(name: str, reason: str) -> str:
    """A reason with what is particular to one architecture taken out (its name, numbers, quoted
    names, listed keys), so that rows failing the same way count together."""
    text = reason.replace(name, "<arch>")
    text = re.sub(r"'[^']*'", "'…'", text)
    text = re.sub(r"\[[^\]]*\]", "[…]", text)
    text = re.sub(r"\d+(\.\d+)?(e-?\d+)?", "N", text)
    text = re.sub(r"\(N(, N)*\)", "(…)", text)
    text = re.sub(r"(missing|extra|shapes|differ from the file's:|head:) [^;]*", r"\1 …", text)
    return text if len(text) <= 160 else text[:159] + "…"


def table(record: dict[str, Any]) -> str:
    """The README block: counts per outcome, then the reasons grouped, a few names each."""
    rows: dict[str, dict[str, Any]] = record["rows"]
    counts = collections.Counter(r["outcome"] for r in rows.values())
    tensors_only = sum(1 for r in rows.values() if r["outcome"] == "exact" and any(
        n.startswith("tensors only") for n in r["notes"]))
    no_features = sum(1 for r in rows.values() if r["outcome"] == "exact" and any(
        "timm's fails" in n for n in r["notes"]))
    total = record["total"]
    partial = f" **Partial: {len(rows):,} of {total:,} architectures checked** (`--resume` goes on)." \
        if len(rows) < total else ""
    limits = [f"{record.get('timeout', 600)} s",
              f"{record['max_memory_gb']:g} GB of memory" if record.get("max_memory_gb") else "",
              f"models over {record['max_params'] / 1e6:,.0f}M parameters not run" if record.get("max_params") else ""]
    commits = collections.Counter(r.get("commit") or record.get("commit") or "?" for r in rows.values())
    checked = ", ".join(f"{c} ({n:,})" for c, n in commits.most_common())
    lines = [
        f"`scripts/timm_coverage.py` checks every architecture of `timm.list_models()` ({total:,} in timm "
        f"{record['timm']}, torch {record['torch']}); last run {record['date']}, rows checked on commits "
        f"{checked}, "
        f"{record['duration_s'] / 60:,.0f} min on {record.get('cores', '?')} cores with up to "
        f"{record.get('jobs', 1)} worker process(es), each architecture limited to "
        f"{', '.join(x for x in limits if x)}.{partial} Written by the script from "
        "`scripts/timm_coverage.json`, not typed.",
        "",
        "| outcome | architectures |",
        "| --- | ---: |",
    ]
    for outcome in OUTCOMES:
        extra = ""
        if outcome == "exact" and counts[outcome]:
            extra = (f" ({counts[outcome] - tensors_only} with timm's outputs, {tensors_only} over "
                     f"{record['param_limit'] / 1e6:.0f}M parameters on tensors only; {no_features} where "
                     "timm's `features_only` fails)")
        lines.append(f"| {outcome}{extra} | {counts[outcome]} |")
    groups: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for name, r in rows.items():
        if r["outcome"] != "exact":
            groups[(r["outcome"], group_of(name, r["reason"]))].append(name)
    if groups:
        lines += ["", "| outcome | reason | count | for example |", "| --- | --- | ---: | --- |"]
        ordered = sorted(groups.items(), key=lambda kv: (OUTCOMES.index(kv[0][0]), -len(kv[1]), kv[0][1]))
        for (outcome, reason), names in ordered:
            cell = reason.replace("|", "\\|")
            lines.append(f"| {outcome} | {cell} | {len(names)} | {', '.join(f'`{n}`' for n in sorted(names)[:3])} |")
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    import timm
    import torch

    return {"timm": timm.__version__, "torch": torch.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--names", default="*", help="a glob over timm's names, to run a subset")
    parser.add_argument("--limit", type=int, default=None, help="at most this many names")
    parser.add_argument("--resume", action="store_true", help="keep the record's rows and check only the rest")
    parser.add_argument("--json", type=Path, default=RECORD, help=f"the record (default {RECORD.relative_to(ROOT)})")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md", help="the README holding the markers")
    parser.add_argument("--no-readme", action="store_true", help="leave the README as it is")
    parser.add_argument("--readme-only", action="store_true", help="rewrite the README table from the record")
    parser.add_argument("--timeout", type=int, default=600, help="seconds one architecture may take (default 600)")
    parser.add_argument("--param-limit", type=int, default=100_000_000,
                        help="above this many parameters, tensors only, no forward (default 100M)")
    parser.add_argument("--max-params", type=int, default=0,
                        help="above this many parameters, not run (no result); 0: no limit (default)")
    parser.add_argument("--redo", action="append", default=[], choices=OUTCOMES,
                        help="with --resume: check again the rows of this outcome (repeatable)")
    parser.add_argument("--max-memory-gb", type=float, default=12.0,
                        help="each worker's memory cap; 0: none (default 12)")
    parser.add_argument("--commit", default=None, help="the zooadapt commit checked, for the record")
    parser.add_argument("--log", type=Path, default=None, help="the workers' stderr (warnings, tracebacks)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(SCRIPTS))
    from readme_markers import write_block

    if args.worker:
        worker(args.param_limit, args.max_params, args.threads, args.max_memory_gb)
        return 0
    if args.readme_only:
        write_block(BLOCK, table(json.loads(args.json.read_text(encoding="utf-8"))), args.readme)
        return 0
    import timm

    every = timm.list_models()
    record: dict[str, Any] = {"rows": {}, "duration_s": 0}
    if args.resume and args.json.exists():
        record = json.loads(args.json.read_text(encoding="utf-8"))
    record.update(_versions(), total=len(every), param_limit=args.param_limit, max_params=args.max_params,
                  max_memory_gb=args.max_memory_gb, timeout=args.timeout,
                  jobs=max(args.jobs, record.get("jobs", 1) if record["rows"] else 1),  # the most any run used
                  cores=os.cpu_count(), date=datetime.date.today().isoformat())
    if args.commit:
        record["commit"] = args.commit
    kept = {n for n, r in record["rows"].items() if r["outcome"] not in args.redo}
    names = [n for n in every if fnmatch.fnmatchcase(n, args.names) and n not in kept]
    names = names[:args.limit] if args.limit is not None else names
    args.log_file = args.log.open("a") if args.log else None
    try:
        run(names, args, record)
    finally:
        _save(record, args.json)
        if not args.no_readme:
            write_block(BLOCK, table(record), args.readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())

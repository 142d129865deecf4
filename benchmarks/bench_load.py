"""Load time and memory: ``zooadapt.load`` vs ``timm.create_model`` vs the seeds' manual way.

    .venv/bin/python benchmarks/bench_load.py                       # the full run (~2 min)
    .venv/bin/python benchmarks/bench_load.py --models resnet50 --repeat 15 --no-memory
    .venv/bin/python benchmarks/bench_load.py --profile             # where zooadapt's time goes
    .venv/bin/python benchmarks/bench_load.py --fresh               # a fresh process's first load (~4 min)

Everything runs from a warm cache, single-threaded (``torch.set_num_threads(1)``), against a
local Hub endpoint (``zooadapt.testing.LocalHub``) serving seeded stand-in weights in the real
file layouts and repositories (``timm/resnet50.tv_in1k`` …), so both libraries take their
real download path (``hf_hub_download``: one HEAD request, then the cached file) and the numbers
do not depend on the network. For each model, in one process, each method in blocks of
consecutive loads (first half of the rounds in one order, second half in reverse):

* ``zooadapt``: ``zooadapt.load(name, num_classes=5, freeze=...)``;
* ``timm``:     ``timm.create_model(tag, pretrained=True, num_classes=5)`` where timm has the
  model (resnet34/50 -> ``resnet34.tv_in1k``/``resnet50.tv_in1k``, the same Hub file zooadapt reads;
  mobilenet_v2 -> ``mobilenetv2_100.ra_in1k``, also the same file; timm has no AlexNet);
* ``manual``:   what the seed scripts do: build the torchvision model, ``load_state_dict`` the
  torchvision-layout weights, replace the head with a new ``nn.Linear``, freeze by name.

Memory: each (model, method) pair runs again in a fresh subprocess that imports everything and
loads once (first-call costs: lazy imports, caches), frees that model (``malloc_trim``), resets the
kernel's peak-RSS counter (``/proc/self/clear_refs`` = 5), loads, reads every weight once (so
memory-mapped weights count as if the model had run), and reports the peak RSS growth
(``VmHWM`` - ``VmRSS`` before) divided by the size of the weights file. A second copy of the
weights shows up as a ratio near 2.

What adapting a foreign checkpoint costs (planning with wrapper discovery, against a warm
load of the same 1,000-key file) is measured beside this, in ``benchmarks/bench_plan.py``.

``--fresh``: the first load a training script or a CLI call meets, as the wall time of whole
fresh processes (interpreter start, imports, load, exit), side by side and interleaved, for
zooadapt (``load(name, weights=<cached file>, num_classes=5, freeze=...)``), timm
(``create_model(tag, pretrained=True, num_classes=5, pretrained_cfg_overlay=dict(file=...))`` and
the same stages frozen by hand) and the floor (import the library that builds the architecture,
read the file with ``safetensors.torch.load_file``, build on ``meta``: no initialisation), as
ratios; then the warm in-process loads of the same models. ``--phases`` adds where each
process's time goes (start-up and imports, the load, exit).

Also measured, in fresh interpreters (medians of several runs): the time ``import zooadapt``
takes after ``import torch`` (timed inside the interpreter, and as a wall-clock difference), and
the ``zooadapt list`` command vs ``python -c "import torch"``.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODELS = ("resnet34", "resnet50", "mobilenet_v2", "alexnet", "mobilenet_v3_large", "efficientnet_b0", "regnety_016",
          "vit_small_patch16_224", "convnext_tiny")
METHODS = ("zooadapt", "timm", "manual")
FRESH_MODELS = ("resnet50", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny", "vit_small_patch16_224")
FRESH_METHODS = ("zooadapt", "timm", "floor")
FRESH_TARGETS = {"vs_floor": 1.15, "vs_timm": 0.90}
TARGETS = {"time_vs_timm": 0.10, "small_vs_timm": 0.20, "rss_vs_file": 1.10, "import_ms": 50.0, "list_vs_torch": 0.5}


@dataclass(frozen=True)
class Spec:
    """One benchmarked model and how each method loads it."""

    name: str
    freeze: str
    """zooadapt's freeze spec; ``manual_frozen`` says the same thing by parameter name."""
    tv_arch: str | None
    """The torchvision architecture the manual way builds; None where torchvision has no model whose
    keys the file's layout fits (timm-only models: no manual way)."""
    timm_name: str | None
    hub_repo: str | None
    """The Hub repo zooadapt's registry names (seeded on the local Hub), or None for a local file."""
    tv_layout_on_hub: bool
    """True when the Hub file is in torchvision's layout (ResNets), so ``manual`` can read it too."""


SPECS = {
    "resnet34": Spec("resnet34", "layer1-3", "resnet34", "resnet34.tv_in1k", "timm/resnet34.tv_in1k", True),
    "resnet50": Spec("resnet50", "layer1-3", "resnet50", "resnet50.tv_in1k", "timm/resnet50.tv_in1k", True),
    "mobilenet_v2": Spec("mobilenet_v2", ":stride16", "mobilenet_v2", "mobilenetv2_100.ra_in1k",
                         "timm/mobilenetv2_100.ra_in1k", False),
    "alexnet": Spec("alexnet", "features", "alexnet", None, None, False),
    # small models, where building the module tree is most of a load (issue 14)
    "mobilenet_v3_large": Spec("mobilenet_v3_large", ":stride16", None, "mobilenetv3_large_100.ra_in1k",
                               "timm/mobilenetv3_large_100.ra_in1k", False),
    "efficientnet_b0": Spec("efficientnet_b0", "stem-blocks.3", None, "efficientnet_b0.ra_in1k",
                            "timm/efficientnet_b0.ra_in1k", False),
    "regnety_016": Spec("regnety_016", "stem-s3", None, "regnety_016.tv2_in1k", "timm/regnety_016.tv2_in1k", False),
    "vit_small_patch16_224": Spec("vit_small_patch16_224", "stem-blocks.8", None,
                                  "vit_small_patch16_224.augreg_in21k_ft_in1k",
                                  "timm/vit_small_patch16_224.augreg_in21k_ft_in1k", False),
    "convnext_tiny": Spec("convnext_tiny", "stem-stages.2", None, "convnext_tiny.in12k_ft_in1k",
                          "timm/convnext_tiny.in12k_ft_in1k", False),
}


def manual_frozen(model: str, pname: str) -> bool:
    """The seeds' freeze-by-name for the same stages as ``Spec.freeze``."""
    if model.startswith("resnet"):
        return pname.startswith(("layer1.", "layer2.", "layer3."))
    if model == "mobilenet_v2":  # stem .. stride16 = features.0 .. features.13
        return pname.startswith("features.") and int(pname.split(".")[1]) <= 13
    return pname.startswith("features.")


# -- the weights: seeded, in real layouts, served like the Hub -------------------------------------


def prepare(workdir: Path, models: list[str]) -> dict[str, Any]:
    """Start a local Hub, point huggingface_hub at it (before it is imported), seed the files.

    Returns the setup a child process needs: Hub URL, cache, and the local weight files.
    """
    from zooadapt.testing import LocalHub, hub_environment

    hub = LocalHub().start()
    os.environ.update(hub_environment(hub.url, workdir / "hf-home"))
    prepare.hub = hub  # type: ignore[attr-defined]  # keep the server alive with the process

    import torch
    import torchvision.models as tvm

    from zooadapt.testing import safetensors_bytes, seeded_state_dict, torchvision_state_dict

    files: dict[str, dict[str, str]] = {}
    for name in models:
        spec = SPECS[name]
        entry: dict[str, str] = {}
        tv_state = torchvision_state_dict(spec.tv_arch, seed=1) if spec.tv_arch else {}
        if spec.hub_repo and spec.tv_layout_on_hub:
            hub.add_file(spec.hub_repo, "model.safetensors", safetensors_bytes(tv_state))
        elif spec.tv_arch:
            path = workdir / f"{spec.tv_arch}-torchvision.pth"  # the layout of download.pytorch.org's files
            torch.save(tv_state, path)
            entry["torchvision_pth"] = str(path)
        if spec.hub_repo and not spec.tv_layout_on_hub:  # the same file timm reads, in timm's layout
            import timm

            with torch.device("meta"):
                timm_model = timm.create_model(spec.timm_name.split(".")[0])
            hub.add_file(spec.hub_repo, "model.safetensors", safetensors_bytes(seeded_state_dict(timm_model, seed=1)))
        files[name] = entry
        del tv_state
    del tvm
    return {"hub_url": hub.url, "hf_home": str(workdir / "hf-home"), "files": files}


def weights_file(spec: Spec, setup: dict[str, Any]) -> Path:
    """The file zooadapt reads for this model (its size is the RSS yardstick)."""
    if spec.hub_repo is None:
        return Path(setup["files"][spec.name]["torchvision_pth"])
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(spec.hub_repo, "model.safetensors"))


# -- the three ways to get a fine-tunable model ---------------------------------------------------


def load_zooadapt(spec: Spec, setup: dict[str, Any]) -> Any:
    import zooadapt

    weights = None if spec.hub_repo else setup["files"][spec.name]["torchvision_pth"]
    return zooadapt.load(spec.name, num_classes=5, freeze=spec.freeze, weights=weights)


def load_timm(spec: Spec, setup: dict[str, Any]) -> Any:
    import timm

    return timm.create_model(spec.timm_name, pretrained=True, num_classes=5)


def load_manual(spec: Spec, setup: dict[str, Any]) -> Any:
    import torch
    import torch.nn as nn
    import torchvision.models as tvm

    if spec.tv_layout_on_hub:
        from huggingface_hub import hf_hub_download
        from safetensors.torch import load_file

        state = load_file(hf_hub_download(spec.hub_repo, "model.safetensors"))
    else:
        state = torch.load(setup["files"][spec.name]["torchvision_pth"], map_location="cpu", weights_only=True)
    model = getattr(tvm, spec.tv_arch)()
    model.load_state_dict(state)
    del state
    if spec.tv_arch.startswith("resnet"):
        model.fc = nn.Linear(model.fc.in_features, 5)
    else:
        last = len(model.classifier) - 1
        model.classifier[last] = nn.Linear(model.classifier[last].in_features, 5)
    for pname, param in model.named_parameters():
        if manual_frozen(spec.name, pname):
            param.requires_grad = False
    return model


LOADERS: dict[str, Callable[[Spec, dict[str, Any]], Any]] = {
    "zooadapt": load_zooadapt, "timm": load_timm, "manual": load_manual}


METHODS_SKIP: set[str] = set()


def available(spec: Spec, method: str) -> bool:
    if method in METHODS_SKIP:
        return False
    if method == "timm":
        return spec.timm_name is not None
    return method != "manual" or spec.tv_arch is not None


# -- time ----------------------------------------------------------------------------------------------


def time_loads(specs: list[Spec], setup: dict[str, Any], repeat: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per load. Each method runs in blocks of consecutive loads (its steady state: a
    heavy neighbour's 200 MB copies would otherwise evict the caches a light method runs in),
    and the blocks alternate in order, forwards then backwards, so slow drift hits all alike."""
    times: dict[str, dict[str, list[float]]] = {s.name: {m: [] for m in METHODS if available(s, m)} for s in specs}
    for spec in specs:  # warm-up: imports, plugin loading, page cache, first-call paths
        for method in times[spec.name]:
            LOADERS[method](spec, setup)
    halves = (repeat + 1) // 2, repeat // 2
    for half, count in enumerate(halves):
        for spec in specs:
            methods = list(times[spec.name])
            for method in methods if half == 0 else reversed(methods):
                for _ in range(count):
                    gc.collect()
                    started = time.perf_counter()
                    model = LOADERS[method](spec, setup)
                    times[spec.name][method].append(time.perf_counter() - started)
                    del model
    return times


# -- memory (one fresh process per measurement) ------------------------------------------------------


def _status(field: str) -> int:
    """A ``/proc/self/status`` field in bytes (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _release_free_memory() -> None:
    """Give memory freed by the warm-up load back to the OS (glibc keeps it for reuse, which
    would hide a second copy of small tensors from the peak)."""
    import contextlib
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def child_memory(method: str, name: str, setup_path: str) -> None:
    """Run in a fresh process: peak RSS growth of one load, printed as JSON."""
    setup = json.loads(Path(setup_path).read_text())
    from zooadapt.testing import hub_environment

    os.environ.update(hub_environment(setup["hub_url"], setup["hf_home"]))
    import huggingface_hub  # noqa: F401
    import safetensors.torch  # noqa: F401
    import timm  # noqa: F401
    import torch
    import torchvision.models  # noqa: F401

    import zooadapt

    torch.set_num_threads(1)
    zooadapt.plugin_api.get_registry()
    spec = SPECS[name]
    size = weights_file(spec, setup).stat().st_size
    LOADERS[method](spec, setup)  # first-call costs (lazy imports, caches) are not the weights; freed below
    gc.collect()
    _release_free_memory()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        how = "VmHWM after clear_refs"
    except OSError:
        how = "VmHWM since process start (clear_refs not writable)"
    before = _status("VmRSS")
    model = LOADERS[method](spec, setup)
    with torch.no_grad():  # read every weight once, as a forward pass would
        for tensor in model.state_dict().values():
            tensor.float().sum()
    peak, after = _status("VmHWM"), _status("VmRSS")
    print(json.dumps({"peak_growth": peak - before, "retained_growth": after - before, "file_size": size,
                      "method": how}))


def memory(specs: list[Spec], setup_path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for spec in specs:
        out[spec.name] = {}
        for method in METHODS:
            if not available(spec, method):
                continue
            result = subprocess.run([sys.executable, __file__, "--child-memory", method, spec.name, str(setup_path)],
                                    capture_output=True, text=True, timeout=600)
            if result.returncode != 0:
                raise RuntimeError(f"memory child {method}/{spec.name} failed:\n{result.stderr[-3000:]}")
            out[spec.name][method] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


# -- import and CLI start-up ------------------------------------------------------------------------------


def _wall(argv: list[str], runs: int, env: dict[str, str]) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env, timeout=300)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def startup(runs: int) -> dict[str, float]:
    """Median wall times (s) of fresh interpreters: torch alone, torch + zooadapt, the list command."""
    env = dict(os.environ)
    py = sys.executable
    script = Path(py).with_name("zooadapt")
    list_cmd = [str(script), "list"] if script.exists() else [py, "-m", "zooadapt", "list"]
    subprocess.run(list_cmd, check=True, stdout=subprocess.DEVNULL, env=env)  # builds timm's name cache once
    result = subprocess.run([py, "-X", "importtime", "-c", "import zooadapt"], capture_output=True, text=True,
                            env=env, check=True)
    heavy = sorted({line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()} & {"torch", "timm"})
    in_process = []  # what `import zooadapt` costs once torch is loaded, timed inside the interpreter
    for _ in range(runs):
        out = subprocess.run([py, "-c", "import time, torch; t = time.perf_counter(); import zooadapt; "
                              "print(time.perf_counter() - t)"], capture_output=True, text=True, env=env, check=True)
        in_process.append(float(out.stdout.strip()))
    return {
        "import_zooadapt_after_torch": statistics.median(in_process),
        "python": _wall([py, "-c", "pass"], runs, env),
        "import_torch": _wall([py, "-c", "import torch"], runs, env),
        "import_torch_zooadapt": _wall([py, "-c", "import torch, zooadapt"], runs, env),
        "import_zooadapt": _wall([py, "-c", "import zooadapt"], runs, env),
        "zooadapt_list": _wall(list_cmd, runs, env),
        "zooadapt_import_pulls_in": heavy,  # type: ignore[dict-item]
    }


# -- a fresh process's first load ----------------------------------------------------------------

TIMM_FROZEN = {  # Spec.freeze by timm's parameter names (tests/test_fresh_process.py checks the counts)
    "resnet34": ("layer1.", "layer2.", "layer3."),
    "resnet50": ("layer1.", "layer2.", "layer3."),
    "mobilenet_v3_large": ("conv_stem.", "bn1.", *(f"blocks.{i}." for i in range(5))),  # stem .. stride16
    "efficientnet_b0": ("conv_stem.", "bn1.", *(f"blocks.{i}." for i in range(4))),
    "convnext_tiny": ("stem.", *(f"stages.{i}." for i in range(3))),
    "vit_small_patch16_224": ("cls_token", "pos_embed", "patch_embed.", *(f"blocks.{i}." for i in range(9))),
}

# Each child stamps time.time() after its imports and after the load; the parent's clock brackets
# the whole process, so start-up (interpreter + imports), load and exit can be told apart.
_FRESH_CHILD = {
    "zooadapt": """
import time, sys
import zooadapt
t1 = time.time()
model = zooadapt.load(NAME, weights=PATH, num_classes=5, freeze=FREEZE)
t2 = time.time()
""",
    "timm": """
import time, sys
import timm
t1 = time.time()
model = timm.create_model(TAG, pretrained=True, num_classes=5, pretrained_cfg_overlay=dict(file=PATH))
for pname, param in model.named_parameters():
    if pname.startswith(FROZEN):
        param.requires_grad_(False)
t2 = time.time()
""",
    "floor": """
import time, sys
import torch
from safetensors.torch import load_file
if TV_ARCH:
    import torchvision.models as builders
    build = lambda: getattr(builders, TV_ARCH)(weights=None)
else:
    import timm
    build = lambda: timm.create_model(TIMM_ARCH, pretrained=False)
t1 = time.time()
state = load_file(PATH)
with torch.device("meta"):
    model = build()
t2 = time.time()
""",
}


# Each child also adds up the time its full (generation-2) garbage collections take before it exits.
# torch and torchvision leave ~330,000 objects that no full collection has looked at yet, so the
# first few thousand objects any code allocates after importing them start one (~0.15 s here):
# whichever process allocates them pays it (a training script in its first steps, at the latest).
_GC_TIMER = """
import gc, time
_gc = [0.0, 0, 0.0]
def _full_collections(phase, info):
    if info["generation"] == 2:
        if phase == "start":
            _gc[2] = time.perf_counter()
        else:
            _gc[0] += time.perf_counter() - _gc[2]
            _gc[1] += 1
gc.callbacks.append(_full_collections)
"""


def fresh_argv(method: str, spec: Spec, path: str) -> list[str]:
    """The command line of one fresh process that loads ``spec`` the way ``method`` does."""
    tv_arch = spec.name if spec.name in ("resnet34", "resnet50", "mobilenet_v3_large") else None
    values = {"NAME": spec.name, "PATH": path, "FREEZE": spec.freeze, "TAG": spec.timm_name,
              "FROZEN": TIMM_FROZEN.get(spec.name, ()), "TV_ARCH": tv_arch,
              "TIMM_ARCH": (spec.timm_name or "").split(".")[0]}
    head = "".join(f"{k} = {v!r}\n" for k, v in values.items())
    return [sys.executable, "-c", _GC_TIMER + head + _FRESH_CHILD[method] + "print(t1, t2, *_gc[:2], flush=True)\n"]


def fresh_env(setup: dict[str, Any], workdir: Path) -> dict[str, str]:
    """Offline, a private Hub cache and zooadapt cache (warm after the first round), as a user's
    second run of a script finds them. Bytecode is cached, as for an installed package: with
    ``PYTHONDONTWRITEBYTECODE=1`` (set on some machines) every process would compile zooadapt's
    sources again (~0.15-0.3 s) while torch's and timm's come compiled from their wheels. The
    cache lives outside the tree (``PYTHONPYCACHEPREFIX``), shared by the runs of this script."""
    from zooadapt.testing import hub_environment

    env = dict(os.environ)
    env.update(hub_environment(setup["hub_url"], setup["hf_home"]))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(HF_HUB_OFFLINE="1", ZOOADAPT_CACHE=str(workdir / "zooadapt-cache"),
               PYTHONPYCACHEPREFIX=str(Path(tempfile.gettempdir()) / "zooadapt-bench-pycache"))
    return env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_fresh(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    """One child's wall time by phase, and its CPU time (user + system: the children run one at a
    time, so the growth of this process's children's total is this child's). CPU time moves much
    less than wall time with other load on a shared machine: it is the cross-check of a ratio."""
    cpu = _children_cpu()
    started = time.time()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    ended = time.time()
    cpu = _children_cpu() - cpu
    if result.returncode != 0:
        raise RuntimeError(f"fresh child failed:\n{result.stderr[-3000:]}")
    t1, t2, gc_time, gc_count = (float(x) for x in result.stdout.split()[-4:])
    return {"wall": ended - started, "cpu": cpu, "startup": t1 - started, "load": t2 - t1, "exit": ended - t2,
            "gc": gc_time, "gc_count": gc_count}


def time_fresh(specs: list[Spec], setup: dict[str, Any], workdir: Path, repeat: int) -> dict[str, Any]:
    """Whole-process times per model and method. One warm-up process each (page cache, zooadapt's
    cache of names and descriptions), then ``repeat`` rounds; in each round every model runs every
    method once, in an order that rotates from round to round, so drift hits all alike."""
    env = fresh_env(setup, workdir)
    paths = {s.name: str(weights_file(s, setup)) for s in specs}
    runs: dict[str, dict[str, list[dict[str, float]]]] = {s.name: {m: [] for m in FRESH_METHODS} for s in specs}
    for spec in specs:
        for method in FRESH_METHODS:
            _run_fresh(fresh_argv(method, spec, paths[spec.name]), env)
    for round_ in range(repeat):
        for spec in specs:
            order = FRESH_METHODS[round_ % 3:] + FRESH_METHODS[:round_ % 3]
            for method in order if round_ % 2 == 0 else reversed(order):
                runs[spec.name][method].append(_run_fresh(fresh_argv(method, spec, paths[spec.name]), env))
    return runs


def report_fresh(runs: dict[str, Any], warm: dict[str, Any] | None, context: dict[str, Any],
                 phases: bool) -> dict[str, Any]:
    print(f"\nfirst load in a fresh process (whole process, wall time, medians of {context['fresh_repeat']}, "
          f"interleaved; load average {context['fresh_load']}):")
    cols = f"{'model':<22} {'zooadapt':>9} {'timm':>9} {'floor':>9} {'vs timm':>8} {'vs floor':>8} {'floor/timm':>10}"
    if warm:
        cols += f" | {'warm zooadapt':>13} {'warm timm':>9} {'vs timm':>8}"
    print(cols)
    summary: dict[str, Any] = {}
    for name, by_method in runs.items():
        med = {m: statistics.median(r["wall"] for r in rs) for m, rs in by_method.items()}
        row = {"fresh_ms": {m: v * 1e3 for m, v in med.items()}, "vs_timm": med["zooadapt"] / med["timm"],
               "vs_floor": med["zooadapt"] / med["floor"], "floor_vs_timm": med["floor"] / med["timm"],
               "phases_ms": {m: {k: statistics.median(r[k] for r in rs) * 1e3 for k in
                                 ("startup", "load", "exit", "gc")}
                             for m, rs in by_method.items()},
               "full_collections": {m: statistics.median(r["gc_count"] for r in rs) for m, rs in by_method.items()}}
        line = (f"{name:<22} {row['fresh_ms']['zooadapt']:>7.0f}ms {row['fresh_ms']['timm']:>7.0f}ms "
                f"{row['fresh_ms']['floor']:>7.0f}ms {row['vs_timm']:>7.2f}x {row['vs_floor']:>7.2f}x "
                f"{med['floor'] / med['timm']:>9.2f}x")
        if warm and name in warm:
            wz, wt = statistics.median(warm[name]["zooadapt"]), statistics.median(warm[name]["timm"])
            row.update(warm_ms={"zooadapt": wz * 1e3, "timm": wt * 1e3}, warm_vs_timm=wz / wt)
            line += f" | {wz * 1e3:>11.1f}ms {wt * 1e3:>7.0f}ms {wz / wt:>7.3f}x"
        summary[name] = row
        print(line)
    print("\nthe same processes' CPU time (user + system, medians; less moved by other load than wall time):")
    print(f"{'model':<22} {'zooadapt':>9} {'timm':>9} {'floor':>9} {'vs timm':>8} {'vs floor':>8} {'floor/timm':>10}")
    for name, by_method in runs.items():
        cpu = {m: statistics.median(r["cpu"] for r in rs) for m, rs in by_method.items()}
        summary[name].update(cpu_ms={m: v * 1e3 for m, v in cpu.items()}, cpu_vs_timm=cpu["zooadapt"] / cpu["timm"],
                             cpu_vs_floor=cpu["zooadapt"] / cpu["floor"])
        print(f"{name:<22} {cpu['zooadapt'] * 1e3:>7.0f}ms {cpu['timm'] * 1e3:>7.0f}ms {cpu['floor'] * 1e3:>7.0f}ms "
              f"{cpu['zooadapt'] / cpu['timm']:>7.2f}x {cpu['zooadapt'] / cpu['floor']:>7.2f}x "
              f"{cpu['floor'] / cpu['timm']:>9.2f}x")
    if phases:
        print("\nwhere a fresh process's time goes (medians, ms): start-up and imports / load / exit "
              "[full garbage collections before exit: count, ms]")
        for name, row in summary.items():
            print(f"{name:<22} " + "   ".join(
                f"{m} {p['startup']:.0f} / {p['load']:.0f} / {p['exit']:.0f} [{row['full_collections'][m]:.0f}, "
                f"{p['gc']:.0f}]" for m, p in row["phases_ms"].items()))
    worst_floor = max((r["vs_floor"], n) for n, r in summary.items())
    worst_timm = max((r["vs_timm"], n) for n, r in summary.items())
    print("\ntargets:")
    for what, (value, name), target in (("fresh first load / floor", worst_floor, FRESH_TARGETS["vs_floor"]),
                                        ("fresh first load / timm", worst_timm, FRESH_TARGETS["vs_timm"])):
        print(f"  {what + f' (worst: {name})':<70} {value:>7.2f}x  target <= {target}x  {_verdict(value <= target)}")
    return summary


# -- report ------------------------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(times: dict[str, Any], mem: dict[str, Any] | None, start: dict[str, Any] | None,
           context: dict[str, Any]) -> dict[str, Any]:
    print(f"zooadapt load benchmark: warm cache, local Hub, torch {context['torch']}, timm {context['timm']}, "
          f"{context['threads']} thread(s), {context['repeat']} rounds, load average {context['load']}")
    header = f"{'model':<22} {'method':<9} {'median ms':>9} {'min ms':>8} {'vs timm':>8} {'vs manual':>9}"
    if mem:
        header += f" {'peak RSS / file':>15} {'file MB':>8}"
    print(header)
    summary: dict[str, Any] = {"models": {}}
    for name, by_method in times.items():
        medians = {m: statistics.median(v) for m, v in by_method.items()}
        summary["models"][name] = {}
        for method, samples in by_method.items():
            row = {"median_ms": medians[method] * 1e3, "min_ms": min(samples) * 1e3}
            vs_timm = medians[method] / medians["timm"] if "timm" in medians else None
            vs_manual = medians[method] / medians["manual"] if "manual" in medians else None
            line = (f"{name:<22} {method:<9} {row['median_ms']:>9.1f} {row['min_ms']:>8.1f} "
                    f"{(f'{vs_timm:.3f}x' if vs_timm is not None else 'n/a'):>8} "
                    f"{(f'{vs_manual:.3f}x' if vs_manual is not None else 'n/a'):>9}")
            if mem:
                m = mem[name][method]
                row["peak_rss_vs_file"] = m["peak_growth"] / m["file_size"]
                row["retained_rss_vs_file"] = m["retained_growth"] / m["file_size"]
                line += f" {row['peak_rss_vs_file']:>14.2f}x {m['file_size'] / 1e6:>8.1f}"
            row.update(vs_timm=vs_timm, vs_manual=vs_manual)
            summary["models"][name][method] = row
            print(line)
    print("\ntargets:")
    checks = []
    if "resnet50" in summary["models"] and "timm" in summary["models"]["resnet50"]:
        ratio = summary["models"]["resnet50"]["zooadapt"]["vs_timm"]
        checks.append(("zooadapt / timm time on resnet50", f"{ratio:.3f}x", f"<= {TARGETS['time_vs_timm']}x",
                       ratio <= TARGETS["time_vs_timm"]))
    small = [(rows["zooadapt"]["vs_timm"], name) for name, rows in summary["models"].items()
             if rows.get("zooadapt", {}).get("vs_timm") is not None]
    if small:
        worst_ratio, worst_name = max(small)
        checks.append((f"zooadapt / timm time, every model (worst: {worst_name})", f"{worst_ratio:.3f}x",
                       f"<= {TARGETS['small_vs_timm']}x", worst_ratio <= TARGETS["small_vs_timm"]))
    if mem:
        worst = max((r["peak_rss_vs_file"], n) for n, rows in summary["models"].items()
                    for m, r in rows.items() if m == "zooadapt")
        checks.append((f"zooadapt peak RSS growth / weights file (worst: {worst[1]})", f"{worst[0]:.2f}x",
                       f"<= {TARGETS['rss_vs_file']}x", worst[0] <= TARGETS["rss_vs_file"]))
    if start:
        extra = start["import_zooadapt_after_torch"] * 1e3
        wall = (start["import_torch_zooadapt"] - start["import_torch"]) * 1e3
        checks.append((f"import zooadapt after import torch (wall-clock difference {wall:+.0f} ms)",
                       f"{extra:.1f} ms", f"<= {TARGETS['import_ms']:.0f} ms", extra <= TARGETS["import_ms"]))
        ratio = start["zooadapt_list"] / start["import_torch"]
        checks.append((f"zooadapt list ({start['zooadapt_list'] * 1e3:.0f} ms) / import torch "
                       f"({start['import_torch'] * 1e3:.0f} ms)", f"{ratio:.2f}x", f"< {TARGETS['list_vs_torch']}x",
                       ratio < TARGETS["list_vs_torch"]))
        checks.append(("modules torch/timm imported by `import zooadapt`", ", ".join(
            start["zooadapt_import_pulls_in"]) or "none", "none", not start["zooadapt_import_pulls_in"]))
    for what, value, target, ok in checks:
        print(f"  {what:<70} {value:>8}  target {target:<9} {_verdict(ok)}")
    summary.update(context=context, startup=start, targets=[
        {"what": w, "value": v, "target": t, "met": ok} for w, v, t, ok in checks])
    return summary


def profile(spec: Spec, setup: dict[str, Any]) -> None:
    import cProfile
    import pstats

    load_zooadapt(spec, setup)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(10):
        load_zooadapt(spec, setup)
    prof.disable()
    print(f"\nwhere zooadapt.load({spec.name!r}) spends its time (10 loads, cProfile):")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(r"zooadapt|safetensors|hf_hub_download", 25)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--repeat", type=int, default=10, help="timed loads per method and model (medians reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the target is single-threaded)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-load subprocess RSS measurement")
    parser.add_argument("--no-startup", action="store_true", help="skip import and `zooadapt list` timings")
    parser.add_argument("--startup-runs", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="cProfile zooadapt.load of the first model")
    parser.add_argument("--fresh", action="store_true",
                        help=f"first loads in fresh processes vs timm and the floor, then warm loads (default models: "
                             f"{', '.join(FRESH_MODELS)}; no memory or start-up runs unless named)")
    parser.add_argument("--fresh-repeat", type=int, default=7, help="fresh processes per method and model")
    parser.add_argument("--phases", action="store_true", help="with --fresh: start-up, load and exit per process")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (the models' files, the Hub and zooadapt caches) for profiling")
    parser.add_argument("--child-memory", nargs=3, metavar=("METHOD", "MODEL", "SETUP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        child_memory(*args.child_memory)
        return 0
    if args.fresh and args.models == ",".join(MODELS):
        args.models = ",".join(FRESH_MODELS)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in SPECS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    if args.fresh and any(SPECS[m].hub_repo is None or SPECS[m].timm_name is None for m in models):
        parser.error("--fresh compares with timm from a Hub file: models timm has, not alexnet")

    workdir = Path(tempfile.mkdtemp(prefix="zooadapt-bench-"))
    if args.keep:
        print(f"work folder kept: {workdir} (hf-home, zooadapt-cache, setup.json)")
    else:
        atexit.register(shutil.rmtree, workdir, True)  # the models' files: nothing is left behind
    setup = prepare(workdir, models)
    setup_path = workdir / "setup.json"
    setup_path.write_text(json.dumps(setup))

    import timm
    import torch

    torch.set_num_threads(args.threads)
    specs = [SPECS[m] for m in models]
    if args.fresh:
        fresh_load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        runs = time_fresh(specs, setup, workdir, args.fresh_repeat)
        fresh_load += " -> " + " ".join(f"{x:.2f}" for x in os.getloadavg())
        METHODS_SKIP.add("manual")  # the warm table beside it: zooadapt and timm only
    times = time_loads(specs, setup, args.repeat)
    mem = None if args.no_memory or args.fresh else memory(specs, setup_path)
    start = None if args.no_startup or args.fresh else startup(args.startup_runs)
    context = {"torch": torch.__version__, "timm": timm.__version__, "threads": args.threads, "repeat": args.repeat,
               "load": " ".join(f"{x:.2f}" for x in os.getloadavg()), "python": sys.version.split()[0]}
    summary = report(times, mem, start, context)
    if args.fresh:
        context.update(fresh_repeat=args.fresh_repeat, fresh_load=fresh_load)
        summary["fresh"] = report_fresh(runs, times, context, args.phases)
    if args.profile:
        profile(specs[0], setup)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Loading straight to a GPU: ``zooadapt.load(..., device="cuda")`` vs ``timm.create_model`` + ``.to("cuda")``.

    .venv/bin/python benchmarks/bench_gpu.py            # needs a CUDA GPU; ~1 minute
    .venv/bin/python benchmarks/bench_gpu.py --models resnet50 --repeat 10

Both read the same seeded weights file through ``hf_hub_download`` from a local Hub endpoint
(``zooadapt.testing.LocalHub``), warm. For each model, in one process: the median wall time of a
load that ends with every parameter on the GPU (``torch.cuda.synchronize()`` included), and the
peak GPU memory of one load over the final model's size (``torch.cuda.max_memory_allocated``
after ``reset_peak_memory_stats``). zooadapt moves each tensor to the device as it assigns it,
so it never holds the whole model on the CPU first; timm builds on the CPU, initialises, loads
and then copies. Without a GPU the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

MODELS = {"resnet50": ("timm/resnet50.tv_in1k", "resnet50.tv_in1k"),
          "convnext_tiny": ("timm/convnext_tiny.in12k_ft_in1k", "convnext_tiny.in12k_ft_in1k")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU here: nothing measured (run this where a GPU is available)")
        return 0
    from zooadapt.testing import LocalHub, hub_environment, safetensors_bytes, seeded_state_dict

    work = Path(tempfile.mkdtemp(prefix="zooadapt-bench-gpu-"))
    atexit.register(shutil.rmtree, work, True)  # the models' files: nothing is left behind
    hub = LocalHub().start()
    os.environ.update(hub_environment(hub.url, work / "hf-home"))
    os.environ["ZOOADAPT_CACHE"] = str(work / "zooadapt-cache")
    import timm

    import zooadapt

    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, timm {timm.__version__}; medians of "
          f"{args.repeat}")
    print(f"{'model':14s} {'zooadapt':>10s} {'timm+.to':>10s} {'ratio':>7s}  peak GPU memory / model size "
          "(zooadapt, timm)")
    for name in args.models:
        repo, tag = MODELS[name]
        hub.add_file(repo, "model.safetensors", safetensors_bytes(seeded_state_dict(timm.create_model(tag), seed=1)))

        def ours(name: str = name) -> torch.nn.Module:
            return zooadapt.load(name, num_classes=5, device="cuda")

        def theirs(tag: str = tag) -> torch.nn.Module:
            return timm.create_model(tag, pretrained=True, num_classes=5).to("cuda")

        times, peaks = {}, {}
        for label, fn in (("zooadapt", ours), ("timm", theirs)):
            fn()  # warm: cache, lazy imports, CUDA context
            runs = []
            for _ in range(args.repeat):
                torch.cuda.synchronize()
                start = time.perf_counter()
                model = fn()
                torch.cuda.synchronize()
                runs.append(time.perf_counter() - start)
                del model
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            model = fn()
            size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
            peaks[label] = (torch.cuda.max_memory_allocated() - base) / size
            del model
            torch.cuda.empty_cache()
            times[label] = statistics.median(runs) * 1000
        print(f"{name:14s} {times['zooadapt']:8.1f}ms {times['timm']:8.1f}ms {times['zooadapt'] / times['timm']:6.2f}x"
              f"  {peaks['zooadapt']:.2f}x, {peaks['timm']:.2f}x")
    hub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Gradual unfreezing under DistributedDataParallel (two gloo processes on CPU).

DDP registers its gradient hooks on the parameters that require grad when it is built. The
job measures the three ways to unfreeze a stage mid-training, each on its own model:

- ``stale``: unfreeze and keep the old wrapper. The unfrozen stage trains on each rank's own
  gradients and the ranks drift apart; ``zooadapt.unfreeze`` warns (``UnsyncedGradientsWarning``).
- ``rewrap``: unfreeze, then ``ddp = rewrap_ddp(ddp)``. The ranks stay identical; the old
  wrapper's hooks are gone (its communication hook is not called again); the optimizer, built
  with ``param_groups(..., include_frozen=True)``, is untouched.
- ``find_unused``: DDP built while every parameter is trainable, with ``find_unused_parameters=True``,
  then frozen: unfreezing needs nothing more (and gives no warning), at the cost of a graph walk
  and a full-model all-reduce each step.
"""

from __future__ import annotations

import pytest
from two_ranks import run_two_ranks

from zooadapt.distributed import rewrap_ddp
from zooadapt.errors import InvalidArgumentError

WORKER = r'''
import hashlib, json, os, sys, warnings
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP
import zooadapt
from zooadapt.distributed import convert_sync_batchnorm, rewrap_ddp
from zooadapt.errors import InvalidArgumentError

rank, port, out_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
# a file store, not a TCP port: no port another test (or process) may take between choosing and binding
dist.init_process_group("gloo", init_method="file://" + os.path.join(out_dir, "pg-store"), rank=rank, world_size=2)
out = {}

def digest(tensors):
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()

def build():
    torch.manual_seed(0)
    return zooadapt.load("resnet18", num_classes=3, pretrained=False, freeze="all")

def train(ddp, opt, steps, seed):
    torch.manual_seed(seed + rank)  # each rank its own data: unsynchronised gradients differ
    ddp.train()
    for _ in range(steps):
        x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 3, (4,))
        opt.zero_grad()
        F.cross_entropy(ddp(x), y).backward()
        opt.step()

def unfreeze(ddp):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        zooadapt.unfreeze(ddp, "layer4")
    return [w.category.__name__ for w in caught]

for how in ("stale", "rewrap", "find_unused"):
    model = build()
    opt = torch.optim.AdamW(zooadapt.param_groups(model, lr=1e-2, head_lr=1e-2, weight_decay=0.1,
                                                  include_frozen=True))
    groups_before = len(opt.param_groups)
    if how == "find_unused":
        zooadapt.unfreeze(model, "all")
        ddp = DDP(model, find_unused_parameters=True)
        zooadapt.freeze(model, "all")
    else:
        ddp = DDP(model)
    calls = {"n": 0}
    def counting(state, bucket):
        calls["n"] += 1
        return default_hooks.allreduce_hook(None, bucket)
    ddp.register_comm_hook(None, counting)
    layer3 = model.layer3[0].conv1.weight.detach().clone()
    train(ddp, opt, 2, seed=10)
    warned = unfreeze(ddp)
    old_calls = calls["n"]
    if how == "rewrap":
        ddp = rewrap_ddp(ddp)
    layer4 = model.layer4[0].conv1.weight.detach().clone()
    train(ddp, opt, 2, seed=20)
    out[how] = {
        "warned": warned,
        "layer4_digest": digest([model.layer4[0].conv1.weight, model.layer4[1].bn2.weight]),
        "head_digest": digest([model.fc.weight]),
        "layer4_trained": not torch.equal(layer4, model.layer4[0].conv1.weight),
        "layer3_unchanged": torch.equal(layer3, model.layer3[0].conv1.weight),
        "layer3_no_grad": model.layer3[0].conv1.weight.grad is None,
        "same_optimizer_groups": len(opt.param_groups) == groups_before,
        "old_hook_calls_after": calls["n"] - old_calls,
        "wrapper": type(ddp).__name__,
    }

try:
    convert_sync_batchnorm(DDP(build()))
    out["convert_ddp"] = None
except zooadapt.ZooadaptError as exc:
    out["convert_ddp"] = str(exc)
try:
    rewrap_ddp(ddp, bucket_size=3)
    out["bad_override"] = None
except zooadapt.ZooadaptError as exc:
    out["bad_override"] = str(exc)
custom = rewrap_ddp(DDP(build(), broadcast_buffers=False, bucket_cap_mb=5), gradient_as_bucket_view=True)
out["kept_settings"] = [custom.broadcast_buffers, custom.bucket_bytes_cap, custom.gradient_as_bucket_view]

dist.barrier()
dist.destroy_process_group()
with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
    json.dump(out, fh)
'''


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return run_two_ranks(tmp_path_factory.mktemp("ddp-unfreeze"), WORKER)


@pytest.mark.slow
def test_stale_wrapper_lets_unfrozen_stage_drift_and_warns(ranks):
    a, b = (r["stale"] for r in ranks)
    assert a["layer4_trained"] and b["layer4_trained"]
    assert a["layer4_digest"] != b["layer4_digest"]  # the truth without a rewrap: the ranks drift apart
    assert a["head_digest"] == b["head_digest"]  # what DDP hooked at construction stays in sync
    assert a["warned"] == b["warned"] == ["UnsyncedGradientsWarning"]


@pytest.mark.slow
def test_rewrap_keeps_unfrozen_stage_in_sync(ranks):
    a, b = (r["rewrap"] for r in ranks)
    assert a["wrapper"] == "DistributedDataParallel"
    assert a["layer4_trained"] and a["layer4_digest"] == b["layer4_digest"] and a["head_digest"] == b["head_digest"]
    assert a["layer3_unchanged"] and a["layer3_no_grad"] and a["same_optimizer_groups"]
    assert a["old_hook_calls_after"] == b["old_hook_calls_after"] == 0  # the old wrapper is out of the loop


@pytest.mark.slow
def test_find_unused_parameters_built_unfrozen_needs_no_rewrap(ranks):
    a, b = (r["find_unused"] for r in ranks)
    assert a["warned"] == b["warned"] == []
    assert a["layer4_trained"] and a["layer4_digest"] == b["layer4_digest"]
    # still-frozen stages get no gradient (not even zeros), so AdamW's weight decay leaves them alone
    assert a["layer3_unchanged"] and a["layer3_no_grad"]


@pytest.mark.slow
def test_convert_sync_batchnorm_refuses_the_ddp_wrapper(ranks):
    assert "Convert first, then wrap" in ranks[0]["convert_ddp"]


@pytest.mark.slow
def test_rewrap_keeps_settings_and_checks_overrides(ranks):
    assert ranks[0]["bad_override"] == "rewrap_ddp: bucket_size is not a DistributedDataParallel argument"
    assert ranks[0]["kept_settings"] == [False, 5 * 1024 * 1024, True]


def test_rewrap_needs_the_wrapper():
    import torch


    with pytest.raises(InvalidArgumentError, match="needs the DistributedDataParallel wrapper"):
        rewrap_ddp(torch.nn.Linear(2, 2))

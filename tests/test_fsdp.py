"""The FSDP2 recipe on two gloo processes (CPU): meta build, fully_shard per stage, rank 0's weights.

One job runs the recipe once; each test checks one part of what the ranks recorded:
- the model is built on ``meta`` (nothing read), sharded as one FSDP unit per stage plus the root;
- rank 0's full state dict reaches every rank's shards (gathered back, it is bit-identical);
- frozen stages stay frozen through sharding (``requires_grad=False``, no gradient, frozen
  BatchNorm in eval mode) while the trainable stages train identically on both ranks;
- a stage unfrozen after sharding trains, identically on both ranks.
"""

from __future__ import annotations

import pytest
from two_ranks import run_two_ranks

from zooadapt.distributed import save_sharded
from zooadapt.errors import InvalidArgumentError

WORKER = r'''
import hashlib, json, os, sys
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FSDPModule
import zooadapt
from zooadapt.distributed import save_sharded
from zooadapt.errors import InvalidArgumentError
import zooadapt.integrations.fsdp
from zooadapt.integrations.fsdp import fully_shard_stages, load_full_state_dict

rank, port, out_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
# a file store, not a TCP port: no port another test (or process) may take between choosing and binding
dist.init_process_group("gloo", init_method="file://" + os.path.join(out_dir, "pg-store"), rank=rank, world_size=2)
out = {}

def digest(state, keys):
    h = hashlib.sha256()
    for k in keys:
        h.update(state[k].detach().contiguous().numpy().tobytes())
    return h.hexdigest()

full_sd = None
if rank == 0:  # only rank 0 holds the weights (here: a seeded model; in practice zooadapt.load(name))
    torch.manual_seed(5)
    full_sd = zooadapt.load("resnet18", num_classes=3, pretrained=False).state_dict()
    torch.save(full_sd, os.path.join(out_dir, "full.pt"))

if rank == 0:  # the README's recipe
    model = zooadapt.load("resnet18", num_classes=3, pretrained=False, freeze=":layer3", device="meta")
else:  # the same through torch's default-device context: the helpers work with either
    with torch.device("meta"):
        model = zooadapt.load("resnet18", num_classes=3, pretrained=False, freeze=":layer3")
out["built_on_meta"] = all(p.is_meta for p in model.parameters())
fully_shard_stages(model)
out["units"] = sorted(n or "<root>" for n, m in model.named_modules() if isinstance(m, FSDPModule))
load_full_state_dict(model, full_sd)
out["local_rows"] = model.layer4[0].conv1.weight.to_local().shape[0]
out["full_rows"] = model.layer4[0].conv1.weight.shape[0]
gather = StateDictOptions(full_state_dict=True)
loaded = get_model_state_dict(model, options=gather)
params = sorted(n for n, _ in model.named_parameters())
out["loaded_digest"] = digest(loaded, sorted(loaded))
out["frozen"] = list(zooadapt.frozen_stages(model))
out["frozen_bn"] = type(model.layer2[0].bn1).__name__

opt = torch.optim.AdamW(zooadapt.param_groups(model, lr=1e-2, weight_decay=0.1, include_frozen=True))
def train(seed):
    torch.manual_seed(seed + rank)  # each rank its own data
    model.train()
    for _ in range(2):
        x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 3, (4,))
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

train(10)
out["bn_eval"] = not model.layer2[0].bn1.training and model.layer4[0].bn1.training
out["frozen_no_grad"] = all(p.grad is None for p in model.layer2.parameters())
first = get_model_state_dict(model, options=gather)
out["stage_unchanged"] = {s: all(torch.equal(first[k], loaded[k]) for k in params if k.startswith(s + "."))
                          for s in ("bn1", "layer1", "layer2", "layer3", "layer4")}
out["trained_digest"] = digest(first, params)
out["stem_bn_before"] = type(model.bn1).__name__
zooadapt.unfreeze(model, "stem,layer3")
model.train()
# the stem's BatchNorm is an FSDP unit of its own: unfreezing keeps it one
out["stem_bn_after"] = [type(model.bn1).__name__, isinstance(model.bn1, FSDPModule), model.bn1.training]
train(20)
second = get_model_state_dict(model, options=gather)
out["after_unfreeze_changed"] = {s: not all(torch.equal(second[k], first[k]) for k in params if k.startswith(s + "."))
                                 for s in ("bn1", "layer2", "layer3")}
out["after_unfreeze_digest"] = digest(second, params)

saved = zooadapt.integrations.fsdp.save_sharded(model, os.path.join(out_dir, "saved"))
out["saved_returns"] = None if saved is None else os.path.basename(str(saved))
dist.barrier()
back = zooadapt.load(os.path.join(out_dir, "saved"))
state = back.state_dict()
out["reload_equal"] = sorted(state) == sorted(second) and all(torch.equal(state[k], second[k]) for k in params)
out["reload_frozen"] = list(zooadapt.frozen_stages(back))
try:
    fully_shard_stages(torch.compile(model, backend="eager"))
    out["compiled_refused"] = None
except zooadapt.ZooadaptError as exc:
    out["compiled_refused"] = str(exc)
try:
    zooadapt.integrations.fsdp.save_sharded(model, 3)
    out["bad_save"] = None
except zooadapt.ZooadaptError as exc:
    out["bad_save"] = [type(exc).__name__, str(exc)]
# a sharded model's own state_dict() saved as it is: each rank's DTensor shards, never a whole tensor
sharded_file = os.path.join(out_dir, f"sharded_rank{rank}.pt")
torch.save(model.state_dict(), sharded_file)
out["dtensor_refusals"] = []
for trusted in (False, True):
    try:
        zooadapt.load("resnet18", weights=sharded_file, num_classes=3, trusted=trusted)
        out["dtensor_refusals"].append(None)
    except zooadapt.ZooadaptError as exc:
        out["dtensor_refusals"].append([type(exc).__name__, str(exc)])
dist.barrier()
dist.destroy_process_group()
with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
    json.dump(out, fh)
'''


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    pytest.importorskip("torch.distributed.fsdp", reason="needs FSDP2 (torch >= 2.6)")
    work = tmp_path_factory.mktemp("fsdp")
    return {"ranks": run_two_ranks(work, WORKER), "work": work}


@pytest.mark.slow
def test_built_on_meta_and_sharded_per_stage(job):
    for rank in job["ranks"]:
        assert rank["built_on_meta"]
        # the stem (conv1 + bn1) is one unit given as a list, so both modules become FSDPModules
        assert rank["units"] == ["<root>", "bn1", "conv1", "layer1", "layer2", "layer3", "layer4"]
        assert rank["local_rows"] * 2 == rank["full_rows"] == 512


@pytest.mark.slow
def test_rank0_weights_reach_every_shard(job):
    import hashlib

    import torch

    full = torch.load(job["work"] / "full.pt", weights_only=True)
    h = hashlib.sha256()
    for k in sorted(full):
        h.update(full[k].contiguous().numpy().tobytes())
    assert [r["loaded_digest"] for r in job["ranks"]] == [h.hexdigest()] * 2


@pytest.mark.slow
def test_frozen_stages_stay_frozen_through_sharding(job):
    for rank in job["ranks"]:
        assert rank["frozen"] == ["stem", "layer1", "layer2", "layer3"]
        assert rank["frozen_bn"] == "FrozenBatchNorm2d" and rank["bn_eval"] and rank["frozen_no_grad"]
        assert rank["stage_unchanged"] == {"bn1": True, "layer1": True, "layer2": True, "layer3": True,
                                           "layer4": False}
    assert job["ranks"][0]["trained_digest"] == job["ranks"][1]["trained_digest"]


@pytest.mark.slow
def test_a_stage_unfrozen_after_sharding_trains_in_sync(job):
    for rank in job["ranks"]:
        assert rank["after_unfreeze_changed"] == {"bn1": True, "layer2": False, "layer3": True}
        assert rank["stem_bn_before"] == "FSDPFrozenBatchNorm2d"
        assert rank["stem_bn_after"] == ["FSDPBatchNorm2d", True, True]
    assert job["ranks"][0]["after_unfreeze_digest"] == job["ranks"][1]["after_unfreeze_digest"]


@pytest.mark.slow
def test_a_sharded_model_saves_and_reloads_unsharded(job):
    assert [r["saved_returns"] for r in job["ranks"]] == ["saved", None]  # rank 0 wrote it
    for rank in job["ranks"]:  # every rank reloads rank 0's folder: the trained weights, the frozen stages
        assert rank["reload_equal"] and rank["reload_frozen"] == ["layer1", "layer2"]
    (kind0, message0), (kind1, message1) = (r["bad_save"] for r in job["ranks"])
    assert kind0 == kind1 == "InvalidArgumentError" and "directory=3" in message0
    assert message1.startswith("rank 0 could not save the model: directory=3")
    assert "shard first, then compile" in job["ranks"][0]["compiled_refused"]


@pytest.mark.slow
def test_a_sharded_state_dict_saved_as_it_is_is_refused_naming_the_full_one(job):
    """``torch.save(model.state_dict())`` of an FSDP2 model holds DTensors, one rank's shard each:
    refused (as a format error, never a raw error from their storage) with the call that saves
    the whole tensors, read with or without ``trusted=True``."""
    for rank in job["ranks"]:
        for kind, message in rank["dtensor_refusals"]:
            assert kind == "CheckpointFormatError" and "is a DTensor, one rank's shard" in message
            assert "get_model_state_dict" in message and "full_state_dict=True" in message


# -- arguments (no process group needed: checked before any collective) -----------------------

def test_arguments_are_checked_before_any_collective():
    import torch

    import zooadapt
    from zooadapt.integrations.fsdp import fully_shard_stages, load_full_state_dict

    model = zooadapt.load("resnet18", num_classes=3, pretrained=False, device="meta")
    with pytest.raises(InvalidArgumentError, match="needs torch.distributed initialised"):
        fully_shard_stages(model)
    with pytest.raises(InvalidArgumentError, match="needs torch.distributed initialised"):
        save_sharded(model, "somewhere")
    with pytest.raises(InvalidArgumentError, match="None on the others"):
        load_full_state_dict(model, [("conv1.weight", None)])
    with pytest.raises(InvalidArgumentError, match="device='gpu0'"):
        load_full_state_dict(model, None, device="gpu0")
    with pytest.raises(InvalidArgumentError, match="strict="):
        load_full_state_dict(model, None, strict="yes")
    with pytest.raises(InvalidArgumentError, match="got str"):
        load_full_state_dict("resnet18", None)

    class WithIndex(torch.nn.Module):  # as Swin's relative_position_index: computed, never saved
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)
            self.register_buffer("index", torch.arange(4), persistent=False)

    with torch.device("meta"):
        odd = WithIndex()
    with pytest.raises(InvalidArgumentError, match=r"buffers outside its state dict \(index\)"):
        load_full_state_dict(odd, None)

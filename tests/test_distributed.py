"""Two processes under torch.distributed (gloo, CPU, 127.0.0.1).

One job runs every scenario once (starting processes costs more than the scenarios) and
each test checks one part of what the ranks recorded:
- one download while the other rank waits, then reads the leader's commit from the cache;
- a model with frozen stages trains under DistributedDataParallel (no unused-parameter
  error, frozen weights unchanged, trained weights identical on both ranks);
- a checkpoint saved from the DDP wrapper (``module.`` keys) loads back with ``weights=``;
- the leader's failure reaches the other rank as the same error type, without a hang.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from two_ranks import run_two_ranks

from zooadapt.testing import Fault, hub_environment, safetensors_bytes, torchvision_state_dict

pytestmark = pytest.mark.slow  # every test reads one two-process job (~15 s)

REPO = "test/ddp-resnet18"
MISSING = "test/ddp-missing"

WORKER = r'''
import hashlib, json, os, sys, time
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
import zooadapt

rank, port, out_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
# a file store, not a TCP port: no port another test (or process) may take between choosing and binding
dist.init_process_group("gloo", init_method="file://" + os.path.join(out_dir, "pg-store"), rank=rank, world_size=2)
out = {}

def digest(tensors):
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()

started = time.perf_counter()
model = zooadapt.load("ddp-resnet18", num_classes=3, freeze="layer1-3")
out["load_seconds"] = time.perf_counter() - started
out["commit"] = model.zooadapt.report.commit
frozen_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("layer1.", "layer2.", "layer3."))}
head_before = model.fc.weight.clone()

ddp = DDP(model)  # find_unused_parameters=False: an unused trainable parameter fails the next step
optimizer = torch.optim.SGD([p for p in ddp.parameters() if p.requires_grad], lr=0.05)
torch.manual_seed(100 + rank)
ddp.train()
for _ in range(3):
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 3, (4,))
    loss = F.cross_entropy(ddp(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
after = model.state_dict()
out["frozen_unchanged"] = all(torch.equal(v, after[k]) for k, v in frozen_before.items())
out["head_trained"] = not torch.equal(head_before, model.fc.weight)
out["trained_digest"] = digest([model.fc.weight, model.layer4[1].conv2.weight])

path = os.path.join(out_dir, "ddp_checkpoint.pth")
if rank == 0:
    torch.save({"epoch": 1, "state_dict": ddp.state_dict()}, path)
    out["saved_keys_prefixed"] = all(k.startswith("module.") for k in ddp.state_dict())
dist.barrier()
reloaded = zooadapt.load("ddp-resnet18", num_classes=3, weights=path)
state = reloaded.state_dict()
saved = torch.load(path, weights_only=True)["state_dict"]
# every tensor as rank 0 saved it; parameters also equal this rank's own (DDP keeps them in sync,
# while BatchNorm statistics of trained stages are each rank's own)
out["reload_equal"] = sorted(f"module.{k}" for k in state) == sorted(saved) and all(
    torch.equal(state[k], saved[f"module.{k}"]) for k in state) and all(
    torch.equal(state[n], p) for n, p in model.named_parameters())
out["reload_rules"] = sorted({r for m in reloaded.zooadapt.report.plan.renamed for r in m.rules})

try:
    zooadapt.load("ddp-resnet18", weights="hf://test/ddp-missing/model.safetensors")
    out["missing"] = None
except Exception as exc:
    out["missing"] = [type(exc).__name__, str(exc)]

dist.barrier()
dist.destroy_process_group()
with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
    json.dump(out, fh)
'''


def _count(hub, method: str, repo: str) -> int:
    return sum(n for (m, r, _), n in hub.requests.items() if m == method and r == repo)


@pytest.fixture(scope="module")
def job(hub, tmp_path_factory):
    """Run the two-rank job once; return what each rank recorded plus the Hub's request counts."""
    work = tmp_path_factory.mktemp("ddp")
    state = torchvision_state_dict("resnet18", seed=22)
    commit = hub.add_file(REPO, "model.safetensors", safetensors_bytes(state))
    registry = work / "registry.toml"
    registry.write_text(f'[models.ddp-resnet18]\nfamily = "resnet"\narch = "resnet18"\nhub = "{REPO}"\n')
    before = {(m, r): _count(hub, m, r) for m in ("HEAD", "GET") for r in (REPO, MISSING)}
    # a slow download: a rank that did not wait would send its own requests meanwhile
    hub.inject(Fault(delay=1.5, method="GET", repo=REPO))
    home = work / "home"

    def env_for(rank: int) -> dict[str, str]:
        return {**hub_environment(hub.url, home), "ZOOADAPT_REGISTRY": str(registry), "LOCAL_RANK": str(rank),
                "RANK": str(rank), "WORLD_SIZE": "2", "ZOOADAPT_LOCK": "off"}

    started = time.perf_counter()
    ranks = run_two_ranks(work, WORKER, env_for=env_for)
    seconds = time.perf_counter() - started
    counts = {key: _count(hub, *key) - n for key, n in before.items()}
    return {"ranks": ranks, "counts": counts, "commit": commit, "seconds": seconds}


def test_one_download_while_the_other_rank_waits(job):
    counts = job["counts"]
    assert counts[("GET", REPO)] == 1 and counts[("HEAD", REPO)] == 1  # rank 1 sent no request at all
    assert [r["commit"] for r in job["ranks"]] == [job["commit"]] * 2


def test_frozen_stages_train_under_ddp(job):
    for rank in job["ranks"]:
        assert rank["frozen_unchanged"] and rank["head_trained"]
    assert job["ranks"][0]["trained_digest"] == job["ranks"][1]["trained_digest"]


def test_checkpoint_saved_from_ddp_wrapper_loads_back(job):
    assert job["ranks"][0]["saved_keys_prefixed"]
    for rank in job["ranks"]:
        assert rank["reload_equal"] and rank["reload_rules"] == ["strip 'module.'"]


def test_leader_failure_reaches_the_other_rank_without_a_hang(job):
    leader, follower = (r["missing"] for r in job["ranks"])
    assert leader[0] == follower[0] == "HubRepoNotFoundError"
    assert "local rank 0" in follower[1] and MISSING in follower[1]
    assert job["counts"][("HEAD", MISSING)] == 1  # only the leader asked


def test_not_coordinated_without_a_process_group():
    from zooadapt.weights.distributed import fetch_once, is_active

    assert not is_active()
    calls = []
    fetch_once(lambda commit: calls.append(commit) or Path("x"))
    assert calls == [None]

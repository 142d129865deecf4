"""Eight processes load the same model on an empty cache at the same moment.

One interpreter imports what is needed once and forks eight processes that wait for a
start signal, so their fetches really overlap (the download is slowed as well) and the test
does not pay for eight interpreter start-ups on two cores.
huggingface_hub's per-file lock must let exactly one of them download; all must succeed
with identical tensors, and the cache must hold one complete file and no partial one.
The model is a small plugin-registered network (torch only, no torchvision).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from zooadapt.testing import Fault, hub_environment, safetensors_bytes, seeded_state_dict

REPO = "test/concurrent-tiny"
N = 8

MODEL = r'''
import torch
import zooadapt
from zooadapt.plugin_api import Family, ModelEntry, Stage, StageMap, WeightSource, get_registry, hookimpl


class Tiny(torch.nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.BatchNorm1d(1024), torch.nn.ReLU())
        self.fc = torch.nn.Linear(1024, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))


class Plugin:
    @hookimpl
    def zooadapt_register_families(self, register):
        register(Family(name="tiny-concurrent", build=lambda arch, num_classes=10: Tiny(num_classes),
                                 stages=StageMap((Stage("body", ("body",)),), head="fc")))

    @hookimpl
    def zooadapt_register_models(self, register):
        register(ModelEntry(name="tiny-concurrent", family="tiny-concurrent", arch="tiny", num_classes=10,
                                     source=WeightSource(repo_id="REPO")))
'''.replace("REPO", REPO)

WORKER = r'''
import hashlib, json, os, sys, time, traceback
import huggingface_hub.file_download, safetensors.torch
import zooadapt, zooadapt.loading.loader
from zooadapt.host.plugin_manager import load_plugins
from zooadapt.plugin_api import get_registry
from tiny_model import Plugin

load_plugins().register(Plugin(), name="tiny-concurrent")
get_registry().entry("tiny-concurrent")  # everything loaded before the race

n, ready, go, out_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
children = []
for i in range(n):  # imports are paid once, then each child is a process of its own
    pid = os.fork()
    if pid:
        children.append(pid)
        continue
    try:
        while not os.path.exists(go):
            time.sleep(0.01)
        started = time.perf_counter()
        model = zooadapt.load("tiny-concurrent")
        seconds = time.perf_counter() - started
        state = model.state_dict()
        digest = hashlib.sha256()
        for key in sorted(state):
            digest.update(key.encode() + state[key].contiguous().numpy().tobytes())
        result = {"digest": digest.hexdigest(), "commit": model.zooadapt.report.commit, "seconds": seconds,
                  "pid": os.getpid()}
    except BaseException:
        result = {"error": traceback.format_exc()}
    with open(os.path.join(out_dir, f"out{i}.json"), "w") as fh:
        json.dump(result, fh)
    os._exit(0 if "error" not in result else 1)
open(ready, "w").close()
sys.exit(sum(os.waitpid(pid, 0)[1] != 0 for pid in children))
'''


def _count(hub, method: str) -> int:
    return sum(n for (m, r, _), n in hub.requests.items() if m == method and r == REPO)


@pytest.mark.slow
def test_eight_processes_one_download_identical_tensors(hub, hub_cache, tmp_path, monkeypatch):
    (tmp_path / "tiny_model.py").write_text(MODEL)
    (tmp_path / "worker.py").write_text(WORKER)
    monkeypatch.syspath_prepend(str(tmp_path))
    from tiny_model import Tiny

    state = seeded_state_dict(Tiny(), seed=88)
    data = safetensors_bytes(state)
    commit = hub.add_file(REPO, "model.safetensors", data)
    expected = hashlib.sha256()
    for key in sorted(state):
        expected.update(key.encode() + state[key].contiguous().numpy().tobytes())

    env = {**os.environ, **hub_environment(hub.url, tmp_path / "home"), "HF_HUB_CACHE": str(hub_cache),
           "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    env.pop("ZOOADAPT_LOCK", None)
    go, ready = tmp_path / "go", tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(N), str(ready), str(go), str(tmp_path)],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert time.monotonic() < deadline, "workers never got ready"
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.05)
        before = {m: _count(hub, m) for m in ("HEAD", "GET")}
        hub.inject(Fault(delay=1.0, method="GET", repo=REPO))  # the first GET is slow: the others must wait
        go.touch()
        log = proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
    assert proc.returncode == 0, [log, *((tmp_path / f"out{i}.json").read_text() for i in range(N)
                                        if (tmp_path / f"out{i}.json").exists())]
    results = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(N)]
    assert {r["digest"] for r in results} == {expected.hexdigest()}
    assert {r["commit"] for r in results} == {commit}
    assert len({r["pid"] for r in results}) == N
    assert _count(hub, "GET") - before["GET"] == 1  # one download
    assert _count(hub, "HEAD") - before["HEAD"] == N  # everyone asked which commit is current
    assert min(r["seconds"] for r in results) >= 1.0  # nobody finished before the one slow download
    files = [p for p in hub_cache.rglob("*") if p.is_file() and ".locks" not in p.parts]
    assert [p.name for p in files if "blobs" in p.parts] == [hashlib.sha256(data).hexdigest()]
    assert not [p for p in files if p.name.endswith(".incomplete")]

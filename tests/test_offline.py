"""Offline use: prefetch with ``zooadapt fetch``, then load with ``HF_HUB_OFFLINE=1`` from the cache.

huggingface_hub reads ``HF_HUB_OFFLINE`` into ``constants.HF_HUB_OFFLINE`` at import and
``is_offline_mode()`` returns that constant, so in-process tests patch the constant; the
subprocess tests set the real environment variable.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

import zooadapt
from zooadapt.cli import main
from zooadapt.contract.errors import OfflineCacheMissError
from zooadapt.errors import DownloadError
from zooadapt.testing import hub_environment, safetensors_bytes
from zooadapt.weights.sources import fetch, parse_source

R18 = "timm/resnet18.tv_in1k"


@pytest.fixture
def offline(monkeypatch):
    from huggingface_hub import constants

    def go(on: bool = True) -> None:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", on)

    return go


def _requests(hub) -> int:
    return sum(hub.requests.values())


def _cli_env(hub, hub_cache, tmp_path, **extra: str) -> dict[str, str]:
    env = {**os.environ, **hub_environment(hub.url, tmp_path / "home"), "HF_HUB_CACHE": str(hub_cache), **extra}
    env.pop("ZOOADAPT_LOCK", None)
    return env


@pytest.mark.slow
def test_prefetch_then_offline_load_makes_no_request(hub, resnet18_weights, offline, capsys):
    assert main(["fetch", "resnet18", "--quiet"]) == 0
    assert "resnet18: hf://timm/resnet18.tv_in1k@main/model.safetensors\n  commit " in capsys.readouterr().out
    offline()
    before = _requests(hub)
    model = zooadapt.load("resnet18", num_classes=2, freeze="layer1")
    assert _requests(hub) == before
    assert torch.equal(model.layer1[0].conv1.weight, resnet18_weights["layer1.0.conv1.weight"])


def test_offline_cache_miss_names_repo_file_revision_and_prefetch(resnet18_weights, offline):
    offline()
    with pytest.raises(OfflineCacheMissError) as info:
        zooadapt.load("resnet18", num_classes=2)
    message = str(info.value)
    for part in (f"repo '{R18}'", "file 'model.safetensors'", "revision 'main'", "`zooadapt fetch resnet18`",
                 "HF_HUB_OFFLINE=1"):
        assert part in message, part


def test_offline_names_the_revision_that_is_not_cached(hub, resnet18_weights, offline):
    zooadapt.load("resnet18")
    offline()
    zooadapt.load("resnet18")  # the cached branch works
    with pytest.raises(OfflineCacheMissError, match="revision 'v-other'"):
        zooadapt.load("resnet18", revision="v-other")


def test_offline_with_a_lock_file_loads_the_locked_commit(hub, resnet18_weights, offline, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    locked = zooadapt.lock(["resnet18"]).models["resnet18"]
    offline()
    before = _requests(hub)
    model = zooadapt.load("resnet18")
    assert model.zooadapt.report.commit == locked.commit and _requests(hub) == before


@pytest.mark.slow
def test_fetch_json_reports_commit_sha256_and_path(resnet18_weights, capsys):
    assert main(["fetch", "resnet18", "--quiet", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["sha256"] == hashlib.sha256(safetensors_bytes(resnet18_weights)).hexdigest()
    assert len(row["commit"]) == 40 and os.path.isfile(row["path"]) and row["size"] == os.path.getsize(row["path"])


@pytest.mark.slow
def test_url_weights_offline(hub, resnet18_weights, offline, tmp_path):
    digest = hashlib.sha256(safetensors_bytes(resnet18_weights)).hexdigest()
    url = f"{hub.url}/{R18}/resolve/main/model.safetensors#sha256={digest}"
    offline()
    with pytest.raises(OfflineCacheMissError, match="not cached"):
        fetch(parse_source(url), cache_dir=tmp_path)
    offline(False)
    fetch(parse_source(url), cache_dir=tmp_path)
    offline()
    assert fetch(parse_source(url), cache_dir=tmp_path).sha256 == digest


@pytest.mark.slow
def test_cli_fetch_shows_progress_bars_unless_quiet(hub, resnet18_weights, hub_cache, tmp_path):
    env = _cli_env(hub, hub_cache, tmp_path, TQDM_POSITION="-1")  # bars even though stderr is a pipe
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS")
    run = subprocess.run([sys.executable, "-m", "zooadapt", "fetch", "resnet18"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "model.safetensors" in run.stderr and "100%" in run.stderr
    quiet = subprocess.run([sys.executable, "-m", "zooadapt", "fetch", "--quiet", "--force", "resnet18"], env=env,
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and "100%" not in quiet.stderr


@pytest.mark.slow
def test_hf_hub_offline_environment_variable_in_a_fresh_process(hub, resnet18_weights, hub_cache, tmp_path):
    """The real variable, read at import: prefetched works with no request, a miss exits 2 and says why."""
    fetch(parse_source(f"hf://{R18}"))
    env = _cli_env(hub, hub_cache, tmp_path, HF_HUB_OFFLINE="1")
    before = _requests(hub)
    script = ("import sys, zooadapt.cli; code = zooadapt.cli.main(['fetch', '--quiet', 'resnet18']); "
              "sys.exit(code or 10 * ('torch' in sys.modules))")  # fetching Hub files needs no torch
    hit = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert hit.returncode == 0, hit.stderr
    assert _requests(hub) == before
    env["HF_HUB_CACHE"] = str(tmp_path / "empty-cache")
    miss = subprocess.run([sys.executable, "-m", "zooadapt", "fetch", "--quiet", "resnet18"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert miss.returncode == 2
    assert "offline mode" in miss.stderr and "zooadapt fetch resnet18" in miss.stderr and R18 in miss.stderr
    assert _requests(hub) == before


# -- no route to the Hub: fail at once, not after huggingface_hub's ~24 s of retries ---------------

NO_SUCH_HOST = "http://zooadapt-no-such-host.invalid"


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _retries(text: str) -> int:
    return text.count("Retrying in") + text.count("thrown while requesting")


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", [NO_SUCH_HOST, "closed-port"])
def test_unreachable_hub_fails_at_once_with_the_ways_forward(endpoint, tmp_path, hub_cache):
    """A fresh process (the real first run): HF_ENDPOINT has no host or nothing listens there."""
    url = f"http://127.0.0.1:{_closed_port()}" if endpoint == "closed-port" else endpoint
    env = {**os.environ, "HF_ENDPOINT": url, "HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HOME": str(tmp_path)}
    env.pop("HF_HUB_OFFLINE", None)
    run = subprocess.run([sys.executable, "-m", "zooadapt", "fetch", "--quiet", "resnet18"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert _retries(run.stderr) == 0  # no request was made at all, so none was retried
    for part in ("cannot reach the Hugging Face Hub", "HF_HUB_OFFLINE=1", "weights=PATH", "`zooadapt fetch resnet18`",
                 "hf://timm/resnet18.tv_in1k@main/model.safetensors"):
        assert part in run.stderr, part
    assert ("cannot be resolved" if endpoint == NO_SUCH_HOST else "refused the connection") in run.stderr


def test_unreachable_hub_raises_a_download_error_in_python(monkeypatch, caplog):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", NO_SUCH_HOST)
    with caplog.at_level("DEBUG"), pytest.raises(DownloadError) as info:
        zooadapt.load("resnet18", num_classes=2)
    assert isinstance(info.value, DownloadError)
    assert "zooadapt-no-such-host.invalid" in str(info.value) and "weights=PATH" in str(info.value)
    assert _retries(caplog.text) == 0


@pytest.mark.slow
def test_a_cached_file_still_loads_when_the_hub_is_unreachable(hub, resnet18_weights, hub_cache, tmp_path):
    """Cached weights skip the probe; huggingface_hub's own fallback serves them without retries."""
    fetch(parse_source(f"hf://{R18}"))
    env = {**os.environ, "HF_ENDPOINT": NO_SUCH_HOST, "HF_HUB_CACHE": str(hub_cache), "HF_HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "zooadapt", "fetch", "--quiet", "--json", "resnet18"], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)[0]["sha256"] == hashlib.sha256(safetensors_bytes(resnet18_weights)).hexdigest()
    assert "Retrying in" not in run.stderr


def test_the_probe_tells_no_route_from_maybe(hub, monkeypatch):
    from zooadapt.weights.hub_probe import unreachable_reason

    assert unreachable_reason(hub.url) is None
    assert "cannot be resolved" in unreachable_reason(NO_SUCH_HOST)
    assert "refused the connection" in unreachable_reason(f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("no_proxy", "")
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert unreachable_reason(NO_SUCH_HOST) is None  # the proxy resolves it, not this machine


def test_every_download_error_names_weights_path(hub, resnet18_weights, monkeypatch, tmp_path):
    from zooadapt.testing import Fault

    monkeypatch.setattr("zooadapt.weights.hub_download._RETRY_WAITS", (0.0, 0.0))
    hub.inject(Fault(status=503, method="GET", times=3, repo=R18))  # the file itself: zooadapt's own retries
    with pytest.raises(DownloadError, match="weights=PATH"):
        fetch(parse_source(f"hf://{R18}@main/model.safetensors"))
    url = f"http://127.0.0.1:{_closed_port()}/w.pth#sha256={'0' * 64}"
    with pytest.raises(DownloadError, match="weights=PATH"):
        fetch(parse_source(url), cache_dir=tmp_path)

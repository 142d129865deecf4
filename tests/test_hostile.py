"""Hostile inputs and faults, collected in one module so their number is visible.

Each test gives zooadapt one thing that goes wrong in the field — a Hub that answers 404,
5xx or nothing at all, a truncated or corrupted download, a tampered cache, a process
killed mid-download, a pickle that runs code, a checkpoint for another model, a broken
third-party plugin — and checks that it fails with a typed error that names the problem,
leaves nothing half-written in the cache, and never hands over wrong weights.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import os
import pickle
import re
import subprocess
import sys
import time
import types
import uuid
from pathlib import Path

import pytest
import torch
from fake_plugins import install_entry_points

import zooadapt
from zooadapt.contract.errors import (
    DownloadError,
    HubFileNotFoundError,
    HubRepoNotFoundError,
    HubRevisionNotFoundError,
    LockFileError,
)
from zooadapt.errors import (
    CheckpointFormatError,
    IncompatibleCheckpointError,
    IntegrityError,
    PluginError,
    UnsafeCheckpointError,
    WeightsNotFoundError,
    WeightSourceError,
)
from zooadapt.host.plugin_manager import load_plugins, plugin_failures, reset_plugins
from zooadapt.plugin_api import WeightSource, get_registry
from zooadapt.testing import Fault, hub_environment, safetensors_bytes
from zooadapt.weights.sources import fetch

TINY = "test/hostile-tiny"
R18 = "timm/resnet18.tv_in1k"


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(hub) -> bytes:
    """A small safetensors file on the local Hub (fast to move around in fault tests)."""
    gen = torch.Generator().manual_seed(7)
    data = safetensors_bytes({"a.weight": torch.randn(64, 256, generator=gen), "a.bias": torch.randn(64)})
    hub.add_file(TINY, "model.safetensors", data)
    return data


def _tiny_source(**kw) -> WeightSource:
    return WeightSource(repo_id=TINY, filename="model.safetensors", **kw)


def _files(cache: Path) -> list[str]:
    """Everything in the Hub cache except lock files and the no-exist markers."""
    if not cache.exists():
        return []
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")
                  if p.is_file() and ".locks" not in p.parts and ".no_exist" not in p.parts)


def _partials(cache: Path) -> list[str]:
    return [f for f in _files(cache) if f.endswith(".incomplete")]


def _blobs(cache: Path) -> list[str]:
    return [f for f in _files(cache) if "/blobs/" in f and not f.endswith(".incomplete")]


def _count(hub, method: str, repo: str) -> int:
    return sum(n for (m, r, _), n in hub.requests.items() if m == method and r == repo)


@pytest.fixture
def fast_retries(monkeypatch):
    """huggingface_hub's retry and timeout settings, shortened (the defaults back off ~20 s)."""
    from huggingface_hub import constants, file_download
    from huggingface_hub.utils import _http

    import zooadapt.weights.hub_download as hub_download

    for key, value in (("base_wait_time", 0.01), ("max_wait_time", 0.02), ("max_retries", 2)):
        monkeypatch.setitem(_http.http_backoff.__kwdefaults__, key, value)  # the metadata (HEAD) retries
    monkeypatch.setitem(inspect.unwrap(file_download.http_get).__kwdefaults__, "_nb_retries", 2)  # resumes
    real_sleep = time.sleep
    monkeypatch.setattr(file_download, "time", types.SimpleNamespace(sleep=lambda s: real_sleep(min(s, 0.01)),
                                                                     time=time.time))
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 0.5)
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 0.5)
    monkeypatch.setattr(file_download, "_ETAG_RETRY_TIMEOUT", 0.5)
    monkeypatch.setattr(hub_download, "_RETRY_WAITS", (0.01, 0.01))


def _registry(tmp_path: Path, monkeypatch, body: str) -> None:
    path = tmp_path / "extra-registry.toml"
    path.write_text(body)
    monkeypatch.setenv("ZOOADAPT_REGISTRY", str(path))
    reset_plugins()


# -- Hub: not found ----------------------------------------------------------------------


def test_hub_missing_repo_names_the_repo(tiny):
    with pytest.raises(HubRepoNotFoundError, match="test/no-such-repo"):
        fetch(WeightSource(repo_id="test/no-such-repo"))


def test_hub_missing_revision_names_the_revision(tiny):
    with pytest.raises(HubRevisionNotFoundError) as info:
        fetch(_tiny_source(revision="v9.9"))
    assert "'v9.9'" in str(info.value) and TINY in str(info.value)


def test_hub_missing_file_names_the_file(tiny):
    with pytest.raises(HubFileNotFoundError) as info:
        fetch(WeightSource(repo_id=TINY, filename="pytorch_model.bin"))
    assert "'pytorch_model.bin'" in str(info.value) and TINY in str(info.value)


def test_hub_refusing_access_asks_for_a_token(hub, tiny):
    hub.inject(Fault(status=403, method="HEAD", repo=TINY))
    with pytest.raises(WeightSourceError, match="HF_TOKEN"):
        fetch(_tiny_source())


def test_three_not_found_errors_are_distinct_types():
    kinds = {HubRepoNotFoundError, HubRevisionNotFoundError, HubFileNotFoundError}
    assert all(issubclass(k, WeightsNotFoundError) for k in kinds)
    assert not any(issubclass(a, b) for a in kinds for b in kinds if a is not b)


# -- Hub: 5xx and timeouts -------------------------------------------------------------


def test_metadata_503_is_retried_then_succeeds(hub, tiny, hub_cache, fast_retries):
    before = _count(hub, "HEAD", TINY)
    hub.inject(Fault(status=503, method="HEAD", repo=TINY))
    fetched = fetch(_tiny_source())
    assert fetched.path.read_bytes() == tiny
    assert _count(hub, "HEAD", TINY) - before == 2  # the failed one, then huggingface_hub's retry


def test_metadata_503_persistent_is_a_clear_error_and_leaves_no_file(hub, tiny, hub_cache, fast_retries):
    hub.inject(Fault(status=503, method="HEAD", repo=TINY, times=50))
    before = _count(hub, "HEAD", TINY)
    with pytest.raises(DownloadError) as info:
        fetch(_tiny_source())
    assert "HTTP 503" in str(info.value) and TINY in str(info.value)
    assert _count(hub, "HEAD", TINY) - before == 4  # first try + 1 + max_retries (2), shortened for the test
    assert _blobs(hub_cache) == [] and _partials(hub_cache) == []


def test_body_500_is_retried_then_succeeds(hub, tiny, hub_cache, fast_retries):
    before = _count(hub, "GET", TINY)
    hub.inject(Fault(status=500, method="GET", repo=TINY))
    assert fetch(_tiny_source()).path.read_bytes() == tiny
    assert _count(hub, "GET", TINY) - before == 2


def test_body_502_persistent_is_a_clear_error_and_leaves_no_file(hub, tiny, hub_cache, fast_retries):
    hub.inject(Fault(status=502, method="GET", repo=TINY, times=10))
    with pytest.raises(DownloadError, match="HTTP 502"):
        fetch(_tiny_source())
    assert _blobs(hub_cache) == [] and _partials(hub_cache) == []
    hub.faults.clear()
    assert fetch(_tiny_source()).path.read_bytes() == tiny  # nothing poisoned the cache


@pytest.mark.slow
def test_metadata_timeout_is_retried_then_succeeds(hub, tiny, hub_cache, fast_retries):
    hub.inject(Fault(delay=1.5, method="HEAD", repo=TINY))
    assert fetch(_tiny_source()).path.read_bytes() == tiny


@pytest.mark.slow
def test_body_timeout_resumes_then_succeeds(hub, tiny, hub_cache, fast_retries):
    hub.inject(Fault(delay=1.5, method="GET", repo=TINY))
    assert fetch(_tiny_source()).path.read_bytes() == tiny
    assert _partials(hub_cache) == []


@pytest.mark.slow
def test_persistent_timeouts_are_a_clear_error(hub, tiny, hub_cache, fast_retries):
    hub.inject(Fault(delay=1.0, method="HEAD", repo=TINY, times=20))
    started = time.perf_counter()
    with pytest.raises(DownloadError, match="could not reach the Hub") as info:
        fetch(_tiny_source())
    assert "zooadapt fetch" in str(info.value)
    assert time.perf_counter() - started < 10
    assert _blobs(hub_cache) == [] and _partials(hub_cache) == []


# -- Hub: wrong bytes ----------------------------------------------------------------------


def test_truncated_body_is_resumed_with_a_range_request(hub, tiny, hub_cache, fast_retries):
    before = _count(hub, "GET", TINY)
    hub.inject(Fault(truncate=1000, repo=TINY))
    assert fetch(_tiny_source()).path.read_bytes() == tiny
    assert _count(hub, "GET", TINY) - before == 2


def test_body_that_never_arrives_whole_is_refused_and_not_cached(hub, tiny, hub_cache, fast_retries):
    hub.inject(Fault(truncate=0, repo=TINY, times=20))
    with pytest.raises(DownloadError, match=TINY):
        fetch(_tiny_source())
    assert _blobs(hub_cache) == [] and _partials(hub_cache) == []


def test_corrupted_download_is_caught_by_the_hub_checksum(hub, tiny, hub_cache):
    hub.inject(Fault(corrupt=True, repo=TINY))
    with pytest.raises(IntegrityError, match="sha256 the Hub advertises"):
        fetch(_tiny_source())
    assert _blobs(hub_cache) == []  # not cached as good
    assert fetch(_tiny_source()).path.read_bytes() == tiny  # the next try downloads afresh


def test_pinned_sha256_mismatch_is_refused_evicted_and_not_loaded(tmp_path, monkeypatch, hub_cache,
                                                                  resnet18_weights):
    _registry(tmp_path, monkeypatch, f"""
[models.resnet18-badpin]
family = "resnet"
arch = "resnet18"
hub = "{R18}"
sha256 = "{'0' * 64}"
""")
    with pytest.raises(IntegrityError, match="expected 0000000000000000"):
        zooadapt.load("resnet18-badpin", num_classes=3)
    assert _blobs(hub_cache) == []


def test_pinned_sha256_prefix_that_matches_loads(tmp_path, monkeypatch, resnet18_weights):
    digest = hashlib.sha256(safetensors_bytes(resnet18_weights)).hexdigest()
    _registry(tmp_path, monkeypatch, f"""
[models.resnet18-goodpin]
family = "resnet"
arch = "resnet18"
hub = "{R18}"
sha256 = "{digest[:12]}"
""")
    model = zooadapt.load("resnet18-goodpin")
    assert torch.equal(model.conv1.weight, resnet18_weights["conv1.weight"])


def test_cache_file_tampered_after_download_is_detected(hub, tiny, hub_cache):
    fetched = fetch(_tiny_source())
    blob = fetched.path.resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    os.utime(blob, ns=(time.time_ns(), time.time_ns() + 10_000_000))  # a rewrite always moves mtime
    with pytest.raises(IntegrityError):
        fetch(_tiny_source())
    assert not blob.exists()
    assert fetch(_tiny_source()).path.read_bytes() == tiny


def test_local_file_sha256_mismatch_is_refused_but_never_deleted(tmp_path, tiny):
    path = tmp_path / "mine.safetensors"
    path.write_bytes(tiny)
    with pytest.raises(IntegrityError, match="not loaded"):
        fetch(WeightSource(path=str(path), sha256="ab" * 32))
    assert path.read_bytes() == tiny  # a user's own file is theirs


# -- URLs --------------------------------------------------------------------------------------


def _url(hub, repo: str = TINY) -> str:
    return f"{hub.url}/{repo}/resolve/main/model.safetensors"


def test_url_without_a_hash_is_refused(hub, tiny, tmp_path):
    with pytest.raises(WeightSourceError, match="#sha256="):
        fetch(zooadapt.weights.sources.parse_source(_url(hub)), cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_url_with_wrong_hash_is_refused_and_not_cached(hub, tiny, tmp_path):
    with pytest.raises(IntegrityError, match="Nothing was cached"):
        fetch(zooadapt.weights.sources.parse_source(_url(hub) + "#sha256=" + "1" * 64), cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_url_with_right_hash_downloads_once(hub, tiny, tmp_path):
    spec = _url(hub) + "#sha256=" + hashlib.sha256(tiny).hexdigest()
    before = _count(hub, "GET", TINY)
    assert fetch(zooadapt.weights.sources.parse_source(spec), cache_dir=tmp_path).path.read_bytes() == tiny
    assert fetch(zooadapt.weights.sources.parse_source(spec), cache_dir=tmp_path).path.read_bytes() == tiny
    assert _count(hub, "GET", TINY) - before == 1


def test_url_404_is_not_found(hub, tmp_path):
    with pytest.raises(WeightsNotFoundError, match="404"):
        fetch(zooadapt.weights.sources.parse_source(_url(hub, "test/nope") + "#sha256=" + "1" * 64), cache_dir=tmp_path)


# -- addresses --------------------------------------------------------------------------------


def test_hub_filename_escaping_the_repo_is_refused(tiny):
    with pytest.raises(WeightSourceError):
        fetch(WeightSource(repo_id=TINY, filename="../../../etc/passwd"))


def test_malformed_hub_address_is_refused():
    with pytest.raises(WeightsNotFoundError, match="hf://org/repo"):
        zooadapt.load("resnet18", weights="hf://just-a-name")


def test_malformed_lock_file_is_refused(tmp_path, resnet18_weights):
    path = tmp_path / "zooadapt.lock"
    path.write_text("{not json")
    with pytest.raises(LockFileError, match="zooadapt lock"):
        zooadapt.load("resnet18", lock=path)


# -- a process killed in the middle of a download ----------------------------------------------


@pytest.mark.slow
def test_download_killed_midway_then_next_load_succeeds(hub, hub_cache, tmp_path, resnet18_weights):
    size = len(safetensors_bytes(resnet18_weights))
    hub.inject(Fault(pause_after=size // 2, delay=15, repo=R18))
    env = {**os.environ, **hub_environment(hub.url, tmp_path / "home"), "HF_HUB_CACHE": str(hub_cache)}
    proc = subprocess.Popen([sys.executable, "-m", "zooadapt", "fetch", "--quiet", "resnet18"], env=env,
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            partial = [p for p in hub_cache.rglob("*.incomplete") if p.stat().st_size >= 1 << 20]
            if partial:
                break
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.05)
        else:
            pytest.fail("the download never got going")
    finally:
        proc.kill()
        proc.wait()
    assert _blobs(hub_cache) == [] and _partials(hub_cache)  # killed: only a partial file is left

    model = zooadapt.load("resnet18", num_classes=4)
    assert torch.equal(model.layer4[1].conv2.weight, resnet18_weights["layer4.1.conv2.weight"])
    assert _partials(hub_cache) == []  # the leftover was swept


# -- checkpoint content ------------------------------------------------------------------------


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_torch_save_with_code_payload_is_refused(tmp_path, resnet18_weights):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": resnet18_weights, "extra": _Payload(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match="trusted=True"):
        zooadapt.load("resnet18", weights=path)
    assert not marker.exists()


def test_pickle_disguised_as_safetensors_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps({"x": _Payload(str(marker))}))
    with pytest.raises(CheckpointFormatError):
        zooadapt.load("resnet18", weights=path)
    assert not marker.exists()


def test_whole_pickled_module_loads_without_running_its_code(tmp_path, resnet18_weights):
    """A whole pickled model used to need trusted=True; its classes are now replaced by inert
    stand-ins (tests/test_standins.py), and trusted=True still reads it the old way."""
    import torchvision

    net = torchvision.models.resnet18()
    net.load_state_dict(resnet18_weights)
    path = tmp_path / "whole_model.pth"
    torch.save(net, path)
    model = zooadapt.load("resnet18", weights=path)
    assert torch.equal(model.layer2[0].conv1.weight, resnet18_weights["layer2.0.conv1.weight"])
    assert "torchvision.models.resnet.ResNet" in model.zooadapt.report.plan.weight_set  # "replaced by stand-ins"
    model = zooadapt.load("resnet18", weights=path, trusted=True)
    assert torch.equal(model.layer2[0].conv1.weight, resnet18_weights["layer2.0.conv1.weight"])


class TrainingState:
    """A custom class a training script might pickle beside its weights (harmless here, but a
    class of the file's choosing is exactly what lets a pickle run code)."""

    def __init__(self) -> None:
        self.epoch = 90


def test_training_checkpoint_with_a_custom_class_loads_without_running_it(tmp_path, resnet18_weights):
    """Such a checkpoint used to need trusted=True; the class is now replaced by an inert stand-in."""
    path = tmp_path / "train_ckpt.pth"
    torch.save({"state_dict": resnet18_weights, "state": TrainingState()}, path)
    model = zooadapt.load("resnet18", weights=path)
    assert torch.equal(model.fc.weight, resnet18_weights["fc.weight"])
    assert f"{__name__}.TrainingState" in model.zooadapt.report.plan.weight_set
    model = zooadapt.load("resnet18", weights=path, trusted=True)
    assert torch.equal(model.fc.weight, resnet18_weights["fc.weight"])


def test_training_checkpoint_with_argparse_namespace_loads_without_trust(tmp_path, resnet18_weights):
    """``argparse.Namespace`` (timm's train.py saves one) is on the small allow-list of harmless metadata."""
    path = tmp_path / "train_ckpt.pth"
    torch.save({"state_dict": resnet18_weights, "args": argparse.Namespace(lr=0.1, epochs=90)}, path)
    model = zooadapt.load("resnet18", weights=path)
    assert torch.equal(model.fc.weight, resnet18_weights["fc.weight"])


def test_safetensors_named_pth_is_read_as_safetensors(tmp_path, resnet18_weights):
    path = tmp_path / "actually_safetensors.pth"
    path.write_bytes(safetensors_bytes(resnet18_weights))
    model = zooadapt.load("resnet18", weights=path)
    assert torch.equal(model.bn1.running_var, resnet18_weights["bn1.running_var"])


def test_safetensors_header_claiming_gigabytes_is_refused(tmp_path):
    path = tmp_path / "liar.safetensors"
    path.write_bytes((1 << 31).to_bytes(8, "little") + b'{"a": 1}')
    with pytest.raises(CheckpointFormatError, match="truncated or corrupt"):
        zooadapt.load("resnet18", weights=path)


def test_safetensors_offsets_beyond_the_data_are_refused(tmp_path):
    header = b'{"w":{"dtype":"F32","shape":[1000,1000],"data_offsets":[0,4000000]}}'
    path = tmp_path / "short.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 16)
    with pytest.raises(CheckpointFormatError):
        zooadapt.load("resnet18", weights=path)


def test_checkpoint_without_tensors_lists_its_keys(tmp_path):
    path = tmp_path / "meta_only.pth"
    torch.save({"epoch": 3, "best_acc": 0.5}, path)
    with pytest.raises(CheckpointFormatError, match="'epoch', 'best_acc'"):
        zooadapt.load("resnet18", weights=path)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.pth"
    path.touch()
    with pytest.raises(CheckpointFormatError, match="empty"):
        zooadapt.load("resnet18", weights=path)


@pytest.mark.slow
def test_wrong_family_checkpoint_reports_mismatches_and_coverage(tmp_path):
    from zooadapt.testing import torchvision_state_dict

    path = tmp_path / "mobilenet.safetensors"
    path.write_bytes(safetensors_bytes(torchvision_state_dict("mobilenet_v3_small", seed=3)))
    with pytest.raises(IncompatibleCheckpointError) as info:
        zooadapt.load("resnet18", weights=path, num_classes=5)
    message = str(info.value)
    assert "missing" in message and re.search(r"(covers|fills) 0\.0%", message) and "conv1.weight" in message


def test_wrong_shapes_name_the_first_mismatch_and_never_load_partially(tmp_path, resnet18_weights):
    state = dict(resnet18_weights)
    state["layer3.0.conv1.weight"] = torch.zeros(256, 128, 5, 5)
    path = tmp_path / "reshaped.safetensors"
    path.write_bytes(safetensors_bytes(state))
    with pytest.raises(IncompatibleCheckpointError) as info:
        zooadapt.load("resnet18", weights=path)
    message = str(info.value)
    assert "shape mismatch: checkpoint layer3.0.conv1.weight [256, 128, 5, 5] -> model layer3.0.conv1.weight " \
        "[256, 128, 3, 3]" in message
    assert "1 shape-mismatched" in message and re.search(r"(covers|fills) \d", message)


# -- plugins -----------------------------------------------------------------------------------


def _fake_plugins(monkeypatch, tmp_path: Path, plugins: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Install entry points ``name -> (distribution, module source)``; returns name -> module name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    modules = {}
    for name, (_, source) in plugins.items():
        module = f"zz_{name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{module}.py").write_text(source)
        modules[name] = module
    install_entry_points(monkeypatch, [(name, dist, modules[name]) for name, (dist, _) in plugins.items()])
    reset_plugins()
    return modules


_RAISES_ON_IMPORT = "raise ImportError('needs a library that is not installed')\n"
_EXITS_ON_IMPORT = "import sys\nsys.exit('plugin gave up')\n"
_HOOK_RAISES = """
from zooadapt.plugin_api import hookimpl

@hookimpl
def zooadapt_register_models(register):
    raise RuntimeError('registry service unreachable')
"""
_MISSPELLED = """
from zooadapt.plugin_api import hookimpl

@hookimpl
def zooadapt_regster_models(register):
    pass
"""
_LIST_RAISES = """
from zooadapt.plugin_api import hookimpl

@hookimpl
def zooadapt_list_models(pattern):
    raise KeyError('index corrupt')
"""


def test_plugin_raising_on_import_is_reported_with_its_distribution(monkeypatch, tmp_path):
    _fake_plugins(monkeypatch, tmp_path, {"needs-lib": ("zooadapt-needs-lib", _RAISES_ON_IMPORT)})
    failures = plugin_failures()
    assert [(f.name, f.distribution, f.phase) for f in failures] == [("needs-lib", "zooadapt-needs-lib", "import")]
    assert "not installed" in failures[0].error
    assert "resnet18" in zooadapt.list_models("resnet*")


def test_plugin_calling_sys_exit_on_import_does_not_end_the_host(monkeypatch, tmp_path):
    _fake_plugins(monkeypatch, tmp_path, {"quitter": ("zooadapt-quitter", _EXITS_ON_IMPORT)})
    assert any(f.distribution == "zooadapt-quitter" and "SystemExit" in f.error for f in plugin_failures())
    assert "resnet" in get_registry().families


def test_plugin_raising_in_a_hook_is_reported_with_its_distribution(monkeypatch, tmp_path, caplog):
    _fake_plugins(monkeypatch, tmp_path, {"flaky": ("zooadapt-flaky", _HOOK_RAISES)})
    assert "resnet34" in zooadapt.list_models()
    failure = next(f for f in plugin_failures() if f.name == "flaky")
    assert failure.distribution == "zooadapt-flaky" and failure.phase == "zooadapt_register_models"
    assert "zooadapt-flaky" in caplog.text and "registry service unreachable" in caplog.text


def test_plugin_with_misspelled_hook_is_skipped_not_fatal(monkeypatch, tmp_path):
    _fake_plugins(monkeypatch, tmp_path, {"typo": ("zooadapt-typo", _MISSPELLED)})
    pm = load_plugins()
    assert pm.get_plugin("typo") is None and pm.get_plugin("resnet") is not None
    assert any(f.distribution == "zooadapt-typo" and "zooadapt_regster_models" in f.error for f in plugin_failures())


def test_plugin_raising_while_listing_keeps_listing_working(monkeypatch, tmp_path):
    _fake_plugins(monkeypatch, tmp_path, {"lister": ("zooadapt-lister", _LIST_RAISES)})
    assert "resnet50" in zooadapt.list_models("resnet*")
    assert any(f.distribution == "zooadapt-lister" and f.phase == "zooadapt_list_models" for f in plugin_failures())


def test_allow_list_means_other_plugins_are_never_imported(monkeypatch, tmp_path):
    modules = _fake_plugins(monkeypatch, tmp_path, {"needs-lib": ("zooadapt-needs-lib", _RAISES_ON_IMPORT),
                                                     "flaky": ("zooadapt-flaky", _HOOK_RAISES)})
    monkeypatch.setenv("ZOOADAPT_PLUGINS", "zooadapt-flaky")
    zooadapt.list_models()
    names = {f.name for f in plugin_failures()}
    assert names == {"flaky"}  # needs-lib was not even imported
    assert modules["needs-lib"] not in sys.modules


def test_block_list_by_distribution_name(monkeypatch, tmp_path):
    _fake_plugins(monkeypatch, tmp_path, {"needs-lib": ("zooadapt-needs-lib", _RAISES_ON_IMPORT)})
    monkeypatch.setenv("ZOOADAPT_DISABLE_PLUGINS", "zooadapt-needs-lib")
    assert plugin_failures() == []
    assert "resnet" in get_registry().families


def test_strict_mode_raises_naming_plugin_and_distribution(monkeypatch, tmp_path):
    _fake_plugins(monkeypatch, tmp_path, {"flaky": ("zooadapt-flaky", _HOOK_RAISES)})
    monkeypatch.setenv("ZOOADAPT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r'"flaky" from distribution "zooadapt-flaky"'):
        zooadapt.list_models()

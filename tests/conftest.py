"""Test setup: a loopback Hub for the real huggingface_hub client, and a private cache.

huggingface_hub reads its endpoint and cache location when it is imported, so the
environment is set here, before any test module imports it. Each test gets an empty Hub
cache of its own (``hub_cache``), and the plugin registry is rebuilt for every test.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from zooadapt.testing import LocalHub, hub_environment

_HUB = LocalHub().start()
_HOME = tempfile.mkdtemp(prefix="zooadapt-tests-hf-")
os.environ.update(hub_environment(_HUB.url, _HOME))
os.environ["ZOOADAPT_CACHE"] = os.path.join(_HOME, "zooadapt-cache")  # keep the user's ~/.cache clean
for var in ("HF_HUB_OFFLINE", "HF_TOKEN", "ZOOADAPT_PLUGINS", "ZOOADAPT_DISABLE_PLUGINS", "ZOOADAPT_STRICT_PLUGINS",
            "ZOOADAPT_REGISTRY"):
    os.environ.pop(var, None)


@pytest.fixture(scope="session")
def hub() -> LocalHub:
    """The session's local Hub (content added by tests stays for the session)."""
    return _HUB


@pytest.fixture(autouse=True)
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hub cache for this test, and a fresh plugin registry."""
    from huggingface_hub import constants

    import zooadapt.host.plugin_manager as pm

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    pm.reset_plugins()
    yield cache
    pm.reset_plugins()
    _HUB.faults.clear()


@pytest.fixture(scope="session")
def resnet34_weights(hub: LocalHub):
    """Seeded ResNet-34 weights in torchvision's layout, published as timm/resnet34.tv_in1k."""
    from zooadapt.testing import safetensors_bytes, torchvision_state_dict

    state = torchvision_state_dict("resnet34", seed=34)
    hub.add_file("timm/resnet34.tv_in1k", "model.safetensors", safetensors_bytes(state))
    return state


@pytest.fixture(scope="session")
def resnet18_weights(hub: LocalHub):
    from zooadapt.testing import safetensors_bytes, torchvision_state_dict

    state = torchvision_state_dict("resnet18", seed=18)
    hub.add_file("timm/resnet18.tv_in1k", "model.safetensors", safetensors_bytes(state))
    return state


@pytest.fixture
def registry_model(hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Publish a weights file as a registry model (a ResNet-18) on a Hub repo of its own, and
    move the test into an empty project directory (no lock file yet):
    ``registry_model("lr18", data)`` -> namespace(name, repo, commit, registry, work)."""
    import types
    import uuid

    import zooadapt.host.plugin_manager as pm

    def publish(name: str, data: bytes) -> types.SimpleNamespace:
        repo = f"test/{name}-{uuid.uuid4().hex[:8]}"
        commit = hub.add_file(repo, "model.safetensors", data)
        registry = tmp_path / "registry.toml"
        registry.write_text(f'[models.{name}]\nfamily = "resnet"\narch = "resnet18"\nhub = "{repo}"\n')
        monkeypatch.setenv("ZOOADAPT_REGISTRY", str(registry))
        monkeypatch.delenv("ZOOADAPT_LOCK", raising=False)
        work = tmp_path / "project"
        work.mkdir(exist_ok=True)
        monkeypatch.chdir(work)
        pm.reset_plugins()
        return types.SimpleNamespace(name=name, repo=repo, commit=commit, registry=registry, work=work)

    return publish



_SWEEPS = ("test_sweep_copies.py", "test_sweep_heads.py", "test_identify.py", "test_torchvision_zoo.py",
           "test_feature_info.py")
"""Files whose slow tests are generated sweeps over architectures (marked ``sweep``)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The architecture sweeps are marked ``sweep`` as well as ``slow``: CI runs them once, with
    the current dependencies (``.ci/lowest`` runs the rest of the suite at the floors, where the
    architectures are the same and only the libraries' own behaviour differs)."""
    for item in items:
        if item.path.name in _SWEEPS and item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.sweep)

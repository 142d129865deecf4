"""AlexNet (seed 002): paper-named stages, feature/classifier groups, weights from a URL checked by hash."""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

import zooadapt
from zooadapt.cli import main as cli
from zooadapt.errors import IntegrityError
from zooadapt.plugin_api import get_registry
from zooadapt.testing import seeded_state_dict


def _features_only_weights(seed: int = 2) -> dict[str, torch.Tensor]:
    """Seeded AlexNet conv weights (2.5M parameters; the full 61M would cost the test seconds)."""
    import torchvision.models as tvm

    with torch.device("meta"):
        model = tvm.alexnet()
    return {k: v for k, v in seeded_state_dict(model, seed).items() if k.startswith("features.")}


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def file_server(tmp_path):
    """A plain HTTP server on 127.0.0.1 serving ``tmp_path/www`` (like download.pytorch.org)."""
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def _registry_file(tmp_path: Path, monkeypatch, **entries: dict) -> None:
    lines = []
    for name, table in entries.items():
        lines.append(f"[models.{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    path = tmp_path / "team-registry.toml"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("ZOOADAPT_REGISTRY", str(path))


def test_registry_points_at_torchvisions_file_with_its_hash():
    entry = get_registry().entry("alexnet")
    assert entry.family == "alexnet" and entry.source is not None
    assert entry.source.url == "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
    assert entry.source.sha256 == "7be5be79"


def test_stages_and_groups():
    smap = get_registry().family("alexnet").stage_map()
    assert smap.names == ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
    assert smap.resolve("features") == ("conv1", "conv2", "conv3", "conv4", "conv5")
    assert smap.resolve("classifier") == ("fc6", "fc7") and smap.head == "classifier.6"
    with torch.device("meta"):
        model = get_registry().family("alexnet").build("alexnet", num_classes=10)
    convs = [i for i, m in enumerate(model.features) if isinstance(m, torch.nn.Conv2d)]
    assert [smap.stage_of(f"features.{i}.weight") for i in convs] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    linears = [i for i, m in enumerate(model.classifier) if isinstance(m, torch.nn.Linear)]
    assert [smap.stage_of(f"classifier.{i}.weight") for i in linears] == ["fc6", "fc7", "head"]


@pytest.mark.slow
def test_load_from_url_with_correct_hash_then_freeze_features(tmp_path, monkeypatch, file_server, torch_home):
    root, url = file_server
    weights = _features_only_weights()
    torch.save(weights, root / "alexnet-mirror.pth")
    digest = hashlib.sha256((root / "alexnet-mirror.pth").read_bytes()).hexdigest()
    _registry_file(tmp_path, monkeypatch, alexnet_mirror={
        "family": "alexnet", "arch": "alexnet", "url": f"{url}/alexnet-mirror.pth", "sha256": digest[:8]})

    with pytest.warns(UserWarning, match="not pretrained"):  # fc6 and fc7 hold most of AlexNet's parameters
        model = zooadapt.load("alexnet_mirror", num_classes=10, freeze="features", skip=("classifier",))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    assert (torch_home / "hub" / "checkpoints" / "alexnet-mirror.pth").is_file()
    report = model.zooadapt.report
    assert report.source == f"{url}/alexnet-mirror.pth" and report.frozen == ("conv1", "conv2", "conv3", "conv4",
                                                                              "conv5")
    assert sorted(report.plan.skipped_model_keys) == ["classifier.1.bias", "classifier.1.weight",
                                                      "classifier.4.bias", "classifier.4.weight"]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["classifier.1.weight", "classifier.1.bias", "classifier.4.weight", "classifier.4.bias",
                         "classifier.6.weight", "classifier.6.bias"]
    assert model.classifier[6].out_features == 10


@pytest.mark.slow
def test_wrong_hash_is_refused_and_nothing_is_cached(tmp_path, monkeypatch, file_server, torch_home):
    root, url = file_server
    torch.save(_features_only_weights(), root / "alexnet-tampered.pth")
    _registry_file(tmp_path, monkeypatch, alexnet_tampered={
        "family": "alexnet", "arch": "alexnet", "url": f"{url}/alexnet-tampered.pth", "sha256": "7be5be79"})
    with pytest.raises(IntegrityError, match="sha256"):
        zooadapt.load("alexnet_tampered", num_classes=10)
    checkpoints = torch_home / "hub" / "checkpoints"
    assert not checkpoints.exists() or not any(checkpoints.iterdir())


def test_info_lists_stages_groups_and_hash(capsys):
    assert cli(["info", "alexnet", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in info["stages"]] == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
    assert info["groups"] == {"features": ["conv1", "conv2", "conv3", "conv4", "conv5"], "classifier": ["fc6", "fc7"]}
    assert info["sha256"] == "7be5be79" and info["head"] == "classifier.6"
    assert info["stages"][5]["params"] == 9216 * 4096 + 4096


@pytest.mark.slow
def test_features_only_through_fc6_matches_the_full_model():
    from zooadapt.loading.features import check_features

    diffs = check_features(get_registry().family("alexnet"), "alexnet", out_stages=("conv5", "fc6"))
    assert set(diffs) == {"conv5", "fc6"} and max(diffs.values()) == 0.0

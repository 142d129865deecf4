"""save / load(directory) / push_to_hub: a fine-tuned model comes back bit for bit."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torchvision
from safetensors.torch import load_file

import zooadapt
from zooadapt.contract.errors import CheckpointFormatError, InvalidArgumentError
from zooadapt.plugin_api import get_registry

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _fine_tuned(**kwargs):
    """resnet18 for 5 classes, layer1-2 frozen, after three SGD steps (head, layer3-4 and BN statistics move)."""
    model = zooadapt.load("resnet18", num_classes=5, freeze="layer1-2", **kwargs)
    opt = torch.optim.SGD(zooadapt.param_groups(model, lr=0.05, head_lr=0.1), momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(3):
        x, y = torch.randn(4, 3, 32, 32, generator=gen), torch.randint(0, 5, (4,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def _same_model(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)
    assert [(n, p.requires_grad) for n, p in a.named_parameters()] == \
        [(n, p.requires_grad) for n, p in b.named_parameters()]
    assert [type(m) for m in a.modules()] == [type(m) for m in b.modules()]


@pytest.mark.slow
def test_round_trip_of_a_fine_tuned_model_is_bit_exact(tmp_path, resnet18_weights):
    model = _fine_tuned()
    assert not torch.equal(model.layer4[0].conv1.weight, resnet18_weights["layer4.0.conv1.weight"])
    folder = zooadapt.save(model, tmp_path / "run1")
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "zooadapt.json"]

    back = zooadapt.load(folder)
    _same_model(model, back)
    assert back.fc.out_features == 5 and back.zooadapt.frozen == ("layer1", "layer2")
    for mode in ("eval", "train"):  # train: frozen BatchNorm still uses its statistics, the rest the batch's
        getattr(model, mode)(), getattr(back, mode)()
        with torch.no_grad():
            assert torch.equal(model(X), back(X)), mode
    assert back.layer1[0].bn1.training is False
    report = back.zooadapt.report
    assert report.coverage == 1.0 and not report.plan.dropped and report.frozen == ("layer1", "layer2")


@pytest.mark.slow
def test_config_records_how_to_rebuild(tmp_path, resnet18_weights):
    model = zooadapt.load("resnet18", num_classes=5, freeze="layer1-2")
    config = json.loads((zooadapt.save(model, tmp_path) / "zooadapt.json").read_text())
    assert config["model"] == "resnet18" and config["family"] == "resnet" and config["arch"] == "resnet18"
    assert config["num_classes"] == 5 and config["zooadapt_version"] == zooadapt.__version__
    assert config["base_weights"]["source"] == "hf://timm/resnet18.tv_in1k@main/model.safetensors"
    assert len(config["base_weights"]["revision"]) == 40
    assert config["frozen"] == config["bn_frozen"] == ["layer1", "layer2"] and config["freeze_spec"] == "layer1-2"
    assert config["data"]["mean"] == [0.485, 0.456, 0.406]
    # a reload keeps naming the original weights, so saving again records the same provenance
    again = json.loads((zooadapt.save(zooadapt.load(tmp_path), tmp_path / "2") / "zooadapt.json").read_text())
    assert again["base_weights"] == config["base_weights"]


@pytest.mark.slow
def test_saved_weights_load_into_plain_torchvision(tmp_path):
    model = _fine_tuned(pretrained=False)
    zooadapt.save(model, tmp_path)
    plain = torchvision.models.resnet18(num_classes=5)
    plain.load_state_dict(load_file(tmp_path / "model.safetensors"), strict=True)
    model.eval(), plain.eval()
    assert torch.equal(plain(X), model(X))


@pytest.mark.slow
def test_mixed_batchnorm_policies_come_back(tmp_path):
    model = zooadapt.load("resnet18", num_classes=3, pretrained=False)
    zooadapt.freeze(model, "stem", bn="train")
    zooadapt.freeze(model, "layer2", bn="frozen")
    back = zooadapt.load(zooadapt.save(model, tmp_path))
    back.train()
    assert back.bn1.training and not back.bn1.weight.requires_grad
    assert not back.layer2[0].bn1.training and back.layer1[0].bn1.training
    _same_model(model, back)


@pytest.mark.slow
def test_features_only_backbone_round_trip(tmp_path, resnet18_weights):
    net = zooadapt.load("resnet18", features_only=("layer1", "layer2"), freeze="stem")
    back = zooadapt.load(zooadapt.save(net, tmp_path))
    assert back.out_stages == ("layer1", "layer2") and not hasattr(back, "layer3")
    _same_model(net, back)
    net.eval(), back.eval()
    assert all(torch.equal(a, b) for a, b in zip(net(X), back(X)))


@pytest.mark.slow
def test_half_precision_and_dataparallel_wrapper(tmp_path):
    model = zooadapt.load("resnet18", num_classes=2, pretrained=False).half()
    zooadapt.save(torch.nn.DataParallel(model), tmp_path)
    back = zooadapt.load(tmp_path)
    assert back.fc.weight.dtype == torch.float16
    _same_model(model, back)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_a_low_precision_fine_tune_comes_back_in_its_dtypes(tmp_path, arch, dtype):
    """``load(dtype=...)`` keeps BatchNorm float32 and the rest in ``dtype``; the reload restores
    both, not float32 throughout (the config names the layers' dtype and BatchNorm's apart)."""
    model = zooadapt.load(arch, num_classes=3, pretrained=False, dtype=dtype)
    folder = zooadapt.save(model, tmp_path)
    config = json.loads((folder / "zooadapt.json").read_text())
    assert (config["dtype"], config["norm_dtype"]) == (str(dtype).removeprefix("torch."), "float32")
    _same_model(model, zooadapt.load(folder))


@pytest.mark.slow
def test_new_head_when_asked(tmp_path):
    model = _fine_tuned(pretrained=False)
    back = zooadapt.load(zooadapt.save(model, tmp_path), num_classes=9, freeze="all")
    assert back.fc.out_features == 9 and back.zooadapt.frozen == ("stem", "layer1", "layer2", "layer3", "layer4")
    assert torch.equal(back.layer4[1].conv2.weight, model.layer4[1].conv2.weight)


def test_a_model_changed_after_loading_is_refused(tmp_path):
    model = zooadapt.load("resnet18", num_classes=5, pretrained=False)
    model.fc = torch.nn.Linear(512, 7)
    with pytest.raises(InvalidArgumentError, match=r"fc.weight: saved \[7, 512\], rebuilt \[5, 512\]"):
        zooadapt.save(model, tmp_path)
    assert not (tmp_path / "zooadapt.json").exists()
    with pytest.raises(InvalidArgumentError, match="safetensors.torch.save_model"):
        zooadapt.save(torchvision.models.resnet18(), tmp_path)


def test_broken_saved_directories(tmp_path):
    folder = zooadapt.save(zooadapt.load("resnet18", num_classes=2, pretrained=False), tmp_path / "ok")
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    (bad / "zooadapt.json").write_text('{"format": "something-else"}')
    with pytest.raises(CheckpointFormatError, match="not a zooadapt saved-model config"):
        zooadapt.load(bad)
    (bad / "zooadapt.json").write_text((folder / "zooadapt.json").read_text())
    (bad / "model.safetensors").unlink()
    with pytest.raises(CheckpointFormatError, match="incomplete"):
        zooadapt.load(bad)
    with pytest.raises(InvalidArgumentError, match="carries its own weights"):
        zooadapt.load(folder, weights=folder / "model.safetensors")


@pytest.mark.slow
def test_push_to_hub_uploads_the_saved_files_and_loads_back(monkeypatch, hub, tmp_path):
    from huggingface_hub import HfApi

    calls: dict[str, object] = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs)

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        calls["upload"] = (repo_id, kwargs)
        calls["files"] = {p.name: p.read_bytes() for p in sorted(__import__("pathlib").Path(folder_path).iterdir())}
        return "commit-info"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    model = _fine_tuned(pretrained=False)
    assert zooadapt.push_to_hub(model, "me/resnet18-flowers", private=True) == "commit-info"
    assert calls["create_repo"] == ("me/resnet18-flowers", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert calls["upload"][0] == "me/resnet18-flowers"
    files = calls["files"]
    assert sorted(files) == ["README.md", "model.safetensors", "zooadapt.json"]
    assert b'zooadapt.load("hf://me/resnet18-flowers")' in files["README.md"]

    # what was uploaded loads back from the Hub, bit for bit
    for name, data in files.items():
        hub.add_file("me/resnet18-flowers", name, data)
    back = zooadapt.load("hf://me/resnet18-flowers")
    _same_model(model, back)
    model.eval(), back.eval()
    assert torch.equal(model(X), back(X))


def test_push_to_hub_checks_the_repo_id():
    with pytest.raises(InvalidArgumentError, match="namespace/name"):
        zooadapt.push_to_hub(zooadapt.load("resnet18", num_classes=2, pretrained=False), "no-namespace")


def test_hub_repo_without_a_saved_model_says_how_to_load_it(hub):
    hub.add_file("someone/plain-weights", "model.safetensors", b"not used")
    with pytest.raises(CheckpointFormatError, match="weights='hf://someone/plain-weights/FILE'"):
        zooadapt.load("hf://someone/plain-weights")


@pytest.mark.slow
def test_reload_is_bit_exact_whatever_the_file_layout(tmp_path):
    """Weights at unaligned offsets of the mapped file take other CPU code paths (MobileNet v3's
    squeeze-excitation convs differ by ~2e-7); a reload moves them to aligned memory."""
    pytest.importorskip("timm")
    if "timm" not in get_registry().families:
        pytest.skip("the timm plugin is not installed")
    net = zooadapt.load("mobilenetv3_small_050.lamb_in1k", pretrained=False, features_only=True).eval()
    back = zooadapt.load(zooadapt.save(net, tmp_path)).eval()
    assert all(t.data_ptr() % 64 == 0 for t in [*back.parameters(), *back.buffers()])
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(net(x), back(x)))


@pytest.mark.slow
def test_the_saved_file_with_a_name_is_built_as_the_saved_model_was(tmp_path):
    """A torchvision EfficientNet-B5 file builds timm's network with torchvision's BatchNorm eps
    (its layout says so); saved, the file holds timm's names, which say nothing of the eps. Loaded
    by name from the saved file (or folder), the zooadapt.json beside it gives the build options."""
    source = torchvision.models.efficientnet_b5()
    torch.save(source.state_dict(), tmp_path / "b5.pth")
    model = zooadapt.load("efficientnet_b5", weights=tmp_path / "b5.pth", num_classes=7).eval()
    folder = zooadapt.save(model, tmp_path / "ft")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    for weights in (folder / "model.safetensors", folder):
        back = zooadapt.load("efficientnet_b5", weights=weights).eval()
        assert {m.eps for m in back.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-3}
        assert any("as the saved model beside the file was" in n for n in back.zooadapt.report.plan.notes)
        with torch.no_grad():
            assert torch.equal(back(x), model(x))

"""push_to_hub's model card, read back through huggingface_hub; class names saved and restored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import zooadapt
from zooadapt.contract.errors import InvalidArgumentError
from zooadapt.plugin_api import get_registry

LABELS = ["daisy", "dandelion", "rose", "sunflower", "tulip"]


@pytest.fixture
def uploads(monkeypatch, hub):
    """push_to_hub against the loopback Hub: the upload is captured and published there."""
    from huggingface_hub import HfApi

    done: dict[str, dict[str, bytes]] = {}

    def create_repo(self, repo_id, **kwargs):
        return None

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir() if p.is_file()}
        for name, data in files.items():
            hub.add_file(repo_id, name, data)
        done[repo_id] = files
        return "commit-info"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return done


@pytest.mark.slow
def test_card_metadata_reads_back_through_huggingface_hub(uploads, resnet18_weights):
    from huggingface_hub import ModelCard

    model = zooadapt.load("resnet18", num_classes=5, freeze="layer1-2")
    zooadapt.push_to_hub(model, "me/flowers-r18", labels=LABELS, license="bsd-3-clause", tags=["flowers"])
    card = ModelCard.load("me/flowers-r18")  # hf_hub_download of README.md from the loopback Hub
    data = card.data
    assert data.base_model == "timm/resnet18.tv_in1k"
    assert data.library_name == "zooadapt"
    assert data.license == "bsd-3-clause"
    assert data.pipeline_tag == "image-classification"
    assert {"zooadapt", "image-classification", "resnet", "flowers"} <= set(data.tags)
    text = card.text
    assert "freeze spec: `'layer1-2'`; frozen stages: layer1, layer2" in text
    assert "base weights: hf://timm/resnet18.tv_in1k@main/model.safetensors" in text
    assert "`daisy`, `dandelion`, `rose`, `sunflower`, `tulip`" in text
    assert str(model.zooadapt.report).splitlines()[0] in text  # the load report
    assert 'zooadapt.load("hf://me/flowers-r18")' in text

    back = zooadapt.load("hf://me/flowers-r18")
    assert back.zooadapt.labels == tuple(LABELS)
    assert zooadapt.frozen_stages(back) == ("layer1", "layer2")


@pytest.mark.slow
def test_a_headless_model_without_hub_weights_gets_no_base_model(uploads, tmp_path):
    from huggingface_hub import ModelCard

    net = zooadapt.load("resnet18", pretrained=False, features_only=True)
    zooadapt.push_to_hub(net, "me/r18-features")
    data = ModelCard.load("me/r18-features").data
    assert data.base_model is None and data.license is None
    assert data.pipeline_tag == "image-feature-extraction"
    with pytest.raises(InvalidArgumentError, match="has none"):
        zooadapt.save(net, tmp_path / "x", labels=["a"])


@pytest.mark.slow
def test_labels_are_saved_and_come_back(tmp_path):
    model = zooadapt.load("resnet18", num_classes=3, pretrained=False)
    folder = zooadapt.save(model, tmp_path / "m", labels=["cat", "dog", "fox"])
    assert json.loads((folder / "zooadapt.json").read_text())["labels"] == ["cat", "dog", "fox"]
    assert model.zooadapt.labels == ("cat", "dog", "fox")
    back = zooadapt.load(folder)
    assert back.zooadapt.labels == ("cat", "dog", "fox")
    again = zooadapt.save(back, tmp_path / "again")  # labels travel with the model
    assert json.loads((again / "zooadapt.json").read_text())["labels"] == ["cat", "dog", "fox"]
    plain = zooadapt.save(zooadapt.load("resnet18", num_classes=3, pretrained=False), tmp_path / "plain")
    assert json.loads((plain / "zooadapt.json").read_text())["labels"] is None
    assert zooadapt.load(plain).zooadapt.labels is None


@pytest.mark.slow
def test_labels_from_an_image_folder(tmp_path):
    from torchvision.datasets import ImageFolder

    root = tmp_path / "images"
    for name in ("tulip", "daisy", "rose"):
        (root / name).mkdir(parents=True)
        (root / name / "0.png").write_bytes(b"")  # ImageFolder lists files; it opens them only when indexed
    dataset = ImageFolder(root)
    model = zooadapt.load("resnet18", num_classes=len(dataset.classes), pretrained=False)
    back = zooadapt.load(zooadapt.save(model, tmp_path / "m", labels=dataset))
    assert back.zooadapt.labels == ("daisy", "rose", "tulip") == tuple(dataset.classes)


@pytest.mark.parametrize("labels, words", [
    (["a", "b"], "2 names for a 3-class head"),
    (["a", "b", "a"], "more than once"),
    (["a", "", "c"], "non-empty string"),
    (["a", 2, "c"], "non-empty string"),
    ("abc", "list of strings"),
    (42, "list of strings"),
])
@pytest.mark.slow
def test_bad_labels_are_refused(tmp_path, labels, words):
    model = zooadapt.load("resnet18", num_classes=3, pretrained=False)
    with pytest.raises(InvalidArgumentError, match=words):
        zooadapt.save(model, tmp_path / "m", labels=labels)
    assert not (tmp_path / "m" / "zooadapt.json").exists()


@pytest.mark.slow
def test_a_timm_classifier_also_loads_with_timm_alone(uploads):
    """timm's config.json goes up with it: library_name timm, and timm.create_model('hf-hub:…') rebuilds it."""
    timm = pytest.importorskip("timm")
    import torch
    from huggingface_hub import ModelCard

    if "timm" not in get_registry().families:
        pytest.skip("the timm plugin is not installed")
    model = zooadapt.load("convnext_atto.d2_in1k", num_classes=3, pretrained=False, freeze="stem").eval()
    zooadapt.push_to_hub(model, "me/atto-3", labels=["a", "b", "c"])
    assert json.loads(uploads["me/atto-3"]["config.json"])["label_names"] == ["a", "b", "c"]
    card = ModelCard.load("me/atto-3")
    assert card.data.library_name == "timm" and "zooadapt" in card.data.tags
    assert 'timm.create_model("hf-hub:me/atto-3", pretrained=True)' in card.text
    plain = timm.create_model("hf-hub:me/atto-3", pretrained=True).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(plain(x), model(x))


@pytest.mark.slow
def test_labels_stay_behind_when_the_head_changes(tmp_path):
    model = zooadapt.load("resnet18", num_classes=3, pretrained=False)
    folder = zooadapt.save(model, tmp_path / "m", labels=["cat", "dog", "fox"])
    wider = zooadapt.load(folder, num_classes=4)  # fine-tuned further, with another class count
    again = zooadapt.save(wider, tmp_path / "wider")
    assert json.loads((again / "zooadapt.json").read_text())["labels"] is None

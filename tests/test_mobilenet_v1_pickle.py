"""MobileNet v1 has one class (made on first use, so listing models stays torch-free): models of it
pickle whole (``torch.save(model)``, multiprocessing) and ``isinstance`` holds across models."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys

import torch

import zooadapt


def _v1(classes: int = 3) -> torch.nn.Module:
    return zooadapt.load("mobilenet_v1", num_classes=classes, pretrained=False)


def test_two_builds_share_one_class_named_at_module_level():
    import zooadapt.plugins.mobilenet as plugin

    a, b = _v1(), _v1(5)
    assert type(a) is type(b) and isinstance(b, type(a))
    assert type(a) is plugin.MobileNetV1
    assert (type(a).__module__, type(a).__qualname__) == ("zooadapt.plugins.mobilenet", "MobileNetV1")


def test_a_model_round_trips_through_torch_save():
    model = _v1().eval()
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    back = torch.load(buffer, weights_only=False)
    assert type(back) is type(model)
    assert back.zooadapt.name == "mobilenet_v1"
    saved, loaded = model.state_dict(), back.state_dict()
    assert list(saved) == list(loaded) and all(torch.equal(saved[k], loaded[k]) for k in saved)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), back(x))
    assert type(pickle.loads(pickle.dumps(model))) is type(model)


def test_listing_models_still_imports_no_torch():
    code = ("import sys, zooadapt, zooadapt.plugins.mobilenet\n"
            "names = zooadapt.list_models()\n"
            "assert 'mobilenet_v1' in [getattr(n, 'name', n) for n in names], names\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

"""Files that are not a checkpoint of named tensors, or hold one in an unusual form: each is read
exactly or refused with what it is and how to get one.

Before: a pickled ``torch.fx`` GraphModule was "a tuple, not a state dict"; a ``torch.export``
program "truncated or corrupt"; an ONNX or Keras file "truncated, corrupt or another format"; a
complex tensor was refused as "a quantized checkpoint's int8 codes"; a BatchNorm-folded export
"saved from a truncated or changed network". (``weights=`` a state dict in memory now loads:
test_in_memory_weights.py.)
"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
import torchvision

import zooadapt
from zooadapt.errors import CheckpointFormatError, IncompatibleCheckpointError


def _resnet18(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(num_classes=5).eval()


def test_a_pickled_fx_graph_module_loads_without_running_its_code(tmp_path):
    """``torch.save(symbolic_trace(model))`` pickles ``reduce_graph_module(body, import_block)``,
    which regenerates the module's Python code; the tensors are in ``body``, read as data."""
    source = _resnet18()
    torch.save(torch.fx.symbolic_trace(source), tmp_path / "traced.pth")
    model = zooadapt.load("resnet18", weights=tmp_path / "traced.pth").eval()
    assert "read without running its code" in str(model.zooadapt.report)
    assert "torch.fx.graph_module.reduce_graph_module" in str(model.zooadapt.report)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x))


@pytest.mark.slow
def test_a_torch_export_program_is_named_with_the_way_to_its_state_dict(tmp_path):
    source = _resnet18()
    program = torch.export.export(source, (torch.randn(1, 3, 64, 64),))
    torch.export.save(program, str(tmp_path / "model.pt2"))
    with pytest.raises(CheckpointFormatError, match=r"torch\.export program.*ep\.module\(\)\.state_dict\(\)"):
        zooadapt.load("resnet18", weights=tmp_path / "model.pt2")


def test_an_npz_archive_is_named_with_timms_reader(tmp_path):
    np.savez(tmp_path / "vit.npz", **{"Transformer/encoder_norm/scale": np.ones(8, dtype=np.float32)})
    with pytest.raises(CheckpointFormatError, match=r"NumPy archive.*pretrained_cfg_overlay"):
        zooadapt.load("resnet18", weights=tmp_path / "vit.npz")


@pytest.mark.parametrize(("name", "head", "said"), [
    ("model.onnx", b"\x08\x08\x12\x07pytorch", "ONNX model"),
    ("exported.bin", b"\x08\x07\x12\x07pytorch", "ONNX model"),  # by its first fields, whatever its name
    ("model.h5", b"\x89HDF\r\n\x1a\n\x00\x00", "HDF5 file"),
])
def test_another_frameworks_model_file_is_named(tmp_path, name, head, said):
    (tmp_path / name).write_bytes(head + bytes(64))
    with pytest.raises(CheckpointFormatError, match=said):
        zooadapt.load("resnet18", weights=tmp_path / name)


def test_a_complex_tensor_is_refused_as_complex(tmp_path):
    state = _resnet18().state_dict()
    state["conv1.weight"] = state["conv1.weight"].to(torch.complex64)
    torch.save(state, tmp_path / "complex.pth")
    with pytest.raises(IncompatibleCheckpointError, match="imaginary part") as refused:
        zooadapt.load("resnet18", weights=tmp_path / "complex.pth")
    assert "int8" not in str(refused.value)


@pytest.mark.slow
def test_a_batchnorm_folded_export_is_said_to_be_one(tmp_path):
    source = _resnet18()
    from torch.fx.experimental.optimization import fuse

    fused = fuse(source)
    torch.save(fused.state_dict(), tmp_path / "fused.pth")
    with pytest.raises(IncompatibleCheckpointError, match=r"20 BatchNorm layers are missing and 20 convolutions carry "
                                                          r"a bias.*saved before fusing"):
        zooadapt.load("resnet18", weights=tmp_path / "fused.pth")


def test_a_parametrized_buffer_is_refused_naming_its_own_name(tmp_path):
    class Softplus(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.softplus(x)

    source = _resnet18()
    torch.nn.utils.parametrize.register_parametrization(source.bn1, "running_var", Softplus(), unsafe=True)
    torch.save(source.state_dict(), tmp_path / "parametrized.pth")
    with pytest.raises(IncompatibleCheckpointError, match=r"remove_parametrizations\(module, 'running_var'\)"):
        zooadapt.load("resnet18", weights=tmp_path / "parametrized.pth")


def test_a_zip_that_is_neither_is_still_read_as_torch_saves(tmp_path):
    """The archive checks look at names only: ``torch.save``'s own zip still loads."""
    torch.save(_resnet18().state_dict(), tmp_path / "plain.pth")
    assert zipfile.is_zipfile(tmp_path / "plain.pth")
    assert zooadapt.load("resnet18", weights=tmp_path / "plain.pth").zooadapt.num_classes == 5


@pytest.mark.slow  # a file that fits nothing is diagnosed against every architecture of the signature index
@pytest.mark.parametrize("odd", [
    lambda k: k + "\u00a0" if k == "bn1.weight" else k,  # one key with a no-break space
    lambda k: k.replace("weight", "w\u200beight") if k == "bn1.weight" else k,  # a zero-width space
    lambda k: k + " ",  # every key written with a trailing space (100 of them a model key, less the head's)
], ids=["no-break-space", "zero-width-space", "every-key"])
def test_keys_that_only_look_like_the_models_are_shown_as_they_are(tmp_path, odd):
    """Before: "missing from checkpoint: bn1.weight" and nothing to see why."""
    state = {odd(k): v for k, v in _resnet18().state_dict().items()}
    torch.save(state, tmp_path / "odd.pth")
    odd_keys = [k for k in state if k not in _resnet18().state_dict()]
    count = 1 if len(odd_keys) == 1 else 100
    with pytest.raises(IncompatibleCheckpointError, match=rf"{count} of the file's keys are the model's but for "
                                                          r"characters") as refused:
        zooadapt.load("resnet18", weights=tmp_path / "odd.pth")
    assert repr(odd_keys[0]) in str(refused.value)
    assert "truncated or changed network" not in str(refused.value)


def test_parameters_saved_as_views_of_one_buffer_come_back_each_in_its_own(tmp_path):
    """A model whose parameters were views of one flat buffer (an optimizer's flattened params,
    apex's or FSDP1's flat parameters) saves that buffer once: before, the first loaded tensor kept
    the whole buffer alive, and saving the loaded model wrote it twice."""
    source = _resnet18()
    state = source.state_dict()
    flat = torch.empty(sum(t.numel() for t in state.values() if t.is_floating_point()))
    viewed, offset = {}, 0
    for key, tensor in state.items():
        if tensor.is_floating_point():
            view = flat[offset:offset + tensor.numel()].view_as(tensor)
            view.copy_(tensor)
            viewed[key], offset = view, offset + tensor.numel()
        else:
            viewed[key] = tensor
    torch.save(viewed, tmp_path / "flat.pth")
    model = zooadapt.load("resnet18", weights=tmp_path / "flat.pth").eval()
    for key, tensor in model.state_dict().items():
        assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size(), key
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x))


def _qat_resnet18(fused: bool) -> torch.nn.Module:
    """torchvision's quantizable ResNet-18 prepared for quantization-aware training, as its docs do."""
    import torch.ao.quantization as tq
    from torchvision.models.quantization import resnet18

    torch.manual_seed(0)
    model = resnet18(quantize=False, num_classes=5).train()
    if fused:
        model.eval()
        model.fuse_model(is_qat=True)
        model.train()
    model.qconfig = tq.get_default_qat_qconfig("fbgemm")
    tq.prepare_qat(model, inplace=True)
    model(torch.randn(2, 3, 64, 64))  # the observers see data
    return model.eval()


@pytest.mark.slow
def test_a_qat_model_loads_its_float_weights_and_says_it_does_not_fake_quantize(tmp_path):
    source = _qat_resnet18(fused=False)
    torch.save(source.state_dict(), tmp_path / "qat.pth")
    model = zooadapt.load("resnet18", weights=tmp_path / "qat.pth")
    note = next(n for n in model.zooadapt.report.plan.notes if "quantization-aware training" in n)
    assert "computes without fake quantization" in note
    for key, value in model.state_dict().items():  # the float weights are the file's
        assert torch.equal(value, source.state_dict()[key].to(value.dtype)), key


@pytest.mark.slow
def test_a_fused_qat_model_is_refused_as_one(tmp_path):
    torch.save(_qat_resnet18(fused=True).state_dict(), tmp_path / "qat_fused.pth")
    with pytest.raises(IncompatibleCheckpointError, match=r"quantization-aware training.*fused for quantization"):
        zooadapt.load("resnet18", weights=tmp_path / "qat_fused.pth")

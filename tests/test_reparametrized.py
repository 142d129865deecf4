"""Checkpoints of pruned, weight-normalised and spectrally normalised models load as the plain
weights their model computed with.

Before, a ResNet pruned with ``torch.nn.utils.prune`` (``conv1.weight_orig`` + ``weight_mask``)
was refused as filling 0.1% of the backbone, and one whose classifier was weight-normalised
(``fc.parametrizations.weight.original0``/``original1``) reloaded with a random head beside the
file's own bias. Each case here makes the reparametrized model with torch's own functions,
saves it as users do, loads it, and compares with what torch's own removal functions
(``prune.remove``, ``remove_weight_norm``, ``remove_spectral_norm``,
``parametrize.remove_parametrizations``) leave: the oracle is torch, not zooadapt's formulas.

The generator sweeps kinds x architectures (torchvision and timm) x file forms x heads; the
fast subset takes each kind, each architecture and each form once.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file
from torch.nn.utils import parametrizations, parametrize, prune

import zooadapt
from zooadapt.errors import IncompatibleCheckpointError

CLASSES = 7  # the source model's own head: num_classes=None keeps it

ARCHS: dict[str, Callable[[], nn.Module]] = {
    "resnet18": lambda: torchvision.models.resnet18(num_classes=CLASSES),
    "mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(num_classes=CLASSES),
    "test_vit": lambda: timm.create_model("test_vit", num_classes=CLASSES),
    "test_convnext": lambda: timm.create_model("test_convnext", num_classes=CLASSES),
}
INPUT = {"test_vit": 160}


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _some(model: nn.Module, rng: random.Random, share: float) -> list[tuple[str, nn.Module]]:
    """A random share of the model's convolutions and linear layers, the classifier always among them."""
    layers = _layers(model)
    chosen = [item for item in layers[:-1] if rng.random() < share]
    return [*chosen, layers[-1]]


def _train_steps(model: nn.Module, size: int, steps: int = 2) -> None:
    """Power iterations and optimizer steps as training leaves them: the saved ``u``/``v`` are from
    the forward before the last step, so they do not match the final weights exactly."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            model(torch.randn(2, 3, size, size)).square().mean().backward()
            optimizer.step()


def _reparametrize(model: nn.Module, kind: str, rng: random.Random, size: int) -> list[Callable[[nn.Module], None]]:
    """Apply ``kind`` to some of ``model``'s layers; returns torch's own calls that remove it again,
    each taking the model and finding its module by name (run once the file is saved)."""
    undo: list[Callable[[nn.Module], None]] = []
    chosen = _some(model, rng, 0.6)

    def on(name: str, fn: Callable[[nn.Module], object]) -> Callable[[nn.Module], None]:
        def remove(owner: nn.Module) -> None:
            fn(owner.get_submodule(name))

        return remove

    if kind == "pruned":
        for name, module in chosen:
            prune.l1_unstructured(module, "weight", amount=rng.choice([0.2, 0.5, 0.9]))
            undo.append(on(name, lambda m: prune.remove(m, "weight")))
            if module.bias is not None and rng.random() < 0.5:  # a pruned bias: bias_orig, bias_mask
                prune.random_unstructured(module, "bias", amount=0.3)
                undo.append(on(name, lambda m: prune.remove(m, "bias")))
    elif kind == "pruned_global":
        params = [(module, "weight") for _, module in chosen]
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=0.4)
        undo += [on(name, lambda m: prune.remove(m, "weight")) for name, _ in chosen]
    elif kind in ("weight_norm", "weight_norm_whole"):
        dim = 0 if kind == "weight_norm" else None
        for name, module in chosen:
            torch.nn.utils.weight_norm(module, dim=dim)
            undo.append(on(name, torch.nn.utils.remove_weight_norm))
    elif kind in ("parametrized_weight_norm", "parametrized_weight_norm_dim1"):
        dim = 0 if kind == "parametrized_weight_norm" else 1
        for name, module in chosen:
            parametrizations.weight_norm(module, dim=dim)
            undo.append(on(name, lambda m: parametrize.remove_parametrizations(m, "weight")))
    elif kind == "spectral_norm":
        for name, module in chosen:
            torch.nn.utils.spectral_norm(module)
            undo.append(on(name, torch.nn.utils.remove_spectral_norm))
        _train_steps(model, size)
    elif kind == "parametrized_spectral_norm":
        for name, module in chosen:
            parametrizations.spectral_norm(module)
            undo.append(on(name, lambda m: parametrize.remove_parametrizations(m, "weight")))
        _train_steps(model, size)
    elif kind == "mixed":  # one file, three kinds
        for number, (name, module) in enumerate(chosen):
            if number % 3 == 0:
                prune.l1_unstructured(module, "weight", amount=0.5)
                undo.append(on(name, lambda m: prune.remove(m, "weight")))
            elif number % 3 == 1:
                parametrizations.weight_norm(module)
                undo.append(on(name, lambda m: parametrize.remove_parametrizations(m, "weight")))
            else:
                torch.nn.utils.spectral_norm(module)
                undo.append(on(name, torch.nn.utils.remove_spectral_norm))
        _train_steps(model, size)
    else:
        raise AssertionError(kind)
    return undo


KINDS = ("pruned", "pruned_global", "weight_norm", "weight_norm_whole", "parametrized_weight_norm",
         "parametrized_weight_norm_dim1", "spectral_norm", "parametrized_spectral_norm", "mixed")
FORMS = ("pth", "safetensors", "module.", "training checkpoint")


def reparametrized_file(tmp: Path, arch: str, kind: str, form: str, seed: int
                        ) -> tuple[Path, dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(the saved file, the plain state dict torch's removal gives, an input and the saved model's
    output for it in eval)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = ARCHS[arch]()
    size = INPUT.get(arch, 64)
    with torch.no_grad():  # the weights the hooks compute stay graph leaves, so the model can be copied
        undo = _reparametrize(model, kind, rng, size)
        x = torch.randn(2, 3, size, size)
        y = model.eval()(x)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    for call in undo:  # on the model itself: a copy of a parametrized module shares its class
        call(model)
    expected = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert any(k.endswith(("_orig", "_g", "original0", "original")) for k in state), "nothing reparametrized"
    path = tmp / f"{arch}-{kind}-{seed}.{'safetensors' if form == 'safetensors' else 'pth'}"
    if form == "safetensors":
        save_file(state, path)
    elif form == "module.":  # DataParallel / DDP
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    elif form == "training checkpoint":
        torch.save({"epoch": 3, "state_dict": state, "best_acc1": 0.5}, path)
    else:
        torch.save(state, path)
    return path, expected, (x, y)


def assert_plain(model: nn.Module, expected: dict[str, torch.Tensor], new_head: bool) -> None:
    state = model.state_dict()
    head = {k for k in state if state[k].shape != expected.get(k, state[k]).shape} if new_head else set()
    assert set(state) == set(expected)
    for key, value in state.items():
        if key not in head:
            torch.testing.assert_close(value, expected[key], rtol=1e-6, atol=1e-7, msg=key)


def _cases(full: bool) -> list[tuple[str, str, str, bool]]:
    if full:
        return [(a, k, f, h) for a, k, f, h in itertools.product(ARCHS, KINDS, FORMS, (False, True))]
    # one case per file form, with the kinds torch users meet most (the sweep takes the rest)
    return [("resnet18", "pruned", "pth", True), ("resnet18", "parametrized_weight_norm", "safetensors", False),
            ("resnet18", "spectral_norm", "module.", False), ("resnet18", "mixed", "training checkpoint", False)]


def _check(tmp_path: Path, arch: str, kind: str, form: str, new_head: bool) -> None:
    seed = sum(map(ord, arch + kind + form))
    path, expected, (x, y) = reparametrized_file(tmp_path, arch, kind, form, seed)
    loaded = zooadapt.load(arch, weights=path, num_classes=3 if new_head else None)
    report = loaded.zooadapt.report
    assert any("folded" in note and "reparametrized" in note for note in report.plan.notes), report.plan.notes
    assert not report.plan.unexpected, [m.checkpoint_key for m in report.plan.unexpected]
    assert_plain(loaded, expected, new_head)
    if not new_head:  # the file's own head kept: the same outputs as the saved model
        with torch.no_grad():
            torch.testing.assert_close(loaded.eval()(x), y, rtol=1e-4, atol=1e-5)
    else:
        assert loaded.zooadapt.num_classes == 3


@pytest.mark.parametrize(("arch", "kind", "form", "new_head"), _cases(full=False))
def test_reparametrized_file_loads_as_its_plain_weights(tmp_path, arch, kind, form, new_head):
    _check(tmp_path, arch, kind, form, new_head)


@pytest.mark.slow
@pytest.mark.sweep
@pytest.mark.parametrize(("arch", "kind", "form", "new_head"),
                         [c for c in _cases(full=True) if c not in _cases(full=False)])
def test_reparametrized_sweep(tmp_path, arch, kind, form, new_head):
    _check(tmp_path, arch, kind, form, new_head)


@pytest.mark.slow  # the signature index's first read
def test_a_pruned_file_is_identified_and_loads_without_a_name(tmp_path):
    path, expected, _ = reparametrized_file(tmp_path, "resnet18", "pruned", "pth", seed=5)
    assert zooadapt.identify(path).best.name == "resnet18"
    loaded = zooadapt.load(weights=path)
    assert loaded.zooadapt.arch == "resnet18"
    assert_plain(loaded, expected, new_head=False)


@pytest.mark.slow
def test_your_own_pruned_model_takes_the_file_as_it_is(tmp_path):
    """A kind the model uses itself is not folded: the mask stays a mask."""
    path, _, _ = reparametrized_file(tmp_path, "resnet18", "pruned", "pth", seed=6)
    saved = torch.load(path)
    target = torchvision.models.resnet18(num_classes=CLASSES)
    for name, module in _layers(target):
        if f"{name}.weight_orig" in saved:
            prune.identity(module, "weight")
        if f"{name}.bias_orig" in saved:
            prune.identity(module, "bias")
    report = zooadapt.load_weights(target, path)
    assert not any("folded" in note for note in report.plan.notes)
    assert target.state_dict().keys() == saved.keys()
    for key, value in target.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_spectral_norm_of_a_square_transposed_convolution_is_taken_over_its_input_dimension(tmp_path):
    """A square kernel fits both dimensions by shape; torch normalises a ConvTranspose over
    dimension 1 and a Conv over 0, and so does the fold (the wrong one gives another sigma)."""
    torch.manual_seed(0)

    def net() -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ConvTranspose2d(8, 8, 3), nn.Conv2d(8, 8, 3))

    model = net()
    for module in model:
        torch.nn.utils.spectral_norm(module)
    _train_steps(model, 16, steps=3)
    model.eval()
    torch.save(model.state_dict(), tmp_path / "sn.pth")
    saved = model.state_dict()
    over_dim_0 = saved["1.weight_orig"] / torch.dot(saved["1.weight_u"],
                                                   saved["1.weight_orig"].flatten(1).mv(saved["1.weight_v"]))
    for module in model:
        torch.nn.utils.remove_spectral_norm(module)
    target = net()
    report = zooadapt.load_weights(target, tmp_path / "sn.pth")
    assert any("3 spectrally normalised" in note for note in report.plan.notes), report.plan.notes
    for key, value in target.state_dict().items():
        torch.testing.assert_close(value, model.state_dict()[key], rtol=1e-6, atol=1e-7, msg=key)
    assert not torch.allclose(target[1].weight, over_dim_0)  # the other dimension gives another weight


def test_a_parametrization_it_cannot_evaluate_is_refused_naming_the_fix(tmp_path):
    model = torchvision.models.resnet18()
    parametrizations.orthogonal(model.fc)
    torch.save(model.state_dict(), tmp_path / "orthogonal.pth")
    refusal = r"fc\.parametrizations\.weight\.original.*remove_parametrizations"
    with pytest.raises(IncompatibleCheckpointError, match=refusal):
        zooadapt.load("resnet18", weights=tmp_path / "orthogonal.pth")


@pytest.mark.slow
def test_a_group_missing_a_part_is_not_folded(tmp_path):
    """``weight_orig`` without its mask is no pruned tensor: nothing is made up, the load is refused."""
    path, _, _ = reparametrized_file(tmp_path, "resnet18", "pruned", "pth", seed=7)
    state = torch.load(path)
    del state["conv1.weight_mask"]
    torch.save(state, tmp_path / "torn.pth")
    with pytest.raises(IncompatibleCheckpointError, match="conv1"):
        zooadapt.load("resnet18", weights=tmp_path / "torn.pth")


def test_a_meta_load_plans_the_folded_shapes_without_values(tmp_path):
    path, expected, _ = reparametrized_file(tmp_path, "resnet18", "weight_norm", "safetensors", seed=8)
    model = zooadapt.load("resnet18", weights=path, device="meta")
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape)
                                                                           for k, v in expected.items()}

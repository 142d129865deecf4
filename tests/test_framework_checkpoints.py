"""Checkpoints as real training frameworks write them, each built with the framework's own saving code.

Each case writes a seeded network the way one framework's source does (the repository and file
are named beside it), then loads it with and without ``num_classes`` and compares every tensor
with what the framework would evaluate. The ones that failed before:

* MMEngine's ``EMAHook`` swaps its average into ``state_dict`` on save and leaves the live
  weights in ``ema_state_dict``: zooadapt took ``ema_state_dict`` by its name, loading the live
  weights as "EMA weights" (silently the wrong tensors).
* Composer keeps the model under ``state`` and was refused ("holds no tensors"); its ``rng`` (numpy's
  ``uint32`` RNG key) could not be read without ``trusted=True``.
* VISSL nests its trunk and heads under ``classy_state_dict`` and was refused.

The rest (torchvision's and pytorch/examples' reference scripts, the Hugging Face Trainer's
folders, Ignite, ConvNeXt/DeiT's official ``model_ema``, SwAV) loaded right and stay pinned here.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file

import zooadapt
from zooadapt.errors import InvalidArgumentError

BN_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def seeded(seed: int, arch: str = "resnet18", **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return getattr(torchvision.models, arch)(**kwargs)


def shifted(state: dict[str, torch.Tensor], by: float) -> dict[str, torch.Tensor]:
    """Other values for every floating tensor (an average that differs from the live weights)."""
    return {k: v + by if v.is_floating_point() else v.clone() for k, v in state.items()}


def assert_loaded(model: nn.Module, expected: dict[str, torch.Tensor], *, head: tuple[str, ...] = ()) -> None:
    """Every tensor of the model but ``head`` is the expected one (cast to the model's dtype: a
    float16 file loads into float32 exactly); ``head`` is what a new head replaced."""
    state = model.state_dict()
    assert set(state) - set(head) <= set(expected), sorted(set(state) - set(expected))[:5]
    for key, value in state.items():
        if key in head:
            continue
        assert torch.equal(value, expected[key].to(value.dtype)), key


def differ(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point() and not k.endswith(BN_STATISTICS))


# -- MMEngine / mmpretrain: EMAHook swaps the average into state_dict -------------------------------


class BaseAveragedModel(nn.Module):
    """MMEngine's ``BaseAveragedModel`` as it is saved (open-mmlab/mmengine,
    mmengine/model/averaged_model.py): the averaged copy as ``self.module``, and a ``steps`` buffer."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long))


def mmengine_checkpoint(model_state: dict[str, torch.Tensor], ema: nn.Module | None, path: Path,
                        *, meta: bool = True) -> Path:
    """``Runner.save_checkpoint`` (mmengine/runner/runner.py): ``meta``, ``state_dict``,
    ``message_hub``, ``optimizer``, ``param_schedulers``, then the ``before_save_checkpoint`` hook:
    ``EMAHook`` (mmengine/hooks/ema_hook.py) stores ``ema_model.state_dict()`` as ``ema_state_dict``
    and swaps every ``module.`` tensor with the model's (``_swap_ema_state_dict``)."""
    checkpoint: dict = {
        "meta": {"epoch": 3, "iter": 120, "seed": 0, "experiment_name": "x", "mmengine_version": "0.10.7",
                 "dataset_meta": {"classes": ("a", "b")}},
        "state_dict": dict(model_state),
        "message_hub": {"log_scalars": {}, "runtime_info": {"epoch": 3}, "resumed_keys": {"epoch": True}},
        "optimizer": {"state": {}, "param_groups": []},
        "param_schedulers": [{"last_epoch": 3}],
    }
    if not meta:
        del checkpoint["meta"], checkpoint["message_hub"]
    if ema is not None:
        checkpoint["ema_state_dict"] = ema.state_dict()
        model_part, ema_part = checkpoint["state_dict"], checkpoint["ema_state_dict"]
        for k in ema_part:
            if k[:7] == "module.":
                tmp = ema_part[k]
                ema_part[k] = model_part[k[7:]]
                model_part[k[7:]] = tmp
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def mmengine_run(tmp_path_factory) -> tuple[Path, dict, dict]:
    """A ResNet-18 and its EMA after 7 steps, saved by the hook: (path, live weights, average)."""
    model = seeded(1)
    ema = BaseAveragedModel(model)
    with torch.no_grad():
        for p in ema.module.parameters():
            p.add_(0.25)
        ema.steps += 7
    live, average = copy.deepcopy(model.state_dict()), copy.deepcopy(ema.module.state_dict())
    assert differ(live, average)
    path = mmengine_checkpoint(model.state_dict(), ema, tmp_path_factory.mktemp("mmengine") / "epoch_3.pth")
    return path, live, average


def test_mmengine_ema_hook_loads_the_average_it_swapped_into_state_dict(mmengine_run):
    """The hook swaps the average into ``state_dict`` "so that we can directly load the averaged
    model weights for deployment": that is what loads by default, named as the EMA set, and never
    the live weights it left under the EMA's name (``ema_state_dict``) as zooadapt once did."""
    path, _, average = mmengine_run
    model = zooadapt.load("resnet18", weights=path)
    assert_loaded(model, average)
    report = str(model.zooadapt.report)
    assert "'state_dict' (EMA weights)" in report and "MMEngine's EMAHook" in report
    assert "'ema_state_dict' (use_ema=False)" in report


def test_mmengine_ema_hook_live_weights_with_use_ema_false(mmengine_run):
    """``use_ema=False`` rebuilds the live weights from ``ema_state_dict`` (its ``module.`` keys,
    without the ``steps`` counter), exactly."""
    path, live, _ = mmengine_run
    model = zooadapt.load("resnet18", weights=path, use_ema=False)
    assert_loaded(model, live)
    report = str(model.zooadapt.report)
    assert "'ema_state_dict' (live weights)" in report and "unused" not in report  # no stray 'steps' counter


def test_numpy_rng_state_beside_the_weights_reads_without_trusted(mmengine_run, tmp_path):
    """Checkpoints that save RNG states hold ``np.random.get_state()`` (Composer's ``rng``, the HF
    Trainer's ``rng_state.pth``): its ``uint32`` dtype was refused by the safe reader, so such a
    file needed ``trusted=True``; now it reads, the array an inert stand-in."""
    _, state, _ = mmengine_run
    torch.save({"model": state, "rng": {"python": random.getstate(), "numpy": np.random.get_state(),
                                        "torch": torch.random.get_rng_state()}}, tmp_path / "ck.pt")
    assert_loaded(zooadapt.load("resnet18", weights=tmp_path / "ck.pt"), state)


MMPRETRAIN_CASES = [("torchvision", torch.float32, False), ("mmpretrain", torch.bfloat16, True),
                    ("torchvision", torch.float16, True)]


@pytest.mark.slow
@pytest.mark.parametrize("layout,dtype,reverse", MMPRETRAIN_CASES)
def test_mmengine_ema_hook_neighbours(tmp_path, layout, dtype, reverse):
    """The hook's checkpoint of an mmpretrain ``ImageClassifier`` (``backbone.`` + ``head.fc.``) or a
    plain network, in half precision, keys in reverse order: the average by default, the live
    weights with ``use_ema=False``, the average's backbone under a new 5-class head."""
    model = seeded(3)
    ema = BaseAveragedModel(model)
    with torch.no_grad():
        for p in ema.module.parameters():
            p.mul_(0.5)

    def laid_out(state):
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        if layout == "mmpretrain":
            state = {(f"head.{k}" if k.startswith("fc.") else f"backbone.{k}"): v for k, v in state.items()}
        return dict(reversed(list(state.items()))) if reverse else state

    live, average = laid_out(model.state_dict()), laid_out(ema.module.state_dict())
    ema_state = {"steps": torch.tensor(5), **{f"module.{k}": v.clone() for k, v in average.items()}}
    checkpoint_state = copy.deepcopy(live)
    path = tmp_path / "epoch_3.pth"

    class Saved(nn.Module):
        def state_dict(self, *args, **kwargs):  # the hook's ema_model.state_dict(), in the layout
            return dict(ema_state)

    mmengine_checkpoint(checkpoint_state, Saved(), path)

    def strip(state):
        return {k.removeprefix("backbone.").replace("head.fc.", "fc."): v for k, v in state.items()}

    assert_loaded(zooadapt.load("resnet18", weights=path), strip(average))
    assert_loaded(zooadapt.load("resnet18", weights=path, use_ema=False), strip(live))
    five = zooadapt.load("resnet18", weights=path, num_classes=5)
    assert_loaded(five, strip(average), head=("fc.weight", "fc.bias"))
    assert "new head" in str(five.zooadapt.report)


@pytest.mark.slow
def test_mmengine_without_ema_and_without_runner_metadata(tmp_path):
    """Without the hook a Runner checkpoint is its ``state_dict`` (``use_ema=True`` refused, naming the
    fix); an ``ema_state_dict`` without the Runner's ``meta``/``message_hub`` was not swapped by the
    hook (a script's own dict) and is read by its name, as the EMA set."""
    path = mmengine_checkpoint(seeded(4).state_dict(), None, tmp_path / "plain.pth")
    assert_loaded(zooadapt.load("resnet18", weights=path), seeded(4).state_dict())
    with pytest.raises(InvalidArgumentError, match="drop use_ema"):
        zooadapt.load("resnet18", weights=path, use_ema=True)
    model = seeded(5)
    ema = BaseAveragedModel(model)
    with torch.no_grad():
        for p in ema.module.parameters():
            p.add_(1.0)
    torch.save({"state_dict": model.state_dict(), "ema_state_dict": ema.state_dict()}, tmp_path / "own.pth")
    loaded = zooadapt.load("resnet18", weights=tmp_path / "own.pth")
    assert_loaded(loaded, ema.module.state_dict())
    assert "'ema_state_dict' (EMA weights)" in str(loaded.zooadapt.report)


# -- torchvision references/classification/train.py and pytorch/examples imagenet/main.py ----------


class ExponentialMovingAverage(torch.optim.swa_utils.AveragedModel):
    """pytorch/vision, references/classification/utils.py: an ``AveragedModel`` of the buffers too."""

    def __init__(self, model, decay, device="cpu"):
        def ema_avg(avg_model_param, model_param, num_averaged):
            return decay * avg_model_param + (1 - decay) * model_param

        super().__init__(model, device, ema_avg, use_buffers=True)


@pytest.mark.slow
@pytest.mark.parametrize("with_ema", [True, False])
def test_torchvision_reference_train_py(tmp_path, with_ema):
    """pytorch/vision references/classification/train.py saves ``model``, ``optimizer``,
    ``lr_scheduler``, ``epoch``, ``args`` (a Namespace) and, with ``--model-ema``, ``model_ema``
    (``module.`` keys and ``n_averaged``): the EMA by default, ``model`` with ``use_ema=False``."""
    model = seeded(6)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 30).state_dict(), "epoch": 4,
                  "args": argparse.Namespace(model="resnet18", model_ema=with_ema, lr=0.1)}
    ema = ExponentialMovingAverage(model, decay=0.9)
    ema.update_parameters(model)  # train.py updates it every --model-ema-steps iterations
    with torch.no_grad():
        for p in ema.module.parameters():
            p.sub_(0.125)
    if with_ema:
        checkpoint["model_ema"] = ema.state_dict()
    torch.save(checkpoint, tmp_path / "checkpoint.pth")
    expected = ema.module.state_dict() if with_ema else model.state_dict()
    loaded = zooadapt.load("resnet18", weights=tmp_path / "checkpoint.pth")
    assert_loaded(loaded, expected)
    five = zooadapt.load("resnet18", weights=tmp_path / "checkpoint.pth", num_classes=5)
    assert_loaded(five, expected, head=("fc.weight", "fc.bias"))
    if with_ema:
        assert "'model_ema' (EMA weights)" in str(loaded.zooadapt.report)
        assert "n_averaged=1: its count of updates, not a weight" in str(loaded.zooadapt.report)
        assert not loaded.zooadapt.report.plan.unexpected  # the counter is not shown as a tensor left unused
        assert_loaded(zooadapt.load("resnet18", weights=tmp_path / "checkpoint.pth", use_ema=False),
                      model.state_dict())


def test_an_average_that_averaged_nothing_yet_gives_way_to_the_live_weights(tmp_path):
    """Saved before its first update (``n_averaged`` 0), torchvision's EMA holds the weights it was
    made from, not an average: the live weights load by default and the report says why;
    ``use_ema=True`` still loads the copy."""
    start = seeded(8)
    ema = ExponentialMovingAverage(start, decay=0.9)
    trained = shifted(start.state_dict(), 0.5)
    torch.save({"model": trained, "model_ema": ema.state_dict(), "epoch": 0}, tmp_path / "checkpoint.pth")
    loaded = zooadapt.load("resnet18", weights=tmp_path / "checkpoint.pth")
    assert_loaded(loaded, trained)
    said = str(loaded.zooadapt.report)
    assert "'model' (live weights)" in said and "has averaged nothing yet (n_averaged=0" in said, said
    assert_loaded(zooadapt.load("resnet18", weights=tmp_path / "checkpoint.pth", use_ema=True), start.state_dict())


@pytest.mark.parametrize("form", ["pickle", "safetensors"])
def test_an_averaged_models_own_state_dict_loads_its_average_and_reports_the_counter(tmp_path, form):
    """``torch.optim.swa_utils.AveragedModel(model).state_dict()`` saved alone: the copy under
    ``module.`` and ``n_averaged``, the counter named in the report, not listed as unused. Its
    neighbour, a buffer of that name with no averaged ``module.`` beside it, is a tensor like any
    other: the load says it has no place."""
    model = seeded(7)
    average = torch.optim.swa_utils.AveragedModel(model, use_buffers=True)
    average.update_parameters(model)
    average.update_parameters(model)
    state = average.state_dict()
    path = tmp_path / ("average.pth" if form == "pickle" else "average.safetensors")
    torch.save(state, path) if form == "pickle" else save_file(state, path)
    loaded = zooadapt.load("resnet18", weights=path)
    assert_loaded(loaded, model.state_dict())
    assert "AveragedModel (n_averaged=2: its count of updates" in str(loaded.zooadapt.report)
    assert not loaded.zooadapt.report.plan.unexpected
    # a read of names and shapes alone (identification, a meta build) sets the counter aside too
    assert not zooadapt.load("resnet18", weights=path, device="meta").zooadapt.report.plan.unexpected
    found = zooadapt.identify(path)
    assert found.best is not None and found.best.complete and found.best.name == "resnet18", str(found)
    stray = {**model.state_dict(), "n_averaged": torch.tensor(3)}
    torch.save(stray, tmp_path / "stray.pth")
    plan = zooadapt.load("resnet18", weights=tmp_path / "stray.pth").zooadapt.report.plan
    assert [m.checkpoint_key for m in plan.unexpected] == ["n_averaged"]


@pytest.mark.slow
@pytest.mark.parametrize("form", ["pickle", "safetensors"])
def test_pytorch_examples_imagenet_main_py(tmp_path, form):
    """pytorch/examples imagenet/main.py ``save_checkpoint({'epoch', 'arch', 'state_dict':
    model.state_dict(), 'best_acc1', 'optimizer', 'scheduler'})`` of a ``DataParallel`` ResNet-50
    (``module.`` keys; ``best_acc1`` a tensor), and the same weights in safetensors."""
    model = nn.DataParallel(seeded(7, "resnet50"))
    optimizer = torch.optim.SGD(model.parameters(), 0.1)
    path = tmp_path / ("checkpoint.pth.tar" if form == "pickle" else "model.safetensors")
    if form == "pickle":
        torch.save({"epoch": 5, "arch": "resnet50", "state_dict": model.state_dict(), "best_acc1": torch.tensor(61.5),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 30).state_dict()}, path)
    else:
        save_file(dict(model.state_dict()), path)
    expected = model.module.state_dict()
    assert_loaded(zooadapt.load("resnet50", weights=path), expected)
    assert_loaded(zooadapt.load("resnet50", weights=path, num_classes=5), expected, head=("fc.weight", "fc.bias"))


# -- Composer: state -> model, its EMA algorithm swapping the average in ---------------------------


class ComposerClassifier(nn.Module):
    """mosaicml/composer composer/models/tasks/classification.py: the network as ``self.module``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


def composer_checkpoint(path: Path, model: nn.Module, ema: dict | None) -> None:
    """composer/utils/checkpoint.py ``_save_checkpoint``: ``{'state': State.state_dict(), 'rng':
    reproducibility.get_rng_state()}``; ``State.state_dict`` (composer/core/state.py) saves
    ``algorithms`` as ``[(qualname, state_dict)]``, the timestamp's wall-clock times as timedeltas."""
    state = {"model": model.state_dict(), "optimizers": {"SGD": {"state": {}, "param_groups": []}}, "schedulers": {},
             "algorithms": [("EMA", ema)] if ema is not None else [], "callbacks": {}, "scaler": None,
             "timestamp": {"epoch": 2, "batch": 40, "total_wct": datetime.timedelta(seconds=31)},
             "rank_zero_seed": 17, "train_metrics": {}, "eval_metrics": {}, "run_name": "run", "dataset_state": {},
             "integrations": {}, "metadata": {}}
    rng = [{"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.random.get_rng_state()}]
    torch.save({"state": state, "rng": rng}, path)


@pytest.mark.slow
def test_composer_ema_swapped_into_the_model(tmp_path):
    """Composer's EMA algorithm (composer/algorithms/ema/ema.py) swaps its ``EMAParameters`` into
    the model at each checkpoint event (``ema_weights_active``): ``state['model']`` is the average,
    the live weights are in the algorithm's ``named_parameters_dict``/``named_buffers_dict``. A
    MobileNet v3 under ``ComposerClassifier``'s ``module.``."""
    wrapped = ComposerClassifier(seeded(8, "mobilenet_v3_small"))
    live = {n: p.data.clone() - 0.5 for n, p in wrapped.named_parameters()}
    buffers = {n: b.clone() for n, b in wrapped.named_buffers()}
    composer_checkpoint(tmp_path / "ep2.pt", wrapped, {"ema_model": {"named_parameters_dict": live,
                                                                      "named_buffers_dict": buffers},
                                                       "ema_weights_active": True, "ema_started": True})
    average = {k.removeprefix("module."): v for k, v in wrapped.state_dict().items()}
    loaded = zooadapt.load("mobilenet_v3_small", weights=tmp_path / "ep2.pt")
    assert_loaded(loaded, average)
    report = str(loaded.zooadapt.report)
    assert "'state.model' (EMA weights)" in report and "Composer's EMA" in report
    live_state = {k.removeprefix("module."): {**buffers, **live}.get(k, v) for k, v in wrapped.state_dict().items()}
    assert_loaded(zooadapt.load("mobilenet_v3_small", weights=tmp_path / "ep2.pt", use_ema=False), live_state)
    five = zooadapt.load("mobilenet_v3_small", weights=tmp_path / "ep2.pt", num_classes=5)
    assert_loaded(five, average, head=("classifier.3.weight", "classifier.3.bias"))


@pytest.mark.slow
def test_composer_without_ema(tmp_path):
    """Without the EMA algorithm ``state['model']`` is the live weights; ``use_ema=True`` is refused
    with the fix named."""
    wrapped = ComposerClassifier(seeded(9))
    composer_checkpoint(tmp_path / "ep1.pt", wrapped, None)
    assert_loaded(zooadapt.load("resnet18", weights=tmp_path / "ep1.pt"), wrapped.module.state_dict())
    with pytest.raises(InvalidArgumentError, match="drop use_ema"):
        zooadapt.load("resnet18", weights=tmp_path / "ep1.pt", use_ema=True)


# -- VISSL: classy_state_dict -> base_model -> model -> trunk / heads ------------------------------


class FeatureBlocks(nn.Module):
    """VISSL's ResNeXt trunk keeps the torchvision layers in ``_feature_blocks``
    (facebookresearch/vissl, extra_scripts/convert_vissl_to_torchvision.py strips that prefix)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self._feature_blocks = nn.ModuleDict({n: m for n, m in network.named_children() if n != "fc"})


@pytest.mark.slow
def test_vissl_trunk_and_heads(tmp_path):
    """vissl/utils/checkpoint.py writes ``{'type': 'consolidated', 'classy_state_dict': {'base_model':
    {'model': {'trunk', 'heads'}}, ...}}``: the trunk loads exactly; its trained 1000-class head
    (``0.clf.0.``) is named with the rule that loads it, and that rule loads it."""
    network = seeded(10)
    heads = {"0.clf.0.weight": network.fc.weight.detach().clone(), "0.clf.0.bias": network.fc.bias.detach().clone()}
    torch.save({"phase_idx": 3, "iteration": 40, "type": "consolidated",
                "classy_state_dict": {"train": True, "base_model": {"model": {
                    "trunk": FeatureBlocks(network).state_dict(), "heads": heads}, "meta": {}}, "optimizer": {}}},
               tmp_path / "model_final_checkpoint_phase3.torch")
    path = tmp_path / "model_final_checkpoint_phase3.torch"
    with pytest.warns(UserWarning, match="rename:heads"):
        loaded = zooadapt.load("resnet18", weights=path)
    assert_loaded(loaded, network.state_dict(), head=("fc.weight", "fc.bias"))
    assert "VISSL" in str(loaded.zooadapt.report)
    rule = r"rename:heads\.0\.clf\.0\.(.+)=>fc.\1"
    assert_loaded(zooadapt.load("resnet18", weights=path, rules=[rule]), network.state_dict())
    assert_loaded(zooadapt.load("resnet18", weights=path, num_classes=5), network.state_dict(),
                  head=("fc.weight", "fc.bias"))


# -- Hugging Face Trainer folders, Ignite, ConvNeXt/DeiT official, SwAV -----------------------------


def trainer_extras(folder: Path, model: nn.Module) -> None:
    """What transformers' ``Trainer._save_checkpoint`` writes beside the model (trainer.py:
    ``optimizer.pt``, ``scheduler.pt``, ``rng_state.pth``, ``trainer_state.json``, ``training_args.bin``)."""
    torch.save(torch.optim.AdamW(model.parameters()).state_dict(), folder / "optimizer.pt")
    torch.save({"last_epoch": 1}, folder / "scheduler.pt")
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()},
               folder / "rng_state.pth")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 500}))
    torch.save({"output_dir": "out"}, folder / "training_args.bin")


@pytest.mark.slow
def test_hf_trainer_folder_of_a_timm_wrapper(tmp_path):
    """``Trainer._save`` calls ``save_pretrained`` for a ``PreTrainedModel``: a
    ``TimmWrapperForImageClassification`` of a timm ConvNeXt (``timm_model.`` keys, a 5-label
    config) in ``checkpoint-500/``: loads whole, its trained head kept, or under a new head."""
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    torch.manual_seed(11)
    model = TimmWrapperForImageClassification(TimmWrapperConfig(architecture="test_convnext", num_labels=5))
    folder = tmp_path / "checkpoint-500"
    model.save_pretrained(folder)
    trainer_extras(folder, model)
    expected = {k.removeprefix("timm_model."): v for k, v in model.state_dict().items()}
    kept = zooadapt.load("test_convnext", weights=folder)
    assert_loaded(kept, expected)
    assert "trained 5-class head" in str(kept.zooadapt.report)
    three = zooadapt.load("test_convnext", weights=folder, num_classes=3)
    assert_loaded(three, expected, head=("head.fc.weight", "head.fc.bias"))


@pytest.mark.slow
def test_hf_trainer_folder_of_a_plain_module(tmp_path):
    """For any other ``nn.Module`` ``Trainer._save`` writes ``safetensors.torch.save_file(state_dict,
    'model.safetensors', metadata={'format': 'pt'})``: a network under ``backbone.``."""
    holder = nn.Module()
    holder.backbone = seeded(12, num_classes=5)
    folder = tmp_path / "checkpoint-500"
    folder.mkdir()
    save_file(holder.state_dict(), folder / "model.safetensors", metadata={"format": "pt"})
    trainer_extras(folder, holder)
    assert_loaded(zooadapt.load("resnet18", weights=folder), holder.backbone.state_dict())
    assert_loaded(zooadapt.load("resnet18", weights=folder, num_classes=3), holder.backbone.state_dict(),
                  head=("fc.weight", "fc.bias"))


@pytest.mark.slow
@pytest.mark.parametrize("objects", [("model",), ("model", "optimizer", "trainer"),
                                     ("model", "ema_model", "optimizer", "trainer")])
def test_ignite_checkpoint(tmp_path, objects):
    """pytorch/ignite ignite/handlers/checkpoint.py ``Checkpoint.__call__``: ``{name: obj.state_dict()}``
    for each object of ``to_save`` (a DDP model unwrapped), flat when there is one; with Ignite's
    ``EMAHandler`` the examples save its ``ema_model`` beside the model: the EMA by default."""
    model = seeded(13)
    ema_model = copy.deepcopy(model)
    with torch.no_grad():
        for p in ema_model.parameters():
            p.add_(0.5)
    states = {"model": model.state_dict(), "ema_model": ema_model.state_dict(),
              "optimizer": torch.optim.SGD(model.parameters(), 0.1).state_dict(),
              "trainer": {"iteration": 100, "epoch_length": 10, "max_epochs": 10}}
    checkpoint = {k: states[k] for k in objects}
    torch.save(checkpoint[objects[0]] if len(objects) == 1 else checkpoint, tmp_path / "checkpoint_100.pt")
    expected = ema_model.state_dict() if "ema_model" in objects else model.state_dict()
    assert_loaded(zooadapt.load("resnet18", weights=tmp_path / "checkpoint_100.pt"), expected)


@pytest.mark.slow
def test_convnext_official_save_model_with_model_ema(tmp_path):
    """facebookresearch/ConvNeXt utils.py ``save_model`` (DeiT's main.py alike): ``model``,
    ``optimizer``, ``epoch``, ``scaler``, ``args`` and ``model_ema`` = ``timm.utils.get_state_dict(
    model_ema)``, the ``ModelEma``'s inner model: the EMA by default, the live with ``use_ema=False``."""
    import timm
    from timm.utils import ModelEmaV2, get_state_dict

    torch.manual_seed(14)
    model = timm.create_model("test_convnext", num_classes=5)
    model_ema = ModelEmaV2(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    model_ema.update(model)
    torch.save({"model": model.state_dict(), "optimizer": {}, "epoch": 9, "scaler": {},
                "args": argparse.Namespace(model="convnext_tiny"), "model_ema": get_state_dict(model_ema)},
               tmp_path / "checkpoint-best.pth")
    assert differ(model.state_dict(), model_ema.module.state_dict())
    loaded = zooadapt.load("test_convnext", weights=tmp_path / "checkpoint-best.pth")
    assert_loaded(loaded, model_ema.module.state_dict())
    assert "'model_ema' (EMA weights)" in str(loaded.zooadapt.report)
    assert_loaded(zooadapt.load("test_convnext", weights=tmp_path / "checkpoint-best.pth", use_ema=False),
                  model.state_dict())


@pytest.mark.slow
def test_swav_checkpoint_projection_head_and_prototypes(tmp_path):
    """facebookresearch/swav main_swav.py saves ``{'epoch', 'state_dict': model.state_dict(),
    'optimizer', 'amp'}`` of a DDP ``ResNet`` (src/resnet50.py) without ``fc``, with
    ``projection_head`` and ``prototypes``: the backbone loads, the head is new and said to be."""
    network = seeded(15)
    swav = nn.Module()
    for name, child in network.named_children():
        if name != "fc":
            swav.add_module(name, child)
    swav.projection_head = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 128))
    swav.prototypes = nn.Linear(128, 300, bias=False)
    torch.save({"epoch": 800, "state_dict": nn.DataParallel(swav).state_dict(), "optimizer": {}},
               tmp_path / "checkpoint.pth.tar")
    loaded = zooadapt.load("resnet18", weights=tmp_path / "checkpoint.pth.tar")
    assert_loaded(loaded, network.state_dict(), head=("fc.weight", "fc.bias"))
    report = str(loaded.zooadapt.report)
    assert "new head 2: fc.weight, fc.bias" in report and "unused, no place in the model 10" in report


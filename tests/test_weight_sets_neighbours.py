"""Averaged weights kept where no key names them, and folders that hold several models.

Three neighbours of the EMA sets ``weight_sets`` already reads (timm's ``state_dict_ema``,
Lightning's ``EMAWeightAveraging``), each built with its project's own saving code:

1. Lightning's ``StochasticWeightAveraging`` keeps its average in the checkpoint's ``callbacks``
   state: reported, loaded with ``use_ema=True``, and recognised once Lightning has copied it
   into ``state_dict``.
2. accelerate's ``save_state`` of two prepared models writes ``model.safetensors`` and
   ``model_1.safetensors``: the folder is refused with both files named, never one picked.
3. latent-diffusion's ``LitEma`` keeps its average as buffers named without dots
   (``model_ema.layer10conv1weight``): read back onto the live names as an EMA set.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file

import zooadapt
from zooadapt.contract.errors import AmbiguousCheckpointError
from zooadapt.errors import InvalidArgumentError
from zooadapt.weights.checkpoint import read_checkpoint

BN_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def loaded_equals(model: nn.Module, expected: dict[str, torch.Tensor], prefix: str = "model.") -> bool:
    """Whether every tensor of ``expected`` (keys under ``prefix``) is what the model holds."""
    state = model.state_dict()
    return all(torch.equal(state[k.removeprefix(prefix)], v) for k, v in expected.items() if k.startswith(prefix))


def differ(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Whether two sets of the same keys hold different parameters (the test means something)."""
    return any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point() and not k.endswith(BN_STATISTICS))


def tiny_fit(module, tmp_path: Path, callbacks: list, **trainer_args):
    """A real Lightning ``Trainer.fit`` of a few steps on 4 random 32x32 images, on the CPU."""
    import lightning as L

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(4, 3, 32, 32), torch.randint(0, 4, (4,)))
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        default_root_dir=tmp_path, callbacks=callbacks, **trainer_args)
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=2))
    return trainer


def classifier_module():
    import lightning as L

    class Classifier(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = torchvision.models.resnet18(num_classes=4)

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self.model(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)

    return Classifier()


# -- 1. Lightning's StochasticWeightAveraging -------------------------------------------------------


@pytest.fixture(scope="module")
def swa_run(tmp_path_factory) -> Path:
    """A real ``Trainer.fit`` with ``StochasticWeightAveraging(swa_epoch_start=2)`` over 2 epochs,
    a checkpoint saved after each (lightning/pytorch/callbacks/stochastic_weight_avg.py): epoch 0
    before SWA starts (``n_averaged=0``), epoch 1 with the average in ``callbacks`` beside the live
    ``state_dict``, epoch 2 the extra epoch in which Lightning copies the average into the model
    and recomputes its BatchNorm statistics."""
    pytest.importorskip("lightning")
    from lightning.pytorch.callbacks import ModelCheckpoint, StochasticWeightAveraging

    out = tmp_path_factory.mktemp("swa")
    tiny_fit(classifier_module(), out, max_epochs=2, callbacks=[
        StochasticWeightAveraging(swa_lrs=0.1, swa_epoch_start=2),
        ModelCheckpoint(dirpath=out, every_n_epochs=1, save_top_k=-1, filename="{epoch}")])
    assert sorted(p.name for p in out.glob("*.ckpt")) == ["epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt"]
    return out


def swa_sets(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
    raw = torch.load(path, weights_only=False)
    state = raw["callbacks"]["StochasticWeightAveraging"]
    return raw["state_dict"], state["average_model_state"], state["n_averaged"]


@pytest.mark.slow
def test_an_swa_average_during_training_is_reported_and_loaded_on_request(swa_run):
    """Mid-SWA the checkpoint's ``state_dict`` is the live model, the average sits in the callback's
    state: the default loads the live weights (as Lightning evaluates them until SWA ends) and the
    report names the average, how to load it and that its BatchNorm statistics need recomputing;
    ``use_ema=True`` loads the average as Lightning saved it."""
    live, average, count = swa_sets(swa_run / "epoch=1.ckpt")
    assert count == 1 and differ(live, average)

    for use_ema in (None, False):
        model = zooadapt.load("resnet18", weights=swa_run / "epoch=1.ckpt", num_classes=4, use_ema=use_ema)
        assert loaded_equals(model, live)
        said = model.zooadapt.report.plan.weight_set
        assert said.startswith("'state_dict' (live weights); the file also holds 'average_model_state' (use_ema=True)")
        assert "StochasticWeightAveraging" in said and "callbacks['StochasticWeightAveraging']" in said
        assert "torch.optim.swa_utils.update_bn" in said
        assert "weight set: 'state_dict' (live weights)" in str(model.zooadapt.report)

    model = zooadapt.load("resnet18", weights=swa_run / "epoch=1.ckpt", num_classes=4, use_ema=True)
    assert loaded_equals(model, average)
    said = model.zooadapt.report.plan.weight_set
    assert said.startswith("'average_model_state' (SWA average); the file also holds 'state_dict' (use_ema=False)")
    assert "BatchNorm statistics are not averaged" in said


@pytest.mark.slow
def test_before_swa_starts_the_empty_average_is_named_and_not_offered(swa_run):
    """At ``n_averaged=0`` the callback's copy is the model as ``fit`` began, no average: the
    report says SWA had not started, and ``use_ema=True`` is refused saying so."""
    live, _, count = swa_sets(swa_run / "epoch=0.ckpt")
    assert count == 0
    model = zooadapt.load("resnet18", weights=swa_run / "epoch=0.ckpt", num_classes=4)
    assert loaded_equals(model, live)
    said = model.zooadapt.report.plan.weight_set
    assert "holds no average yet (n_averaged=0" in said and "also holds" not in said
    with pytest.raises(InvalidArgumentError, match=r"n_averaged=0.*drop use_ema"):
        zooadapt.load("resnet18", weights=swa_run / "epoch=0.ckpt", num_classes=4, use_ema=True)


@pytest.mark.slow
def test_once_swa_ends_the_state_dict_is_the_average(swa_run):
    """When SWA ends Lightning copies the averaged parameters into the model and recomputes its
    BatchNorm statistics in one more epoch: ``state_dict`` is then the SWA model (loaded whatever
    ``use_ema`` says, its statistics the recomputed ones, not the average's stale copy), and the
    live weights are gone, so ``use_ema=False`` is refused. (Lightning also steps the optimizer
    on that epoch's last batch with the gradients left from training, so the parameters need not
    equal the average's: the epochs tell, not the values.)"""
    live, average, _ = swa_sets(swa_run / "epoch=2.ckpt")
    assert not torch.equal(live["model.bn1.running_var"], average["model.bn1.running_var"])
    for use_ema in (None, True):
        model = zooadapt.load("resnet18", weights=swa_run / "epoch=2.ckpt", num_classes=4, use_ema=use_ema)
        assert loaded_equals(model, live)
        assert model.zooadapt.report.plan.weight_set.startswith("'state_dict' (SWA average); Lightning's "
                                                                "StochasticWeightAveraging")
    with pytest.raises(InvalidArgumentError, match="live weights were not kept"):
        zooadapt.load("resnet18", weights=swa_run / "epoch=2.ckpt", num_classes=4, use_ema=False)


def test_an_swa_callback_of_a_subclass_without_batchnorm_is_found_by_its_state(tmp_path):
    """The callback's state key is its class name (``Callback.state_key``): a subclass's is its
    own, so the state is found by what it holds. The state is the real callback's ``state_dict()``
    of an average Lightning's own ``update_parameters`` made; a model without BatchNorm gets no
    advice about statistics."""
    lightning = pytest.importorskip("lightning")
    from lightning.pytorch.callbacks import StochasticWeightAveraging

    class MySWA(StochasticWeightAveraging):
        pass

    torch.manual_seed(0)
    live = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    callback = MySWA(swa_lrs=0.1)
    callback._average_model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    callback.n_averaged = torch.tensor(0)
    for epoch in range(3):  # on_train_epoch_start of each SWA epoch, then the epoch's training
        callback._latest_update_epoch = epoch
        callback.update_parameters(callback._average_model, live, callback.n_averaged, callback.avg_fn)
        with torch.no_grad():
            for p in live.parameters():
                p.add_(0.1)
    torch.save({"epoch": 2, "state_dict": live.state_dict(), "pytorch-lightning_version": lightning.__version__,
                "callbacks": {callback.state_key: callback.state_dict()}}, tmp_path / "last.ckpt")
    assert callback.state_key.endswith("MySWA")  # its __qualname__

    read = read_checkpoint(tmp_path / "last.ckpt", use_ema=True)
    assert read.weight_set == "average_model_state"
    assert all(torch.equal(read[k], v) for k, v in callback._average_model.state_dict().items())
    said = read.describe()
    assert said is not None and f"callbacks[{callback.state_key!r}]" in said and "over 3 epochs" in said
    assert "BatchNorm" not in said
    live_read = read_checkpoint(tmp_path / "last.ckpt")
    assert live_read.weight_set == "state_dict" and live_read.alternatives == ("average_model_state",)
    assert all(torch.equal(live_read[k], v) for k, v in live.state_dict().items())

    # saved after fit (epoch 3, past the last update) by a run stopped early: nothing was copied
    torch.save({"epoch": 3, "state_dict": live.state_dict(), "callbacks": {callback.state_key: callback.state_dict()}},
               tmp_path / "stopped.ckpt")
    assert read_checkpoint(tmp_path / "stopped.ckpt").alternatives == ("average_model_state",)
    # saved after fit once on_train_end copied the average in (transfer_weights): the SWA model
    callback.transfer_weights(callback._average_model, live)
    torch.save({"epoch": 3, "state_dict": live.state_dict(), "callbacks": {callback.state_key: callback.state_dict()}},
               tmp_path / "ended.ckpt")
    ended = read_checkpoint(tmp_path / "ended.ckpt")
    assert ended.weight_set == "state_dict" and ended.kind == "SWA average" and ended.alternatives == ()


# -- 2. accelerate's save_state of two prepared models ----------------------------------------------


def accelerate_save_state(folder: Path, models: list[nn.Module], safe_serialization: bool = True) -> None:
    """accelerate's ``Accelerator.save_state`` -> ``save_accelerator_state``
    (accelerate/checkpointing.py, 1.16), its names from utils/constants.py: each model's state as
    ``WEIGHTS_NAME``/``SAFE_WEIGHTS_NAME`` (``pytorch_model.bin``/``model.safetensors``) with
    ``_{i}`` before the dot for the i-th model after the first, safetensors with
    ``metadata={"format": "pt"}`` (utils/other.py ``save``); the optimizer as ``optimizer.bin``
    and the RNG states as ``random_states_{process_index}.pkl``."""
    folder.mkdir()
    for i, model in enumerate(models):
        weights_name = "model.safetensors" if safe_serialization else "pytorch_model.bin"
        if i > 0:
            weights_name = weights_name.replace(".", f"_{i}.")
        state = model.state_dict()
        if safe_serialization:
            save_file({k: v.contiguous() for k, v in state.items()}, str(folder / weights_name),
                      metadata={"format": "pt"})
        else:
            torch.save(state, folder / weights_name)
    params = [p for m in models for p in m.parameters()]
    torch.save(torch.optim.SGD(params, lr=0.1).state_dict(), folder / "optimizer.bin")
    torch.save({"step": 0, "torch_manual_seed": torch.get_rng_state()}, folder / "random_states_0.pkl")


@pytest.fixture(scope="module")
def two_resnets() -> list[nn.Module]:
    torch.manual_seed(0)
    return [torchvision.models.resnet18(num_classes=4), torchvision.models.resnet18(num_classes=4)]


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "pickle"])
def test_an_accelerate_folder_of_two_models_is_refused_with_both_files_named(tmp_path, two_resnets, safe):
    """Loading the folder would take ``model.safetensors`` and leave ``model_1.safetensors``
    unsaid: refused, both files named, and each loads when passed itself."""
    accelerate_save_state(tmp_path / "ckpt", two_resnets, safe_serialization=safe)
    first, second = ("model.safetensors", "model_1.safetensors") if safe else ("pytorch_model.bin",
                                                                               "pytorch_model_1.bin")
    with pytest.raises(AmbiguousCheckpointError) as refused:
        zooadapt.load("resnet18", weights=tmp_path / "ckpt", num_classes=4)
    message = str(refused.value)
    assert f"({first}, {second})" in message and "accelerate's save_state" in message
    assert f"weights='{tmp_path / 'ckpt' / second}'" in message
    for name, source in ((first, two_resnets[0]), (second, two_resnets[1])):
        model = zooadapt.load("resnet18", weights=tmp_path / "ckpt" / name, num_classes=4)
        assert loaded_equals(model, source.state_dict(), prefix="")


def test_an_accelerate_folder_of_one_model_still_loads(tmp_path, two_resnets):
    accelerate_save_state(tmp_path / "ckpt", two_resnets[:1])
    model = zooadapt.load("resnet18", weights=tmp_path / "ckpt", num_classes=4)
    assert loaded_equals(model, two_resnets[0].state_dict(), prefix="")


@pytest.mark.slow
def test_a_real_accelerate_save_state_of_two_models_is_refused(tmp_path):
    """The same with accelerate itself, where it is installed."""
    accelerate = pytest.importorskip("accelerate")

    torch.manual_seed(0)
    accelerator = accelerate.Accelerator(cpu=True)
    first, second = torchvision.models.resnet18(num_classes=4), torchvision.models.resnet18(num_classes=4)
    optimizer = torch.optim.SGD([*first.parameters(), *second.parameters()], lr=0.1)
    first, second, optimizer = accelerator.prepare(first, second, optimizer)
    accelerator.save_state(tmp_path / "state")
    with pytest.raises(AmbiguousCheckpointError, match=r"\(model\.safetensors, model_1\.safetensors\)"):
        zooadapt.load("resnet18", weights=tmp_path / "state", num_classes=4)
    model = zooadapt.load("resnet18", weights=tmp_path / "state" / "model_1.safetensors", num_classes=4)
    assert loaded_equals(model, accelerator.unwrap_model(second).state_dict(), prefix="")


# -- 3. latent-diffusion's LitEma -----------------------------------------------------------------


class LitEma(nn.Module):
    """CompVis/latent-diffusion ``ldm/modules/ema.py`` ``LitEma``, its saving-relevant parts line
    by line: ``decay`` and ``num_updates`` buffers, then one buffer per trainable parameter named
    with the dots removed (``m_name2s_name = {name: name.replace('.', '')}``), updated in
    ``forward`` towards the model's parameters; ``copy_to`` writes them back by those names."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, use_num_upates: bool = True) -> None:
        super().__init__()
        self.m_name2s_name: dict[str, str] = {}
        self.register_buffer("decay", torch.tensor(decay, dtype=torch.float32))
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.int) if use_num_upates
                             else torch.tensor(-1, dtype=torch.int))
        for name, p in model.named_parameters():
            if p.requires_grad:
                s_name = name.replace(".", "")  # remove as '.'-character is not allowed in buffers
                self.m_name2s_name.update({name: s_name})
                self.register_buffer(s_name, p.clone().detach().data)

    def forward(self, model: nn.Module) -> None:
        decay = self.decay
        if self.num_updates >= 0:
            self.num_updates += 1
            decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        one_minus_decay = 1.0 - decay
        with torch.no_grad():
            m_param = dict(model.named_parameters())
            shadow_params = dict(self.named_buffers())
            for key in m_param:
                if m_param[key].requires_grad:
                    sname = self.m_name2s_name[key]
                    shadow_params[sname] = shadow_params[sname].type_as(m_param[key])
                    shadow_params[sname].sub_(one_minus_decay * (shadow_params[sname] - m_param[key]))

    def copy_to(self, model: nn.Module) -> None:
        m_param = dict(model.named_parameters())
        shadow_params = dict(self.named_buffers())
        for key in m_param:
            if m_param[key].requires_grad:
                m_param[key].data.copy_(shadow_params[self.m_name2s_name[key]].data)


@pytest.mark.slow
def test_a_lit_ema_checkpoint_loads_its_average_by_default(tmp_path):
    """latent-diffusion's ``DDPM`` holds ``self.model_ema = LitEma(self.model)`` and calls
    ``self.model_ema(self.model)`` in ``on_train_batch_end``; a real Trainer's checkpoint then has
    ``model_ema.conv1weight`` … beside ``model.conv1.weight``. The average loads by default and
    with ``use_ema=True`` (the model as ``LitEma.copy_to`` makes it: averaged parameters, live
    BatchNorm statistics), ``use_ema=False`` loads the live weights, and the report says which."""
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = torchvision.models.resnet18(num_classes=4)
            self.model_ema = LitEma(self.model)

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self.model(x), y)

        def on_train_batch_end(self, *args, **kwargs):
            self.model_ema(self.model)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)

    module = Module()
    tiny_fit(module, tmp_path, callbacks=[], max_steps=2, enable_checkpointing=False).save_checkpoint(
        tmp_path / "last.ckpt")
    raw = torch.load(tmp_path / "last.ckpt", weights_only=False)["state_dict"]
    assert "model_ema.layer10conv1weight" in raw and "model_ema.num_updates" in raw
    live = {k: v for k, v in raw.items() if k.startswith("model.")}
    averaged = torchvision.models.resnet18(num_classes=4)
    averaged.load_state_dict({k.removeprefix("model."): v for k, v in live.items()})
    module.model_ema.copy_to(averaged)
    expected = {f"model.{k}": v for k, v in averaged.state_dict().items()}
    assert differ(live, expected)

    for use_ema in (None, True):
        model = zooadapt.load("resnet18", weights=tmp_path / "last.ckpt", num_classes=4, use_ema=use_ema)
        assert loaded_equals(model, expected)
        report = model.zooadapt.report
        assert report.plan.weight_set.startswith("'model_ema.*' (EMA weights); the file also holds 'model.*' "
                                                 "(use_ema=False); 'model_ema.*' is LitEma's average of 62 parameters")
        assert report.plan.unexpected == []  # decay and num_updates are not weights: not offered to the model
    model = zooadapt.load("resnet18", weights=tmp_path / "last.ckpt", num_classes=4, use_ema=False)
    assert loaded_equals(model, live)
    assert model.zooadapt.report.plan.weight_set == "'model.*' (live weights); the file also holds 'model_ema.*' " \
                                                    "(use_ema=True)"


def test_lit_ema_names_that_collide_without_dots_each_get_the_one_average(tmp_path):
    """``layer1.0.weight`` and ``layer10.weight`` are both ``layer10weight`` to LitEma, which keeps
    one buffer for both and writes it into each in ``copy_to``: so does the read. A frozen
    parameter has no average (LitEma skips it) and stays live; the counters are not weights."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer1 = nn.Sequential(nn.Linear(3, 3))
            self.layer10 = nn.Linear(3, 3)
            self.head = nn.Linear(3, 2)
            self.head.bias.requires_grad_(False)

    torch.manual_seed(0)
    net = Net()
    ema = LitEma(net, decay=0.5)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema(net)
    holder = nn.Module()
    holder.model, holder.model_ema = net, ema
    torch.save({"state_dict": holder.state_dict(), "epoch": 3}, tmp_path / "ldm.ckpt")
    copied = Net()
    copied.load_state_dict(net.state_dict())
    ema.copy_to(copied)

    read = read_checkpoint(tmp_path / "ldm.ckpt")
    assert read.weight_set == "model_ema.*" and read.alternatives == ("model.*",)
    assert sorted(read) == sorted(f"model.{k}" for k in net.state_dict())
    assert all(torch.equal(read[f"model.{k}"], v) for k, v in copied.state_dict().items())
    assert torch.equal(read["model.layer1.0.weight"], read["model.layer10.weight"])
    assert torch.equal(read["model.head.bias"], net.head.bias)
    live = read_checkpoint(tmp_path / "ldm.ckpt", use_ema=False)
    assert all(torch.equal(live[f"model.{k}"], v) for k, v in net.state_dict().items()) and len(live) == len(read)


def test_a_dotted_ema_copy_with_counters_is_not_taken_for_lit_ema(tmp_path):
    """An EMA module whose keys keep their dots (a copy of the network under ``model_ema.module.``
    beside a ``num_updates`` counter) is left to the planner's copies, not read as LitEma."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 3))
    state = {**{f"model.{k}": v for k, v in net.state_dict().items()},
             **{f"model_ema.module.{k}": v + 1 for k, v in net.state_dict().items()},
             "model_ema.decay": torch.tensor(0.9), "model_ema.num_updates": torch.tensor(4)}
    torch.save({"state_dict": state}, tmp_path / "plain.ckpt")
    read = read_checkpoint(tmp_path / "plain.ckpt")
    assert read.weight_set is None and sorted(read) == sorted(state)


# -- a network saved in parts: {"backbone": ..., "classifier": ...} -----------------------------


def _finetuned_resnet18(classes: int = 5, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(num_classes=classes).eval()


def _parts(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    state = model.state_dict()
    return ({k: v for k, v in state.items() if not k.startswith("fc.")},
            {k.removeprefix("fc."): v for k, v in state.items() if k.startswith("fc.")})


@pytest.mark.parametrize("names", [("backbone", "classifier"),
                                   pytest.param(("encoder", "head"), marks=pytest.mark.slow),
                                   pytest.param(("features_net", "fc_layer"), marks=pytest.mark.slow)])
def test_a_network_saved_in_parts_loads_as_one_state_dict(tmp_path, names):
    """Research code saves ``{"backbone": backbone.state_dict(), "classifier": head.state_dict()}``:
    before, "holds no tensors zooadapt recognises". Each part is read under its name as a prefix,
    as a module holding them would name its tensors: the backbone's is found and stripped, and the
    classifier nothing places is said with the rule that loads it."""
    source = _finetuned_resnet18()
    backbone, head = _parts(source)
    torch.save({names[0]: backbone, names[1]: head, "epoch": 30, "best_acc": 0.91}, tmp_path / "parts.pth")
    with pytest.warns(UserWarning, match=rf"trained 5-class classifier \({names[1]}\.weight \[5, 512\]\)") as said:
        model = zooadapt.load("resnet18", weights=tmp_path / "parts.pth")
    assert model.zooadapt.report.plan.backbone_coverage == 1.0
    rule = str(said[0].message).split("rules=[r'")[1].split("']")[0]
    model = zooadapt.load("resnet18", weights=tmp_path / "parts.pth", rules=[rule]).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x))


def test_a_whole_network_beside_its_optimizer_state_loads_without_the_optimizer(tmp_path):
    source = _finetuned_resnet18()
    optimizer = torch.optim.Adam(source.parameters())
    source(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    source.eval()
    torch.save({"encoder": source.state_dict(), "optim": optimizer.state_dict(), "epoch": 1}, tmp_path / "run.pth")
    model = zooadapt.load("resnet18", weights=tmp_path / "run.pth").eval()
    assert model.zooadapt.num_classes == 5 and not model.zooadapt.report.plan.unexpected
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x))


@pytest.mark.slow
def test_two_networks_saved_side_by_side_are_two_copies(tmp_path):
    """``{"encoder_q": ..., "encoder_k": ...}`` unnested is still MoCo's two encoders: refused with both lines."""
    query, key = _finetuned_resnet18(seed=1).state_dict(), _finetuned_resnet18(seed=2).state_dict()
    torch.save({"encoder_q": query, "encoder_k": key}, tmp_path / "moco.pth")
    with pytest.raises(AmbiguousCheckpointError, match=r"(?s)encoder_k\.'.*encoder_q\.'") as refused:
        zooadapt.load("resnet18", weights=tmp_path / "moco.pth", num_classes=3)
    line = next(part for part in str(refused.value).split('"') if part.startswith("strip:encoder_q"))
    model = zooadapt.load("resnet18", weights=tmp_path / "moco.pth", num_classes=3, rules=[line])
    assert torch.equal(model.conv1.weight, query["conv1.weight"])


# -- two sets of one kind under top-level keys: never one picked by the order of names -------------

from itertools import combinations  # noqa: E402

from zooadapt.weights.weight_sets import EMA_SETS, LIVE_SETS  # noqa: E402


def _resnet18_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torchvision.models.resnet18().state_dict()


_LIVE_PAIRS = list(combinations(LIVE_SETS, 2))
_EMA_PAIRS = list(combinations(EMA_SETS, 2))


@pytest.mark.parametrize("first, second", [p if i % 17 == 0 else pytest.param(*p, marks=pytest.mark.slow)
                                           for i, p in enumerate(_LIVE_PAIRS + _EMA_PAIRS)],
                         ids=[f"{a}+{b}" for a, b in _LIVE_PAIRS + _EMA_PAIRS])
def test_two_different_sets_of_one_kind_are_refused_and_the_fix_loads_each(first, second, tmp_path):
    """``{'model': A, 'net': B}`` (two live sets) or ``{'model_ema': A, 'teacher': B}``: the names say
    nothing of which one the file's author meant, so the load is refused naming both; the fix it
    names (one set passed in memory) loads exactly that set. Two sets holding the same tensors
    (a copy saved twice) load, the report saying they are the same."""
    a, b = _resnet18_state(1), _resnet18_state(2)
    path = tmp_path / "ckpt.pth"
    torch.save({first: a, second: b, "epoch": 4}, path)
    with pytest.raises(AmbiguousCheckpointError, match=rf"2 different (live|EMA) weight sets \('{first}', "
                                                        rf"'{second}'\).*weights=torch.load\(PATH"):
        zooadapt.load("resnet18", weights=path)
    for name, expected in ((first, a), (second, b)):
        picked = torch.load(path, weights_only=True)[name]
        assert loaded_equals(zooadapt.load("resnet18", weights=picked), expected, prefix="")
    torch.save({first: a, second: {k: v.clone() for k, v in a.items()}}, path)
    model = zooadapt.load("resnet18", weights=path)
    assert loaded_equals(model, a, prefix="") and "(the same weights)" in str(model.zooadapt.report)


def test_an_ema_set_beside_two_live_ones_still_loads_with_the_live_choice_refused():
    """The choice a load makes is the one checked: the EMA set loads by default whatever the live
    sets hold; ``use_ema=False`` asks for a live set, and two different ones are refused."""
    a, b, ema = _resnet18_state(1), _resnet18_state(2), _resnet18_state(3)
    checkpoint = {"model": a, "net": b, "model_ema": ema}
    assert loaded_equals(zooadapt.load("resnet18", weights=checkpoint), ema, prefix="")
    with pytest.raises(AmbiguousCheckpointError, match=r"'model', 'net'"):
        zooadapt.load("resnet18", weights=checkpoint, use_ema=False)

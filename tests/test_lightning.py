"""StageFinetuning in a real Lightning Trainer: a few CPU steps on a small ResNet (no weights needed)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import zooadapt
from zooadapt.errors import FreezeSpecError, InvalidArgumentError, MissingDependencyError
from zooadapt.plugin_api import Stage, StageMap

lightning = pytest.importorskip("lightning")
from zooadapt.integrations.lightning import StageFinetuning  # noqa: E402


class Classifier(lightning.LightningModule):
    """Holds the zooadapt model as an attribute; records what each epoch trained with."""

    def __init__(self, include_frozen=True):
        super().__init__()
        self.model = zooadapt.load("resnet18", num_classes=3, pretrained=False)
        self.include_frozen = include_frozen
        self.seen = {}

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, _index):
        x, y = batch
        opt = self.trainer.optimizers[0]
        self.seen.setdefault(self.current_epoch, {
            "frozen": zooadapt.frozen_stages(self),
            "layer3_bn_training": self.model.layer3[0].bn1.training,
            "groups": [(g.get("name"), g["lr"], g.get("weight_decay")) for g in opt.param_groups],
            "layer3": self.model.layer3[0].conv1.weight.detach().clone(),
            "layer4": self.model.layer4[0].conv1.weight.detach().clone(),
        })
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        if self.include_frozen:
            return torch.optim.AdamW(zooadapt.param_groups(self, lr=1e-2, head_lr=1e-1, weight_decay=0.01,
                                                           include_frozen=True))
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=1e-1)


def _fit(module, callback, epochs=3):
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8,)))
    trainer = lightning.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, callbacks=[callback], logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
    return module.seen


@pytest.mark.slow
def test_stages_unfreeze_at_their_epochs_with_include_frozen_groups():
    module = Classifier()
    seen = _fit(module, StageFinetuning(freeze="all", unfreeze={1: "layer4", 2: ("layer3", 1e-3)}))
    assert seen[0]["frozen"] == ("stem", "layer1", "layer2", "layer3", "layer4")
    assert seen[1]["frozen"] == ("stem", "layer1", "layer2", "layer3")
    assert seen[2]["frozen"] == ("stem", "layer1", "layer2")
    assert not seen[0]["layer3_bn_training"] and not seen[1]["layer3_bn_training"] and seen[2]["layer3_bn_training"]
    # weights move only once their stage is unfrozen
    assert torch.equal(seen[0]["layer4"], seen[1]["layer4"]) and not torch.equal(seen[1]["layer4"], seen[2]["layer4"])
    assert torch.equal(seen[1]["layer3"], seen[2]["layer3"])
    assert not torch.equal(seen[2]["layer3"], module.model.layer3[0].conv1.weight)
    # the same groups throughout (no surgery); layer3's rate reset to the scheduled 1e-3 at epoch 2
    assert [g[0] for g in seen[0]["groups"]] == [g[0] for g in seen[2]["groups"]]
    rates = {(n, wd): lr for n, lr, wd in seen[2]["groups"]}
    assert rates[("layer3", 0.01)] == rates[("layer3", 0.0)] == 1e-3
    assert rates[("layer4", 0.01)] == 1e-2 and rates[("head", 0.01)] == 1e-1


@pytest.mark.slow
def test_plain_optimizer_gets_groups_added_with_the_weight_decay_split():
    module = Classifier(include_frozen=False)
    callback = StageFinetuning(freeze=":layer3", unfreeze={1: ("layer3", 0.05)}, decay=0.5, weight_decay=0.02)
    seen = _fit(module, callback, epochs=2)
    assert len(seen[0]["groups"]) == 1
    added = seen[1]["groups"][1:]
    assert added == [("layer3", 0.05 * 0.5**2, 0.02), ("layer3", 0.05 * 0.5**2, 0.0)]


@pytest.mark.slow
def test_a_misspelt_stage_is_a_clear_error():
    with pytest.raises(FreezeSpecError, match="unfreeze at epoch 3: .*Did you mean: layer4"):
        _fit(Classifier(), StageFinetuning(unfreeze={3: "layr4"}), epochs=1)


# -- a tiny network of the user's own (stages attached once), for quick real Trainer runs ---------

TINY_STAGES = StageMap((Stage("stem", ("conv1", "bn1")), Stage("body", ("conv2", "bn2"))),
                                head="fc")


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)
        self.conv2, self.bn2 = torch.nn.Conv2d(4, 4, 3), torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return self.fc(x.mean((2, 3)))


class Tiny(lightning.LightningModule):
    """``optimizer(module)`` builds the optimizer; ``groups`` records each epoch's groups, ``steps`` counts steps."""

    def __init__(self, optimizer=None, extra=None, manual=False):
        super().__init__()
        self.automatic_optimization = not manual  # Lightning takes several optimizers only so
        torch.manual_seed(0)
        self.net = TinyNet()
        zooadapt.attach(self.net, stages=TINY_STAGES)
        if extra is not None:
            self.extra = extra
        self.optimizer = optimizer or (lambda m: torch.optim.SGD([p for p in m.parameters() if p.requires_grad],
                                                                 lr=0.1))
        self.groups, self.steps = {}, 0

    def training_step(self, batch, _index):
        self.steps += 1
        self.groups.setdefault(self.current_epoch, [(g.get("name"), g["lr"], g.get("weight_decay"))
                                                    for g in self.trainer.optimizers[0].param_groups])
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return self.optimizer(self)


def _fit_tiny(module, callback, epochs=2):
    data = torch.utils.data.TensorDataset(torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,)))
    trainer = lightning.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, callbacks=[callback], logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
    return module


def test_no_lr_starts_at_the_first_groups_rate_over_initial_denom_lr():
    """As Lightning's BaseFinetuning.unfreeze_and_add_param_group: optimizer.param_groups[0]["lr"] / 10."""
    module = _fit_tiny(Tiny(), StageFinetuning(unfreeze={1: "body"}))
    assert module.groups[0] == [(None, 0.1, 0)]
    assert module.groups[1] == [(None, 0.1, 0), ("body", pytest.approx(0.01), 0)]
    assert module.net.conv2.weight.requires_grad and not module.net.conv1.weight.requires_grad
    # initial_denom_lr, layer decay (body is one step below the head) and the weight-decay split of the optimizer
    module = _fit_tiny(Tiny(lambda m: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=0.2)),
                       StageFinetuning(unfreeze={1: "stem-body"}, initial_denom_lr=4, decay=0.5))
    stem, body = pytest.approx(0.2 / 4 * 0.5**2), pytest.approx(0.2 / 4 * 0.5)
    assert module.groups[1][1:] == [("stem", stem, 0.01), ("stem", stem, 0.0),
                                    ("body", body, 0.01), ("body", body, 0.0)]


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), True, "10"])
def test_bad_initial_denom_lr(bad):
    with pytest.raises(InvalidArgumentError, match="initial_denom_lr="):
        StageFinetuning(initial_denom_lr=bad)


def _other(module):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)


def _two(module):
    return [torch.optim.SGD([module.net.fc.weight], lr=0.1), torch.optim.SGD([module.net.fc.bias], lr=0.1)]


@pytest.mark.parametrize(("optimizer", "callback", "error", "fragment"), [
    (_other, {"unfreeze": {1: "body"}}, InvalidArgumentError, "no optimizer holds a parameter of this Tiny"),
    (_two, {"unfreeze": {1: "body"}}, InvalidArgumentError, "2 optimizers hold parameters"),
    (lambda m: torch.optim.AdamW([{"params": [m.net.fc.weight], "weight_decay": 0.1},
                                  {"params": [m.net.fc.bias], "weight_decay": 0.2}], lr=0.1),
     {"unfreeze": {1: "body"}}, InvalidArgumentError, r"different rates \(0.1, 0.2\).*weight_decay="),
    (None, {"unfreeze": {1: "bdy"}}, FreezeSpecError, "unfreeze at epoch 1: .*Did you mean: body"),
    (None, {"freeze": "stem", "unfreeze": {1: "stem"}}, None, None),  # the control: nothing wrong, it trains
])
def test_what_would_fail_at_the_unfreeze_epoch_fails_before_the_first_step(optimizer, callback, error, fragment):
    module = Tiny(optimizer, manual=optimizer is _two)
    if error is None:
        _fit_tiny(module, StageFinetuning(**callback))
        assert module.steps == 4
        return
    with pytest.raises(error, match=fragment):
        _fit_tiny(module, StageFinetuning(**callback))
    assert module.steps == 0  # raised before training, not at epoch 1


def test_an_unfreeze_after_the_last_epoch_is_reported_before_training():
    with pytest.warns(UserWarning, match=r"epoch 5 never happens: the Trainer stops after max_epochs=2"):
        module = _fit_tiny(Tiny(), StageFinetuning(unfreeze={1: "body", 5: "stem"}))
    assert module.steps == 4


EVAL_WARNING = "module(s) in eval mode at the start of training"


def _eval_warnings(module, callback):
    import warnings

    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inner = list(warnings.filters)
        _fit_tiny(module, callback)
        assert warnings.filters == inner  # the callback's filter is gone after the fit
    assert warnings.filters == before
    return [str(w.message) for w in caught if EVAL_WARNING in str(w.message)]


def test_the_eval_mode_warning_about_frozen_batchnorm_is_silenced():
    # the control: Lightning warns about the two frozen BatchNorm layers when the callback does not step in
    class Loud(StageFinetuning):
        def _quiet_frozen_bn_warning(self, pl_module):
            pass

    assert [m.split(" module")[0] for m in _eval_warnings(Tiny(), Loud(unfreeze={1: "body"}))] == ["Found 2"]
    assert _eval_warnings(Tiny(), StageFinetuning(unfreeze={1: "body"})) == []


def test_the_eval_mode_warning_stays_for_a_users_module_in_eval_mode():
    found = _eval_warnings(Tiny(extra=torch.nn.Dropout().eval()), StageFinetuning(unfreeze={1: "body"}))
    assert [m.split(" module")[0] for m in found] == ["Found 3"]  # both frozen BatchNorm layers and the Dropout
    # bn="train": no frozen BatchNorm, so only the user's module is counted
    found = _eval_warnings(Tiny(extra=torch.nn.Dropout().eval()), StageFinetuning(bn="train"))
    assert [m.split(" module")[0] for m in found] == ["Found 1"]


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"unfreeze": [(1, "layer4")]}, "mapping from epoch"),
    ({"unfreeze": {-1: "layer4"}}, "epoch -1"),
    ({"unfreeze": {1: ("layer4", float("nan"))}}, "lr=nan"),
    ({"bn": "fixed"}, "bn="),
    ({"decay": 2.0}, "decay="),
    ({"initial_denom_lr": 0}, "initial_denom_lr="),
])
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(InvalidArgumentError, match=fragment):
        StageFinetuning(**kwargs)


DDP_SCRIPT = r'''
import hashlib, json, os, sys
import lightning, torch, torch.nn.functional as F
import zooadapt
from lightning.pytorch.callbacks import BaseFinetuning
from zooadapt.integrations.lightning import StageFinetuning

class WithoutRewrap(StageFinetuning):
    """The control: unfreezing as Lightning's BaseFinetuning does it, the DDP wrapper left as built."""

    def on_train_epoch_start(self, trainer, pl_module):
        BaseFinetuning.on_train_epoch_start(self, trainer, pl_module)

class Classifier(lightning.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.model = zooadapt.load("resnet18", num_classes=3, pretrained=False)
        self.wrappers = []

    def training_step(self, batch, _index):
        self.wrappers.append(id(self.trainer.strategy.model))
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(zooadapt.param_groups(self, lr=0.1, include_frozen=True))

torch.manual_seed(1)
data = torch.utils.data.TensorDataset(torch.randn(16, 3, 32, 32), torch.randint(0, 3, (16,)))
module = Classifier()
layer3 = module.model.layer3[0].conv1.weight.detach().clone()
trainer = lightning.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            callbacks=[(WithoutRewrap if sys.argv[2] == "control" else StageFinetuning)(
                                freeze="all", unfreeze={1: "layer4"})])
trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
h = hashlib.sha256()
for p in module.model.layer4.parameters():
    h.update(p.detach().numpy().tobytes())
out = {"layer4": h.hexdigest(), "wrappers": len(set(module.wrappers)),
       "layer3_unchanged": torch.equal(layer3, module.model.layer3[0].conv1.weight),
       "frozen": list(zooadapt.frozen_stages(module))}
with open(os.path.join(sys.argv[1], f"{sys.argv[2]}{trainer.global_rank}.json"), "w") as fh:
    json.dump(out, fh)
'''


@pytest.mark.slow
def test_ddp_strategy_keeps_an_unfrozen_stage_in_sync(tmp_path):
    """Two CPU processes under Lightning's DDP strategy, trained on different batches per rank. The
    callback rebuilds the wrapper after the unfreeze, so layer4 ends identical on both ranks; the
    control (the same callback without the rebuild, as BaseFinetuning leaves it) drifts apart."""
    import json
    import os
    import socket
    import subprocess
    import sys

    script = tmp_path / "fit.py"
    script.write_text(DDP_SCRIPT)
    ranks = {}
    for how in ("rewrap", "control"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        run = subprocess.run([sys.executable, str(script), str(tmp_path), how], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        ranks[how] = [json.loads((tmp_path / f"{how}{r}.json").read_text()) for r in range(2)]
    a, b = ranks["rewrap"]
    assert a["frozen"] == b["frozen"] == ["stem", "layer1", "layer2", "layer3"]
    assert a["layer3_unchanged"] and b["layer3_unchanged"]
    assert a["wrappers"] == b["wrappers"] == 2  # one DDP wrapper for epoch 0, a rebuilt one from epoch 1
    assert a["layer4"] == b["layer4"]
    c, d = ranks["control"]
    assert c["wrappers"] == d["wrappers"] == 1 and c["layer4"] != d["layer4"]


def test_without_lightning_the_import_says_what_to_install(monkeypatch):
    import importlib
    import sys

    for name in ("lightning", "lightning.pytorch", "lightning.pytorch.callbacks", "pytorch_lightning",
                 "pytorch_lightning.callbacks", "zooadapt.integrations.lightning"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "zooadapt.integrations.lightning")
    with pytest.raises(MissingDependencyError, match=r"pip install 'zooadapt\[lightning\]'"):
        importlib.import_module("zooadapt.integrations.lightning")

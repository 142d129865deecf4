"""param_groups: real learning rates, frozen parameters nowhere, trainable ones exactly once."""

from __future__ import annotations

import pytest
import torch

import zooadapt
from zooadapt.errors import InvalidArgumentError
from zooadapt.plugin_api import Stage, StageMap


@pytest.fixture
def model():
    return zooadapt.load("resnet18", num_classes=4, pretrained=False, freeze="stem-layer1")


def _ids(groups):
    return [id(p) for g in groups for p in g["params"]]


def test_every_trainable_parameter_exactly_once(model):
    groups = zooadapt.param_groups(model, lr=1e-3, head_lr=1e-2)
    ids = _ids(groups)
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    assert [g["name"] for g in groups] == ["layer2", "layer3", "layer4", "head"]
    assert {g["name"]: g["lr"] for g in groups} == {"layer2": 1e-3, "layer3": 1e-3, "layer4": 1e-3, "head": 1e-2}


def test_layer_decay_and_no_decay(model):
    groups = zooadapt.param_groups(model, lr=0.1, head_lr=1.0, decay=0.5, weight_decay=1e-4)
    lrs = {(g["name"], g["weight_decay"]): g["lr"] for g in groups}
    assert lrs[("layer4", 1e-4)] == pytest.approx(0.05)
    assert lrs[("layer3", 1e-4)] == pytest.approx(0.025)
    assert lrs[("layer2", 0.0)] == pytest.approx(0.0125)
    assert lrs[("head", 0.0)] == 1.0
    for g in groups:
        assert all((p.ndim <= 1) == (g["weight_decay"] == 0.0) for p in g["params"])
    ids = _ids(groups)
    assert len(ids) == len(set(ids)) == sum(1 for p in model.parameters() if p.requires_grad)


def test_groups_drive_a_real_optimizer(model):
    groups = zooadapt.param_groups(model, lr=1e-3, head_lr=1e-2)
    opt = torch.optim.SGD(groups, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-3, 1e-3, 1e-2]
    table = zooadapt.format_param_groups(groups)
    assert "head" in table and "0.01" in table


def test_gradual_unfreezing_adds_a_group(model):
    opt = torch.optim.SGD(zooadapt.param_groups(model, lr=1e-3), lr=1e-3)
    zooadapt.unfreeze(model, "layer1")
    added = zooadapt.add_param_group(opt, model, lr=1e-4)
    assert [(g["name"], g["lr"]) for g in added] == [("layer1", 1e-4)]
    assert added[0] is opt.param_groups[-1]
    assert {id(p) for p in added[0]["params"]} == {id(p) for p in model.layer1.parameters()}
    assert zooadapt.add_param_group(opt, model, lr=1e-4) == []


@pytest.mark.parametrize("kwargs", [{"lr": -1}, {"lr": 1e-3, "decay": 0}, {"lr": 1e-3, "head_lr": "big"}])
def test_bad_rates(model, kwargs):
    with pytest.raises(InvalidArgumentError):
        zooadapt.param_groups(model, **kwargs)


def test_decay_counts_steps_below_the_head_positional_signature(model):
    zooadapt.unfreeze(model)
    groups = zooadapt.param_groups(model, 1e-2, 1e-1, 0.7)  # lr, head_lr, decay as the issue writes them
    rates = {g["name"]: g["lr"] for g in groups}
    for k, stage in enumerate(("layer4", "layer3", "layer2", "layer1", "stem"), start=1):
        assert rates[stage] == pytest.approx(1e-2 * 0.7**k), stage
    assert rates["head"] == 1e-1


def test_real_rates_follow_any_scheduler(model):
    opt = torch.optim.SGD(zooadapt.param_groups(model, lr=0.1, head_lr=1.0, decay=0.5))
    before = [g["lr"] for g in opt.param_groups]
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([r * 0.1 for r in before])


class _WithFinalNorm(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.s1 = torch.nn.Linear(3, 3)
        self.s2 = torch.nn.Linear(3, 3)
        self.norm = torch.nn.LayerNorm(3)
        self.head = torch.nn.Linear(3, 2)


def test_parameters_outside_every_stage_form_the_other_group():
    smap = StageMap((Stage("s1", ("s1",)), Stage("s2", ("s2",))), head="head")
    model = _WithFinalNorm()
    groups = zooadapt.param_groups(model, lr=1.0, head_lr=2.0, decay=0.5, weight_decay=0.1, stages=smap)
    by_name = {(g["name"], g["weight_decay"]): g for g in groups}
    assert by_name[("other", 0.0)]["lr"] == 1.0
    assert {id(p) for p in by_name[("other", 0.0)]["params"]} == {id(model.norm.weight), id(model.norm.bias)}
    assert by_name[("s1", 0.1)]["lr"] == 0.25 and by_name[("s2", 0.0)]["lr"] == 0.5
    assert [p for p in by_name[("s1", 0.1)]["params"]] == [model.s1.weight]
    ids = _ids(groups)
    assert sorted(ids) == sorted(id(p) for p in model.parameters())


def test_summary_lists_groups_and_frozen_stages(model):
    groups = zooadapt.param_groups(model, lr=1e-3, head_lr=1e-2, decay=0.5, weight_decay=1e-4)
    table = zooadapt.format_param_groups(groups, model).splitlines()
    assert table[0].split() == ["stage", "tensors", "params", "lr", "weight_decay"]
    rows = {tuple(line.split()[:1] + line.split()[3:]) for line in table[1:]}
    assert ("stem", "frozen", "-") in rows and ("layer1", "frozen", "-") in rows
    assert ("layer4", "0.0005", "0.0001") in rows and ("head", "0.01", "0") in rows
    stem_params = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("conv1", "bn1")))
    assert any(line.split()[0] == "stem" and line.split()[2] == f"{stem_params:,}" for line in table)


def test_add_param_group_with_weight_decay_and_training_step(model):
    opt = torch.optim.SGD(zooadapt.param_groups(model, lr=1e-3), lr=1e-3)
    assert zooadapt.unfreeze(model, "stem") == ("stem",)
    added = zooadapt.add_param_group(opt, model, lr=1e-5, weight_decay=0.01)
    # the same split as param_groups: no weight decay on biases and norm weights
    assert [(g["name"], g["weight_decay"]) for g in added] == [("stem", 0.01), ("stem", 0.0)]
    assert [p for p in added[0]["params"]] == [model.conv1.weight]
    assert {id(p) for p in added[1]["params"]} == {id(model.bn1.weight), id(model.bn1.bias)}
    before = model.conv1.weight.detach().clone()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    assert not torch.equal(model.conv1.weight, before)
    assert all(p.grad is None for p in model.layer1.parameters())


def test_add_param_group_applies_layer_decay_as_param_groups_would(model):
    settings = {"lr": 0.1, "head_lr": 1.0, "decay": 0.5, "weight_decay": 1e-4}
    opt = torch.optim.AdamW(zooadapt.param_groups(model, **settings))
    zooadapt.unfreeze(model, "all")
    added = zooadapt.add_param_group(opt, model, **settings)
    expected = [g for g in zooadapt.param_groups(model, **settings) if g["name"] in ("stem", "layer1")]
    assert [(g["name"], g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in added] == [
        (g["name"], g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in expected]
    assert {g["name"]: g["lr"] for g in added} == {"stem": pytest.approx(0.1 * 0.5**5),
                                                  "layer1": pytest.approx(0.1 * 0.5**4)}
    assert added[0]["name"] == "stem" and added[0]["betas"] == opt.defaults["betas"]  # optimizer defaults filled in


def test_add_param_group_name_overrides_and_bad_optimizer(model):
    opt = torch.optim.SGD(zooadapt.param_groups(model, lr=1e-3))
    zooadapt.unfreeze(model, "layer1")
    assert [g["name"] for g in zooadapt.add_param_group(opt, model, lr=1e-4, name="late")] == ["late"]
    with pytest.raises(InvalidArgumentError, match="torch.optim.Optimizer"):
        zooadapt.add_param_group(zooadapt.param_groups(model, lr=1e-3), model, lr=1e-4)
    with pytest.raises(InvalidArgumentError, match="name="):
        zooadapt.add_param_group(opt, model, lr=1e-4, name=3)


# -- include_frozen: every stage has its group from step 0 ------------------------------------

def test_include_frozen_puts_every_parameter_in_its_stage_group(model):
    groups = zooadapt.param_groups(model, lr=0.1, head_lr=1.0, decay=0.5, weight_decay=1e-4, include_frozen=True)
    ids = _ids(groups)
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    rates = {g["name"]: g["lr"] for g in groups}
    assert rates == {"stem": pytest.approx(0.1 * 0.5**5), "layer1": pytest.approx(0.1 * 0.5**4),
                     "layer2": pytest.approx(0.0125), "layer3": pytest.approx(0.025), "layer4": pytest.approx(0.05),
                     "head": 1.0}
    # the frozen stages' groups are those param_groups gives once they are unfrozen
    zooadapt.unfreeze(model, "all")
    after = zooadapt.param_groups(model, lr=0.1, head_lr=1.0, decay=0.5, weight_decay=1e-4)
    assert [(g["name"], g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in groups] == [
        (g["name"], g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in after]


def test_unfreezing_needs_no_optimizer_surgery_and_schedulers_see_every_group(model):
    opt = torch.optim.AdamW(zooadapt.param_groups(model, lr=0.1, head_lr=0.2, weight_decay=0.5, include_frozen=True))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    frozen = [model.conv1.weight, model.layer1[0].conv1.weight]
    before = [p.detach().clone() for p in frozen]
    x = torch.randn(2, 3, 32, 32)

    def step():
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
        sched.step()

    step()
    step()
    # frozen: no gradient, so AdamW neither moved them (not even by its decoupled weight decay) nor kept state
    assert all(torch.equal(p, b) for p, b in zip(frozen, before))
    assert all(p not in opt.state for p in frozen)
    assert zooadapt.unfreeze(model, "layer1") == ("layer1",)
    step()
    assert not torch.equal(model.layer1[0].conv1.weight, before[1]) and torch.equal(model.conv1.weight, before[0])
    assert model.layer1[0].conv1.weight in opt.state
    # the scheduler built at step 0 has driven layer1's group all along: 0.1 halved three times
    assert {g["name"]: g["lr"] for g in opt.param_groups}["layer1"] == pytest.approx(0.1 * 0.5**3)
    assert len(opt.param_groups) == len(sched.base_lrs)


def test_format_marks_frozen_groups(model):
    groups = zooadapt.param_groups(model, lr=1e-3, include_frozen=True)
    table = zooadapt.format_param_groups(groups, model).splitlines()
    rows = {line.split()[0]: line.split()[3] for line in table[1:]}
    assert rows == {"stem": "frozen@0.001", "layer1": "frozen@0.001", "layer2": "0.001", "layer3": "0.001",
                    "layer4": "0.001", "head": "0.001"}
    assert len(table) == 7  # a frozen stage already in a group is not listed twice


# -- arguments and stage maps that do not fit -------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"lr": float("nan")}, {"lr": float("inf")}, {"lr": -1e-3}, {"lr": True}, {"lr": None}, {"lr": "1e-3"},
    {"lr": 1e-3, "head_lr": float("nan")}, {"lr": 1e-3, "head_lr": -1},
    {"lr": 1e-3, "decay": 1.5}, {"lr": 1e-3, "decay": float("nan")}, {"lr": 1e-3, "decay": "0.7"},
    {"lr": 1e-3, "decay": -0.5},
    {"lr": 1e-3, "weight_decay": -0.1}, {"lr": 1e-3, "weight_decay": float("inf")},
    {"lr": 1e-3, "no_decay_norm_bias": "yes"}, {"lr": 1e-3, "include_frozen": 1},
])
@pytest.mark.slow
def test_bad_arguments_are_refused_by_name(model, kwargs):
    bad = [k for k in kwargs if k != "lr"] or ["lr"]
    with pytest.raises(InvalidArgumentError, match=f"{bad[0]}="):
        zooadapt.param_groups(model, **kwargs)
    if "include_frozen" in kwargs:
        return  # add_param_group has no include_frozen
    opt = torch.optim.SGD(zooadapt.param_groups(model, lr=1e-3))
    with pytest.raises(InvalidArgumentError, match=f"{bad[0]}="):
        zooadapt.add_param_group(opt, model, **kwargs)


def test_stages_argument_must_be_a_stage_map(model):
    with pytest.raises(InvalidArgumentError, match="StageMap"):
        zooadapt.param_groups(model, lr=1e-3, stages={"layer1": "layer1"})


def test_a_stage_map_that_matches_nothing_raises():
    smap = StageMap((Stage("s1", ("encoder.s1",)),), head="classifier")
    with pytest.raises(InvalidArgumentError, match="no parameter of this _WithFinalNorm"):
        zooadapt.param_groups(_WithFinalNorm(), lr=1e-3, stages=smap)


def test_compiled_model_groups_honour_head_lr(model):
    compiled = torch.compile(model, backend="eager")
    groups = zooadapt.param_groups(compiled, lr=1e-3, head_lr=1e-2)
    assert [(g["name"], g["lr"]) for g in groups] == [
        ("layer2", 1e-3), ("layer3", 1e-3), ("layer4", 1e-3), ("head", 1e-2)]
    assert [id(p) for p in groups[-1]["params"]] == [id(model.fc.weight), id(model.fc.bias)]


# -- add_param_group adds exactly the groups param_groups would make of the same parameters ---------

def _torchvision(arch, family):
    import torchvision

    net = getattr(torchvision.models, arch)(num_classes=4)
    zooadapt.attach(net, family=family)
    return net


def _with_final_norm():
    net = _WithFinalNorm()
    zooadapt.attach(net, stages=StageMap((Stage("s1", ("s1",)), Stage("s2", ("s2",))),
                                                  head="head"))
    return net


MODELS = {
    "resnet18": (lambda: _torchvision("resnet18", "resnet"), "all", "layer3:"),
    "mobilenet_v2": (lambda: _torchvision("mobilenet_v2", "mobilenet_v2"), "all", "stride16:"),
    "final_norm": (_with_final_norm, "all", "all"),
}
OPTIMIZERS = {  # the optimizer the user built over the trainable parameters, and the decay it applies
    "sgd": (lambda m: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1), None),
    "adamw default": (lambda m: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=0.1), 0.01),
    "adamw param_groups": (lambda m: torch.optim.AdamW(zooadapt.param_groups(m, lr=0.1, weight_decay=0.05)), 0.05),
    "sgd all 0 over a default": (lambda m: torch.optim.SGD(zooadapt.param_groups(m, lr=0.1, weight_decay=0.0),
                                                           weight_decay=0.3), 0.0),
}
SETTINGS = [
    {"lr": 1e-3},
    {"lr": 1e-3, "weight_decay": 0.02},
    {"lr": 1e-3, "head_lr": 1e-2, "decay": 0.5, "weight_decay": 0.02},
    {"lr": 1e-3, "decay": 0.7, "no_decay_norm_bias": False},
]


def _rows(groups, default_decay=None):
    """Name, rate, weight decay (the optimizer's default where the group has none) and tensors of each group."""
    return [(g["name"], pytest.approx(g["lr"]), g.get("weight_decay", default_decay), [id(p) for p in g["params"]])
            for g in groups]


@pytest.mark.slow
@pytest.mark.parametrize("which", MODELS)
def test_add_param_group_splits_exactly_as_param_groups(which):
    build, frozen, thawed = MODELS[which]
    for opt_name, (make, applied) in OPTIMIZERS.items():
        for settings in SETTINGS:
            model = build()
            zooadapt.freeze(model, frozen)
            opt = make(model)
            held = {id(p) for g in opt.param_groups for p in g["params"]}
            zooadapt.unfreeze(model, thawed)
            added = zooadapt.add_param_group(opt, model, **settings)
            # param_groups of the same settings, the weight decay being the optimizer's when none is given
            wd = settings.get("weight_decay", applied)
            wanted = [{**g, "params": [p for p in g["params"] if id(p) not in held]}
                      for g in zooadapt.param_groups(model, **{**settings, "weight_decay": wd})]
            wanted = [g for g in wanted if g["params"]]
            where = f"{which}, {opt_name}, {settings}"
            assert added and _rows(added) == _rows(wanted, opt.defaults["weight_decay"]), where
            # what each added group really gets from the optimizer: no bias or norm weight decays
            for g in added:
                if settings.get("no_decay_norm_bias", True) and any(p.ndim <= 1 for p in g["params"]):
                    assert g["weight_decay"] == 0.0, where
            assert {id(p) for g in opt.param_groups for p in g["params"]} == {
                id(p) for p in model.parameters() if p.requires_grad}, where


def test_add_param_group_with_the_optimizers_default_decay_leaves_biases_undecayed(model):
    """AdamW's default weight_decay=0.01 used to land on biases and BatchNorm weights of added groups."""
    opt = torch.optim.AdamW(zooadapt.param_groups(model, lr=1e-3, weight_decay=0.05))
    zooadapt.unfreeze(model, "layer1")
    added = zooadapt.add_param_group(opt, model, lr=1e-4)
    assert [(g["name"], g["weight_decay"], sorted({p.ndim for p in g["params"]})) for g in added] == [
        ("layer1", 0.05, [4]), ("layer1", 0.0, [1])]


def test_add_param_group_refuses_to_guess_between_decays(model):
    opt = torch.optim.AdamW([{"params": [model.fc.weight], "weight_decay": 0.1},
                             {"params": [model.fc.bias], "weight_decay": 0.2}])
    zooadapt.unfreeze(model, "layer1")
    with pytest.raises(InvalidArgumentError, match=r"different rates \(0.1, 0.2\).*weight_decay="):
        zooadapt.add_param_group(opt, model, lr=1e-4)
    assert [g["weight_decay"] for g in zooadapt.add_param_group(opt, model, lr=1e-4, weight_decay=0.1)][:2] == [
        0.1, 0.0]

"""Building on meta: parameters without values, real buffers, and nothing another thread can see.

``build_on_meta`` skips initialisers with a ``TorchFunctionMode`` (a per-thread mode stack), so
while one thread builds, every other thread must find ``torch.Tensor``'s methods and
``torch.nn.init``'s functions as torch ships them, and get torch's usual errors and values.
Later builds copy a kept skeleton; each copy must be a model of its own.
"""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn as nn

from zooadapt.loading import meta_build
from zooadapt.plugin_api import Family, Stage, StageMap, get_registry

_METHODS = meta_build._INPLACE_METHODS
_INITS = [n for n in meta_build._INIT_FUNCTIONS if hasattr(nn.init, n)]


def _originals() -> tuple[dict[str, object], dict[str, object]]:
    return ({n: torch.Tensor.__dict__.get(n, getattr(torch._C.TensorBase, n, None)) for n in _METHODS},
            {n: getattr(nn.init, n) for n in _INITS})


class _Paused(nn.Module):
    """A network whose constructor waits in the middle of the build until the test lets it go."""

    inside = threading.Event()
    release = threading.Event()
    seen_in_build: dict[str, bool] = {}

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        plain = torch.empty(64)
        nn.init.normal_(plain)  # not a parameter: initialised as usual, in the building thread too
        type(self).seen_in_build["plain tensor initialised"] = bool(plain.std() > 0.5)
        type(self).inside.set()
        assert type(self).release.wait(30)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def _paused_family() -> Family:
    # ``fresh`` takes a list, which cannot be a skeleton key: the constructor runs every time
    return Family(name="paused", build=lambda arch, num_classes=4, fresh=None: _Paused(num_classes),
                  stages=StageMap((Stage("conv", ("conv",)),), head="fc"))


def test_another_thread_sees_torch_untouched_during_a_build():
    methods, inits = _originals()
    _Paused.inside.clear()
    _Paused.release.clear()
    built: list[nn.Module] = []
    thread = threading.Thread(target=lambda: built.append(
        meta_build.build_on_meta(_paused_family(), "paused", 4, fresh=[])))
    thread.start()
    try:
        assert _Paused.inside.wait(30), "the build never started"
        # the build is now paused inside the constructor, its mode active in its own thread
        assert _originals() == (methods, inits)
        meta = torch.empty(3, device="meta")
        with pytest.raises(RuntimeError):
            meta.add_(torch.empty(4, device="meta"))  # an invalid in-place op still fails here
        assert meta.add_(torch.empty(3, device="meta")) is meta
        param = nn.Parameter(torch.zeros(256))
        with torch.no_grad():
            nn.init.normal_(param)  # a parameter in this thread is initialised as usual
        assert param.std() > 0.5
        assert torch.overrides._get_current_function_mode_stack() == []
    finally:
        _Paused.release.set()
        thread.join(60)
    model = built[0]
    assert _Paused.seen_in_build["plain tensor initialised"]
    assert all(p.is_meta for p in model.parameters()) and model.fc.weight.shape == (4, 8)
    assert _originals() == (methods, inits)


def test_initialisers_skip_parameters_only_inside_the_mode():
    with meta_build.skip_parameter_init():
        param = nn.Parameter(torch.zeros(100))
        nn.init.normal_(param)
        param.data.normal_()
        with torch.no_grad():
            param.mul_(3).add_(1)
        plain = torch.zeros(100)
        plain.normal_()
        assert torch.equal(param, torch.zeros(100))  # untouched: parameters come from the checkpoint
        assert plain.std() > 0.5  # buffers and temporaries are computed as usual
    with torch.no_grad():
        param.add_(1)
    assert torch.equal(param, torch.ones(100))  # after the block, parameters are ordinary again


def test_parameters_on_meta_buffers_real_and_computed():
    family = get_registry().family("resnet")
    model = meta_build.build_on_meta(family, "resnet18", 4)
    assert all(p.is_meta for p in model.parameters())
    assert not any(b.is_meta for b in model.buffers())
    assert torch.equal(model.bn1.running_var, torch.ones(64))


@pytest.mark.slow
def test_non_persistent_buffers_match_a_normal_build():
    """Swin's relative-position index is computed in __init__ and never saved: it must be real."""
    import timm

    family = get_registry().family("timm")
    arch = "swin_tiny_patch4_window7_224"
    ours = meta_build.build_on_meta(family, arch, 3)
    again = meta_build.build_on_meta(family, arch, 3)  # from the kept skeleton
    reference = timm.create_model(arch, num_classes=3)
    expected = dict(reference.named_buffers())
    assert expected
    for model in (ours, again):
        got = dict(model.named_buffers())
        assert set(got) == set(expected)
        for name, tensor in expected.items():
            assert torch.equal(got[name], tensor), name


def test_copies_of_a_skeleton_are_independent():
    family = get_registry().family("resnet")
    meta_build.clear_skeletons()
    a = meta_build.build_on_meta(family, "resnet18", 4)
    b = meta_build.build_on_meta(family, "resnet18", 4)
    assert len(meta_build._skeletons) == 1
    assert {id(m) for m in a.modules()}.isdisjoint(id(m) for m in b.modules())
    assert {id(p) for p in a.parameters()}.isdisjoint(id(p) for p in b.parameters())
    a.bn1.running_mean.add_(5)
    assert torch.equal(b.bn1.running_mean, torch.zeros(64))
    a.layer1.register_forward_hook(lambda *args: None)
    a.fc = nn.Linear(512, 7)
    a.layer2[0].conv1.weight.requires_grad_(False)
    c = meta_build.build_on_meta(family, "resnet18", 4)
    assert not c.layer1._forward_hooks and c.fc.out_features == 4 and c.layer2[0].conv1.weight.requires_grad
    assert [n for n, _ in c.named_parameters()] == [n for n, _ in b.named_parameters()]


def test_tied_parameters_stay_tied_in_copies():
    class Tied(nn.Module):
        def __init__(self, num_classes: int = 5) -> None:
            super().__init__()
            self.embed = nn.Linear(4, num_classes, bias=False)
            self.out = nn.Linear(4, num_classes, bias=False)
            self.out.weight = self.embed.weight

    family = Family(name="tied", build=lambda arch, num_classes=5: Tied(num_classes),
                    stages=StageMap((Stage("embed", ("embed",)),), head="out"))
    for _ in range(2):
        model = meta_build.build_on_meta(family, "tied", 5)
        assert model.out.weight is model.embed.weight and model.out.weight.is_meta


def test_options_that_cannot_be_a_key_build_every_time():
    calls: list[int] = []

    def build(arch, num_classes=2, widths=(4,)):
        calls.append(1)
        return nn.Sequential(nn.Linear(widths[0], num_classes))

    family = Family(name="counted", build=build, stages=StageMap((), head="0"))
    meta_build.build_on_meta(family, "x", 2, widths=[4])
    meta_build.build_on_meta(family, "x", 2, widths=[4])
    assert len(calls) == 2
    meta_build.build_on_meta(family, "x", 2, widths=(4,))
    meta_build.build_on_meta(family, "x", 2, widths=(4,))
    assert len(calls) == 3


def test_modules_with_hooks_or_module_attributes_are_deep_copied():
    """A hook bound to its module, or an attribute holding a module outside ``_modules``, must
    point at the copy's own modules, not at the kept skeleton's."""

    class Hooked(nn.Module):
        def __init__(self, num_classes: int = 3) -> None:
            super().__init__()
            self.fc = nn.Linear(4, num_classes)
            self.calls = 0
            self.register_forward_pre_hook(self._count)
            object.__setattr__(self, "alias", self.fc)  # a module reachable outside _modules

        def _count(self, module, args):
            self.calls += 1

        def forward(self, x):
            return self.alias(x)

    family = Family(name="hooked", build=lambda arch, num_classes=3: Hooked(num_classes),
                    stages=StageMap((), head="fc"))
    first = meta_build.build_on_meta(family, "hooked", 3)
    second = meta_build.build_on_meta(family, "hooked", 3)
    assert second.alias is second.fc and second.alias is not first.fc
    hook = next(iter(second._forward_pre_hooks.values()))
    assert hook.__self__ is second


def test_a_family_can_ask_to_be_built_every_time():
    calls: list[int] = []

    def build(arch, num_classes=2):
        calls.append(1)
        return nn.Sequential(nn.Linear(4, num_classes))

    family = Family(name="fresh", build=build, stages=StageMap((), head="0"), copy_skeleton=False)
    for _ in range(3):
        meta_build.build_on_meta(family, "x", 2)
    assert len(calls) == 3


def _module_with(value: object) -> nn.Module:
    module = nn.Linear(2, 2)
    object.__setattr__(module, "extra", value)  # outside _parameters, _buffers and _modules
    return module


@pytest.mark.parametrize("value, plain", [
    (None, True), (True, True), (3, True), (0.5, True), ("name", True), ((3, 3), True), ([1, 2], True),
    ({"a": 1}, True), ({1, 2}, True),
    (torch.zeros(1), False), ([nn.ReLU()], False), ({"t": torch.zeros(1)}, False), ((1, nn.ReLU()), False),
    ({nn.ReLU()}, False),
])
def test_a_module_is_plain_unless_an_attribute_refers_into_a_tree(value, plain):
    """What decides between the fast one-level copy and ``copy.deepcopy``: every attribute kind
    that can hold a module or a tensor is looked into, plain values (flags, sizes, names) are not."""
    assert meta_build._plain(_module_with(value)) is plain


def test_a_bound_method_or_partial_of_a_module_is_not_plain():
    import functools

    relu = nn.ReLU()
    assert not meta_build._plain(_module_with(relu.forward))
    assert not meta_build._plain(_module_with(functools.partial(print, relu)))
    assert not meta_build._plain(_module_with(functools.partial(print, key=torch.zeros(1))))
    assert meta_build._plain(_module_with(functools.partial(print, 3)))

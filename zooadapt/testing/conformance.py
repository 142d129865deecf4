"""The conformance check every family must pass, for plugin authors' own tests.

    from zooadapt.testing.conformance import check_family

    def test_my_family_conforms():
        check_family("squeezenet")                 # a registered family, its first architecture
        check_family(MY_FAMILY, arch="mynet_s")    # or a Family object not registered yet

It checks what zooadapt relies on, with seeded weights and no network:

1. the architecture builds on ``meta``, as ``load`` builds it (tensors then come from seeded
   weights: no time goes into initialisations that are thrown away);
2. the stage map covers every parameter exactly once, the head separately, and no stage is empty;
3. a build for a new class count differs from the published one only in the head (the old
   head is dropped, nothing else), and its forward pass returns that many classes;
4. the model's own state dict round-trips through the load plan and ``load``'s meta path exactly,
   every key by its own name;
5. freezing every stage leaves exactly the head trainable, and frozen BatchNorm stays in eval
   mode after ``model.train()``.

A failure raises ``ConformanceError`` (an ``AssertionError``, so pytest shows it as a test
failure) listing every problem found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..contract.family import Family
from ..contract.stages import StageMap

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["ConformanceError", "ConformanceReport", "check_family"]


class ConformanceError(AssertionError):
    """A family does not meet zooadapt's contract; the message lists each problem."""


@dataclass
class ConformanceReport:
    """What was checked, for a test to assert on further or to print."""

    family: str
    arch: str
    stages: tuple[str, ...]
    head: str
    parameters: int
    head_parameters: int
    passed: list[str] = field(default_factory=list)


def _under(key: str, prefix: str) -> bool:
    return bool(prefix) and (key == prefix or key.startswith(prefix + "."))


def _in_head(key: str, smap: StageMap) -> bool:
    """Under the head or one of the classifiers that go with it (``StageMap.extra_heads``)."""
    return any(_under(key, h) for h in smap.heads)


def _owners(key: str, smap: StageMap) -> list[str]:
    owners = [s.name for s in smap.stages if any(_under(key, p) for p in s.prefixes)]
    return owners + (["head"] if _in_head(key, smap) else [])


def _short(items: list[str], n: int = 6) -> str:
    return ", ".join(items[:n]) + (f", … (+{len(items) - n})" if len(items) > n else "")


class _Checker:
    def __init__(self, family: Family, arch: str, num_classes: int, forward: bool) -> None:
        self.family, self.arch, self.forward = family, arch, forward
        self.default = family.default_num_classes
        self.classes = num_classes if num_classes != self.default else num_classes + 1
        self.problems: list[str] = []
        self.passed: list[str] = []

    def fail(self, message: str) -> None:
        self.problems.append(message)

    def raise_if_failed(self) -> None:
        if self.problems:
            raise ConformanceError(
                f"family {self.family.name!r} ({self.arch}) fails zooadapt's conformance checks:\n  - "
                + "\n  - ".join(self.problems)
            )

    def build(self, num_classes: int) -> nn.Module | None:
        """The architecture with parameters on ``meta``, as ``zooadapt.load`` builds it."""
        from ..loading.meta_build import build_on_meta

        try:
            return build_on_meta(self.family, self.arch, num_classes)
        except Exception as exc:
            self.fail(f"build({self.arch!r}, num_classes={num_classes}) on meta raised {type(exc).__name__}: {exc}")
            return None

    def stage_map(self, model: nn.Module) -> StageMap | None:
        try:
            smap = self.family.stage_map(model)
        except Exception as exc:
            self.fail(f"the stage map could not be read from the model: {type(exc).__name__}: {exc}")
            return None
        if not isinstance(smap, StageMap):
            self.fail(f"stages must be a StageMap (or a function returning one), got {type(smap).__name__}")
            return None
        return smap

    # -- 2. stages cover every parameter exactly once ------------------------------------
    def coverage(self, model: nn.Module, smap: StageMap) -> tuple[int, int]:
        uncovered, doubled, counts = [], [], dict.fromkeys(smap.names, 0)
        total = head = 0
        for name, param in model.named_parameters():
            owners = _owners(name, smap)
            total += param.numel()
            if not owners:
                uncovered.append(name)
            elif len(owners) > 1:
                doubled.append(f"{name} ({' and '.join(owners)})")
            elif owners[0] == "head":
                head += param.numel()
            else:
                counts[owners[0]] += 1
        if uncovered:
            self.fail(f"{len(uncovered)} parameters belong to no stage and not to the head: {_short(uncovered)}; "
                      "add their modules to a stage (a 'stem' or 'final' stage if nothing else fits)")
        if doubled:
            self.fail(f"{len(doubled)} parameters belong to more than one stage: {_short(doubled)}")
        if not smap.head or head == 0:
            self.fail(f"the head {smap.head!r} holds no parameters; it must name the classifier module")
        empty = [n for n, c in counts.items() if c == 0]
        if empty:
            self.fail(f"stages with no parameters (freezing them does nothing): {', '.join(empty)}")
        if not (uncovered or doubled or empty) and head:
            self.passed.append("stages cover every parameter exactly once")
        return total, head

    # -- 3. the head is replaced for a new class count -----------------------------------
    def head_replaced(self, reference: nn.Module, smap: StageMap) -> None:
        import torch

        from ..loading.plan import make_plan

        model = self.build(self.classes)
        if model is None:
            return
        new_map = self.stage_map(model)
        if new_map is None:
            return
        if new_map.names != smap.names or new_map.head != smap.head:
            self.fail(f"the stage map changes with num_classes: {smap.describe()} vs {new_map.describe()}")
        plan = make_plan(_shapes(reference), _shapes(model), head=new_map.head, rules=self.family.key_rules,
                         extra_heads=new_map.extra_heads)
        assert plan is not None  # None only for only_if_it_fits=True
        outside = [m.checkpoint_key for m in plan.dropped if not _in_head(m.checkpoint_key, new_map)]
        problems = plan.problems() + [f"unexpected: {m.checkpoint_key}" for m in plan.unexpected]
        if problems or outside:
            self.fail(f"a {self.classes}-class build differs from the {self.default}-class one outside the head "
                      f"{new_map.head!r}: {_short(problems + outside)}")
        elif not plan.dropped:
            self.fail(f"num_classes={self.classes} did not change the head {new_map.head!r}: build() must pass "
                      "num_classes to the classifier")
        else:
            self.passed.append(f"head replaced for {self.classes} classes")
        if self.forward:
            from .weights import seeded_state_dict

            model.load_state_dict(seeded_state_dict(model, seed=7), assign=True)
            size = self.family.data.input_size
            model.eval()
            try:
                with torch.no_grad():
                    out = model(torch.randn(1, *size))
            except Exception as exc:
                self.fail(f"forward pass on a 1x{'x'.join(map(str, size))} input raised {type(exc).__name__}: {exc}")
                return
            if tuple(out.shape) != (1, self.classes):
                self.fail(f"forward returns shape {tuple(out.shape)}, expected (1, {self.classes})")
            else:
                self.passed.append("forward returns the new class count")

    # -- 4. round trip of its own state dict ---------------------------------------------
    def round_trip(self, reference: nn.Module) -> nn.Module | None:
        import torch

        from ..loading.pipeline import _model_shapes
        from ..loading.placement import assign_planned, materialise
        from ..loading.plan import make_plan
        from .weights import seeded_state_dict

        state = seeded_state_dict(reference, seed=1234)
        model = self.build(self.default)
        smap = self.stage_map(model) if model is not None else None
        if model is None or smap is None:
            return None
        shapes, params = _model_shapes(model)
        try:
            plan = make_plan({k: tuple(v.shape) for k, v in state.items()}, shapes, parameters=params,
                             rules=self.family.key_rules, head=smap.head, extra_heads=smap.extra_heads)
        except Exception as exc:
            self.fail(f"planning its own state dict raised {type(exc).__name__}: {exc}")
            return None
        assert plan is not None  # None only for only_if_it_fits=True
        renamed = [f"{m.checkpoint_key} -> {m.model_key}" for m in plan.loaded if m.renamed]
        if renamed:
            self.fail(f"key rules rename keys that are already right: {_short(renamed)}")
        if plan.problems() or plan.unexpected or plan.dropped or plan.coverage != 1.0:
            self.fail(f"its own state dict does not load completely (coverage {plan.coverage:.2%}): "
                      f"{_short(plan.problems() + [m.checkpoint_key for m in plan.unexpected + plan.dropped])}")
            return None
        assign_planned(model, plan, state)
        materialise(model)
        loaded = model.state_dict()
        differ = [k for k, v in state.items() if not torch.equal(loaded[k], v)]
        if differ:
            self.fail(f"round trip changed {len(differ)} tensors: {_short(differ)}")
        still_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if still_meta:
            self.fail(f"tensors left on meta after loading: {_short(still_meta)}")
        if not (differ or still_meta or renamed):
            self.passed.append("own state dict round-trips exactly")
        return model

    # -- 5. freezing every stage leaves only the head ------------------------------------
    def freeze_all(self, model: nn.Module, smap: StageMap) -> None:
        from torch.nn.modules.batchnorm import _BatchNorm

        from ..tuning.freezing import freeze

        freeze(model, "all", stages=smap)
        model.train()
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        wrong = [n for n in trainable if not _in_head(n, smap)]
        frozen_head = [n for n, p in model.named_parameters() if _in_head(n, smap) and not p.requires_grad]
        drifting = [n for n, m in model.named_modules()
                    if isinstance(m, _BatchNorm) and m.training and not _in_head(n, smap)]
        if wrong:
            self.fail(f"after freezing every stage these stay trainable: {_short(wrong)}")
        if frozen_head or not trainable:
            self.fail(f"freezing every stage froze the head: {_short(frozen_head)}")
        if drifting:
            self.fail(f"frozen BatchNorm layers still update statistics in train(): {_short(drifting)}")
        if not (wrong or frozen_head or drifting) and trainable:
            self.passed.append("freezing every stage leaves only the head trainable")


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items()}


def check_family(
    family: str | Family,
    arch: str | None = None,
    *,
    num_classes: int = 7,
    forward: bool = True,
) -> ConformanceReport:
    """Check a family (a registered name or a ``Family``) on one architecture (default: its first).

    ``num_classes`` is the new class count the head is rebuilt for; ``forward=False`` skips
    the forward pass (for architectures too large to run in a unit test).
    Raises ``ConformanceError`` listing every problem; returns what was checked otherwise.
    """
    if isinstance(family, str):
        from ..host.registry import get_registry

        family = get_registry().family(family)
    if arch is None:
        if not family.architectures:
            raise ConformanceError(f"family {family.name!r} declares no architectures; pass arch= to check one")
        arch = family.architectures[0]
    checker = _Checker(family, arch, num_classes, forward)
    reference = checker.build(family.default_num_classes)
    checker.raise_if_failed()
    assert reference is not None
    checker.passed.append("builds on meta")
    smap = checker.stage_map(reference)
    checker.raise_if_failed()
    assert smap is not None
    total, head = checker.coverage(reference, smap)
    checker.head_replaced(reference, smap)
    model = checker.round_trip(reference)
    if model is not None:
        checker.freeze_all(model, smap)
    checker.raise_if_failed()
    return ConformanceReport(family.name, arch, smap.names, smap.head, total, head, checker.passed)

"""Bounded work for hostile key names: planning is linear in the total key length.

A key of hundreds of thousands of characters (a crafted file) used to cost time growing with the
square of its length (a 256 kB key of dots: about 4 minutes here), through three walks over
every dotted prefix of every key: wrapper discovery's prefix counts, the head/skip test, and
``StripPrefix`` cutting one repetition at a time. Each is now bounded by the depth the planner
can use. The limits below are hang guards tens of times above the measured cost (0.1 s for
256 kB), not speed targets.
"""

from __future__ import annotations

import time

import generators as g
import pytest

import zooadapt
from zooadapt.contract.rules import StripPrefix

HANG_GUARD_S = 10.0


@pytest.fixture(scope="module")
def resnet_shapes() -> dict[str, tuple[int, ...]]:
    return g.shapes_of(g.seeded_weights("resnet18", 0))


@pytest.mark.parametrize("key", ["x." * 128_000, "module." * 40_000 + "conv1.weight", "a" * 256_000,
                                 "fc." * 80_000 + "weight"], ids=["dots", "module-repeated", "no-dots", "head-deep"])
def test_a_huge_key_is_planned_in_linear_time(resnet_shapes, key):
    state = {**resnet_shapes, key: (3,)}
    start = time.perf_counter()
    plan = zooadapt.plan_for("resnet18", state)
    took = time.perf_counter() - start
    assert took < HANG_GUARD_S, f"{len(key):,}-character key planned in {took:.1f} s"
    assert plan.fits and key not in {m.checkpoint_key for m in plan.loaded}
    assert len(plan.loaded) == len(resnet_shapes)


def test_strip_prefix_cuts_every_repetition_at_once():
    rule = StripPrefix("module.")
    assert rule.rename("module." * 50_000 + "fc.weight") == "fc.weight"
    assert rule.rename("module.module") == "module"  # a last, incomplete repetition stays
    assert rule.rename("conv1.weight") is None


def test_many_keys_under_a_deep_prefix_plan_like_few(resnet_shapes):
    """The network under a 40-level wrapper, deeper than wrappers are looked for (four levels):
    paired module by module in order (every name and shape checked), not searched level by level."""
    deep = "".join(f"w{i}." for i in range(40))
    start = time.perf_counter()
    plan = zooadapt.plan_for("resnet18", {deep + k: s for k, s in resnet_shapes.items()})
    assert time.perf_counter() - start < HANG_GUARD_S
    assert plan.fits and {m.checkpoint_key: m.model_key for m in plan.loaded} == {deep + k: k for k in resnet_shapes}

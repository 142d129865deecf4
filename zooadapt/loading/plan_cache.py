"""Plans remembered per process: the same checkpoint into the same model is planned once.

A plan depends only on names and shapes: the checkpoint's keys and shapes in file order, the
model's, the rules, the head and skipped parts, and the layouts the plugins register. A sweep,
a notebook cell run again or a test suite loads the same file into the same architecture many
times; for a small model, planning (about 300 keys through a family's rules) is a third of a
load. The key is everything the plan is made from, compared by value, so a hit is the plan
``adapt`` would make again; only plans that fit are kept (a failure is diagnosed afresh, and
its hints may depend on the registry). Rules that are not frozen dataclasses (a user's own
``KeyRule`` subclass with state of its own) are not compared by value, so such plans are never
kept. Callers receive a copy: they add notes and the weight set to the plan they are given.
Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping, Sequence

from ..contract.caches import ProcessCache
from ..contract.rules import KeyRule
from .plan import LoadPlan

__all__ = ["PlanCache", "plan_key"]

Shape = tuple[int, ...]


def _by_value(rule: KeyRule) -> bool:
    params = getattr(type(rule), "__dataclass_params__", None)
    return params is not None and params.frozen


def plan_key(checkpoint: Mapping[str, Shape], target: Hashable, *rule_lists: Sequence[KeyRule]) -> Hashable | None:
    """The cache key for planning ``checkpoint`` into ``target`` (the model's shapes and the options,
    hashable) with each list of ``rule_lists`` in its place; None when some part cannot be
    compared by value."""
    if not all(_by_value(r) for rules in rule_lists for r in rules):
        return None
    key = (tuple(checkpoint.items()), target, *(tuple(rules) for rules in rule_lists))
    try:
        hash(key)
    except TypeError:  # a shape given as a list, an unhashable option: plan without the cache
        return None
    return key


def _copy(plan: LoadPlan) -> LoadPlan:
    """A plan whose lists and dictionaries can be changed without touching the original (the
    mappings themselves are frozen)."""
    return dataclasses.replace(
        plan, mappings=list(plan.mappings), missing=list(plan.missing), new_head=list(plan.new_head),
        defaulted=list(plan.defaulted), skipped_model_keys=list(plan.skipped_model_keys),
        converters=dict(plan.converters), fused=dict(plan.fused), notes=list(plan.notes), hints=list(plan.hints),
        tied=dict(plan.tied))


class PlanCache:
    """The last ``size`` plans that fit, by key (least recently used goes first); thread-safe.
    Registered as a process-wide cache: ``zooadapt.clear_caches()`` empties it."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._plans: ProcessCache[Hashable, LoadPlan] = ProcessCache(
            "plans", size, "the checkpoint's keys and shapes in file order, the model's shapes and the options, "
            "the rules (frozen, compared by value) and the plugins' layouts")

    def get(self, key: Hashable | None) -> LoadPlan | None:
        if key is None:
            return None
        plan = self._plans.get(key)
        return None if plan is None else _copy(plan)

    def put(self, key: Hashable | None, plan: LoadPlan) -> None:
        if key is None or not plan.fits:
            return
        self._plans.put(key, _copy(plan))

    def clear(self) -> None:
        self._plans.clear()

    def __len__(self) -> int:
        return len(self._plans)

"""What a load did: the plan plus what happened, attached to the model as ``model.zooadapt``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .plan import LoadPlan
from .stages import StageMap

__all__ = ["LoadReport", "ModelInfo"]


@dataclass
class LoadReport:
    model: str
    family: str
    arch: str
    source: str | None
    """Where the weights came from (``hf://repo/file@rev``, a URL or a path); None when random."""
    path: str | None
    commit: str | None
    plan: LoadPlan | None
    num_classes: int
    """Classes of the head; 0 for a features-only backbone, -1 for a model the user built."""
    frozen: tuple[str, ...] = ()
    trainable_params: int = 0
    total_params: int = 0
    seconds: float = 0.0

    @property
    def coverage(self) -> float:
        return self.plan.coverage if self.plan else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "family": self.family, "arch": self.arch, "source": self.source,
            "path": self.path, "commit": self.commit, "num_classes": self.num_classes,
            "frozen": list(self.frozen), "trainable_params": self.trainable_params,
            "total_params": self.total_params, "seconds": round(self.seconds, 4),
            **(self.plan.to_dict() if self.plan else {"coverage": 0.0}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        head = {0: "features only, no head", -1: "into your model"}.get(self.num_classes, f"{self.num_classes} classes")
        lines = [f"zooadapt: {self.model} ({self.family}/{self.arch}), {head}"]
        if self.plan is None:
            lines.append("  weights: random initialisation (pretrained=False)")
        else:
            p = self.plan
            lines.append(f"  weights: {self.source}" + (f" (commit {self.commit[:12]})" if self.commit else ""))
            lines.append(f"  loaded {len(p.loaded)} tensors, {p.coverage:.2%} of parameters from the checkpoint")
            renamed = p.renamed
            if renamed:
                by_rule: dict[str, int] = {}
                for m in renamed:
                    for r in m.rules:
                        by_rule[r] = by_rule.get(r, 0) + 1
                lines.append(f"  renamed {len(renamed)}: " + ", ".join(f"{r} x{n}" for r, n in by_rule.items()))
            if p.dropped:
                lines.append(f"  dropped old head: {', '.join(m.checkpoint_key for m in p.dropped)}")
            if p.new_head:
                lines.append(f"  new head: {', '.join(p.new_head)}")
            for label, items in (("skipped", p.skipped_model_keys), ("missing", p.missing),
                                 ("unexpected", [m.checkpoint_key for m in p.unexpected]),
                                 ("mismatched", [m.checkpoint_key for m in p.mismatched]),
                                 ("defaulted", p.defaulted)):
                if items:
                    shown = ", ".join(items[:6]) + (f", … (+{len(items) - 6})" if len(items) > 6 else "")
                    lines.append(f"  {label} {len(items)}: {shown}")
        lines.append(f"  frozen: {', '.join(self.frozen) or 'nothing'}; trainable "
                     f"{self.trainable_params:,} of {self.total_params:,} parameters")
        lines.append(f"  took {self.seconds * 1000:.0f} ms")
        return "\n".join(lines)


@dataclass
class ModelInfo:
    """zooadapt's knowledge about a model it built, so later calls need not be told again."""

    name: str
    family: str
    arch: str
    stages: StageMap
    num_classes: int
    frozen: tuple[str, ...] = ()
    bn: str = "frozen"
    report: LoadReport | None = None
    source: str | None = None
    revision: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

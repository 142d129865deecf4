"""What a load did: the plan plus what happened, attached to the model as ``model.zooadapt``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..contract.stages import StageMap
from .plan import LoadPlan

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
    num_classes: int | None
    """Classes of the head; None when there is none (``target`` says what was built instead)."""
    frozen: tuple[str, ...] = ()
    trainable_params: int = 0
    total_params: int = 0
    seconds: float = 0.0
    target: str = "classifier"
    """``classifier``, ``embeddings`` (``num_classes=0``), ``features`` (``features_only``) or ``your model``."""
    device: str | None = None

    @property
    def coverage(self) -> float:
        return self.plan.coverage if self.plan else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "family": self.family, "arch": self.arch, "source": self.source,
            "path": self.path, "commit": self.commit, "num_classes": self.num_classes, "target": self.target,
            "device": self.device,
            "frozen": list(self.frozen), "trainable_params": self.trainable_params,
            "total_params": self.total_params, "seconds": round(self.seconds, 4),
            **(self.plan.to_dict() if self.plan else {"coverage": 0.0}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        head = {"features": "features only, no head", "embeddings": "pooled embeddings, no head",
                "your model": "into your model"}.get(self.target, f"{self.num_classes} classes")
        lines = [f"zooadapt: {self.model} ({self.family}/{self.arch}), {head}"]
        if self.plan is None:
            lines.append("  weights: random initialisation (pretrained=False)")
        else:
            p = self.plan
            lines.append(f"  weights: {self.source}" + (f" (commit {self.commit[:12]})" if self.commit else ""))
            if p.weight_set:
                label = "weight set" if p.weight_set.startswith("'") else "checkpoint"  # else: how it was read
                lines.append(f"  {label}: {p.weight_set}")
            lines.append(f"  loaded {len(p.loaded)} tensors, {p.coverage:.2%} of parameters from the checkpoint")
            lines += [f"  note: {n}" for n in p.notes]
            renamed = p.renamed
            if renamed:
                by_rule: dict[str, int] = {}
                for m in renamed:
                    for r in m.rules:
                        by_rule[r] = by_rule.get(r, 0) + 1
                ranked = sorted(by_rule.items(), key=lambda rn: -rn[1])
                shown = ", ".join(f"{r} x{n}" for r, n in ranked[:3])
                more = f", and {len(ranked) - 3} more rules (plan.rule_counts())" if len(ranked) > 3 else ""
                lines.append(f"  renamed {len(renamed)}: {shown}{more}")
            for label, items in p.outcome_groups():
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
    num_classes: int | None
    """Classes of the head; None for a headless model (``num_classes=0`` or ``features_only``)."""
    frozen: tuple[str, ...] = ()
    bn: str = "frozen"
    report: LoadReport | None = None
    source: str | None = None
    revision: str | None = None
    num_features: int | None = None
    """Width of the pooled embedding the removed head took (``num_classes=0``)."""
    freeze_spec: Any = None
    """The ``freeze=`` the model was loaded with (saved with it)."""
    features_only: bool = False
    out_stages: tuple[str, ...] | None = None
    base: dict[str, Any] | None = None
    """For a reloaded model: where its base weights came from (``source``, ``revision``)."""
    data: dict[str, Any] | None = None
    """For a reloaded model: the preprocessing saved with it."""
    saved: str | None = None
    """For a reloaded model: the directory it was loaded from."""
    labels: tuple[str, ...] | None = None
    """Class names saved with a fine-tuned model."""

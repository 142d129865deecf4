"""What a load did: the plan plus what happened, attached to the model as ``model.zooadapt``.

The report speaks in stages and words. A plan records the rules it used as the rules describe
themselves, regular expressions included (``LoadPlan.rule_counts``): exact, but no way to tell
a reader what happened. So the renames of a foreign layout are told as that layout's one-line
summary (the part of its description after ``"; "`` that maps keys, ``a -> b, …``), other
rules with their patterns written as the keys they match (``plain_rule``: ``layerN.M.conv1.*``),
and what loaded is counted per stage (``stage_counts``, which ``zooadapt inspect`` prints too).
In a notebook the report shows as a small HTML table (``_repr_html_``).
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from typing import Any

from ..contract.escape import printable
from ..contract.family import Layout
from ..contract.rules import Renumber
from ..contract.stages import HEAD, StageMap
from .plan import LoadPlan
from .rule_words import plain_rule

__all__ = ["LoadReport", "ModelInfo", "StageCount", "stage_counts", "plain_rule", "layouts_used", "layout_summary",
           "renamed_in_words", "notes_in_words", "NO_STAGE"]

NO_STAGE = "(no stage)"
"""The row of model keys outside every stage and the head (a final norm)."""


# -- foreign layouts -----------------------------------------------------------------------------

_READ_AS = re.compile(r"keys read as the (\S+) layout\b")
"""The planner's note when it read a checkpoint through a layout (``zooadapt.loading.adapt``)."""


def layouts_used(plan: LoadPlan) -> list[Layout]:
    """The registered layouts the plan read its checkpoint through (named in its notes)."""
    names = [m[1] for note in plan.notes if (m := _READ_AS.match(note))]
    if not names:
        return []
    from ..host.layouts import registered_layouts

    known = {lay.name: lay for lay in registered_layouts()}
    return [known[n] for n in names if n in known]


def _split_description(layout: Layout) -> tuple[str, str]:
    """(what the layout is, how its keys map) from ``"WHAT; a -> b, c -> d"``; no mapping: ''."""
    what, sep, mapping = layout.description.rpartition("; ")
    if sep and "->" in mapping:
        return what, mapping
    return layout.description, ""


def layout_summary(layout: Layout) -> str:
    """What a layout renames, in one line: its description's key map (``resnet.encoder.stages.N ->
    layerN+1, …``), else its renumbering rules in words (the stage-level renames), else ''."""
    mapping = _split_description(layout)[1]
    if mapping:
        return mapping
    return ", ".join(plain_rule(r.describe()) for r in layout.rules if isinstance(r, Renumber))


def _layout_title(layout: Layout) -> str:
    what = _split_description(layout)[0]
    return f"{layout.name} ({what})" if what else layout.name


def renamed_in_words(plan: LoadPlan, limit: int = 3) -> list[str]:
    """The renames of a plan as lines a reader follows: one per foreign layout used (``renamed
    120 keys by the transformers-resnet layout (resnet.encoder.stages.N -> layerN+1, …)``), and
    one for the other rules, the ``limit`` most used with their counts."""
    layouts = layouts_used(plan)
    owner = {r.describe(): lay.name for lay in layouts for r in lay.rules}
    by_layout: dict[str, int] = {}
    by_rule: dict[str, int] = {}
    for m in plan.renamed:
        names = {owner[r] for r in m.rules if r in owner}
        for name in names:
            by_layout[name] = by_layout.get(name, 0) + 1
        for rule in m.rules:
            if rule not in owner:
                by_rule[rule] = by_rule.get(rule, 0) + 1
    lines = []
    for layout in layouts:
        if layout.name in by_layout:
            summary = layout_summary(layout)
            lines.append(f"renamed {by_layout[layout.name]} keys by the {layout.name} layout"
                         + (f" ({summary})" if summary else ""))
    if by_rule:
        ranked = sorted(by_rule.items(), key=lambda rn: -rn[1])
        shown = ", ".join(f"{plain_rule(r)} x{n}" for r, n in ranked[:limit])
        more = f", and {len(ranked) - limit} more rules (plan.rule_counts())" if len(ranked) > limit else ""
        counted = sum(1 for m in plan.renamed if any(r not in owner for r in m.rules))
        lines.append(f"renamed {counted} keys" + (" by rules" if by_layout else "") + f": {shown}{more}")
    return lines


def notes_in_words(plan: LoadPlan) -> list[str]:
    """The plan's notes, a layout's "keys read as" note told as ``layout: NAME (what it is)``."""
    layouts = {lay.name: lay for lay in layouts_used(plan)}
    out = []
    for note in plan.notes:
        m = _READ_AS.match(note)
        out.append(f"layout: {_layout_title(layouts[m[1]])}" if m and m[1] in layouts else f"note: {note}")
    return out


# -- per stage -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageCount:
    """What a plan does to one stage's tensors (model keys): ``stage`` is a stage name,
    ``"head"`` or ``NO_STAGE``; without a stage map, a top-level module."""

    stage: str
    loaded: int = 0
    missing: int = 0
    mismatched: int = 0
    new_head: int = 0
    skipped: int = 0
    defaulted: int = 0
    frozen: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "loaded": self.loaded, "missing": self.missing, "mismatched": self.mismatched,
                "new_head": self.new_head, "skipped": self.skipped, "defaulted": self.defaulted,
                "frozen": self.frozen}


_REASONS = {"missing": "missing", "mismatched": "mismatched", "new_head": "new_head", "skipped": "skipped",
            "defaulted": "defaulted"}


def stage_counts(plan: LoadPlan, stages: StageMap | None = None, frozen: tuple[str, ...] = ()) -> list[StageCount]:
    """Per stage, input to output, then the head and any keys outside every stage: how many of
    its tensors load, are missing, mismatched, new (head), skipped or defaulted, and whether it
    is frozen. Without ``stages`` (a model zooadapt did not build), the model's top-level modules
    stand in for stages."""
    if stages is not None:
        order = [*stages.names, HEAD, NO_STAGE]

        def stage_of(key: str) -> str:
            return stages.stage_of(key) or NO_STAGE
    else:
        order = [p for p in plan.model_parts if p != plan.head] + [HEAD, NO_STAGE]

        def stage_of(key: str) -> str:
            if plan.head and (key == plan.head or key.startswith(plan.head + ".")):
                return HEAD
            top = key.split(".", 1)[0]
            return top if top in order else NO_STAGE
    counts: dict[str, dict[str, int]] = {name: {} for name in order}
    for m in plan.loaded:
        if m.model_key is not None:
            row = counts[stage_of(m.model_key)]
            row["loaded"] = row.get("loaded", 0) + 1
    for key, reason in plan.left_out().items():
        row = counts[stage_of(key)]
        row[_REASONS[reason]] = row.get(_REASONS[reason], 0) + 1
    return [StageCount(name, **counts[name], frozen=name in frozen) for name in order
            if counts[name] or (name not in (HEAD, NO_STAGE) and stages is not None) or (name == HEAD and plan.head)]


# -- the report ----------------------------------------------------------------------------------


@dataclass
class LoadReport:
    model: str
    family: str
    arch: str
    source: str | None
    """Where the weights came from (``hf://repo/file@rev``, a URL, a path, or what was passed in
    memory); None when random."""
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
    stages: StageMap | None = None
    """The model's stage map, for counting per stage; ``ModelInfo`` sets it when the report is
    attached to a model zooadapt built (``load_weights`` into your model has none)."""
    nonfinite: tuple[str, ...] = ()
    """Model keys whose checkpoint tensor holds NaN or Inf (loaded as they are, and warned about)."""

    @property
    def coverage(self) -> float:
        return self.plan.coverage if self.plan else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "family": self.family, "arch": self.arch, "source": self.source,
            "path": self.path, "commit": self.commit, "num_classes": self.num_classes, "target": self.target,
            "device": self.device,
            "frozen": list(self.frozen), "trainable_params": self.trainable_params, "nonfinite": list(self.nonfinite),
            "total_params": self.total_params, "seconds": round(self.seconds, 4),
            **(self.plan.to_dict() if self.plan else {"coverage": 0.0}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def _head_words(self) -> str:
        return {"features": "features only, no head", "embeddings": "pooled embeddings, no head",
                "your model": "into your model"}.get(self.target, f"{self.num_classes} classes")

    def __str__(self) -> str:
        """The report in lines; every key, path and name in it printed with control characters escaped."""
        lines = [f"zooadapt: {printable(self.model)} ({self.family}/{self.arch}), {self._head_words()}"]
        if self.plan is None:
            lines.append("  weights: random initialisation (pretrained=False)")
        else:
            p = self.plan
            lines.append(f"  weights: {printable(self.source)}"
                         + (f" (commit {printable(self.commit[:12])})" if self.commit else ""))
            if p.weight_set:
                label = "weight set" if p.weight_set.startswith("'") else "checkpoint"  # else: how it was read
                lines.append(f"  {label}: {p.weight_set}")
            lines.append(f"  loaded {len(p.loaded)} tensors, {p.coverage:.2%} of parameters from the checkpoint")
            if self.nonfinite:
                lines.append(f"  NaN or Inf in {len(self.nonfinite)} tensors: {_listed(self.nonfinite)}")
            lines += [f"  {printable(line)}" for line in notes_in_words(p)]
            lines += [f"  {printable(line)}" for line in renamed_in_words(p)]
            for label, items in p.outcome_groups():
                if items:
                    lines.append(f"  {label} {len(items)}: {_listed(items)}")
        lines.append(f"  frozen: {', '.join(self.frozen) or 'nothing'}; trainable "
                     f"{self.trainable_params:,} of {self.total_params:,} parameters")
        lines.append(f"  took {self.seconds * 1000:.0f} ms")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """The report as a small HTML table for notebooks: per stage what loaded, is missing,
        new or frozen; then coverage, notes and the keys that did not simply load. Every text,
        key names included, is escaped."""
        e = html.escape
        title = f"<b>{e(self.model)}</b> ({e(self.family)}/{e(self.arch)}), {e(self._head_words())}"
        parts = [f'<div class="zooadapt-report"><p>{title}<br>']
        if self.plan is None:
            parts.append("weights: random initialisation (pretrained=False)</p>")
        else:
            parts.append(f"weights: <code>{e(str(self.source))}</code>"
                         + (f" (commit <code>{e(self.commit[:12])}</code>)" if self.commit else "") + "</p>")
            parts.append(_html_stage_table(stage_counts(self.plan, self.stages, self.frozen)))
        coverage = f"coverage: {self.coverage:.2%} of parameters from the checkpoint<br>" if self.plan else ""
        parts.append(f"<p>{coverage}frozen: {e(', '.join(self.frozen) or 'nothing')}; trainable "
                     f"{self.trainable_params:,} of {self.total_params:,} parameters</p>")
        if self.nonfinite:
            parts.append(f"<p>NaN or Inf in {len(self.nonfinite)} tensors: {e(_listed(self.nonfinite))}</p>")
        if self.plan is not None:
            words = [*notes_in_words(self.plan), *renamed_in_words(self.plan)]
            if words:
                parts.append("<ul>" + "".join(f"<li>{e(w)}</li>" for w in words) + "</ul>")
            shown = [(label, items) for label, items in self.plan.outcome_groups() if items]
            if shown:
                parts.append("<details><summary>keys that did not simply load</summary><ul>" + "".join(
                    f"<li>{e(label)} ({len(items)}): " + ", ".join(f"<code>{e(k)}</code>" for k in items) + "</li>"
                    for label, items in shown) + "</ul></details>")
        parts.append("</div>")
        return "".join(parts)


def _listed(keys: list[str] | tuple[str, ...], shown: int = 6) -> str:
    """The first ``shown`` keys, escaped, and how many more."""
    more = f", … (+{len(keys) - shown})" if len(keys) > shown else ""
    return ", ".join(printable(k) for k in keys[:shown]) + more


def _html_stage_table(rows: list[StageCount]) -> str:
    """stage | loaded | missing | [mismatched] | [skipped] | new head | frozen, as HTML."""
    columns = [("loaded", "loaded"), ("missing", "missing")]
    columns += [(c, label) for c, label in (("mismatched", "mismatched"), ("skipped", "skipped"),
                                            ("defaulted", "defaulted")) if any(getattr(r, c) for r in rows)]
    columns.append(("new_head", "new head"))
    head = "".join(f"<th>{label}</th>" for _, label in [("stage", "stage"), *columns, ("frozen", "frozen")])
    body = "".join(f"<tr><td>{html.escape(r.stage)}</td>" + "".join(f"<td>{getattr(r, c)}</td>" for c, _ in columns)
                   + f"<td>{'yes' if r.frozen else ''}</td></tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
    build_options: dict[str, Any] | None = None
    """The build options the model was built with, as built: those the checkpoint's layout decided
    (``zooadapt.loading.layout_build``: BatchNorm eps for torchvision's EfficientNet-B5 in timm's
    network) and the user's own that JSON can hold (``in_chans=1``, ``global_pool='avg'``). Saved
    with the model, so its reload builds the same network whatever its saved keys look like."""
    unsaved_options: tuple[str, ...] = ()
    """The user's build options JSON cannot hold (``norm_layer=partial(...)``): ``save`` warns that
    the reload needs them passed again."""

    def __setattr__(self, name: str, value: Any) -> None:
        # the report attached to this model counts per stage with this model's stage map
        if name == "report" and isinstance(value, LoadReport) and value.stages is None:
            value.stages = self.__dict__.get("stages")
        object.__setattr__(self, name, value)

    def _repr_html_(self) -> str:
        if self.report is not None:
            return self.report._repr_html_()
        return f"<pre>{html.escape(repr(self))}</pre>"

"""The model card ``push_to_hub`` uploads, written through huggingface_hub's ``ModelCard``.

The metadata is what the Hub reads: ``base_model`` (so the Hub links a fine-tune to the
model it came from and lists it under that model's fine-tunes), ``library_name``,
``license``, ``pipeline_tag`` and ``tags``. The body says how the model was made (the base
weights, the freeze spec and frozen stages, the load report, the class names) and how to
load it back.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

__all__ = ["build_model_card", "base_model_of"]


def base_model_of(source: str | None) -> str | None:
    """The Hub repo id of the base weights (``timm/resnet18.tv_in1k``), when they came from the Hub."""
    from .errors import WeightsNotFoundError
    from .hub_address import is_hub_address, parse_hub_address

    if not is_hub_address(source):
        return None
    with warnings.catch_warnings():  # configs saved before the standard grammar hold the old spelling
        warnings.simplefilter("ignore", FutureWarning)
        try:
            return parse_hub_address(source).repo_id  # type: ignore[arg-type]
        except WeightsNotFoundError:
            return None


def _bullets(config: dict[str, Any]) -> list[str]:
    base = (config.get("base_weights") or {}).get("source") or "none (random initialisation)"
    classes = config.get("num_classes")
    labels = config.get("labels") or []
    head = f"{classes} classes" if classes else f"none ({config.get('target') or 'features'})"
    frozen = ", ".join(config.get("frozen") or ()) or "none"
    bn = f" (BatchNorm statistics fixed in {', '.join(config['bn_frozen'])})" if config.get("bn_frozen") else ""
    lines = [
        f"- architecture: `{config['model']}` ({config['family']}/{config['arch']})",
        f"- base weights: {base}",
        f"- head: {head}",
        f"- freeze spec: `{config.get('freeze_spec')!r}`; frozen stages: {frozen}{bn}",
    ]
    if labels:
        shown = ", ".join(f"`{label}`" for label in labels[:50]) + (f", … ({len(labels)} in all)"
                                                                     if len(labels) > 50 else "")
        lines.append(f"- labels (class index order): {shown}")
    return lines


def build_model_card(config: dict[str, Any], repo_id: str, *, report: str | None = None,
                     license: str | None = None, tags: list[str] | None = None) -> ModelCard:
    """A ``ModelCard`` for a saved model's config (``zooadapt.json``), uploaded as ``README.md``."""
    from huggingface_hub import ModelCard, ModelCardData

    headless = not config.get("num_classes")
    all_tags = ["zooadapt", "image-feature-extraction" if headless else "image-classification", config["family"]]
    if config["family"] == "timm" or "timm" in str((config.get("base_weights") or {}).get("source")):
        all_tags.append("timm")
    all_tags += [t for t in tags or () if t not in all_tags]
    data = ModelCardData(
        library_name="zooadapt",
        base_model=base_model_of((config.get("base_weights") or {}).get("source")),
        license=license,
        pipeline_tag="image-feature-extraction" if headless else "image-classification",
        tags=list(dict.fromkeys(all_tags)),
    )
    body = [
        f"# {repo_id}",
        "",
        f"Fine-tuned with [zooadapt](https://pypi.org/project/zooadapt/) {config['zooadapt_version']}.",
        "",
        *_bullets(config),
        "",
        "## Load it",
        "",
        "```python",
        "import zooadapt",
        "",
        f'model = zooadapt.load("hf://{repo_id}")   # same head, frozen stages and BatchNorm policy',
        "print(model.zooadapt.labels)" if config.get("labels") else "print(model.zooadapt.report)",
        "```",
    ]
    if report:
        body += ["", "## How the base weights loaded", "", "```text", report.strip(), "```"]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")

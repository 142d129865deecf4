"""The model card ``push_to_hub`` uploads, written through huggingface_hub's ``ModelCard``.

The metadata is what the Hub reads: ``base_model`` (so the Hub links a fine-tune to the
model it came from and lists it under that model's fine-tunes), ``library_name``,
``license``, ``pipeline_tag`` and ``tags``. The body says how the model was made (the base
weights, the freeze spec and frozen stages, the load report, the class names) and how to
load it back. What a family's library adds (timm: its own ``config.json``, the ``timm`` tag,
``library_name: timm``) comes from the plugins, through the ``zooadapt_hub_card`` hook.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch.nn as nn
    from huggingface_hub import ModelCard

    from ..contract.family import HubCard

__all__ = ["build_model_card", "base_model_of", "base_license", "plugin_card"]


def base_model_of(source: str | None) -> str | None:
    """The Hub repo id of the base weights (``timm/resnet18.tv_in1k``), when they came from the Hub."""
    from ..contract.errors import WeightsNotFoundError
    from ..contract.hub_address import is_hub_address, parse_hub_address

    if not is_hub_address(source):
        return None
    with warnings.catch_warnings():  # configs saved before the standard grammar hold the old spelling
        warnings.simplefilter("ignore", FutureWarning)
        try:
            return parse_hub_address(source).repo_id  # type: ignore[arg-type]
        except WeightsNotFoundError:
            return None


def base_license(base_model: str | None) -> str | None:
    """The license on the base model's card, which usually binds a fine-tune (as timm's push does);
    None when there is no Hub base model or its card cannot be read."""
    if not base_model:
        return None
    from huggingface_hub import HfApi

    try:
        card = HfApi().model_info(base_model).card_data
    except Exception:  # best effort: a private, gated or unreachable base leaves the license to the user
        return None
    license_ = getattr(card, "license", None) if card is not None else None
    return license_ if isinstance(license_, str) else None


def plugin_card(model: nn.Module, config: dict[str, Any], folder: Path) -> HubCard | None:
    """What the plugins add to the upload in ``folder`` (``zooadapt_hub_card``): files a library
    reads written there (timm's ``config.json``, so ``timm.create_model("hf-hub:REPO",
    pretrained=True)`` loads the fine-tune too), tags, and that library's name and snippet."""
    from ..host.hooks import PluginHooks
    from ..host.plugin_manager import load_plugins

    return PluginHooks(load_plugins()).hub_card(model, config, folder)


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
                     license: str | None = None, tags: list[str] | None = None,
                     extras: HubCard | None = None) -> ModelCard:
    """A ``ModelCard`` for a saved model's config (``zooadapt.json``), uploaded as ``README.md``.

    ``extras``: what the plugins added (``plugin_card``): their tags, and when the upload also
    holds a library's own files, that library as the Hub's (its snippet and widgets), the body
    showing both ways to load it."""
    from huggingface_hub import ModelCard, ModelCardData

    headless = not config.get("num_classes")
    all_tags = ["zooadapt", "image-feature-extraction" if headless else "image-classification", config["family"]]
    all_tags += list(extras.tags if extras else ())
    all_tags += [t for t in tags or () if t not in all_tags]
    library = extras.library if extras else None
    data = ModelCardData(
        library_name=library or "zooadapt",
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
    if library and extras and extras.snippet:
        body += ["", f"or with {library} alone (the weights, without zooadapt's frozen stages):", "", "```python",
                 *extras.snippet.replace("{repo_id}", repo_id).splitlines(), "```"]
    if report:
        body += ["", "## How the base weights loaded", "", "```text", report.strip(), "```"]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")

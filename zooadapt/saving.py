"""Save a fine-tuned model and load it back exactly: ``model.safetensors`` plus ``zooadapt.json``.

The config records how to rebuild the model rather than the model itself (no pickle, so a
saved directory can never run code): the registry name it came from and the base weights'
source and revision, family, architecture, class count, the cut of a features-only backbone,
frozen stages and their BatchNorm policy. ``zooadapt.load(directory)`` rebuilds the model
through the ordinary load path and refuses to return anything but an exact reload: every
saved tensor must land in the rebuilt model. ``push_to_hub`` uploads the same two files (and
a model card) with ``huggingface_hub``; ``zooadapt.load("hf://org/repo")`` loads them back.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CheckpointFormatError, InvalidArgumentError, ZooadaptError

if TYPE_CHECKING:
    import torch.nn as nn
    from huggingface_hub import CommitInfo

__all__ = ["save", "push_to_hub", "load_saved", "read_saved_config", "is_saved_directory", "CONFIG_NAME",
           "WEIGHTS_NAME"]

CONFIG_NAME = "zooadapt.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "zooadapt-saved-model"
FORMAT_VERSION = 1

_HUB_REPO = re.compile(r"^hf://([^/@\s]+/[^/@\s]+)/?(?:@(\S+))?$")


def is_saved_directory(name: object) -> bool:
    """True for a directory written by ``save`` or an ``hf://org/repo[@revision]`` address of one."""
    if not isinstance(name, (str, os.PathLike)):
        return False
    text = os.fspath(name)
    if _HUB_REPO.match(text):
        return True
    try:
        return (Path(text).expanduser() / CONFIG_NAME).is_file()
    except OSError:  # a registry name too long or odd for the file system
        return False


def _info(model: nn.Module) -> Any:
    from .freezing import _unwrap

    inner = _unwrap(model)
    info = getattr(inner, "zooadapt", None)
    if info is None:
        raise InvalidArgumentError(
            "zooadapt.save needs a model built by zooadapt.load (it records how to rebuild it); for any other "
            "module use safetensors.torch.save_model(model, path)")
    return inner, info


def _config(model: nn.Module, info: Any) -> dict[str, Any]:
    import dataclasses

    import zooadapt

    from .data import data_config
    from .freezing import bn_frozen_stages, frozen_stages

    base = info.extra.get("base") or {"source": info.source, "revision": info.revision}
    dtypes = {str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.dtype.is_floating_point}
    spec = info.extra.get("freeze_spec")
    try:
        data: dict[str, Any] | None = dataclasses.asdict(data_config(model))
    except ZooadaptError:
        data = None
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "zooadapt_version": zooadapt.__version__,
        "model": info.name,
        "family": info.family,
        "arch": info.arch,
        "num_classes": info.num_classes,
        "features_only": bool(info.extra.get("features_only", False)),
        "out_stages": list(info.extra.get("out_stages", ())) or None,
        "base_weights": base,
        "frozen": list(frozen_stages(model)),
        "bn_frozen": list(bn_frozen_stages(model)),
        "freeze_spec": spec if spec is None or isinstance(spec, (str, int)) else list(spec),
        "dtype": dtypes.pop() if len(dtypes) == 1 else None,
        "weights": WEIGHTS_NAME,
        "data": data,
    }


def _rebuilt_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes ``load`` will build for this config (on ``meta``: nothing allocated)."""
    from .loader import build_on_meta, resolve

    entry, family = resolve(config["model"])
    model = build_on_meta(family, entry.arch, config["num_classes"] or entry.num_classes, **dict(entry.build_kwargs))
    if config["features_only"]:
        from .features import cut_features

        model = cut_features(family, model, family.stage_map(model), config["out_stages"]).module
    return {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items()}


def _check_rebuildable(state: dict[str, Any], config: dict[str, Any]) -> None:
    expected = _rebuilt_shapes(config)
    actual = {k: tuple(v.shape) for k, v in state.items()}
    if expected == actual:
        return
    diffs = [f"{k}: saved {list(actual[k])}, rebuilt {list(expected[k])}" for k in actual
             if k in expected and actual[k] != expected[k]]
    diffs += [f"{k}: not in the rebuilt model" for k in actual if k not in expected]
    diffs += [f"{k}: missing from the model" for k in expected if k not in actual]
    raise InvalidArgumentError(
        f"this model no longer matches what zooadapt.load({config['model']!r}, num_classes={config['num_classes']}) "
        f"builds, so it could not be reloaded exactly:\n  " + "\n  ".join(diffs[:6])
        + ("\n  …" if len(diffs) > 6 else "")
        + "\nChange the head with num_classes= at load time instead of replacing modules, or save this model "
        "with safetensors.torch.save_model(model, path).")


def _tensors_to_save(model: nn.Module) -> dict[str, Any]:
    """The state dict as contiguous CPU tensors; tensors sharing storage are cloned (safetensors
    refuses shared storage, and every key must be present for an exact reload)."""
    seen: set[tuple[int, int]] = set()
    out: dict[str, Any] = {}
    for key, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        ident = (t.untyped_storage().data_ptr(), t.storage_offset())
        if ident in seen or t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()
        seen.add((t.untyped_storage().data_ptr(), t.storage_offset()))
        out[key] = t
    return out


def save(model: nn.Module, directory: str | os.PathLike[str]) -> Path:
    """Write ``model.safetensors`` and ``zooadapt.json`` for a model built by ``zooadapt.load``.

    ``zooadapt.load(directory)`` rebuilds it: same architecture and head size, same frozen
    stages and BatchNorm policy, every tensor bit for bit. Refuses a model whose modules were
    changed after loading (it could not be rebuilt). Returns the directory.
    """
    from safetensors.torch import save_file

    model, info = _info(model)
    config = _config(model, info)
    state = _tensors_to_save(model)
    _check_rebuildable(state, config)
    out = Path(directory).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / WEIGHTS_NAME), metadata={"format": "pt", "zooadapt_model": config["model"]})
    text = json.dumps(config, indent=2) + "\n"
    tmp = out / f".{CONFIG_NAME}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out / CONFIG_NAME)  # the config appears last: a half-written directory is not "saved"
    return out


def read_saved_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``zooadapt.json`` of a saved directory, checked."""
    path = Path(directory).expanduser() / CONFIG_NAME
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointFormatError(f"{path.parent} holds no {CONFIG_NAME}; it was not written by zooadapt.save") \
            from None
    except (OSError, ValueError) as exc:
        raise CheckpointFormatError(f"{path} is not readable JSON ({exc}); save the model again") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointFormatError(f"{path} is not a zooadapt saved-model config (format {FORMAT!r} expected)")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointFormatError(
            f"{path} was written by zooadapt {config.get('zooadapt_version')} (format "
            f"{config['format_version']}); upgrade zooadapt to load it")
    for key in ("model", "num_classes"):
        if key not in config:
            raise CheckpointFormatError(f"{path} lacks {key!r}; save the model again")
    return config


def _hub_directory(address: str, cache_dir: str | os.PathLike[str] | None) -> Path:
    """Download the two files of a model saved by ``push_to_hub``; return their snapshot folder."""
    from .errors import HubFileNotFoundError
    from .family import WeightSource
    from .sources import fetch

    m = _HUB_REPO.match(address)
    assert m is not None
    repo_id, revision = m.group(1), m.group(2) or "main"
    try:
        config = fetch(WeightSource(repo_id=repo_id, filename=CONFIG_NAME, revision=revision), cache_dir=cache_dir)
    except HubFileNotFoundError as exc:
        raise CheckpointFormatError(
            f"{address} holds no {CONFIG_NAME}, so it was not uploaded by zooadapt.push_to_hub. To load a checkpoint "
            f"from that repository, name the architecture: zooadapt.load(NAME, weights='hf://{repo_id}/FILE')"
        ) from exc
    pinned = config.commit or revision  # the weights from the same commit as the config
    fetch(WeightSource(repo_id=repo_id, filename=WEIGHTS_NAME, revision=pinned), cache_dir=cache_dir)
    return Path(config.path).parent


def load_saved(directory: str | os.PathLike[str], *, num_classes: int | None = None, freeze: Any = None,
               bn: str = "frozen", weights: Any = None, revision: str | None = None, pretrained: bool = True,
               features_only: bool = False, out_stages: Any = None, cache_dir: Any = None,
               **load_kwargs: Any) -> nn.Module:
    """Rebuild a model written by ``save`` (``zooadapt.load(directory)`` calls this).

    ``num_classes`` (a new head) and ``freeze`` (instead of the saved frozen stages, with
    ``bn``) may be given to fine-tune further; without them the reload is exact and checked.
    """
    from .family import WeightSource
    from .freezing import freeze as _freeze
    from .loader import _count, load

    if weights is not None or revision is not None or not pretrained:
        raise InvalidArgumentError(
            f"{os.fspath(directory)} is a saved model that carries its own weights; drop weights=, revision= and "
            "pretrained=")
    if features_only or out_stages is not None:
        raise InvalidArgumentError(
            f"{os.fspath(directory)} is rebuilt as it was saved; features_only= and out_stages= cannot change it")
    text = os.fspath(directory)
    folder = _hub_directory(text, cache_dir) if _HUB_REPO.match(text) else Path(text).expanduser()
    config = read_saved_config(folder)
    weights_path = folder / config.get("weights", WEIGHTS_NAME)
    if not weights_path.is_file():
        raise CheckpointFormatError(f"{folder} lacks {weights_path.name}; the saved directory is incomplete")
    classes = num_classes if num_classes is not None else (config["num_classes"] or None)
    load_kwargs["lock"] = False  # the saved file is the pinned artefact; a lock entry names the base weights
    model = load(config["model"], weights=WeightSource(path=str(weights_path)), num_classes=classes,
                 features_only=bool(config.get("features_only")), out_stages=config.get("out_stages"),
                 cache_dir=cache_dir, **load_kwargs)
    info = model.zooadapt
    plan = info.report.plan
    exact = num_classes is None or num_classes == config["num_classes"]
    if exact and plan is not None:
        stray = [m.checkpoint_key for m in plan.mappings if m.status.value != "loaded"]
        if stray or plan.new_head or plan.defaulted or plan.missing:
            raise CheckpointFormatError(
                f"{folder} does not rebuild exactly: {len(stray)} saved tensors did not load "
                f"({', '.join(stray[:4])}…) and {len(plan.new_head) + len(plan.missing)} model tensors were not "
                f"filled. The registry entry {config['model']!r} or its plugin changed since the model was saved.")
    if config.get("dtype") and config["dtype"] != "float32":
        import torch

        model.to(getattr(torch, config["dtype"]))
    _align(model)
    if freeze is not None:
        _freeze(model, freeze, bn=bn)  # type: ignore[arg-type]
    else:
        bn_frozen = set(config.get("bn_frozen") or ())
        plain = [s for s in config.get("frozen") or () if s not in bn_frozen]
        if plain:
            _freeze(model, plain, bn="train")
        if bn_frozen:
            _freeze(model, sorted(bn_frozen, key=info.stages.names.index), bn="frozen")
        info.extra["freeze_spec"] = config.get("freeze_spec")
    info.extra["base"] = config.get("base_weights")
    if config.get("data"):
        info.extra["data"] = config["data"]
    info.extra["saved"] = str(folder)
    info.report.frozen = info.frozen
    info.report.trainable_params, info.report.total_params = _count(model)
    return model


def _align(model: nn.Module, boundary: int = 64) -> None:
    """Move tensors that sit at unaligned addresses of the memory-mapped file into fresh memory.

    CPU kernels (oneDNN, MKL) pick vector code paths by the address of the weights, and those
    paths round differently in the last bit (seen: EfficientNet's squeeze-excitation 1x1 convs
    differ by ~4e-8 between offsets 0 and 8 mod 16). Fresh allocations are 64-byte aligned, so
    a reload computes the same bits as a model trained in ordinary memory, whatever the file
    layout.
    """
    import torch

    with torch.no_grad():
        for module in model.modules():
            for store in (module._parameters, module._buffers):
                for name, tensor in store.items():
                    if tensor is not None and tensor.data_ptr() % boundary:
                        if isinstance(tensor, torch.nn.Parameter):
                            store[name] = torch.nn.Parameter(tensor.detach().clone(),
                                                             requires_grad=tensor.requires_grad)
                        else:
                            store[name] = tensor.clone()


def _model_card(config: dict[str, Any], repo_id: str) -> str:
    base = (config.get("base_weights") or {}).get("source") or "random initialisation"
    frozen = ", ".join(config.get("frozen") or ()) or "nothing"
    return f"""---
library_name: zooadapt
tags:
- image-classification
- zooadapt
---
# {repo_id}

Fine-tuned from `{config['model']}` ({config['family']}/{config['arch']}, base weights: {base}) with
[zooadapt](https://pypi.org/project/zooadapt/) {config['zooadapt_version']}.

- classes: {config['num_classes'] or 'none (features-only backbone)'}
- frozen stages: {frozen}

```python
import zooadapt
model = zooadapt.load("hf://{repo_id}")
```
"""


def push_to_hub(
    model: nn.Module,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload model fine-tuned with zooadapt",
    create_pr: bool = False,
) -> CommitInfo:
    """Save the model (as ``save`` does, plus a model card) and upload it with ``huggingface_hub``.

    Creates the repository (and the ``revision`` branch) when missing; the token comes from
    ``token=``, ``HF_TOKEN`` or ``huggingface-cli login``. Load it back with
    ``zooadapt.load("hf://REPO_ID")``. Returns the commit information of the upload.
    """
    from huggingface_hub import HfApi

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise InvalidArgumentError(f"repo_id={repo_id!r}: give a Hub repository id 'namespace/name'")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="zooadapt-push-") as tmp:
        folder = save(model, tmp)
        config = read_saved_config(folder)
        (folder / "README.md").write_text(_model_card(config, repo_id), encoding="utf-8")
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        return api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                 revision=revision, commit_message=commit_message, create_pr=create_pr)

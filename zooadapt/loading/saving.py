"""Save a fine-tuned model and load it back exactly: ``model.safetensors`` plus ``zooadapt.json``.

The config records how to rebuild the model rather than the model itself (no pickle, so a
saved directory can never run code): the registry name it came from and the base weights'
source and revision, family, architecture, class count, the cut of a features-only backbone,
frozen stages and their BatchNorm policy, the dtypes (the layers', BatchNorm's, and each tensor's
that differs from those: a float32 head on a bfloat16 body). ``zooadapt.load(directory)`` rebuilds
the model through the ordinary load path and refuses to return anything but an exact reload
(``zooadapt.loading.reloading``). ``push_to_hub`` uploads the same two files (and a model card) with
``huggingface_hub``; ``zooadapt.load("hf://org/repo")`` loads them back.

Saves are whole: two processes saving into one folder take turns (a file lock,
``weights.atomic.exclusive``), and each save's two files carry one ``save_id`` (the config's, and
the weights' safetensors metadata), so a load running meanwhile sees one save or the other, never
one's weights with the other's labels (``reloading`` checks the pair, and waits out a save in
progress). A save killed half-way leaves a staging folder (``.zooadapt-save-*``) that the next save
removes, and at worst a weights file whose config names other weights, which a load refuses.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..contract.errors import InvalidArgumentError, ZooadaptError
from ..contract.saved_format import (
    CONFIG_NAME,
    FORMAT,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    is_saved_directory,
    read_saved_config,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    import torch
    import torch.nn as nn
    from huggingface_hub import CommitInfo


__all__ = ["save", "push_to_hub", "read_saved_config", "is_saved_directory", "CONFIG_NAME", "WEIGHTS_NAME",
           "STAGING_PREFIX", "SAVE_ID_KEY"]

STAGING_PREFIX = ".zooadapt-save-"
"""The name of a save's private staging folder inside the target folder (removed when done)."""
SAVE_ID_KEY = "zooadapt_save_id"
"""The safetensors metadata key holding the ``save_id`` the config names."""

def _info(model: nn.Module) -> Any:
    from ..tuning.freezing import _unwrap

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

    from ..tuning.freezing import bn_frozen_stages, frozen_stages
    from .data import data_config

    base = info.base or {"source": info.source, "revision": info.revision}
    # the layers' dtype and BatchNorm's apart: load(dtype=...) keeps BatchNorm float32, .half() does not;
    # None where they are in several ("dtypes" then says which: save adds it)
    layers, norms = (dtype if alone else None for dtype, alone in _majority_dtypes(model))
    spec = info.freeze_spec
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
        "features_only": info.features_only,
        "out_stages": list(info.out_stages or ()) or None,
        "target": info.report.target if info.report is not None else "classifier",
        "base_weights": base,
        "frozen": list(frozen_stages(model)),
        "bn_frozen": list(bn_frozen_stages(model)),
        "freeze_spec": spec if spec is None or isinstance(spec, (str, int)) else list(spec),
        "dtype": layers,
        "norm_dtype": norms,
        "weights": WEIGHTS_NAME,
        "data": data,
        "build_options": getattr(info, "build_options", None),  # what the file's layout had the build take
    }


def _floating_tensors(model: nn.Module) -> Iterator[tuple[str, torch.dtype, bool]]:
    """(name, dtype, in a BatchNorm-type layer) of every floating parameter and buffer (non-persistent
    buffers too), in the order and by the names ``reloading`` walks them."""
    from torch.nn.modules.batchnorm import _NormBase

    for prefix, module in model.named_modules():
        norm = isinstance(module, _NormBase)
        stores: tuple[dict[str, Any], ...] = (module._parameters, module._buffers)
        for store in stores:
            for leaf, tensor in store.items():
                if tensor is not None and tensor.dtype.is_floating_point:
                    yield (f"{prefix}.{leaf}" if prefix else leaf), tensor.dtype, norm


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _majority_dtypes(model: nn.Module) -> tuple[tuple[str | None, bool], tuple[str | None, bool]]:
    """(dtype, the only one) of the layers' floating parameters and of BatchNorm's: the most common
    (most tensors; ties by name), None where there are none."""
    from collections import Counter

    from torch.nn.modules.batchnorm import _NormBase

    counts: tuple[Counter[str], Counter[str]] = (Counter(), Counter())
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if p.dtype.is_floating_point:
                counts[isinstance(module, _NormBase)][_dtype_name(p.dtype)] += 1
    layers, norms = ((max(c.items(), key=lambda item: (item[1], item[0]))[0] if c else None, len(c) <= 1)
                     for c in counts)
    return layers, norms


def _saved_dtypes(model: nn.Module, rebuilt: nn.Module) -> dict[str, Any] | None:
    """The config's ``dtypes``, for a model the ``dtype`` and ``norm_dtype`` of the config do not bring
    back whole (None for the others, whose config is as it always was): ``layers`` and ``norms``, the
    most common dtype of each (those two then null where they are not the only one, so a zooadapt
    from before ``dtypes`` loads the model all float32, every value kept), and ``tensors``, each
    tensor those would not give back in its dtype. ``zooadapt.load`` casts the layers to ``layers``
    and BatchNorm to ``norms`` unless float32 (or None), which leaves them as the build (``rebuilt``,
    on ``meta``) makes them, then each tensor named to its own dtype."""
    (layers, _), (norms, _) = _majority_dtypes(model)
    built = {name: dtype for name, dtype, _ in _floating_tensors(rebuilt)}
    groups = tuple(None if d in (None, "float32") else d for d in (layers, norms))
    listed: dict[str, str] = {}
    for name, dtype, norm in _floating_tensors(model):
        actual = _dtype_name(dtype)
        if actual != (groups[norm] or _dtype_name(built.get(name, dtype))):
            listed[name] = actual
    return {"layers": layers, "norms": norms, "tensors": listed} if listed else None


def _rebuilt(config: dict[str, Any]) -> nn.Module:
    """The model ``load`` will build for this config (on ``meta``: nothing allocated)."""
    from .pipeline import run_load
    from .request import make_request

    classes = config["num_classes"] or (0 if config.get("target") == "embeddings" else None)
    return run_load(make_request(name=config["model"], pretrained=False, device="meta", num_classes=classes,
                                 features_only=bool(config["features_only"]), out_stages=config["out_stages"],
                                 build_options=dict(config.get("build_options") or {})))


def _check_rebuildable(state: dict[str, Any], config: dict[str, Any], rebuilt: nn.Module) -> None:
    expected = {k: tuple(v.shape) for k, v in rebuilt.state_dict(keep_vars=True).items()}
    actual = {k: tuple(v.shape) for k, v in state.items()}
    if expected == actual:
        return
    diffs = [f"{k}: saved {list(actual[k])}, rebuilt {list(expected[k])}" for k in actual
             if k in expected and actual[k] != expected[k]]
    diffs += [f"{k}: not in the rebuilt model" for k in actual if k not in expected]
    diffs += [f"{k}: missing from the model" for k in expected if k not in actual]
    raise InvalidArgumentError(
        f"this model no longer matches what zooadapt.load({config['model']!r}, num_classes={config['num_classes']}"
        f"{''.join(f', {k}={v!r}' for k, v in (config.get('build_options') or {}).items())}) "
        f"builds, so it could not be reloaded exactly:\n  " + "\n  ".join(diffs[:6])
        + ("\n  …" if len(diffs) > 6 else "")
        + "\nChange the head with num_classes= at load time instead of replacing modules, or save this model "
        "with safetensors.torch.save_model(model, path).")


def _tensors_to_save(model: nn.Module) -> dict[str, Any]:
    """The state dict as contiguous CPU tensors; tensors sharing storage are cloned (safetensors
    refuses shared storage, and every key must be present for an exact reload)."""
    from torch.distributed.tensor import DTensor

    seen: set[tuple[int, int]] = set()
    out: dict[str, Any] = {}
    for key, tensor in model.state_dict().items():
        if isinstance(tensor, DTensor):
            raise InvalidArgumentError(
                f"{key} is sharded (FSDP2's fully_shard): each rank holds only its shard. Save a sharded model with "
                "zooadapt.distributed.save_sharded(model, directory) on every rank; rank 0 writes the whole model.")
        if tensor.is_meta:
            raise InvalidArgumentError(
                f"{key} is on the meta device (no data): load the weights first (zooadapt.load without device='meta', "
                "or zooadapt.distributed.load_full_state_dict for a sharded model), then save")
        t = tensor.detach().cpu().contiguous()
        ident = (t.untyped_storage().data_ptr(), t.storage_offset())
        if ident in seen or t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()
        seen.add((t.untyped_storage().data_ptr(), t.storage_offset()))
        out[key] = t
    return out


def save(model: nn.Module, directory: str | os.PathLike[str], *, labels: Any = None) -> Path:
    """Write ``model.safetensors`` and ``zooadapt.json`` for a model built by ``zooadapt.load``.

    ``zooadapt.load(directory)`` rebuilds it: same architecture and head size, same frozen
    stages and BatchNorm policy, every tensor bit for bit. Refuses a model whose modules were
    changed after loading (it could not be rebuilt). Returns the directory.

    ``labels``: the class names in class-index order (a list, or a torchvision ``ImageFolder``,
    whose ``classes`` are used); saved with the model and back as ``model.zooadapt.labels``.
    Default: the labels the model already carries.
    """
    from safetensors.torch import save_file

    if not isinstance(directory, (str, os.PathLike)):
        raise InvalidArgumentError(f"directory={directory!r}: give the folder to save into as a str or Path")
    if not str(os.fspath(directory)).strip():  # Path("") is the working directory: never written by accident
        raise InvalidArgumentError(f"directory={directory!r} names no folder; give the folder to save into "
                                   "(\".\" for the current one)")
    model, info = _info(model)
    config = _config(model, info)
    from .labels import check_labels

    if labels is None and info.labels and len(info.labels) == (info.num_classes or 0):
        labels = info.labels  # the names it carries, unless its head was since replaced by another size
    names = check_labels(labels, info.num_classes)
    config["labels"] = list(names) if names else None
    state = _tensors_to_save(model)
    rebuilt = _rebuilt(config)
    _check_rebuildable(state, config, rebuilt)
    dtypes = _saved_dtypes(model, rebuilt)
    if dtypes is not None:  # beside "norm_dtype"; a model in one dtype saves the config it always did
        at = list(config).index("norm_dtype") + 1
        config = dict([*list(config.items())[:at], ("dtypes", dtypes), *list(config.items())[at:]])
    out = Path(directory).expanduser()
    try:
        _write_saved(out, state, config, save_file)
    except OSError as exc:
        from ..contract.errors import FileWriteError

        raise FileWriteError(
            f"could not save the model to {out} ({exc.strerror or exc}); no half-written file was left, and the "
            "folder holds no loadable model unless an earlier save is intact. Free disk space or fix the folder's "
            "permissions, then save again.") from exc
    if names:
        info.labels = names
    if info.unsaved_options:
        import warnings

        given = ", ".join(f"{name}=..." for name in info.unsaved_options)
        warnings.warn(f"saved to {out}, but zooadapt.json cannot hold the build option(s) {given} (not plain data): "
                      f"load it back with zooadapt.load({str(out)!r}, {given}) to build the same network",
                      UserWarning, stacklevel=2)
    return out


def _write_saved(out: Path, state: dict[str, Any], config: dict[str, Any], save_file: Any) -> None:
    """Both files written in a private staging folder (``mkdtemp``: 0700, a unique name, so nothing
    planted can be written through), then renamed into place, weights first and config last, all
    under the folder's lock (one save at a time; leftovers of a killed save are removed first).
    Both carry one new ``save_id``: between the two renames the folder's config names other weights,
    so a load waits for the save (or, if it was killed there, refuses); a save that fails between
    them removes the old config. The staging folder is removed whatever happens."""
    import shutil
    import uuid

    from ..weights.atomic import atomic_write, exclusive, new_file_mode, replace_from

    out.mkdir(parents=True, exist_ok=True)
    config = {**config, "save_id": uuid.uuid4().hex}
    with exclusive(out, what="saving a model into") as locked:
        if locked:
            _remove_leftovers(out)
        stage = Path(tempfile.mkdtemp(dir=out, prefix=STAGING_PREFIX))
        try:
            staged = stage / WEIGHTS_NAME
            save_file(state, str(staged), metadata={"format": "pt", "zooadapt_model": config["model"],
                                                    SAVE_ID_KEY: config["save_id"]})
            os.chmod(staged, new_file_mode())
            replace_from(staged, out / WEIGHTS_NAME)  # the old config, if any, now names other weights
            try:
                with atomic_write(out / CONFIG_NAME) as fh:
                    fh.write(json.dumps(config, indent=2) + "\n")
            except BaseException:
                (out / CONFIG_NAME).unlink(missing_ok=True)  # it describes weights no longer there
                raise
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _remove_leftovers(out: Path) -> None:
    """What a save killed half-way left in ``out``: its staging folder, a half-written config.
    Called under the folder's lock, so none of them belongs to a save still running."""
    import shutil

    for entry in out.iterdir():
        name = entry.name
        if name.startswith(STAGING_PREFIX) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        elif name.startswith((f".{CONFIG_NAME}.", f".{WEIGHTS_NAME}.")) and name.endswith(".tmp"):
            entry.unlink(missing_ok=True)


def push_to_hub(
    model: nn.Module,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload model fine-tuned with zooadapt",
    create_pr: bool = False,
    labels: Any = None,
    license: str | None = None,
    tags: list[str] | None = None,
) -> CommitInfo:
    """Save the model (as ``save`` does, plus a model card) and upload it with ``huggingface_hub``.

    Creates the repository (and the ``revision`` branch) when missing; the token comes from
    ``token=``, ``HF_TOKEN`` or ``huggingface-cli login``. Load it back with
    ``zooadapt.load("hf://REPO_ID")``. Returns the commit information of the upload.

    The card (``README.md``, written with huggingface_hub's ``ModelCard``) names the base model,
    so the Hub lists this one among its fine-tunes, with ``license`` (default: the base model's,
    as its terms usually bind a fine-tune), ``tags``, the freeze spec and the load report.
    ``labels`` as for ``save``. A timm classifier also gets timm's ``config.json``, so
    ``timm.create_model("hf-hub:REPO_ID", pretrained=True)`` loads it as well.
    """
    from huggingface_hub import HfApi

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise InvalidArgumentError(f"repo_id={repo_id!r}: give a Hub repository id 'namespace/name'")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="zooadapt-push-") as tmp:
        from .model_card import base_license, base_model_of, build_model_card, plugin_card

        folder = save(model, tmp, labels=labels)
        config = read_saved_config(folder)
        inner, info = _info(model)
        extras = plugin_card(inner, config, folder)  # a library's own files (timm's config.json), tags
        if license is None:
            license = base_license(base_model_of((config.get("base_weights") or {}).get("source")))
        card = build_model_card(config, repo_id, report=str(info.report) if info.report is not None else None,
                                license=license, tags=tags, extras=extras)
        card.save(str(folder / "README.md"))
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        return api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                 revision=revision, commit_message=commit_message, create_pr=create_pr)

"""Loading a saved model back exactly: ``zooadapt.load(directory)`` or ``zooadapt.load("hf://org/repo")``.

The saved config becomes a request for the one load pipeline (``zooadapt.loading.pipeline``): the saved
weights file, the saved head and cut, no lock file. The result must be an exact reload (every
saved tensor lands); then the saved frozen stages, BatchNorm policy, preprocessing and labels
come back.

A folder another process is saving into is read whole: the weights' ``save_id`` (safetensors
metadata) must be the one the config names, and the weights file and the config must be the same
after the load as before it; otherwise the load waits for the save in progress (its lock) and
starts again, a few times at most. Weights whose config names another save, with no save running,
are what a killed save left: ``CheckpointFormatError``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..contract.errors import (
    CheckpointChangedError,
    CheckpointFormatError,
    InvalidArgumentError,
)
from ..contract.saved_format import CONFIG_NAME, WEIGHTS_NAME, hub_repo, read_saved_config

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from .report import ModelInfo
    from .request import LoadRequest

__all__ = ["load_saved"]


def _hub_directory(address: str, cache_dir: str | os.PathLike[str] | None) -> Path:
    """Download the two files of a model saved by ``push_to_hub``; return their snapshot folder."""
    from ..contract.errors import HubFileNotFoundError
    from ..contract.family import WeightSource
    from ..weights.sources import fetch

    hub = hub_repo(address)
    assert hub is not None
    repo_id, revision = hub.repo_id, hub.revision or "main"
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


def load_saved(request: LoadRequest) -> nn.Module:
    """Rebuild a model written by ``save`` (``zooadapt.load(directory)`` calls this).

    The saved config becomes a request for the ordinary pipeline: the saved weights file, the
    saved head and cut, no lock (the saved file is the pinned artefact). ``num_classes`` (a
    new head) and ``freeze`` (instead of the saved frozen stages, with ``bn``) may be given to
    fine-tune further; without them the reload is exact and checked.
    """
    from ..tuning.freezing import freeze as _freeze
    from .pipeline import count_parameters

    directory = request.name
    assert directory is not None
    if request.weights is not None or request.revision is not None or not request.pretrained:
        raise InvalidArgumentError(
            f"{directory} is a saved model that carries its own weights; drop weights=, revision= and pretrained=")
    if request.features_only or request.out_stages is not None:
        raise InvalidArgumentError(
            f"{directory} is rebuilt as it was saved; features_only= and out_stages= cannot change it")
    given = [name for name, value in (("rules", request.rules), ("use_ema", request.use_ema is not None),
                                      ("skip", request.skip)) if value]
    if given:  # they choose how a foreign checkpoint is read; a saved model's file is read one way only
        raise InvalidArgumentError(
            f"{directory} is a saved model, rebuilt whole as it was saved; {'=, '.join(given)}= choose how another "
            f"checkpoint is read and cannot change it: drop {'=, '.join(given)}=")
    folder = _hub_directory(directory, request.cache_dir) if hub_repo(directory) is not None \
        else Path(directory).expanduser()
    from_hub = hub_repo(directory) is not None  # a snapshot's files link into the cache's checked blobs
    for _ in range(_ATTEMPTS):
        config, weights_path = _saved_pair(folder, from_hub)
        before = _identity(weights_path)
        saved_id = _weights_save_id(weights_path)
        if saved_id != config.get("save_id") and not from_hub:
            if _wait_for_save(folder):
                continue
            again, _ = _saved_pair(folder, from_hub)
            if again != config or _weights_save_id(weights_path) != saved_id:
                continue  # a save finished between the two reads (and none runs now): read its pair
            raise CheckpointFormatError(
                f"{weights_path} was written by another save than {folder / CONFIG_NAME} describes (save "
                f"{saved_id or 'without an id'} beside config of save {config.get('save_id') or 'without an id'}): "
                "a zooadapt.save into this folder was interrupted between its two files, and no save is running now. "
                "The folder holds no whole model; save it again (the next save also removes what was left).")
        model = _load_saved_files(request, config, weights_path)
        if request.dtype is None:  # read from the file where it must be: before the check that it is unchanged
            _restore_dtypes(model, config, weights_path)
        if from_hub or (_identity(weights_path) == before and _same_config(folder, config)):
            break
        _wait_for_save(folder)  # another process saved into the folder meanwhile: read the new save whole
    else:
        raise CheckpointChangedError(
            f"{folder} changed while it was loaded, {_ATTEMPTS} times in a row: other processes keep saving into it. "
            "Load it once they are done, or have them save into a new folder.")
    saved_classes = config["num_classes"]
    info = cast("ModelInfo", model.zooadapt)  # set by the pipeline; torch types module attributes as Tensor | Module
    report = info.report
    assert report is not None  # the pipeline attaches the load's report to every model it builds
    plan = report.plan
    exact = request.num_classes is None or request.num_classes == saved_classes
    if exact and plan is not None:
        stray = [m.checkpoint_key for m in plan.mappings if m.status.value != "loaded"]
        if stray or plan.new_head or plan.defaulted or plan.missing:
            raise CheckpointFormatError(
                f"{folder} does not rebuild exactly: {len(stray)} saved tensors did not load "
                f"({', '.join(stray[:4])}…) and {len(plan.new_head) + len(plan.missing)} model tensors were not "
                f"filled. The registry entry {config['model']!r} or its plugin changed since the model was saved.")
    _align(model)
    if request.freeze is not None:
        _freeze(model, request.freeze, bn=request.bn)
        info.freeze_spec = request.freeze
    elif request.bn == "train":  # the saved stages stay frozen, their BatchNorm statistics now update
        if config.get("frozen"):
            _freeze(model, list(config["frozen"]), bn="train")
    else:
        bn_frozen = set(config.get("bn_frozen") or ())
        plain = [s for s in config.get("frozen") or () if s not in bn_frozen]
        if plain:
            _freeze(model, plain, bn="train")
        if bn_frozen:
            _freeze(model, sorted(bn_frozen, key=info.stages.names.index), bn="frozen")
        info.freeze_spec = config.get("freeze_spec")
    info.base = config.get("base_weights")
    info.data = config.get("data") or None
    info.saved = str(folder)
    if config.get("labels") and exact:  # the names belong to the saved head, not to a new one
        info.labels = tuple(config["labels"])
    report.frozen = info.frozen
    report.trainable_params, report.total_params = count_parameters(model)
    return model


_SAVE_ID_KEY = "zooadapt_save_id"
"""``saving.SAVE_ID_KEY`` (the two modules import neither the other: its home is ``contract.saved_format``)."""
_ATTEMPTS = 5
"""How many times a load starts again when another process saved into the folder meanwhile."""


def _saved_pair(folder: Path, from_hub: bool) -> tuple[dict, Path]:
    """The folder's config and the path of the weights it names, checked."""
    try:
        config = read_saved_config(folder)
    except CheckpointFormatError:
        if not from_hub and _wait_for_save(folder):  # a save between its two files: wait, read the new one
            config = read_saved_config(folder)
        else:
            raise
    weights_name = config.get("weights", WEIGHTS_NAME)
    if (not isinstance(weights_name, str) or not weights_name or weights_name in (".", "..")
            or Path(weights_name).name != weights_name or "\\" in weights_name):
        raise CheckpointFormatError(
            f"{folder / CONFIG_NAME} names its weights {weights_name!r}, which is not a file name inside the saved "
            f"directory; a saved model's weights are always {WEIGHTS_NAME!r} beside it. Save the model again.")
    weights_path = folder / weights_name
    if not from_hub and weights_path.is_symlink() and weights_path.resolve().parent != folder.resolve():
        raise CheckpointFormatError(
            f"{weights_path} is a link to {weights_path.resolve()}, outside the saved directory; zooadapt reads a "
            "saved model only from its own folder. Copy the file in, or save the model again.")
    if not weights_path.is_file():
        raise CheckpointFormatError(f"{folder} lacks {weights_path.name}; the saved directory is incomplete")
    return config, weights_path


def _load_saved_files(request: LoadRequest, config: dict, weights_path: Path) -> nn.Module:
    """The ordinary pipeline on the saved weights file, with the saved head and cut, no lock file."""
    from dataclasses import replace

    from ..contract.family import WeightSource
    from .pipeline import run_load

    saved_classes = config["num_classes"]
    classes = request.num_classes if request.num_classes is not None else (saved_classes or None)
    if classes is None and config.get("target") == "embeddings":
        classes = 0
    return run_load(replace(
        request, name=config["model"], weights=WeightSource(path=str(weights_path)), num_classes=classes,
        features_only=bool(config.get("features_only")), out_stages=config.get("out_stages"), lock=False,
        freeze=None, rules=(), discover=False,
        model_kwargs={**(config.get("build_options") or {}), **request.model_kwargs}))


def _named_dtype(key: str, name: Any) -> torch.dtype:
    """The floating dtype a saved config names under ``key``, checked (the config is data, never code)."""
    import torch

    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise CheckpointFormatError(
            f"the saved config's {key} is {name!r}, not a floating dtype of this torch; save the model again")
    return dtype


def _group_dtype(key: str, name: Any) -> torch.dtype | None:
    """``dtype`` / ``norm_dtype``: None for none, and for float32 (the layers stay as the build made them)."""
    return None if name is None or name == "float32" else _named_dtype(key, name)


def _restore_dtypes(model: nn.Module, config: dict, weights_path: Path) -> None:
    """Every parameter and buffer back in the dtype it was saved in (the load placed them in the
    build's, float32): the layers in ``dtype``, BatchNorm in ``norm_dtype`` (float32 after
    ``load(dtype=...)``, the same as the rest after ``.half()``; configs before it had one ``dtype``
    for all). A model in several dtypes (a float32 head on a bfloat16 body, LayerNorm kept float32)
    has ``dtypes``: the layers in its ``layers``, BatchNorm in its ``norms``, each tensor in
    ``tensors`` in its own. A saved tensor that its placement could not hold exactly (float64
    placed as float32) is read again from the file, so it comes back bit for bit. A config from
    before ``dtypes`` existed loads as it always did."""
    saved = config.get("dtypes")
    if saved is None:
        layers = _group_dtype("dtype", config.get("dtype"))
        norms = _group_dtype("norm_dtype", config.get("norm_dtype", config.get("dtype")))
        listed: Any = {}
    else:
        listed = saved.get("tensors") if isinstance(saved, dict) else None
        if not isinstance(listed, dict):
            raise CheckpointFormatError(
                f"the saved config's dtypes {saved!r} do not name the tensors' dtypes ({{'layers': ..., "
                "'norms': ..., 'tensors': {NAME: DTYPE}}); save the model again")
        layers = _group_dtype("dtypes['layers']", saved.get("layers"))
        norms = _group_dtype("dtypes['norms']", saved.get("norms"))
    if not listed and not _inexact(layers) and not _inexact(norms):
        if layers is not None or norms is not None:  # one dtype for the layers, one for BatchNorm: as always
            from .pipeline import cast_keeping_norms

            cast_keeping_norms(model, layers, norms)
        return
    _restore_each(model, {name: _named_dtype(f"dtypes[{name!r}]", value) for name, value in listed.items()},
                  layers, norms, weights_path)


def _inexact(dtype: torch.dtype | None, placed: torch.dtype | None = None) -> bool:
    """Whether values of ``dtype`` lose bits in ``placed`` (default float32, what the build makes):
    a narrower range or fewer mantissa bits."""
    import torch

    if dtype is None:
        return False
    wide, narrow = torch.finfo(dtype), torch.finfo(placed or torch.float32)
    return narrow.eps > wide.eps or narrow.max < wide.max or narrow.smallest_normal > wide.smallest_normal


def _restore_each(model: nn.Module, listed: dict[str, torch.dtype], layers: torch.dtype | None,
                  norms: torch.dtype | None, weights_path: Path) -> None:
    """``_restore_dtypes`` tensor by tensor: each to its listed dtype, else its layer's (None: as built).
    A tensor its placement narrowed is read again from the saved file, under the key the load plan
    placed it from; the others (a new head, non-persistent buffers) are cast."""
    import torch
    from safetensors import safe_open
    from torch.nn.modules.batchnorm import _NormBase

    info = cast("ModelInfo", model.zooadapt)
    plan = info.report.plan if info.report is not None else None
    source = {m.model_key: m.checkpoint_key for m in plan.loaded if m.model_key} if plan is not None else None
    unseen = set(listed)
    narrowed: list[tuple[dict[str, Any], str, str, torch.dtype]] = []  # (store, leaf, file key, dtype)
    with torch.no_grad():
        for prefix, module in model.named_modules():
            group = norms if isinstance(module, _NormBase) else layers
            stores: tuple[dict[str, Any], ...] = (module._parameters, module._buffers)
            for store in stores:
                for leaf, tensor in store.items():
                    if tensor is None or not tensor.dtype.is_floating_point:
                        continue
                    name = f"{prefix}.{leaf}" if prefix else leaf
                    unseen.discard(name)
                    wanted = listed.get(name, group)
                    if wanted is None or wanted == tensor.dtype:
                        continue
                    key = name if source is None else source.get(name)
                    if key is not None and _inexact(wanted, tensor.dtype):
                        narrowed.append((store, leaf, key, wanted))
                    else:
                        _set_dtype(store, leaf, tensor.to(wanted))
        if unseen:
            raise CheckpointFormatError(
                f"the saved config names the dtype of {len(unseen)} tensors the rebuilt model lacks "
                f"({', '.join(sorted(unseen)[:4])}); the registry entry {info.name!r} or its plugin changed "
                "since the model was saved")
        if narrowed:
            with safe_open(str(weights_path), framework="pt") as fh:
                keys = set(fh.keys())
                for store, leaf, key, wanted in narrowed:
                    old = store[leaf]
                    saved = fh.get_tensor(key) if key in keys else None
                    if saved is None or saved.dtype != wanted or saved.shape != old.shape:  # not the saved tensor
                        _set_dtype(store, leaf, old.to(wanted))
                    else:
                        _set_dtype(store, leaf, saved.to(old.device))


def _set_dtype(store: dict[str, Any], leaf: str, value: torch.Tensor) -> None:
    """A parameter's data or a buffer replaced by ``value`` (the same tensor in another dtype)."""
    import torch

    old = store[leaf]
    if isinstance(old, torch.nn.Parameter):
        old.data = value
    else:
        store[leaf] = value


def _identity(path: Path) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _weights_save_id(path: Path) -> str | None:
    """The ``save_id`` in a saved weights file's safetensors metadata (None for saves before it existed)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return (fh.metadata() or {}).get(_SAVE_ID_KEY)
    except Exception:  # not readable as safetensors: the load itself says why
        return None


def _same_config(folder: Path, config: dict) -> bool:
    try:
        return read_saved_config(folder) == config
    except CheckpointFormatError:
        return False


def _wait_for_save(folder: Path) -> bool:
    """Wait for a save into ``folder`` that holds its lock; True when there was one."""
    from ..weights.atomic import wait_for

    return wait_for(folder)


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
            stores: tuple[dict[str, Any], ...] = (module._parameters, module._buffers)  # a Parameter, a Tensor
            for store in stores:
                for name, tensor in store.items():
                    if tensor is not None and tensor.data_ptr() % boundary:
                        if isinstance(tensor, torch.nn.Parameter):
                            store[name] = torch.nn.Parameter(tensor.detach().clone(),
                                                             requires_grad=tensor.requires_grad)
                        else:
                            store[name] = tensor.clone()

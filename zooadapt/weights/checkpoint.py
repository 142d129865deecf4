"""Reading checkpoint files into ``{key: tensor}``, safely.

Pickle-based files (``.pth .pt .bin .tar .ckpt``) are read without running code: with
``torch.load(weights_only=True)``, or, for a file that names classes beyond its allow-list (a
training framework's own objects, a whole pickled module, a TorchScript archive), by torch's
same unpickler with those classes replaced by inert stand-ins (``standins.py``). Only
``trusted=True`` runs a file's code (a real ``bool``: ``trusted="false"`` is refused, not read
as true). Nested training checkpoints (``{"state_dict": …, "optimizer": …}``) are unwrapped
to their weights.

What comes out is safe to turn into parameters: no ``meta`` tensors (they carry no data and
would load as random weights), no two tensors sharing memory and no stride-0 or overlapping
layouts (an optimizer step on one parameter would change, or break, another), no
``requires_grad`` (buffers must not carry it).

Memory maps: a file in the Hugging Face cache's ``blobs/`` (or torch.hub's download
directory) is only ever replaced by rename, never rewritten, so it is memory-mapped and its
tensors use the map without a copy. Any other file — the user's own — is read into memory,
because a map of it dies with SIGBUS (and the file is truncated) when the user writes the
same path again with ``torch.save``, a common habit.

Whole files only: a file rewritten while it is read (a training job saving ``last.pth`` while an
evaluation job loads it) would give tensors of two versions. Its identity (device, inode, size,
mtime, ctime) is taken before the read and again after every tensor is in memory (or mapped);
when they differ the file is read once more, and a second change is refused
(``CheckpointChangedError``). A file deleted meanwhile is ``WeightsNotFoundError``.

Bounds: an untrusted zip checkpoint whose pickles expand past ``MAX_PICKLE_BYTES`` is refused
before it is unpickled, and training checkpoints nest their weights at most
``MAX_NESTING`` levels deep (``CheckpointBoundsError``).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import stat
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..contract.caches import remembered
from ..contract.errors import (
    CheckpointBoundsError,
    CheckpointChangedError,
    CheckpointFormatError,
    InvalidArgumentError,
    MissingDependencyError,
    WeightsNotFoundError,
    ZooadaptError,
)
from .weight_sets import CheckpointTensors, averaged_model_counters, choose_weight_set

if TYPE_CHECKING:
    import torch

__all__ = ["read_checkpoint", "read_in_memory", "unwrap_state_dict", "is_safetensors", "is_immutable_cache_file",
           "check_trusted"]

_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights", "params",
                "model_ema", "state_dict_ema")
_MAX_HEADER = 100_000_000  # the safetensors library's own limit
_USIZE = 1 << 64
_TORCH_DIM = 1 << 63
_BLOB_NAME = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")
MAX_PICKLE_BYTES = 32 << 20
"""The most bytes the pickles of an untrusted zip checkpoint may expand to. Measured: a seeded
torchvision ResNet-152 state dict pickles to 0.12 MB (31,570 opcodes), a training dict of it (model,
EMA copy, AdamW state) to 0.31 MB (103,355 opcodes): 32 MiB is ~100 times the larger. torch's
weights-only unpickler takes ~0.4 us a byte of cheap opcodes, so the bound also caps a read at
~15 s, where a crafted 88 kB file expanding to 80 MB took minutes."""
MAX_NESTING = 8
"""How deep ``unwrap_state_dict`` looks for the weights inside a training checkpoint's dicts
(``{"state_dict": …}``, ``{"model": {"module": …}}``: real ones nest 1 to 3 levels)."""


def check_trusted(trusted: object) -> bool:
    """``trusted`` must be a real bool: ``trusted="false"`` would otherwise run pickle code."""
    if not isinstance(trusted, bool):
        raise InvalidArgumentError(
            f"trusted={trusted!r}: pass True (run the pickle's code: only for files you trust) or False; a "
            f"{type(trusted).__name__} is not accepted, since any non-empty value would read as True")
    return trusted


def is_safetensors(path: Path) -> bool:
    """A safetensors file, or the index of safetensors shards (``*.safetensors.index.json``): its
    tensors keep no meaningful key order either."""
    if path.suffix == ".safetensors" or path.name.endswith(".safetensors.index.json"):
        return True
    if path.name.endswith(".index.json"):
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return False
    # safetensors starts with an 8-byte little-endian header length followed by '{'
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 32)


def is_immutable_cache_file(path: str | os.PathLike[str]) -> bool:
    """True for a file only ever replaced by rename, never rewritten: a Hugging Face cache blob
    (``…/models--org--name/blobs/<etag>``) or a torch.hub download. Such files may stay mapped."""
    real = Path(os.path.realpath(path))
    if real.parent.name == "blobs" and _BLOB_NAME.match(real.name) and real.parent.parent.name.startswith(
            ("models--", "datasets--", "spaces--")):
        return True
    try:
        import torch.hub

        return real.parent == Path(os.path.realpath(Path(torch.hub.get_dir()) / "checkpoints"))
    except Exception:  # torch.hub unavailable or its directory unreadable: copy, the safe choice
        return False


def _is_tensor_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def unwrap_state_dict(obj: Any, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the weights inside a training checkpoint: the dict itself, or a nested entry (at most
    ``MAX_NESTING`` levels down: a crafted file nesting 5,000 levels is refused, not a RecursionError)."""
    return _unwrap(obj, where, 0, set())


def _unwrap(obj: Any, where: str, depth: int, failed: set[int]) -> dict[str, torch.Tensor]:
    import torch

    if depth > MAX_NESTING:
        raise CheckpointBoundsError(
            f"{where.split('[', 1)[0]} nests its entries more than {MAX_NESTING} levels deep before any weights "
            "(real training checkpoints nest 1 to 3); it was not read further. Extract the state dict yourself "
            "(torch.load(...)['your_key']) and save it with safetensors.")
    if _is_tensor_dict(obj):
        return dict(obj)
    if isinstance(obj, torch.nn.Module):
        return dict(obj.state_dict())
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if key in obj and id(obj[key]) not in failed:  # one object under many keys is tried once
                try:
                    return _unwrap(obj[key], f"{where}[{key!r}]", depth + 1, failed)
                except CheckpointBoundsError:
                    raise
                except CheckpointFormatError:
                    failed.add(id(obj[key]))
                    continue
        # a dict that mixes tensors with metadata (e.g. a lone "epoch" int): keep the tensors
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
        # the parts of one network saved side by side ({"backbone": backbone.state_dict(),
        # "classifier": head.state_dict()}): one state dict, each part's name a prefix, as a module
        # holding them would name its tensors (the planner then finds and strips the prefixes)
        parts = {k: v for k, v in obj.items() if isinstance(k, str) and k not in _NESTED_KEYS
                 and (_is_tensor_dict(v) or isinstance(v, torch.nn.Module))}
        if parts:
            return {f"{name}.{key}": tensor for name, part in parts.items()
                    for key, tensor in _unwrap(part, f"{where}[{name!r}]", depth + 1, failed).items()}
        found = ", ".join(repr(k) for k in list(obj)[:10])
        raise CheckpointFormatError(
            f"{where} holds no tensors zooadapt recognises; its top-level keys are {found}. Extract the "
            "state dict yourself (torch.load(...)['your_key']) and save it with safetensors."
        )
    raise CheckpointFormatError(f"{where} is a {type(obj).__name__}, not a state dict")


# -- safetensors ------------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                       "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


class _Odd:
    """A JSON value the safetensors library parses differently from Python (``-0``, floats,
    ``NaN``): its presence sends the file to the library."""


_ODD = _Odd()


def _parse_int(text: str) -> int | _Odd:
    return _ODD if text.startswith("-") else int(text)  # serde reads "-0" as a float, refuses negatives


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any] | _Odd:
    out = dict(pairs)
    return out if len(out) == len(pairs) else _ODD


def _valid_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")  # a lone surrogate escape ("\ud800") parses in Python, not in serde
    except UnicodeEncodeError:
        return False
    return True


def _usize(value: object) -> bool:
    return type(value) is int and 0 <= value < _USIZE


def _header_entries(raw: bytes) -> list[tuple[int, int, str, Any, list[int]]] | None:
    """The tensors a header describes, when it is one the safetensors library certainly reads the
    same way; None for anything else (the library then decides, and reports)."""
    import torch

    try:
        text = raw.decode("utf-8")  # strict: no BOM-less UTF-16, no encoded surrogates
        header = json.loads(text, parse_int=_parse_int, parse_float=lambda _: _ODD,
                            parse_constant=lambda _: _ODD, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError):
        return None
    if not isinstance(header, dict):
        return None
    entries = []
    for key, info in header.items():
        if not _valid_utf8(key):
            return None
        if key == "__metadata__":
            if not (isinstance(info, dict) and all(isinstance(v, str) and _valid_utf8(v) and _valid_utf8(k)
                                                   for k, v in info.items())):
                return None
            continue
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            return None
        name, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(name, str) or name not in _SAFETENSORS_DTYPES:
            return None
        if not isinstance(shape, list) or not all(_usize(d) and d < _TORCH_DIM for d in shape):
            return None
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_usize(o) for o in offsets):
            return None
        count = 1
        for dim in shape:  # the library refuses a shape whose product overflows 64 bits, even with a 0
            count *= dim
            if count >= _USIZE:
                return None
        dtype = getattr(torch, _SAFETENSORS_DTYPES[name])
        if count * dtype.itemsize * 8 >= _USIZE:
            return None
        entries.append((offsets[0], offsets[1], key, dtype, shape))
    return entries


def _map_safetensors(path: Path, mapped: bool = True, size: int | None = None) -> CheckpointTensors | None:
    """The file's tensors, each on its own slice of one buffer, or None to let the safetensors
    library read (and judge) the file.

    The buffer is a copy-on-write memory map of the file (``mapped``) or the file read into
    memory. ``safetensors.torch.load_file`` maps the file the same way and slices it per tensor,
    but through several Python-level calls each: ~13 us per tensor, 4.4 ms of a ~20 ms ResNet-50
    load; this takes 1.9 ms. Only a file the library certainly reads identically is read here:
    a strict header (see ``_header_entries``), offsets contiguous from 0 to the end of the
    file, each tensor aligned to its element size. The fuzz test in
    ``tests/test_hostile_safetensors.py`` holds the two readers to the same answers.
    """
    import torch

    try:
        size = path.stat().st_size if size is None else size  # the caller's stat, when it has one
        with open(path, "rb") as fh:
            length = int.from_bytes(fh.read(8), "little")
            if not 0 < length <= min(size - 8, _MAX_HEADER):
                return None
            raw = fh.read(length)
    except OSError:
        return None
    layout = _tensor_layout(raw)
    if layout is None or 8 + length + layout[1] != size:
        return None
    storage = _file_storage(path, size, mapped)
    if storage is None:
        return None
    base, empty = 8 + length, torch.empty
    # the storage's own slicing, without UntypedStorage.__getitem__'s Python-level check for a meta
    # storage (this one is on the CPU): a few hundred calls per load
    piece = getattr(torch._C.StorageBase, "__getitem__", type(storage).__getitem__)
    tensors = CheckpointTensors()
    tensors.shapes = dict(layout[2])
    for start, stop, key, dtype, shape, strides in layout[0]:
        # each tensor gets its own storage (a slice of the buffer, no copy) and is not a view: views
        # share one version counter (an optimizer step on one parameter would invalidate
        # autograd's record of all), and tensors of one storage with several dtypes, or a
        # storage larger than the tensor, break or bloat torch.save
        tensors[key] = empty(0, dtype=dtype).set_(piece(storage, slice(base + start, base + stop)), 0, shape, strides)
    return tensors


_LAYOUT = tuple[tuple[tuple[int, int, str, Any, tuple[int, ...], tuple[int, ...]], ...], int,
                tuple[tuple[str, tuple[int, ...]], ...]]
_REMEMBERED_HEADER = 1 << 22
"""Headers up to 4 MB are remembered (a 1,000-tensor model's is ~100 kB): a crafted file's huge
header is parsed each time rather than kept in memory."""


def _tensor_layout(raw: bytes) -> _LAYOUT | None:
    """For a header (its bytes): each tensor's (start, stop, key, dtype, shape, strides) in file
    order, where the data ends, and (key, shape) in file order; None unless the tensors lie
    contiguous from 0, each aligned to its element size (the header starts at byte 8 + its length).

    Kept per header bytes: the same file read again (a sweep, a notebook cell run twice) skips the
    parse and the checks, a third of reading a small model. The key is the bytes themselves, so
    a changed file is a different header, never a stale answer.
    """
    return _remembered_layout(raw) if len(raw) <= _REMEMBERED_HEADER else _layout_of(raw)


@remembered("safetensors header layouts", 16, "the header's bytes (a changed file is another header)")
def _remembered_layout(raw: bytes) -> _LAYOUT | None:
    return _layout_of(raw)


def _layout_of(raw: bytes) -> _LAYOUT | None:
    entries = _header_entries(raw)
    if entries is None:
        return None
    entries.sort(key=lambda e: (e[0], e[1]))
    base, end = 8 + len(raw), 0
    out = []
    for start, stop, key, dtype, shape in entries:
        count = 1
        for dim in shape:
            count *= dim
        if start != end or stop - start != count * dtype.itemsize or (base + start) % dtype.itemsize:
            return None
        end = stop
        out.append((start, stop, key, dtype, tuple(shape), _contiguous_strides(shape)))
    return tuple(out), end, tuple((key, shape) for _, _, key, _, shape, _ in out)


def _file_storage(path: Path, size: int, mapped: bool) -> torch.UntypedStorage | None:
    """The whole file as one storage: a private map, or a copy in memory (64-byte aligned)."""
    import torch

    if mapped:
        # mmap, copy-on-write. torch's stubs type from_file as returning any storage; on UntypedStorage it is one
        return torch.UntypedStorage.from_file(str(path), shared=False, nbytes=size)  # type: ignore[return-value]
    buffer = torch.empty(size, dtype=torch.uint8)
    # numpy's stubs give ndarray the buffer protocol only when checking for Python 3.12+; it has it on every version
    view = memoryview(buffer.numpy()).cast("B")  # type: ignore[arg-type]
    try:
        with open(path, "rb") as fh:
            done = 0
            while done < size:
                got = fh.readinto(view[done:])
                if not got:
                    return None  # the file shrank under us: let the library report it
                done += got
            if fh.read(1):
                return None  # it grew
    except OSError:
        return None
    return buffer.untyped_storage()


def _contiguous_strides(shape: list[int]) -> tuple[int, ...]:
    strides, step = [], 1
    for dim in reversed(shape):
        strides.append(step)
        step *= max(dim, 1)
    return tuple(reversed(strides))


def _read_safetensors(path: Path, mapped: bool, size: int | None = None) -> dict[str, torch.Tensor]:
    fast = _map_safetensors(path, mapped, size)
    if fast is not None:
        return fast  # already CheckpointTensors, with the header's shapes
    from safetensors.torch import load, load_file

    try:
        if mapped:
            return load_file(path)
        return load(path.read_bytes())  # from memory: nothing keeps the user's file mapped
    except Exception as exc:  # the library raises SafetensorError, but torch may add TypeError/RuntimeError
        raise CheckpointFormatError(
            f"{path} is not a readable safetensors file ({_first_line(exc)}); it may be truncated or corrupt. "
            "Delete it and download again (zooadapt fetch NAME --force)."
        ) from exc


def _read_safetensors_to(path: Path, device: str) -> dict[str, torch.Tensor]:
    """The file's tensors read by the safetensors library straight into ``device``'s memory
    (after the same header checks as the CPU path: a file the fast path refuses is validated
    by the library, which raises for a malformed one)."""
    from safetensors.torch import load_file

    try:
        return load_file(path, device=device)
    except Exception as exc:  # SafetensorError, or torch's error for a device that is not there
        raise CheckpointFormatError(
            f"{path} could not be read into {device} ({_first_line(exc)}); check the device, or load on the CPU "
            "(device=None) to see whether the file itself is readable.") from exc


# -- pickle -----------------------------------------------------------------------------------


def _read_pickle(path: Path, trusted: bool, mapped: bool, map_location: str = "cpu") -> tuple[Any, tuple[str, ...]]:
    """The file's object, and the classes replaced by stand-ins to read it (see ``standins.py``).

    Untrusted, a file of tensors and allowed metadata is read by ``torch.load(weights_only=True)``;
    one that names other classes, and a TorchScript archive, is read again with those classes
    replaced by inert stand-ins, so nothing in it runs. ``trusted=True`` runs the file's code.
    """
    import torch

    from .standins import is_torchscript, overlapped, read_with_standins, registrations, settle
    from .weight_sets import allowed_metadata

    is_zip = zipfile.is_zipfile(path)
    if not is_zip:
        with open(path, "rb") as fh:
            head = fh.read(8)
        if head[:1] != b"\x80":  # torch.save's legacy format is a pickle, and pickles since protocol 2 start so
            raise _other_format(path, head) or CheckpointFormatError(
                f"{path} is neither a PyTorch checkpoint (torch.save: a zip archive or a pickle) nor a safetensors "
                "file; it may be truncated, corrupt or another format. Download or copy it again.")
    mmap = mapped and is_zip and map_location == "cpu"  # only the zip format can be memory-mapped
    if is_zip and not trusted:
        _check_pickle_size(path)
    if trusted:
        return _read_trusted(path, map_location, mmap), ()
    if not (is_zip and is_torchscript(path)):
        before = registrations()
        try:
            with allowed_metadata():
                obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
            if not overlapped(before):
                return obj, ()
            read = settle(obj)  # another thread's stand-ins were registered: it may hold some of them
            return read.obj, read.standins
        except pickle.UnpicklingError:
            pass  # it names classes beyond the allow-list (or does not parse): the stand-in reader says which
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # a corrupt file fails in many ways (EOF, struct, Unicode, zip, Recursion…)
            raise _corrupt(path, exc) from exc
    read = read_with_standins(path, map_location=map_location, mmap=mmap)
    return read.obj, read.standins


def _check_pickle_size(path: Path) -> None:
    """Refuse a zip checkpoint whose pickles expand past ``MAX_PICKLE_BYTES`` (from the archive's
    directory: nothing is decompressed). torch.save stores its records uncompressed, so such a file
    was compressed by hand, to expand into more opcodes than any checkpoint holds."""
    try:
        with zipfile.ZipFile(path) as archive:
            expanded = sum(info.file_size for info in archive.infolist() if info.filename.endswith(".pkl"))
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return  # torch's own reader reports a broken archive
    if expanded > MAX_PICKLE_BYTES:
        raise CheckpointBoundsError(
            f"{path}'s pickle expands to {expanded:,} bytes, more than the {MAX_PICKLE_BYTES >> 20} MiB zooadapt "
            "reads without running code (a training checkpoint of a ResNet-152 pickles to 0.3 MB; a small file "
            "that expands this far was crafted to stall its reader). It was not unpickled. If it is your own "
            "file, extract the tensors with torch.load and save them with safetensors.")


def _read_trusted(path: Path, map_location: str, mmap: bool) -> Any:
    """``torch.load(weights_only=False)``: runs the file's code, so a missing package is named as such."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
    except ImportError as exc:  # ModuleNotFoundError too: the file's classes live in a package not installed
        package = (exc.name or "").split(".", 1)[0] or "?"
        raise MissingDependencyError(
            f"{path} needs the package {package!r} to be read with trusted=True ({type(exc).__name__}: the file "
            f"needs module {exc.name or '?'}): install it (pip install {package}) and load again, or drop "
            "trusted=True: zooadapt then reads the tensors without running the file's code, its classes replaced "
            "by inert stand-ins.") from exc
    except AttributeError as exc:  # pickle's "Can't get attribute 'X' on <module 'y'>": another version of y
        if "Can't get attribute" not in str(exc):
            raise _corrupt(path, exc) from exc
        raise MissingDependencyError(
            f"{path} needs a class the installed package does not define ({_clean(exc)}); it was saved with "
            "another version of that package. Install that version, or drop trusted=True: zooadapt then reads "
            "the tensors without running the file's code, its classes replaced by inert stand-ins.") from exc
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a corrupt pickle fails in many ways (EOF, struct, Unicode, zip, Recursion…)
        if "Invalid magic number" in str(exc):  # not torch.save's format: a pickle.dump (detectron2's model zoo)
            return _read_plain_pickle(path)
        raise _corrupt(path, exc) from exc


def _read_plain_pickle(path: Path) -> Any:
    """A file ``pickle.dump`` wrote (trusted: it runs the file's code), its numpy arrays as tensors:
    detectron2's model zoo files (``{'model': {key: ndarray}, '__author__': ...}``), read as
    detectron2's own ``DetectionCheckpointer`` reads them (``pickle.load(f, encoding="latin1")``,
    for the files Python 2 wrote)."""
    import torch

    try:
        with open(path, "rb") as fh:
            obj = pickle.load(fh, encoding="latin1")
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # neither torch.save's format nor a pickle: truncated, corrupt or another format
        raise _corrupt(path, exc) from exc

    def tensors(value: Any, depth: int = 0) -> Any:
        if type(value).__module__ == "numpy" and hasattr(value, "dtype") and hasattr(value, "shape"):
            return torch.as_tensor(value)
        if isinstance(value, dict) and depth < 2:  # the state dict, or a dict holding it ('model')
            return {k: tensors(v, depth + 1) for k, v in value.items()}
        return value

    return tensors(obj)


def _other_format(path: Path, head: bytes) -> CheckpointFormatError | None:
    """The refusal for a file of a known other format that holds a model but is no checkpoint of
    tensors by name (ONNX, Keras' HDF5), saying how to get one; None for anything else."""
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return CheckpointFormatError(
            f"{path} is an HDF5 file (Keras' .h5 weights, most likely), not a PyTorch or safetensors checkpoint: its "
            "layers are TensorFlow's, named and laid out otherwise. Load the PyTorch release of those weights (timm "
            "and the Hugging Face Hub carry most Keras models' ports), or convert them with the model's own "
            "porting script.")
    onnx_like = len(head) >= 3 and head[0] == 0x08 and head[1] < 0x20 and head[2] in (0x12, 0x1A, 0x22, 0x2A, 0x3A)
    if path.suffix.lower() == ".onnx" or onnx_like:  # ModelProto: ir_version (field 1) first, then producer/graph
        return CheckpointFormatError(
            f"{path} looks like an ONNX model (an exported graph, its weights unnamed initializers), not a PyTorch "
            "or safetensors checkpoint. Load the PyTorch model it was exported from and save its state_dict() "
            "(safetensors.torch.save_file), then load that file.")
    return None


def _other_archive(path: Path) -> CheckpointFormatError | None:
    """The refusal for a zip archive that is not ``torch.save``'s: a ``torch.export`` program
    (``.pt2``) or a NumPy archive (``.npz``: JAX and big_vision checkpoints); None for the rest."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()[:10_000]
    except (OSError, zipfile.BadZipFile):
        return None
    if any(n.endswith("/archive_format") or n.endswith("/serialized_exported_program.json")
           or n.endswith("/models/model.json") for n in names):
        return CheckpointFormatError(
            f"{path} is a torch.export program (.pt2), not a checkpoint of named tensors. Read it with "
            "ep = torch.export.load(path), save ep.module().state_dict() (safetensors.torch.save_file), and load that "
            "file into the architecture it was exported from.")
    if names and all(n.endswith(".npy") for n in names):
        return CheckpointFormatError(
            f"{path} is a NumPy archive (.npz: a JAX, Flax or big_vision checkpoint, named in their layout), not "
            "a PyTorch checkpoint. For a big_vision or AugReg ViT, timm reads it: "
            "timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path)), then save its "
            "state_dict() and load that file.")
    return None


def _corrupt(path: Path, exc: BaseException) -> CheckpointFormatError:
    """The refusal for a file torch could not read: another kind of archive named as such (looked
    at only here, so a readable checkpoint never pays for the look), else truncated or corrupt."""
    if zipfile.is_zipfile(path) and (other := _other_archive(path)) is not None:
        return other
    return CheckpointFormatError(
        f"{path} is not a readable checkpoint ({type(exc).__name__}: {_clean(exc)}); it may be truncated or "
        "corrupt. Download or copy it again.")


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _clean(exc: BaseException) -> str:
    """The first line of an exception's text, without terminal colour codes, at most 160 characters."""
    line = _first_line(_ANSI.sub("", str(exc)).strip())
    return line if len(line) <= 160 else line[:157] + "..."


def _first_line(exc: BaseException | str) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else ""


def _sanitise(tensors: dict[str, torch.Tensor], where: str, *, copy_to: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors fit to become parameters: refuse meta and non-dense tensors; copy shared,
    overlapping, stride-0 or non-contiguous ones, and views into a larger buffer (a model whose
    parameters were views of one flat buffer: kept as it is, the first would hold the whole
    buffer alive, and a later save of that parameter would write all of it); drop autograd
    state and Parameter wrappers. ``copy_to``: copy every tensor, to that device ("" where it is)."""
    import torch

    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        if hasattr(tensor, "device_mesh") and hasattr(tensor, "placements"):  # a DTensor (FSDP2, tensor parallel)
            raise CheckpointFormatError(
                f"{where}: tensor {key!r} is a DTensor, one rank's shard of a distributed model (torch.save of an "
                "FSDP2 or tensor-parallel model's state_dict()), not the whole tensor. Save the full state dict "
                "instead: torch.distributed.checkpoint.state_dict.get_model_state_dict(model, options="
                "StateDictOptions(full_state_dict=True, cpu_offload=True)) on rank 0, then torch.save or "
                "safetensors.")
        if tensor.is_meta:
            raise CheckpointFormatError(
                f"{where}: tensor {key!r} is on the 'meta' device, so it holds no values (a checkpoint saved from "
                "a model that was never materialised). zooadapt refuses it rather than load random weights; save "
                "the checkpoint again from a model with real weights.")
        if tensor.layout != torch.strided or tensor.is_quantized or getattr(tensor, "is_nested", False):
            raise CheckpointFormatError(
                f"{where}: tensor {key!r} is not a dense tensor ({tensor.layout}); convert it with .to_dense() "
                "(or dequantize it) and save the checkpoint again.")
        t = tensor.detach()
        if type(t) is not torch.Tensor:  # a Parameter or another subclass: plain data only
            t = t.as_subclass(torch.Tensor)
        if copy_to is not None:
            out[key] = t.to(copy_to or t.device, memory_format=torch.contiguous_format, copy=True)
            continue
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if t.numel() and (not t.is_contiguous() or ptr in seen or storage.nbytes() > t.numel() * t.element_size()):
            t = t.clone(memory_format=torch.contiguous_format)
            ptr = t.untyped_storage().data_ptr()
        if t.numel():
            seen.add(ptr)
        out[key] = t
    return out


def read_checkpoint(path: str | os.PathLike[str], *, trusted: bool = False,
                    mmap: bool | None = None, use_ema: bool | None = None,
                    device: str | torch.device | None = None) -> CheckpointTensors:
    """Read a checkpoint file into a flat ``{key: tensor}`` dict in file order.

    A shard index (``model.safetensors.index.json``, ``pytorch_model.bin.index.json``) reads
    every shard it names, each once, checked against its ``weight_map`` (``shards.py``).

    ``device``: an accelerator to read straight into (``"cuda"``): safetensors reads each tensor
    into device memory itself, a pickle is unpickled with ``map_location``; no CPU copy of the
    whole checkpoint is made on the way. None or CPU: the CPU, as below.

    ``use_ema`` chooses between a training checkpoint's live and EMA weights (default: EMA
    when present, as timm does; a Lightning SWA average only when asked for with True, see
    ``weight_sets``); the result's ``weight_set`` says which was used, ``describe()`` in words.

    ``mmap``: keep the file memory-mapped (no copy). None (default) maps only files that are
    never rewritten in place (``is_immutable_cache_file``); a user's own file is read into
    memory, so writing that path again later cannot crash or change the model.
    """
    check_trusted(trusted)
    if use_ema is not None and not isinstance(use_ema, bool):
        raise InvalidArgumentError(f"use_ema={use_ema!r}: pass True (EMA weights), False (live weights) or None "
                                   "(EMA when the checkpoint has them)")
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidArgumentError(f"path={path!r}: give the checkpoint's file path as a str or Path")
    path = Path(path)
    target = None if device is None or str(device) == "cpu" else str(device)
    from .shards import is_shard_index

    if is_shard_index(path):
        return _read_sharded(path, trusted=trusted, mmap=mmap, use_ema=use_ema, target=target)
    return _read_file(path, trusted=trusted, mmap=mmap, use_ema=use_ema, target=target)


def _read_file(path: Path, *, trusted: bool, mmap: bool | None, use_ema: bool | None,
               target: str | None) -> CheckpointTensors:
    """One checkpoint file (see ``read_checkpoint``), read whole: its identity is taken before the
    read and after every tensor is in memory; a change means the read may mix two versions, so it
    is read once more, and refused when it changes again."""
    status = _settled_status(path)
    for attempt in range(2):
        try:
            tensors = _read_file_once(path, status, trusted=trusted, mmap=mmap, use_ema=use_ema, target=target)
        except (ZooadaptError, OSError, RuntimeError) as exc:
            # a file rewritten under the reader often reads as corrupt: that is a change, not a verdict
            now = _identity_now(path)
            if now == _identity(status):
                if isinstance(exc, OSError) and not isinstance(exc, ZooadaptError):
                    raise CheckpointFormatError(f"{path} cannot be read ({exc}); check the file and its "
                                                "permissions") from exc
                if isinstance(exc, ZooadaptError) and _recently_changed(status):
                    said = str(exc).rstrip(".")
                    raise type(exc)(f"{said}. {path} was written {_age_ms(status)} ms before this read: if a "
                                    "process is still writing it (a save that pauses), load again once it is "
                                    "done") from exc
                raise
            if now is None:
                raise _vanished(path) from None
        else:
            now = _identity_now(path)
            if now == _identity(status):
                return tensors
            if now is None:
                raise _vanished(path)
        if attempt == 0:
            status = _settled_status(path)
    raise CheckpointChangedError(
        f"{path} changed while it was read, twice in a row (another process is writing it: a training job "
        "saving to the same path?); what was read could mix two versions of its tensors, so nothing was loaded. "
        "Load it again once the writer is done, or have the writer save to a new name and rename it into place "
        "(zooadapt.save does), so readers always see a whole file.")


def _file_status(path: Path) -> os.stat_result:
    """The file's ``stat``, after checking that it is a non-empty regular file."""
    try:
        status = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        if _in_hub_cache(path):  # a cached file is gone: `hf cache delete`, or a cleanup
            raise _vanished(path) from None
        raise CheckpointFormatError(f"{path} is not a file; check the path") from None
    except OSError as exc:
        raise CheckpointFormatError(f"{path} cannot be read ({exc}); check the path and its permissions") from exc
    if not stat.S_ISREG(status.st_mode):
        raise CheckpointFormatError(f"{path} is not a file; check the path")
    if status.st_size == 0:
        raise CheckpointFormatError(f"{path} is empty; download or copy it again")
    return status


_SETTLE_NS = 20_000_000
"""A file changed less than 20 ms ago is read only once it is that old: the kernel stamps a write's
mtime before its bytes land, so a read racing the last write of a save would otherwise see the
stamp unchanged and the bytes changing (seen: 5% of reads of a file rewritten in place)."""


def _settled_status(path: Path) -> os.stat_result:
    """The file's status once it has not changed for ``_SETTLE_NS`` (waiting 0.5 s at most: a file
    that never rests is read anyway, and a change during the read is still caught by its stamps)."""
    deadline = time.monotonic_ns() + 25 * _SETTLE_NS
    while True:
        status = _file_status(path)
        age = time.time_ns() - max(status.st_mtime_ns, status.st_ctime_ns)
        if not 0 <= age < _SETTLE_NS or time.monotonic_ns() > deadline:
            return status
        time.sleep((_SETTLE_NS - age) / 1e9)


_RECENT_NS = 2_000_000_000
"""A file that does not parse and was written less than 2 s before the read may be a save still under
way (one that pauses longer than ``_SETTLE_NS`` between writes): its error says so. Only the wording
depends on this; the verdict (refused) does not."""


def _age_ms(status: os.stat_result) -> int:
    """Milliseconds since the file's bytes last changed (its mtime: a rename or chmod moves only ctime)."""
    return max(0, (time.time_ns() - status.st_mtime_ns) // 1_000_000)


def _recently_changed(status: os.stat_result) -> bool:
    return _age_ms(status) * 1_000_000 < _RECENT_NS


def _identity(status: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is rewritten in place (size, mtime, ctime) or replaced (device, inode)."""
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns


def _identity_now(path: Path) -> tuple[int, ...] | None:
    try:
        return _identity(os.stat(path))
    except OSError:
        return None


def _in_hub_cache(path: Path) -> bool:
    return any(part.startswith(("models--", "datasets--", "spaces--")) for part in Path(os.path.abspath(path)).parts)


def _vanished(path: Path) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"{path} was deleted while zooadapt was reading it (another process removed it: `hf cache delete`, a "
        "cleanup job, a save replacing it). Download it again (zooadapt fetch NAME --force, or load again: a "
        "missing cached file is fetched anew) or copy the file back, then load again.")


def _read_file_once(path: Path, status: os.stat_result, *, trusted: bool, mmap: bool | None,
                    use_ema: bool | None, target: str | None) -> CheckpointTensors:
    size = status.st_size
    mapped = is_immutable_cache_file(path) if mmap is None else bool(mmap)
    if is_safetensors(path):
        if target is not None:
            return averaged_model_counters(CheckpointTensors(_read_safetensors_to(path, target)))
        read = _read_safetensors(path, mapped, size)
        return averaged_model_counters(read if isinstance(read, CheckpointTensors) else CheckpointTensors(read))
    obj, standins = _read_pickle(path, trusted, mapped, target or "cpu")
    tensors = _tensors_of(obj, str(path), use_ema=use_ema, standins=standins)
    if isinstance(obj, Mapping) and "ds_version" in obj and any(t.numel() == 0 for t in tensors.values()):
        # DeepSpeed's engine saves ZeRO-3's parameters as empty placeholders (engine.py, _save_checkpoint)
        raise CheckpointFormatError(
            f"{path} is a DeepSpeed ZeRO-3 model-states file: its parameters are empty placeholders, their values "
            "partitioned across the ranks' optimizer states. Gather them once with the zero_to_fp32.py script "
            "DeepSpeed saved in the checkpoint folder (python zero_to_fp32.py CHECKPOINT_DIR pytorch_model.bin), "
            "then load weights='pytorch_model.bin'.")
    return tensors


def _tensors_of(obj: Any, where: str, *, use_ema: bool | None, standins: tuple[str, ...] = (),
                copy_to: str | None = None) -> CheckpointTensors:
    """The weights inside what a checkpoint holds (a state dict, a training checkpoint, a module),
    the weight set chosen as ``use_ema`` says; ``copy_to``: a device every tensor is copied to
    (for an object in memory, whose tensors stay the caller's)."""
    choice = choose_weight_set(obj, use_ema)
    where = f"{where}[{choice.weight_set!r}]" if choice.weight_set else where
    try:
        state = unwrap_state_dict(choice.weights, where)
    except CheckpointFormatError as exc:
        if not standins or isinstance(exc, CheckpointBoundsError):
            raise
        # the weights are in an object only its own code rebuilds (a torch.fx GraphModule is
        # pickled as a call that re-generates its module): name that code and the two ways out
        shown = ", ".join(standins[:4]) + (f", +{len(standins) - 4} more" if len(standins) > 4 else "")
        raise CheckpointFormatError(
            f"{exc}. The file's object is rebuilt by code zooadapt does not run on an untrusted file ({shown}), "
            "and no state dict was found without it. Save the model's state_dict() instead (torch.save(model."
            "state_dict(), ...) or safetensors), or, for a file you trust with that code installed, pass "
            "trusted=True.") from None
    tensors = CheckpointTensors(_sanitise(state, where, copy_to=copy_to))
    tensors.weight_set, tensors.alternatives, tensors.standins = choice.weight_set, choice.alternatives, standins
    tensors.kind, tensors.notes = choice.kind, choice.notes
    return averaged_model_counters(tensors)


def read_in_memory(obj: Any, *, use_ema: bool | None = None, device: str | torch.device | None = None,
                   copy: bool = True) -> CheckpointTensors:
    """The weights of a checkpoint already in memory (``weights=`` a state dict, a training
    checkpoint's dict, or a module), read as a file holding that object would be: the same
    unwrapping, weight-set choice and checks. Every tensor is copied (to ``device``, default
    where it is), so a model that takes them as its parameters shares no memory with the
    caller's object: training it cannot change the dict passed, nor a later change of the dict
    the model.

    ``copy=False``: the caller's own tensors (detached), for their shapes or to be copied from."""
    copy_to = None if not copy else "" if device is None else str(device)
    return _tensors_of(obj, f"weights= (a {type(obj).__name__} in memory)", use_ema=use_ema, copy_to=copy_to)


def _read_sharded(index_path: Path, *, trusted: bool, mmap: bool | None, use_ema: bool | None,
                  target: str | None) -> CheckpointTensors:
    """The tensors of every shard an index names, each shard read once, in the index's order of
    shards; refused when a shard is missing or the shards disagree with the index (``shards.py``)."""
    from .shards import check_shards, read_index

    index = read_index(index_path)
    out = CheckpointTensors()
    shapes: dict[str, tuple[int, ...]] | None = {}
    standins: list[str] = []
    contents: list[tuple[str, list[str]]] = []
    for shard in index.shards:
        path = index.present_shard(shard)
        tensors = _read_file(path, trusted=trusted, mmap=mmap, use_ema=use_ema, target=target)
        contents.append((shard, list(tensors)))
        if tensors.weight_set is not None and out.weight_set is None:
            out.weight_set, out.alternatives = tensors.weight_set, tensors.alternatives
            out.kind, out.notes = tensors.kind, tensors.notes
        standins += [s for s in tensors.standins if s not in standins]
        if shapes is not None and tensors.shapes is not None:
            shapes.update(tensors.shapes)
        else:
            shapes = None
        for key, value in tensors.items():
            if key in out:  # check_shards names both shards
                break
            out[key] = value
    check_shards(index, contents)
    out.shapes, out.standins = shapes, tuple(standins)
    return out

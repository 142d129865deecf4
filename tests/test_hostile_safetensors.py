"""Crafted safetensors files: zooadapt's fast reader agrees with the safetensors library.

zooadapt maps safetensors files itself (``checkpoint._map_safetensors``, ~2x faster than the
library's per-tensor Python calls). It must accept and refuse exactly the files the library
does and yield identical tensors; anything it is not sure about goes to the library, and the
library's refusal (or torch's, for shapes it cannot hold) becomes a ``CheckpointFormatError``.
Hand-crafted headers first, then a property-based fuzz test on generated and mutated files.
"""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes

from zooadapt.errors import CheckpointFormatError
from zooadapt.weights.checkpoint import _map_safetensors, read_checkpoint


def _file(header: bytes | str | dict, data: bytes = b"") -> bytes:
    """A safetensors file; the header is padded with spaces to 8 bytes, as writers do, so the
    tensors are aligned and the header itself decides which reader takes the file."""
    raw = header if isinstance(header, bytes) else (json.dumps(header) if isinstance(header, dict) else header).encode(
        "utf-8", "surrogatepass")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def _t(dtype="F32", shape=(1,), offsets=(0, 4)) -> dict:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def _raw(tensor: torch.Tensor) -> bytes:
    return bytes(tensor.contiguous().reshape(-1).view(torch.uint8).tolist()) if tensor.numel() else b""


def _library(path: Path) -> dict[str, torch.Tensor] | Exception:
    try:
        return load_file(path)
    except Exception as exc:  # SafetensorError, or torch's TypeError/RuntimeError for shapes it cannot hold
        return exc


def _assert_agree(path: Path) -> None:
    """The fast reader (mapped and in memory) and read_checkpoint give the library's answer."""
    ref = _library(path)
    for mapped in (True, False):
        fast = _map_safetensors(path, mapped)
        if isinstance(ref, Exception):
            assert fast is None, f"the fast path accepted a file the library refuses ({ref})"
            with pytest.raises(CheckpointFormatError):
                read_checkpoint(path, mmap=mapped)
            continue
        for got in ([fast] if fast is not None else []) + [read_checkpoint(path, mmap=mapped)]:
            assert sorted(got) == sorted(ref)
            for key, tensor in ref.items():
                assert got[key].dtype == tensor.dtype and got[key].shape == tensor.shape, key
                assert _raw(got[key]) == _raw(tensor), key


F4 = b"\0\0\x80?"  # 1.0 as float32

CRAFTED: dict[str, bytes] = {
    "plain": _file({"a": _t()}, F4),
    "dtype-as-list": _file({"a": _t(dtype=["F32"])}, F4),
    "dtype-as-dict": _file({"a": _t(dtype={"F32": 1})}, F4),
    "dtype-null": _file({"a": _t(dtype=None)}, F4),
    "dtype-lowercase": _file({"a": _t(dtype="f32")}, F4),
    "dtype-unknown-to-zooadapt": _file({"a": _t(dtype="F8_E4M3", offsets=(0, 1))}, b"\x38"),
    "dtype-u16": _file({"a": _t(dtype="U16", offsets=(0, 2))}, b"\x01\x00"),
    "deep-nesting-in-metadata": _file('{"__metadata__":' + "[" * 200_000 + "]" * 200_000 + ', "a":'
                                      + json.dumps(_t()) + "}", F4),
    "deep-nesting-in-tensor": _file('{"a":' + "{" * 1000 + "}" * 1000 + "}"),
    "huge-shape": _file({"a": _t(shape=(1 << 40, 1 << 40), offsets=(0, 4))}, F4),
    "shape-beyond-u64": _file({"a": _t(shape=(1 << 64,), offsets=(0, 0))}),
    "zero-product-overflow": _file({"a": _t(shape=(1 << 32, 1 << 32, 0), offsets=(0, 0))}),
    "zero-product-huge-dim": _file({"a": _t(shape=(0, (1 << 64) - 1), offsets=(0, 0))}),
    "zero-product-dim-beyond-torch": _file({"a": _t(shape=(1 << 63, 0), offsets=(0, 0))}),
    "zero-size": _file({"a": _t(shape=(0, 5), offsets=(0, 0))}),
    "scalar": _file({"a": _t(shape=(), offsets=(0, 4))}, F4),
    "shape-float": _file('{"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}', F4),
    "shape-exponent": _file('{"a":{"dtype":"F32","shape":[1e0],"data_offsets":[0,4]}}', F4),
    "shape-minus-zero": _file('{"a":{"dtype":"F32","shape":[-0],"data_offsets":[0,0]}}'),
    "shape-negative": _file('{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', F4),
    "shape-string": _file({"a": _t(shape=("1",))}, F4),
    "shape-bool": _file('{"a":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}}', F4),
    "offsets-three": _file({"a": _t(offsets=(0, 4, 4))}, F4),
    "offsets-reversed": _file({"a": _t(offsets=(4, 0))}, F4),
    "offsets-gap": _file({"a": _t(offsets=(0, 4)), "b": _t(offsets=(8, 12))}, F4 * 3),
    "offsets-overlap": _file({"a": _t(shape=(2,), offsets=(0, 8)), "b": _t(shape=(2,), offsets=(4, 12))}, F4 * 3),
    "offsets-not-from-zero": _file({"a": _t(offsets=(4, 8))}, F4 * 2),
    "trailing-bytes": _file({"a": _t()}, F4 + b"\0"),
    "missing-bytes": _file({"a": _t(shape=(2,), offsets=(0, 8))}, F4),
    "misaligned": _file({"b": _t("U8", (1,), (0, 1)), "a": _t("F32", (1,), (1, 5))}, b"\x07" + F4),
    "unpadded-header": struct.pack("<Q", 61) + json.dumps({"a": _t()}).encode() + F4,
    "metadata-int-value": _file({"__metadata__": {"k": 1}, "a": _t()}, F4),
    "metadata-null": _file({"__metadata__": None, "a": _t()}, F4),
    "metadata-list": _file({"__metadata__": ["x"], "a": _t()}, F4),
    "metadata-nested": _file({"__metadata__": {"k": {"x": "y"}}, "a": _t()}, F4),
    "metadata-shaped-like-a-tensor": _file({"__metadata__": _t()}, F4),
    "metadata-after-tensors": _file('{"a":' + json.dumps(_t()) + ',"__metadata__":{"k":"v"}}', F4),
    "metadata-only": _file({"__metadata__": {"k": "v"}}),
    "empty-object": _file("{}"),
    "bom": _file(b"\xef\xbb\xbf" + json.dumps({"a": _t()}).encode(), F4),
    "utf16-header": _file(json.dumps({"a": _t()}).encode("utf-16-le"), F4),
    "invalid-utf8": _file(b'{"\xff":' + json.dumps(_t()).encode() + b"}", F4),
    "encoded-surrogate-bytes": _file(b'{"\xed\xa0\x80":' + json.dumps(_t()).encode() + b"}", F4),
    "lone-surrogate-escape-key": _file('{"\\ud800":' + json.dumps(_t()) + "}", F4),
    "lone-surrogate-escape-metadata": _file('{"__metadata__":{"k":"\\udfff"},"a":' + json.dumps(_t()) + "}", F4),
    "surrogate-pair-key": _file('{"\\ud83d\\ude00":' + json.dumps(_t()) + "}", F4),
    "nan-in-metadata": _file('{"__metadata__":{"k":NaN},"a":' + json.dumps(_t()) + "}", F4),
    "infinity-in-extra-field": _file('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":Infinity}}', F4),
    "extra-field": _file({"a": {**_t(), "extra": [1, 2]}}, F4),
    "duplicate-key": _file('{"a":' + json.dumps(_t()) + ',"a":' + json.dumps(_t()) + "}", F4),
    "duplicate-key-differing": _file('{"a":' + json.dumps(_t(offsets=(4, 8))) + ',"a":' + json.dumps(_t()) + "}", F4),
    "control-char-in-key": _file(b'{"a\x01":' + json.dumps(_t()).encode() + b"}", F4),
    "leading-whitespace": _file(" \n" + json.dumps({"a": _t()}), F4),
    "trailing-whitespace": _file(json.dumps({"a": _t()}) + "   \t", F4),
    "trailing-garbage": _file(json.dumps({"a": _t()}) + "x", F4),
    "header-is-a-list": _file("[1, 2]"),
    "header-is-a-string": _file('"hello"'),
    "header-is-null": _file("null"),
    "tensor-is-null": _file('{"a":null}'),
    "header-length-zero": struct.pack("<Q", 0) + b"{}",
    "header-length-beyond-file": struct.pack("<Q", 1000) + b'{"a":1}',
    "header-length-beyond-limit": struct.pack("<Q", 100_000_001) + b"{" + b" " * 16,
    "header-length-2-to-63": struct.pack("<Q", 1 << 63) + b"{}",
    "bool-with-value-2": _file({"a": _t("BOOL", (1,), (0, 1))}, b"\x02"),
    "int-beyond-u64-in-offsets": _file({"a": _t(offsets=(0, 1 << 64))}, F4),
    "many-tensors": _file({f"t{i}": _t(offsets=(4 * i, 4 * i + 4)) for i in range(50)}, F4 * 50),
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_file_gets_the_librarys_answer(tmp_path, name):
    path = tmp_path / "crafted.safetensors"
    path.write_bytes(CRAFTED[name])
    _assert_agree(path)


def test_crafted_files_the_library_refuses_are_checkpoint_format_errors_naming_the_fix(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(CRAFTED["dtype-as-list"])
    with pytest.raises(CheckpointFormatError, match="download again"):
        read_checkpoint(path)


# -- property-based fuzzing ------------------------------------------------------------------

_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.int16,
           torch.int8, torch.uint8, torch.bool, torch.float8_e4m3fn]

_shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3)


@st.composite
def _state_dicts(draw) -> dict[str, torch.Tensor]:
    names = draw(st.lists(st.text("abcxyz._", min_size=1, max_size=6), min_size=1, max_size=5, unique=True))
    out = {}
    for name in names:
        dtype = draw(st.sampled_from(_DTYPES))
        shape = draw(_shapes)
        count = 1
        for d in shape:
            count *= d
        raw = draw(st.binary(min_size=count * dtype.itemsize, max_size=count * dtype.itemsize))
        flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        out[name] = flat.view(dtype).reshape(shape)
    return out


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 65), 1 << 65) | st.floats(allow_nan=False)
    | st.text(max_size=4) | st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "C64"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def _files(draw) -> bytes:
    data = save_bytes(draw(_state_dicts()), metadata=draw(st.none() | st.dictionaries(st.text(max_size=3),
                                                                                         st.text(max_size=3))))
    length = int.from_bytes(data[:8], "little")
    header, body = json.loads(data[8 : 8 + length]), data[8 + length :]
    how = draw(st.sampled_from(["none", "field", "drop-field", "bytes", "length", "body", "text"]))
    if how in ("field", "drop-field"):
        keys = [k for k in header if k != "__metadata__"] or list(header)
        key = draw(st.sampled_from(keys))
        entry = header[key]
        if isinstance(entry, dict) and entry:
            field = draw(st.sampled_from(sorted(entry) + ["extra"]))
            if how == "field":
                entry[field] = draw(_json_values)
            else:
                entry.pop(field, None)
        else:
            header[key] = draw(_json_values)
    raw = json.dumps(header).encode()
    if how == "text":
        text = raw.decode()
        at = draw(st.integers(0, len(text)))
        insert = draw(st.sampled_from([" ", "\ufeff", "\\ud800", "NaN", "-0", ",", "}", '"', "1e5", "\x00"]))
        raw = (text[:at] + insert + text[at:]).encode("utf-8", "surrogatepass")
    if how == "body":
        body = draw(st.sampled_from([body[:-1], body + b"\0", body[1:], b"\0" + body]))
    out = bytearray(struct.pack("<Q", len(raw)) + raw + body)
    if how == "length":
        out[:8] = struct.pack("<Q", draw(st.integers(0, len(out) + 16)))
    if how == "bytes":
        for _ in range(draw(st.integers(1, 4))):
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
    return bytes(out)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@pytest.mark.slow
@given(_files())
def test_fuzz_fast_reader_agrees_with_the_library(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.safetensors"
        path.write_bytes(data)
        _assert_agree(path)

"""A save that pauses half-way (issue #20): the reader never returns the half, and its error says
that a writer may still be at work, when the file was written a moment ago.

``torch.save`` and ``safetensors`` write in place with ``open(path, "wb")``: a reader that comes
while such a writer pauses longer than the settle time (``checkpoint._SETTLE_NS``) sees a file
whose stamps no longer move and whose end is missing. Nothing in the file tells a pause from a
truncated copy, so the verdict is the same (refused); the wording differs with the file's age.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import save_file

import zooadapt
from zooadapt.errors import CheckpointFormatError
from zooadapt.weights.checkpoint import read_checkpoint

STILL_WRITING = "load again once it is done"


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {f"layer{i}.weight": torch.randn(64, 64) for i in range(8)}


def _half_written(tmp_path, form: str):  # type: ignore[no-untyped-def]
    whole = tmp_path / f"whole.{form}"
    if form == "pth":
        torch.save(_state(), whole)
    else:
        save_file(_state(), whole)
    data = whole.read_bytes()
    torn = tmp_path / f"torn.{form}"
    torn.write_bytes(data[: len(data) // 2])
    return torn


@pytest.mark.parametrize("form", ["pth", "safetensors"])
def test_a_half_written_file_is_refused_and_said_to_be_maybe_still_written(tmp_path, form):
    torn = _half_written(tmp_path, form)
    time.sleep(0.03)  # older than the settle time: read at once, as during a writer's pause
    with pytest.raises(CheckpointFormatError, match=STILL_WRITING):
        read_checkpoint(torn)


@pytest.mark.parametrize("form", ["pth", "safetensors"])
def test_an_old_truncated_file_is_refused_without_the_writer_hint(tmp_path, form):
    torn = _half_written(tmp_path, form)
    an_hour_ago = time.time() - 3600
    os.utime(torn, (an_hour_ago, an_hour_ago))
    with pytest.raises(CheckpointFormatError) as info:
        read_checkpoint(torn)
    assert STILL_WRITING not in str(info.value)


WRITER = """
import os, sys, time
data = open(sys.argv[2], "rb").read()
with open(sys.argv[1], "wb") as f:  # as torch.save writes: in place
    f.write(data[: len(data) // 2])
    f.flush()
    os.fsync(f.fileno())
    print("paused", flush=True)
    time.sleep(float(sys.argv[3]))
    f.write(data[len(data) // 2:])
print("done", flush=True)
"""


@pytest.mark.slow
def test_a_load_during_a_writers_pause_never_returns_half_a_file(tmp_path, resnet18_weights):
    """A real writer process rewrites resnet18's file in place and pauses half-way for 0.5 s; a
    load in that pause is refused (naming the writer), and the load after it returns the new
    tensors exactly."""
    new = zooadapt.load("resnet18", pretrained=False).state_dict()
    source = tmp_path / "new.pth"
    torch.save(new, source)
    target = tmp_path / "last.pth"
    torch.save(zooadapt.load("resnet18", pretrained=False).state_dict(), target)  # the old version
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(source), "0.5"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "paused"
        time.sleep(0.05)
        with pytest.raises(CheckpointFormatError, match=STILL_WRITING):
            zooadapt.load("resnet18", weights=target)
    finally:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "done"
        writer.wait(timeout=30)
    loaded = zooadapt.load("resnet18", weights=target).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in new.items() if v.dtype.is_floating_point)

"""Terminal control sequences from a file reach no terminal raw.

A checkpoint's key names and a file's name are chosen by whoever made them: an ``ESC`` sequence
in a key could retitle the window or clear the screen when ``zooadapt inspect`` prints it, and a
newline in a path used to cut the CLI's one-line error in two ("weights file /tmp/no (`zooadapt
-v …` shows the details)"). Every such character is written as its escape
(``zooadapt.contract.escape.printable``): in the CLI's tables and error line, in load reports, in
the refusals that quote keys or prefixes.
"""

from __future__ import annotations

import generators as g
import pytest
import torch

import zooadapt
from zooadapt.cli import main
from zooadapt.errors import AmbiguousCheckpointError

EVIL = ("\x1b]0;pwned\x07", "\x1b[2J", "\x9b31m", "\u202e", "\r", "\n")
"""An OSC window title, a clear-screen CSI, a one-byte C1 CSI, a right-to-left override, a
carriage return and a newline."""


def raw_controls(text: str) -> list[str]:
    """The control characters ``text`` carries raw (its own line breaks aside)."""
    return [c for c in text if (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) <= 0x9F or c == "\u202e"]


@pytest.fixture(scope="module")
def resnet_state() -> dict[str, torch.Tensor]:
    return g.seeded_weights("resnet18", 3)


@pytest.mark.parametrize("evil", EVIL, ids=["osc-title", "clear-screen", "c1-csi", "rtl-override", "cr", "newline"])
def test_inspect_prints_a_hostile_key_escaped(evil, resnet_state, tmp_path, capsys):
    key = f"extra{evil}.weight"
    path = tmp_path / "hostile.pth"
    torch.save({**resnet_state, key: torch.zeros(3)}, path)
    assert main(["inspect", str(path), "--model", "resnet18", "--keys"]) == 0
    out = capsys.readouterr().out
    assert raw_controls(out) == []
    assert repr(evil)[1:-1] in out  # the key is shown, escaped


@pytest.mark.parametrize("evil", EVIL, ids=["osc-title", "clear-screen", "c1-csi", "rtl-override", "cr", "newline"])
def test_a_path_with_control_characters_gives_one_escaped_error_line(evil, tmp_path, capsys):
    missing = tmp_path / f"no{evil}such.pth"
    assert main(["inspect", str(missing), "--model", "resnet18"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and raw_controls(err) == []
    assert "does not exist" in err and repr(evil)[1:-1] in err


def test_a_load_report_escapes_the_keys_it_lists(resnet_state, tmp_path):
    path = tmp_path / "hostile.pth"
    torch.save({**resnet_state, "x\x1b[2J.weight": torch.zeros(3)}, path)
    model = zooadapt.load("resnet18", weights=path)
    text = str(model.zooadapt.report)
    assert raw_controls(text) == [] and "x\\x1b[2J.weight" in text


def test_a_refusal_quoting_hostile_prefixes_is_escaped(resnet_state):
    shapes = g.shapes_of(resnet_state)
    state = {**{f"a\x1b[2J.{k}": s for k, s in shapes.items()}, **{f"b\x9b1m.{k}": s for k, s in shapes.items()}}
    with pytest.raises(AmbiguousCheckpointError) as err:
        zooadapt.plan_for("resnet18", state)
    assert raw_controls(str(err.value)) == []


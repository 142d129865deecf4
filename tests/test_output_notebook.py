"""Notebooks show the load report and parameter groups as HTML tables (issue #22).

``model.zooadapt.report`` has ``_repr_html_``: per stage what loaded, is missing, new or frozen,
then coverage and notes, every key escaped. ``zooadapt.param_groups`` returns a ``list`` of
dicts that torch's optimizers take as before, shown as the ``format_param_groups`` table, whose
text is unchanged and which has an HTML view of its own.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
import torch

import zooadapt
from zooadapt.loading.report import LoadReport
from zooadapt.testing import torchvision_state_dict


class _Cells(HTMLParser):
    """The rows of an HTML table (header included) and all text, as a notebook would show them."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.tags: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def cells(markup: str) -> _Cells:
    parser = _Cells()
    parser.feed(markup)
    parser.close()
    return parser


def test_report_html_is_a_stage_table(resnet18_weights):
    model = zooadapt.load("resnet18", num_classes=5, freeze="layer1-2")
    markup = model.zooadapt.report._repr_html_()
    table = cells(markup).rows
    assert table[0] == ["stage", "loaded", "missing", "new head", "frozen"]
    rows = {r[0]: r[1:] for r in table[1:]}
    assert list(rows) == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert rows["layer1"] == [str(sum(k.startswith("layer1.") for k in resnet18_weights)), "0", "0", "yes"]
    assert rows["layer3"][-1] == "" and rows["head"] == ["0", "0", "2", ""]
    assert "coverage: " in markup and "fc.weight" in markup  # the new head's keys are named
    assert model.zooadapt._repr_html_() == markup


def test_every_key_name_is_escaped():
    state = torchvision_state_dict("resnet18", seed=4)
    hostile = "<img src=x onerror=alert(1)>.weight"
    state[hostile] = torch.zeros(1)
    plan = zooadapt.plan_for("resnet18", state)
    report = LoadReport(model="<b>r18</b>", family="resnet", arch="resnet18", source="x<y>.pth", path=None,
                        commit=None, plan=plan, num_classes=1000)
    markup = report._repr_html_()
    assert "<img" not in markup and "&lt;img src=x onerror=alert(1)&gt;.weight" in markup
    assert "<b>r18</b>" not in markup and "&lt;b&gt;r18&lt;/b&gt;" in markup
    assert set(cells(markup).tags) <= {"div", "p", "b", "br", "code", "table", "thead", "tbody", "tr", "th", "td",
                                       "ul", "li", "details", "summary"}
    # without a stage map (load_weights into your own model): the top-level modules stand in
    assert [r[0] for r in cells(markup).rows[1:]] == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "head"]


def test_a_random_model_report_has_html_too():
    model = zooadapt.load("resnet18", pretrained=False, num_classes=3)
    markup = model.zooadapt.report._repr_html_()
    assert "random initialisation" in markup and "<table" not in markup


def test_param_groups_are_a_list_optimizers_take_with_an_html_view():
    model = zooadapt.load("resnet18", pretrained=False, num_classes=3, freeze="layer1")
    groups = zooadapt.param_groups(model, lr=1e-3, head_lr=1e-2, weight_decay=0.05)
    assert isinstance(groups, list) and all(type(g) is dict for g in groups)
    optimizer = torch.optim.AdamW(groups)
    assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in groups]
    table = cells(groups._repr_html_()).rows
    assert table[0] == ["stage", "tensors", "params", "lr", "weight_decay"]
    assert [r[0] for r in table[1:]] == [g["name"] for g in groups]
    assert table[-1][3] == "0.01"


def test_format_param_groups_is_text_with_an_html_table():
    model = zooadapt.load("resnet18", pretrained=False, num_classes=3, freeze="layer1")
    groups = zooadapt.param_groups(model, lr=1e-3)
    text = zooadapt.format_param_groups(groups, model)
    assert isinstance(text, str)
    lines = str(text).splitlines()
    assert lines[0].split() == ["stage", "tensors", "params", "lr", "weight_decay"]
    assert lines[1].split()[0] == "layer1" and lines[1].split()[3] == "frozen"
    rows = cells(text._repr_html_()).rows
    assert [r[0] for r in rows] == [line.split()[0] for line in lines]
    named = zooadapt.format_param_groups([{**groups[0], "name": "<stem>"}])
    assert "&lt;stem&gt;" in named._repr_html_() and "<stem>" not in named._repr_html_()


@pytest.mark.parametrize("factory", [list, tuple])
def test_format_param_groups_takes_any_iterable_of_groups(factory):
    model = zooadapt.load("resnet18", pretrained=False, num_classes=3)
    groups = factory(zooadapt.param_groups(model, lr=1e-3))
    assert len(zooadapt.format_param_groups(groups).splitlines()) == len(groups) + 1

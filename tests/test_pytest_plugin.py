"""zooadapt's pytest plugin, as a plugin author's test suite sees it: the local Hub and the
conformance check as fixtures, with nothing but ``pip install zooadapt`` (entry point ``pytest11``)."""

from __future__ import annotations

import importlib.metadata as md

import pytest

pytest_plugins = ["pytester"]

_AUTHOR_TESTS = '''
import pytest
import torch
import zooadapt
from zooadapt.plugin_api import Family, ModelEntry, Stage, StageMap, WeightSource, hookimpl


class Tiny(torch.nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.out = torch.nn.Linear(4, num_classes)

    def forward(self, x):
        return self.out(self.pool(self.body(x)).flatten(1))


FAMILY = Family(name="tiny", build=lambda arch, num_classes=10: Tiny(num_classes),
                stages=StageMap((Stage("body", ("body",)),), head="out"))


class Plugin:
    @hookimpl
    def zooadapt_register_families(self, register):
        register(FAMILY)

    @hookimpl
    def zooadapt_register_models(self, register):
        register(ModelEntry(name="tinynet", family="tiny", arch="tiny",
                            source=WeightSource(repo_id="me/tinynet", filename="model.safetensors")))


def test_conforms(zooadapt_check_family):
    report = zooadapt_check_family(FAMILY, "tiny")
    assert report.head == "out"


def test_a_broken_family_is_caught(zooadapt_check_family):
    broken = Family(name="broken", build=FAMILY.build, stages=StageMap((Stage("body", ("body",)),), head="nope"))
    with pytest.raises(AssertionError, match="nope"):
        zooadapt_check_family(broken, "tiny")


def test_loads_from_the_local_hub(zooadapt_hub, zooadapt_hub_cache, zooadapt_register_plugin):
    from zooadapt.testing import safetensors_bytes, seeded_state_dict

    zooadapt_register_plugin(Plugin(), "tiny-plugin")
    state = seeded_state_dict(Tiny(), seed=3)
    zooadapt_hub.add_file("me/tinynet", "model.safetensors", safetensors_bytes(state))
    model = zooadapt.load("tinynet", num_classes=2, freeze="body")
    assert torch.equal(model.body[0].weight, state["body.0.weight"])
    assert any(zooadapt_hub_cache.rglob("model.safetensors"))


def test_the_plugin_is_gone_after_its_test():
    assert "tinynet" not in zooadapt.list_models("tiny*")
'''


def _entry_point_installed() -> bool:
    return any(ep.value == "zooadapt.testing.pytest_plugin" for ep in md.entry_points(group="pytest11"))


@pytest.mark.slow
def test_plugin_authors_get_the_hub_and_the_conformance_check(pytester: pytest.Pytester):
    assert _entry_point_installed(), "zooadapt's pytest11 entry point is missing: reinstall (pip install -e .)"
    pytester.makepyfile(test_author=_AUTHOR_TESTS)
    result = pytester.runpytest_subprocess("--zooadapt-local-hub", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


@pytest.mark.slow
def test_without_the_option_the_hub_fixture_skips_and_says_how(pytester: pytest.Pytester):
    pytester.makepyfile(test_author=_AUTHOR_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", "-k", "local_hub")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*--zooadapt-local-hub*"])


@pytest.mark.slow
def test_the_option_refuses_when_huggingface_hub_is_already_imported(pytester: pytest.Pytester):
    pytester.makeconftest("import huggingface_hub\n")
    pytester.makepyfile(test_nothing="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("--zooadapt-local-hub", "-p", "no:cacheprovider")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*huggingface_hub was imported before the local Hub*"])

"""Every registered family, built-in or third-party, passes the conformance check plugin authors use."""

from __future__ import annotations

import pytest
import torch

from zooadapt.plugin_api import Family, Stage, StageMap, get_registry
from zooadapt.testing.conformance import ConformanceError, check_family

# Families whose names are open-ended declare no architectures; check them on small ones.
OPEN_ENDED = {"timm": ("resnet10t", "convnext_atto", "vit_tiny_patch16_224", "efficientnet_b0")}


def _cases() -> list[tuple[str, str]]:
    cases = []
    for name, family in sorted(get_registry().families.items()):
        archs = OPEN_ENDED.get(name, family.architectures[:1])
        cases += [(name, arch) for arch in archs]
    return cases + [("mobilenet_v3", "mobilenet_v3_small")]


CASES = _cases()


def test_every_installed_family_is_covered():
    families = {name for name, _ in CASES}
    assert {"resnet", "mobilenet_v1", "mobilenet_v2", "mobilenet_v3", "alexnet", "timm"} <= families
    assert families == set(get_registry().families)


@pytest.mark.slow
@pytest.mark.parametrize(("family", "arch"), CASES, ids=[f"{f}-{a}" for f, a in CASES])
def test_family_conforms(family, arch):
    report = check_family(family, arch)
    assert len(report.passed) == 6 and report.head_parameters > 0
    assert report.parameters > report.head_parameters


# -- the checker itself must catch broken families ------------------------------------------


class _Net(torch.nn.Module):
    def __init__(self, num_classes: int = 10, shared_head: bool = False) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
        self.body = torch.nn.Conv2d(4, 8, 3)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(8, 10 if shared_head else num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.body(self.stem(x))).flatten(1))


GOOD = StageMap((Stage("stem", "stem"), Stage("body", "body")), head="fc")


def _family(stages=GOOD, build=None) -> Family:
    return Family(name="toy", build=build or (lambda arch, num_classes=10: _Net(num_classes)), stages=stages,
                  architectures=("toy",), default_num_classes=10)


def test_a_conforming_toy_family_passes():
    assert check_family(_family()).stages == ("stem", "body")


@pytest.mark.parametrize(("stages", "build", "expected"), [
    (StageMap((Stage("stem", "stem"),), head="fc"), None, r"1 parameters? belong to no stage|belong to no stage"),
    (StageMap((Stage("stem", "stem"), Stage("all", ("stem", "body"))), head="fc"), None, "more than one stage"),
    (StageMap((Stage("stem", "stem"), Stage("body", "body"), Stage("ghost", "nothing")), head="fc"), None,
     "no parameters .*ghost"),
    (GOOD, lambda arch, num_classes=10: _Net(num_classes, shared_head=True), "did not change the head"),
    (StageMap((Stage("stem", "stem"), Stage("body", ("body", "fc"))), head="classifier"), None, "head 'classifier'"),
])
def test_broken_families_are_reported(stages, build, expected):
    with pytest.raises(ConformanceError, match=expected):
        check_family(_family(stages, build))


def test_conformance_error_is_an_assertion_for_pytest():
    assert issubclass(ConformanceError, AssertionError)
    from zooadapt.testing import check_family as exported

    assert exported is check_family

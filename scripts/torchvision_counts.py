"""How many of torchvision's classification models load exactly from a torchvision file.

    .venv/bin/python scripts/torchvision_counts.py            # every name (a few minutes)
    .venv/bin/python scripts/torchvision_counts.py --fast     # only the fast subset

Runs ``tests/test_torchvision_zoo.py::test_a_torchvision_file_computes_what_torchvision_computed``
(and the reduced meta check of the huge models) through pytest and counts its cases, so the
numbers are the tests' own: *exact* (the file's outputs match torchvision's model within 1e-6 of
the largest; the huge ones: their reduced check passed), *refused* (a known limit, with its reason:
the strict xfails), *unknown* (no zooadapt name), *failed* (anything else).
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ("tests/test_torchvision_zoo.py::test_a_torchvision_file_computes_what_torchvision_computed",
         "tests/test_torchvision_zoo.py::test_a_huge_torchvision_model_plans_on_meta")


class Collector:
    def __init__(self) -> None:
        self.outcomes: dict[str, tuple[str, str]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        name = report.nodeid.rpartition("[")[2].rstrip("]")
        if report.when == "call" or (report.outcome != "passed" and name not in self.outcomes):
            if hasattr(report, "wasxfail") and report.skipped:
                self.outcomes[name] = ("refused", report.wasxfail)
            elif report.failed:
                lines = [ln[1:].strip() for ln in report.longreprtext.splitlines() if ln.startswith("E ")]
                self.outcomes[name] = ("failed", (lines or ["?"])[0][:160])
            else:
                self.outcomes[name] = ("exact" if report.outcome == "passed" else report.outcome, "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="only the fast subset (not marked slow)")
    args = parser.parse_args()
    import torchvision

    import zooadapt
    from zooadapt.contract.errors import UnknownModelError

    names = torchvision.models.list_models(module=torchvision.models)
    unknown = []
    for name in names:
        try:
            zooadapt.plugin_api.get_registry().entry(name)
        except UnknownModelError:
            unknown.append(name)
    collector = Collector()
    argv = [*TESTS, "-q", "-p", "no:cacheprovider", "--tb=short", "-m", "not slow" if args.fast else ""]
    pytest.main(argv, plugins=[collector])
    counts = collections.Counter(kind for kind, _ in collector.outcomes.values())
    print(f"\ntorchvision {torchvision.__version__}: {len(names)} classification models")
    print(f"  exact:   {counts['exact']}")
    print(f"  refused: {counts['refused']}")
    for name, (kind, why) in sorted(collector.outcomes.items()):
        if kind == "refused":
            print(f"    {name}: {why}")
    print(f"  unknown: {len(unknown)}{' (' + ', '.join(unknown) + ')' if unknown else ''}")
    if counts["failed"]:
        print(f"  failed:  {counts['failed']}")
        for name, (kind, why) in sorted(collector.outcomes.items()):
            if kind == "failed":
                print(f"    {name}: {why}")
    if args.fast:
        print(f"  (fast subset: {len(collector.outcomes)} of {len(names)} run)")
    else:
        from readme_markers import write_block

        refused = {n: why for n, (kind, why) in collector.outcomes.items() if kind == "refused"}
        write_block("torchvision-counts", summary(torchvision.__version__, len(names), counts, refused, unknown))
    return 1 if counts["failed"] else 0


def summary(version: str, total: int, counts: collections.Counter[str], refused: dict[str, str],
            unknown: list[str]) -> str:
    """The README's sentence on the last full run (between the ``torchvision-counts`` markers)."""
    text = (f"`scripts/torchvision_counts.py` counts them (torchvision {version.split('+')[0]}): "
            f"{counts['exact']} of {total} compute what the torchvision model computes (vit_h_14 and "
            "regnet_y_128gf checked by keys, shapes, stages and head on meta only, for their size)")
    if refused:
        text += f"; refused with a reason: {', '.join(sorted(refused))}"
    if unknown:
        text += f"; unknown: {', '.join(unknown)}"
    if counts["failed"]:
        text += f"; **failed: {counts['failed']}**"
    return text + ". Written by the script, not typed."


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())

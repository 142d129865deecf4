"""Run the architecture sweeps and print how many cases pass, per check.

    .venv/bin/python scripts/sweep_counts.py            # the whole sweep (slow cases included)
    .venv/bin/python scripts/sweep_counts.py --fast     # only the fast subset
    .venv/bin/python scripts/sweep_counts.py --neighbours   # the fixtures' neighbours instead

The sweeps are the tests in ``tests/test_sweep_copies.py`` and ``tests/test_sweep_heads.py``
(architectures and inputs from ``tests/generators.py``); this runs them through pytest and
counts the outcomes, so the numbers are the tests' own. A check whose specified outcome is a
refusal (two copies of a network, two keys for one tensor) counts its passing cases as
"refused as specified"; "failed (known)" are the cases marked ``xfail(strict=True)`` for a known
zooadapt bug, "failed" anything else that did not pass.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = ("tests/test_sweep_copies.py", "tests/test_sweep_heads.py")
NEIGHBOUR_FILES = ("tests/test_sweep_fixture_neighbours.py", "tests/test_transformers_twins.py",
                   "tests/test_transformers_regnet.py", "tests/test_transformers_config.py",
                   "tests/test_saved_dtypes.py", "tests/test_build_options_saved.py", "tests/test_head_never_lost.py",
                   "tests/test_identify_layouts.py", "tests/test_weight_sets_neighbours.py",
                   "tests/test_transformers_clip.py", "tests/test_transformers_hier.py",
                   "tests/test_transformers_more.py", "tests/test_transformers_neighbours.py",
                   "tests/test_framework_checkpoints.py", "tests/test_reparametrized.py",
                   "tests/test_options_every_builder.py", "tests/test_other_formats.py",
                   "tests/test_in_memory_weights.py", "tests/test_every_timm_plan.py")
"""The sweeps of each fixture's nearest neighbours: the same capability on other architectures,
wrappers, file forms, class counts, dtypes and libraries' files."""

CHECKS: dict[str, tuple[str, bool]] = {
    "test_two_copies_are_refused_until_one_is_named":
        ("two live copies, random prefixes, 3 key orders: refused; each rules= line loads its copy", True),
    "test_copies_paired_by_order_are_refused_or_settled_as_named_ones":
        ("two copies with numbered module names (paired by order), random prefixes: refused, each line loads "
         "its copy; student_/teacher_: the teacher", False),
    "test_the_ema_copy_loads_by_default_and_the_live_one_on_request":
        ("EMA/teacher copy + live copy: EMA by default, live with use_ema=False", False),
    "test_plain_keys_beside_a_prefixed_copy_are_two_copies":
        ("plain keys + a prefixed copy: a tie (live) or the EMA copy (EMA-named)", False),
    "test_two_keys_for_one_tensor_are_refused_naming_both":
        ("plain + module. copies of the same weights, 4 key orders: refused naming both keys", True),
    "test_any_two_live_prefixes_are_refused": ("hypothesis: any two live prefixes are refused", True),
    "test_an_ema_named_prefix_is_chosen_by_convention": ("hypothesis: an EMA-named prefix is chosen", False),
    "test_a_copy_nested_in_the_other_copys_prefix_is_still_a_copy":
        ("nested prefixes (a. and a.b.), 3 key orders: refused; each line picks its copy", True),
    "test_real_wrapper_pairs_are_refused": ("real wrapper-name pairs (MoCo, BYOL, ...) are refused", True),
    "test_every_classifier_of_the_architecture_is_replaced_trained_and_removed":
        ("two classifiers (distilled head_dist, VOLO aux_head): both replaced, trained, removed", False),
    "test_a_fine_tuned_head_is_kept_with_its_labels":
        ("fine-tuned head kept, same outputs, id2label labels, 4 file forms", False),
    "test_an_explicit_other_class_count_gives_a_new_head": ("explicit other num_classes: a new head", False),
    "test_placeholder_names_are_no_labels": ("LABEL_i placeholders: no labels", False),
    # the fixtures' neighbours (--neighbours)
    "test_an_mae_fine_tune_is_average_pooled_under_every_wrapper":
        ("MAE fine-tunes: 6 ViT/DeiT archs x 4 wrappers x head kept or new; MAE's own forward", False),
    "test_an_mmpretrain_resnet_keeps_its_trained_head": ("mmpretrain ResNet 18-152 x 2 class counts x 2 forms", False),
    "test_a_detectron2_trunk_lands_by_name_with_its_stride_caveat":
        ("detectron2 R18-R101 x FPN/C4/DC5/trunk x .pth/.pkl: by name, stride caveat", False),
    "test_a_low_precision_model_comes_back_in_its_dtypes": ("bf16/fp16 reload, 11 archs x 2 casts x 2 dtypes", False),
    "test_a_model_in_several_dtypes_comes_back_in_each": ("mixed dtypes reload: 5 archs x 3 mixes", False),
    "test_a_model_built_with_options_reloads_as_the_same_network":
        ("build options and module settings saved and rebuilt, 7 archs", False),
    "test_the_timm_twin_computes_what_transformers_computes":
        ("transformers twins (every layout: file, new head, base model): same outputs", False),
    "test_a_neighbour_loads_as_the_plain_file":
        ("transformers files x 4 wrappers, .pth in 3 orders, fp16/bf16, checkpoint dict, no config: as plain", False),
    "test_a_full_size_transformers_file_is_identified_as_its_timm_architecture":
        ("full-size transformers files identified without a name", False),
    "test_a_full_size_transformers_file_under_a_wrapper_is_identified_as_unwrapped":
        ("full-size transformers files x 5 wrappers (module., model., _orig_mod., ...): identified as unwrapped",
         False),
    "test_a_whole_clip_or_siglip_file_is_identified_by_its_image_tower":
        ("whole CLIPModel / SiglipModel: identified by the image tower, the text tower set aside", False),
    "test_an_averaged_models_own_state_dict_loads_its_average_and_reports_the_counter":
        ("AveragedModel's own state (.pth, .safetensors): the average loads, n_averaged named", False),
    "test_two_copies_of_a_fused_layouts_file_are_refused_and_each_line_loads_its_copy":
        ("a transformers file beside a module. copy: refused; each line loads its copy", True),
    "test_transformers_regnet_gives_the_same_outputs": ("transformers RegNet X/Y: same outputs", False),
    "test_a_vit_is_built_with_the_eps_its_config_gives": ("transformers ViT/ViT-MSN eps from config.json", False),
    "test_an_mae_fine_tune_is_identified_and_loads_as_named":
        ("unnamed MAE fine-tunes identified, same outputs as named", False),
    "test_an_mmpretrain_resnet_is_identified_with_its_head":
        ("unnamed mmpretrain ResNets identified, head kept", False),
    "test_a_linear_classifier_loads_into_a_convolution_head": ("Linear classifier into a 1x1-conv head", False),
    "test_a_classifier_nothing_places_is_said_with_the_rule_that_loads_it":
        ("a classifier nothing places: said, and its rules= line loads it", False),
    "test_a_head_of_another_structure_is_said_with_the_rule_that_keeps_its_layer":
        ("a Sequential(Dropout, Linear) head under 3 wrappers: said, its rules= line keeps it, same outputs", False),
    "test_reparametrized_file_loads_as_its_plain_weights":
        ("pruned / weight-norm / spectral-norm files, fast subset (each kind, arch and form): torch's removal's "
         "weights", False),
    "test_an_option_no_builder_uses_is_refused_by_name":
        ("an unknown build option: refused by name, every built-in and torchvision architecture", False),
    "test_in_chans_reaches_the_input_convolution":
        ("in_chans=1 reaches the input convolution, every built-in and torchvision architecture", False),
    "test_reparametrized_sweep":
        ("the same, 9 kinds x 4 archs x 4 forms x 2 heads less the fast subset; same outputs", False),
    "test_a_checkpoint_in_memory_loads_as_the_same_object_saved_to_a_file":
        ("weights= in memory (state dict, training dict, EMA beside live, module), every built-in arch (the 5 "
         "large ones one form each) and 3 timm: as the same object saved with torch.save, nothing shared", False),
    "test_every_timm_architecture_plans_its_own_layout_under_a_wrapper":
        ("every timm architecture's own layout under a random wrapper, keys shuffled, planned on meta: every key "
         "onto its name, the whole model, no new head (the 145 published without a classifier: built headless)",
         False),
    "test_a_pretrained_tag_with_a_head_of_its_own_plans_its_own_layout":
        ("the same for every pretrained tag whose head differs from its architecture's (in22k, CLIP "
         "projections, headless tags)", False),
    "test_a_headless_model_saved_by_hand_reloads_headless_with_its_outputs":
        ("a num_classes=0 model saved by hand (torch.save, training dict, safetensors), reloaded with no "
         "num_classes: headless, same outputs, not a random head", False),
    "test_two_different_sets_of_one_kind_are_refused_and_the_fix_loads_each":
        ("two different live (or EMA) sets under top-level names, every pair of known names: refused naming "
         "both, each loads passed in memory; identical sets load", True),
    "test_a_timm_layout_under_a_wrapper_is_read_as_it_is":
        ("the same, fast subset (one with a head, two published without)", False),
}


class Collector:
    """Each test's outcome, by test function and case id."""

    def __init__(self) -> None:
        self.outcomes: dict[tuple[str, str], str] = {}
        self.messages: dict[tuple[str, str], str] = {}
        self.details: dict[tuple[str, str], str] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        name, _, case = report.nodeid.split("::", 1)[1].partition("[")
        key = (name, case.rstrip("]"))
        if report.when == "call" or (report.outcome != "passed" and key not in self.outcomes):
            known = hasattr(report, "wasxfail") and report.skipped  # a strict xfail that passes fails
            self.outcomes[key] = "known" if known else report.outcome
            if report.failed or known:
                text = report.longreprtext if report.failed else report.wasxfail
                self.details[key] = text
                errors = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]
                self.messages[key] = (errors[0] if errors else text.strip().splitlines()[-1] if text else "")[:200]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="only the fast subset (not marked slow)")
    parser.add_argument("--neighbours", action="store_true", help="the fixtures' neighbour sweeps instead")
    parser.add_argument("-k", default=None, help="pytest -k expression, to sweep part of it")
    parser.add_argument("--log", type=Path, default=None, help="write each failure's full report to this file")
    args = parser.parse_args()
    collector = Collector()
    started = time.perf_counter()
    files = NEIGHBOUR_FILES if args.neighbours else FILES
    argv = [*files, "-q", "-p", "no:cacheprovider", "--tb=no", "-m", "not slow" if args.fast else ""]
    if args.k:
        argv += ["-k", args.k]
    sys.path.insert(0, str(ROOT / "tests"))
    pytest.main(argv, plugins=[collector])
    took = time.perf_counter() - started

    rows: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    archs: dict[str, set[str]] = collections.defaultdict(set)
    for (name, case), outcome in collector.outcomes.items():
        rows[name][outcome] += 1
        if case and name in CHECKS:  # ids begin with the architecture
            archs[name].add(case.split("-", 1)[0])
    all_archs = set().union(*archs.values()) if archs else set()
    print()
    print(f"sweep over {len(all_archs)} architectures, {len(collector.outcomes)} cases, {took:.0f} s")
    header = f"{'check':<88} {'archs':>5} {'cases':>5} {'passed':>6} {'refused':>7} {'known':>5} {'failed':>6}"
    print(header)
    print("-" * len(header))
    for name, counts in sorted(rows.items(), key=lambda kv: list(CHECKS).index(kv[0]) if kv[0] in CHECKS else 99):
        what, refusal = CHECKS.get(name, (name, False))
        passed = counts["passed"]
        print(f"{what[:88]:<88} {len(archs[name]):>5} {sum(counts.values()):>5} {passed:>6} "
              f"{passed if refusal else 0:>7} {counts['known']:>5} {counts['failed'] + counts['error']:>6}")
    failed = [(k, collector.messages.get(k, "")) for k, o in collector.outcomes.items() if o in ("failed", "error")]
    known = [k for k, o in collector.outcomes.items() if o == "known"]
    if known:
        print(f"\nknown failures (xfail strict): {len(known)}")
        for name, case in sorted(known):
            print(f"  {name}[{case}]: {collector.messages.get((name, case), '')}")
    if args.log is not None:
        args.log.write_text("".join(f"=== {name}[{case}]\n{text}\n\n"
                                    for (name, case), text in sorted(collector.details.items())))
    if failed:
        print(f"\nfailed: {len(failed)}")
        for (name, case), message in sorted(failed):
            print(f"  {name}[{case}]: {message}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

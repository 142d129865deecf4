"""Test setup: a loopback Hub for the real huggingface_hub client, and a private cache.

huggingface_hub reads its endpoint and cache location when it is imported, so the
environment is set here, before any test module imports it. Each test gets an empty Hub
cache of its own (``hub_cache``), and the plugin registry is rebuilt for every test.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from zooadapt.testing import LocalHub, hub_environment

_HUB = LocalHub().start()
_HOME = tempfile.mkdtemp(prefix="zooadapt-tests-hf-")
os.environ.update(hub_environment(_HUB.url, _HOME))
os.environ["ZOOADAPT_CACHE"] = os.path.join(_HOME, "zooadapt-cache")  # keep the user's ~/.cache clean
for var in ("HF_HUB_OFFLINE", "HF_TOKEN", "ZOOADAPT_PLUGINS", "ZOOADAPT_DISABLE_PLUGINS", "ZOOADAPT_STRICT_PLUGINS",
            "ZOOADAPT_REGISTRY"):
    os.environ.pop(var, None)
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # workers share the cores: torch's default of one thread per core in each worker oversubscribes
    # them (the torchvision zoo's outputs took 3x longer with two workers of two threads on two cores)
    import torch

    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_threads)  # the suite's subprocesses too
    torch.set_num_threads(_threads)


@pytest.fixture(scope="session")
def hub() -> LocalHub:
    """The session's local Hub (content added by tests stays for the session)."""
    return _HUB


@pytest.fixture(autouse=True)
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hub cache for this test, and a fresh plugin registry."""
    from huggingface_hub import constants

    import zooadapt.host.plugin_manager as pm

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    pm.reset_plugins()
    yield cache
    pm.reset_plugins()
    _HUB.faults.clear()


@pytest.fixture(scope="session")
def resnet34_weights(hub: LocalHub):
    """Seeded ResNet-34 weights in torchvision's layout, published as timm/resnet34.tv_in1k."""
    from zooadapt.testing import safetensors_bytes, torchvision_state_dict

    state = torchvision_state_dict("resnet34", seed=34)
    hub.add_file("timm/resnet34.tv_in1k", "model.safetensors", safetensors_bytes(state))
    return state


@pytest.fixture(scope="session")
def resnet18_weights(hub: LocalHub):
    from zooadapt.testing import safetensors_bytes, torchvision_state_dict

    state = torchvision_state_dict("resnet18", seed=18)
    hub.add_file("timm/resnet18.tv_in1k", "model.safetensors", safetensors_bytes(state))
    return state


@pytest.fixture
def registry_model(hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Publish a weights file as a registry model (a ResNet-18) on a Hub repo of its own, and
    move the test into an empty project directory (no lock file yet):
    ``registry_model("lr18", data)`` -> namespace(name, repo, commit, registry, work)."""
    import types
    import uuid

    import zooadapt.host.plugin_manager as pm

    def publish(name: str, data: bytes) -> types.SimpleNamespace:
        repo = f"test/{name}-{uuid.uuid4().hex[:8]}"
        commit = hub.add_file(repo, "model.safetensors", data)
        registry = tmp_path / "registry.toml"
        registry.write_text(f'[models.{name}]\nfamily = "resnet"\narch = "resnet18"\nhub = "{repo}"\n')
        monkeypatch.setenv("ZOOADAPT_REGISTRY", str(registry))
        monkeypatch.delenv("ZOOADAPT_LOCK", raising=False)
        work = tmp_path / "project"
        work.mkdir(exist_ok=True)
        monkeypatch.chdir(work)
        pm.reset_plugins()
        return types.SimpleNamespace(name=name, repo=repo, commit=commit, registry=registry, work=work)

    return publish



_SWEEPS = ("test_sweep_copies.py", "test_sweep_heads.py", "test_identify.py", "test_torchvision_zoo.py",
           "test_feature_info.py", "test_in_memory_weights.py")
"""Files whose slow tests are generated sweeps over architectures (marked ``sweep``)."""


_SAMPLED = {"test_weights_names.py": 5, "test_shards.py": 6, "test_hostile_safetensors.py": 3,
            "test_standins.py": 3, "test_hostile_endpoint.py": 3,
            # measured heaviest in the fast subset after #21-#23 (1,023 cases, 77 s): a half or a third of each
            "test_sweep_copies.py": 3, "test_never_guessed.py": 3, "test_caches.py": 3, "test_hostile.py": 2,
            "test_freeze.py": 2, "test_cli.py": 2, "test_identify.py": 3, "test_hostile_patterns.py": 3,
            "test_param_groups.py": 2, "test_layout_build.py": 2, "test_habits_stages.py": 2,
            "test_public_api.py": 3, "test_wrappers.py": 2,
            # measured heaviest after the round of #24-#25 (954 cases, 73 s): a half or a third of each
            "test_copies_by_order.py": 3, "test_saved_dtypes.py": 3, "test_torchvision_zoo.py": 2,
            "test_build_options_saved.py": 3, "test_sweep_fixture_neighbours.py": 2, "test_head_never_lost.py": 2,
            "test_input_refusals.py": 2, "test_saving.py": 2, "test_hostile_terminal.py": 3,
            "test_weight_sets_neighbours.py": 2, "test_hostile_concurrency.py": 2, "test_timm_family.py": 2,
            # measured heaviest after the 2026-12-07 neighbours (875 cases, 62-68 s): a half of each
            "test_reparametrized.py": 2, "test_framework_checkpoints.py": 2, "test_other_formats.py": 2,
            # added by the in-memory, skeleton-key and plugin-mistake neighbours (914 cases, 64 s): a half of each
            "test_in_memory_weights.py": 2, "test_skeleton_keys.py": 2, "test_plugin_mistakes.py": 2}
"""Files of many small generated cases whose fast subset is a sample: every Nth of the cases not
already marked slow runs fast (the first included), the rest with the slow ones. The whole suite
runs every case; the sample keeps ``-m "not slow"`` under a minute."""


_MEASURED_SLOW = (
    'tests/test_identify.py::test_what_the_shipped_index_lacks_is_computed_once_into_the_cache',
    'tests/test_caches.py::test_stage_lookup_agrees_with_its_definition',
    'tests/test_caches.py::test_every_key_a_pattern_matches_starts_with_its_literal_prefix',
    'tests/test_identify.py::test_a_newer_timm_reuses_the_shipped_signatures_and_computes_only_new_names',
    'tests/test_sweep_copies.py::test_two_copies_are_refused_until_one_is_named[mobilenet_v3_small-shuffled]',
    'tests/test_identify.py::test_a_hub_address_is_identified',
    'tests/test_weights_names.py::test_every_form_of_weights_loads_the_same_tensors[timm',
    'tests/test_never_guessed.py::test_a_whole_network_is_not_read_as_its_blocks_alone[vit_base_patch16_gap_224]',
    'tests/test_sweep_heads.py::test_a_fine_tuned_head_is_kept_with_its_labels[mobilenet_v3_small-pth]',
    'tests/test_caches.py::test_reloading_a_file_reads_its_current_contents',
    'tests/test_never_guessed.py::test_a_teacher_or_ema_copy_is_chosen_by_convention_and_named[copies0]',
    'tests/test_habits_stages.py::test_attach_by_family_and_through_wrappers',
    'tests/test_identify.py::test_every_builtin_and_plugin_architecture_is_identified[resnet18]',
    'tests/test_never_guessed.py::test_any_two_prefixes_of_one_network_are_a_tie',
    'tests/test_mobilenet.py::test_info_shows_resolution_stages',
    'tests/test_never_guessed.py::test_labels_come_from_the_same_hub_repo_and_commit',
    'tests/test_never_guessed.py::test_two_keys_for_one_tensor_are_refused_naming_both',
    'tests/test_never_guessed.py::test_a_teacher_or_ema_copy_is_chosen_by_convention_and_named[copies1]',
    'tests/test_never_guessed.py::test_a_teacher_or_ema_copy_is_chosen_by_convention_and_named[copies2]',
    'tests/test_lock.py::test_registry_pointing_elsewhere_than_the_lock_is_refused',
    'tests/test_weights_names.py::test_a_registry_model_of_another_name_lends_its_weights',
    'tests/test_caches.py::test_a_load_from_the_skeletons_index_equals_one_that_walks_the_model[mobilenet_v3_large-:stride16]',
    'tests/test_identify.py::test_load_without_a_name_refuses_two_architectures_that_fit_alike',
    'tests/test_discovery_exact.py::test_scoped_votes_count_every_key_that_lands_inside_a_sub_module',
    'tests/test_discovery_exact.py::test_keys_naming_the_model_hold_every_key_a_plan_places',
    'tests/test_wrappers.py::test_freeze_through_torch_compile_freezes',
    'tests/test_transformers_config.py::test_a_vit_is_built_with_the_eps_its_config_gives',
    'tests/test_identify_layouts.py::test_an_mae_fine_tune_is_identified_and_loads_as_named',
    # measured at 0.5 s or more after the round of #25's transformers layouts (861 cases, 59 s)
    'tests/test_sweep_copies.py::test_two_keys_for_one_tensor_are_refused_naming_both[test_convnext-file]',
    'tests/test_comment_paths.py::test_the_scan_finds_paths_in_comments_docstrings_and_documents',
    'tests/test_layout_build.py::test_the_plan_says_which_zoos_network_was_built_for_each_layout[efficientnet_b7',
    'tests/test_torchvision_zoo.py::test_the_family_conforms[mnasnet0_5]',
    'tests/test_wrappers.py::test_data_parallel_and_nested_wrappers',
    'tests/test_copies_by_order.py::test_an_online_and_a_target_network_are_refused_in_every_order[file-ckpt]',
    'tests/test_sweep_copies.py::test_real_wrapper_pairs_are_refused[test_convnext-module.encoder_q.+',
    'tests/test_torchvision_zoo.py::test_channels_last_feature_maps_report_their_channels[swin_t]',
    'tests/test_saving.py::test_a_low_precision_fine_tune_comes_back_in_its_dtypes[mobilenet_v3_small-dtype0]',
    'tests/test_weights_names.py::test_every_form_of_weights_loads_the_same_tensors[hf address-resnet34]',
    'tests/test_discovery_exact.py::test_the_bound_skips_only_prefixes_whose_reading_cannot_fit',
    'tests/test_discovery_exact.py::test_wrapper_votes_count_every_key_that_lands_by_shape',
    'tests/test_discovery_exact.py::test_prefix_counts_and_wrappers_match_a_scan_of_the_keys',
    'tests/test_identify_layouts.py::test_a_layouts_build_keeps_the_default_builds_shapes',
    'tests/test_identify_layouts.py::test_an_mmpretrain_resnet_is_identified_with_its_head[resnet18-5]',
)
"""Fast-subset cases measured at 0.35 s or more on this machine (quiet, 2 cores): they run with
the slow ones, so ``-m "not slow"`` stays under a minute (node-id prefixes)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The architecture sweeps are marked ``sweep`` as well as ``slow``: CI runs them once, with
    the current dependencies (``.ci/lowest`` runs the rest of the suite at the floors, where the
    architectures are the same and only the libraries' own behaviour differs). The files in
    ``_SAMPLED`` run a sample of their cases fast."""
    seen: dict[str, int] = {}
    for item in items:
        if item.nodeid.startswith(_MEASURED_SLOW):
            item.add_marker(pytest.mark.slow)
        every = _SAMPLED.get(item.path.name)
        if every is not None and item.get_closest_marker("slow") is None:
            position = seen[item.path.name] = seen.get(item.path.name, -1) + 1
            if position % every:
                item.add_marker(pytest.mark.slow)
        if item.path.name in _SWEEPS and item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.sweep)

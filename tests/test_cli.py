"""The command line: list, info, inspect, fetch, lock, plugins, env; --json everywhere; one-line errors.

Most tests call ``zooadapt.cli.main`` in-process (fast); a few run the real console script or
``python -m zooadapt`` in a subprocess, where tracebacks and imports can be observed.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
from math import prod
from pathlib import Path

import pytest
import torch
from fake_plugins import install_entry_points

import zooadapt
from zooadapt.cli import build_parser, main
from zooadapt.errors import IncompatibleCheckpointError
from zooadapt.plugin_api import get_registry, hookimpl, load_plugins
from zooadapt.testing import hub_environment, safetensors_bytes, torchvision_state_dict


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def subprocess_env(hub, tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, **hub_environment(hub.url, tmp_path / "hf")}
    env.pop("COLUMNS", None)
    return env


@pytest.fixture(scope="module")
def dataparallel_checkpoint(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A ResNet-18 saved from DataParallel (every key prefixed ``module.``), as a pickle."""
    state = torchvision_state_dict("resnet18", seed=3)
    path = tmp_path_factory.mktemp("ckpt") / "dp_resnet18.pth"
    torch.save({"module." + k: v for k, v in state.items()}, path)
    return path, state


# -- list ---------------------------------------------------------------------------------


def test_list_table_shows_registry_models_first_marked_with_descriptions(capsys):
    code, out, _ = run(capsys, "list", "resnet*")
    assert code == 0
    named, _, listed = out.partition("\n\n")
    lines = named.splitlines()
    assert lines[0].split() == ["name", "source", "family", "weights", "description"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152"}
    assert rows["resnet34"][1:4] == ["registry", "resnet", "hf://timm/resnet34.tv_in1k"]
    assert " ".join(rows["resnet34"][4:]) == get_registry().models["resnet34"].description
    if listed:  # then the names plugins list (timm's), each marked with its source
        assert listed.splitlines()[0].split() == ["name", "source", "family"]
        assert all(line.split()[1] == "timm" for line in listed.splitlines()[1:])
    assert not any(name.startswith("mobilenet") for name in rows)


def test_list_json_puts_registry_models_first(capsys):
    rows = run_json(capsys, "list", "resnet*")
    flags = [r["registry"] for r in rows]
    assert flags == sorted(flags, reverse=True) and flags[0]  # registry rows, then listed ones
    for group in (True, False):
        names = [r["name"] for r in rows if r["registry"] is group]
        assert names == sorted(names)
    registry = get_registry()
    for row in rows:
        entry = registry.models.get(row["name"])
        if not row["registry"]:  # listed by a plugin (timm's resnet*.tag names), resolved on load
            assert entry is None and row["weights"] is None and row["provider"] != "registry.toml"
            continue
        assert row["source"] == "registry" and row["family"] == entry.family
        assert row["weights"] == entry.source.describe() and row["description"] == entry.description


class _Lister:
    """A plugin that lists names (e.g. from a cache), as the timm plugin does."""

    def __init__(self, names, wait=None):
        self.names, self.wait = names, wait

    @hookimpl
    def zooadapt_list_models(self, pattern):
        if self.wait is not None:
            self.wait()
        return [n for n in self.names if __import__("fnmatch").fnmatchcase(n, pattern)]


@pytest.fixture
def lister(monkeypatch):
    """Register listing plugins; timm's plugin is off, so no test here waits for its name cache."""
    from zooadapt.host.plugin_manager import reset_plugins

    monkeypatch.setenv("ZOOADAPT_DISABLE_PLUGINS", "timm_family")
    reset_plugins()
    pm = load_plugins()
    registered = []

    def add(names, wait=None, name="lister-plugin"):
        pm.register(_Lister(names, wait), name=name)
        registered.append(name)

    yield add
    for name in registered:
        pm.unregister(name=name)


LONG = "zz_" + "very_long_architecture_name_" * 3 + "with_a_tag.and_a_long_pretrained_tag_in22k_ft_in1k_384"


def test_list_attributes_plugin_listed_names_to_their_plugin(capsys, lister):
    lister(["zz_listed_a", "zz_listed_b"])
    rows = run_json(capsys, "list", "zz_listed_*")
    assert [(r["name"], r["provider"], r["source"], r["registry"]) for r in rows] == [
        ("zz_listed_a", "lister-plugin", "lister-plugin", False), ("zz_listed_b", "lister-plugin", "lister-plugin",
                                                                   False)]
    code, out, _ = run(capsys, "list", "zz_listed_a")
    assert out.splitlines()[1].split() == ["zz_listed_a", "lister-plugin", "lister-plugin"]


@pytest.mark.parametrize("columns", [None, "60", "100"])
def test_list_never_cuts_a_name(capsys, monkeypatch, lister, columns):
    """Piped nothing is cut; in a terminal (of COLUMNS columns) only the other columns give way."""
    assert len(LONG) > 100
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setattr("zooadapt.cli._common._is_terminal", lambda: True)
        monkeypatch.setenv("COLUMNS", columns)
    lister([LONG, "zz_short"])
    code, out, _ = run(capsys, "list", "zz_*")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["zz_short", LONG]
    code, out, _ = run(capsys, "list", "resnet1*", "mobilenet_v3*", "--source", "registry")
    names = {line.split()[0] for line in out.splitlines()[1:]}
    assert names == {"resnet18", "resnet101", "resnet152", "mobilenet_v3_large", "mobilenet_v3_small"}
    if columns is not None:
        assert all(len(line) <= int(columns) for line in out.splitlines() if not line.startswith(LONG))


@pytest.mark.slow
def test_piped_list_holds_every_name_whole(tmp_path, hub):
    """`zooadapt list | grep NAME` finds every name, the long timm names included."""
    env = subprocess_env(hub, tmp_path)
    listed = subprocess.run([sys.executable, "-m", "zooadapt", "list", "--json"], capture_output=True, text=True,
                            env=env, timeout=300)
    assert listed.returncode == 0, listed.stderr[-2000:]
    names = [r["name"] for r in json.loads(listed.stdout)]
    piped = subprocess.run([sys.executable, "-m", "zooadapt", "list"], capture_output=True, text=True, env=env,
                           timeout=300)
    assert piped.returncode == 0 and "…" not in piped.stdout
    first_column = [line.split()[0] for line in piped.stdout.splitlines() if line.strip()]
    assert [n for n in first_column if n != "name"] == names
    assert max(len(n) for n in names) > 45  # the long names that used to be cut are among them


def test_list_include_exclude_as_torchvision(capsys, lister):
    lister(["zz_a1", "zz_a2", "zz_b1", "zz_b2", "zz_c1"])
    everything = zooadapt.list_models("zz_*")
    assert everything == ["zz_a1", "zz_a2", "zz_b1", "zz_b2", "zz_c1"]
    assert zooadapt.list_models(include=["zz_a*", "zz_c*"]) == ["zz_a1", "zz_a2", "zz_c1"]
    assert zooadapt.list_models(include="zz_*", exclude=["*2", "zz_c*"]) == ["zz_a1", "zz_b1"]
    assert zooadapt.list_models("zz_*", exclude="zz_b*") == ["zz_a1", "zz_a2", "zz_c1"]
    rows = run_json(capsys, "list", "zz_a*", "zz_c*", "--exclude", "*2")
    assert [r["name"] for r in rows] == ["zz_a1", "zz_c1"]


def test_list_source_filter(capsys, lister):
    lister(["zz_listed_a"])
    rows = run_json(capsys, "list", "--source", "registry")
    assert rows and all(r["registry"] and r["source"] == "registry" for r in rows)
    assert {r["name"] for r in rows} == set(get_registry().models)
    rows = run_json(capsys, "list", "--source", "lister-plugin")
    assert [r["name"] for r in rows] == ["zz_listed_a"]
    code, out, err = run(capsys, "list", "--source", "no-such-plugin")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "--source 'no-such-plugin'" in err and "registry" in err and "lister-plugin" in err


def test_slow_listing_says_so_on_stderr(capsys, monkeypatch, lister):
    """The first run builds timm's name cache (seconds): after a second, stderr says what is going on."""
    from zooadapt.cli import _common

    notices = []

    class Recording(_common.SlowNotice):
        after = 0.0

        def __enter__(self):
            notices.append(self)
            return super().__enter__()

    monkeypatch.setattr(_common, "SlowNotice", Recording)
    lister(["zz_slow"], wait=lambda: notices[0].shown.wait(30))
    code, out, err = run(capsys, "list", "zz_*")
    assert code == 0 and out.splitlines()[1].split()[0] == "zz_slow"
    assert err.startswith("zooadapt: building the list of installed plugins' model names")
    Recording.after = 3600.0  # a quick listing prints nothing
    lister(["zz_quick"], name="quick-lister")
    code, out, err = run(capsys, "list", "zz_quick")
    assert code == 0 and err == ""


def test_list_without_match_says_so_on_stderr(capsys):
    code, out, err = run(capsys, "list", "no-such-model-*")
    assert code == 0 and out == ""
    assert "no models match 'no-such-model-*'" in err


@pytest.mark.slow
def test_list_plugins_and_env_never_import_torch(tmp_path, hub):
    """`zooadapt list` must answer without torch/timm (the timm plugin lists from a cache); `env` reads
    versions from package metadata, so it answers even where importing torch is what is broken."""
    script = (
        "import sys\n"
        "from zooadapt.cli import main\n"
        "assert main(['list']) == 0\n"
        "assert main(['plugins']) == 0\n"
        "assert main(['env', '--json']) == 0\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules)\n"
        "sys.exit(f'imported {heavy}' if heavy else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=subprocess_env(hub, tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resnet34" in result.stdout


# -- info ---------------------------------------------------------------------------------


def test_info_counts_every_parameter_once(capsys):
    import torchvision

    info = run_json(capsys, "info", "resnet34")
    with torch.device("meta"):
        reference = torchvision.models.resnet34()
    by_prefix = {name: 0 for name in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc")}
    for pname, p in reference.named_parameters():
        by_prefix[pname.split(".")[0]] += p.numel()
    stages = {s["name"]: s["params"] for s in info["stages"]}
    assert stages == {"stem": by_prefix["conv1"] + by_prefix["bn1"], "layer1": by_prefix["layer1"],
                      "layer2": by_prefix["layer2"], "layer3": by_prefix["layer3"], "layer4": by_prefix["layer4"]}
    assert info["head"] == "fc" and info["head_params"] == by_prefix["fc"]
    assert info["total_params"] == sum(p.numel() for p in reference.parameters())
    assert info["weights"] == "hf://timm/resnet34.tv_in1k@main/model.safetensors"
    assert info["revision"] == "main"
    assert info["key_rules"][:2] == ["strip 'module.'", "strip '_orig_mod.'"]
    assert info["data"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert info["data"]["input_size"] == [3, 224, 224]


def test_info_text_names_stages_head_rules_and_revision(capsys):
    code, out, _ = run(capsys, "info", "resnet50")
    assert code == 0
    assert out.startswith("resnet50: resnet/resnet50")
    for stage in ("stem", "layer1", "layer2", "layer3", "layer4", "head (fc)"):
        assert any(line.split()[:len(stage.split())] == stage.split() for line in out.splitlines()), stage
    assert "revision: main" in out and "zooadapt lock" in out  # a branch, so it says how to pin
    rules = out.split("key rules (applied in order until a key names a model key):\n", 1)[1].splitlines()
    assert [r.strip() for r in rules[:3]] == ["strip 'module.'", "strip '_orig_mod.'", "strip 'backbone.'"]
    assert "preprocessing: 3x224x224" in out


def test_info_compacts_runs_of_numbered_modules(capsys):
    from zooadapt.cli.info import compact as _compact

    assert _compact(["features.7", "features.8", "features.9", "features.10"]) == "features.7..10"
    assert _compact(["conv1", "bn1"]) == "conv1, bn1"
    assert _compact(["a.1", "a.2", "b.3", "b.4", "b.5", "c"]) == "a.1, a.2, b.3..5, c"
    code, out, _ = run(capsys, "info", "mobilenet_v2")
    assert code == 0 and any(line.split()[:1] == ["stride16"] and line.endswith("features.7..13")
                             for line in out.splitlines())


def test_info_of_a_family_with_groups(capsys):
    info = run_json(capsys, "info", "alexnet")
    assert info["groups"]["features"] == [s["name"] for s in info["stages"] if s["name"].startswith("conv")]
    assert info["weights"].startswith("https://download.pytorch.org/models/alexnet")


# -- inspect ------------------------------------------------------------------------------


def test_inspect_lists_tensors_without_a_model(capsys, tmp_path, resnet18_weights):
    path = tmp_path / "r18.safetensors"
    path.write_bytes(safetensors_bytes(resnet18_weights))
    data = run_json(capsys, "inspect", str(path))
    assert data["format"] == "safetensors" and data["tensors"] == len(resnet18_weights)
    keys = {k["key"]: k for k in data["keys"]}
    assert set(keys) == set(resnet18_weights)
    for key, tensor in resnet18_weights.items():
        assert keys[key]["shape"] == list(tensor.shape)
        assert keys[key]["dtype"] == str(tensor.dtype).removeprefix("torch.")
        assert keys[key]["count"] == tensor.numel()
    assert data["count"] == sum(t.numel() for t in resnet18_weights.values())
    assert data["bytes"] == sum(t.numel() * t.element_size() for t in resnet18_weights.values())

    code, out, _ = run(capsys, "inspect", str(path))
    assert code == 0
    assert f"safetensors, {len(resnet18_weights)} tensors" in out
    assert any(line.split()[:2] == ["layer4.1.bn2.running_var", "[512]"] for line in out.splitlines())


@pytest.mark.slow
def test_inspect_plan_shows_rule_per_key_and_coverage(capsys, dataparallel_checkpoint):
    path, state = dataparallel_checkpoint
    data = run_json(capsys, "inspect", str(path), "--model", "resnet18", "--num-classes", "5")
    rows = {r["checkpoint_key"]: r for r in data["keys"]}
    assert set(rows) == {"module." + k for k in state}
    for key in state:
        row = rows["module." + key]
        assert row["model_key"] == key
        assert row["rules"] == ["strip 'module.'"]
        assert row["status"] == ("dropped_head" if key.startswith("fc.") else "loaded")
    assert rows["module.fc.weight"]["model_shape"] == [5, 512]
    plan = data["plan"]
    assert plan["new_head"] == ["fc.weight", "fc.bias"]
    assert plan["missing"] == [] and plan["unexpected"] == [] and plan["mismatched"] == []
    params = sum(t.numel() for k, t in state.items() if "running" not in k and "num_batches" not in k)
    head = state["fc.weight"].numel() + state["fc.bias"].numel()
    assert plan["coverage"] == pytest.approx((params - head) / (params - head + 5 * 512 + 5))
    assert data["loads"] is True


def test_inspect_plan_text(capsys, dataparallel_checkpoint):
    path, state = dataparallel_checkpoint
    code, out, _ = run(capsys, "inspect", str(path), "--model", "resnet18", "--num-classes", "5", "--keys")
    assert code == 0
    assert "rules:\n  [1] strip 'module.'\n" in out
    assert any(line.split() == ["module.conv1.weight", "conv1.weight", "1", "[64,", "3,", "7,", "7]", "loaded"]
               for line in out.splitlines())
    assert "new head (freshly initialised): 2" in out
    assert "dropped old head: module.fc.weight [1000, 512] -> model fc.weight [5, 512]" in out
    assert "verdict: loads as is" in out


@pytest.mark.slow
def test_inspect_reports_missing_and_mismatched_and_check_fails(capsys, tmp_path, resnet18_weights):
    broken = dict(resnet18_weights)
    del broken["layer1.0.conv1.weight"]
    broken["layer2.0.conv1.weight"] = torch.zeros(3, 3)
    broken["extra.thing"] = torch.zeros(2)
    path = tmp_path / "broken.pth"
    torch.save(broken, path)

    code, out, err = run(capsys, "inspect", str(path), "--model", "resnet18", "--json", "--check")
    assert code == 1, err
    data = json.loads(out)
    assert data["loads"] is False
    assert data["plan"]["missing"] == ["layer1.0.conv1.weight"]
    assert data["plan"]["unexpected"] == ["extra.thing"]
    assert data["plan"]["mismatched"] == [{"checkpoint": "layer2.0.conv1.weight", "model": "layer2.0.conv1.weight",
                                           "checkpoint_shape": [3, 3], "model_shape": [128, 64, 3, 3]}]
    code, out, _ = run(capsys, "inspect", str(path), "--model", "resnet18", "--brief")
    assert code == 0  # without --check, inspecting a bad checkpoint is still a successful inspection
    assert "missing (no checkpoint key fills): 1" in out
    assert "mismatched: layer2.0.conv1.weight [3, 3] -> model layer2.0.conv1.weight [128, 64, 3, 3]" in out
    assert "zooadapt.load refuses this (1 missing, 1 mismatched)" in out
    assert "model key (= same)" not in out  # --brief: no per-key table


def test_inspect_skip_marks_model_keys_skipped(capsys, resnet18_weights, tmp_path):
    path = tmp_path / "r18.safetensors"
    path.write_bytes(safetensors_bytes(resnet18_weights))
    data = run_json(capsys, "inspect", str(path), "--model", "resnet18", "--skip", "layer4")
    statuses = {r["checkpoint_key"]: r["status"] for r in data["keys"]}
    assert all(s == "skipped" for k, s in statuses.items() if k.startswith("layer4."))
    assert all(s == "loaded" for k, s in statuses.items() if not k.startswith("layer4."))


def test_inspect_a_registry_name_fetches_through_the_hub(capsys, resnet18_weights):
    data = run_json(capsys, "inspect", "resnet18", "--model", "resnet18")
    assert data["checkpoint"] == "hf://timm/resnet18.tv_in1k@main/model.safetensors"
    assert data["plan"]["coverage"] == 1.0 and data["loads"] is True
    assert {r["checkpoint_key"] for r in data["keys"]} == set(resnet18_weights)


def test_inspect_hub_address(capsys, resnet18_weights):
    data = run_json(capsys, "inspect", "hf://timm/resnet18.tv_in1k")
    assert data["tensors"] == len(resnet18_weights)


def test_inspect_missing_file_is_a_one_line_error(capsys, tmp_path):
    code, out, err = run(capsys, "inspect", str(tmp_path / "nope.pth"))
    assert code == 2 and out == ""
    assert err.startswith("zooadapt: error: ") and err.count("\n") == 1
    assert "nope.pth" in err


# -- plugins ------------------------------------------------------------------------------


def test_plugins_lists_builtins_and_the_installed_example(capsys):
    data = run_json(capsys, "plugins")
    by_name = {p["name"]: p for p in data["plugins"]}
    assert by_name["resnet"]["builtin"] and by_name["resnet"]["distribution"] == "zooadapt"
    assert by_name["resnet"]["families"] == ["resnet"]
    assert "resnet34" in by_name["resnet"]["models"]
    assert data["failed"] == []
    try:
        version = md.version("zooadapt-squeezenet")
    except md.PackageNotFoundError:
        return
    assert by_name["squeezenet"] == {**by_name["squeezenet"], "distribution": "zooadapt-squeezenet",
                                     "version": version, "builtin": False, "families": ["squeezenet"]}
    code, out, _ = run(capsys, "plugins")
    assert any(line.split()[:3] == ["squeezenet", "zooadapt-squeezenet", version] for line in out.splitlines())


def test_plugins_reports_failures_with_distribution_and_reason(capsys, monkeypatch):
    install_entry_points(monkeypatch, [("broken", "zooadapt-broken", "zooadapt_no_such_module_xyz")])
    data = run_json(capsys, "plugins")
    [failure] = data["failed"]
    assert failure["name"] == "broken" and failure["distribution"] == "zooadapt-broken"
    assert failure["phase"] == "import" and "zooadapt_no_such_module_xyz" in failure["error"]
    code, out, _ = run(capsys, "plugins", "--check")
    assert code == 1
    assert "failed to load (1):" in out and "broken (zooadapt-broken), import:" in out
    assert "ZOOADAPT_DISABLE_PLUGINS" in out


def test_plugins_reports_a_hook_that_raises(capsys):
    class Broken:
        @hookimpl
        def zooadapt_register_families(self, register):
            raise RuntimeError("no family today")

    pm = load_plugins()
    pm.register(Broken(), name="raiser")
    try:
        data = run_json(capsys, "plugins")
    finally:
        pm.unregister(name="raiser")
    assert [(f["name"], f["phase"]) for f in data["failed"]] == [("raiser", "zooadapt_register_families")]
    assert "no family today" in data["failed"][0]["error"]


def test_plugins_reports_a_name_claimed_twice_and_list_marks_it_unavailable(capsys):
    from zooadapt.plugin_api import ModelEntry, WeightSource

    class Greedy:
        @hookimpl
        def zooadapt_register_models(self, register):
            register(ModelEntry(name="resnet50", family="resnet", arch="resnet50",
                                source=WeightSource(repo_id="someone/resnet50")))

    pm = load_plugins()
    pm.register(Greedy(), name="greedy")
    try:
        data = run_json(capsys, "plugins")
        code, out, _ = run(capsys, "plugins", "--check")
        listed = {row["name"]: row for row in run_json(capsys, "list", "resnet*")}
        info_code, _, info_err = run(capsys, "info", "resnet50")
    finally:
        pm.unregister(name="greedy")
    [failure] = data["failed"]
    assert failure["name"] == "resnet50" and "claimed twice" in failure["phase"]
    assert "'resnet' and 'greedy'" in failure["error"] and code == 1 and "resnet50" in out
    assert "'greedy'" in listed["resnet50"]["description"] and "resnet34" in listed  # the others stay listed
    assert info_code == 2 and "'resnet' and 'greedy'" in info_err and info_err.count("\n") == 1


# -- conventions every subcommand follows -------------------------------------------------


def _subcommands() -> dict[str, object]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return dict(action.choices)


def test_every_subcommand_takes_json():
    missing = [name for name, sub in _subcommands().items() if "--json" not in sub._option_string_actions]
    assert missing == []


@pytest.mark.parametrize("argv", [["list"], ["info", "resnet50"], ["info", "mobilenet_v2"], ["plugins"], ["env"],
                                  ["inspect", "resnet18", "--model", "resnet18"]])
@pytest.mark.slow
@pytest.mark.parametrize("columns", [80, 100])
def test_output_fits_the_terminal(capsys, monkeypatch, argv, columns, resnet18_weights):
    monkeypatch.setattr("zooadapt.cli._common._is_terminal", lambda: True)  # only a terminal is fitted
    monkeypatch.setenv("COLUMNS", str(columns))
    code, out, _ = run(capsys, *argv)
    assert code == 0
    too_wide = [line for line in out.splitlines() if len(line) > columns]
    assert too_wide == []


def test_user_error_is_one_line_with_a_hint_and_verbose_shows_all(capsys, monkeypatch):
    def refuse(name):
        raise IncompatibleCheckpointError("the checkpoint does not fit\n  missing: a.weight\nfix it so")

    monkeypatch.setattr("zooadapt.loading.pipeline.resolve", refuse)
    code, out, err = run(capsys, "info", "resnet18")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("zooadapt: error: the checkpoint does not fit")
    assert "-v" in err  # says how to see the rest
    code, _, err = run(capsys, "-v", "info", "resnet18")
    assert code == 2 and "missing: a.weight" in err and "fix it so" in err


def test_unknown_model_via_python_m_has_no_traceback(tmp_path, hub):
    result = subprocess.run([sys.executable, "-m", "zooadapt", "info", "resnet43"], capture_output=True, text=True,
                            env=subprocess_env(hub, tmp_path), timeout=300)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("zooadapt: error: unknown model 'resnet43'")
    assert "resnet34" in result.stderr  # the suggestion


@pytest.mark.slow
def test_console_script_and_bad_usage(tmp_path, hub):
    script = Path(sys.executable).with_name("zooadapt")
    if not script.exists():
        pytest.skip("console script not installed next to this interpreter")
    env = subprocess_env(hub, tmp_path)
    result = subprocess.run([str(script), "list", "resnet1*", "--json"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert {"resnet18", "resnet101", "resnet152"} <= {r["name"] for r in json.loads(result.stdout)}
    result = subprocess.run([str(script), "no-such-command"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2 and "invalid choice" in result.stderr and "Traceback" not in result.stderr


def test_inspect_counts_agree_with_the_shapes(capsys, tmp_path):
    """The per-tensor counts are the product of the shape (including scalars: 1)."""
    path = tmp_path / "odd.safetensors"
    path.write_bytes(safetensors_bytes({"a": torch.zeros(()), "b": torch.zeros(2, 3, dtype=torch.float16),
                                        "c": torch.zeros(0, 4)}))
    data = run_json(capsys, "inspect", str(path))
    assert {k["key"]: (k["count"], k["bytes"]) for k in data["keys"]} == {
        "a": (1, 4), "b": (prod((2, 3)), 12), "c": (0, 0)}


# -- env ----------------------------------------------------------------------------------


def test_env_json_reports_versions_plugins_and_paths(capsys, monkeypatch, tmp_path):
    import platform

    from huggingface_hub import constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZOOADAPT_LOCK", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    data = run_json(capsys, "env")
    expected = {}
    for dist in ("zooadapt", "torch", "torchvision", "timm", "huggingface_hub", "safetensors", "pluggy"):
        try:
            expected[dist] = md.version(dist)
        except md.PackageNotFoundError:
            expected[dist] = None
    assert data["versions"] == expected
    assert data["python"] == platform.python_version() and data["platform"] == platform.platform()
    plugins = {p["name"]: p for p in data["plugins"]}
    assert plugins["resnet"]["builtin"] and plugins["resnet"]["families"] == ["resnet"]
    assert data["failed_plugins"] == []
    paths = data["paths"]
    assert paths["hf_hub_cache"] == constants.HF_HUB_CACHE and paths["hf_home"] == constants.HF_HOME
    assert paths["zooadapt_cache"] == os.environ["ZOOADAPT_CACHE"]
    assert paths["torch_hub"] == str(tmp_path / "torch-home" / "hub") == torch.hub.get_dir()
    assert paths["lock_file"] is None
    assert data["hub"] == {"endpoint": constants.ENDPOINT, "offline": False}
    assert data["settings"]["TORCH_HOME"] == str(tmp_path / "torch-home")


def test_env_names_the_lock_file_in_use_and_failed_plugins(capsys, monkeypatch, tmp_path, resnet18_weights):
    install_entry_points(monkeypatch, [("broken", "zooadapt-broken", "zooadapt_no_such_module_xyz")])
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZOOADAPT_LOCK", raising=False)
    zooadapt.lock(["resnet18"])
    data = run_json(capsys, "env")
    assert data["paths"]["lock_file"] == str(tmp_path / "zooadapt.lock")
    assert [(f["name"], f["distribution"], f["phase"]) for f in data["failed_plugins"]] == [
        ("broken", "zooadapt-broken", "import")]
    code, out, _ = run(capsys, "env")
    assert code == 0
    assert any(line.split()[:2] == ["torch", md.version("torch")] for line in out.splitlines())
    assert "FAILED broken (zooadapt-broken), import:" in out
    assert any(line.split()[:4] == ["lock", "file", "in", "use"] and line.endswith("zooadapt.lock")
               for line in out.splitlines())
    monkeypatch.setenv("ZOOADAPT_LOCK", str(tmp_path / "missing.lock"))
    assert run_json(capsys, "env")["paths"]["lock_file"].startswith("unreadable: ")


# -- inspect --rule -----------------------------------------------------------------------


@pytest.mark.slow
def test_inspect_rule_maps_keys_the_family_does_not_know(capsys, tmp_path, resnet18_weights):
    """Stages renamed (``stage1`` for ``layer1``): no family rule or wrapper search maps them by name,
    so they pair by module order (a safetensors file keeps none: numbered modules in numeric
    order, same-shaped siblings by their names); a --rule maps them by name."""
    import re

    path = tmp_path / "stages.safetensors"
    path.write_bytes(safetensors_bytes({re.sub(r"^layer(\d)", r"stage\1", k): v for k, v in resnet18_weights.items()}))
    before = run_json(capsys, "inspect", str(path), "--model", "resnet18")
    paired = {r["checkpoint_key"]: r for r in before["keys"]}["stage1.0.conv2.weight"]
    assert paired["model_key"] == "layer1.0.conv2.weight"
    assert paired["rules"] == ["positional (same order, shapes checked)"]
    rule = r"rename:stage(\d)\.(.*)=>layer\1.\2"
    after = run_json(capsys, "inspect", str(path), "--model", "resnet18", "--rule", rule)
    assert after["loads"] is True and after["plan"]["coverage"] == 1.0
    assert after["user_rules"] == [str(zooadapt.rules.parse_rule(rule))]
    rows = {r["checkpoint_key"]: r for r in after["keys"]}
    assert rows["stage1.0.conv1.weight"]["model_key"] == "layer1.0.conv1.weight"
    assert rows["stage1.0.conv1.weight"]["rules"] == [str(zooadapt.rules.parse_rule(rule))]
    assert rows["conv1.weight"]["rules"] == []
    code, out, _ = run(capsys, "inspect", str(path), "--model", "resnet18", "--rule", rule, "--brief")
    assert code == 0 and "renamed 114 keys: stageN.* -> layerN.* x114" in out and "verdict: loads as is" in out


@pytest.mark.parametrize("argv, words", [
    (["--model", "resnet18", "--rule", "swap:a"], "unknown kind 'swap'"),
    (["--model", "resnet18", "--rule", "rename:(=>x"], "not a regular expression"),
    (["--rule", "strip:encoder."], "add --model NAME"),
])
@pytest.mark.slow
def test_inspect_bad_rule_is_a_one_line_error(capsys, tmp_path, resnet18_weights, argv, words):
    path = tmp_path / "r18.safetensors"
    path.write_bytes(safetensors_bytes(resnet18_weights))
    code, out, err = run(capsys, "inspect", str(path), *argv)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("zooadapt: error: ") and words in err


def test_inspect_text_speaks_words_not_identifiers(capsys, dataparallel_checkpoint):
    path, _ = dataparallel_checkpoint
    code, out, _ = run(capsys, "inspect", str(path), "--model", "resnet18", "--num-classes", "5", "--keys")
    assert code == 0 and "dropped_head" not in out
    assert any(line.startswith("module.fc.weight") and line.endswith("dropped old head") for line in out.splitlines())
    assert "checkpoint keys: 120 loaded, 2 dropped old head" in out

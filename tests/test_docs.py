"""The docs stay true: the plugin guide's example runs, every hook is documented and tested,
and the README's code uses only API that exists.

Hook tests are named ``test_hook_<hook name>``; ``test_every_hook_is_documented_and_tested``
fails when a hook is added to ``zooadapt/contract/hookspecs.py`` without a section in
``docs/plugins.md`` and such a test (the datasette rule).
"""

from __future__ import annotations

import ast
import re
import types
from pathlib import Path

import pytest
import torch

import zooadapt
from zooadapt.cli import main
from zooadapt.contract import hookspecs
from zooadapt.errors import UnknownModelError
from zooadapt.host.plugin_manager import BUILTIN_PLUGINS, ENTRY_POINT_GROUP
from zooadapt.host.registry import reset_registry
from zooadapt.plugin_api import get_registry, load_plugins
from zooadapt.testing import torchvision_state_dict
from zooadapt.testing.conformance import check_family

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "plugins.md"
README = ROOT / "README.md"
MARKER = "<!-- tests/test_docs.py executes the next python block -->"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def guide_example() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    assert MARKER in text, "the guide lost the marker before its main example"
    return python_blocks(text.split(MARKER, 1)[1])[0]


def load_example() -> types.ModuleType:
    module = types.ModuleType("zooadapt_shufflenet")
    module.__file__ = str(GUIDE)
    exec(compile(guide_example(), f"{GUIDE}:example", "exec"), module.__dict__)
    return module


@pytest.fixture
def shufflenet():
    """The guide's example plugin, registered as an installed plugin would be."""
    module = load_example()
    pm = load_plugins()
    pm.register(module, name="shufflenet")
    reset_registry()
    yield module
    pm.unregister(name="shufflenet")
    reset_registry()


def test_example_plugin_imports_no_torch():
    """The guide tells authors to keep torch out of the module's top level; the example must too."""
    tree = ast.parse(guide_example())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    imported = {a.name.split(".")[0] for n in top for a in n.names} | {
        (n.module or "").split(".")[0] for n in top if isinstance(n, ast.ImportFrom)}
    assert not imported & {"torch", "torchvision", "timm"}


@pytest.mark.slow
def test_hook_zooadapt_register_families(shufflenet, tmp_path):
    family = get_registry().families["shufflenet"]
    assert family is not None and family.provider == "shufflenet"
    report = check_family("shufflenet", "shufflenet_v2_x0_5")  # the guide's conformance section
    assert report.head == "fc" and report.stages == ("stem", "stage2", "stage3", "stage4", "conv5")

    state = torchvision_state_dict("shufflenet_v2_x0_5", seed=5)
    path = tmp_path / "shufflenetv2_x0.5.pth"
    torch.save(state, path)
    model = zooadapt.load("shufflenet_v2_x0_5", weights=path, num_classes=3, freeze="stem-stage3")
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith("fc."))
    assert model.fc.out_features == 3
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"stage4", "conv5", "fc"}
    model.train()
    assert not model.stage2[0].branch1[1].training  # frozen BatchNorm stays in eval mode
    assert zooadapt.load("shufflenet_v2_x0_5", weights=path, freeze="body").zooadapt.frozen == (
        "stage2", "stage3", "stage4")


def test_hook_zooadapt_register_models(shufflenet, capsys):
    registry = get_registry()
    entry = registry.models["shufflenet_v2_x0_5"]
    assert entry.family == "shufflenet" and entry.provider == "shufflenet"
    assert entry.source.url == "https://download.pytorch.org/models/shufflenetv2_x0.5-f707e7126e.pth"
    assert entry.source.sha256 == "f707e7126e"
    assert {f"shufflenet_v2_x{w}" for w in ("0_5", "1_0", "1_5", "2_0")} <= set(registry.models)
    assert main(["list", "shufflenet_v2*"]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[:4] == ["shufflenet_v2_x1_0", "registry", "shufflenet",
                                    "https://download.pytorch.org/models/shufflenetv2_x1-5666bf0f80.pth"]
               for line in out.splitlines())


def test_hook_zooadapt_resolve_model(shufflenet):
    model = zooadapt.load("shufflenetv2_x0.5", pretrained=False, num_classes=4)
    assert model.fc.out_features == 4 and model.zooadapt.arch == "shufflenet_v2_x0_5"
    assert model.zooadapt.name == "shufflenetv2_x0.5"
    with pytest.raises(UnknownModelError):
        get_registry().entry("shufflenetv2_x9.9")  # not ours: None, then zooadapt's error


def test_hook_zooadapt_list_models(shufflenet, capsys):
    assert [n for n in zooadapt.list_models("shufflenetv2_x1*")] == ["shufflenetv2_x1.0", "shufflenetv2_x1.5"]
    assert main(["list", "shufflenetv2_x2*"]) == 0
    assert ["shufflenetv2_x2.0", "shufflenet", "shufflenet"] in [line.split() for line in
                                                                 capsys.readouterr().out.splitlines()]


@pytest.mark.slow
def test_example_key_rules_map_a_wrapped_export(shufflenet, tmp_path):
    """The example's rules: ``backbone.`` stripped, a head called ``classifier`` renamed to ``fc``."""
    state = torchvision_state_dict("shufflenet_v2_x0_5", seed=6)
    wrapped = {("backbone." + k) if not k.startswith("fc.") else k.replace("fc.", "classifier.", 1): v
               for k, v in state.items()}
    path = tmp_path / "export.pth"
    torch.save(wrapped, path)
    plan = zooadapt.plan_for("shufflenet_v2_x0_5", path)
    assert plan.coverage == 1.0 and not plan.missing and not plan.unexpected
    rules = {m.checkpoint_key: m.rules for m in plan.mappings}
    assert rules["backbone.conv1.0.weight"] == ("strip 'backbone.'",)
    assert rules["classifier.weight"] == (r"rename 'classifier\.(weight|bias)' -> 'fc.\1'",)
    model = zooadapt.load("shufflenet_v2_x0_5", weights=path)
    assert torch.equal(model.fc.weight, state["fc.weight"])


def test_every_hook_is_documented_and_tested():
    hooks = sorted(n for n in dir(hookspecs) if n.startswith("zooadapt_"))
    assert hooks, "no hookspecs found"
    guide = GUIDE.read_text(encoding="utf-8")
    tests = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("test_*.py"))
    undocumented = [h for h in hooks if f"### `{h}`" not in guide]
    untested = [h for h in hooks if f"def test_hook_{h}(" not in tests]
    assert undocumented == [] and untested == []
    example = guide_example()
    assert [h for h in hooks if f"def {h}(" not in example] == []  # the runnable example implements every hook


def test_guide_facts_match_the_code():
    guide = GUIDE.read_text(encoding="utf-8")
    builtins = ", ".join(f"`{m.rsplit('.', 1)[-1]}`" for m in BUILTIN_PLUGINS)
    assert builtins in " ".join(guide.split()), f"discovery order must list the built-ins as {builtins}"
    assert f"[project.entry-points.{ENTRY_POINT_GROUP}]" in guide
    source = (ROOT / "zooadapt" / "host" / "plugin_manager.py").read_text(encoding="utf-8")
    for var in set(re.findall(r"ZOOADAPT_[A-Z_]+", guide)) - {"ZOOADAPT_REGISTRY"}:
        assert var in source, f"the guide documents {var}, which plugin_manager.py does not read"
    rules_section = guide.split("## Key rules", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `(\w+)\(", rules_section, flags=re.M)
    assert len(documented) >= 7
    for rule in documented:
        assert hasattr(zooadapt.rules, rule), f"the guide documents rule {rule}, which zooadapt.rules lacks"


def test_readme_code_uses_existing_api():
    """Every ``zooadapt.name`` in the README's Python blocks exists and every block parses."""
    text = README.read_text(encoding="utf-8")
    blocks = python_blocks(text)
    assert blocks
    missing = set()
    for block in blocks:
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "zooadapt" \
                    and not hasattr(zooadapt, node.attr):
                missing.add(node.attr)
    assert missing == set()


@pytest.mark.slow
def test_hook_zooadapt_register_layouts(shufflenet, tmp_path):
    names = {"conv1.": "first_conv.", "conv5.": "conv_last.", "fc.": "classifier.0."}
    state = torchvision_state_dict("shufflenet_v2_x0_5", seed=6)
    foreign = {next((names[p] + k[len(p):] for p in names if k.startswith(p)), k): v for k, v in state.items()}
    path = tmp_path / "export.pth"
    torch.save(foreign, path)
    model = zooadapt.load("shufflenet_v2_x0_5", weights=path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    plan = model.zooadapt.report.plan
    assert plan.fits and any("inhouse-shufflenet layout" in note for note in plan.notes)
    from zooadapt.host.layouts import registered_layouts

    assert {lay.name: lay.provider for lay in registered_layouts()}["inhouse-shufflenet"] == "shufflenet"



# -- the README's code runs -------------------------------------------------------------------------

README_SKIPS = {
    'zooadapt.load("alexnet"': "the registry's AlexNet weights are the real download.pytorch.org file, pinned by its "
    "sha256 (network); tests/test_alexnet.py runs the call against a local file server",
    "zooadapt.push_to_hub(": "push_to_hub uploads to the real Hub (the loopback Hub only serves downloads)",
    "DistributedDataParallel(model.to(device), device_ids=[device.index])": "DDP with device_ids=[device.index] "
    "needs a CUDA device and a process group (GPU); tests/test_parallel_ddp.py runs two CPU ranks",
    "zooadapt.distributed.fully_shard_stages(": "FSDP2 across ranks needs a process group per GPU; "
    "tests/test_fsdp.py covers it",
    'dist.init_process_group("nccl")': "NCCL on CUDA devices (GPU)",
    "ray.train": "a Ray cluster (ray is not installed)",
}
"""README blocks that cannot run here: a marker in the block -> why (real network or GPU)."""


def readme_blocks() -> list[str]:
    return python_blocks(README.read_text(encoding="utf-8"))


def _block_id(block: str) -> str:
    first = next(line for line in block.splitlines() if line.strip() and not line.startswith(("import", "from")))
    return re.sub(r"\W+", "_", first.split("#")[0]).strip("_")[:50]


def _publish_resnet50(hub) -> None:
    from zooadapt.testing import safetensors_bytes

    hub.add_file("timm/resnet50.tv_in1k", "model.safetensors",
                 safetensors_bytes(torchvision_state_dict("resnet50", seed=50)))


def _readme_files(block: str, work: Path, hub) -> dict[str, object]:
    """What a block names but does not make (files, a model of yours, images), made in ``work``."""
    import json

    names: dict[str, object] = {}
    if '"resnet50"' in block or "(my_resnet50" in block:
        _publish_resnet50(hub)
    if "checkpoints/epoch_90.pth" in block:
        import torchvision

        (work / "checkpoints").mkdir()
        state = torchvision_state_dict("resnet50", seed=90, num_classes=10)
        torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "optimizer": {}, "epoch": 90},
                   work / "checkpoints" / "epoch_90.pth")
        names["my_resnet50"] = torchvision.models.resnet50(num_classes=10)
    if "my_timm_resnet50" in block:
        import timm
        import torchvision

        names["my_timm_resnet50"] = timm.create_model("resnet50")
        names["torchvision_resnet50"] = torchvision.models.resnet50()
    if "runs/flowers/best.pth" in block:
        (work / "runs" / "flowers").mkdir(parents=True)
        torch.save(torchvision_state_dict("resnet18", seed=5, num_classes=5), work / "runs" / "flowers" / "best.pth")
        labels = ("daisy", "dandelion", "rose", "sunflower", "tulip")
        (work / "runs" / "flowers" / "config.json").write_text(
            json.dumps({"id2label": {str(i): n for i, n in enumerate(labels)}}), encoding="utf-8")
    if '"finetuned.pth"' in block:
        import timm

        torch.save(timm.create_model("resnet50d", num_classes=3).state_dict(), work / "finetuned.pth")
    if "mobilenet_sgd_rmsprop_69.526.tar" in block:
        from zooadapt.plugins.mobilenet import build_v1

        from zooadapt.testing import seeded_state_dict

        with torch.device("meta"):
            v1 = build_v1("mobilenet_v1")
        state = {f"module.{k}": v for k, v in seeded_state_dict(v1, 0).items() if not k.endswith("num_batches_tracked")}
        torch.save({"epoch": 149, "arch": "mobilenet", "best_prec1": 69.526, "state_dict": state},
                   work / "mobilenet_sgd_rmsprop_69.526.tar")
        names["images"] = torch.randn(2, 3, 64, 64)
    if "lightning." in block:
        names["lightning"] = pytest.importorskip("lightning")
    if 'weights="hf://google/vit-base-patch16-224"' in block:
        _checkpoints_from_elsewhere(work, hub)
    return names


def _checkpoints_from_elsewhere(work: Path, hub) -> None:
    """The five files of the "checkpoints from elsewhere" block, seeded, in their real layouts (the
    same constructions as tests/test_checkpoint_corpus.py, at full size where the README names a
    real repository)."""
    import json

    from safetensors.torch import save
    from transformers import ResNetConfig, ResNetForImageClassification, ViTConfig, ViTForImageClassification

    resnet50 = torchvision_state_dict("resnet50", seed=51)
    # Lightning's ModelCheckpoint: the LightningModule's state dict, the network held as self.model
    (work / "lightning_logs" / "version_0" / "checkpoints").mkdir(parents=True)
    torch.save({"epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.6.0",
                "state_dict": {f"model.{k}": v for k, v in resnet50.items()}},
               work / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt")
    # timm's train.py: the live weights as state_dict, the EMA copy as state_dict_ema
    (work / "output" / "train").mkdir(parents=True)
    torch.save({"epoch": 90, "arch": "resnet50", "state_dict": resnet50,
                "state_dict_ema": torchvision_state_dict("resnet50", seed=52)},
               work / "output" / "train" / "last.pth.tar")
    # microsoft/resnet-50 and google/vit-base-patch16-224: transformers' classes with those repos' configs
    config = ResNetConfig(layer_type="bottleneck", depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048],
                          downsample_in_bottleneck=False, num_labels=1000)
    hub.add_file("microsoft/resnet-50", "model.safetensors", save(ResNetForImageClassification(config).state_dict()))
    hub.add_file("microsoft/resnet-50", "config.json", json.dumps(config.to_dict()).encode())
    config = ViTConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                       image_size=224, patch_size=16, num_labels=1000, layer_norm_eps=1e-12)
    state = {k: v.contiguous() for k, v in ViTForImageClassification(config).state_dict().items()}
    hub.add_file("google/vit-base-patch16-224", "model.safetensors", save(state))
    hub.add_file("google/vit-base-patch16-224", "config.json", json.dumps(config.to_dict()).encode())
    # facebookresearch/moco main_moco.py: the DDP-wrapped MoCo's state dict, two encoders with MLP heads
    moco = {}
    for encoder, seed in (("encoder_q", 53), ("encoder_k", 54)):
        for k, v in torchvision_state_dict("resnet50", seed=seed).items():
            if not k.startswith("fc."):
                moco[f"module.{encoder}.{k}"] = v
        mlp = {"fc.0.weight": torch.randn(2048, 2048), "fc.0.bias": torch.zeros(2048),
               "fc.2.weight": torch.randn(128, 2048), "fc.2.bias": torch.zeros(128)}
        moco.update({f"module.{encoder}.{k}": v for k, v in mlp.items()})
    torch.save({"epoch": 800, "arch": "resnet50", "state_dict": moco, "optimizer": {}}, work / "moco_v2_800ep.pth.tar")


@pytest.mark.slow
@pytest.mark.parametrize("block", readme_blocks(), ids=_block_id)
def test_readme_python_block_runs(block, hub, resnet18_weights, resnet34_weights, tmp_path, monkeypatch, capsys):
    """Every Python block of the README runs as written, against the loopback Hub (stand-in weights
    in the real layouts) and files made for the names it takes as given; only those that need a
    real network or a GPU are skipped, each with its reason."""
    reasons = [why for marker, why in README_SKIPS.items() if marker in block]
    if reasons:
        pytest.skip(reasons[0])
    if "LocalHub().start()" in block:  # sets up its own Hub before huggingface_hub is imported: a fresh process
        import subprocess
        import sys

        env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
        result = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, env=env, timeout=300,
                                cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "zooadapt: resnet34 (resnet/resnet34), 5 classes" in result.stdout
        return
    monkeypatch.chdir(tmp_path)
    import torchvision

    namespace: dict[str, object] = {"__name__": "readme", "torch": torch, "torchvision": torchvision,
                                    "zooadapt": zooadapt}
    namespace.update(_readme_files(block, tmp_path, hub))
    exec(compile(block, f"{README}:block", "exec"), namespace)
    capsys.readouterr()


def test_readme_skips_name_blocks_that_exist():
    """A skip whose block was rewritten or removed would hide nothing but still read as a reason."""
    blocks = readme_blocks()
    assert [m for m in README_SKIPS if not any(m in b for b in blocks)] == []

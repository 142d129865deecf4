"""A file's trained classifier is kept wherever it fits, and said when it is not.

Two neighbours of "your fine-tune keeps its head":
* the same classifier in another layer type: a ``Linear`` ``[C, F]`` for a model whose head is a
  1x1 convolution ``[C, F, 1, 1]`` (timm's ResNetV2 and DLA; transformers' BiT saves a Linear).
  Every value is where it was, so it loads (reshaped), never replaced by a random head;
* a classifier under a name nothing maps (``classifier.`` for torchvision's ``fc.``): the model
  gets a new random head, and with no ``num_classes=`` asking for one that is said, with the
  rule that loads it.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
import torchvision
from safetensors.torch import save_file

import zooadapt


@pytest.mark.parametrize("arch", ["dla46_c", pytest.param("resnetv2_50x1_bit", marks=pytest.mark.slow)])
@pytest.mark.parametrize("classes", [1000, 7])
def test_a_linear_classifier_loads_into_a_convolution_head(arch, classes, tmp_path):
    import timm

    torch.manual_seed(0)
    source = timm.create_model(arch, num_classes=classes).eval()
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    head_weight = next(k for k, v in state.items() if v.ndim == 4 and v.shape[0] == classes and v.shape[2:] == (1, 1)
                       and k.rpartition(".")[0] in (source.default_cfg["classifier"],))
    state[head_weight] = state[head_weight].flatten(1).contiguous()  # as a Linear layer saves it
    save_file(state, str(tmp_path / "model.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: the head is the file's
        model = zooadapt.load(arch, weights=tmp_path / "model.safetensors").eval()
    plan = model.zooadapt.report.plan
    assert not plan.new_head and model.zooadapt.num_classes == classes
    assert any(r.startswith("reshape") for m in plan.loaded if m.model_key == head_weight for r in m.rules)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.state_dict().items())  # bit for bit
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # (the memory-mapped file's tensors are not 64-byte aligned: kernels may round apart)
        torch.testing.assert_close(model(x), source(x), rtol=1e-5, atol=1e-5)


def test_a_head_of_another_class_count_is_still_new(tmp_path):
    """The reshape is for the same classifier only: another class count is another head."""
    import timm

    state = {k: v.contiguous() for k, v in timm.create_model("dla46_c", num_classes=7).state_dict().items()}
    state["fc.weight"] = state["fc.weight"].flatten(1).contiguous()
    save_file(state, str(tmp_path / "model.safetensors"))
    model = zooadapt.load("dla46_c", weights=tmp_path / "model.safetensors", num_classes=3)
    assert model.zooadapt.report.plan.new_head == ["fc.weight", "fc.bias"]


@pytest.mark.parametrize(("arch", "head"), [
    ("resnet18", "fc"),
    pytest.param("mobilenet_v3_small", "classifier.3", marks=pytest.mark.slow),
    pytest.param("efficientnet_b0", "classifier", marks=pytest.mark.slow),
    pytest.param("convnext_atto", "head.fc", marks=pytest.mark.slow),
])
def test_a_classifier_nothing_places_is_said_with_the_rule_that_loads_it(arch, head, tmp_path):
    built = zooadapt.load(arch, pretrained=False, num_classes=7)
    state = {(f"final_layer.{k[len(head) + 1:]}" if k.startswith(head + ".") else k): v.contiguous()
             for k, v in built.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.warns(UserWarning, match=r"trained 7-class classifier \(final_layer\.weight \[7, \d+\]\)") as said:
        model = zooadapt.load(arch, weights=tmp_path / "model.safetensors")
    assert model.zooadapt.report.plan.new_head  # the model's head is random
    message = str(said[0].message)
    assert "num_classes=7" in message and message in model.zooadapt.report.plan.notes
    rule = message.split("rules=[r'")[1].split("']")[0]
    kept = zooadapt.load(arch, weights=tmp_path / "model.safetensors", rules=[rule]).eval()
    assert kept.zooadapt.num_classes == 7 and not kept.zooadapt.report.plan.new_head
    assert all(torch.equal(kept.state_dict()[k], v) for k, v in built.state_dict().items())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for: a new head of 7 classes, nothing to say
        zooadapt.load(arch, weights=tmp_path / "model.safetensors", num_classes=7)


def test_no_word_for_a_projection_head(tmp_path):
    """MoCo v2's MLP head (fc.0 [2048, 2048] -> fc.2 [128, 2048]) projects; it classifies nothing."""
    state = {f"module.encoder_q.{k}": v for k, v in torchvision.models.resnet50().state_dict().items()
             if not k.startswith("fc.")}
    state["module.encoder_q.fc.0.weight"] = torch.randn(2048, 2048)
    state["module.encoder_q.fc.0.bias"] = torch.randn(2048)
    state["module.encoder_q.fc.2.weight"] = torch.randn(128, 2048)
    state["module.encoder_q.fc.2.bias"] = torch.randn(128)
    torch.save({"state_dict": state}, tmp_path / "moco_v2.pth.tar")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = zooadapt.load("resnet50", weights=tmp_path / "moco_v2.pth.tar", rules=["strip:module.encoder_q."],
                              device="meta")
    assert model.zooadapt.report.plan.new_head == ["fc.weight", "fc.bias"]


def test_no_warning_when_the_file_has_no_classifier_and_no_random_head_either(tmp_path):
    """Nothing of the file is lost, so nothing is warned; the model is the file's network without a
    head (pooled features), said in a note, not a random 1000-way head."""
    state = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}
    save_file(state, str(tmp_path / "model.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = zooadapt.load("resnet18", weights=tmp_path / "model.safetensors")
    assert isinstance(model.fc, torch.nn.Identity) and model.zooadapt.report.plan.headless
    assert [n for n in model.zooadapt.report.plan.notes if "classifier" in n] == [
        "the file holds no classifier: the model returns the pooled features its network computed "
        "(num_classes=0), not a random 1000-way head; num_classes=N adds a new N-way head"]


def test_one_classifier_is_not_offered_to_one_of_two_combined_heads(tmp_path):
    """transformers' DeiTForImageClassification classifies the CLS token alone; timm's distilled
    DeiT averages ``head`` (CLS) and ``head_dist`` (the distillation token). Renamed into ``head``
    alone, the file's classifier would be averaged with a random ``head_dist``: a rule that loads
    it is not offered; the warning says why the heads are new."""
    built = zooadapt.load("deit_tiny_distilled_patch16_224", pretrained=False, num_classes=7, depth=1)
    state = {k: v.contiguous() for k, v in built.state_dict().items() if not k.startswith(("head.", "head_dist."))}
    state["classifier.weight"], state["classifier.bias"] = built.head.weight.detach(), built.head.bias.detach()
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.warns(UserWarning, match=r"trained 7-class classifier \(classifier\.weight \[7, 192\]\)") as said:
        model = zooadapt.load("deit_tiny_distilled_patch16_224", weights=tmp_path / "model.safetensors", depth=1)
    message = str(said[0].message)
    assert "head, head_dist" in message and "random head_dist" in message and "num_classes=7" in message
    assert "rules=" not in message
    assert {"head.weight", "head_dist.weight"} <= set(model.zooadapt.report.plan.new_head)


@pytest.mark.slow
def test_a_classifier_the_reading_layout_leaves_out_gets_no_rule(tmp_path):
    """transformers' CLIPForImageClassification classifies the mean of the patch tokens; timm's CLIP
    head reads the class token: the transformers-clip layout maps no classifier. Renaming it into
    the head would compute something else, so no rule is offered; the warning names the layout."""
    transformers = pytest.importorskip("transformers")
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
    config = transformers.CLIPConfig(vision_config=vision, num_labels=7, text_config=dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2))
    transformers.CLIPForImageClassification(config).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match=r"trained 7-class classifier \(classifier\.weight \[7, 64\]\)") as said:
        model = zooadapt.load("vit_base_patch16_clip_224", weights=tmp_path, depth=1, embed_dim=64, num_heads=2,
                              img_size=32, patch_size=8, mlp_ratio=2)
    message = str(said[0].message)
    assert "the transformers-clip layout" in message and "num_classes=7" in message and "rules=" not in message
    assert model.zooadapt.report.plan.new_head == ["head.weight", "head.bias"]


@pytest.mark.slow
def test_a_transformers_classifier_of_another_width_is_said_too(tmp_path):
    """Dinov2ForImageClassification's classifier reads the class token beside the mean of the
    patch tokens (twice the width timm's head takes): no timm head computes it. Loaded with no
    num_classes=, the model gets a random 1000-way head: said, naming the layout."""
    transformers = pytest.importorskip("transformers")
    config = transformers.Dinov2Config(hidden_size=192, num_hidden_layers=1, num_attention_heads=3,
                                       intermediate_size=768, image_size=98, patch_size=14, num_labels=10)
    transformers.Dinov2ForImageClassification(config).save_pretrained(tmp_path)
    options = dict(depth=1, img_size=98, embed_dim=192, num_heads=3)
    with pytest.warns(UserWarning, match=r"trained 10-class classifier \(classifier\.weight \[10, 384\]\)") as said:
        model = zooadapt.load("vit_small_patch14_dinov2", weights=tmp_path, **options)
    assert "the transformers-dinov2 layout" in str(said[0].message) and "rules=" not in str(said[0].message)
    assert model.zooadapt.report.plan.new_head == ["head.weight", "head.bias"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for: a new head, nothing to say
        zooadapt.load("vit_small_patch14_dinov2", weights=tmp_path, num_classes=5, **options)


def _dropout_head(arch: str, head: str, classes: int) -> torch.nn.Module:
    """The seeds' fine-tune with a regularised head: the head Linear replaced by
    ``nn.Sequential(nn.Dropout(0.5), nn.Linear(in_features, classes))`` (keys ``<head>.1.*``)."""
    import timm

    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)() if hasattr(torchvision.models, arch) else timm.create_model(arch)
    parent, _, leaf = head.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    old = owner.get_submodule(leaf) if not leaf.isdigit() else owner[int(leaf)]
    new = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(old.in_features, classes))
    if leaf.isdigit():
        owner[int(leaf)] = new
    else:
        setattr(owner, leaf, new)
    return model.eval()


@pytest.mark.parametrize(("arch", "head", "prefix"), [
    ("resnet18", "fc", ""),
    ("resnet18", "fc", "module."),
    pytest.param("mobilenet_v3_small", "classifier.3", "", marks=pytest.mark.slow),
    pytest.param("convnext_atto", "head.fc", "_orig_mod.", marks=pytest.mark.slow),
])
def test_a_head_of_another_structure_is_said_with_the_rule_that_keeps_its_layer(arch, head, prefix, tmp_path):
    """``fc.1.weight`` has no place in a model whose head is ``fc``: before, it was dropped for a
    random 1000-way head with no word (the report listed it among the old head's tensors)."""
    source = _dropout_head(arch, head, classes=5)
    torch.save({prefix + k: v for k, v in source.state_dict().items()}, tmp_path / "finetuned.pth")
    said_layer = rf"its one layer with weights, {re.escape(prefix + head)}\.1 \[5, \d+\]"
    with pytest.warns(UserWarning, match=said_layer) as said:
        model = zooadapt.load(arch, weights=tmp_path / "finetuned.pth")
    assert model.zooadapt.report.plan.new_head and model.zooadapt.num_classes != 5
    message = str(said[0].message)
    assert "num_classes=5" in message and message in model.zooadapt.report.plan.notes
    rule = message.split("rules=[r'")[1].split("']")[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rule says which layer is the head: nothing left to say
        kept = zooadapt.load(arch, weights=tmp_path / "finetuned.pth", rules=[rule]).eval()
    assert kept.zooadapt.num_classes == 5 and not kept.zooadapt.report.plan.new_head
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # Dropout is the identity in eval(): the same outputs as the fine-tuned model
        torch.testing.assert_close(kept(x), source(x), rtol=1e-5, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a new head asked for: nothing to say
        zooadapt.load(arch, weights=tmp_path / "finetuned.pth", num_classes=5, device="meta")


def test_an_mlp_head_is_noted_without_a_warning(tmp_path):
    """Two layers with weights in the head: a projection head (no warning, see above) or an MLP
    classifier; the report says which layers were not rebuilt and how to keep them."""
    source = torchvision.models.resnet18()
    source.fc = torch.nn.Sequential(torch.nn.Linear(512, 256), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                    torch.nn.Linear(256, 5))
    torch.save(source.state_dict(), tmp_path / "mlp.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = zooadapt.load("resnet18", weights=tmp_path / "mlp.pth", device="meta")
    note = next(n for n in model.zooadapt.report.plan.notes if "layers with weights" in n)
    assert "fc.0 [256, 512], fc.3 [5, 256]" in note and "zooadapt.load_weights" in note


# -- a headless model saved with torch.save: reloaded headless, never with a random head -------------

_HEADLESS_ARCHS = ("mobilenet_v3_small", "resnet18", "test_convnext", "test_vit", "efficientnet_b0", "alexnet")


@pytest.mark.parametrize("form", ["pth", "training", "safetensors"])
@pytest.mark.parametrize("arch", [a if a in ("mobilenet_v3_small", "test_vit") else
                                  pytest.param(a, marks=pytest.mark.slow) for a in _HEADLESS_ARCHS])
def test_a_headless_model_saved_by_hand_reloads_headless_with_its_outputs(arch, form, tmp_path):
    """``load(name, num_classes=0)`` saved as a state dict (torch.save, a training checkpoint,
    safetensors) and loaded again with no ``num_classes``: the file holds no classifier, so the
    model returns the pooled features it computed, said in a note, rather than a random
    1000-way head (its own ``zooadapt.save`` folder records ``num_classes=0``; a plain file
    cannot). A self-supervised backbone saved without its fc is the same file."""
    from generators import sample_input, seeded_weights, write_checkpoint

    embedder = zooadapt.load(arch, weights=seeded_weights(arch, 3), num_classes=0).eval()
    path = write_checkpoint(embedder.state_dict(), form, tmp_path / form)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing lost, nothing to warn about
        again = zooadapt.load(arch, weights=path).eval()
    x = sample_input(arch, again)
    # float rounding only: a tensor read from safetensors is not 64-byte aligned (test_sweep_heads.py)
    torch.testing.assert_close(again(x), embedder(x), rtol=1e-5, atol=1e-5)
    assert again(x).shape == embedder(x).shape and again.zooadapt.num_classes is None
    plan = again.zooadapt.report.plan
    assert plan.headless and plan.new_head == [] and plan.coverage == 1.0
    assert any("holds no classifier" in n and "num_classes=N adds" in n for n in plan.notes), plan.notes
    asked = zooadapt.load(arch, weights=path, num_classes=4)  # asked for classes: a new head, as before
    assert asked.zooadapt.num_classes == 4 and asked.zooadapt.report.plan.new_head

"""The original authors' checkpoints, loaded into timm architectures through timm's own filters.

Each source file is built from the original project's real layout: from its real model code
where it is installed (torchvision's VGG and ConvNeXt), else from the key names the timm
module's ``checkpoint_filter_fn`` itself expects (named in each builder). Values are seeded.
Every load must give the model exactly what ``model.load_state_dict(filter_fn(sd, model))``
gives timm's own model (equal outputs on the same input), name the filter in the plan, and show
each tensor's fate.
"""

from __future__ import annotations

import re

import pytest
import timm
import torch
import torchvision

import zooadapt
from zooadapt.contract.errors import IncompatibleCheckpointError
from zooadapt.host.layouts import layouts_matching

pytestmark = pytest.mark.slow


def seeded(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=g) * 0.05 if v.is_floating_point() else v.clone())
            for k, v in state.items()}


def timm_reference(arch: str, source: dict[str, torch.Tensor], filter_fn, **kwargs) -> torch.nn.Module:  # type: ignore[no-untyped-def]
    """timm's own result: the filter's output loaded strictly into timm's model."""
    model = timm.create_model(arch, pretrained=False, **kwargs)
    try:
        converted = filter_fn(dict(source), model)
    except TypeError:
        converted = filter_fn(dict(source))
    model.load_state_dict(converted, strict=True)
    return model.eval()


def load_and_compare(tmp_path, arch, source, filter_fn, *, wrap=None, size=64, num_classes=None, **kwargs):  # type: ignore[no-untyped-def]
    """zooadapt's load of the original file against timm's own result; the model and the plan it executed."""
    path = tmp_path / "original.pth"
    torch.save({wrap: source} if wrap else source, path)
    model = zooadapt.load(arch, weights=path, num_classes=num_classes, **(kwargs or {})).eval()
    want = timm_reference(arch, source, filter_fn, **({"num_classes": num_classes} if num_classes == 0 else {}),
                          **kwargs)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x), want(x))
    return model, model.zooadapt.report.plan


def converted_by(plan, name: str) -> None:  # type: ignore[no-untyped-def]
    rule = f"converted by timm's {name}"
    assert plan.fits and all(m.rules[0] == rule for m in plan.loaded), plan.summary()
    assert any("timm-checkpoint-filter layout" in n for n in plan.notes)


# -- ConvNeXt: Facebook's original release (facebookresearch/ConvNeXt models/convnext.py) ---------------


def facebook_convnext(arch: str) -> dict[str, torch.Tensor]:
    """Facebook's ConvNeXt names (``downsample_layers.0`` is the stem, ``stages.S.B`` the blocks,
    ``dwconv``/``pwconv1``/``pwconv2``, ``gamma``, ``norm``, ``head``): the names timm's convnext
    ``checkpoint_filter_fn`` renames, written from timm's own model by undoing each of its renames."""
    out = {}
    for k, v in seeded(timm.create_model(arch).state_dict()).items():
        k = k.replace("stem.", "downsample_layers.0.")
        k = re.sub(r"stages\.(\d+)\.downsample\.(\d+)", r"downsample_layers.\1.\2", k)
        k = re.sub(r"stages\.(\d+)\.blocks\.(\d+)", r"stages.\1.\2", k)
        k = k.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
        k = k.replace("head.norm", "norm").replace("head.fc", "head")
        out[k] = v
    return out


@pytest.mark.slow
def test_the_conversion_survives_a_features_only_cut_of_the_same_architecture(tmp_path):
    """A features-only load prunes the architecture's cached model; the filter still runs on a
    whole one (built again on meta), so the next file in the original layout still converts."""
    zooadapt.load("convnext_atto", pretrained=False, features_only=("stages.1",))
    source = facebook_convnext("convnext_atto")
    _, plan = load_and_compare(tmp_path, "convnext_atto", source, timm.models.convnext.checkpoint_filter_fn,
                               wrap="model")
    converted_by(plan, "convnext checkpoint_filter_fn")


def test_facebook_convnext_loads_through_timms_filter(tmp_path):
    source = facebook_convnext("convnext_atto")
    model, plan = load_and_compare(tmp_path, "convnext_atto", source, timm.models.convnext.checkpoint_filter_fn,
                                   wrap="model")
    converted_by(plan, "convnext checkpoint_filter_fn")
    fate = plan.assignments()
    assert fate["downsample_layers.0.0.weight"] == "stem.0.weight"
    assert fate["downsample_layers.1.1.weight"] == "stages.1.downsample.1.weight"
    assert fate["stages.0.0.pwconv1.weight"] == "stages.0.blocks.0.mlp.fc1.weight"
    assert fate["head.weight"] == "head.fc.weight"
    assert "converted by timm's convnext checkpoint_filter_fn" in str(model.zooadapt.report)


def test_facebook_convnext_with_another_head(tmp_path):
    source = facebook_convnext("convnext_atto")
    path = tmp_path / "fb.pth"
    torch.save({"model": source}, path)
    model = zooadapt.load("convnext_atto", weights=path, num_classes=7)
    plan = zooadapt.plan_for("convnext_atto", path, num_classes=7)
    assert plan.fits and {m.model_key for m in plan.dropped} == {"head.fc.weight", "head.fc.bias"}
    want = timm_reference("convnext_atto", source, timm.models.convnext.checkpoint_filter_fn)
    for k, v in want.state_dict().items():
        if not k.startswith("head.fc"):
            assert torch.equal(model.state_dict()[k], v), k


def test_torchvision_convnext_is_not_timms_filter_case(tmp_path):
    """torchvision's ConvNeXt (``features.N``, ``block.0``…, ``layer_scale`` [C, 1, 1]) is another
    layout: timm's convnext filter expects Facebook's names, renames none of torchvision's, so its
    result does not fit and is not used; the load is refused, never half-converted."""
    tv = torchvision.models.convnext_tiny()
    source = seeded(tv.state_dict())
    with pytest.raises(KeyError):  # it looks torchvision's Linear names up among timm's keys
        timm.models.convnext.checkpoint_filter_fn(dict(source), timm.create_model("convnext_tiny"))
    path = tmp_path / "tv_convnext.pth"
    torch.save(source, path)
    plan = zooadapt.plan_for("convnext_tiny", path)
    assert not any("timm-checkpoint-filter" in n for n in plan.notes)
    if plan.fits:  # paired by structure instead: then it must equal torchvision's values exactly
        model = zooadapt.load("convnext_tiny", weights=path)
        loaded = model.state_dict()
        for m in plan.loaded:
            assert torch.equal(loaded[m.model_key], source[m.checkpoint_key].reshape(loaded[m.model_key].shape))
    else:
        with pytest.raises(IncompatibleCheckpointError):
            zooadapt.load("convnext_tiny", weights=path)


# -- VGG: torchvision's real model ------------------------------------------------------------------------


def test_torchvision_vgg_loads_through_timms_filter(tmp_path):
    """torchvision's VGG-11 (its real model code): ``classifier.0`` is a Linear [4096, 25088] that timm
    holds as the 7x7 convolution ``pre_logits.fc1``; timm's vgg ``_filter_fn`` reshapes it."""
    from zooadapt.plugins.timm_conversions import convert

    source = seeded(torchvision.models.vgg11().state_dict())
    _, plan = load_and_compare(tmp_path, "vgg11", source, timm.models.vgg._filter_fn, size=224)
    # a rename layout for the same file (torchvision_zoo's) may be the reading taken: the same tensors
    model_shapes = {k: tuple(v.shape) for k, v in timm.create_model("vgg11").state_dict().items()}
    zooadapt.plan_for("vgg11", tmp_path / "original.pth")  # builds vgg11 here, so the filter has its model
    conversion = convert({k: tuple(v.shape) for k, v in source.items()}, model_shapes)
    assert conversion is not None and conversion.name == "timm's vgg _filter_fn"
    assert conversion.sources["pre_logits.fc1.weight"] == ("classifier.0.weight",)
    assert conversion.shapes["pre_logits.fc1.weight"] == (4096, 512, 7, 7)
    assert "features.0.weight" in conversion.same and "pre_logits.fc1.weight" not in conversion.same
    fate = {m.checkpoint_key: (m.model_key, m.model_shape) for m in plan.loaded}
    assert fate["classifier.0.weight"] == ("pre_logits.fc1.weight", (4096, 512, 7, 7))
    assert fate["classifier.3.weight"] == ("pre_logits.fc2.weight", (4096, 4096, 1, 1))
    assert fate["classifier.6.weight"][0] == "head.fc.weight"
    assert fate["features.0.weight"][0] == "features.0.weight"


# -- Swin: Microsoft's original release (microsoft/Swin-Transformer models/swin_transformer.py) -----------

_SWIN = dict(embed_dim=24, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2), window_size=4, img_size=64)


def microsoft_swin() -> dict[str, torch.Tensor]:
    """Microsoft's Swin names: a stage's patch merging at its end (``layers.S.downsample`` for S = 0..2,
    timm has it at the start of S+1), ``head.weight``, and the buffers ``relative_position_index`` and
    ``attn_mask`` (shifted blocks) saved in the file, as timm's swin ``checkpoint_filter_fn`` expects."""
    model = timm.create_model("swin_tiny_patch4_window7_224", **_SWIN)
    out = {}
    for k, v in seeded(model.state_dict()).items():
        k = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m[1]) - 1}.downsample", k)
        out[k.replace("head.fc.", "head.")] = v
        if k.endswith("attn.relative_position_bias_table"):
            w = 4
            out[k.replace("bias_table", "index")] = torch.randint(0, (2 * w - 1) ** 2, (w * w, w * w))
        if re.fullmatch(r"layers\.\d+\.blocks\.1\.norm1\.weight", k):
            out[k.replace("norm1.weight", "attn_mask")] = torch.zeros(4, 16, 16)
    return out


def test_microsoft_swin_loads_through_timms_filter(tmp_path):
    source = microsoft_swin()
    _, plan = load_and_compare(tmp_path, "swin_tiny_patch4_window7_224", source,
                               timm.models.swin_transformer.checkpoint_filter_fn, wrap="model", **_SWIN)
    converted_by(plan, "swin_transformer checkpoint_filter_fn")
    fate = plan.assignments()
    assert fate["layers.0.downsample.reduction.weight"] == "layers.1.downsample.reduction.weight"
    assert fate["layers.2.downsample.norm.weight"] == "layers.3.downsample.norm.weight"
    assert fate["head.weight"] == "head.fc.weight"
    dropped = {m.checkpoint_key for m in plan.by_status(zooadapt.loading.plan.Status.IGNORED)}
    assert "layers.0.blocks.0.attn.relative_position_index" in dropped and "layers.0.blocks.1.attn_mask" in dropped
    assert all(m.rules == ("dropped by timm's swin_transformer checkpoint_filter_fn",)
               for m in plan.by_status(zooadapt.loading.plan.Status.IGNORED))


# -- DeiT III: facebookresearch/deit models_v2.py (``gamma_1``/``gamma_2`` layer scale) -------------------


def test_deit3_original_loads_through_timms_filter(tmp_path):
    """DeiT III's release keeps layer scale as ``blocks.N.gamma_1``/``gamma_2``; timm's deit module
    passes ``partial(checkpoint_filter_fn, adapt_layer_scale=True)``, which renames them to ``ls1.gamma``."""
    kwargs = dict(embed_dim=64, depth=2, num_heads=2, img_size=64)
    model = timm.create_model("deit3_small_patch16_224", **kwargs)
    source = {re.sub(r"ls([12])\.gamma", r"gamma_\1", k): v for k, v in seeded(model.state_dict()).items()}
    filter_fn = lambda sd, m: timm.models.vision_transformer.checkpoint_filter_fn(sd, m, adapt_layer_scale=True)  # noqa: E731
    _, plan = load_and_compare(tmp_path, "deit3_small_patch16_224", source, filter_fn, wrap="model", **kwargs)
    converted_by(plan, "deit checkpoint_filter_fn(adapt_layer_scale=True)")
    assert plan.assignments()["blocks.1.gamma_2"] == "blocks.1.ls2.gamma"


# -- BEiT: microsoft/unilm beit (relative_position_index saved in the file) -------------------------------


def test_beit_original_drops_saved_buffers(tmp_path):
    """BEiT's release saves each block's ``relative_position_index`` (timm computes it and does not keep
    it); timm's beit filter drops them. The names fit as they are, but the filter's reading leaves no
    tensor unused, so it is the one taken."""
    kwargs = dict(embed_dim=64, depth=2, num_heads=2, img_size=64)
    model = timm.create_model("beit_base_patch16_224", **kwargs)
    source = seeded(model.state_dict())
    for i in range(2):
        source[f"blocks.{i}.attn.relative_position_index"] = torch.randint(0, 100, (17, 17))
    _, plan = load_and_compare(tmp_path, "beit_base_patch16_224", source, timm.models.beit.checkpoint_filter_fn,
                               wrap="model", **kwargs)
    converted_by(plan, "beit checkpoint_filter_fn")
    assert not plan.unexpected and len(plan.by_status(zooadapt.loading.plan.Status.IGNORED)) == 2


# -- EVA-02: baaivision/EVA (``mlp.w12``/``w3``, ``rope`` buffers saved) ----------------------------------


def test_eva02_original_loads_through_timms_filter(tmp_path):
    kwargs = dict(embed_dim=64, depth=2, num_heads=2, img_size=56)
    model = timm.create_model("eva02_tiny_patch14_224", **kwargs)
    source = {k.replace("mlp.fc1", "mlp.w12").replace("mlp.fc2", "mlp.w3"): v
              for k, v in seeded(model.state_dict()).items()}
    source["rope.freqs_cos"] = torch.zeros(16, 32)
    _, plan = load_and_compare(tmp_path, "eva02_tiny_patch14_224", source, timm.models.eva.checkpoint_filter_fn,
                               wrap="module", size=56, num_classes=0, **kwargs)
    converted_by(plan, "eva checkpoint_filter_fn")
    assert plan.assignments()["blocks.0.mlp.w12.weight"] == "blocks.0.mlp.fc1.weight"


# -- what is not converted -------------------------------------------------------------------------------


def test_timms_own_files_are_not_converted(tmp_path):
    path = tmp_path / "timm.pth"
    torch.save(seeded(timm.create_model("convnext_atto").state_dict()), path)
    plan = zooadapt.plan_for("convnext_atto", path)
    assert plan.fits and not any("timm-checkpoint-filter" in n for n in plan.notes)


def test_a_filter_result_that_does_not_fit_is_not_used(tmp_path):
    source = facebook_convnext("convnext_atto")
    del source["stages.1.0.pwconv2.weight"]
    path = tmp_path / "fb_missing.pth"
    torch.save(source, path)
    plan = zooadapt.plan_for("convnext_atto", path)
    assert not any("timm-checkpoint-filter" in n for n in plan.notes)
    with pytest.raises(IncompatibleCheckpointError):
        zooadapt.load("convnext_atto", weights=path)


def test_the_conversion_layout_is_never_named_for_another_family():
    keys = ["downsample_layers.0.0.weight", "stages.0.0.dwconv.weight"]
    assert all(lay.convert is None for lay in layouts_matching(keys))
    assert any(lay.name == "timm-checkpoint-filter" for lay in layouts_matching(keys, "timm"))

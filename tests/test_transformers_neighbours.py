"""Neighbours of transformers' files: the same weights under a wrapper, in a pickle, in half
precision, in a training checkpoint, without their config.json; and their identification by name-less
``identify``/``load`` at the real size of a timm architecture.

A user rarely loads the file ``save_pretrained`` wrote: it was saved from DDP (``module.``), Lightning
(``model.``), ``torch.compile`` (``_orig_mod.``) or a wrapper of their own (``backbone.``), or re-saved
as a ``.pth`` or in float16. Each such neighbour must load exactly as the plain file does (the same
tensors up to the dtype cast, the same build, the same outputs) and name the layout, or be refused.
Identification plans the file as ``load`` reads it: a converting layout (CLIP's projection, SigLIP's
pooling head, DINOv2's registers) counts each file tensor its conversion made a tensor from, so such a
file fits its architecture completely; and between two architectures that take a file alike, the one
a layout recognising the file builds for (transformers' MobileNet v1 is timm's ``mobilenetv1_*``,
built with TensorFlow's padding) is the answer, not a tie. Full-size files are written as safetensors
headers over sparse (unwritten) data: identification reads shapes only.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

import zooadapt
from zooadapt.loading.identification import architecture_for

transformers = pytest.importorskip("transformers")
pytest.importorskip("timm")
sys.path.insert(0, str(Path(__file__).parent))

_DTYPES = {torch.float32: "F32", torch.int64: "I64", torch.float16: "F16", torch.bfloat16: "BF16"}
_B16 = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)

FULL: dict[str, tuple[str, str, dict[str, Any], str]] = {
    # name: (transformers class, config class, config, the timm architecture it is)
    "clip-b32": ("CLIPVisionModel", "CLIPVisionConfig", dict(_B16, patch_size=32, hidden_act="gelu"),
                 "vit_base_patch32_clip_224"),
    "clip-b32-projection": ("CLIPVisionModelWithProjection", "CLIPVisionConfig",
                            dict(_B16, patch_size=32, projection_dim=512), "vit_base_patch32_clip_224"),
    "siglip-b16": ("SiglipVisionModel", "SiglipVisionConfig", dict(_B16, image_size=224, patch_size=16),
                   "vit_base_patch16_siglip_224"),
    # openai/clip-vit-base-patch32's own file is a whole CLIPModel: its text tower set aside, its image tower found
    # (built with the config.json's quick_gelu, as vit_base_patch32_clip_quickgelu_224 would be)
    "clip-model-b32": ("CLIPModel", "CLIPConfig", dict(vision_config=dict(_B16, patch_size=32), projection_dim=512),
                       "vit_base_patch32_clip_224"),
    "siglip-model-b16": ("SiglipModel", "SiglipConfig", dict(vision_config=dict(_B16, image_size=224, patch_size=16)),
                         "vit_base_patch16_siglip_224"),
    "deit-tiny-distilled": ("DeiTForImageClassificationWithTeacher", "DeiTConfig",
                            dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                                 num_labels=1000), "deit_tiny_distilled_patch16_224"),
    "dinov2-small": ("Dinov2Model", "Dinov2Config", dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                                                         image_size=518, patch_size=14), "vit_small_patch14_dinov2"),
    "dinov2-small-registers": ("Dinov2WithRegistersModel", "Dinov2WithRegistersConfig",
                               dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, image_size=518,
                                    patch_size=14, num_register_tokens=4), "vit_small_patch14_reg4_dinov2"),
    "beit-base": ("BeitForImageClassification", "BeitConfig",
                  dict(_B16, use_relative_position_bias=True, use_mean_pooling=True, layer_scale_init_value=0.1,
                       use_absolute_position_embeddings=False, num_labels=1000), "beit_base_patch16_224"),
    "swin-tiny": ("SwinForImageClassification", "SwinConfig", dict(num_labels=1000), "swin_tiny_patch4_window7_224"),
    "swinv2-tiny": ("Swinv2ForImageClassification", "Swinv2Config",
                    dict(image_size=256, window_size=8, num_labels=1000),
                    "swinv2_tiny_window8_256"),
    "convnext-tiny": ("ConvNextForImageClassification", "ConvNextConfig", dict(num_labels=1000), "convnext_tiny"),
    "resnet-50": ("ResNetForImageClassification", "ResNetConfig", dict(num_labels=1000), "resnet50"),
    # transformers-mobilenet-v2 reads into the mobilenet_v2 family (torchvision's network, built with eps 1e-3)
    "mobilenet-v2": ("MobileNetV2ForImageClassification", "MobileNetV2Config", dict(num_labels=1001), "mobilenet_v2"),
    "mobilenet-v1": ("MobileNetV1ForImageClassification", "MobileNetV1Config", dict(num_labels=1001),
                     "mobilenetv1_100"),
    "regnet-y-040": ("RegNetForImageClassification", "RegNetConfig", dict(num_labels=1000), "regnety_040"),
    "pvt-v2-b0": ("PvtV2ForImageClassification", "PvtV2Config", dict(num_labels=1000), "pvt_v2_b0"),
    # facebook/levit-128 with its teacher's head, and fine-tuned with one (built distilled=False)
    "levit-128": ("LevitForImageClassificationWithTeacher", "LevitConfig", dict(num_labels=1000), "levit_128"),
    "levit-128-one-classifier": ("LevitForImageClassification", "LevitConfig", dict(num_labels=1000), "levit_128"),
    "mobilevit-small": ("MobileViTForImageClassification", "MobileViTConfig", dict(num_labels=1000), "mobilevit_s"),
}
FAST_FULL = {"dinov2-small-registers", "mobilenet-v1"}  # a conversion's sources; a layout's family breaking a tie


def _sparse_safetensors(shapes: dict[str, tuple[tuple[int, ...], torch.dtype]], path: Path) -> None:
    """A valid safetensors file of these shapes whose data is never written (a sparse file of zeros)."""
    header, offset = {}, 0
    for key, (shape, dtype) in shapes.items():
        size = int(torch.Size(shape).numel()) * torch.tensor([], dtype=dtype).element_size()
        header[key] = {"dtype": _DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        fh.truncate(8 + len(raw) + offset)


def _full_file(name: str, folder: Path) -> Path:
    """transformers' model ``FULL[name]`` built on meta, its state dict's names and shapes (what
    ``save_pretrained`` writes) as a sparse safetensors file beside its config.json."""
    cls, config_cls, config, _ = FULL[name]
    cfg = getattr(transformers, config_cls)(**config)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = getattr(transformers, cls)(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    _sparse_safetensors({k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()},
                        folder / "model.safetensors")
    cfg.to_json_file(str(folder / "config.json"))
    return folder / "model.safetensors"


@pytest.fixture(scope="module")
def full_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fast cases' files, written in setup (building a transformers model, even on meta, is most
    of a second) and the signature index read."""
    root = tmp_path_factory.mktemp("full")
    out = {n: _full_file(n, root / n) for n in FAST_FULL}
    for path in out.values():  # the index, the layouts' patterns, a layout build's signature: once per process
        zooadapt.identify(path)
    return out


def _identified_as(path: Path, arch: str) -> zooadapt.Identification:
    found = zooadapt.identify(path)
    best = found.best
    assert best is not None and best.complete, str(found)
    assert architecture_for(found) == best.name, str(found)
    assert arch in (best.name, *best.same_signature), str(found)
    return found


@pytest.mark.slow  # (its fixture builds the full-size files: 2 s)
def test_a_dinov2_registers_file_fits_its_architecture_through_the_conversion(full_files):
    """transformers-dinov2-registers converts (cls_token and the position embedding are made from two
    file tensors each): identification counted each converted tensor once, not its sources, so the
    file placed 96% of its tensors and was refused ("fits no architecture completely")."""
    _identified_as(full_files["dinov2-small-registers"], "vit_small_patch14_reg4_dinov2")


@pytest.mark.slow  # (its fixture builds the full-size files: 2 s)
def test_the_mobilenet_v1_layouts_family_breaks_the_tie(full_files):
    """Both timm's mobilenetv1_100 and the mobilenet_v1 family pair transformers' MobileNet v1 by order;
    only timm's is what the transformers-mobilenet-v1 layout builds (TensorFlow's 'same' padding, ReLU6,
    eps 1e-3): the other computes something else, so the file is mobilenetv1_100, not ambiguous."""
    found = _identified_as(full_files["mobilenet-v1"], "mobilenetv1_100")
    assert found.best is not None and found.best.spoken_for and found.best.family == "timm"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(FULL) - FAST_FULL))
def test_a_full_size_transformers_file_is_identified_as_its_timm_architecture(name, tmp_path):
    """Each layout's file at a real architecture's size: the complete fit, named by ``architecture_for``
    (a CLIP file with its projection and a SigLIP tower with its pooling head were refused before: their
    conversions' sources went uncounted)."""
    _identified_as(_full_file(name, tmp_path / name), FULL[name][3])


@pytest.mark.slow
def test_a_clip_file_with_its_projection_loads_unnamed_as_named(tmp_path):
    """CLIPVisionModelWithProjection at ViT-B/32's size, real weights: ``load(FILE)`` identifies
    vit_base_patch32_clip_224 and computes what ``load(NAME, FILE)`` computes, bit for bit, its head
    transformers' projection (512 wide)."""
    cfg = transformers.CLIPVisionConfig(**FULL["clip-b32-projection"][2])
    torch.manual_seed(0)
    transformers.CLIPVisionModelWithProjection(cfg).save_pretrained(tmp_path / "clip")
    path = tmp_path / "clip"
    unnamed = zooadapt.load(weights=path).eval()
    assert unnamed.zooadapt.name == "vit_base_patch32_clip_224"
    named = zooadapt.load("vit_base_patch32_clip_224", weights=path).eval()
    assert named.zooadapt.report.plan.notes == unnamed.zooadapt.report.plan.notes[1:]
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = unnamed(x)
        assert out.shape == (1, 512) and torch.equal(out, named(x))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["clip-model-b32", "siglip-model-b16"])
def test_a_whole_clip_or_siglip_file_is_identified_by_its_image_tower(name, tmp_path):
    """Half of a whole CLIPModel's or SiglipModel's tensors are its text tower: no architecture took
    half of the file, so it was not identified (CLIP), or the nearest were unrelated networks taking
    51% of it (SigLIP: CaiT, XCiT). The layout's drop rules set the text tower aside, the bounds
    count it so, and the answer says how many tensors were set aside."""
    path = _full_file(name, tmp_path / name)
    found = _identified_as(path, FULL[name][3])
    assert found.best is not None
    with safe_open(str(path), "pt") as f:
        keys = list(f.keys())  # noqa: SIM118  (a safe_open handle is no mapping)
    text = sum(1 for k in keys if k.startswith(("text_model.", "text_projection", "logit_")))
    assert found.best.set_aside >= text > 150 and f"({found.best.set_aside} set aside as no part of it)" in str(found)
    assert found.to_dict()["matches"][0]["set_aside"] == found.best.set_aside


def _wrapped(path: Path, prefix: str, folder: Path) -> Path:
    """The same file's names under a wrapper's ``prefix`` (DDP's ``module.``), its config.json beside it."""
    with safe_open(str(path), "pt") as f:
        shapes = {prefix + k: (tuple(f.get_slice(k).get_shape()), torch.float32) for k in f.keys()}  # noqa: SIM118
    folder.mkdir(parents=True)
    _sparse_safetensors(shapes, folder / "model.safetensors")
    shutil.copy(path.parent / "config.json", folder / "config.json")
    return folder / "model.safetensors"


_full_files_made: dict[str, Path] = {}


@pytest.fixture(scope="module")
def full_file_of(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``FULL[name]``'s file, written once per module."""
    def made(name: str) -> Path:
        if name not in _full_files_made:
            _full_files_made[name] = _full_file(name, tmp_path_factory.mktemp("full-once") / name)
        return _full_files_made[name]

    return made


@pytest.mark.slow
@pytest.mark.sweep  # the unwrapped files run at the dependencies' floors too (.ci/lowest): the wrappers add no version
@pytest.mark.parametrize("prefix", ["module.", "model.", "_orig_mod.", "module._orig_mod.", "backbone."])
@pytest.mark.parametrize("name", sorted(FULL))
def test_a_full_size_transformers_file_under_a_wrapper_is_identified_as_unwrapped(name, prefix, tmp_path,
                                                                                   full_file_of):
    """Saved from DDP or Lightning, the same file: identification bounded each architecture by the
    raw keys, which no layout recognises under the prefix, so q/k/v stayed apart and a whole CLIP's
    text tower counted against it (DINOv2 answered vit_small_patch16_36x1_224 at 99%, CLIP CaiT).
    Now the layouts read the keys under the prefix, as the named load's planner does; and the
    layout's drop rules see the stripped names (DINOv2's mask_token was left unused under it)."""
    path = _wrapped(full_file_of(name), prefix, tmp_path / "wrapped")
    found = _identified_as(path, FULL[name][3])
    assert found.best is not None and found.best.share == 1.0


# -- neighbours of the twins' files --------------------------------------------------------------------

import test_transformers_clip as _clip  # noqa: E402
import test_transformers_hier as _hier  # noqa: E402
import test_transformers_twins as _twins  # noqa: E402

_MODULES = {"twins": _twins, "clip": _clip, "hier": _hier}
PICKS = [("twins", n) for n in ("deit", "dinov2", "dinov2-registers", "beit", "swin", "convnextv2", "bit",
                                "mobilenet-v1")] + \
        [("clip", n) for n in ("clip", "clip-projection", "siglip", "siglip-headless")] + \
        [("hier", n) for n in ("swinv2", "pvt-v2-tiny", "mobilevit", "poolformer-model", "levit", "focalnet")]
KINDS = ("module.", "model.", "_orig_mod.", "backbone.", "reversed-pth", "shuffled-pth", "pth", "float16", "bfloat16",
         "checkpoint-dict", "no-config", "no-config-module.")
# transformers' MobileNet v1 is paired by order: a file in another order is refused, never paired wrong
_REFUSED = {("mobilenet-v1", "reversed-pth"), ("mobilenet-v1", "shuffled-pth")}
# a tensor a conversion computes (DINOv2-registers' class token: the file's token plus its position) from
# a half-precision file is the sum of rounded tensors, not the plain sum rounded: within the dtype's rounding
_COMPUTED = {"dinov2-registers": {"cls_token"}}


_FAST = {("deit", "module.")}  # a fused qkv under a wrapper; the rest: slow


def _case(where: str, name: str, kind: str) -> Any:
    marks = () if (name, kind) in _FAST else pytest.mark.slow
    return pytest.param(where, name, kind, marks=marks, id=f"{name}-{kind}")


class _Temp:
    def __init__(self, root: Path) -> None:
        self.root = root

    def mktemp(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=name, dir=self.root))


def _neighbour(kind: str, state: dict[str, torch.Tensor], config: Path, folder: Path) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    if not kind.startswith("no-config"):
        shutil.copy(config, folder / "config.json")
    if kind.endswith("."):
        save_file({kind.split("-")[-1] + k: v for k, v in state.items()}, str(folder / "model.safetensors"))
        return folder
    if kind in ("float16", "bfloat16"):
        dtype = getattr(torch, kind)
        save_file({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()},
                  str(folder / "model.safetensors"))
        return folder
    if kind == "no-config":
        save_file(state, str(folder / "model.safetensors"))
        return folder
    items = list(state.items())
    if kind == "reversed-pth":
        items.reverse()
    elif kind == "shuffled-pth":
        random.Random(0).shuffle(items)
    path = folder / "pytorch_model.pth"
    torch.save({"state_dict": dict(items), "optimizer": {"state": {}, "param_groups": []}, "epoch": 3}
               if kind == "checkpoint-dict" else dict(items), path)
    return path


@pytest.mark.parametrize(("where", "name", "kind"), [_case(w, n, k) for w, n in PICKS for k in KINDS])
def test_a_neighbour_loads_as_the_plain_file(where, name, kind, tmp_path_factory, tmp_path):
    """The neighbour's load: fits, names the twin's layout, the plain load's tensors (cast to the
    file's dtype and back), and with its config.json the same build (``repr``: eps, activations, window)
    and outputs; without it, no note claims the config."""
    mod = _MODULES[where]
    twin = mod.TWINS[name]
    hf, path = mod.saved(name, _Temp(tmp_path_factory.mktemp("twins")))
    plain = mod.load(name, path)
    from safetensors.torch import load_file

    on_disk = load_file(str(path / "model.safetensors"))
    memory = [k for k in hf.state_dict() if k in on_disk]  # the model's order, where its names are the file's
    state = {k: on_disk[k] for k in memory} if len(memory) == len(on_disk) else on_disk
    neighbour = _neighbour(kind, state, path / "config.json", tmp_path / "f")
    if (name, kind) in _REFUSED:
        with pytest.raises(zooadapt.ZooadaptError, match="order"):
            mod.load(name, neighbour)
        return
    model = mod.load(name, neighbour)
    plan = model.zooadapt.report.plan
    assert plan.fits and not plan.missing
    assert twin.layout in mod.layouts_named(model), plan.notes
    mine = model.state_dict()
    for key, value in plain.state_dict().items():
        if kind in ("float16", "bfloat16") and value.is_floating_point():
            dtype = getattr(torch, kind)
            if key in _COMPUTED.get(name, ()):
                ulp = torch.finfo(dtype).eps * float(value.abs().max())
                assert float((mine[key].to(value.dtype) - value).abs().max()) <= 2 * ulp, key
                continue
            value = value.to(dtype).to(value.dtype)
        assert torch.equal(mine[key].to(value.dtype), value), key
    if kind.startswith("no-config"):
        assert not any("config.json" in n for n in plan.notes if n.startswith("built the")), plan.notes
        return
    assert repr(model) == repr(plain)
    if kind not in ("float16", "bfloat16"):
        x = torch.randn(1, 3, getattr(twin, "size", 32), getattr(twin, "size", 32),
                        generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ours, theirs = model(x), plain(x)
        assert float((ours - theirs).abs().max()) <= 1e-6 * float(theirs.abs().max())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deit", "swin"])
def test_two_copies_of_a_fused_layouts_file_are_refused_and_each_line_loads_its_copy(name, tmp_path_factory,
                                                                                       tmp_path):
    """A transformers file beside a ``module.`` copy of other weights: query, key and value are
    joined into one qkv from one copy only, never a mixture, so the two readings tie and are
    refused; each offered ``rules=`` line loads its own copy bit for bit."""
    import ast
    import re

    from safetensors.torch import load_file, save_file

    hf, path = _twins.saved(name, _Temp(tmp_path_factory.mktemp("twins")))
    plain = load_file(str(path / "model.safetensors"))
    # (cloned: transformers 5.3 saves Swin's relative_position_index, which safetensors will not write twice)
    other = {k: v + 1 if v.is_floating_point() else v.clone() for k, v in plain.items()}
    folder = tmp_path / "two"
    folder.mkdir()
    shutil.copy(path / "config.json", folder / "config.json")
    save_file({**plain, **{f"module.{k}": v for k, v in other.items()}}, str(folder / "model.safetensors"))
    with pytest.raises(zooadapt.ZooadaptError, match="copies of the network") as refused:
        _twins.load(name, folder)
    lines = [ast.literal_eval(line) for line in re.findall(r"load it with rules=(\[.*?\])$", str(refused.value), re.M)]
    assert len(lines) == 2, refused.value
    expected = []
    for state in (plain, other):
        single = tmp_path / f"single-{len(expected)}"
        single.mkdir()
        shutil.copy(path / "config.json", single / "config.json")
        save_file(state, str(single / "model.safetensors"))
        expected.append(_twins.load(name, single).state_dict())
    got = [_twins.load(name, folder, rules=rules).state_dict() for rules in lines]
    matched = sorted(i for model in got for i, want in enumerate(expected)
                     if all(torch.equal(model[k], v) for k, v in want.items()))
    assert matched == [0, 1]

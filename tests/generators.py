"""Generators for the sweeps (``test_sweep_copies.py``, ``test_sweep_heads.py``): which
architectures, their weights, wrapper prefixes, key orders and file forms.

(a) Architectures: every model of the built-in families (ResNet 18-152, MobileNet v1/v2/v3,
    AlexNet), and the smallest timm architecture of each timm model module (``TIMM_SMALLEST``,
    precomputed by ``smallest_timm_architectures()``; ``test_timm_selection_is_current`` in
    ``test_sweep_copies.py`` recomputes it for the installed timm).
(b) Weights: seeded tensors for a model built by the zoo's own builder (the family's ``build``,
    with the registry entry's architecture and build options), on ``meta`` or real.
(c) Wrapper prefixes: the names training code really uses, random ones of 1-3 levels, and the
    same as hypothesis strategies.
(d) Key orders: the file's own, sorted, shuffled (seeded).
(e) File forms: a plain state dict, a training checkpoint, safetensors, a transformers-style folder.
"""

from __future__ import annotations

import functools
import json
import random
import re
import string
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zooadapt.plugin_api import get_registry

if TYPE_CHECKING:
    import torch
    import torch.nn as nn
    from hypothesis.strategies import SearchStrategy

# -- (a) architectures ----------------------------------------------------------------------------

MAX_TIMM_PARAMS = 50_000_000
"""Above this a module's smallest architecture is left out of the sweep as huge: a file with two
copies of it is over 400 MB, written and read once per key order and file form, which would take
the slow sweep past what two shared cores can run before a commit (about ten minutes)."""

TIMM_SMALLEST: tuple[tuple[str, str, int], ...] = (
    ('convnext', 'test_convnext', 272128),
    ('efficientnet', 'test_efficientnet', 356196),
    ('vision_transformer', 'test_vit', 371240),
    ('nfnet', 'test_nfnet', 383080),
    ('mambaout', 'test_mambaout', 447560),
    ('byobnet', 'test_byobnet', 456856),
    ('resnet', 'test_resnet', 469688),
    ('starnet', 'starnet_s050', 542728),
    ('maxxvit', 'test_coatnet', 575480),
    ('vision_transformer_relpos', 'test_vit_relpos', 850147),
    ('dla', 'dla46x_c', 1068440),
    ('mobilevit', 'mobilevit_xxs', 1272024),
    ('edgenext', 'edgenext_xx_small', 1327216),
    ('mobilenetv3', 'mobilenetv3_small_050', 1593224),
    ('vovnet', 'ese_vovnet19b_slim_dw', 1897752),
    ('repghost', 'repghostnet_050', 2313968),
    ('efficientvit_msra', 'efficientvit_m0', 2349436),
    ('ghostnet', 'ghostnet_050', 2587292),
    ('regnet', 'regnetx_002', 2684792),
    ('cspnext', 'cspnext_tiny', 2733700),
    ('iformer', 'iformer_t', 2886456),
    ('xcit', 'xcit_nano_12_p8_224', 3049016),
    ('cspnet', 'cs3darknet_focus_s', 3274728),
    ('efficientvit_mit', 'efficientvit_b0', 3410008),
    ('swiftformer', 'swiftformer_xs', 3475360),
    ('efficientformer_v2', 'efficientformerv2_s0', 3600256),
    ('pvt_v2', 'pvt_v2_b0', 3666760),
    ('fasternet', 'fasternet_t0', 3905500),
    ('fastvit', 'fastvit_t8', 4026232),
    ('lcnetv2', 'lcnetv2_small', 4128552),
    ('inception_next', 'inception_next_atto', 4156520),
    ('rexnet', 'rexnet_100', 4796873),
    ('pit', 'pit_ti_224', 4847272),
    ('hardcorenas', 'hardcorenas_b', 5176544),
    ('repvit', 'repvit_m1', 5485248),
    ('eva', 'vit_tiny_patch16_dinov3_qkvb', 5489664),
    ('coat', 'coat_tiny', 5498540),
    ('convit', 'convit_tiny', 5710512),
    ('deit', 'deit_tiny_patch16_224', 5717416),
    ('mlp_mixer', 'gmlp_ti16_224', 5867328),
    ('hgnet', 'hgnetv2_b0', 5996550),
    ('shvit', 'shvit_s1', 6330808),
    ('vision_transformer_hybrid', 'vit_tiny_r_s16_p8_224', 6337704),
    ('cpubone', 'cpubone_nano', 6519700),
    ('efficientvim', 'efficientvim_m1', 6679458),
    ('crossvit', 'crossvit_tiny_240', 7014800),
    ('levit', 'levit_128s', 7777058),
    ('densenet', 'densenet121', 7978856),
    ('byoanet', 'halonet_h1', 8100056),
    ('dpn', 'dpn48b', 9126226),
    ('visformer', 'visformer_tiny', 10321368),
    ('resnest', 'resnest14d', 10611688),
    ('csatv2', 'csatv2', 11103444),
    ('resnetv2', 'resnetv2_18', 11687720),
    ('senet', 'legacy_seresnet18', 11778592),
    ('metaformer', 'poolformerv2_s12', 11891712),
    ('cait', 'cait_xxs24_224', 11956264),
    ('sknet', 'skresnet18', 11958056),
    ('gcvit', 'gcvit_xxtiny', 11995428),
    ('tiny_vit', 'tiny_vit_5m_224', 12082725),
    ('efficientformer', 'efficientformer_l1', 12289928),
    ('hrnet', 'hrnet_w18_small', 13187464),
    ('lowformer', 'lowformer_b0', 14100472),
    ('nest', 'nest_tiny', 17057608),
    ('convmixer', 'convmixer_768_32', 21110248),
    ('vitamin', 'vitamin_small_224', 22173376),
    ('xception', 'legacy_xception', 22855952),
    ('tnt', 'tnt_s_legacy_patch16_224', 23755336),
    ('inception_v3', 'inception_v3', 23834568),
    ('rdnet', 'rdnet_tiny', 23863008),
    ('twins', 'twins_svt_small', 24060776),
    ('mvitv2', 'mvitv2_tiny', 24173320),
    ('res2net', 'res2next50', 24671464),
    ('volo', 'volo_d1_224', 26632040),
    ('hieradet_sam2', 'sam2_hiera_tiny', 26851008),
    ('xception_aligned', 'xception41p', 26907752),
    ('sequencer', 'sequencer2d_s', 27651688),
    ('hiera', 'hiera_tiny_224', 27910216),
    ('swin_transformer', 'swin_tiny_patch4_window7_224', 28288354),
    ('swin_transformer_v2_cr', 'swinv2_cr_tiny_224', 28332124),
    ('swin_transformer_v2', 'swinv2_tiny_window16_256', 28347154),
    ('davit', 'davit_tiny', 28360168),
    ('focalnet', 'focalnet_tiny_srf', 28427116),
    ('selecsls', 'selecsls42', 30354952),
    ('tresnet', 'tresnet_m', 31389032),
    ('nextvit', 'nextvit_small', 31763368),
    ('inception_v4', 'inception_v4', 42679816),
    ('inception_resnet_v2', 'inception_resnet_v2', 55843464),
    ('mobilenetv5', 'mobilenetv5_base', 82647976),
    ('pnasnet', 'pnasnet5large', 86057668),
    ('vision_transformer_sam', 'samvit_base_patch16_224', 86457064),
    ('naflexvit', 'naflexvit_base_patch16_parfac_gap', 86461672),
    ('beit', 'beit_base_patch16_224', 86530984),
    ('qwen3_vit', 'qwen3_vit_88m', 87414528),
    ('nasnet', 'nasnetalarge', 88753150),
    ('vgg', 'vgg11', 132863336),
    ('gemma4_vit', 'gemma4_vit_167m', 167364608),
    ('deepseek_vit', 'deepseek_vit_412m', 411842560),
)
"""(timm module, its smallest architecture, parameter count) for every timm model module, the
smallest by parameter count (ties: the first name), counted on a ``meta`` build with the
initialisers skipped, so the whole selection takes about a minute and allocates nothing. Built
by ``smallest_timm_architectures()``: paste its ``format_selection()`` output here when timm is
upgraded (``test_timm_selection_is_current`` fails until then)."""

TIMM_SKIPPED: dict[str, str] = {}
"""Modules left out of the sweep, with the reason: the huge ones, added below from ``TIMM_SMALLEST``."""

DISTILLED = ("efficientformer_l1", "efficientformerv2_s0", "levit_128s", "swiftformer_xs")
"""Swept architectures with two classifier heads (``head`` and ``head_dist``), both replaced."""

BROKEN: dict[str, str] = {}
"""Swept architectures zooadapt fails to load at all, whatever the checkpoint: every case of
theirs is ``xfail(strict=True)`` with this reason until zooadapt is fixed."""

FAST_BUILTIN = ("mobilenet_v3_small", "mobilenet_v1")
"""The built-in architectures of the fast subset: the two smallest that load fast (ResNet-18 is
swept in the slow part, and the flagship tests load it everywhere else)."""
FAST_TIMM = ("test_convnext", "test_vit", "test_efficientnet")
"""The timm architectures of the fast subset: timm's own test models (under 0.4M parameters),
a CNN, a ViT (fused attention, position embedding) and an EfficientNet (depthwise blocks)."""


def builtin_families() -> tuple[str, ...]:
    """The families registered by zooadapt's built-in plugins, timm left out (swept separately)."""
    from zooadapt.host.plugin_manager import BUILTIN_PLUGINS

    providers = {m.rsplit(".", 1)[-1] for m in BUILTIN_PLUGINS}
    registry = get_registry()
    return tuple(sorted(n for n, f in registry.families.items() if f.provider in providers and n != "timm"))


def builtin_architectures() -> list[str]:
    """Every registry model of a built-in family (``resnet18`` … ``alexnet``), in registry order."""

    families = set(builtin_families())
    return [name for name, entry in get_registry().models.items() if entry.family in families]


SWEPT_TIMM = 40
"""How many timm model modules the sweeps cover by default: the 40 smallest (smallest
architecture of each), which keeps the whole suite inside CI's time; ZOOADAPT_SWEEP=all sweeps
every module in ``TIMM_SMALLEST`` (83 here, about twice the time)."""


def timm_architectures() -> list[str]:
    """The swept timm architectures: each module's smallest, huge ones left out, the
    ``SWEPT_TIMM`` smallest unless ZOOADAPT_SWEEP=all."""
    import os

    found = [arch for module, arch, _ in TIMM_SMALLEST if module not in TIMM_SKIPPED]
    return found if os.environ.get("ZOOADAPT_SWEEP") == "all" else found[:SWEPT_TIMM]


def swept_architectures() -> list[str]:
    return builtin_architectures() + timm_architectures()


def fast_architectures() -> list[str]:
    return [*FAST_BUILTIN, *FAST_TIMM]


def smallest_timm_architectures() -> tuple[tuple[str, str, int], ...]:
    """Recompute ``TIMM_SMALLEST`` for the installed timm: every architecture of every model
    module built on ``meta`` (zooadapt's own initialiser skipping on top, so nothing runs per
    tensor) and its parameters counted once each (tied ones once). An architecture timm cannot
    build is passed over (``unbuildable_timm_architectures`` names them)."""
    best: dict[str, tuple[int, str]] = {}
    for module in _timm_modules():
        for arch in _timm_models(module):
            count = _timm_parameter_count(arch)
            if count is not None and (module not in best or (count, arch) < best[module]):
                best[module] = (count, arch)
    return tuple(sorted(((m, a, n) for m, (n, a) in best.items()), key=lambda row: (row[2], row[1])))


def unbuildable_timm_architectures() -> dict[str, str]:
    """Architectures timm lists but cannot build (name -> the error), for the report."""
    out = {}
    for module in _timm_modules():
        for arch in _timm_models(module):
            try:
                _build_timm_on_meta(arch)
            except Exception as exc:  # noqa: BLE001  (any failure of timm's own constructor)
                out[arch] = f"{type(exc).__name__}: {str(exc)[:120]}"
    return out


def format_selection(rows: Iterable[tuple[str, str, int]]) -> str:
    """``rows`` as the Python literal of ``TIMM_SMALLEST``."""
    return "(\n" + "".join(f"    ({m!r}, {a!r}, {n}),\n" for m, a, n in rows) + ")"


def _timm_modules() -> list[str]:
    import timm

    return sorted(timm.list_modules())


def _timm_models(module: str) -> list[str]:
    import timm

    return sorted(timm.list_models(module=module))


def _build_timm_on_meta(arch: str) -> nn.Module:
    import warnings

    import timm
    import torch

    from zooadapt.loading.meta_build import skip_parameter_init

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"), skip_parameter_init():
            return timm.create_model(arch, pretrained=False)


def _timm_parameter_count(arch: str) -> int | None:
    try:
        model = _build_timm_on_meta(arch)
    except Exception:  # noqa: BLE001  (unbuildable_timm_architectures reports these)
        return None
    return sum(p.numel() for p in model.parameters())


def sweep_cases(test: str, variants: Iterable[str], fast: Mapping[str, str],
                known: Mapping[tuple[str, str, str], str]) -> list[Any]:
    """pytest params ``(arch, variant)`` for every swept architecture and variant, id
    ``arch-variant``: the case ``fast[arch] == variant`` runs in the fast subset, every other is
    marked slow; a case of a ``BROKEN`` architecture, or listed in ``known`` as ``(test, arch,
    variant) -> reason``, is ``xfail(strict=True)`` with its reason."""
    import pytest

    out = []
    for arch in swept_architectures():
        for variant in variants:
            marks: list[Any] = [] if fast.get(arch) == variant else [pytest.mark.slow]
            reason = BROKEN.get(arch) or known.get((test, arch, variant))
            if reason is not None:
                marks.append(pytest.mark.xfail(strict=True, reason=reason))
            out.append(pytest.param(arch, variant, marks=marks, id=f"{arch}-{variant}"))
    return out


# -- (b) seeded weights from the zoo's own builder -------------------------------------------------


def entry_and_family(name: str) -> tuple[Any, Any]:
    """The registry entry and family zooadapt resolves ``name`` to."""

    registry = get_registry()
    entry = registry.entry(name)
    return entry, registry.family(entry.family)


def build(name: str, num_classes: int | None = None, *, meta: bool = False) -> nn.Module:
    """``name``'s architecture built as ``zooadapt.load`` builds it (the family's ``build`` with
    the entry's architecture and build options), with ``num_classes`` (default: the entry's),
    on ``meta`` or with real (initialised) tensors."""
    import warnings

    import torch

    entry, family = entry_and_family(name)
    classes = entry.num_classes if num_classes is None else num_classes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if meta:
            with torch.device("meta"):
                return family.build(entry.arch, num_classes=classes, **dict(entry.build_kwargs))
        return family.build(entry.arch, num_classes=classes, **dict(entry.build_kwargs))


@functools.lru_cache(maxsize=6)
def seeded_weights(name: str, seed: int, num_classes: int | None = None) -> dict[str, torch.Tensor]:
    """Seeded tensors for every state-dict entry of ``name``'s architecture (``zooadapt.testing.
    seeded_state_dict`` on a ``meta`` build): one copy of the network. A parameter the model
    shares between modules (CoaT's convolutional position encodings) is one tensor under each of
    its names, as in the model's own ``state_dict()``. Do not modify the result."""
    from zooadapt.testing import seeded_state_dict

    return seeded_state_dict(build(name, num_classes, meta=True), seed)


def seeded_model(name: str, num_classes: int, seed: int) -> nn.Module:
    """A real model of ``name``'s architecture with ``num_classes`` classes and seeded weights,
    in eval mode: a model someone fine-tuned and saved."""
    from zooadapt.testing import seeded_state_dict

    model = build(name, num_classes)
    model.load_state_dict(seeded_state_dict(model, seed))
    return model.eval()


def shapes_of(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """A state dict of shapes (what ``zooadapt.plan_for`` needs to plan), in the same order."""
    return {k: tuple(v.shape) for k, v in state.items()}


def input_size(name: str, model: nn.Module | None = None) -> tuple[int, int, int]:
    """A valid input size (C, H, W) for ``name``'s architecture: timm's default input size from
    its pretrained config; 64x64 for the built-in torchvision-style families (all pool adaptively)."""
    entry, _ = entry_and_family(name)
    if entry.family != "timm":
        return (3, 64, 64)
    import timm.data

    return tuple(timm.data.resolve_data_config({}, model=model if model is not None else build(name, meta=True))[
        "input_size"])


def sample_input(name: str, model: nn.Module | None = None, seed: int = 0) -> torch.Tensor:
    import torch

    return torch.randn(1, *input_size(name, model), generator=torch.Generator().manual_seed(seed))


def arch_seed(name: str, salt: str = "") -> int:
    """A seed of its own for each architecture (and purpose), the same in every run."""
    return zlib.crc32(f"{salt}:{name}".encode())


def class_count(name: str) -> int:
    """The class count ``name`` is "fine-tuned" to: 2..50, seeded per architecture, never the
    registry entry's own count (else there would be no head to keep)."""
    entry, _ = entry_and_family(name)
    choices = [n for n in range(2, 51) if n != entry.num_classes]
    return random.Random(arch_seed(name, "classes")).choice(choices)


# -- (c) wrapper prefixes -----------------------------------------------------------------------

REAL_WRAPPERS = ("module.", "model.", "_orig_mod.", "encoder_q.", "encoder_k.", "online_network.",
                 "target_network.", "student.", "backbone.", "net.")
"""Prefixes training code really puts in front of a network's keys: DataParallel/DDP, Lightning,
torch.compile, MoCo's query and key encoders, BYOL's online and target networks, DINO's student,
detectors' backbones, and the common ``net``."""

REAL_PAIRS = (("module.encoder_q.", "module.encoder_k."), ("encoder_q.", "encoder_k."),
              ("online_network.", "target_network."), ("module.online_network.", "module.target_network."),
              ("student.", "backbone."), ("model.", "net."), ("_orig_mod.", "module."))
"""Two live copies under names real checkpoints use together (MoCo, BYOL; the rest mixed)."""

EMA_WRAPPERS = ("model_ema.", "ema.", "teacher.", "ema_model.", "module.teacher.", "net_ema.", "model.ema.",
                "teacher_backbone.")
"""Prefixes named, by the documented convention, as an EMA or teacher copy (a component ``ema``
or ``teacher``, or starting ``ema_``/``teacher_``, or ending ``_ema``/``_teacher``)."""

_COMPONENT = r"[A-Za-z_][A-Za-z0-9_]{0,9}"


def is_ema_component(part: str) -> bool:
    """The documented convention, read independently of zooadapt's code."""
    p = part.lower()
    return p in ("ema", "teacher") or p.startswith(("ema_", "teacher_")) or p.endswith(("_ema", "_teacher"))


def is_ema_prefix(prefix: str) -> bool:
    return any(is_ema_component(p) for p in prefix.rstrip(".").split("."))


def key_components(state: Iterable[str]) -> frozenset[str]:
    """Every dotted component of a model's keys: random wrapper names avoid these, since a
    wrapper named like one of the model's own modules makes keys that read as that module's."""
    return frozenset(part for key in state for part in key.split("."))


def components_of(prefixes: Iterable[str]) -> frozenset[str]:
    return frozenset(part for p in prefixes for part in p.rstrip(".").split("."))


def random_component(rng: random.Random) -> str:
    first = rng.choice(string.ascii_lowercase + "_")
    rest = "".join(rng.choice(string.ascii_lowercase + string.digits + "_") for _ in range(rng.randint(1, 8)))
    return first + rest


def random_prefix(rng: random.Random, *, levels: int | None = None, avoid: Iterable[str] = (),
                  ema: bool = False) -> str:
    """A random wrapper prefix of 1-3 levels (``levels`` to fix it), ending in a dot. Live by
    default (no component reads as EMA); ``ema=True``: one random component made EMA-named."""
    avoid = frozenset(avoid)
    n = levels if levels is not None else rng.randint(1, 3)
    while True:
        parts = [random_component(rng) for _ in range(n)]
        if ema:
            at = rng.randrange(n)
            parts[at] = rng.choice(["ema", "teacher", f"{parts[at]}_ema", f"ema_{parts[at]}",
                                    f"teacher_{parts[at]}", f"{parts[at]}_teacher"])
        prefix = ".".join(parts) + "."
        if not (set(parts) & avoid) and is_ema_prefix(prefix) == ema:
            return prefix


def prefix_pair(rng: random.Random, *, avoid: Iterable[str] = ()) -> tuple[str, str]:
    """Two distinct random live prefixes, neither a prefix of the other."""
    while True:
        a, b = random_prefix(rng, avoid=avoid), random_prefix(rng, avoid=avoid)
        if not (a.startswith(b) or b.startswith(a)):
            return a, b


def ema_pair(rng: random.Random, *, avoid: Iterable[str] = ()) -> tuple[str, str]:
    """(an EMA-named prefix, a live prefix), neither a prefix of the other: half the time names
    real training code uses, else random ones."""
    while True:
        if rng.random() < 0.5:
            ema = rng.choice(EMA_WRAPPERS)
            live = rng.choice([w for w in REAL_WRAPPERS if not is_ema_prefix(w)])
        else:
            ema, live = random_prefix(rng, avoid=avoid, ema=True), random_prefix(rng, avoid=avoid)
        if not (ema.startswith(live) or live.startswith(ema)):
            return ema, live


def prefixes(*, avoid: Iterable[str] = (), ema: bool = False, max_levels: int = 3) -> SearchStrategy[str]:
    """Hypothesis: wrapper prefixes of 1-``max_levels`` levels, real names among the random ones;
    live (no EMA-named component) unless ``ema``, then with at least one EMA-named component."""
    from hypothesis import strategies as st

    avoid = frozenset(avoid)
    component = st.one_of(st.sampled_from([w.rstrip(".") for w in REAL_WRAPPERS]),
                          st.from_regex(_COMPONENT, fullmatch=True), st.sampled_from(["0", "1", "_"]))
    ema_component = st.one_of(st.sampled_from(["ema", "teacher", "model_ema", "ema_model", "net_teacher"]),
                              st.from_regex(_COMPONENT, fullmatch=True).map(lambda c: f"{c}_ema"))
    levels = st.lists(component, min_size=1, max_size=max_levels)
    if ema:
        levels = st.tuples(st.lists(component, max_size=max_levels - 1), ema_component,
                           st.integers(0, max_levels - 1)).map(lambda t: [*t[0][:t[2]], t[1], *t[0][t[2]:]])
    return levels.filter(lambda parts: not (set(parts) & avoid)).map(lambda parts: ".".join(parts) + ".").filter(
        lambda p: is_ema_prefix(p) == ema)


def prefix_pairs(*, avoid: Iterable[str] = ()) -> SearchStrategy[tuple[str, str]]:
    """Hypothesis: two distinct live prefixes, neither a prefix of the other (nested ones, ``a.``
    and ``a.b.``, are the deterministic ``NESTED_PAIRS``)."""
    from hypothesis import strategies as st

    live = prefixes(avoid=avoid)
    return st.tuples(live, live).filter(lambda ab: not (ab[0].startswith(ab[1]) or ab[1].startswith(ab[0])))


NESTED_PAIRS = (("a.", "a.b."), ("xx.", "xx.yy.zz."), ("run.", "run.module."), ("model.", "model.module."),
                ("module.", "module.module."), ("net.", "net._orig_mod."), ("model.", "model.net."))
"""One copy's prefix inside the other's: a copy under ``a.`` and one under ``a.b.`` (a wrapper
holding the network and, as a sub-module, a wrapped second copy)."""


def wrapped(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {prefix + k: v for k, v in state.items()}


def two_copies(first: Mapping[str, Any], first_prefix: str, second: Mapping[str, Any],
               second_prefix: str) -> dict[str, Any]:
    """One state dict holding both copies, each under its prefix (file order: first, then second)."""
    return {**wrapped(first, first_prefix), **wrapped(second, second_prefix)}


# -- (d) key orders -------------------------------------------------------------------------------

def numbered_modules(state: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict with each module named by its position among the state dict's modules
    (``0.weight``, ``1.running_mean``...), in the same order: names that fit no model and no
    rule, as lightly's ``nn.Sequential(*list(resnet.children())[:-1])`` backbones have, so only
    a pairing by order and tensor shapes can read them."""
    positions: dict[str, int] = {}
    out = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        out[f"{positions.setdefault(module, len(positions))}.{leaf}"] = value
    return out


ORDERS = ("file", "sorted", "shuffled")


def in_order(state: Mapping[str, Any], order: str, seed: int = 0) -> dict[str, Any]:
    """``state`` with its keys in ``order``: as given, sorted, or shuffled with ``seed``."""
    items = list(state.items())
    if order == "sorted":
        items.sort(key=lambda kv: kv[0])
    elif order == "shuffled":
        random.Random(seed).shuffle(items)
    elif order != "file":
        raise ValueError(order)
    return dict(items)


# -- (e) file forms -------------------------------------------------------------------------------

FORMS = ("pth", "training", "safetensors", "transformers_dir")


def placeholder_labels(n: int) -> list[str]:
    """transformers' default names for a head nobody named."""
    return [f"LABEL_{i}" for i in range(n)]


def class_names(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(['cat', 'dog', 'oak', 'elm', 'rust', 'scab'])}_{i}" for i in range(n)]


def write_checkpoint(state: Mapping[str, torch.Tensor], form: str, folder: Path,
                     labels: list[str] | None = None) -> Path:
    """Write ``state`` in ``form`` into ``folder`` (created) and return what to pass as ``weights=``.

    ``pth``: ``torch.save(state)``; ``training``: ``{"state_dict": state, "epoch", "optimizer"}``
    as training scripts save it; ``safetensors``: a safetensors file; ``transformers_dir``: the
    folder itself, holding ``model.safetensors`` and ``config.json``. With ``labels``, every form
    gets a transformers ``config.json`` (``id2label``) beside the file.
    """
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    if form == "pth":
        target = folder / "weights.pth"
        torch.save(dict(state), target)
    elif form == "training":
        target = folder / "checkpoint.pth.tar"
        torch.save({"state_dict": dict(state), "epoch": 7, "optimizer": {}}, target)
    elif form in ("safetensors", "transformers_dir"):
        path = folder / ("model.safetensors" if form == "transformers_dir" else "weights.safetensors")
        save_file(_one_name_per_tensor(state), str(path))
        target = folder if form == "transformers_dir" else path
    else:
        raise ValueError(form)
    if labels is not None or form == "transformers_dir":
        config: dict[str, Any] = {"architectures": ["ForImageClassification"], "model_type": "custom"}
        if labels is not None:
            config["id2label"] = {str(i): name for i, name in enumerate(labels)}
            config["label2id"] = {name: i for i, name in enumerate(labels)}
        (folder / "config.json").write_text(json.dumps(config, indent=2))
    return target


def _one_name_per_tensor(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A tensor shared under several names once, under its first name: safetensors refuses
    shared tensors, and its ``save_model`` (like transformers' ``save_pretrained``) keeps one."""
    seen: set[tuple[int, tuple[int, ...], tuple[int, ...]]] = set()
    out = {}
    for key, value in state.items():
        ident = (value.untyped_storage().data_ptr() + value.storage_offset() * value.element_size(),
                 tuple(value.shape), tuple(value.stride()))
        if ident not in seen:
            seen.add(ident)
            out[key] = value.contiguous()
    return out


# -- reading zooadapt's messages --------------------------------------------------------------------

_CHOICE = re.compile(r"^\s+(?:'(?P<prefix>[^']*)'|(?P<plain>the keys as they are)): .*?load it with "
                     r"(?P<line>rules=\[.*\])\s*$", re.M)


def rule_lines(message: str) -> dict[str, list[str]]:
    """``prefix -> rules`` for each copy an ``AmbiguousCheckpointError`` lists, parsed from its
    message (``'enc_q.': 100.0% of the backbone; load it with rules=["strip:enc_q."]``); the
    copy under no prefix ("the keys as they are") is ``""``."""
    import ast

    return {m["prefix"] or "": ast.literal_eval(m["line"][len("rules="):]) for m in _CHOICE.finditer(message)}


_TWICE = re.compile(r"^\s+(?P<slot>\S+): from '(?P<a>[^']+)' and from '(?P<b>[^']+)'\s*$", re.M)


def duplicate_lines(message: str) -> list[tuple[str, str, str]]:
    """(model key, checkpoint key, the other checkpoint key) for each slot a "fills N tensors …
    twice" refusal lists."""
    return [(m["slot"], m["a"], m["b"]) for m in _TWICE.finditer(message)]


# the precomputed selection ---------------------------------------------------------------------------

for _module, _arch, _count in TIMM_SMALLEST:
    if _count > MAX_TIMM_PARAMS:
        TIMM_SKIPPED[_module] = f"{_arch}: {_count / 1e6:.0f}M parameters, over MAX_TIMM_PARAMS"

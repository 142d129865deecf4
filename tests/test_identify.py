"""``zooadapt.identify``, ``load(weights=FILE)`` without a name, and "this checkpoint fits …", by generation.

The files are generated, not collected: every built-in (and plugin) architecture, and the
smallest timm architecture of every timm model module, is built with seeded random weights and
saved in one of the ways users save (a state dict, safetensors, under DataParallel's
``module.``). Each must be identified as itself (or as a name with exactly the same tensors),
and loading it into its nearest neighbours in the index (another depth, width, stem, group
count) must fail with an error that names it. The fast subset runs a handful of each.
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch

import zooadapt
from zooadapt.errors import AmbiguousCheckpointError, IncompatibleCheckpointError, InvalidArgumentError
from zooadapt.loading import signature_index
from zooadapt.loading.identification import architecture_for
from zooadapt.loading.signatures import wanted
from zooadapt.plugin_api import get_registry
from zooadapt.testing import seeded_state_dict

FAST_MODULES = ("resnet", "vision_transformer")
"""timm model modules whose smallest architecture the fast subset checks (the rest: slow)."""
FAST_BUILTINS = ("resnet18", "mobilenet_v3_small", "squeezenet1_1")
MAX_ELEMENTS = 100_000_000
"""Modules whose smallest architecture is larger are left out of the sample (a random build of
400M parameters is a minute of a test run, and says nothing a smaller one does not)."""


@pytest.fixture
def fresh_index():
    """The index read as a new process would (for tests that replace the shipped file)."""
    signature_index.clear_index()
    yield
    signature_index.clear_index()


@pytest.fixture(scope="module")
def resnet18() -> torch.nn.Module:
    return _build("resnet18")


def _index():
    return signature_index.get_index(progress=False)


def _elements(name: str, index=None) -> int:
    return sum(math.prod(s) for s in (index or _index()).signatures[name].shapes)


def _group(name: str) -> set[str]:
    """The names whose signature is exactly ``name``'s (any of them is a right answer)."""
    index = _index()
    same = index.signatures[name].same_as
    return {n for n, s in index.signatures.items() if s.same_as == same}


@functools.lru_cache(maxsize=1)
def _timm_sample() -> list[tuple[str, str]]:
    """(module, its smallest indexed architecture) for every timm model module, sorted by module."""
    import timm

    index = _index()
    out = []
    for module in sorted(timm.list_modules()):
        names = [n for n in timm.list_models(module=module)
                 if n in index.signatures and index.signatures[n].family == "timm"]
        if names:
            best = min(names, key=lambda n: (_elements(n, index), n))
            if _elements(best, index) <= MAX_ELEMENTS:
                out.append((module, best))
    return out


def _builtins() -> list[str]:
    return [w.name for w in wanted(listed_names=False)]


def _build(name: str) -> torch.nn.Module:
    """The architecture ``name`` as its own library builds it (not zooadapt's meta build), seeded."""
    registry = get_registry()
    entry = registry.entry(name)
    if entry.family == "timm":
        import timm

        model = timm.create_model(name, pretrained=False)
    else:
        model = registry.family(entry.family).build(entry.arch, num_classes=entry.num_classes,
                                                    **dict(entry.build_kwargs))
    model.load_state_dict(seeded_state_dict(model, seed=len(name)))
    return model.eval()


def _save(model: torch.nn.Module, path: Path, how: str) -> Path:
    state = model.state_dict()
    if how == "safetensors":
        from safetensors.torch import save_file

        path = path.with_suffix(".safetensors")
        save_file({k: v.clone().contiguous() for k, v in state.items()}, str(path))  # tied weights: two copies
        return path
    if how == "module.":
        state = {f"module.{k}": v for k, v in state.items()}
    path = path.with_suffix(".pth")
    torch.save(state, path)
    return path


HOWS = ("state dict", "safetensors", "module.")


def _identified_as_itself(name: str, path: Path) -> None:
    found = zooadapt.identify(path)
    best = found.best
    assert best is not None, f"{name}: no answer"
    named = {best.name, *best.same_signature}
    assert named & _group(name), f"{name} identified as {best}"
    assert best.complete and best.share == 1.0, str(found)
    assert not (named - _group(name)), f"{best} groups names whose signature differs from {name}'s"


# -- the index ------------------------------------------------------------------------------------


def test_the_index_describes_every_loadable_name():
    index = _index()
    names = {w.name for w in wanted()}
    assert names == set(index.signatures) | set(index.failures)
    assert len(index.signatures) > 1200  # every timm architecture but those that do not build on meta
    assert all(why.strip() for why in index.failures.values())
    assert "deit_tiny_distilled_patch16_224" in index.signatures  # two heads, both replaced
    groups = Counter(s.same_as for s in index.signatures.values())
    shared = [c for c in groups.values() if c > 1]
    assert 20 < len(shared) < 200  # e.g. resnet50 / resnetaa50 / resnetblur50: the same tensors


def test_the_shipped_index_is_small_and_names_its_timm_version():
    import timm

    path = signature_index.shipped_path()
    assert path.stat().st_size < 3_000_000
    shipped = signature_index.read_index(path)
    assert {s.source for s in shipped.signatures.values()} == {"zooadapt", f"timm=={timm.__version__}"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in ("resnet18", "alexnet") else pytest.mark.slow)
                                  for n in ("resnet18", "resnet50", "resnet152", "mobilenet_v1", "mobilenet_v2",
                                            "mobilenet_v3_large", "mobilenet_v3_small", "alexnet")])
def test_a_shipped_signature_is_what_load_builds(name):
    from zooadapt.loading.signatures import compute

    want = next(w for w in wanted() if w.name == name)
    assert compute(want) == signature_index.read_index(signature_index.shipped_path()).signatures[name]


@pytest.mark.slow
def test_identical_signatures_are_identical_state_dicts():
    """Names the index groups as the same tensors build state dicts with the same keys and shapes."""
    index = _index()
    groups: dict[object, list[str]] = {}
    for name, sig in index.signatures.items():
        groups.setdefault(sig.same_as, []).append(name)
    pairs = sorted(sorted(g)[:2] for g in groups.values() if len(g) > 1)[::8]
    assert len(pairs) >= 8
    for a, b in pairs:
        shapes = [{k: tuple(v.shape) for k, v in _build_meta(n).state_dict().items()} for n in (a, b)]
        assert shapes[0] == shapes[1], (a, b)


def _build_meta(name: str) -> torch.nn.Module:
    registry = get_registry()
    entry = registry.entry(name)
    with torch.device("meta"):
        return registry.family(entry.family).build(entry.arch, num_classes=entry.num_classes,
                                                   **dict(entry.build_kwargs))


# -- every architecture is identified as itself --------------------------------------------------------


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FAST_BUILTINS else pytest.mark.slow)
                                  for n in _builtins()])
def test_every_builtin_and_plugin_architecture_is_identified(name, tmp_path):
    model = _build(name)
    for how in HOWS if name == "resnet18" else HOWS[_builtins().index(name) % 3:][:1]:
        _identified_as_itself(name, _save(model, tmp_path / how.strip("."), how))


def _sample_params():
    out = []
    for i, (module, name) in enumerate(_timm_sample()):
        marks = () if module in FAST_MODULES else pytest.mark.slow
        out.append(pytest.param(name, HOWS[i % 3], marks=marks, id=f"{module}:{name}"))
    return out


def test_the_timm_sample_spans_the_model_modules():
    sample = _timm_sample()
    assert len(sample) >= 80 and len({m for m, _ in sample}) == len(sample)


@pytest.mark.parametrize("name, how", _sample_params())
def test_the_smallest_architecture_of_every_timm_module_is_identified(name, how, tmp_path):
    _identified_as_itself(name, _save(_build(name), tmp_path / "model", how))


def test_a_checkpoint_with_another_head_is_still_identified(tmp_path):
    import timm

    model = timm.create_model("test_resnet", num_classes=7)
    path = _save(model, tmp_path / "finetuned", "state dict")
    best = zooadapt.identify(path).best
    assert best is not None and best.name == "test_resnet" and best.complete and best.loaded < 1.0


@pytest.mark.slow
def test_a_transformers_vit_is_identified_through_its_fused_layout(tmp_path):
    """transformers keeps ViT's query, key and value apart: the shape multiset alone would not
    match timm's qkv, so the layout's fusion is applied before bounding."""
    from safetensors.torch import save_file
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                       image_size=224, patch_size=16, layer_norm_eps=1e-6)
    state = ViTForImageClassification(config).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    best = zooadapt.identify(tmp_path / "model.safetensors").best
    assert best is not None and "vit_tiny_patch16_224" in {best.name, *best.same_signature} and best.complete


# -- near neighbours: the error names the right architecture -----------------------------------------

NAMED_NEIGHBOURS = [
    ("resnet18", "resnet34"), ("resnet50", "resnet50d"), ("resnet50", "wide_resnet50_2"),
    ("resnet50", "resnext50_32x4d"), ("resnet50", "resnet101"), ("resnet50", "mobilenet_v2"), ("resnet50d", "resnet50"),
    ("wide_resnet50_2", "resnet50"), ("resnext50_32x4d", "resnet50"), ("efficientnet_b2", "efficientnet_b0"),
    ("vit_base_patch16_224", "vit_small_patch16_224"), ("convnext_tiny", "convnext_small"),
]


def _neighbours(name: str, k: int = 3) -> list[str]:
    """The ``k`` architectures of the index whose shape multisets are closest to ``name``'s and
    whose signature differs (equal multisets first: the same tensors under other names)."""
    index = _index()
    mine = Counter(index.signatures[name].shapes)
    scored = []
    for other, sig in index.signatures.items():
        if sig.same_as == index.signatures[name].same_as:
            continue
        theirs = Counter(sig.shapes)
        scored.append((sum((mine & theirs).values()) / sum((mine | theirs).values()), other))
    return [other for score, other in sorted(scored, key=lambda s: (-s[0], s[1]))[:k] if score > 0.5]


def _loads_only_where_it_fits(right: str, neighbour: str, path: Path) -> None:
    try:
        model = zooadapt.load(neighbour, weights=path)
    except AmbiguousCheckpointError:
        pass  # the planner found several copies for the neighbour: refused before any diagnosis
    except IncompatibleCheckpointError as exc:
        names = _group(right)
        assert any(f"load it as {n!r}" in str(exc) for n in names), f"{neighbour}: {exc}"
    else:  # it loaded: paired by order (identify prefers the file's own names), converted by timm's own
        # checkpoint filter (a 224 ViT's position embedding resampled for 384, as timm's pretrained load
        # does; the report says so), or identify lists it
        notes = model.zooadapt.report.plan.notes
        if any("paired by order" in note or "checkpoint_filter_fn" in note for note in notes):
            return
        found = zooadapt.identify(path, limit=20)
        assert any(neighbour in {m.name, *m.same_signature} and m.complete for m in found), (neighbour, found)


@pytest.mark.parametrize("right, neighbour", [
    pytest.param(r, n, marks=() if (r, n) == ("resnet18", "resnet34") else pytest.mark.slow)
    for r, n in NAMED_NEIGHBOURS])
def test_a_named_near_neighbour_points_at_the_right_architecture(right, neighbour, tmp_path):
    path = _save(_build(right), tmp_path / right, "safetensors")
    with pytest.raises(IncompatibleCheckpointError) as err:
        zooadapt.load(neighbour, weights=path)
    assert f"load it as {right!r}" in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for _, n in _timm_sample()][::2] + ["resnet34", "mobilenet_v2"])
def test_each_sampled_file_loaded_as_its_nearest_neighbours_names_itself(name, tmp_path):
    path = _save(_build(name), tmp_path / name, "state dict")
    for neighbour in _neighbours(name):
        _loads_only_where_it_fits(name, neighbour, path)


def test_the_diagnosis_never_names_the_model_being_loaded(tmp_path):
    from zooadapt.loading.matching import match_checkpoint

    shapes = dict(_index().signatures["resnet50"].state_shapes)
    named = {m.name for m in match_checkpoint(shapes, fitting_only=True, min_share=0.9, exclude=("resnetaa50",))}
    assert not named & _group("resnet50")
    assert {m.name for m in match_checkpoint(shapes, fitting_only=True, min_share=0.9)} & _group("resnet50")


# -- load(weights=FILE) without a name -------------------------------------------------------------------


def test_load_without_a_name_builds_the_architecture_the_file_fits(tmp_path, resnet18):
    source = resnet18
    path = _save(source, tmp_path / "r18", "module.")
    model = zooadapt.load(weights=path).eval()
    assert model.zooadapt.name == "resnet18"
    assert "architecture 'resnet18' identified from the file's tensors" in str(model.zooadapt.report)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x))


@pytest.mark.parametrize("name", ["test_vit", pytest.param("efficientnet_b0", marks=pytest.mark.slow),
                                  pytest.param("resnet50d", marks=pytest.mark.slow)])
def test_load_without_a_name_replaces_the_head_and_keeps_the_features(name, tmp_path):
    source = _build(name)
    path = _save(source, tmp_path / name, "safetensors")
    model = zooadapt.load(weights=path, num_classes=3).eval()
    assert model.zooadapt.name == name and model.zooadapt.num_classes == 3
    size = source.pretrained_cfg.get("input_size", (3, 224, 224))[1:]
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), source.forward_features(x))
        assert model(x).shape == (1, 3)


def test_load_without_a_name_refuses_a_file_that_fits_nothing_completely(tmp_path, resnet18):
    state = dict(resnet18.state_dict())
    state["projector.weight"] = torch.zeros(128, 512)  # a self-supervised trainer's extra head
    path = tmp_path / "simclr.pth"
    torch.save(state, path)
    with pytest.raises(IncompatibleCheckpointError) as err:
        zooadapt.load(weights=path, num_classes=3)
    message = str(err.value)
    assert "fits no architecture completely" in message and "'resnet18'" in message and "99%" in message
    assert "zooadapt.load('resnet18', weights=...)" in message  # it fits: named, it loads


def test_load_without_a_name_refuses_two_architectures_that_fit_alike(tmp_path):
    """A headless file of two architectures with the same body and different heads fits both."""
    index = _index()
    bodies: dict[object, list[str]] = {}
    for name, sig in index.signatures.items():
        if sig.family == "timm":
            body = tuple((k, s) for k, s in zip(sig.keys, sig.shapes) if not sig.under_head(k))
            bodies.setdefault(body, []).append(name)
    twins = sorted((min(_elements(n, index) for n in names), sorted(names)) for names in bodies.values()
                   if len({index.signatures[n].same_as for n in names}) > 1)
    _, names = twins[0]
    sig = index.signatures[names[0]]
    path = tmp_path / "headless.pth"
    torch.save({k: torch.zeros(s) for k, s in zip(sig.keys, sig.shapes) if not sig.under_head(k)}, path)
    with pytest.raises(AmbiguousCheckpointError) as err:
        zooadapt.load(weights=path)
    assert sum(f"{n} (" in str(err.value) for n in names) >= 2


def test_architecture_for_explains_an_empty_answer():
    from zooadapt.loading.identification import Identification

    with pytest.raises(IncompatibleCheckpointError, match="load_weights"):
        architecture_for(Identification("x.pth", 3, (), 0.0))


def test_load_without_a_name_or_weights_is_refused():
    with pytest.raises(InvalidArgumentError, match="weights=FILE alone"):
        zooadapt.load()


# -- the command line --------------------------------------------------------------------------------


def test_cli_identify_prints_the_answer_and_how_to_load_it(tmp_path, capsys, resnet18):
    from zooadapt.cli import main

    path = _save(resnet18, tmp_path / "r18", "safetensors")
    assert main(["identify", str(path)]) == 0
    out = capsys.readouterr().out
    assert "resnet18" in out and "completely" in out and "load it as 'resnet18'" in out
    assert main(["identify", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["matches"][0]["name"] == "resnet18" and data["matches"][0]["complete"] is True
    assert data["tensors"] == 122


def test_cli_identify_check_and_bad_input(tmp_path, capsys, resnet18):
    from zooadapt.cli import main

    state = dict(resnet18.state_dict())
    state["projector.weight"] = torch.zeros(128, 512)
    torch.save(state, tmp_path / "extra.pth")
    assert main(["identify", str(tmp_path / "extra.pth"), "--check"]) == 1
    assert "no architecture fits it completely" in capsys.readouterr().out
    assert main(["identify", str(tmp_path / "missing.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zooadapt: error:") and len(err.strip().splitlines()) == 1
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert main(["identify", str(tmp_path / "junk.pth")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["identify", str(tmp_path / "extra.pth"), "--limit", "0"]) == 2


# -- extending the index ---------------------------------------------------------------------------------


def _shipped_without(tmp_path: Path, dropped: set[str]) -> Path:
    full = signature_index.read_index(signature_index.shipped_path())
    copy = tmp_path / "shipped" / "signatures.json.gz"
    signature_index.write_index(copy, [s for n, s in full.signatures.items() if n not in dropped],
                                full.failures.values(), level=1)
    return copy


def test_what_the_shipped_index_lacks_is_computed_once_into_the_cache(tmp_path, monkeypatch, capsys, fresh_index):
    dropped = {"resnet18", "test_vit"}  # a built-in family's model and a timm architecture
    shipped = signature_index.read_index(signature_index.shipped_path())
    copy = _shipped_without(tmp_path, dropped)
    monkeypatch.setattr(signature_index, "shipped_path", lambda: copy)
    monkeypatch.setenv("ZOOADAPT_CACHE", str(tmp_path / "cache"))
    index = signature_index.get_index()
    assert dropped <= set(index.computed)
    assert "describing" in capsys.readouterr().err
    for name in dropped:
        assert index.signatures[name] == shipped.signatures[name]
    cached = sorted(p.name for p in (tmp_path / "cache" / "signatures").iterdir())
    assert any(n.startswith("timm-") for n in cached) and "zooadapt.json.gz" in cached

    signature_index.clear_index()  # as a new process would: the cache answers, nothing is built
    monkeypatch.setattr(signature_index, "compute", lambda want: pytest.fail(f"{want.name} computed again"))
    again = signature_index.get_index()
    assert again.computed == () and dropped <= set(again.signatures)
    assert capsys.readouterr().err == ""


def test_a_newer_timm_reuses_the_shipped_signatures_and_computes_only_new_names(tmp_path, monkeypatch,
                                                                               fresh_index):
    from zooadapt.plugins import timm_family

    copy = _shipped_without(tmp_path, {"test_resnet"})
    monkeypatch.setattr(signature_index, "shipped_path", lambda: copy)
    monkeypatch.setenv("ZOOADAPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(timm_family, "_timm_version", lambda: "99.0.0")
    index = signature_index.get_index(progress=False)
    assert [n for n in index.computed if index.signatures.get(n, None) is None
            or index.signatures[n].family == "timm"] == ["test_resnet"]
    assert index.signatures["test_resnet"].source == "timm==99.0.0"
    assert index.signatures["resnet50d"].source.startswith("timm==")  # reused from the shipped file
    assert (tmp_path / "cache" / "signatures" / "timm-99.0.0.json.gz").exists()


def test_a_missing_shipped_index_is_named_not_rebuilt(tmp_path, monkeypatch, fresh_index):
    from zooadapt.errors import SignatureIndexError

    monkeypatch.setattr(signature_index, "shipped_path", lambda: tmp_path / "gone.json.gz")
    monkeypatch.setattr(signature_index, "compute", lambda want: pytest.fail("rebuilt the whole index"))
    with pytest.raises(SignatureIndexError, match="reinstall zooadapt"):
        signature_index.get_index()


def test_a_hub_address_is_identified(resnet18_weights):
    """``hf://org/repo`` without a file: the repository's weights file, as ``load`` finds it."""
    found = zooadapt.identify("hf://timm/resnet18.tv_in1k")
    assert found.best is not None and found.best.name == "resnet18" and found.best.complete
    assert "resnet18.tv_in1k" in found.source

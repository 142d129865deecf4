"""A zooadapt plugin for torchvision's SqueezeNet, shipped as its own distribution.

It shows everything a family plugin needs: a build function, a stage map (the stem conv,
then the eight Fire modules), the head, and registry entries for published weights.
"""

from __future__ import annotations

from zooadapt.plugin_api import Family, ModelEntry, Stage, StageMap, WeightSource, hookimpl

# Position of each stage inside ``model.features`` (the two versions pool at different places).
_FEATURE_INDEX = {
    "squeezenet1_0": {"conv1": 0, "fire2": 3, "fire3": 4, "fire4": 5, "fire5": 7, "fire6": 8, "fire7": 9,
                      "fire8": 10, "fire9": 12},
    "squeezenet1_1": {"conv1": 0, "fire2": 3, "fire3": 4, "fire4": 6, "fire5": 7, "fire6": 9, "fire7": 10,
                      "fire8": 11, "fire9": 12},
}


def build(arch: str, num_classes: int = 1000, **kwargs):
    import torchvision.models as tvm

    return getattr(tvm, arch)(weights=None, num_classes=num_classes, **kwargs)


def stages(model) -> StageMap:
    # SqueezeNet 1.0 and 1.1 differ only in where they pool: tell them apart by the first conv.
    arch = "squeezenet1_0" if model.features[0].kernel_size == (7, 7) else "squeezenet1_1"
    return StageMap(
        stages=tuple(Stage(name, (f"features.{i}",)) for name, i in _FEATURE_INDEX[arch].items()),
        head="classifier.1",
        groups={"features": tuple(_FEATURE_INDEX[arch])},
    )


@hookimpl
def zooadapt_register_families(register):
    register(Family(
        name="squeezenet",
        build=build,
        stages=stages,
        architectures=tuple(_FEATURE_INDEX),
        description="torchvision SqueezeNet 1.0 / 1.1 (example third-party plugin)",
    ))


@hookimpl
def zooadapt_register_models(register):
    for arch, digest in (("squeezenet1_0", "b66bff10"), ("squeezenet1_1", "b8a52dc0")):
        register(ModelEntry(
            name=arch,
            family="squeezenet",
            arch=arch,
            source=WeightSource(url=f"https://download.pytorch.org/models/{arch}-{digest}.pth", sha256=digest),
            description=f"SqueezeNet {arch[-3:].replace('_', '.')}, torchvision ImageNet-1k weights",
        ))

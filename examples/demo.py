"""The main job: fine-tune-ready ResNet-34 for 5 classes with layer1-3 frozen, in one call.

By default this machine has no route to the Hugging Face Hub, so the demo starts a local
Hub endpoint on 127.0.0.1 serving seeded stand-in weights in the real
``timm/resnet34.tv_in1k`` layout, and points huggingface_hub at it — zooadapt's download
path is exactly the one used against the real Hub. With internet, run
``python examples/demo.py --real-hub`` to fetch the real ImageNet weights.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile


def start_local_hub() -> None:
    from zooadapt.testing import LocalHub, hub_environment, safetensors_bytes, torchvision_state_dict

    hub = LocalHub().start()
    hub.add_file("timm/resnet34.tv_in1k", "model.safetensors",
                 safetensors_bytes(torchvision_state_dict("resnet34", seed=0)))
    # must happen before huggingface_hub is imported: it reads these once
    os.environ.update(hub_environment(hub.url, tempfile.mkdtemp(prefix="zooadapt-demo-hf-")))
    print(f"local Hub endpoint: {hub.url} (seeded stand-in weights for timm/resnet34.tv_in1k)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-hub", action="store_true", help="download the real weights (needs internet)")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    if not args.real_hub:
        start_local_hub()

    import torch
    import torch.nn.functional as F

    import zooadapt

    model = zooadapt.load("resnet34", num_classes=5, freeze="layer1-3")
    print(model.zooadapt.report)

    groups = zooadapt.param_groups(model, lr=1e-3, head_lr=1e-2)
    print("\noptimizer groups:\n" + zooadapt.format_param_groups(groups))
    optimizer = torch.optim.SGD(groups, momentum=0.9)

    frozen_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("layer1", "layer2",
                                                                                          "layer3"))}
    torch.manual_seed(0)
    images, labels = torch.randn(16, 3, 112, 112), torch.randint(0, 5, (16,))
    model.train()
    print()
    for step in range(1, args.steps + 1):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print(f"step {step}: loss {loss.item():.4f}")
    after = model.state_dict()
    unchanged = all(torch.equal(v, after[k]) for k, v in frozen_before.items())
    print(f"\nlayer1-3 bit-identical after training (weights and BatchNorm statistics): {unchanged}")
    return 0 if unchanged else 1


if __name__ == "__main__":
    sys.exit(main())

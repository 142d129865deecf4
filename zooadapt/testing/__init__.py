"""Helpers for testing zooadapt and zooadapt plugins without network access.

- ``LocalHub``: a loopback server that answers like the Hugging Face Hub.
- ``seeded_state_dict``: reproducible random weights in a model's real key layout.
- ``check_family``: the conformance check a family plugin's own tests call.
"""

from .conformance import ConformanceError, check_family
from .hub import Fault, LocalHub, hub_environment
from .weights import safetensors_bytes, seeded_state_dict, torchvision_state_dict

__all__ = ["Fault", "LocalHub", "hub_environment", "seeded_state_dict", "torchvision_state_dict",
           "safetensors_bytes", "check_family", "ConformanceError"]

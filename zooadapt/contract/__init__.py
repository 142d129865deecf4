"""The plugin contract: what a family plugin registers and what zooadapt promises it.

``family`` (``Family``, ``ModelEntry``, ``WeightSource``, ``DataConfig``, ``Layout``), ``stages``
(``StageMap``), ``rules`` (key rules), ``hookspecs`` (the hooks), ``errors`` (every error class),
``hub_address`` (``hf://`` addresses) and ``saved_format`` (what ``save`` writes and ``load``
reads back).

The bottom layer. It imports only the standard library and its own modules, never torch: a plugin
(and ``zooadapt list``) must be importable without torch, and every other layer depends on these
names, so anything they imported would load with everything. (``tensor_ops``, the arithmetic of
the rules that adapt tensors to build options, imports torch inside its functions, which run
only on tensors.) Nothing in zooadapt may be imported
from here (``.importlinter``: layers, torch-free contract).

This file imports nothing: modules are imported by their full path (``zooadapt.contract.rules``),
so ``import zooadapt`` pays only for the modules it uses. Users import the public names from
``zooadapt.errors`` and ``zooadapt.rules``, files at the top that re-export them from here.
"""

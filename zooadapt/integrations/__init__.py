"""Integrations with other frameworks: ``fsdp`` (PyTorch FSDP2: sharding by stage, sharded
saving) and ``lightning`` (``StageFinetuning``, a Lightning callback).

May import: loading, tuning, weights, the host and the contract, and the framework it integrates
(imported when used; ``zooadapt.lightning`` says what to install when Lightning is missing). Only
the CLI, testing and ``zooadapt.__main__`` sit above it; nothing else in zooadapt may import it,
so a framework's import cost and its failures stay out of a plain ``load``.

This file imports nothing: modules are imported by their full path (``zooadapt.integrations.fsdp``).
"""

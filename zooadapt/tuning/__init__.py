"""Fine-tuning tools: what a model needs once its weights are in.

``freezing`` (freeze and unfreeze stages, frozen BatchNorm), ``wrappers`` (DDP, compile and
Lightning wrappers around a model), ``optim`` (learning-rate groups per stage) and ``parallel``
(SyncBatchNorm and re-wrapping DDP after a freeze).

May import: the contract (stages, errors) and its own modules, and torch. Must not import
loading, integrations, the CLI or testing, and is independent of ``zooadapt.weights`` (the layer
beside it): these tools work on any ``nn.Module``, loaded by zooadapt or not, and the loader uses
them (``load(freeze=...)``), not the other way round.

This file imports nothing: modules are imported by their full path (``zooadapt.tuning.freezing``).
"""

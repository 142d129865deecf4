"""Fine-tuning tools: what a model needs once its weights are in.

``freezing`` (freeze and unfreeze stages, frozen BatchNorm), ``wrappers`` (DDP, compile and
Lightning wrappers around a model), ``optim`` (learning-rate groups per stage), ``parallel``
(SyncBatchNorm and re-wrapping DDP after a freeze) and ``attached`` (the stage map of a user's
own network, given once and remembered on it).

May import: the contract (stages, errors) and its own modules, and torch; ``attached`` also
asks the host's registry for a family's stage map, inside the function that needs it. Must not import
loading, integrations, the CLI or testing, and is independent of ``zooadapt.weights`` (the layer
beside it): these tools work on any ``nn.Module``, loaded by zooadapt or not, and the loader uses
them (``load(freeze=...)``), not the other way round.

This file imports nothing: modules are imported by their full path (``zooadapt.tuning.freezing``).
"""

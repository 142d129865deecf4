"""Weights: getting checkpoint files and reading them.

``argument`` (what ``weights=`` accepts: a path, a model name, a ``timm/…`` id, an ``hf://``
address), ``sources`` (picks the fetcher for a weight source: ``local_files``, ``url_download``,
``hub_download``, each returning a ``fetched.FetchedWeights``), ``hub_cache`` (the Hub cache's
snapshot entries and blobs, checked), ``digests`` (sha256s remembered, pins), ``shards`` (a
sharded checkpoint's index and the shards it names), ``hub_probe`` (is the Hub reachable),
``lockfile`` (``zooadapt.lock``: pinned weights), ``distributed`` (one download per node under
torch.distributed), ``checkpoint``, ``weight_sets`` and ``averages`` (reading a file safely into tensors, and
which of its weight sets), ``reparametrized`` (a pruned or weight-normalised tensor's parts folded
into the plain tensor),
``atomic`` (writes that never leave half a file) and ``paths`` (zooadapt's cache directory).

May import: the host (the registry, for lock files and model names as weights) and the
contract. Must not import loading, tuning, integrations, the CLI or testing, and is independent
of ``zooadapt.tuning`` (the layer beside it): fetching a file does not need to know what a
model is.

This file imports nothing: modules are imported by their full path (``zooadapt.weights.sources``).
"""

"""Loading and saving: the one load pipeline and what is built on it.

``loader`` (``load``, ``load_weights``), ``request`` (arguments checked once), ``pipeline`` (name
-> family -> weights -> tensors -> plan -> model -> head -> freeze), ``adapt``, ``discovery`` and
``plan`` (matching checkpoint keys to the model), ``meta_build`` and ``placement`` (building on
the meta device and placing tensors), ``features`` (``features_only``), ``report`` (the
``LoadReport``), ``inspection`` (plans without loading), ``saving`` and ``reloading`` (``save``,
``push_to_hub`` and loading a saved model), ``data`` (preprocessing), ``labels`` and
``model_card``; ``signatures``, ``signature_index``, ``matching`` and ``identification``
(``identify``: which architectures a file fits, from the shipped index of tensor signatures).

May import: ``zooadapt.tuning``, ``zooadapt.weights``, the host and the contract. Must not import
the integrations, the CLI, testing or ``zooadapt.plugin_api`` (which sits above it: plugins build
on loading's helpers, loading never on a plugin's API).

This file imports nothing: modules are imported by their full path (``zooadapt.loading.loader``),
so ``import zooadapt`` stays cheap (``load`` is imported on first use).
"""

"""The plugin host: finds, loads and calls the plugins, and keeps the model registry.

``plugin_manager`` (discovery of built-in and installed plugins, the pluggy manager), ``hooks``
(the facade that calls the hooks and reports a failing plugin), ``registry`` (the model names,
from ``registry.toml`` and the plugins) and ``layouts`` (the foreign key layouts plugins
register).

May import: the plugin contract (``zooadapt.contract``) and zooadapt's root for its version.
Must not be imported by the contract. It never imports the loading machinery, the weights or
torch (``.importlinter``: torch-free contract): listing models and plugins stays fast, and a
plugin that fails does not take a load down with it.

This file imports nothing: modules are imported by their full path (``zooadapt.host.registry``).
"""

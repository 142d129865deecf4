"""zooadapt's built-in family plugins, installed as ``zooadapt.plugins``.

Each module is an ordinary pluggy plugin using only the public API (``zooadapt.hookimpl``,
``zooadapt.Family``, ``zooadapt.StageMap``, ``zooadapt.rules``) — the same API a third party
uses — registered by module name from ``zooadapt.plugin_manager.BUILTIN_PLUGINS``.
Plugin modules import torch only inside functions, so listing models stays torch-free.
"""

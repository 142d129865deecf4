"""zooadapt's built-in family plugins, installed as ``zooadapt.plugins``.

The modules named in ``zooadapt.plugin_manager.BUILTIN_PLUGINS`` are ordinary pluggy plugins,
registered by module name, that import only the public plugin API (``zooadapt.plugin_api``): the
same API a third party uses. Each owns its families and its named models, so disabling one
(``ZOOADAPT_DISABLE_PLUGINS=resnet``) takes both away. The other modules are a plugin's helpers
(``timm_*``: the timm plugin split by job). Plugin modules import torch only inside functions,
so listing models stays torch-free.
"""

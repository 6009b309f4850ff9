"""DeepCache for the Stable Diffusion WebUIs: reuse a U-Net's slowly-changing deep features between steps.

The engine (this package) imports no webui module; ``deepcache.a1111`` and ``deepcache.forge`` adapt it.
"""
__version__ = "1.2.0"  # the one place: the console's stats line, the infotext's "DeepCache version", CHANGELOG.md

from .engine import DeepCacheEngine
from .params import PARAM_SPECS, DeepCacheParams, ParamSpec
from .schedule import plan_full_steps
from .stats import RunStats
from .structure import UNetLayout, UnsupportedModel, inspect_unet

__all__ = ["__version__", "DeepCacheEngine", "DeepCacheParams", "PARAM_SPECS", "ParamSpec", "plan_full_steps",
           "RunStats", "UNetLayout", "UnsupportedModel", "inspect_unet"]

"""DeepCache for the Stable Diffusion WebUIs: reuse a U-Net's slowly-changing deep features between steps.

The engine (this package) imports no webui module; ``deepcache.a1111`` and ``deepcache.forge`` adapt it.
"""
from .engine import DeepCacheEngine
from .params import PARAM_SPECS, DeepCacheParams, ParamSpec
from .schedule import plan_full_steps
from .stats import RunStats
from .structure import UNetLayout, UnsupportedModel, inspect_unet

__all__ = ["DeepCacheEngine", "DeepCacheParams", "PARAM_SPECS", "ParamSpec", "plan_full_steps", "RunStats",
           "UNetLayout", "UnsupportedModel", "inspect_unet"]

"""Which webui is running, told apart at import time without importing what the other one lacks."""
from __future__ import annotations

import importlib.util

from .adapter import Adapter


def is_forge() -> bool:
    return importlib.util.find_spec("modules_forge") is not None


def detect() -> Adapter:
    """The adapter for what the host provides: Forge's ``modules_forge`` with ComfyUI's ``ldm_patched`` and no
    ``backend`` (Forge Classic, reForge), with ``backend`` (Forge main, Forge Neo), else A1111's modules."""
    if is_forge():
        from .forge import ForgeAdapter, LdmPatchedForgeAdapter

        if importlib.util.find_spec("backend") is None and importlib.util.find_spec("ldm_patched") is not None:
            return LdmPatchedForgeAdapter()
        return ForgeAdapter()
    if importlib.util.find_spec("modules.sd_samplers_cfg_denoiser") is None and \
            importlib.util.find_spec("modules.sd_samplers_kdiffusion") is None:
        raise RuntimeError("DeepCache: no AUTOMATIC1111 or Forge webui found (no 'modules' package)")
    from .a1111 import A1111Adapter

    return A1111Adapter()


def _has_every_sampling_hook() -> bool:
    try:
        from modules import scripts
    except ImportError:
        return False
    return hasattr(scripts.Script, "process_before_every_sampling")


HAS_EVERY_SAMPLING_HOOK = _has_every_sampling_hook()

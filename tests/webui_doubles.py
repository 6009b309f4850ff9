"""Small stand-ins for the webui's ``modules.*`` objects the adapters touch, faithful to
../shared/design/webui-interfaces.md: ``shared.sd_model`` (with ``sd_checkpoint_info``), ``sd_unet.current_unet``,
a processing object ``p`` with ``extra_generation_params``, a sampler with ``get_sigmas`` and ``model_wrap``,
and the ``CFGDenoiserParams`` passed to ``on_cfg_denoiser``."""
from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any


def install_modules(sd_model: Any) -> types.SimpleNamespace:
    """Register fake ``modules.shared`` and ``modules.sd_unet`` in ``sys.modules``; returns ``shared``."""
    shared = types.SimpleNamespace(sd_model=sd_model, opts=types.SimpleNamespace(data={}), state=State())
    sd_unet = types.SimpleNamespace(current_unet=None)
    package = types.ModuleType("modules")
    package.shared, package.sd_unet = shared, sd_unet
    sys.modules.update({"modules": package, "modules.shared": shared, "modules.sd_unet": sd_unet})
    return shared


class State:
    """``shared.state``: ``begin()`` starts a job (an API request, a Generate click), stamps ``time_start`` and clears
    ``interrupted`` / ``skipped``."""

    def __init__(self) -> None:
        self.time_start: float | None = None
        self.jobs = 0
        self.interrupted = self.skipped = False  # set by Interrupt / Skip, until the next job begins

    def begin(self) -> None:
        self.jobs += 1
        self.time_start = 1.7e9 + self.jobs  # time.time() of a later request
        self.interrupted = self.skipped = False


def defined_in(path: str, source: str, name: str, **namespace: Any) -> Any:
    """The function ``name`` of ``source``, compiled as the file ``path`` (an extension's script), so that its code
    names that file as a real extension's functions do."""
    namespace = {"__name__": path.rsplit("/", 1)[-1].removesuffix(".py"), **namespace}
    exec(compile(source, path, "exec"), namespace)
    return namespace[name]


def remove_modules() -> None:
    for name in ("modules", "modules.shared", "modules.sd_unet"):
        sys.modules.pop(name, None)


@dataclass
class Processing:
    """``StableDiffusionProcessing``: the fields the script reads and writes."""

    sd_model: Any
    sampler: Any = None
    is_hr_pass: bool = False
    extra_generation_params: dict = field(default_factory=dict)


class KDiffusionSampler:
    """A1111's ``KDiffusionSampler``: ``get_sigmas(p, steps)``, ``model_wrap`` (k-diffusion's denoiser), the
    k-diffusion ``funcname`` and ``config.options`` of its ``SamplerData`` (``second_order`` for Heun, DPM2,
    DPM2 a, DPM++ 2S a, DPM++ SDE and Restart)."""

    def __init__(self, model_wrap: Any, sigmas: Any, funcname: str = "sample_euler",
                 second_order: bool = False) -> None:
        self.model_wrap, self._sigmas, self.funcname = model_wrap, sigmas, funcname
        self.config = types.SimpleNamespace(options={"second_order": True} if second_order else {})

    def get_sigmas(self, p: Any, steps: int) -> Any:
        return self._sigmas


@dataclass
class Denoiser:
    sampler: Any
    step: int = 0


@dataclass
class CFGDenoiserParams:
    x: Any  # the denoiser's whole batch: every row its U-Net calls carry
    sigma: Any
    total_sampling_steps: int
    denoiser: Any


class UnetPatcher:
    """Forge's ``UnetPatcher``: ``clone()`` deep-copies ``model_options`` and shares ``model``; the U-Net
    function wrapper lives in the single slot ``model_options["model_function_wrapper"]``."""

    def __init__(self, model: Any, model_options: dict | None = None) -> None:
        self.model, self.model_options = model, model_options or {}

    def clone(self) -> UnetPatcher:
        import copy

        return UnetPatcher(self.model, copy.deepcopy(self.model_options))

    def set_model_unet_function_wrapper(self, wrapper: Any) -> None:
        self.model_options["model_function_wrapper"] = wrapper


def forge_apply(patcher: UnetPatcher, x: Any, sigma: Any, context: Any, cond_or_uncond: list[int],
                timestep_model: str = "predictor") -> Any:
    """How Forge's ``calc_cond_uncond_batch`` reaches the U-Net: through the wrapper when one is set, with
    ``KModel.apply_model`` converting sigma to the timestep the U-Net receives (``ldm_patched``'s ``BaseModel``
    does the same with ``model_sampling``)."""
    model = patcher.model

    def apply_model(x, sigma, c_crossattn=None, transformer_options=None):
        t = getattr(model, timestep_model).timestep(sigma)
        return model.diffusion_model(x, t, context=c_crossattn, transformer_options=transformer_options)

    c = {"c_crossattn": context, "transformer_options": {"cond_or_uncond": list(cond_or_uncond)}}
    wrapper = patcher.model_options.get("model_function_wrapper")
    if wrapper is None:
        return apply_model(x, sigma, **c)
    return wrapper(apply_model, {"input": x, "timestep": sigma, "c": c, "cond_or_uncond": cond_or_uncond})

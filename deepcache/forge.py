"""Forge and its forks: the U-Net lives in the ``UnetPatcher`` of ``p.sd_model.forge_objects``.

Two backends: Forge main and Forge Neo run their own ``backend`` (``IntegratedUNet2DConditionModel``, a
``predictor`` maps sigma to timestep); Forge Classic and reForge run ComfyUI's ``ldm_patched`` (its
``UNetModel``, ``model_sampling`` for the mapping, blocks reached through ``forward_timestep_embed``, see
``blockhooks``). Each run clones the patcher and sets a U-Net function wrapper on the clone (chaining the one
already there, e.g. MultiDiffusion's): it tells the engine each call's timestep and its ``cond_or_uncond``
composition. The blocks of the shared diffusion model are wrapped for the generation only, like in A1111.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .a1111 import A1111Adapter
from .peers import foreign_cache, origin, reaches
from .session import Session
from .structure import UnsupportedModel


class ForgeAdapter(A1111Adapter):
    """Forge's ``backend`` (Forge main, Forge Neo). Same denoiser callback and sampler schedule as A1111 (Forge
    keeps both); a different U-Net access."""

    name = "Forge"
    reports_calls = True

    def __init__(self) -> None:
        super().__init__()
        self.predictor: Any = None  # the model's sigma <-> timestep mapping, set by prepare()
        self.model: Any = None  # p.sd_model, whose forge_objects.unet the sampler will call
        self.wrapper: Any = None  # our U-Net function wrapper

    def unet_of_model(self, model: Any) -> nn.Module:
        patcher = model.forge_objects.unet
        diffusion_model = patcher.model.diffusion_model
        if self.model_channels(diffusion_model) is None:
            raise UnsupportedModel(f"{type(diffusion_model).__name__} is not a U-Net (Flux, SD3 and Chroma are "
                                   "transformers); DeepCache supports SD1.x, SD2.x and SDXL")
        return diffusion_model

    @staticmethod
    def model_channels(diffusion_model: Any) -> int | None:
        """The U-Net's base width from its config; transformers (Flux, SD3, Chroma) have none."""
        return (getattr(diffusion_model, "config", None) or {}).get("model_channels")

    @staticmethod
    def timestep_model(model: Any) -> Any:
        """What maps a sigma to the U-Net's timestep (``.timestep(sigma)``)."""
        return model.predictor

    def install(self, session: Session, unet: nn.Module) -> None:
        session.engine.install(unet, read_calls=False)

    def control_models(self, p: Any) -> list[nn.Module]:
        """Forge's built-in ControlNet links each unit into ``UnetPatcher.controlnet_linked_list``
        (``previous_controlnet`` chains them); ``control_model`` is the ``cldm.ControlNet`` where it has one."""
        found, unit = [], getattr(p.sd_model.forge_objects.unet, "controlnet_linked_list", None)
        while unit is not None:
            found.append(getattr(unit, "control_model", None))
            unit = getattr(unit, "previous_controlnet", None)
        return found

    def prepare(self, p: Any, session: Session) -> None:
        super().prepare(p, session)
        patcher = p.sd_model.forge_objects.unet.clone()
        predictor = self.predictor = self.timestep_model(patcher.model)
        previous = patcher.model_options.get("model_function_wrapper")
        previous = getattr(previous, "deepcache_previous", previous)  # a patcher not reset since our last run
        engine = session.engine

        def deepcache_unet_wrapper(apply_model: Any, args: dict) -> torch.Tensor:
            sigma = args["timestep"]
            engine.note_call(float(predictor.timestep(sigma[:1])[0]), tuple(args.get("cond_or_uncond") or ()))
            if previous is not None:
                return previous(apply_model, args)
            return apply_model(args["input"], sigma, **args["c"])

        deepcache_unet_wrapper.deepcache_previous = previous
        patcher.set_model_unet_function_wrapper(deepcache_unet_wrapper)
        p.sd_model.forge_objects.unet = patcher
        self.model, self.wrapper = p.sd_model, deepcache_unet_wrapper

    def release(self) -> None:
        super().release()
        self.model = self.wrapper = None

    def conflict(self) -> str | None:
        """At the run's first denoiser call every extension's patch is in place: the wrapper the sampler will call
        must reach ours (a wrapper set after ours that does not call it decides alone), and no other cache may
        sit in the chain (Spectrum, set before or after ours, forecasts the U-Net's output on most steps)."""
        if self.model is None:
            return None
        wrapper = self.model.forge_objects.unet.model_options.get("model_function_wrapper")
        if wrapper is not self.wrapper and not reaches(wrapper, self.wrapper):
            return (f"another extension's U-Net function wrapper ('{origin(wrapper)[0]}') replaced DeepCache's "
                    "without calling it: it runs this sampling alone; disable one of them")
        cache = foreign_cache(wrapper)
        if cache is not None:
            return (f"another U-Net cache ('{cache}') is on: two caches on one run give a wrong image; DeepCache "
                    "stands down, disable one of them")
        return None

    def _sigmas_to_timesteps(self, sampler: Any, sigmas: list[float]) -> list[float]:
        """The schedule in the very timesteps the U-Net wrapper reports: the model's own mapping, not the
        sampler's ``sigma_to_t``. They differ in rounding (reForge's ``model_wrap`` interpolates 713.57 where
        ``model_sampling`` gives 714), and a call just above its step's timestep would count with the step before."""
        return [float(t) for t in self.predictor.timestep(torch.tensor(sigmas)).flatten()]

    def _call_timestep(self, sampler: Any, sigma: float) -> float:
        """Forge turns a timestep sampler's timestep into a sigma before ``on_cfg_denoiser``: always a sigma."""
        return self._sigmas_to_timesteps(sampler, [sigma])[0]


class LdmPatchedForgeAdapter(ForgeAdapter):
    """ComfyUI's ``ldm_patched`` backend (Forge Classic, reForge): its ``UNetModel`` keeps ``model_channels`` as an
    attribute (no config), and ``model_sampling`` maps sigmas to timesteps."""

    name = "Forge (ldm_patched)"

    @staticmethod
    def model_channels(diffusion_model: Any) -> int | None:
        return getattr(diffusion_model, "model_channels", None)

    @staticmethod
    def timestep_model(model: Any) -> Any:
        return model.model_sampling

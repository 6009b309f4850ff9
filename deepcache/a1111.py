"""AUTOMATIC1111 (1.10; 1.8/1.9 without exact schedules): where the U-Net is, and when a run starts.

Imports webui modules only inside functions, so the engine stays importable without the webui.
"""
from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import torch
from torch import nn

from .session import Session
from .structure import UnsupportedModel

CAPTURED = ("get_sigmas", "get_timesteps")  # the sampler methods that compute the run's schedule


# k-diffusion functions that evaluate the denoiser twice per step which a webui lists without "second_order":
# Forge Neo's "DPM++ 2s a RF" (its second evaluation is at a noise level between two steps, or not a number)
UNMARKED_TWO_EVALUATIONS = frozenset({"sample_dpmpp_2s_ancestral_RF"})


def evaluations_per_step(sampler: Any) -> int | None:
    """2 for the k-diffusion samplers the webui marks ``second_order`` (Heun, DPM2, DPM2 a, DPM++ 2S a, DPM++
    SDE) and those it lists unmarked (``UNMARKED_TWO_EVALUATIONS``): every step but the last evaluates the
    denoiser exactly twice, so ``denoiser.step // 2`` is the sampler step. None for everything else, Restart
    included (its own function, with sigma jumps and a varying count)."""
    options = getattr(getattr(sampler, "config", None), "options", None) or {}
    funcname = getattr(sampler, "funcname", None)
    if not isinstance(funcname, str):
        return None
    return 2 if options.get("second_order") or funcname in UNMARKED_TWO_EVALUATIONS else None


class A1111Adapter:
    """The run begins at the first ``on_cfg_denoiser`` call (``denoiser.step == 0``), with the schedule the
    sampler computed (captured from its ``get_sigmas``/``get_timesteps``) converted to the timesteps the
    U-Net receives."""

    name = "AUTOMATIC1111"
    reports_calls = False  # a forward pre-hook on the U-Net reads every call

    def __init__(self) -> None:
        self.session: Session | None = None
        self.sampler: Any = None
        self.recorded: list[float] | None = None
        self.checkpoint: Any = None
        self.evaluations: int | None = None  # denoiser evaluations per sampler step, when known

    def unet(self, p: Any) -> nn.Module:
        return self.unet_of_model(p.sd_model)

    def unet_of_model(self, model: Any) -> nn.Module:
        from modules import sd_unet

        if getattr(model, "is_sd3", False):
            raise UnsupportedModel("SD3 is an MMDiT without U-Net blocks; DeepCache supports SD1.x, SD2.x and SDXL")
        if sd_unet.current_unet is not None:
            raise UnsupportedModel(f"the alternative U-Net '{sd_unet.current_unet}' replaces the model's blocks")
        diffusion_model = getattr(getattr(model, "model", None), "diffusion_model", None)
        if diffusion_model is None:
            raise UnsupportedModel(f"{type(model).__name__} has no model.diffusion_model")
        return diffusion_model

    def install(self, session: Session, unet: nn.Module) -> None:
        session.engine.install(unet)

    def conflict(self) -> str | None:
        """A1111 calls the U-Net directly; a peer DeepCache's forward is the session's own check."""
        return None

    def task(self) -> Hashable | None:
        """The job in progress: ``shared.state.begin()`` stamps each API request and Generate click; a generation
        run inside another (ADetailer's inpainting) belongs to the same job."""
        from modules import shared

        state = getattr(shared, "state", None)
        started = getattr(state, "time_start", None)
        return None if started is None else (id(state), started)

    def interrupted(self) -> bool:
        """Interrupt and Skip set ``shared.state.interrupted`` / ``skipped``; the sampler stops at its next step and
        the webui goes on with the last latent, so the run's scripts see its end as usual."""
        from modules import shared

        state = getattr(shared, "state", None)
        return bool(getattr(state, "interrupted", False) or getattr(state, "skipped", False))

    def control_models(self, p: Any) -> list[nn.Module]:
        """sd-webui-controlnet binds its U-Net loop as the U-Net's instance ``forward``; the hook object it
        closes over lists each unit's model in ``control_params`` (``param.control_model.control_model`` is the
        ``cldm.ControlNet``). Whatever is found is only a candidate: ``ControlNetSatellites`` checks it."""
        forward = self.unet(p).__dict__.get("forward")
        function = getattr(forward, "__func__", forward)
        found = []
        for cell in getattr(function, "__closure__", None) or ():
            try:
                params = getattr(cell.cell_contents, "control_params", None)
            except ValueError:  # an empty cell
                continue
            for param in params or ():
                wrapper = getattr(param, "control_model", None)
                found.append(getattr(wrapper, "control_model", wrapper))
        return found

    def prepare(self, p: Any, session: Session) -> None:
        from modules import shared

        self.session = session
        self.checkpoint = getattr(shared.sd_model, "sd_checkpoint_info", None)
        sampler = getattr(p, "sampler", None)
        if sampler is None:  # 1.8/1.9 prepare before the sampler exists: schedule-free clock
            return
        self.sampler, self.recorded = sampler, None
        self.evaluations = evaluations_per_step(sampler)
        for name in CAPTURED:
            if hasattr(sampler, name) and name not in sampler.__dict__:
                setattr(sampler, name, self._recording(getattr(sampler, name)))

    def _recording(self, compute: Any) -> Any:
        def record_schedule(*args: Any, **kwargs: Any) -> Any:
            values = compute(*args, **kwargs)
            self.recorded = [float(v) for v in torch.as_tensor(values).flatten()]
            return values

        record_schedule.deepcache_capture = True
        return record_schedule

    def release(self) -> None:
        sampler, self.sampler, self.recorded, self.evaluations = self.sampler, None, None, None
        if sampler is not None:
            for name in CAPTURED:
                if getattr(sampler.__dict__.get(name), "deepcache_capture", False):
                    del sampler.__dict__[name]

    def on_cfg_denoiser(self, params: Any) -> None:
        """``script_callbacks.on_cfg_denoiser``: fires before the U-Net calls of every denoiser call."""
        session = self.session
        if session is None or session.pending is None:
            return
        denoiser = getattr(params, "denoiser", None)  # 1.8+
        evaluation = getattr(denoiser, "step", 0)
        if evaluation == 0:
            sampler = getattr(denoiser, "sampler", None)
            first_t = self._call_timestep(sampler, float(params.sigma[0]))
            session.begin_run(params.total_sampling_steps, self._schedule(sampler, first_t))
        else:
            self._check_model(session)
        session.engine.note_batch(params.x)
        if self.evaluations:
            session.engine.note_evaluation(evaluation // self.evaluations)

    def _check_model(self, session: Session) -> None:
        """The refiner may load other weights into the same model object: drop what was cached from the old."""
        from modules import shared

        checkpoint = getattr(shared.sd_model, "sd_checkpoint_info", None)
        if checkpoint is not self.checkpoint:
            self.checkpoint = checkpoint
            session.engine.invalidate()

    def _call_timestep(self, sampler: Any, sigma: float) -> float:
        """The timestep the U-Net receives for the ``sigma`` that ``on_cfg_denoiser`` reports; A1111's timestep
        samplers (DDIM, PLMS, UniPC) report the timestep itself."""
        if sampler is None or hasattr(sampler, "get_timesteps"):
            return sigma
        return self._sigmas_to_timesteps(sampler, [sigma])[0]

    def _sigmas_to_timesteps(self, sampler: Any, sigmas: list[float]) -> list[float]:
        """What k-diffusion's denoiser (``model_wrap``) computes for the U-Net from each sigma."""
        wrap = sampler.model_wrap
        return [float(t) for t in wrap.sigma_to_t(torch.tensor(sigmas, device=wrap.sigmas.device)).flatten()]

    def _schedule(self, sampler: Any, first_t: float) -> list[float] | None:
        """This run's step timesteps, highest first: the captured schedule from the first call's timestep on."""
        if not self.recorded or sampler is None:
            return None
        if hasattr(sampler, "get_timesteps"):
            values = self.recorded
        else:
            values = self._sigmas_to_timesteps(sampler, [s for s in self.recorded if s > 0])
        tolerance = 1e-4 * max(1.0, abs(first_t))
        return sorted((t for t in values if t <= first_t + tolerance), reverse=True) or None

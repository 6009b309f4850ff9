"""Which sampler step a U-Net call belongs to: the step clock, and the timestep read off a call's arguments."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def timestep_arg(args: tuple, kwargs: dict, position: int = 1) -> float | None:
    """The timestep of a U-Net call ``(x, timesteps, ...)`` or a ControlNet call ``(x, hint, timesteps, ...)``
    (``position`` 2), or ``timesteps=``."""
    t = kwargs["timesteps"] if "timesteps" in kwargs else args[position] if len(args) > position else None
    if t is None:
        return None
    return float(t.reshape(-1)[0]) if isinstance(t, torch.Tensor) else float(t)


class StepClock:
    """Maps each U-Net call's timestep to a sampler step.

    When the webui says which sampler step an evaluation belongs to (``DeepCacheEngine.note_evaluation``), that
    step is used. Otherwise, with the run's schedule (the timestep of each step, as the U-Net receives it), a
    call belongs to the step whose interval contains its timestep, so extra evaluations inside a step and
    separate cond/uncond calls never move the counter (an evaluation made exactly at, or below, the next step's
    timestep counts with that next step). Without a schedule, every change of timestep is a new step (exact
    for one-evaluation samplers). A move back to an earlier step (Restart's sigma jumps, a new run without
    ``begin_run``) opens a new *segment*: nothing cached before it is reused. A call at a timestep that is not a
    number (a sampler's intermediate evaluation computed out of its domain, as Forge Neo's "DPM++ 2s a RF" does
    for every noise level above 1) cannot be placed: it stays in the step of the call before it.
    """

    def __init__(self, schedule: Sequence[float] | None) -> None:
        self.schedule = [float(t) for t in schedule] if schedule else None
        self.step = -1
        self.segment = 0
        self.last_t: float | None = None

    def locate(self, t: float, step: int | None = None) -> int:
        """The step of a call at timestep ``t`` (``step`` when the webui told it)."""
        if step is None:
            if math.isnan(t):
                return max(self.step, 0)
            step = self._step_of(t)
        if step < self.step:
            self.segment += 1
        self.step, self.last_t = step, t
        return step

    def _step_of(self, t: float) -> int:
        if self.schedule is not None:
            step = 0
            for i, scheduled in enumerate(self.schedule):
                if scheduled >= t - 1e-4 * max(1.0, abs(scheduled)):
                    step = i
                else:
                    break
            return step
        if self.last_t is None:
            return 0
        if t == self.last_t:
            return self.step
        if t > self.last_t:
            self.segment += 1
        return self.step + 1

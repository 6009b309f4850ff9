"""Which sampler steps run the whole U-Net ("full") and which reuse cached deep features ("retrieval")."""
from __future__ import annotations

import math
import warnings

import numpy as np

from .params import DeepCacheParams


def plan_full_steps(params: DeepCacheParams, total_steps: int) -> tuple[bool, ...]:
    """``result[i]`` is True when step ``i`` of a run of ``total_steps`` must be full.

    Start and end are fractions of the steps this run actually executes (so img2img with a low denoising
    strength and the hires pass behave like txt2img). Inside the window ``start <= i/total < end`` the first
    step is full and then every ``interval``-th (uniform), or the paper's non-uniform 1:N placement is used;
    outside the window and in the last ``final_full_steps`` steps every step is full. The adaptive schedule plans
    only the window's first step: the others are decided while sampling (``refresh``), at least every
    ``interval``-th full.
    """
    full = [True] * max(total_steps, 0)
    if not params.enabled or params.interval <= 1 or total_steps <= 0:
        return tuple(full)
    window = [i for i in range(total_steps)
              if params.start * total_steps <= i + 1e-9 and i + 1e-9 < params.end * total_steps
              and i < total_steps - params.final_full_steps]
    if not window:
        return tuple(full)
    first, length = window[0], len(window)
    if params.schedule == "adaptive":
        full_in_window = {0}
    elif params.schedule == "non-uniform":
        centre_step = math.floor(params.center * length + 1e-6)  # 0.58 * 50 is 28.999999999999996: step 29
        full_in_window = set(_non_uniform_positions(length, params.interval, centre_step, params.pow))
    else:
        full_in_window = set(range(0, length, params.interval))
    for offset in range(length):
        full[first + offset] = offset in full_in_window
    return tuple(full)


def _non_uniform_positions(length: int, interval: int, center: int, power: float) -> list[int]:
    """The paper's ``sample_from_quad_center`` (horseee/DeepCache): ``ceil(length/interval)`` full steps, spaced
    linearly in ``x**(1/pow)`` around the step ``center``, so they are dense near it and sparse at both ends.

    The same numpy arithmetic as the original (a Python complex root of a negative base, ``np.linspace``, a
    complex power, ``np.int32`` of its real part, ``np.unique``), because that arithmetic defines the published
    schedules; like the original it lowers ``pow`` by 0.02 until it finds ``count`` distinct steps. Where the
    original gives up (``ValueError: Cannot find suitable pow``, no ``pow > 1`` works) this falls back to the
    uniform schedule of the same interval instead of failing the generation.
    """
    count = math.ceil(length / interval)
    if count >= length:
        return list(range(length))
    with warnings.catch_warnings():  # np.int32 of a complex keeps its real part, with a ComplexWarning
        warnings.simplefilter("ignore", getattr(np, "exceptions", np).ComplexWarning)
        while power > 1:
            x = np.linspace((-center) ** (1 / power), (length - center) ** (1 / power), count + 1)
            positions = [0] + [int(v) + center for v in np.unique(np.int32(x ** power))[1:-1]]
            if len(positions) == count:
                return positions
            power -= 0.02
    return list(range(0, length, interval))

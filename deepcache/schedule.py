"""Which sampler steps run the whole U-Net ("full") and which reuse cached deep features ("retrieval")."""
from __future__ import annotations

import math

from .params import DeepCacheParams


def plan_full_steps(params: DeepCacheParams, total_steps: int) -> tuple[bool, ...]:
    """``result[i]`` is True when step ``i`` of a run of ``total_steps`` must be full.

    Start and end are fractions of the steps this run actually executes (so img2img with a low denoising
    strength and the hires pass behave like txt2img). Inside the window ``start <= i/total < end`` the first
    step is full and then every ``interval``-th (uniform), or the paper's non-uniform 1:N placement is used;
    outside the window and in the last ``final_full_steps`` steps every step is full.
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
    if params.schedule == "non-uniform":
        full_in_window = set(_non_uniform_positions(length, params.interval, params.center * length, params.pow))
    else:
        full_in_window = set(range(0, length, params.interval))
    for offset in range(length):
        full[first + offset] = offset in full_in_window
    return tuple(full)


def _non_uniform_positions(length: int, interval: int, center: float, power: float) -> list[int]:
    """The paper's ``sample_from_quad_center`` (horseee/DeepCache): ``ceil(length/interval)`` full steps, spaced
    linearly in ``x**(1/pow)`` around ``center``, so they are dense near the centre and sparse at both ends.

    Reproduced with its exact arithmetic (Python's complex power of a negative base, then the real part
    truncated), because that is what defines the published schedules; like the original it lowers ``pow`` by
    0.02 until the positions are distinct. Where no ``pow > 1`` works, it falls back to uniform spacing.
    """
    count = math.ceil(length / interval)
    if count >= length:
        return list(range(length))
    while power > 1:
        lo, hi = complex(-center) ** (1 / power), complex(length - center) ** (1 / power)
        points = [lo + (hi - lo) * i / count for i in range(count + 1)]
        truncated = sorted({int((p ** power).real) for p in points})
        positions = [0] + [int(x + center) for x in truncated[1:-1]]
        if len(set(positions)) == count and all(0 <= p < length for p in positions):
            return positions
        power -= 0.02
    return list(range(0, length, interval))

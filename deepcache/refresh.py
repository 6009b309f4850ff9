"""When a step refreshes the cache: the adaptive schedule, which decides while sampling from a free probe.

Every pass runs the shallow branch ``input_blocks[0..k]``, so the input of the first block a retrieval skips (the
*probe*) is at hand on every step. On a step the plan leaves open, the step's first U-Net call runs the shallow
branch and compares its probe with the one its slot recorded on its last full pass: the relative mean change
``mean|a - b| / mean|b|``, which grows with every step since that pass (the staleness of the cached deep features).
Above the threshold the pass goes on as a full pass (the engine switches a pass to full mid-way, as it does when a
shape changes) and the whole step is full; below it, every call of the step reuses the cache. ``interval`` bounds
it: the ``interval``-th step after a full one is full whatever the probe says, and planned-full steps (the first
of the window, those outside it, the final ones) stay full.
"""
from __future__ import annotations

import torch


def relative_change(probe: torch.Tensor, reference: torch.Tensor) -> float:
    """``mean|probe - reference| / mean|reference|`` (one host read: the decision is made on the host)."""
    change = (probe.float() - reference.float()).abs().mean() / reference.float().abs().mean().clamp_min(1e-12)
    return float(change)


class AdaptiveRefresh:
    """The step decisions of one adaptive run. Every call of a step follows the decision of its first call, so
    cond/uncond calls, tiles and windows of a step stay consistent and the step counts stay whole."""

    def __init__(self, threshold: float, interval: int) -> None:
        self.threshold, self.interval = threshold, interval
        self.decided: dict[tuple[int, int], bool] = {}  # (segment, step) -> the step is full
        self.latest_full = 0  # the last step decided full
        self.changes: dict[int, float] = {}  # each probed step's change

    def step_is_full(self, segment: int, step: int, planned_full: bool) -> bool | None:
        """True or False once the step is decided; None when the call about to run decides it by its probe."""
        decided = self.decided.get((segment, step))
        if decided is not None:
            return decided
        if planned_full or step - self.latest_full >= self.interval or step < self.latest_full:
            self.decide(segment, step, full=True)
            return True
        return None

    def decide(self, segment: int, step: int, full: bool) -> None:
        self.decided[(segment, step)] = full
        if full:
            self.latest_full = step

    def probe(self, segment: int, step: int, probe: torch.Tensor, reference: torch.Tensor | None) -> bool:
        """Decide the step from its first call's probe; True when it must run in full (the cache is stale)."""
        change = relative_change(probe, reference) if reference is not None else float("inf")
        self.changes[step] = change
        stale = not change <= self.threshold
        self.decide(segment, step, full=stale)
        return stale

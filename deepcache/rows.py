"""Which rows of the denoiser's batch a U-Net call carries.

Some extensions evaluate the denoiser's batch in slices that change from step to step: AnimateDiff's context
windows visit other frames, in another order, at every step (its "uniform" schedule). Such a call's deep features
belong to its frames, not to its place in the step, so a slot is keyed by the rows a call carries: a later call
reuses them only when it carries the same rows. A row is recognised by its direction: the U-Net receives the
denoiser's rows scaled by one factor (k-diffusion's ``c_in``), so a sliced call's rows have cosine 1 with the rows
they came from. Rows of equal content (a frame's cond and uncond copies) share one identity; their order in the
call, and the order of calls, then tell them apart. When the rows are grouped differently on a retrieval step than
on the full step, each row's features are gathered from the call that carried it then (``row_keys``).
"""
from __future__ import annotations

from collections.abc import Hashable
from functools import cached_property

import torch

RowKey = tuple[int, int, Hashable]  # a row's identity, its occurrence in the call, what the call's slot key adds

SAMPLES = 256  # elements compared per row: enough that two different rows of noise never look alike
SAME = 1e-5  # 1 - cosine below this is the same row (float32 and half-precision rounding stay far below)


def _directions(x: torch.Tensor, channels: int) -> torch.Tensor:
    flat = x[:, :channels].reshape(x.shape[0], -1).float()
    step = max(1, flat.shape[1] // SAMPLES)
    sampled = flat[:, ::step][:, :SAMPLES]
    return sampled / sampled.norm(dim=1, keepdim=True).clamp_min(1e-12)


class DenoiserBatch:
    """The batch of one denoiser evaluation (every row the U-Net calls of that evaluation may carry). Reported at
    every evaluation, it is only read when a call carries a slice of it, so nothing is computed before then."""

    def __init__(self, x: torch.Tensor) -> None:
        self.shape = x.shape
        self._x = x

    @cached_property
    def directions(self) -> torch.Tensor:
        return _directions(self._x, self.shape[1])

    def rows_of(self, x: torch.Tensor) -> tuple[int, ...] | None:
        """The identity of each row of a U-Net input ``x`` that is a slice of this batch; None for the whole
        batch, for inputs that are not its rows (tiles, crops, another batch), or when it cannot tell. The
        comparison reads a few values back from the device, so only sliced calls pay for it."""
        if (x.dim() != len(self.shape) or x.shape[2:] != self.shape[2:] or x.shape[1] < self.shape[1]
                or x.shape[0] >= self.shape[0]):
            return None
        likeness = _directions(x, self.shape[1]) @ self.directions.T
        best, index = likeness.max(dim=1)
        if bool((best < 1 - SAME).any()):
            return None
        return tuple(self._identities[i] for i in index.tolist())

    @cached_property
    def _identities(self) -> list[int]:
        """Each row's identity: the first row of equal content."""
        same = (self.directions @ self.directions.T) >= 1 - SAME
        return [int(row.nonzero()[0]) for row in same]


def row_keys(rows: tuple[int, ...], call: Hashable) -> tuple[RowKey, ...]:
    """Each row's key across calls: its identity, which occurrence of that identity in the call it is (a window's
    cond copy of a frame comes before its uncond copy), and ``call`` (the place among the step's calls with the same
    rows, tag, per-row shape, dtype, device)."""
    seen: dict[int, int] = {}
    keys = []
    for row in rows:
        seen[row] = seen.get(row, -1) + 1
        keys.append((row, seen[row], call))
    return tuple(keys)

"""Where cached features live: one ``Slot`` per kind of U-Net call, kept in the run's ``SlotStore``.

A slot holds what a retrieval pass of its kind of call needs: the tensor the cached block produced on the slot's
last full pass, what every other skipped block returns (zeros of its real output's shape, one tensor per shape for
the whole run) and the input shapes a retrieval compares with the full pass. Calls that carry slices of the
denoiser batch (AnimateDiff's windows) also record, per row, which slot holds that row's features, so a call that
groups the rows differently on a retrieval step can gather them (``rows``).
"""
from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, field

import torch

from .rows import RowKey

Role = tuple[str, int]  # ("in", i), ("mid", 0) or ("out", j)


def with_rows(shape: torch.Size, rows: int) -> torch.Size:
    return torch.Size((rows, *shape[1:]))


@dataclass
class Slot:
    """What one kind of U-Net call (the denoiser rows it carries and its place among the step's calls with those
    rows, tag, input shape/dtype/device) needs on a retrieval.

    ``shapes`` and ``inputs`` hold a key for every block from the start, and ``skipped`` is filled between passes,
    so a compiled U-Net sees dicts of one layout on every pass and never recompiles for them."""

    shapes: dict[Role, tuple[torch.Size, torch.dtype] | None]  # each block's output on the last full pass
    inputs: dict[Role, torch.Size | None]  # each block's input shape on the last full pass
    cached: torch.Tensor | None = None
    previous: torch.Tensor | None = None  # ``cached`` of the full pass before (forecast runs only)
    cached_t: float = math.nan  # the timestep of the full pass that made ``cached`` (``previous_t``: ``previous``)
    previous_t: float = math.nan
    probe: torch.Tensor | None = None  # the adaptive schedule's probe on the last full pass (``refresh``)
    skipped: dict[Role, torch.Tensor] = field(default_factory=dict)  # what each skipped block returns
    satellite_shapes: dict[Hashable, tuple[torch.Size, torch.dtype]] = field(default_factory=dict)
    refreshed_step: int = -1
    segment: int = -1

    def fresh(self, since: int, segment: int) -> bool:
        """It holds features of a full pass made at step ``since`` or later, in segment ``segment``."""
        return self.cached is not None and self.segment == segment and self.refreshed_step >= since

    def forecast(self, t: float) -> torch.Tensor | None:
        """The cached deep features extrapolated to timestep ``t`` from the slot's last two full passes (first
        order in the timestep), or None when there is no line to extend (one full pass so far, a timestep that is
        not a number, two passes at one timestep)."""
        span = self.cached_t - self.previous_t
        if self.previous is None or not (math.isfinite(t) and math.isfinite(span)) or span == 0:
            return None
        slope = (t - self.cached_t) / span
        return torch.lerp(self.previous, self.cached, 1.0 + slope)  # cached + slope * (cached - previous)


def rows_of(sources: list[tuple[Slot, int]], name: str) -> torch.Tensor | None:
    """Each row's tensor ``name`` taken from the slot that holds the row, stacked (None when one of them has none)."""
    tensors = [getattr(source, name) for source, _ in sources]
    return None if None in tensors else torch.stack([t[index] for t, (_, index) in zip(tensors, sources)])


class SlotStore:
    """The slots of one run, the zero tensors their skipped blocks return, and which slot holds each row."""

    def __init__(self, roles: tuple[Role, ...], skipped_roles: frozenset[Role], forecast: bool = False) -> None:
        self.roles = roles
        self.skipped_roles = skipped_roles  # blocks that return zeros on a retrieval (not computed, not cached)
        self.forecast = forecast  # retrievals extrapolate: full passes keep the features they replace
        self.slots: dict[Hashable, Slot] = {}
        self.zeros: dict[tuple, torch.Tensor] = {}  # one zero tensor per shape, for skipped blocks
        self.row_sources: dict[RowKey, tuple[Slot, int]] = {}  # a row's slot and place in it
        self.rows_before: dict[RowKey, tuple[torch.Tensor, float, int]] = {}  # forecast: a row's features, timestep
        # and segment on the full step before (its slot was dropped when this one began)

    def slot(self, key: Hashable) -> Slot:
        """The slot of calls of kind ``key``, empty the first time."""
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = Slot(dict.fromkeys(self.roles), dict.fromkeys(self.roles))
        return slot

    def refreshed(self, slot: Slot, step: int, segment: int, row_keys: tuple[RowKey, ...] | None,
                  t: float) -> None:
        """A full pass of ``slot`` at timestep ``t`` ended at ``step``: its features serve retrievals from now on.
        The features it replaced (kept by forecast runs) stay as ``previous`` only from the same segment and shape."""
        if slot.cached is None or None in slot.shapes.values():
            return
        previous_t = slot.cached_t
        if slot.previous is not None and slot.segment != segment:
            slot.previous = None
        elif slot.previous is None and row_keys and self.forecast:
            slot.previous, previous_t = self._rows_before(row_keys, segment)
        if slot.previous is not None and slot.previous.shape != slot.cached.shape:
            slot.previous = None
        slot.previous_t, slot.cached_t = previous_t, t
        slot.refreshed_step, slot.segment = step, segment
        self._fill_skipped(slot)
        for index, key in enumerate(row_keys or ()):
            self.row_sources[key] = (slot, index)

    def gather(self, slot: Slot, keys: tuple[RowKey, ...], since: int, segment: int) -> bool:
        """Fill ``slot`` with each of its rows' features from whichever call carried that row on the full step:
        AnimateDiff's windows move to other frames at every step, yet every frame was in some window then. False
        (the call runs in full) when a row was in no call of that step."""
        sources = [self.row_sources.get(key) for key in keys]
        if any(source is None or not source[0].fresh(since, segment) for source in sources):
            return False
        donor, n = sources[0][0], len(keys)
        slot.shapes = {role: (with_rows(shape, n), dtype) for role, (shape, dtype) in donor.shapes.items()}
        slot.inputs = {role: with_rows(shape, n) for role, shape in donor.inputs.items()}
        slot.satellite_shapes = {key: (with_rows(shape, n), dtype)
                                 for key, (shape, dtype) in donor.satellite_shapes.items()}
        slot.cached = rows_of(sources, "cached")
        slot.previous, slot.probe = rows_of(sources, "previous"), rows_of(sources, "probe")
        slot.cached_t, slot.previous_t = donor.cached_t, donor.previous_t
        slot.refreshed_step = min(source.refreshed_step for source, _ in sources)
        slot.segment = donor.segment
        self._fill_skipped(slot)
        return True

    def drop_sliced(self) -> None:
        """A full step begins: the slots of sliced calls (one per grouping of rows, and AnimateDiff's windows take
        new groupings all the time) are refilled by this step's calls, so the old ones go rather than pile up. A
        forecast run keeps each row's features for the line its new slot extends."""
        if self.forecast:
            self.rows_before = {key: (slot.cached[index], slot.cached_t, slot.segment)
                                for key, (slot, index) in self.row_sources.items()}
        self.slots = {key: slot for key, slot in self.slots.items() if key[0] is None}
        self.row_sources.clear()

    def clear(self) -> None:
        """Forget every cached tensor (the model's weights changed under them)."""
        self.slots.clear()
        self.row_sources.clear()
        self.rows_before.clear()

    def _rows_before(self, keys: tuple[RowKey, ...], segment: int) -> tuple[torch.Tensor | None, float]:
        """The features of ``keys``' rows on the full step before, stacked, and its timestep (None when a row was
        not carried then, or the steps differ in timestep or segment)."""
        kept = [self.rows_before.get(key) for key in keys]
        if any(k is None or k[2] != segment or k[1] != kept[0][1] for k in kept):
            return None, math.nan
        return torch.stack([k[0] for k in kept]), kept[0][1]

    def _fill_skipped(self, slot: Slot) -> None:
        slot.skipped = {role: self._zeros(*slot.shapes[role], slot.cached.device)
                        for role in self.roles if role in self.skipped_roles}

    def _zeros(self, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """What a skipped block returns: only other skipped blocks read it, so one tensor per shape serves every
        skipped block of every retrieval pass of the run (no allocation per block per pass)."""
        key = (shape, dtype, device)
        zeros = self.zeros.get(key)
        if zeros is None:
            zeros = self.zeros[key] = torch.zeros(shape, dtype=dtype, device=device)
        return zeros

"""Where a pass is decided: one sampling run's plan, and for each U-Net call whether it runs in full or retrieves.

A *pass* is one U-Net call (or one sweep of a loop that calls the blocks itself). It is decided before its first
block runs: the step clock places it in a sampler step, the plan says whether that step is full, and the call's
slot says whether features of the step's last full pass are there to reuse. The block wrappers (``blocks``) only
read that decision.
"""
from __future__ import annotations

import math
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch

from .clock import StepClock
from .params import DeepCacheParams
from .refresh import AdaptiveRefresh
from .rows import DenoiserBatch, RowKey, row_keys
from .schedule import plan_full_steps
from .slots import Role, Slot, SlotStore
from .stats import RunStats
from .structure import UNetLayout


@dataclass
class Pass:
    step: int
    slot: Slot
    retrieve: bool
    started: float
    row_keys: tuple[RowKey, ...] | None = None  # each row's key in the store's ``row_sources`` (sliced calls only)
    in_unet: bool = False  # False while a module that runs before the U-Net's blocks (a ControlNet) holds it
    by_blocks: bool = False  # opened by input_blocks[0], not by the U-Net's call: its last block ends it
    blocks_started: bool = False  # its input_blocks[0] has run: another one opens the next pass
    probing: bool = False  # the first call of an undecided adaptive step: its probe decides the step (``refresh``)
    t: float = math.nan  # the call's timestep
    served: torch.Tensor | None = None  # what the cached block returns on a retrieval, when not ``slot.cached``


@dataclass
class Run:
    """State of one sampling run: the plan, the clock, the slots, the stats."""

    params: DeepCacheParams
    plan: tuple[bool, ...]
    last_full: tuple[int, ...]
    clock: StepClock
    computed: frozenset[Role]
    provider: Role
    checked: frozenset[Role]  # the blocks whose input shape a retrieval pass compares with the slot's full pass
    probe_role: Role  # the first block a retrieval skips: its input is the adaptive schedule's probe
    store: SlotStore
    refresh: AdaptiveRefresh | None = None  # the adaptive schedule's decisions (None: the plan decides)
    stats: RunStats = field(default_factory=RunStats)
    calls_in_step: dict[tuple[int, ...] | None, int] = field(default_factory=dict)  # per rows carried

    @classmethod
    def plan_run(cls, params: DeepCacheParams, total_steps: int, layout: UNetLayout, roles: tuple[Role, ...],
                 schedule: Sequence[float] | None) -> Run:
        """The run of ``total_steps`` steps with branch ``params.branch`` of ``layout``: which steps are full,
        which blocks a retrieval computes, which one hands out the cached tensor."""
        n, k = layout.depth, params.branch
        plan = plan_full_steps(params, total_steps)
        last_full, latest = [], 0
        for i, full in enumerate(plan):
            latest = i if full else latest
            last_full.append(latest)
        computed = frozenset([("in", i) for i in range(k + 1)] + [("out", j) for j in range(n - 1 - k, n)])
        provider = ("out", n - 2 - k) if k < n - 1 else ("mid", 0)
        checked = frozenset([("in", i) for i in range(1, min(k + 2, n))] + ([("mid", 0)] if k == n - 1 else []))
        skipped = frozenset(role for role in roles if role not in computed and role != provider)
        probe_role = ("in", k + 1) if k < n - 1 else ("mid", 0)
        refresh = AdaptiveRefresh(params.threshold, params.interval) if params.schedule == "adaptive" else None
        run = cls(params, plan, tuple(last_full), StepClock(schedule), computed, provider, checked, probe_role,
                  SlotStore(roles, skipped, params.forecast), refresh=refresh)
        run.stats.total_steps = total_steps
        return run

    @property
    def slots(self) -> dict[Hashable, Slot]:
        return self.store.slots

    def open_pass(self, t: float, tag: Hashable, x: torch.Tensor, evaluation_step: int | None,
                  batch: DenoiserBatch | None) -> Pass:
        """Decide the pass of a call with input ``x`` at timestep ``t``: full on a planned-full step, else a
        retrieval when its slot (or, for a slice of the batch, each of its rows) holds features of the step's
        last full pass."""
        clock, store = self.clock, self.store
        before = (clock.step, clock.segment)
        step = clock.locate(t, evaluation_step)
        planned_full = step >= len(self.plan) or self.plan[step]
        since = self.last_full[min(step, len(self.plan) - 1)]
        deciding = False
        if self.refresh is not None:  # the adaptive schedule: decided, forced full, or decided by this call's probe
            full = self.refresh.step_is_full(clock.segment, step, planned_full)
            planned_full, deciding, since = bool(full), full is None, self.refresh.latest_full
        if (step, clock.segment) != before:
            self.calls_in_step.clear()
            if planned_full:
                store.drop_sliced()
        rows = batch.rows_of(x) if batch is not None else None
        nth = self.calls_in_step[rows] = self.calls_in_step.get(rows, -1) + 1
        slot = store.slot((rows, nth, tag, tuple(x.shape), x.dtype, x.device))
        keys = None if rows is None else row_keys(rows, (nth, tag, tuple(x.shape[1:]), x.dtype, x.device))
        fresh = slot.fresh(since, clock.segment) or (
            not planned_full and keys is not None and store.gather(slot, keys, since, clock.segment))
        if deciding and not fresh:  # nothing to compare with: the step runs in full
            self.refresh.decide(clock.segment, step, full=True)
        self.stats.steps_seen.add(step)
        retrieve = not planned_full and fresh
        served = slot.forecast(t) if retrieve and self.params.forecast else None
        return Pass(step, slot, retrieve=retrieve, started=time.perf_counter(), row_keys=keys,
                    probing=deciding and fresh, t=t, served=served)

    @torch.compiler.disable
    def stale(self, p: Pass, probe: torch.Tensor) -> bool:
        """The probing pass ``p`` reached its first skipped block with ``probe``: True when it must go on in full
        (a host read, so a compiled U-Net breaks its graph here, on adaptive runs only)."""
        p.probing = False
        return self.refresh.probe(self.clock.segment, p.step, probe, p.slot.probe)

    def close_pass(self, p: Pass) -> None:
        """Count the pass; a full one's features now serve its slot's retrievals."""
        elapsed = time.perf_counter() - p.started
        stats = self.stats
        if p.retrieve:
            stats.cached_passes += 1
            stats.cached_seconds += elapsed
            stats.steps_with_cached_pass.add(p.step)
        else:
            stats.full_passes += 1
            stats.full_seconds += elapsed
            stats.steps_with_full_pass.add(p.step)
            self.store.refreshed(p.slot, p.step, self.clock.segment, p.row_keys, p.t)

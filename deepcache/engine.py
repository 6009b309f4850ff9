"""The DeepCache engine: block wrappers, per-pass decisions and cache slots, kept apart from the model.

Every block of the U-Net stays a block: DeepCache sets an instance ``forward`` on each ``input_blocks[i]``,
``middle_block`` and ``output_blocks[j]`` and is reached through ``module(...)``, so forward pre-hooks
(A1111 ``--lowvram``) still fire and an outer loop that re-implements the U-Net forward but calls each block
(sd-webui-controlnet does) is sped up too; where the U-Net reaches its blocks through ComfyUI's per-block
function instead, that call site routes them (``blockhooks``). A forward pre-hook on the U-Net reads each
call's timestep.

On a retrieval pass with branch ``k`` of a U-Net with ``n`` input blocks, ``input_blocks[0..k]`` and
``output_blocks[n-1-k..n-1]`` run; ``output_blocks[n-2-k]`` (the middle block when ``k = n-1``) returns the
output it produced on the last full pass of the same slot, so ``output_blocks[n-1-k]`` sees that cached
tensor concatenated with its fresh skip; every other block returns zeros of its real output's shape, dtype
and device, which only ever flow into other skipped blocks.
"""
from __future__ import annotations

import time
import types
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .blockhooks import BlockHooks, hooks_for
from .params import DeepCacheParams
from .rows import DenoiserBatch, RowKey, row_keys
from .schedule import plan_full_steps
from .stats import RunStats
from .structure import UNetLayout, inspect_unet

Role = tuple[str, int]  # ("in", i), ("mid", 0) or ("out", j)
OWNER_ATTR = "_deepcache_engine"  # on a hooked U-Net: the engine whose wrappers are on its blocks


def timestep_arg(args: tuple, kwargs: dict, position: int = 1) -> float | None:
    """The timestep of a U-Net call ``(x, timesteps, ...)`` or a ControlNet call ``(x, hint, timesteps, ...)``
    (``position`` 2), or ``timesteps=``."""
    t = kwargs["timesteps"] if "timesteps" in kwargs else args[position] if len(args) > position else None
    if t is None:
        return None
    return float(t.reshape(-1)[0]) if isinstance(t, torch.Tensor) else float(t)


def own_code(function: Callable, name: str) -> Callable:
    """``function`` with a code object of its own. A compiler that falls back to compiling each block call on its
    own (a graph break inside the U-Net's loop, as in Forge's backend) caches compiled frames per code object: with
    one shared code object, the wrappers of different blocks would evict each other until dynamo hits its
    recompile limit and gives up; with one each, every block's wrapper is compiled once per kind of pass."""
    code = function.__code__.replace(co_name=name, co_qualname=name)
    return types.FunctionType(code, function.__globals__, name, function.__defaults__, function.__closure__)


class EngineConflict(RuntimeError):
    """Another DeepCache engine already hooks this U-Net; wrappers of two engines must never stack."""


class StepClock:
    """Maps each U-Net call's timestep to a sampler step.

    When the webui says which sampler step an evaluation belongs to (``DeepCacheEngine.note_evaluation``), that
    step is used. Otherwise, with the run's schedule (the timestep of each step, as the U-Net receives it), a
    call belongs to the step whose interval contains its timestep, so extra evaluations inside a step and
    separate cond/uncond calls never move the counter (an evaluation made exactly at, or below, the next step's
    timestep counts with that next step). Without a schedule, every change of timestep is a new step (exact
    for one-evaluation samplers). A move back to an earlier step (Restart's sigma jumps, a new run without
    ``begin_run``) opens a new *segment*: nothing cached before it is reused.
    """

    def __init__(self, schedule: Sequence[float] | None) -> None:
        self.schedule = [float(t) for t in schedule] if schedule else None
        self.step = -1
        self.segment = 0
        self.last_t: float | None = None

    def locate(self, t: float, step: int | None = None) -> int:
        """The step of a call at timestep ``t`` (``step`` when the webui told it)."""
        if step is None:
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
    skipped: dict[Role, torch.Tensor] = field(default_factory=dict)  # what each skipped block returns
    satellite_shapes: dict[Hashable, tuple[torch.Size, torch.dtype]] = field(default_factory=dict)
    refreshed_step: int = -1
    segment: int = -1


@dataclass
class Pass:
    step: int
    slot: Slot
    retrieve: bool
    started: float
    row_keys: tuple[RowKey, ...] | None = None  # each row's key in ``Run.row_sources`` (sliced calls only)
    in_unet: bool = False  # False while a module that runs before the U-Net's blocks (a ControlNet) holds it
    by_blocks: bool = False  # opened by input_blocks[0], not by the U-Net's call: its last block ends it
    blocks_started: bool = False  # its input_blocks[0] has run: another one opens the next pass


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
    slots: dict[Hashable, Slot] = field(default_factory=dict)
    zeros: dict[tuple, torch.Tensor] = field(default_factory=dict)  # one zero tensor per shape, for skipped blocks
    stats: RunStats = field(default_factory=RunStats)
    calls_in_step: dict[tuple[int, ...] | None, int] = field(default_factory=dict)  # per rows carried
    row_sources: dict[RowKey, tuple[Slot, int]] = field(default_factory=dict)  # a row's slot and place in it


class DeepCacheEngine:
    """Install on one U-Net, then bracket every sampling run with ``begin_run`` / ``end_run``.

    Outside a run, or in a run with DeepCache disabled, the wrappers only call the original blocks.
    """

    def __init__(self) -> None:
        self.unet: nn.Module | None = None
        self.layout: UNetLayout | None = None
        self._hooks: BlockHooks | None = None
        self._unet_hooks: list[Any] = []
        self._roles: tuple[Role, ...] = ()
        self._read_calls = True
        self._install_token = object()  # wrappers of an earlier install, left inside someone's wrapper, go inert
        self._run: Run | None = None
        self._pass: Pass | None = None
        self._pending: tuple[float, Hashable] | None = None
        self._last_seen: tuple[float, Hashable] | None = None
        self._evaluation_step: int | None = None
        self._batch: DenoiserBatch | None = None

    # ---- install / uninstall -------------------------------------------------------------------------
    def install(self, unet: nn.Module, read_calls: bool = True) -> UNetLayout:
        """Wrap the blocks of ``unet`` (idempotent for the same U-Net), the way its forward reaches them
        (``blockhooks.hooks_for``). Raises ``UnsupportedModel``.

        ``read_calls``: read each call's timestep with a forward pre-hook on ``unet``; pass False when the
        caller reports calls itself through ``note_call`` (Forge's U-Net function wrapper does)."""
        if self.unet is unet:
            return self.layout
        owner = unet.__dict__.get(OWNER_ATTR)
        if owner is not None:
            raise EngineConflict("this U-Net is already hooked by another DeepCache engine; uninstall that one first")
        self.uninstall()
        layout = inspect_unet(unet)
        self._install_token = token = object()
        roles: list[tuple[nn.Module, Role]] = [(b, ("in", i)) for i, b in enumerate(layout.input_blocks)]
        roles.append((layout.middle_block, ("mid", 0)))
        roles += [(b, ("out", j)) for j, b in enumerate(layout.output_blocks)]
        self._roles = tuple(role for _, role in roles)
        hooks = self._hooks = hooks_for(layout.input_blocks[0])
        for block, role in roles:
            hooks.wrap(block, lambda original, role=role: self._make_wrapper(
                original, role, role == ("in", 0), role == ("out", len(layout.output_blocks) - 1), token))
        self._read_calls = read_calls
        self._unet_hooks = [unet.register_forward_pre_hook(self._unet_starts, with_kwargs=True),
                            unet.register_forward_hook(self._unet_ends, always_call=True)]
        unet.__dict__[OWNER_ATTR] = self
        self.unet, self.layout = unet, layout
        return layout

    def uninstall(self) -> None:
        """Remove everything DeepCache put on the model. A block whose ``forward`` someone else replaced after
        us keeps theirs (we cannot unwrap it without breaking them); our wrapper inside it only passes through."""
        self.end_run()
        self._install_token = object()
        if self._hooks is not None:
            self._hooks.restore()
        self._hooks = None
        for hook in self._unet_hooks:
            hook.remove()
        self._unet_hooks = []
        if self.unet is not None and self.unet.__dict__.get(OWNER_ATTR) is self:
            del self.unet.__dict__[OWNER_ATTR]
        self.unet = self.layout = None

    @property
    def installed(self) -> bool:
        return self.unet is not None

    # ---- runs ------------------------------------------------------------------------------------------
    def begin_run(self, params: DeepCacheParams, total_steps: int,
                  schedule: Sequence[float] | None = None) -> None:
        """Start a sampling run of ``total_steps`` steps (a fresh schedule: new batch, hires pass, img2img).

        ``schedule`` is the timestep (in the units the U-Net receives) of each step, highest first; pass it
        whenever it is known. Raises ``ValueError`` when the branch does not exist in this U-Net.
        """
        self.end_run()
        if self.layout is None or not params.enabled:
            return
        self.check_branch(params.branch)
        n, k = self.layout.depth, params.branch
        plan = plan_full_steps(params, total_steps)
        last_full, latest = [], 0
        for i, full in enumerate(plan):
            latest = i if full else latest
            last_full.append(latest)
        computed = frozenset([("in", i) for i in range(k + 1)] + [("out", j) for j in range(n - 1 - k, n)])
        provider = ("out", n - 2 - k) if k < n - 1 else ("mid", 0)
        checked = frozenset([("in", i) for i in range(1, min(k + 2, n))] + ([("mid", 0)] if k == n - 1 else []))
        self._run = Run(params, plan, tuple(last_full), StepClock(schedule), computed, provider, checked)
        self._run.stats.total_steps = total_steps

    def check_branch(self, branch: int) -> None:
        """Raise ``ValueError`` when the installed U-Net has no branch ``branch`` (SDXL stops at 8)."""
        if branch > self.layout.max_branch:
            raise ValueError(f"DeepCache parameter 'branch' must be int in [0, {self.layout.max_branch}] for this "
                             f"model ({self.layout.depth} input blocks), got {branch}")

    def end_run(self) -> RunStats | None:
        """Finish the current run, drop its cached tensors and return its stats (None if there was none)."""
        run, self._run, self._pass = self._run, None, None
        self._pending = self._last_seen = self._evaluation_step = self._batch = None
        return run.stats if run is not None else None

    @property
    def stats(self) -> RunStats | None:
        return self._run.stats if self._run is not None else None

    def invalidate(self) -> None:
        """Forget every cached tensor of the current run (the model's weights changed under it)."""
        if self._run is not None:
            self._run.slots.clear()
            self._run.row_sources.clear()

    # ---- per call ----------------------------------------------------------------------------------------
    def note_call(self, timestep: float, tag: Hashable = None) -> None:
        """The U-Net is about to be called at ``timestep``; ``tag`` separates kinds of calls (cond/uncond)."""
        if self._run is not None:
            self._pending = (timestep, tag)

    def note_evaluation(self, step: int) -> None:
        """The sampler is evaluating the denoiser for its step ``step``: every U-Net call until the next note
        follows that step's plan, also the second evaluation of Heun or DPM++ 2S a, which is made at (or below)
        the next step's noise level. Webuis that can tell the step report it for two-evaluation samplers."""
        if self._run is not None:
            self._evaluation_step = step

    def note_batch(self, x: torch.Tensor) -> None:
        """The denoiser is evaluating the batch ``x`` (every row its U-Net calls may carry). A call that carries a
        slice of it (AnimateDiff's context windows) then reuses only features of a call with the same rows
        (``rows``); webuis that can tell the batch report it at every evaluation."""
        if self._run is not None:
            self._batch = DenoiserBatch(x)

    # ---- for modules that run inside a U-Net call, before its blocks (ControlNet) -----------------------------
    @property
    def running(self) -> bool:
        return self._run is not None

    @property
    def branch(self) -> int:
        return self._run.params.branch

    def current_pass(self) -> Pass | None:
        return self._pass

    def open_pass(self, x: torch.Tensor) -> Pass | None:
        """The pass of the U-Net call about to run, opened now if the U-Net's blocks have not opened it; the
        U-Net call then joins it instead of opening another. A ControlNet runs before the U-Net's blocks (before
        the call in Forge, inside its forward in sd-webui-controlnet), so it can only skip its deep part once this
        decision is made."""
        if self._pass is None:
            self._start_pass(x)
        return self._pass

    def note_timestep(self, t: float) -> None:
        """A module that runs before the U-Net call (Forge's ControlNet) reports the call's timestep, unless a
        pass is already open for it."""
        if self._run is not None and self._pass is None:
            self._pending = (t, None)

    def _held_before_unet(self) -> bool:
        """A pass is open that a module running before the U-Net's blocks opened for the coming U-Net call."""
        return self._pass is not None and not self._pass.in_unet

    @torch.compiler.disable
    def _unet_starts(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Forward pre-hook on the U-Net: read the call's timestep (unless the webui reports it), open its pass.
        Every decision is made here, outside the U-Net's forward, so a compiled U-Net sees no graph break."""
        if self._run is None:
            return
        if self._read_calls:
            t = timestep_arg(args, kwargs)
            if t is None:
                self._pending = None
            else:
                self.note_call(t)
        x = args[0] if args else kwargs.get("x")
        if isinstance(x, torch.Tensor):
            self._enter(x)

    @torch.compiler.disable
    def _blocks_enter(self, x: torch.Tensor) -> Pass | None:
        """``input_blocks[0]`` reached outside a U-Net call (a loop calling the blocks itself), or a second time
        inside one (reference-only runs the blocks on its reference before the real pass): the pass so far ends,
        and the next one opens, with a slot of its own."""
        if self._pass is not None and self._pass.blocks_started:
            self._end_pass()
        self._enter(x)
        if self._pass is not None:
            self._pass.by_blocks = True
        return self._pass

    def _enter(self, x: torch.Tensor) -> None:
        if self._held_before_unet():
            self._pending = None  # this call's own report (Forge) came after the ControlNet opened the pass
        else:
            self._start_pass(x)
        if self._pass is not None:
            self._pass.in_unet = True

    @torch.compiler.disable
    def _unet_ends(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._end_pass()

    def _start_pass(self, x: torch.Tensor) -> None:
        run = self._run
        seen = self._pending or self._last_seen  # an extra pass without a U-Net call: same timestep
        self._pending, self._last_seen = None, seen
        if run is None or seen is None:
            self._pass = None
            return
        t, tag = seen
        before = (run.clock.step, run.clock.segment)
        step = run.clock.locate(t, self._evaluation_step)
        if (step, run.clock.segment) != before:
            run.calls_in_step.clear()
            if step < len(run.plan) and run.plan[step]:
                self._drop_sliced_slots()
        rows = self._batch.rows_of(x) if self._batch is not None else None
        nth = run.calls_in_step[rows] = run.calls_in_step.get(rows, -1) + 1
        key = (rows, nth, tag, tuple(x.shape), x.dtype, x.device)
        slot = run.slots.get(key)
        if slot is None:
            slot = run.slots[key] = Slot(dict.fromkeys(self._roles), dict.fromkeys(self._roles))
        keys = None if rows is None else row_keys(rows, (nth, tag, tuple(x.shape[1:]), x.dtype, x.device))
        planned_full = step >= len(run.plan) or run.plan[step]
        since = run.last_full[min(step, len(run.plan) - 1)]
        fresh = self._fresh(slot, since) or (not planned_full and keys is not None and self._gather(slot, keys, since))
        self._pass = Pass(step, slot, retrieve=not planned_full and fresh, started=time.perf_counter(), row_keys=keys)
        run.stats.steps_seen.add(step)

    def _drop_sliced_slots(self) -> None:
        """A full step begins: the slots of sliced calls (one per grouping of rows, and AnimateDiff's windows take
        new groupings all the time) are refilled by this step's calls, so the old ones go rather than pile up."""
        run = self._run
        run.slots = {key: slot for key, slot in run.slots.items() if key[0] is None}
        run.row_sources.clear()

    def _fresh(self, slot: Slot, since: int) -> bool:
        """The slot holds features of a full pass made at step ``since`` or later, in the current segment."""
        return (slot.cached is not None and slot.segment == self._run.clock.segment
                and slot.refreshed_step >= since)

    def _gather(self, slot: Slot, keys: tuple[RowKey, ...], since: int) -> bool:
        """Fill ``slot`` with each of its rows' features from whichever call carried that row on the full step:
        AnimateDiff's windows move to other frames at every step, yet every frame was in some window then. False
        (the call runs in full) when a row was in no call of that step."""
        sources = [self._run.row_sources.get(key) for key in keys]
        if any(source is None or not self._fresh(source[0], since) for source in sources):
            return False
        donor, n = sources[0][0], len(keys)
        slot.shapes = {role: (with_rows(shape, n), dtype) for role, (shape, dtype) in donor.shapes.items()}
        slot.inputs = {role: with_rows(shape, n) for role, shape in donor.inputs.items()}
        slot.satellite_shapes = {key: (with_rows(shape, n), dtype)
                                 for key, (shape, dtype) in donor.satellite_shapes.items()}
        slot.cached = torch.stack([source.cached[index] for source, index in sources])
        slot.refreshed_step = min(source.refreshed_step for source, _ in sources)
        slot.segment = donor.segment
        self._fill_skipped(slot)
        return True

    def _fill_skipped(self, slot: Slot) -> None:
        run = self._run
        slot.skipped = {role: self._zeros(*slot.shapes[role], slot.cached.device)
                        for role in self._roles if role not in run.computed and role != run.provider}

    def _end_pass(self) -> None:
        run, p = self._run, self._pass
        self._pass = None
        if run is None or p is None:
            return
        elapsed = time.perf_counter() - p.started
        if p.retrieve:
            run.stats.cached_passes += 1
            run.stats.cached_seconds += elapsed
            run.stats.steps_with_cached_pass.add(p.step)
        else:
            run.stats.full_passes += 1
            run.stats.full_seconds += elapsed
            run.stats.steps_with_full_pass.add(p.step)
            if p.slot.cached is not None and None not in p.slot.shapes.values():
                p.slot.refreshed_step, p.slot.segment = p.step, run.clock.segment
                self._fill_skipped(p.slot)
                for index, key in enumerate(p.row_keys or ()):
                    run.row_sources[key] = (p.slot, index)

    def _zeros(self, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """What a skipped block returns: only other skipped blocks read it, so one tensor per shape serves every
        skipped block of every retrieval pass of the run (no allocation per block per pass)."""
        key = (shape, dtype, device)
        zeros = self._run.zeros.get(key)
        if zeros is None:
            zeros = self._run.zeros[key] = torch.zeros(shape, dtype=dtype, device=device)
        return zeros

    def _make_wrapper(self, original: Callable, role: Role, starts: bool, ends: bool, token: object) -> Callable:
        """The block's wrapper reads only what the U-Net's pre-hook decided, so that a compiled U-Net traces it
        whole (one graph per kind of pass: off, full, retrieval)."""
        engine = self

        def deepcache_block_forward(*args: Any, **kwargs: Any) -> Any:
            run, p = engine._run, engine._pass
            if run is None or engine._install_token is not token:
                return original(*args, **kwargs)
            if starts:
                if p is None or not p.in_unet or p.blocks_started:
                    p = engine._blocks_enter(args[0])
                if p is not None:
                    p.blocks_started = True
            if p is None:
                return original(*args, **kwargs)
            if p.retrieve:
                if role in run.checked and args[0].shape != p.slot.inputs[role]:
                    p.retrieve = False  # a shape inside the U-Net changed since the slot's full pass: refresh
                elif role not in run.computed:
                    if role == run.provider:
                        return p.slot.cached.clone()
                    return p.slot.skipped[role]
            out = original(*args, **kwargs)
            if not p.retrieve:
                p.slot.shapes[role] = (out.shape, out.dtype)
                p.slot.inputs[role] = args[0].shape
                if role == run.provider:
                    p.slot.cached = out.detach().clone()
            if ends and p.by_blocks:
                engine._end_pass()
            return out

        return own_code(deepcache_block_forward, f"deepcache_block_forward_{role[0]}{role[1]}")

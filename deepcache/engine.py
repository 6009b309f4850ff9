"""The DeepCache engine: installs the block wrappers on one U-Net and brackets its sampling runs.

Every block of the U-Net stays a block: DeepCache sets an instance ``forward`` on each ``input_blocks[i]``,
``middle_block`` and ``output_blocks[j]`` and is reached through ``module(...)``, so forward pre-hooks
(A1111 ``--lowvram``) still fire and an outer loop that re-implements the U-Net forward but calls each block
(sd-webui-controlnet does) is sped up too; where the U-Net reaches its blocks through ComfyUI's per-block
function instead, that call site routes them (``blockhooks``). A forward pre-hook on the U-Net reads each
call's timestep and opens its pass.

The rooms: ``clock`` places a call in a sampler step, ``passes`` decides each pass (``refresh`` for the adaptive
schedule), ``slots`` keeps what a retrieval reuses, ``blocks`` serves a block from cache; this module connects them
to the model and the webui's reports.
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch
from torch import nn

from .blockhooks import BlockHooks, hooks_for
from .blocks import Installation, make_block_wrapper
from .clock import timestep_arg
from .params import DeepCacheParams
from .passes import Pass, Run
from .rows import DenoiserBatch
from .slots import Role
from .stats import RunStats
from .structure import UNetLayout, inspect_unet

OWNER_ATTR = "_deepcache_engine"  # on a hooked U-Net: the engine whose wrappers are on its blocks


class EngineConflict(RuntimeError):
    """Another DeepCache engine already hooks this U-Net; wrappers of two engines must never stack."""


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
        self._installation: Installation | None = None
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
        installation = self._installation = Installation(self)
        roles: list[tuple[nn.Module, Role]] = [(b, ("in", i)) for i, b in enumerate(layout.input_blocks)]
        roles.append((layout.middle_block, ("mid", 0)))
        roles += [(b, ("out", j)) for j, b in enumerate(layout.output_blocks)]
        self._roles = tuple(role for _, role in roles)
        hooks = self._hooks = hooks_for(layout.input_blocks[0])
        for block, role in roles:
            hooks.wrap(block, lambda original, role=role: make_block_wrapper(
                installation, original, role, role == ("in", 0), role == ("out", len(layout.output_blocks) - 1)))
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
        if self._installation is not None:
            self._installation.live = False
        self._installation = None
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
        self._run = Run.plan_run(params, total_steps, self.layout, self._roles, schedule)

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
            self._run.store.clear()

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

    @property
    def params(self) -> DeepCacheParams | None:
        """The parameters of the run in progress."""
        return self._run.params if self._run is not None else None

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
        seen = self._pending or self._last_seen  # an extra pass without a U-Net call: same timestep
        self._pending, self._last_seen = None, seen
        if self._run is None or seen is None:
            self._pass = None
            return
        t, tag = seen
        self._pass = self._run.open_pass(t, tag, x, self._evaluation_step, self._batch)

    def _end_pass(self) -> None:
        run, p = self._run, self._pass
        self._pass = None
        if run is not None and p is not None:
            run.close_pass(p)

"""Where a block is served from cache: the wrapper every U-Net block runs through while DeepCache is installed.

On a retrieval pass with branch ``k`` of a U-Net with ``n`` input blocks, ``input_blocks[0..k]`` and
``output_blocks[n-1-k..n-1]`` run; ``output_blocks[n-2-k]`` (the middle block when ``k = n-1``) returns the
output it produced on the last full pass of the same slot, so ``output_blocks[n-1-k]`` sees that cached tensor
concatenated with its fresh skip; every other block returns zeros of its real output's shape, dtype and device,
which only ever flow into other skipped blocks. A full pass runs every block and records what its slot needs.
"""
from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .slots import Role

if TYPE_CHECKING:
    from .engine import DeepCacheEngine


_CODES: dict[str, types.CodeType] = {}  # one code object per wrapper name, for the life of the process


def own_code(function: Callable, name: str) -> Callable:
    """``function`` with a code object of its own, the same one every time ``name`` is asked for.

    A compiler that falls back to compiling each block call on its own (a graph break inside the U-Net's loop, as
    in Forge's backend) caches compiled frames per code object: with one shared code object, the wrappers of
    different blocks would evict each other until dynamo hits its recompile limit and gives up; with one each,
    every block's wrapper is compiled once per kind of pass. Dynamo also guards a traced call on the callee's code
    object, so a code object made anew at every install would compile every frame again at every generation."""
    code = _CODES.get(name)
    if code is None or code.co_code != function.__code__.co_code:
        code = _CODES[name] = function.__code__.replace(co_name=name, co_qualname=name)
    return types.FunctionType(code, function.__globals__, name, function.__defaults__, function.__closure__)


@dataclass
class Installation:
    """One install of an engine's wrappers. When it ends, a wrapper someone else's wrapper still holds only calls
    the block. A flag, not an identity check against the engine, because a compiler guards a flag by its value
    but an identity by the object's address: a new install per generation would then compile every frame again."""

    engine: DeepCacheEngine
    live: bool = True


def make_block_wrapper(installation: Installation, original: Callable, role: Role, starts: bool,
                       ends: bool) -> Callable:
    """The wrapper of the block ``role``. It reads only what the engine decided before the U-Net's blocks ran, so
    that a compiled U-Net traces it whole (one graph per kind of pass: off, full, retrieval). ``starts``: the
    first input block (a loop that calls the blocks itself opens its passes there); ``ends``: the last output
    block. A wrapper of an installation that ended (left inside someone else's wrapper) only calls the block."""

    def deepcache_block_forward(*args: Any, **kwargs: Any) -> Any:
        engine = installation.engine
        run, p = engine._run, engine._pass
        if run is None or not installation.live:
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
            elif p.probing and role == run.probe_role and run.stale(p, args[0]):
                p.retrieve = False  # the adaptive schedule's probe says the cache is stale: refresh
            elif role not in run.computed:
                if role == run.provider:
                    return p.slot.cached.clone() if p.served is None else p.served
                return p.slot.skipped[role]
        out = original(*args, **kwargs)
        if not p.retrieve:
            p.slot.shapes[role] = (out.shape, out.dtype)
            p.slot.inputs[role] = args[0].shape
            if role == run.provider:
                if run.params.forecast:
                    p.slot.previous = p.slot.cached  # the line a forecast extends runs through both
                p.slot.cached = out.detach().clone()
            if role == run.probe_role and run.refresh is not None:
                p.slot.probe = args[0].detach().clone()
        if ends and p.by_blocks:
            engine._end_pass()
        return out

    return own_code(deepcache_block_forward, f"deepcache_block_forward_{role[0]}{role[1]}")

"""ControlNets that follow the engine's passes, so that a retrieval step skips the ControlNet's deep work too.

A ControlNet (the ``cldm`` architecture of sd-webui-controlnet and of Forge's built-in one) is a copy of the
U-Net's encoder: ``input_blocks[i]`` followed by ``zero_convs[i]`` gives the residual added to skip ``i``, and
``middle_block`` followed by ``middle_block_out`` the residual added to the middle block's output. On a
retrieval pass with branch ``k`` the U-Net computes only ``output_blocks[n-1-k..]``, which consume skips
``0..k``; every other residual reaches only blocks that return cached or zero tensors whatever they receive.
So the ControlNet needs only ``input_blocks[0..k]`` and ``zero_convs[0..k]`` (and, for ``k = n-1``, its middle
part), and skipping the rest gives the same image as running it in full. A skipped part returns zeros of the
shape it had when it last ran. Anything that is not this architecture (T2I-Adapter, reference-only,
IP-Adapter, ControlNet-LLLite, ...) is never attached and runs in full.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch import nn

from .blockhooks import Wrapped, restore_forwards, set_forward
from .blocks import Installation
from .clock import timestep_arg
from .engine import DeepCacheEngine

PARTS = ("input_blocks", "zero_convs", "middle_block", "middle_block_out")


def is_controlnet(module: Any) -> bool:
    """The ``cldm.ControlNet`` architecture: one zero conv per input block, and a middle part."""
    return (isinstance(module, nn.Module) and all(hasattr(module, part) for part in PARTS)
            and len(module.input_blocks) == len(module.zero_convs) > 0)


class ControlNetSatellites:
    """The ControlNets attached to one engine for a generation."""

    def __init__(self, engine: DeepCacheEngine) -> None:
        self.engine = engine
        self._wrapped: list[Wrapped] = []
        self._hooks: list[Any] = []
        self._attached: set[int] = set()
        self._installation = Installation(engine)  # a flag a compiler guards by value, as the blocks' (``blocks``)

    def attach(self, model: nn.Module) -> bool:
        """Make ``model`` follow the engine's passes; False (and nothing done) if it is not a ControlNet, or the
        engine's U-Net has another number of input blocks."""
        if id(model) in self._attached or not is_controlnet(model) or self.engine.layout is None:
            return False
        n = len(model.input_blocks)
        if n != self.engine.layout.depth:
            return False
        self._attached.add(id(model))
        parts: list[tuple[nn.Module, str, int]] = [(b, "in", i) for i, b in enumerate(model.input_blocks)]
        parts += [(c, "zero", i) for i, c in enumerate(model.zero_convs)]
        # the middle residual is consumed only at branch n-1, like the last skip's: same index
        parts += [(model.middle_block, "mid", n - 1), (model.middle_block_out, "mid_out", n - 1)]
        for module, kind, index in parts:
            key = (id(model), kind, index)
            self._wrapped.append(set_forward(module, lambda original, key=key, index=index, opens=key[1:] == (
                "in", 0): self._make_wrapper(original, key, index, opens, self._installation)))
        self._hooks.append(model.register_forward_pre_hook(self._read_timestep, with_kwargs=True))
        return True

    def detach_all(self) -> None:
        """Remove every wrapper and hook (end of the generation)."""
        self._installation.live = False
        self._installation = Installation(self.engine)
        restore_forwards(self._wrapped)
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self._attached.clear()

    def _read_timestep(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        t = timestep_arg(args, kwargs, position=2)
        if t is not None:
            self.engine.note_timestep(t)

    def _make_wrapper(self, original: Callable, key: Hashable, index: int, opens: bool,
                      installation: Installation) -> Callable:
        engine = self.engine

        def deepcache_controlnet_forward(*args: Any, **kwargs: Any) -> Any:
            if not installation.live or not engine.running:
                return original(*args, **kwargs)
            p = engine.open_pass(args[0]) if opens else engine.current_pass()
            if p is not None and p.retrieve and not p.probing and index > engine.branch:
                recorded = p.slot.satellite_shapes.get(key)
                if recorded is not None:
                    return torch.zeros(recorded[0], dtype=recorded[1], device=args[0].device)
            out = original(*args, **kwargs)
            if p is not None:
                p.slot.satellite_shapes[key] = (out.shape, out.dtype)
            return out

        return deepcache_controlnet_forward

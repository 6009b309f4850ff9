"""How DeepCache reaches a U-Net's blocks for the length of a generation, and leaves them as they were.

Most U-Nets call each block as ``module(...)`` (ldm, sgm, Forge's ``backend``): a block then gets an instance
``forward`` (``InstanceForwards``). ComfyUI's U-Net, which Forge Classic and reForge run as ``ldm_patched``,
instead calls a module-level function on each block, ``forward_timestep_embed(block, x, emb, ...)``, that runs
the block's layers itself, so a block's ``forward`` is never reached; that function is then replaced for the
generation by one that routes wrapped blocks through their wrappers (``CallSiteDispatch``).
"""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, Protocol

from torch import nn

CALL_SITE = "forward_timestep_embed"  # ComfyUI's per-block function (ldm_patched's openaimodel.py)

Wrapped = tuple[nn.Module, Any, Callable]  # (module, the instance forward it had before, our wrapper)
MakeWrapper = Callable[[Callable], Callable]  # original block call -> our wrapper around it


def set_forward(module: nn.Module, make_wrapper: MakeWrapper) -> Wrapped:
    """Give ``module`` an instance-level ``forward`` wrapping its current one; the record undoes it."""
    previous = module.__dict__.get("forward")  # an instance-level forward someone set before us
    wrapper = make_wrapper(module.forward)
    module.forward = wrapper
    return module, previous, wrapper


def restore_forwards(records: list[Wrapped]) -> None:
    """Undo ``set_forward``. A module whose ``forward`` someone else replaced after us keeps theirs (unwrapping
    it would break them); our wrapper inside it must then go inert, which the caller arranges."""
    for module, previous, wrapper in records:
        if module.__dict__.get("forward") is wrapper:
            if previous is None:
                del module.__dict__["forward"]
            else:
                module.forward = previous
    records.clear()


class BlockHooks(Protocol):
    def wrap(self, block: nn.Module, make_wrapper: MakeWrapper) -> None:
        """Route every call of ``block`` through ``make_wrapper(original call)``."""

    def restore(self) -> None:
        """Undo every ``wrap``."""


class InstanceForwards:
    """Blocks called as ``module(...)``: an instance ``forward`` on each (``--lowvram`` pre-hooks still fire)."""

    def __init__(self) -> None:
        self.records: list[Wrapped] = []

    def wrap(self, block: nn.Module, make_wrapper: MakeWrapper) -> None:
        self.records.append(set_forward(block, make_wrapper))

    def restore(self) -> None:
        restore_forwards(self.records)


class CallSiteDispatch:
    """Blocks called through ``namespace.<name>(block, *args)``: that global is replaced by a dispatcher while
    any block is wrapped. Blocks not wrapped, and every call after ``restore``, reach the function that was
    there before. If someone replaced the global after us, theirs stays and our dispatcher inside it only
    passes calls through."""

    def __init__(self, namespace: ModuleType, name: str = CALL_SITE) -> None:
        self.namespace, self.name = namespace, name
        self.wrappers: dict[int, Callable] = {}  # id(block) -> wrapper
        self.base: Callable | None = None
        self.dispatcher: Callable | None = None

    def wrap(self, block: nn.Module, make_wrapper: MakeWrapper) -> None:
        if self.dispatcher is None:
            base = self.base = getattr(self.namespace, self.name)
            wrappers = self.wrappers

            def deepcache_dispatch(target: nn.Module, *args: Any, **kwargs: Any) -> Any:
                wrapper = wrappers.get(id(target))
                return base(target, *args, **kwargs) if wrapper is None else wrapper(*args, **kwargs)

            self.dispatcher = deepcache_dispatch
            setattr(self.namespace, self.name, deepcache_dispatch)
        self.wrappers[id(block)] = make_wrapper(functools.partial(self.base, block))

    def restore(self) -> None:
        self.wrappers.clear()
        if self.dispatcher is not None and getattr(self.namespace, self.name) is self.dispatcher:
            setattr(self.namespace, self.name, self.base)
        self.dispatcher = self.base = None


def hooks_for(block: nn.Module) -> BlockHooks:
    """Dispatch through the call site where the block's own module defines ComfyUI's per-block function (its
    U-Net calls that instead of the block); instance forwards everywhere else."""
    namespace = sys.modules.get(type(block).__module__)
    if namespace is not None and callable(getattr(namespace, CALL_SITE, None)):
        return CallSiteDispatch(namespace)
    return InstanceForwards()

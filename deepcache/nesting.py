"""Where nested generations are kept: a generation started inside another one of the same webui job.

ADetailer inpaints from ``postprocess_image`` while the outer generation still has batches and a hires pass to
go. The inner generation gets a state of its own, engine included; when it ends, the outer one resumes exactly
as it was, its infotext entries too (the inner one may write into the same dict).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from .infotext import INFOTEXT_KEYS

GENERATION_STATE = ("p", "mark", "task", "engine", "controlnets", "params", "pending", "runs", "pending_label",
                    "run_label", "generation_params", "told")  # what a nested generation saves of the one around it


class Generation(Protocol):
    """What the stack saves and restores: the session's per-generation attributes (``GENERATION_STATE``) and
    its adapter, whose attributes hold one generation's run at a time."""

    adapter: Any
    p: Any

    def _reset(self) -> None:
        """Start a fresh generation state (a new engine among it)."""


@dataclass
class Enclosing:
    """A generation suspended while one started inside it runs."""

    state: dict[str, Any]  # its GENERATION_STATE
    adapter_state: dict[str, Any]  # the adapter's attributes
    infotext: dict[str, Any] | None  # its DeepCache entries, when the nested generation writes into the same dict


class EnclosingGenerations:
    """The generations suspended around the one in progress, innermost last."""

    def __init__(self) -> None:
        self._stack: list[Enclosing] = []

    def __len__(self) -> int:
        return len(self._stack)

    def suspend(self, session: Generation, inner_p: Any) -> None:
        """Suspend the generation in progress for one (of ``inner_p``) started inside it; the session starts a
        fresh state."""
        outer = session.p.extra_generation_params
        shared = getattr(inner_p, "extra_generation_params", None) is outer
        self._stack.append(Enclosing({name: getattr(session, name) for name in GENERATION_STATE},
                                     dict(vars(session.adapter)),
                                     {k: outer[k] for k in INFOTEXT_KEYS if k in outer} if shared else None))
        session._reset()

    def resume(self, session: Generation) -> None:
        """Resume the innermost suspended generation as it was (the caller has unhooked the nested one)."""
        outer = self._stack.pop()
        for name, value in outer.state.items():
            setattr(session, name, value)
        vars(session.adapter).clear()
        vars(session.adapter).update(outer.adapter_state)
        if outer.infotext is not None:
            entries = session.p.extra_generation_params
            for key in INFOTEXT_KEYS:
                entries.pop(key, None)
            entries.update(outer.infotext)

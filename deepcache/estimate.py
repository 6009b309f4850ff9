"""The speed-up a user can expect before generating, shown live in the UI.

A retrieval step's cost relative to a full step depends on the model family (SDXL's shallow blocks are a
smaller share of its U-Net than SD1.5's), on the resolution and on the device. The estimate starts from the
benchmark's per-branch table for the loaded family (``python -m deepcache --arch … --plot``, CPU) and, once a
run with DeepCache has finished on this machine, rescales that table by the cost the run measured (its mean
cached pass over its mean full pass, at its branch), so it follows the user's own model, resolution and GPU.
The UI's JavaScript reads the costs from the estimate element and refreshes them from ``COSTS_ROUTE``.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any

from .params import PARAM_SPECS, DeepCacheParams
from .stats import RunStats

COSTS_ROUTE = "/deepcache/v1/costs"
FEW_STEPS = 10  # below this many steps, the hint says DeepCache gains little
FEW_STEPS_HINT = ("few steps: each reused step is a larger share of the image, so DeepCache gains little below "
                  f"~{FEW_STEPS} steps (LCM, Turbo, Lightning, Hyper); try interval 2, or leave it off")


@dataclass(frozen=True)
class FamilyCosts:
    """A retrieval step's cost relative to a full step, per branch, for U-Nets with ``len(costs)`` input blocks."""

    family: str
    measured_on: str
    costs: tuple[float, ...]


FAMILIES: dict[int, FamilyCosts] = {len(f.costs): f for f in (
    FamilyCosts("SD1.x/SD2.x", "SD1.5 U-Net, 256x256, CPU",
                (0.06, 0.19, 0.28, 0.33, 0.45, 0.52, 0.59, 0.67, 0.8, 0.87, 0.87, 0.91)),
    FamilyCosts("SDXL", "SDXL U-Net, 128x128, CPU",
                (0.008, 0.016, 0.028, 0.059, 0.095, 0.158, 0.302, 0.47, 0.829)),
)}
DEFAULT_DEPTH = 12


class Calibration:
    """The last measured retrieval cost per U-Net depth (one model family each), from runs on this machine."""

    def __init__(self) -> None:
        self.measured: dict[int, tuple[int, float]] = {}  # depth -> (branch, cached pass / full pass)
        self.adaptive: dict[str, Any] | None = None  # the last adaptive run: what it cached at which threshold

    def record(self, depth: int, branch: int, stats: RunStats) -> None:
        if stats.full_passes and stats.cached_passes and stats.full_seconds > 0 and stats.cached_seconds > 0:
            ratio = (stats.cached_seconds / stats.cached_passes) / (stats.full_seconds / stats.full_passes)
            self.measured[depth] = (branch, min(ratio, 1.0))

    def record_adaptive(self, params: DeepCacheParams, stats: RunStats) -> None:
        """An adaptive run's count is decided while sampling: the estimate shows the last one's."""
        self.adaptive = {"threshold": params.threshold, "interval": params.interval,
                             "cached": stats.cached_steps, "steps": stats.planned_steps,
                             "speedup": round(stats.estimated_speedup, 2)}

    def costs(self, depth: int | None) -> dict[str, Any]:
        """The per-branch costs for a U-Net of ``depth`` input blocks (SD1/SD2's when unknown), and where they
        come from, as the JavaScript takes them."""
        table = FAMILIES.get(depth if depth is not None else DEFAULT_DEPTH, FAMILIES[DEFAULT_DEPTH])
        costs = list(table.costs)
        source = f"{table.family}, benchmark on {table.measured_on}"
        if depth in self.measured:
            branch, ratio = self.measured[depth]
            scale = ratio / costs[branch]
            costs = [min(1.0, c * scale) for c in costs]
            costs[branch] = ratio
            source = (f"{table.family}, your last run (branch {branch}: a cached pass took {100 * ratio:.0f}% "
                      "of a full one)")
        return {"family": table.family, "costs": [round(c, 4) for c in costs], "source": source,
                "adaptive": self.adaptive}


def estimate_html(costs: dict[str, Any]) -> str:
    """The placeholder the script's JavaScript fills in, carrying the costs and the controls' help texts."""
    help_texts = {spec.name: spec.help for spec in PARAM_SPECS}
    return (f'<span class="deepcache-estimate" data-costs="{html.escape(json.dumps(costs["costs"]))}" '
            f'data-source="{html.escape(costs["source"])}" data-route="{COSTS_ROUTE}" '
            f'data-few-steps="{FEW_STEPS}" data-few-hint="{html.escape(FEW_STEPS_HINT)}" '
            f'data-adaptive="{html.escape(json.dumps(costs["adaptive"])) if costs.get("adaptive") else ""}" '
            f'data-help="{html.escape(json.dumps(help_texts))}"></span>')

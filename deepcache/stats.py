"""What one sampling run did, for the console and the infotext."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunStats:
    """Counts for one sampling run; a step counts as cached when every U-Net pass in it was served from cache."""

    total_steps: int = 0
    steps_seen: set[int] = field(default_factory=set)
    steps_with_full_pass: set[int] = field(default_factory=set)
    steps_with_cached_pass: set[int] = field(default_factory=set)
    full_passes: int = 0
    cached_passes: int = 0
    full_seconds: float = 0.0
    cached_seconds: float = 0.0
    interrupted: bool = False  # the user stopped the run (Interrupt, Skip) before its last step

    @property
    def steps(self) -> int:
        return len(self.steps_seen)

    @property
    def planned_steps(self) -> int:
        """The run's length: its planned steps, or more where the sampler chose more (DPM adaptive)."""
        return max(self.total_steps, self.steps)

    @property
    def full_steps(self) -> int:
        return len(self.steps_with_full_pass)

    @property
    def cached_steps(self) -> int:
        """Steps whose every U-Net pass came from cache (a step the hooks never saw, e.g. after a refiner
        switch to another U-Net, ran in full)."""
        return self.steps - self.full_steps

    @property
    def estimated_speedup(self) -> float:
        """Passes that would all have cost a full pass, over what they cost, from this run's pass timings."""
        if not self.full_passes or not self.cached_passes:
            return 1.0
        full_cost = self.full_seconds / self.full_passes
        spent = self.full_seconds + self.cached_seconds
        return (self.full_passes + self.cached_passes) * full_cost / spent if spent > 0 else 1.0

    @property
    def partly_cached_steps(self) -> int:
        """Steps with both full and cached passes (a sampler evaluating twice per step that the webui does not
        say so of): the step count alone would hide that their cached passes changed the image."""
        return len(self.steps_with_cached_pass & self.steps_with_full_pass)

    def _steps_text(self) -> str:
        """``13/20 steps cached``; a run stopped early counts the steps it ran: ``6/9 steps cached, interrupted at
        9/60`` (its planned length would make the share look as if most steps had run in full)."""
        if self.interrupted and self.steps < self.planned_steps:
            return f"{self.cached_steps}/{self.steps} steps cached, interrupted at {self.steps}/{self.planned_steps}"
        return f"{self.cached_steps}/{self.planned_steps} steps cached"

    def _passes_text(self) -> str:
        return f"{self.cached_passes}/{self.full_passes + self.cached_passes} U-Net passes from cache"

    def cached_text(self) -> str:
        """The infotext's form: ``13/20 steps cached``, with the passes when some steps were cached in part."""
        return self._steps_text() + (f" ({self._passes_text()})" if self.partly_cached_steps else "")

    def summary(self) -> str:
        """E.g. ``13/20 steps cached, 13/20 U-Net passes from cache, ~2.4x (U-Net pass: full 3.91 s, cached
        0.214 s)``: the pass times say where a step's time goes inside the webui."""
        full = self.full_seconds / self.full_passes if self.full_passes else 0.0
        cached = self.cached_seconds / self.cached_passes if self.cached_passes else 0.0
        return (f"{self._steps_text()}, {self._passes_text()}, ~{self.estimated_speedup:.1f}x "
                f"(U-Net pass: full {full:.3g} s, cached {cached:.3g} s)")

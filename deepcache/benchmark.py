"""``python -m deepcache``: time a real U-Net through a real sampler with and without DeepCache.

The ideal speed-up is computed from step costs measured in the same process: a full U-Net pass, and the
minimum a retrieval step must compute (time embedding, ``input_blocks[0..k]``, ``output_blocks[n-1-k..]``,
``out``), so *achieved / ideal* shows what the hooks, the sampler and everything else cost on top. Times
come from pairs of sampling runs, off then on, with the full-step cost taken from the run without
DeepCache and the retrieval cost measured between the two; the median pair is reported, since a shared
machine's speed drifts by tens of percent over minutes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch

from .engine import DeepCacheEngine
from .params import SCHEDULES, DeepCacheParams
from .testbed import ARCHS, SAMPLERS, Pipeline, build_unet, timed_calls


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m deepcache", description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=sorted(ARCHS), default="sd15", help="U-Net architecture (default sd15)")
    ap.add_argument("--size", type=int, default=128, help="image size in pixels (latent = size/8; default 128)")
    ap.add_argument("--steps", type=int, default=20, help="sampler steps (default 20)")
    ap.add_argument("--sampler", choices=sorted(SAMPLERS), default="euler", help="k-diffusion sampler")
    ap.add_argument("--images", type=int, default=1, help="images per batch; the U-Net batch is twice this (CFG)")
    ap.add_argument("--interval", type=int, default=3, help="cache interval N (default 3)")
    ap.add_argument("--branch", type=int, default=0, help="cache branch k (default 0)")
    ap.add_argument("--schedule", choices=SCHEDULES, default="uniform", help="full-step placement")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per step-cost measurement (default 3)")
    ap.add_argument("--runs", type=int, default=3,
                    help="pairs of sampling runs without and with DeepCache; the median pair is reported (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--plot", metavar="PNG", help="write a plot: per-step time, and ideal speed-up per branch")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return ap.parse_args(argv)


def shallow_pass(unet: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, branch: int,
                 deep: torch.Tensor) -> torch.Tensor:
    """What a retrieval step at ``branch`` cannot avoid computing; ``deep`` stands for the cached tensor."""
    from ldm.modules.diffusionmodules.util import timestep_embedding

    n = len(unet.input_blocks)
    emb = unet.time_embed(timestep_embedding(t, unet.model_channels, repeat_only=False))
    skips, h = [], x
    for block in unet.input_blocks[:branch + 1]:
        h = block(h, emb, context)
        skips.append(h)
    h = deep
    for block in unet.output_blocks[n - 1 - branch:]:
        h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
    return unet.out(h)


@dataclass
class Pair:
    """One run without and one with DeepCache, back to back, and the retrieval cost measured between them.

    The full-step cost is the mean pass of the run without DeepCache, so the ideal and the achieved speed-up
    of a pair come from the same minutes of a machine whose speed drifts."""

    off: tuple
    on: tuple
    retrieval: float

    @property
    def full_step(self) -> float:
        stats = self.on[3]
        return self.off[0] / (stats.full_passes + stats.cached_passes)

    @property
    def ideal(self) -> float:
        stats = self.on[3]
        passes = stats.full_passes + stats.cached_passes
        return passes * self.full_step / (stats.full_passes * self.full_step + stats.cached_passes * self.retrieval)

    @property
    def achieved_over_ideal(self) -> float:
        return self.off[0] / self.on[0] / self.ideal


class StepTimer:
    """Sampler callback recording when each step's model evaluation finished."""

    def __init__(self) -> None:
        self.marks = [time.perf_counter()]

    def __call__(self, _: dict) -> None:
        self.marks.append(time.perf_counter())

    def per_step(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def measure(a: argparse.Namespace, log=lambda msg: None) -> dict[str, Any]:
    if a.threads:
        torch.set_num_threads(a.threads)
    params = DeepCacheParams(enabled=True, interval=a.interval, branch=a.branch, schedule=a.schedule)
    log(f"building {a.arch} U-Net ({ARCHS[a.arch].description})")
    unet = build_unet(a.arch, seed=a.seed)
    pipe = Pipeline(unet)
    n = len(unet.input_blocks)
    if a.branch >= n:
        raise SystemExit(f"--branch must be in [0, {n - 1}] for {a.arch}")
    cond, uncond = pipe.conditioning(a.images)
    x = torch.cat([pipe.noise(a.images, a.size)] * 2)
    t = torch.full((x.shape[0],), 500.0)
    context = torch.cat([cond, uncond])
    deep: dict[int, torch.Tensor] = {}
    hooks = [b.register_forward_hook(lambda m, i, o, j=j: deep.__setitem__(j, o))
             for j, b in enumerate(unet.output_blocks)]

    def full() -> None:
        unet(x, t, context=context)

    def shallow(k: int) -> None:
        shallow_pass(unet, x, t, context, k, deep[n - 2 - k] if k < n - 1 else deep_mid)

    with torch.no_grad():
        log("warm-up and step costs")
        full()
        for h in hooks:
            h.remove()
        deep_mid = unet.middle_block(*_middle_inputs(unet, x, t, context))
        branch_costs = {}
        if a.plot:  # the cost of a retrieval at every branch, relative to a full pass
            full_cost = min(timed_calls(full, a.repeats))
            branch_costs = {k: min(timed_calls(lambda k=k: shallow(k), a.repeats)) / full_cost for k in range(n)}

        engine = DeepCacheEngine()
        schedule = pipe.timestep_schedule(pipe.sigmas(a.sampler, a.steps))
        pairs = []
        for run in range(1, a.runs + 1):
            log(f"run {run}/{a.runs}: sampling without DeepCache")
            off = timed_sampling(pipe, a)
            retrieval = min(timed_calls(lambda: shallow(a.branch), a.repeats))
            log(f"run {run}/{a.runs}: sampling with DeepCache")
            engine.install(unet)
            engine.begin_run(params, a.steps, schedule)
            on = timed_sampling(pipe, a) + (engine.end_run(),)
            engine.uninstall()
            pairs.append(Pair(off, on, retrieval))
        pair = sorted(pairs, key=lambda q: q.achieved_over_ideal)[len(pairs) // 2]  # the median pair
        (time_off, latent_off, off_timer), (time_on, latent_on, on_timer, stats) = pair.off, pair.on

        log("installed-but-disabled overhead per U-Net call")
        overhead = []
        for _ in range(a.repeats):
            engine.install(unet)
            disabled = timed_calls(full, 1)[0]
            engine.uninstall()
            overhead.append(disabled / timed_calls(full, 1)[0] - 1)

    full_n, retr_n = stats.full_passes, stats.cached_passes
    diff = (latent_on - latent_off).abs()
    return {
        "arch": a.arch, "size": a.size, "latent": a.size // 8, "unet_batch": 2 * a.images, "sampler": a.sampler,
        "steps": a.steps, "interval": a.interval, "branch": a.branch, "schedule": a.schedule,
        "torch_threads": torch.get_num_threads(), "runs": a.runs,
        "time_off_s": time_off, "time_on_s": time_on,
        "time_per_image_off_s": time_off / a.images, "time_per_image_on_s": time_on / a.images,
        "speedup": time_off / time_on, "ideal_speedup": pair.ideal, "achieved_over_ideal": pair.achieved_over_ideal,
        "achieved_over_ideal_per_run": [q.achieved_over_ideal for q in pairs],
        "full_step_s": pair.full_step, "retrieval_step_s": pair.retrieval,
        "retrieval_over_full": pair.retrieval / pair.full_step,
        "full_passes": full_n, "retrieval_passes": retr_n, "stats": stats.summary(),
        "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
        "latent_abs_mean": float(latent_off.abs().mean()),
        "disabled_overhead": sorted(overhead)[len(overhead) // 2],
        "ideal_speedup_per_branch": {k: (full_n + retr_n) / (full_n + retr_n * c) for k, c in branch_costs.items()},
        "retrieval_over_full_per_branch": branch_costs,
        "step_times_off_s": off_timer.per_step(), "step_times_on_s": on_timer.per_step(),
        "full_steps": [i for i in range(a.steps) if i in stats.steps_with_full_pass],
    }


def timed_sampling(pipe: Pipeline, a: argparse.Namespace) -> tuple[float, torch.Tensor, StepTimer]:
    timer = StepTimer()
    start = time.perf_counter()
    latent = pipe.sample(a.sampler, a.steps, a.images, a.size, a.seed, callback=timer, progress=not a.json)
    return time.perf_counter() - start, latent, timer


def _middle_inputs(unet: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> tuple:
    """The middle block's inputs on a full pass (for branch n-1, whose cached tensor is its output)."""
    seen: list[tuple] = []
    handle = unet.middle_block.register_forward_pre_hook(lambda m, args: seen.append(args))
    unet(x, t, context=context)
    handle.remove()
    return seen[0]


def format_table(r: dict[str, Any]) -> str:
    return "\n".join([
        f"DeepCache benchmark: {r['arch']} U-Net, {r['size']}x{r['size']} (latent {r['latent']}x{r['latent']}), "
        f"U-Net batch {r['unet_batch']}, {r['sampler']}, {r['steps']} steps, interval {r['interval']}, "
        f"branch {r['branch']}, {r['schedule']}, {r['torch_threads']} torch threads",
        f"{'':28}{'time/image':>12}{'speed-up':>10}",
        f"{'off':28}{r['time_per_image_off_s']:>11.2f}s{1:>9.2f}x",
        f"{'DeepCache':28}{r['time_per_image_on_s']:>11.2f}s{r['speedup']:>9.2f}x",
        f"{'ideal (from step costs)':28}{'':12}{r['ideal_speedup']:>9.2f}x",
        f"{'achieved / ideal':28}{'':12}{100 * r['achieved_over_ideal']:>9.1f}%",
        f"step costs: full {r['full_step_s']:.3f}s, retrieval {r['retrieval_step_s']:.3f}s "
        f"({100 * r['retrieval_over_full']:.1f}% of full); {r['full_passes']} full + {r['retrieval_passes']} "
        f"retrieval passes ({r['stats']})",
        f"final latent |diff|: max {r['max_abs_diff']:.4f}, mean {r['mean_abs_diff']:.4f} "
        f"(mean |latent| {r['latent_abs_mean']:.4f})",
        f"installed but disabled: {100 * r['disabled_overhead']:+.2f}% per U-Net call (median of paired calls); "
        f"achieved/ideal per run pair: {', '.join(f'{100 * v:.1f}%' for v in r['achieved_over_ideal_per_run'])}",
    ])


def write_plot(r: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    steps = range(len(r["step_times_on_s"]))
    left.bar([s - 0.2 for s in steps], r["step_times_off_s"], width=0.4, color="#999", label="off")
    left.bar([s + 0.2 for s in steps], r["step_times_on_s"], width=0.4,
             color=["#1f77b4" if s in r["full_steps"] else "#ff7f0e" for s in steps],
             label="DeepCache (blue full, orange retrieval)")
    left.set(xlabel="step", ylabel="seconds", title=f"Per-step time, {r['arch']} {r['size']}px {r['sampler']}")
    left.legend()
    branches = sorted(r["ideal_speedup_per_branch"], key=int)
    right.bar([str(b) for b in branches], [r["ideal_speedup_per_branch"][b] for b in branches], color="#2ca02c")
    right.axhline(r["speedup"], color="k", linestyle="--", label=f"measured, branch {r['branch']}")
    right.set(xlabel="cache branch", ylabel="speed-up",
              title=f"Ideal speed-up per branch (interval {r['interval']}, measured step costs)")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    result = measure(a, log=(lambda msg: None) if a.json else (lambda msg: print(f"[deepcache] {msg}",
                                                                                   file=sys.stderr, flush=True)))
    if a.plot:
        write_plot(result, a.plot)
    print(json.dumps(result, indent=1) if a.json else format_table(result))
    return 0

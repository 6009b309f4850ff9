"""``python -m deepcache``: time a real U-Net through a real sampler with and without DeepCache.

The ideal speed-up is computed from step costs measured in the same run: a full U-Net pass, and the
minimum a retrieval step must compute (time embedding, ``input_blocks[0..k]``, ``output_blocks[n-1-k..]``,
``out``), so *achieved / ideal* shows what the hooks, the sampler and everything else cost on top.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch

from .engine import DeepCacheEngine
from .params import SCHEDULES, DeepCacheParams
from .testbed import ARCHS, SAMPLERS, Pipeline, build_unet, median, timed_calls


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
        full_cost = median(timed_calls(full, a.repeats))
        branches = range(n) if a.plot else [a.branch]
        retrieval_cost = {k: median(timed_calls(lambda k=k: shallow(k), a.repeats if k == a.branch else 1))
                          for k in branches}

        log("sampling without DeepCache")
        off_timer = StepTimer()
        start = time.perf_counter()
        latent_off = pipe.sample(a.sampler, a.steps, a.images, a.size, a.seed, callback=off_timer,
                                 progress=not a.json)
        time_off = time.perf_counter() - start

        log("sampling with DeepCache")
        engine = DeepCacheEngine()
        engine.install(unet)
        engine.begin_run(params, a.steps, pipe.timestep_schedule(pipe.sigmas(a.sampler, a.steps)))
        on_timer = StepTimer()
        start = time.perf_counter()
        latent_on = pipe.sample(a.sampler, a.steps, a.images, a.size, a.seed, callback=on_timer,
                                progress=not a.json)
        time_on = time.perf_counter() - start
        stats = engine.end_run()

        log("installed-but-disabled overhead per U-Net call")
        disabled, plain = [], []
        for _ in range(a.repeats):
            disabled += timed_calls(full, 1)
            engine.uninstall()
            plain += timed_calls(full, 1)
            engine.install(unet)
        engine.uninstall()

    full_n, retr_n = stats.full_passes, stats.cached_passes
    c_ret = retrieval_cost[a.branch]
    ideal = (full_n + retr_n) * full_cost / (full_n * full_cost + retr_n * c_ret)
    diff = (latent_on - latent_off).abs()
    return {
        "arch": a.arch, "size": a.size, "latent": a.size // 8, "unet_batch": 2 * a.images, "sampler": a.sampler,
        "steps": a.steps, "interval": a.interval, "branch": a.branch, "schedule": a.schedule,
        "torch_threads": torch.get_num_threads(),
        "time_off_s": time_off, "time_on_s": time_on,
        "time_per_image_off_s": time_off / a.images, "time_per_image_on_s": time_on / a.images,
        "speedup": time_off / time_on, "ideal_speedup": ideal, "achieved_over_ideal": time_off / time_on / ideal,
        "full_step_s": full_cost, "retrieval_step_s": c_ret, "retrieval_over_full": c_ret / full_cost,
        "full_passes": full_n, "retrieval_passes": retr_n, "stats": stats.summary(),
        "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
        "latent_abs_mean": float(latent_off.abs().mean()),
        "disabled_overhead": median(disabled) / median(plain) - 1,
        "ideal_speedup_per_branch": {k: (full_n + retr_n) * full_cost / (full_n * full_cost + retr_n * c)
                                     for k, c in retrieval_cost.items()},
        "step_times_off_s": off_timer.per_step(), "step_times_on_s": on_timer.per_step(),
        "full_steps": [i for i in range(a.steps) if i in stats.steps_with_full_pass],
    }


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
        f"installed but disabled: {100 * r['disabled_overhead']:+.2f}% per U-Net call",
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

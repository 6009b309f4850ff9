"""``python -m deepcache``: time a real U-Net through a real sampler with and without DeepCache.

The ideal speed-up is computed from step costs measured in the same process: a full U-Net pass, and the
minimum a retrieval step must compute (time embedding, ``input_blocks[0..k]``, ``output_blocks[n-1-k..]``,
``out``), so *achieved / ideal* shows what the hooks, the sampler and everything else cost on top.

A shared machine's speed drifts by tens of percent within minutes, so the samplings run in *lockstep*:
one without DeepCache, one with the engine installed but disabled and one with DeepCache, each on its own
copy of the U-Net (the copies share the weights, so an SDXL U-Net fits once in memory), take turns step by
step, and each is timed only on its turns. The full-step cost is the mean step of the run without DeepCache;
the retrieval cost is measured between runs. The median of ``--runs`` lockstep runs is reported.

``--controlnet`` adds a ControlNet (the ``cldm`` architecture, built from the U-Net's own blocks) driven the way
sd-webui-controlnet drives it, and two more samplings to the same lockstep: without DeepCache and with
DeepCache (ControlNet-aware), both with the ControlNet.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from .controlnet import ControlNetSatellites
from .engine import DeepCacheEngine
from .params import SCHEDULES, DeepCacheParams
from .refresh import relative_change
from .slots import Slot
from .testbed import (
    ARCHS,
    SAMPLERS,
    ControlNet,
    Pipeline,
    build_unet,
    controlled_forward,
    time_embedding,
    unet_kwargs,
)


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
    ap.add_argument("--runs", type=int, default=1,
                    help="lockstep runs (off, disabled, on); the median run is reported (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--plot", metavar="PNG", help="write a plot: per-step time, and ideal speed-up per branch")
    ap.add_argument("--controlnet", action="store_true",
                    help="also sample with a ControlNet, without and with DeepCache, in the same lockstep")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps, ... (default cpu)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                    help="U-Net weights and autocast dtype (default float32)")
    ap.add_argument("--compile", nargs="?", const="inductor", metavar="BACKEND",
                    help="torch.compile every U-Net copy (backend, default inductor); each sampling is run once "
                         "untimed first, so compile time is not counted")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return ap.parse_args(argv)


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class Device:
    """Where the benchmark runs: the device, the U-Net's dtype (with autocast, as the webuis run half precision),
    and a synchronisation that times only finished work."""

    device: torch.device
    dtype: torch.dtype

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> Device:
        return cls(torch.device(a.device), DTYPES[a.dtype])

    def place(self, unet: torch.nn.Module) -> torch.nn.Module:
        """The U-Net on the device in the dtype, its normalisation layers in float32 (ldm's ``GroupNorm32``
        normalises in float32, as the webuis' half-precision models do)."""
        unet.to(self.device, self.dtype)
        for module in unet.modules():
            if isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                module.float()
        return unet

    def autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    def synchronize(self) -> None:
        module = getattr(torch, self.device.type, None)
        if self.device.type != "cpu" and hasattr(module, "synchronize"):
            module.synchronize()

    def name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return self.device.type


def shallow_pass(unet: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, branch: int,
                 deep: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """What a retrieval step at ``branch`` cannot avoid computing; ``deep`` stands for the cached tensor."""
    n = len(unet.input_blocks)
    emb = time_embedding(unet, t, y)
    skips, h = [], x
    for block in unet.input_blocks[:branch + 1]:
        h = block(h, emb, context)
        skips.append(h)
    h = deep
    for block in unet.output_blocks[n - 1 - branch:]:
        h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
    return unet.out(h)


class Lockstep:
    """Lets several samplings, each in its own thread, take turns one sampler step at a time, and times
    each only while it has the turn (the sampler callback, once per step, hands the turn on)."""

    def __init__(self, names: list[str], on_step: Callable[[], Any] = lambda: None,
                 sync: Callable[[], Any] = lambda: None) -> None:
        self.names, self.turn, self.done, self.on_step, self.sync = names, 0, set(), on_step, sync
        self.cv = threading.Condition()
        self.steps: dict[str, list[float]] = {name: [] for name in names}
        self.started = 0.0

    def _wait(self, name: str) -> None:
        while self.names[self.turn] != name:
            self.cv.wait()
        self.sync()
        self.started = time.perf_counter()

    def _pass_on(self, name: str) -> None:
        self.sync()  # an accelerator's queued work belongs to the step that queued it
        self.steps[name].append(time.perf_counter() - self.started)
        self.on_step()
        for _ in self.names:
            self.turn = (self.turn + 1) % len(self.names)
            if self.names[self.turn] not in self.done:
                break
        self.cv.notify_all()

    def run(self, name: str, sample: Callable[[Callable], Any]) -> Any:
        """Run ``sample(callback)`` in turns with the others (call from the thread of ``name``)."""
        def callback(_: dict) -> None:
            with self.cv:
                self._pass_on(name)
                self._wait(name)

        with self.cv:
            self._wait(name)
        try:
            return sample(callback)
        finally:
            with self.cv:
                self.done.add(name)
                self._pass_on(name)

    def total(self, name: str) -> float:
        return sum(self.steps[name])


@dataclass
class Run:
    """One lockstep run and the retrieval cost measured just before it."""

    clock: Lockstep
    latents: dict[str, torch.Tensor]
    stats: Any
    retrieval: float

    @property
    def full_step(self) -> float:
        return self.clock.total("off") / (self.stats.full_passes + self.stats.cached_passes)

    @property
    def ideal(self) -> float:
        full, cached = self.stats.full_passes, self.stats.cached_passes
        return (full + cached) * self.full_step / (full * self.full_step + cached * self.retrieval)

    @property
    def speedup(self) -> float:
        return self.clock.total("off") / self.clock.total("on")

    @property
    def achieved_over_ideal(self) -> float:
        return self.speedup / self.ideal

    @property
    def disabled_overhead(self) -> float:
        """The median over steps of (disabled step / off step) - 1: the two steps of a pair run seconds apart,
        so drift cancels, and the median ignores the odd step a background task slowed down; a ratio of the
        run totals swings by several percent on a shared machine, far above the cost being measured."""
        pairs = zip(self.clock.steps["disabled"], self.clock.steps["off"])
        return statistics.median(disabled / off for disabled, off in pairs) - 1

    @property
    def disabled_overhead_total(self) -> float:
        return self.clock.total("disabled") / self.clock.total("off") - 1

    @property
    def full_step_overhead(self) -> float:
        """The median over DeepCache's full steps of (its step / the same step without DeepCache) - 1: what the
        engine adds to the steps it cannot skip (a compiled U-Net must not run slower with it)."""
        full = sorted(self.stats.steps_with_full_pass)
        return statistics.median(self.clock.steps["on"][i] / self.clock.steps["off"][i] for i in full) - 1

    @property
    def speedup_with_controlnet(self) -> float:
        return self.clock.total("off+controlnet") / self.clock.total("on+controlnet")


def shared_weight_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` with its own module objects (so its own instance ``forward`` wrappers) that shares
    every parameter and buffer with the original: one copy per lockstep sampling costs no weight memory."""
    tensors = [*module.parameters(), *module.buffers()]
    return copy.deepcopy(module, memo={id(t): t for t in tensors})


def lockstep(samplings: dict[str, Callable[[Callable], Any]], on_step: Callable[[], Any] = lambda: None,
             device: Device | None = None) -> tuple[Lockstep, dict[str, Any]]:
    device = device or Device(torch.device("cpu"), torch.float32)
    clock, results = Lockstep(list(samplings), on_step, device.synchronize), {}

    def worker(name: str) -> None:
        with torch.no_grad(), device.autocast():  # autocast is per thread
            results[name] = clock.run(name, samplings[name])

    threads = [threading.Thread(target=worker, args=(name,)) for name in samplings]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return clock, results


def measure(a: argparse.Namespace, log=lambda msg: None) -> dict[str, Any]:
    if a.threads:
        torch.set_num_threads(a.threads)
    params = DeepCacheParams(enabled=True, interval=a.interval, branch=a.branch, schedule=a.schedule)
    log(f"building {a.arch} U-Net ({ARCHS[a.arch].description})")
    dev = Device.from_args(a)
    unet = dev.place(build_unet(a.arch, seed=a.seed))
    pipe = Pipeline(unet)
    n = len(unet.input_blocks)
    if a.branch >= n:
        raise SystemExit(f"--branch must be in [0, {n - 1}] for {a.arch}")
    cond, uncond = pipe.conditioning(a.images)
    x = torch.cat([pipe.noise(a.images, a.size)] * 2)
    t = torch.full((x.shape[0],), 500.0, device=dev.device)
    kwargs = unet_kwargs(unet, torch.cat([cond, uncond]))
    context = kwargs["context"]
    deep: dict[int, torch.Tensor] = {}
    hooks = [b.register_forward_hook(lambda m, i, o, j=j: deep.__setitem__(j, o))
             for j, b in enumerate(unet.output_blocks)]
    probes: list[torch.Tensor] = []  # the adaptive schedule's probe at the branch: the first skipped block's input
    hooks.append(unet.input_blocks[a.branch].register_forward_hook(lambda m, i, o: probes.append(o)))

    def full() -> None:
        unet(x, t, **kwargs)

    def shallow(k: int) -> None:
        shallow_pass(unet, x, t, context, k, deep[n - 2 - k] if k < n - 1 else deep_mid, kwargs.get("y"))

    def timed(fn: Callable[[], Any], before: Callable[[], Any] = lambda: None) -> float:
        """The fastest of ``--repeats`` calls, each timed to the end of its device work (``before`` untimed)."""
        times = []
        for _ in range(a.repeats):
            before()
            dev.synchronize()
            start = time.perf_counter()
            fn()
            dev.synchronize()
            times.append(time.perf_counter() - start)
        return min(times)

    with torch.no_grad(), dev.autocast():
        log(f"warm-up and step costs on {dev.name()} ({a.dtype})")
        full()
        for h in hooks:
            h.remove()
        deep_mid = unet.middle_block(*_middle_inputs(unet, x, t, kwargs))
        branch_costs = {}
        if a.plot:  # the cost of a retrieval at every branch, relative to a full pass
            full_cost = timed(full)
            branch_costs = {k: timed(lambda k=k: shallow(k)) / full_cost for k in range(n)}

        log("copying the U-Net (shared weights) for the lockstep samplings")
        names = ["off", "disabled", "on"] + (["off+controlnet", "on+controlnet"] if a.controlnet else [])
        pipes = {name: pipe if name == "off" else Pipeline(shared_weight_copy(unet)) for name in names}
        engines = {name: DeepCacheEngine() for name in names if name != "off"}
        satellites = {name: ControlNetSatellites(engine) for name, engine in engines.items()}
        if a.controlnet:
            log("building a ControlNet from the U-Net's blocks")
            controlnet = ControlNet(unet, seed=a.seed + 1)
            hint = torch.randn(1, 3, a.size, a.size, generator=torch.Generator().manual_seed(a.seed))
            for name in ("off+controlnet", "on+controlnet"):
                unit_controlnet = shared_weight_copy(controlnet)
                pipes[name].unet.forward = controlled_forward(pipes[name].unet, [(unit_controlnet, hint)])
                if name in engines:
                    engines[name].install(pipes[name].unet)
                    satellites[name].attach(unit_controlnet)
        for name, engine in engines.items():
            engine.install(pipes[name].unet)
        schedule = pipe.timestep_schedule(pipe.sigmas(a.sampler, a.steps))
        running = [name for name in ("on", "on+controlnet") if name in engines]
        if a.compile:
            log(f"torch.compile (backend {a.compile}) and one untimed sampling per copy")
            for name, copy_pipe in pipes.items():
                copy_pipe.model.model.diffusion_model = torch.compile(copy_pipe.unet, backend=a.compile)
                if name in running:
                    engines[name].begin_run(params, a.steps, schedule)
                copy_pipe.sample(a.sampler, a.steps, a.images, a.size, a.seed)
                if name in running:
                    engines[name].end_run()
        bare_unet = pipes["off"].model.model.diffusion_model  # compiled too with --compile
        overhead = pass_overheads(pipes["on"].model.model.diffusion_model, engines["on"], a.branch, (x, kwargs),
                                  timed, lambda: bare_unet(x, t, **kwargs), lambda: shallow(a.branch))
        probe_s = timed(lambda: relative_change(probes[0], probes[0] * 1.01))
        cached = deep[n - 2 - a.branch] if a.branch < n - 1 else deep_mid
        line = Slot({}, {}, cached=cached, previous=cached * 1.01, cached_t=500.0, previous_t=600.0)
        forecast_s = timed(lambda: line.forecast(450.0))  # what forecast adds to a retrieval pass
        overhead.update(probe_s=probe_s, probe_over_retrieval=probe_s / overhead["engine_retrieval_s"],
                        forecast_s=forecast_s, forecast_over_retrieval=forecast_s / overhead["engine_retrieval_s"])
        runs = []
        bar = tqdm(total=a.runs * len(pipes) * (a.steps + 1), desc="sampler steps", disable=a.json, file=sys.stderr)
        for run in range(1, a.runs + 1):
            log(f"lockstep run {run}/{a.runs}: {', '.join(names)}, a step each in turn")
            retrieval = timed(lambda: shallow(a.branch))
            for name in running:
                engines[name].begin_run(params, a.steps, schedule)
            clock, latents = lockstep({name: lambda cb, name=name: pipes[name].sample(
                a.sampler, a.steps, a.images, a.size, a.seed, callback=cb) for name in pipes}, bar.update, dev)
            stats = {name: engines[name].end_run() for name in running}
            runs.append(Run(clock, latents, stats["on"], retrieval))
        bar.close()
        for name, engine in engines.items():
            satellites[name].detach_all()
            engine.uninstall()
        median_run = sorted(runs, key=lambda r: r.achieved_over_ideal)[len(runs) // 2]
        stats, latent_off, latent_on = median_run.stats, median_run.latents["off"], median_run.latents["on"]

    full_n, retr_n = stats.full_passes, stats.cached_passes
    diff = (latent_on - latent_off).abs()
    return {
        "arch": a.arch, "size": a.size, "latent": a.size // 8, "unet_batch": 2 * a.images, "sampler": a.sampler,
        "steps": a.steps, "interval": a.interval, "branch": a.branch, "schedule": a.schedule,
        "torch_threads": torch.get_num_threads(), "runs": a.runs, "device": str(dev.device),
        "device_name": dev.name(), "dtype": a.dtype, "compile": a.compile,
        "time_off_s": median_run.clock.total("off"), "time_on_s": median_run.clock.total("on"),
        "time_per_image_off_s": median_run.clock.total("off") / a.images,
        "time_per_image_on_s": median_run.clock.total("on") / a.images,
        "speedup": median_run.speedup, "ideal_speedup": median_run.ideal,
        "achieved_over_ideal": median_run.achieved_over_ideal,
        "achieved_over_ideal_per_run": [r.achieved_over_ideal for r in runs],
        "full_step_s": median_run.full_step, "retrieval_step_s": median_run.retrieval,
        "retrieval_over_full": median_run.retrieval / median_run.full_step,
        "full_passes": full_n, "retrieval_passes": retr_n, "stats": stats.summary(),
        "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
        "latent_abs_mean": float(latent_off.abs().mean()),
        "disabled_overhead": statistics.median(r.disabled_overhead for r in runs),
        "disabled_overhead_total": statistics.median(r.disabled_overhead_total for r in runs),
        "full_step_overhead": statistics.median(r.full_step_overhead for r in runs),
        **overhead,
        "ideal_speedup_per_branch": {k: (full_n + retr_n) / (full_n + retr_n * c) for k, c in branch_costs.items()},
        "retrieval_over_full_per_branch": branch_costs,
        "step_times_off_s": median_run.clock.steps["off"], "step_times_on_s": median_run.clock.steps["on"],
        "full_steps": [i for i in range(a.steps) if i in stats.steps_with_full_pass],
        **({"speedup_without_controlnet": median_run.speedup,
            "speedup_with_controlnet": median_run.speedup_with_controlnet,
            "with_over_without_controlnet": median_run.speedup_with_controlnet / median_run.speedup,
            "time_per_image_off_controlnet_s": median_run.clock.total("off+controlnet") / a.images,
            "time_per_image_on_controlnet_s": median_run.clock.total("on+controlnet") / a.images}
           if a.controlnet else {}),
    }


def pass_overheads(unet: Callable, engine: DeepCacheEngine, branch: int, inputs: tuple, timed: Callable,
                   bare_full: Callable, bare_shallow: Callable) -> dict[str, float]:
    """What the engine costs per U-Net pass, in microseconds: a retrieval pass through the engine against the bare
    shallow branch it computes, and a full pass through the engine against the bare U-Net. At accelerator speed a
    retrieval pass takes milliseconds, so a fixed cost per pass decides whether the speed-up reaches its ideal."""
    x, kwargs = inputs
    two_steps = DeepCacheParams(enabled=True, interval=2, branch=branch)  # step 0 full, step 1 retrieval
    high, low = (torch.full((x.shape[0],), value, device=x.device) for value in (900.0, 800.0))

    def run_to(step: int) -> None:
        """A fresh run, with the passes before ``step`` done (the full pass fills the cache)."""
        engine.begin_run(two_steps, 2, [900.0, 800.0])
        if step == 1:
            unet(x, high, **kwargs)

    full_with_engine = timed(lambda: unet(x, high, **kwargs), before=lambda: run_to(0))
    retrieval_with_engine = timed(lambda: unet(x, low, **kwargs), before=lambda: run_to(1))
    engine.end_run()
    bare_retrieval, bare = timed(bare_shallow), timed(bare_full)
    return {"engine_retrieval_s": retrieval_with_engine, "bare_retrieval_s": bare_retrieval,
            "wrapper_overhead_retrieval_us": 1e6 * (retrieval_with_engine - bare_retrieval),
            "wrapper_overhead_full_us": 1e6 * (full_with_engine - bare)}


def _middle_inputs(unet: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, kwargs: dict[str, torch.Tensor]) -> tuple:
    """The middle block's inputs on a full pass (for branch n-1, whose cached tensor is its output)."""
    seen: list[tuple] = []
    handle = unet.middle_block.register_forward_pre_hook(lambda m, args: seen.append(args))
    unet(x, t, **kwargs)
    handle.remove()
    return seen[0]


def format_table(r: dict[str, Any]) -> str:
    return "\n".join([
        f"DeepCache benchmark: {r['arch']} U-Net, {r['size']}x{r['size']} (latent {r['latent']}x{r['latent']}), "
        f"U-Net batch {r['unet_batch']}, {r['sampler']}, {r['steps']} steps, interval {r['interval']}, "
        f"branch {r['branch']}, {r['schedule']}, {r['torch_threads']} torch threads, {r['device_name']} "
        f"{r['dtype']}{', compiled (' + r['compile'] + ')' if r['compile'] else ''}",
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
        f"installed but disabled: {100 * r['disabled_overhead']:+.2f}% per step (median of paired steps; "
        f"{100 * r['disabled_overhead_total']:+.2f}% of the run totals); "
        f"achieved/ideal per lockstep run: {', '.join(f'{100 * v:.1f}%' for v in r['achieved_over_ideal_per_run'])}",
        f"engine per pass: retrieval {r['wrapper_overhead_retrieval_us']:+.0f} us over the bare shallow branch "
        f"({1e3 * r['bare_retrieval_s']:.2f} ms), full {r['wrapper_overhead_full_us']:+.0f} us; DeepCache's full "
        f"steps {100 * r['full_step_overhead']:+.1f}% against the same steps without it; the adaptive schedule's "
        f"probe {1e6 * r['probe_s']:.0f} us ({100 * r['probe_over_retrieval']:.2f}% of a retrieval pass); forecast "
        f"{1e6 * r['forecast_s']:.0f} us ({100 * r['forecast_over_retrieval']:.2f}%)",
    ] + ([
        f"{'off, with a ControlNet':28}{r['time_per_image_off_controlnet_s']:>11.2f}s{1:>9.2f}x",
        f"{'DeepCache, with a ControlNet':28}{r['time_per_image_on_controlnet_s']:>11.2f}s"
        f"{r['speedup_with_controlnet']:>9.2f}x  ({100 * r['with_over_without_controlnet']:.1f}% of the speed-up "
        "without ControlNet)",
    ] if "speedup_with_controlnet" in r else []))


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


def run_cli(a: argparse.Namespace, compute: Callable[..., dict[str, Any]],
            table: Callable[[dict[str, Any]], str], plot: Callable[[dict[str, Any], str], None]) -> int:
    """What ``python -m deepcache`` does with any of its harnesses: compute (progress on stderr unless ``--json``),
    plot if asked, print the table or the JSON."""
    result = compute(a, log=(lambda msg: None) if a.json else (lambda msg: print(f"[deepcache] {msg}",
                                                                                   file=sys.stderr, flush=True)))
    if a.plot:
        plot(result, a.plot)
    print(json.dumps(result, indent=1) if a.json else table(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(parse_args(argv), measure, format_table, write_plot)

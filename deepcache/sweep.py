"""``python -m deepcache --sweep``: drift per cost of every schedule, on a real U-Net through a real sampler.

The uncached sampling is run once; then each schedule over a range of settings (uniform and non-uniform over
intervals, adaptive over thresholds with its interval as the bound). For each setting: the U-Net passes run in full
(the cost: a retrieval pass costs a few percent of a full one) and the drift of the final latent from the uncached
one (mean |Δ|, and relative to mean |latent|). With random weights this is drift from the uncached run, not image
quality. ``forecast`` is the uniform schedule and ``adaptive+forecast`` the adaptive one with the ``forecast``
parameter on: retrievals extrapolate the cached deep features from the slot's last two full passes, first order in
the timestep, instead of reusing the last ones as they are. ``--analysis`` adds the probe's worth: on the uncached
run, for every step the uniform schedule would cache, the probe's change since the last full step against the true
change of the deep features that a retrieval would reuse, and their correlation.
"""
from __future__ import annotations

import argparse
import math
from typing import Any

import torch

from .benchmark import run_cli
from .engine import DeepCacheEngine
from .params import DeepCacheParams
from .refresh import relative_change
from .schedule import plan_full_steps
from .testbed import ARCHS, SAMPLERS, Pipeline, build_unet

INTERVALS = (2, 3, 4, 5, 6)
THRESHOLDS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
# each row's name: (the schedule it runs, forecast on); forecast rows are compared with their schedule's curve too
SCHEDULE_ROWS = {"uniform": ("uniform", False), "non-uniform": ("non-uniform", False), "forecast": ("uniform", True),
                 "adaptive": ("adaptive", False), "adaptive+forecast": ("adaptive", True)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m deepcache --sweep", description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", action="store_true", help="(selects this harness)")
    ap.add_argument("--arch", choices=sorted(ARCHS), default="sd15")
    ap.add_argument("--size", type=int, default=64, help="image size in pixels (default 64)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sampler", choices=sorted(SAMPLERS), default="euler")
    ap.add_argument("--branch", type=int, default=0)
    ap.add_argument("--intervals", default=",".join(map(str, INTERVALS)),
                    help="uniform / non-uniform intervals (comma-separated)")
    ap.add_argument("--thresholds", default=",".join(map(str, THRESHOLDS)), help="adaptive thresholds")
    ap.add_argument("--bound", type=int, default=6, help="adaptive: its interval, the most steps between full ones")
    ap.add_argument("--schedules", default=",".join(SCHEDULE_ROWS))
    ap.add_argument("--seeds", type=int, default=1, help="images (seeds) per setting; drift is their mean")
    ap.add_argument("--analysis", action="store_true", help="add the probe-correlation analysis")
    ap.add_argument("--plot", metavar="PNG", help="full passes vs drift, one line per schedule")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    return ap.parse_args(argv)


def settings(a: argparse.Namespace) -> list[tuple[str, DeepCacheParams]]:
    """Each setting to run, with its row's name (``SCHEDULE_ROWS``): the interval-driven schedules over
    ``--intervals``, the adaptive ones over ``--thresholds`` bounded by ``--bound``."""
    base = DeepCacheParams(enabled=True, branch=a.branch)
    out = []
    for name in a.schedules.split(","):
        if name not in SCHEDULE_ROWS:
            raise SystemExit(f"unknown schedule {name!r}; known: {', '.join(SCHEDULE_ROWS)}")
        schedule, forecast = SCHEDULE_ROWS[name]
        row = base.replace(schedule=schedule, forecast=forecast)
        if schedule == "adaptive":
            out += [(name, row.replace(interval=a.bound, threshold=float(t))) for t in a.thresholds.split(",")]
        else:
            out += [(name, row.replace(interval=int(i))) for i in a.intervals.split(",")]
    return out


def sweep(a: argparse.Namespace, log=lambda msg: None) -> dict[str, Any]:
    if a.threads:
        torch.set_num_threads(a.threads)
    unet = build_unet(a.arch)
    pipe = Pipeline(unet)
    schedule = pipe.timestep_schedule(pipe.sigmas(a.sampler, a.steps))
    seeds = range(a.seeds)
    log(f"uncached reference: {a.arch} {a.size}px {a.sampler} {a.steps} steps, {a.seeds} seed(s)")
    references = [pipe.sample(a.sampler, a.steps, size=a.size, seed=seed) for seed in seeds]
    scale = sum(float(r.abs().mean()) for r in references) / len(references)
    rows = []
    for name, params in settings(a):
        engine = DeepCacheEngine()
        engine.install(unet)
        drifts, full, cached, steps_cached = [], 0, 0, 0
        for seed, reference in zip(seeds, references):
            engine.begin_run(params, a.steps, schedule)
            latent = pipe.sample(a.sampler, a.steps, size=a.size, seed=seed)
            stats = engine.end_run()
            drifts.append(float((latent - reference).abs().mean()))
            full, cached, steps_cached = full + stats.full_passes, cached + stats.cached_passes, \
                steps_cached + stats.cached_steps
        engine.uninstall()
        drift = sum(drifts) / len(drifts)
        row = {"schedule": name, "interval": params.interval,
               "threshold": params.threshold if params.schedule == "adaptive" else None,
               "full_passes": full / len(drifts), "cached_passes": cached / len(drifts),
               "cached_steps": steps_cached / len(drifts), "drift": drift, "relative_drift": drift / scale}
        rows.append(row)
        log(f"{row['schedule']:18} interval {row['interval']:2} threshold {row['threshold']}: "
            f"{row['full_passes']:.1f} full passes, drift {drift:.5f} ({100 * row['relative_drift']:.2f}%)")
    result = {"arch": a.arch, "size": a.size, "steps": a.steps, "sampler": a.sampler, "branch": a.branch,
              "seeds": a.seeds, "latent_abs_mean": scale, "rows": rows, "comparison": compare(rows)}
    if a.analysis:
        result["analysis"] = probe_analysis(unet, pipe, a, schedule)
    return result


def drift_at(rows: list[dict[str, Any]], full_passes: float) -> float | None:
    """The drift a schedule's curve gives at ``full_passes`` (its setting of that cost, else linear between its two
    nearest settings, in log drift); None outside the range it covers."""
    points = sorted((r["full_passes"], r["drift"]) for r in rows if r["drift"] > 0)
    same = [y for x, y in points if x == full_passes]
    if same:
        return min(same)
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= full_passes <= x1:
            if x1 == x0:
                return min(y0, y1)
            w = (full_passes - x0) / (x1 - x0)
            return math.exp((1 - w) * math.log(y0) + w * math.log(y1))
    return None


def compare(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each setting against the uniform curve at the same number of full passes: the ratio of drifts (below 1: it
    drifts less for the same cost); ``adaptive+forecast`` also against the adaptive curve (``over_base``)."""
    curves = {name: [r for r in rows if r["schedule"] == name] for name in ("uniform", "adaptive")}
    out = []
    for r in rows:
        if r["schedule"] == "uniform":
            continue
        reference = drift_at(curves["uniform"], r["full_passes"])
        base = drift_at(curves["adaptive"], r["full_passes"]) if r["schedule"] == "adaptive+forecast" else None
        if reference or base:
            out.append({"schedule": r["schedule"], "interval": r["interval"], "threshold": r["threshold"],
                        "full_passes": r["full_passes"],
                        "drift_over_uniform": r["drift"] / reference if reference else None,
                        "drift_over_base": r["drift"] / base if base else None})
    return out


def probe_analysis(unet: torch.nn.Module, pipe: Pipeline, a: argparse.Namespace,
                   schedule: list[float]) -> dict[str, Any]:
    """On the uncached run: per step the uniform plan (interval 3 for ``--bound`` 3, else ``--bound``) caches, the
    probe's change since the last full step and the true change of the deep features a retrieval reuses."""
    n, k = len(unet.input_blocks), a.branch
    probe_block = unet.input_blocks[k]  # its output is the probe (the first skipped block's input)
    deep_block = unet.output_blocks[n - 2 - k] if k < n - 1 else unet.middle_block
    seen: dict[str, list[torch.Tensor]] = {"probe": [], "deep": []}
    hooks = [probe_block.register_forward_hook(lambda m, i, o: seen["probe"].append(o.detach().clone())),
             deep_block.register_forward_hook(lambda m, i, o: seen["deep"].append(o.detach().clone()))]
    calls: list[int] = []
    step_of = {round(t, 3): i for i, t in enumerate(schedule)}
    unet_hook = unet.register_forward_pre_hook(lambda m, args: calls.append(step_of.get(round(float(args[1][0]), 3),
                                                                                        -1)))
    try:
        pipe.sample(a.sampler, a.steps, size=a.size, seed=0)
    finally:
        for h in hooks + [unet_hook]:
            h.remove()
    first_call = {}
    for index, step in enumerate(calls):
        if step >= 0 and step not in first_call:
            first_call[step] = index
    plan = plan_full_steps(DeepCacheParams(enabled=True, interval=a.bound), a.steps)
    points, last_full = [], 0
    for step in range(a.steps):
        if plan[step]:
            last_full = step
        elif step in first_call and last_full in first_call:
            now, then = first_call[step], first_call[last_full]
            points.append({"step": step, "since_full": step - last_full,
                           "probe_change": relative_change(seen["probe"][now], seen["probe"][then]),
                           "deep_change": relative_change(seen["deep"][now], seen["deep"][then])})
    xs, ys = [p["probe_change"] for p in points], [p["deep_change"] for p in points]
    return {"interval": a.bound, "points": points, "pearson": pearson(xs, ys),
            "spearman": pearson(ranks(xs), ranks(ys))}


def pearson(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    for rank, index in enumerate(order):
        out[index] = float(rank)
    return out


def format_table(r: dict[str, Any]) -> str:
    lines = [f"DeepCache drift per cost: {r['arch']} {r['size']}px, {r['sampler']}, {r['steps']} steps, branch "
             f"{r['branch']}, {r['seeds']} seed(s); drift = mean |final latent - uncached| (random weights: drift, "
             "not quality)",
             f"{'schedule':18}{'interval':>9}{'threshold':>10}{'full passes':>12}{'cached steps':>13}"
             f"{'drift':>10}{'relative':>10}"]
    for row in r["rows"]:
        threshold = "" if row["threshold"] is None else f"{row['threshold']:g}"
        lines.append(f"{row['schedule']:18}{row['interval']:>9}{threshold:>10}{row['full_passes']:>12.1f}"
                     f"{row['cached_steps']:>13.1f}{row['drift']:>10.5f}{100 * row['relative_drift']:>9.2f}%")
    for c in r["comparison"]:
        setting = f"threshold {c['threshold']:g}" if c["threshold"] is not None else f"interval {c['interval']}"
        against = [f"{c[key]:.2f}x {name}'s" for key, name in (("drift_over_uniform", "uniform"),
                                                                 ("drift_over_base", "adaptive")) if c[key]]
        lines.append(f"{c['schedule']} {setting}: {c['full_passes']:.1f} full passes, drift "
                     f"{', '.join(against)} at the same cost")
    if "analysis" in r:
        an = r["analysis"]
        lines.append(f"probe vs true deep-feature change over the steps interval {an['interval']} caches: Pearson "
                     f"{_fmt(an['pearson'])}, Spearman {_fmt(an['spearman'])} ({len(an['points'])} steps)")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def write_plot(r: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for schedule in dict.fromkeys(row["schedule"] for row in r["rows"]):
        points = sorted((row["full_passes"], row["relative_drift"]) for row in r["rows"]
                        if row["schedule"] == schedule)
        ax.plot([p[0] for p in points], [100 * p[1] for p in points], marker="o", label=schedule)
    ax.set(xlabel="U-Net passes run in full (cost)", ylabel="drift of the final latent, % of mean |latent|",
           yscale="log", title=f"{r['arch']} {r['size']}px {r['sampler']} {r['steps']} steps (random weights)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    return run_cli(parse_args(argv), sweep, format_table, write_plot)

"""The adaptive schedule on the real ldm U-Net and k-diffusion samplers: the shallow branch's probe decides, per
step, whether the cache is still good enough (``deepcache/refresh.py``)."""
import math

import pytest
import torch
from test_controlnet import hint
from test_controlnet import sample as controlled_sample

from deepcache import DeepCacheEngine, DeepCacheParams, plan_full_steps
from deepcache.session import resolve_params

STEPS = 12


def run(pipe, params, split=False, threshold=None, sampler="euler"):
    """One sampling with DeepCache ``params`` (``threshold`` overrides the adaptive threshold beyond its range);
    the latent, the stats and the probe's change per probed step."""
    engine = DeepCacheEngine()
    engine.install(pipe.unet)
    try:
        engine.begin_run(params, STEPS, pipe.timestep_schedule(pipe.sigmas(sampler, STEPS)))
        refresh = engine._run.refresh
        if threshold is not None:
            refresh.threshold = threshold
        latent = pipe.sample(sampler, STEPS, split=split)
        return latent, engine.end_run(), dict(refresh.changes) if refresh else {}
    finally:
        engine.uninstall()


def adaptive(interval=4, threshold=0.3, **changes):
    return DeepCacheParams(enabled=True, schedule="adaptive", interval=interval, threshold=threshold, **changes)


def test_the_plan_leaves_the_window_open_after_its_first_step():
    plan = plan_full_steps(adaptive(start=0.25, final_full_steps=2), 12)
    assert plan == (True, True, True, True) + (False,) * 6 + (True, True)


def test_a_threshold_nothing_reaches_is_the_uniform_schedule(pipe):
    """With no step stale, only the interval bound refreshes: exactly the uniform schedule's passes and image."""
    uniform, uniform_stats, _ = run(pipe, DeepCacheParams(enabled=True, interval=4))
    latent, stats, changes = run(pipe, adaptive(interval=4), threshold=math.inf)
    assert torch.equal(latent, uniform)
    assert (stats.full_steps, stats.cached_steps) == (uniform_stats.full_steps, uniform_stats.cached_steps) == (3, 9)
    assert len(changes) == 9  # every cached step was probed


def test_a_threshold_of_zero_runs_every_step_in_full_and_the_image_is_the_uncached_one(pipe):
    """A probing pass that finds the cache stale goes on as a full pass from its first skipped block: the result
    is exactly the uncached one."""
    latent, stats, changes = run(pipe, adaptive(threshold=0.0))
    assert stats.cached_passes == 0 and stats.full_passes == STEPS and len(changes) == STEPS - 1
    assert torch.equal(latent, pipe.sample("euler", STEPS))


def test_each_step_follows_its_probe_and_the_bound(pipe):
    """A step is cached exactly when its probe's change since the last full step is within the threshold, and
    never more than interval - 1 steps in a row."""
    threshold = 0.3
    _, stats, changes = run(pipe, adaptive(interval=4, threshold=threshold))
    cached = sorted(stats.steps_with_cached_pass)
    assert cached and stats.full_steps > 3  # some steps refreshed early, some were cached
    assert cached == sorted(step for step, change in changes.items() if change <= threshold)
    assert all(not set(range(s, s + 4)) <= set(cached) for s in range(STEPS))  # at most 3 in a row


def test_every_call_of_a_step_follows_the_first_calls_decision(pipe):
    """cond and uncond in separate calls: the first call of a step decides, the second follows, so no step mixes
    full and cached passes, and the result is the one-call run's."""
    together, together_stats, _ = run(pipe, adaptive())
    split, stats, _ = run(pipe, adaptive(), split=True)
    assert stats.partly_cached_steps == 0 and stats.cached_steps == together_stats.cached_steps > 0
    assert stats.cached_passes == 2 * stats.cached_steps
    assert torch.allclose(split, together, atol=1e-4)


@pytest.mark.parametrize("sampler", ["heun", "dpmpp_2m", "euler_a"])
def test_other_samplers(pipe, sampler):
    latent, stats, _ = run(pipe, adaptive(), sampler=sampler)
    assert torch.isfinite(latent).all() and 0 < stats.cached_steps < STEPS


def test_a_controlnet_runs_in_full_on_a_probing_pass(pipe, tiny_unet):
    """A ControlNet skips its deep part only on a decided retrieval: the probing pass may turn full after the
    ControlNet ran, so it must have given every residual. The ControlNet-aware run equals running it in full."""
    from test_controlnet import ControlNet

    units = [(ControlNet(tiny_unet, seed=1), hint(0))]
    aware, stats = controlled_sample(pipe, units, adaptive())
    in_full, _ = controlled_sample(pipe, units, adaptive(), aware=False)
    assert 0 < stats.cached_passes < 9
    assert torch.allclose(aware, in_full, rtol=0, atol=1e-5 * in_full.abs().max().item())


def test_new_parameters_come_last_so_old_positional_payloads_keep_their_meaning():
    old = [True, 4, 1, 0.0, 1.0, 0, "uniform", 1.4, 0.3, "same", 3, 0, 0.0, 1.0]
    assert DeepCacheParams.from_args(old) == DeepCacheParams(enabled=True, interval=4, branch=1)
    assert DeepCacheParams.from_args(old[:6] + ["adaptive"] + old[7:] + [0.2]).threshold == 0.2
    params = adaptive(threshold=0.2)
    assert DeepCacheParams.from_infotext({"DeepCache": "on", **params.infotext()}) == params


def test_a_threshold_axis_selects_the_adaptive_schedule():
    assert resolve_params([True], {"threshold": 0.2}).schedule == "adaptive"
    assert resolve_params([True], {"threshold": 0.2, "schedule": "uniform"}).schedule == "uniform"

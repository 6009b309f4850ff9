"""The engine on a real ldm U-Net driven by real k-diffusion samplers."""
import gc

import pytest
import torch

from deepcache import DeepCacheEngine, DeepCacheParams
from deepcache.engine import EngineConflict
from deepcache.schedule import plan_full_steps
from deepcache.testbed import SAMPLERS, Pipeline, build_unet

ON = DeepCacheParams(enabled=True, interval=3)


def run(pipe, params, sampler="euler", steps=12, engine=None, **kw):
    """Sample with DeepCache installed for one run; return (latent, stats)."""
    engine = engine or DeepCacheEngine()
    engine.install(pipe.unet)
    engine.begin_run(params, steps, pipe.timestep_schedule(pipe.sigmas(sampler, steps)))
    latent = pipe.sample(sampler, steps, **kw)
    stats = engine.end_run()
    engine.uninstall()
    return latent, stats


def block_state(unet):
    blocks = list(unet.input_blocks) + [unet.middle_block] + list(unet.output_blocks)
    return [dict(b.__dict__) for b in blocks + [unet]] + [dict(unet._forward_pre_hooks)]


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_disabled_and_interval_one_are_bit_identical(pipe, sampler):
    reference = pipe.sample(sampler, 8)
    for params in (DeepCacheParams(enabled=False), DeepCacheParams(enabled=True, interval=1)):
        latent, _ = run(pipe, params, sampler, steps=8)
        assert torch.equal(latent, reference)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_steps_are_sampler_steps_not_unet_calls(pipe, sampler):
    """Two-evaluation samplers (Heun, DPM2, DPM++ 2S a, DPM++ SDE) make about 2N U-Net calls; the step list
    must still be the planned one, and the result close to the uncached one. Heun and DPM++ 2S a evaluate
    their second call at (or below) the next step's sigma, so step 1 is the first to hold two calls: its new
    second slot has no cache yet and is computed in full (one extra full pass per run)."""
    steps = 12
    plan = plan_full_steps(ON, steps)
    latent, stats = run(pipe, ON, sampler, steps)
    extra = [1] if sampler in ("heun", "dpmpp_2s_a") else []
    assert stats.steps == steps
    assert sorted(stats.steps_with_full_pass) == sorted([i for i, full in enumerate(plan) if full] + extra)
    assert stats.cached_passes > 0
    reference = pipe.sample(sampler, steps)
    assert not torch.equal(latent, reference)
    assert (latent - reference).abs().mean() < 0.2 * reference.abs().mean()


def test_ddim_timestep_loop(pipe):
    steps = 10
    engine = DeepCacheEngine()
    engine.install(pipe.unet)
    engine.begin_run(ON, steps, pipe.ddim_timesteps(steps))
    latent = pipe.sample_ddim(steps)
    stats = engine.end_run()
    engine.uninstall()
    assert sorted(stats.steps_with_full_pass) == [0, 3, 6, 9] and stats.cached_passes == 6
    reference = pipe.sample_ddim(steps)
    assert (latent - reference).abs().mean() < 0.2 * reference.abs().mean()


def test_without_a_schedule_each_new_timestep_is_a_step(pipe):
    engine = DeepCacheEngine()
    engine.install(pipe.unet)
    engine.begin_run(ON, 12)
    with_clock = pipe.sample("euler", 12)
    stats = engine.end_run()
    engine.uninstall()
    assert sorted(stats.steps_with_full_pass) == [0, 3, 6, 9] and stats.steps == 12
    assert torch.equal(with_clock, run(pipe, ON, "euler", 12)[0])


def test_split_cond_uncond_calls_use_their_own_slots(pipe):
    """With cond and uncond in separate calls, each must reuse its own features: the result stays as close
    to the batched run as the uncached split run is to the uncached batched run."""
    batched, _ = run(pipe, ON)
    split, stats = run(pipe, ON, split=True)
    assert stats.cached_passes == 2 * 8
    assert (split - batched).abs().max() < 1e-3


def unet_call(unet, x, t, ctx):
    with torch.no_grad():
        return unet(x, torch.full((x.shape[0],), float(t)), context=ctx)


SCHEDULE = [900.0, 800.0, 700.0, 600.0, 500.0, 400.0]


def calls(engine, unet, inputs, schedule=SCHEDULE, params=ON):
    """Run U-Net calls ``(x, ctx)`` at every step of ``schedule``; return each call's output per input."""
    engine.begin_run(params, len(schedule), schedule)
    outputs = [[unet_call(unet, x, t, ctx) for x, ctx in inputs] for t in schedule]
    return outputs, engine.end_run()


@pytest.mark.parametrize("other_shape", [(1, 4, 8, 8), (4, 4, 8, 8), (2, 4, 16, 16)])
def test_a_call_of_another_batch_or_resolution_never_touches_a_slot(tiny_unet, other_shape):
    """Interleaving calls of another shape (NGMS dropping uncond, a hires resolution) changes nothing for
    the first kind of call: its outputs are bit-identical to a run without the interleaved calls."""
    engine = DeepCacheEngine()
    engine.install(tiny_unet)
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 32, generator=g)
    other = (torch.randn(*other_shape, generator=g), torch.randn(other_shape[0], 4, 32, generator=g))
    alone, _ = calls(engine, tiny_unet, [(x, ctx)])
    mixed, stats = calls(engine, tiny_unet, [(x, ctx), other])
    engine.uninstall()
    assert all(torch.equal(a[0], m[0]) for a, m in zip(alone, mixed))
    assert stats.cached_passes == 2 * 4


def test_a_slot_that_missed_the_last_full_step_is_refreshed(tiny_unet):
    """NGMS drops uncond on every other call: a batch size seen only on some steps must not reuse a tensor
    older than the last planned full step."""
    engine = DeepCacheEngine()
    engine.install(tiny_unet)
    x2, x1, ctx2 = torch.randn(2, 4, 8, 8), torch.randn(1, 4, 8, 8), torch.randn(2, 4, 32)
    engine.begin_run(ON, 6, SCHEDULE)
    modes = []
    for step, t in enumerate(SCHEDULE):
        x, ctx = (x2, ctx2) if step % 2 == 0 else (x1, ctx2[:1])
        before = engine.stats.cached_passes
        unet_call(tiny_unet, x, t, ctx)
        modes.append("R" if engine.stats.cached_passes > before else "F")
    engine.uninstall()
    # step 3 is planned full (batch 1); step 4 (batch 2) last refreshed at step 2 < 3, so it is full again
    assert modes == ["F", "F", "R", "F", "F", "R"]


def test_two_models_keep_their_own_caches():
    a, b = build_unet("tiny", seed=1), build_unet("tiny", seed=2)
    ea, eb = DeepCacheEngine(), DeepCacheEngine()
    ea.install(a)
    eb.install(b)
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 32)
    alone, _ = calls(ea, a, [(x, ctx)])
    ea.begin_run(ON, 6, SCHEDULE)
    eb.begin_run(ON, 6, SCHEDULE)
    mixed = [(unet_call(a, x, t, ctx), unet_call(b, x, t, ctx)) for t in SCHEDULE]
    ea.uninstall()
    eb.uninstall()
    assert all(torch.equal(s[0], m[0]) for s, m in zip(alone, mixed))


def test_a_jump_back_up_in_sigma_never_reuses_the_old_cache(tiny_unet):
    """Restart-style schedules go back to a higher noise level: the first pass after the jump is full even
    where the plan says retrieval, so the middle block is never skipped without a valid cache."""
    engine = DeepCacheEngine()
    engine.install(tiny_unet)
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 32)
    engine.begin_run(ON, 6, SCHEDULE)
    modes = []
    for t in [900, 800, 700, 600, 500, 790, 690, 590]:
        before = engine.stats.cached_passes
        unet_call(tiny_unet, x, t, ctx)
        modes.append("R" if engine.stats.cached_passes > before else "F")
    engine.uninstall()
    # the jump lands on step 1 (planned retrieval): full, then retrieval resumes from that fresh cache
    assert modes == ["F", "R", "R", "F", "R", "F", "R", "F"]


def test_uninstall_is_exact_and_idempotent(pipe):
    unet = pipe.unet
    reference = pipe.sample("euler", 6)
    before = block_state(unet)
    engine = DeepCacheEngine()
    engine.install(unet)
    engine.install(unet)
    assert block_state(unet) != before
    engine.begin_run(ON, 6, pipe.timestep_schedule(pipe.sigmas("euler", 6)))
    pipe.sample("euler", 6)
    engine.uninstall()
    engine.uninstall()
    assert block_state(unet) == before
    assert torch.equal(pipe.sample("euler", 6), reference)


def test_a_forward_set_by_someone_else_is_restored(tiny_unet):
    block = tiny_unet.output_blocks[3]
    theirs = block.forward
    block.forward = theirs  # an instance-level forward, as other extensions set
    engine = DeepCacheEngine()
    engine.install(tiny_unet)
    engine.uninstall()
    assert block.__dict__["forward"] is theirs
    del block.forward


def test_block_pre_hooks_fire_on_every_call(pipe):
    """A1111's --lowvram moves each block to the GPU in a forward pre-hook: blocks are still called through
    module(...), so every hook fires on full and cached passes alike."""
    unet = pipe.unet
    blocks = list(unet.input_blocks) + [unet.middle_block] + list(unet.output_blocks)
    counts = [0] * len(blocks)
    handles = [b.register_forward_pre_hook(lambda m, a, i=i: counts.__setitem__(i, counts[i] + 1))
               for i, b in enumerate(blocks)]
    _, stats = run(pipe, ON, steps=9)
    for h in handles:
        h.remove()
    assert stats.cached_passes == 6 and counts == [9] * len(blocks)


def test_inpainting_unet_with_nine_input_channels():
    pipe9 = Pipeline(build_unet("tiny-inpaint"))
    x = torch.randn(2, 9, 8, 8)
    ctx = torch.randn(2, 4, 32)
    engine = DeepCacheEngine()
    engine.install(pipe9.unet)
    outputs, stats = calls(engine, pipe9.unet, [(x, ctx)])
    engine.uninstall()
    assert stats.cached_passes == 4 and outputs[1][0].shape == (2, 4, 8, 8)


def live_tensors():
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def test_no_memory_growth_over_100_runs(tiny_unet):
    engine = DeepCacheEngine()
    engine.install(tiny_unet)
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 32)
    calls(engine, tiny_unet, [(x, ctx)])
    baseline = live_tensors()
    for _ in range(100):
        engine.begin_run(ON, 6, SCHEDULE)
        for t in SCHEDULE:
            unet_call(tiny_unet, x, t, ctx)
        assert len(engine._run.slots) == 1
        engine.end_run()
    assert live_tensors() <= baseline
    engine.uninstall()


def test_a_wrapper_left_inside_someone_elses_stays_inert_after_reinstall(tiny_unet):
    """Another extension wrapped input_blocks[0] after us: uninstall leaves their wrapper (and ours inside it)
    in place, and after a new install the old wrapper must not count passes a second time."""
    engine = DeepCacheEngine()
    engine.install(tiny_unet)
    block = tiny_unet.input_blocks[0]
    ours = block.forward
    block.forward = lambda *a, **k: ours(*a, **k)
    engine.uninstall()
    try:
        x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 32)
        engine.install(tiny_unet)  # keeps their wrapper: it is not ours to replace
        _, stats = calls(engine, tiny_unet, [(x, ctx)])
        assert (stats.full_passes, stats.cached_passes) == (2, 4)
    finally:
        engine.uninstall()
        del block.forward


def test_a_second_engine_on_a_hooked_unet_is_refused_and_nothing_is_left_behind(pipe):
    unet = pipe.unet
    before = block_state(unet)
    first, second = DeepCacheEngine(), DeepCacheEngine()
    first.install(unet)
    with pytest.raises(EngineConflict, match="already hooked by another DeepCache engine"):
        second.install(unet)
    assert not second.installed
    first.uninstall()
    second.uninstall()
    assert block_state(unet) == before
    second.install(unet)  # free again once the first is gone
    first.uninstall()  # the wrong engine's uninstall touches nothing
    assert second.installed and block_state(unet) != before
    second.uninstall()
    assert block_state(unet) == before


@pytest.mark.parametrize("schedule", [SCHEDULE, None], ids=["with schedule", "without"])
def test_a_call_at_a_timestep_that_is_not_a_number_stays_in_its_step(tiny_unet, schedule):
    """Forge Neo's "DPM++ 2s a RF" makes its second evaluation of every step at a noise level computed as
    log((1 - sigma) / sigma): not a number for an SD U-Net's sigmas. That call belongs to the step of the call
    before it, so the run caches as planned instead of starting over at every such call."""
    engine = DeepCacheEngine()
    engine.install(tiny_unet)
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 32)
    engine.begin_run(ON, 6, schedule)
    modes = []
    for t in [900, 800, 700, 600, 500, 400]:
        for call_t in (t, float("nan")):
            before = engine.stats.cached_passes
            unet_call(tiny_unet, x, call_t, ctx)
            modes.append("R" if engine.stats.cached_passes > before else "F")
    stats = engine.end_run()
    engine.uninstall()
    assert "".join(modes) == "FFRRRRFFRRRR"
    assert (stats.cached_steps, stats.partly_cached_steps) == (4, 0)

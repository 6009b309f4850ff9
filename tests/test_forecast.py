"""Forecast on the real ldm U-Net and k-diffusion samplers: a retrieval serves the deep features extrapolated from
the slot's last two full passes, first order in the timestep, instead of the last ones as they are
(``Slot.forecast``)."""
import pytest
import torch
from test_unet_patterns import UNIFORM_3, eager_then_compiled, window_calls

from deepcache import DeepCacheEngine, DeepCacheParams

STEPS = 12


def served(pipe, params, sampler="euler", runs=1):
    """Sample ``runs`` times in one DeepCache run (a second sampling moves the step clock back: a new segment).
    For every pass of the cached block's slot: the pass's timestep, whether it retrieved, the block's output, the
    segment and the slot; and the last latent."""
    engine = DeepCacheEngine()
    engine.install(pipe.unet)
    n = len(pipe.unet.input_blocks)
    provider = pipe.unet.output_blocks[n - 2 - params.branch]
    seen = []

    def record(module, args, out):
        p = engine.current_pass()
        seen.append((p.t, p.retrieve, out.detach().clone(), engine._run.clock.segment, id(p.slot)))

    hook = provider.register_forward_hook(record)
    try:
        engine.begin_run(params, STEPS, pipe.timestep_schedule(pipe.sigmas(sampler, STEPS)))
        for _ in range(runs):
            latent = pipe.sample(sampler, STEPS)
        engine.end_run()
    finally:
        hook.remove()
        engine.uninstall()
    return seen, latent


def expected_forecasts(seen):
    """What each retrieval must serve: the last full output when its slot has one full pass in this segment, else
    the line through the last two, ``f1 + (t - t1) / (t1 - t0) * (f1 - f0)``. Counts the extrapolated ones."""
    history, extrapolated = {}, 0
    for t, retrieve, out, segment, slot in seen:
        kept = history.setdefault((segment, slot), [])
        if not retrieve:
            kept[:] = (kept + [(t, out)])[-2:]
            continue
        if len(kept) == 1:
            assert torch.equal(out, kept[0][1])
            continue
        (t0, f0), (t1, f1) = kept
        torch.testing.assert_close(out, f1 + (t - t1) / (t1 - t0) * (f1 - f0), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(out, f1)
        extrapolated += 1
    return extrapolated


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m"])
def test_each_retrieval_serves_the_line_through_its_slots_last_two_full_passes(pipe, sampler):
    """Heun's two evaluations per step are two slots, each with its own timesteps: each extends its own line."""
    seen, _ = served(pipe, DeepCacheParams(enabled=True, interval=3, forecast=True), sampler)
    assert expected_forecasts(seen) >= 4


def test_a_new_segment_does_not_extend_a_line_from_the_one_before(pipe):
    """A second sampling in the same run (the clock moves back: Restart's jumps, a run without ``begin_run``)
    starts a new line: its first retrievals reuse, its later ones extrapolate from its own full passes only."""
    seen, _ = served(pipe, DeepCacheParams(enabled=True, interval=3, forecast=True), runs=2)
    segments = {segment for *_, segment, _ in seen}
    assert segments == {0, 1}
    assert expected_forecasts(seen) >= 8


def test_forecast_off_reuses_the_features_as_they_are(pipe):
    seen, _ = served(pipe, DeepCacheParams(enabled=True, interval=3))
    last_full = None
    for _, retrieve, out, *_ in seen:
        if retrieve:
            assert torch.equal(out, last_full)
        else:
            last_full = out


def test_forecast_drifts_less_from_the_uncached_image_than_reuse(pipe):
    """The measurement behind the option, on one small case (the sweep in docs/benchmarks.md has the rest): the
    extrapolated features are nearer the ones a full pass would give than the reused ones."""
    reference = pipe.sample("euler", STEPS)
    _, reused = served(pipe, DeepCacheParams(enabled=True, interval=2))
    _, forecast = served(pipe, DeepCacheParams(enabled=True, interval=2, forecast=True))
    assert (forecast - reference).abs().mean() < (reused - reference).abs().mean()


def test_windows_that_shift_forecast_each_frame_from_its_own_rows(tiny_unet):
    """AnimateDiff's shifting windows: a retrieval gathers each row's last two full features from the calls that
    carried it, so each frame's forecast is the one a call carrying all frames makes."""
    schedule = [900.0, 800.0, 700.0, 600.0, 500.0, 400.0, 300.0, 200.0]
    params = UNIFORM_3.replace(forecast=True)
    engine = DeepCacheEngine()
    engine.install(tiny_unet)
    shifting, stats = window_calls(tiny_unet, engine, lambda s: [[s % 4, (s + 1) % 4], [(s + 2) % 4, (s + 3) % 4]],
                                   schedule, params=params)
    whole, _ = window_calls(tiny_unet, engine, lambda s: [[0, 1, 2, 3]], schedule, params=params)
    reused, _ = window_calls(tiny_unet, engine, lambda s: [[0, 1, 2, 3]], schedule)
    engine.uninstall()
    assert stats.steps_with_cached_pass == {1, 2, 4, 5, 7}
    for step_shifting, step_whole in zip(shifting, whole):
        for window, out in step_shifting.items():
            rows = list(window) + [f + 4 for f in window]
            torch.testing.assert_close(out, step_whole[(0, 1, 2, 3)][rows], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(whole[4][(0, 1, 2, 3)], reused[4][(0, 1, 2, 3)])  # step 4 extrapolates


def test_a_compiled_unet_with_forecast_compiles_a_few_graphs_not_one_per_step(tiny_unet):
    """The forecast is made outside the U-Net's forward (when the pass is decided) and handed to the cached block
    as a tensor, so a compiled U-Net sees no step-dependent constant: a graph per kind of pass (full, retrieval,
    retrieval with a forecast, the first full pass), whatever the number of steps."""
    dynamo = pytest.importorskip("torch._dynamo")
    eager, compiled, stats = eager_then_compiled(tiny_unet, forecast=True)
    assert stats.cached_passes == 8
    assert dynamo.utils.counters["stats"]["unique_graphs"] <= 4
    assert not dynamo.utils.counters["graph_break"]
    assert torch.allclose(compiled, eager, atol=1e-5)
    dynamo.reset()


def test_the_new_parameter_comes_last_and_round_trips():
    old = [True, 4, 1, 0.0, 1.0, 0, "uniform", 1.4, 0.3, "same", 3, 0, 0.0, 1.0, 0.5]
    assert DeepCacheParams.from_args(old) == DeepCacheParams(enabled=True, interval=4, branch=1)
    assert DeepCacheParams.from_args(old + [True]).forecast is True
    params = DeepCacheParams(enabled=True, forecast=True)
    assert params.infotext() == {"DeepCache forecast": True}
    assert DeepCacheParams.from_infotext({"DeepCache": "on", **params.infotext()}) == params

"""What other extensions do inside the U-Net, on the real ldm U-Net: a patch that changes the resolution of the
deep blocks for part of the run (Forge's Kohya HRFix, "Deep Shrink"), and a compiler tracing the whole U-Net
(torch.compile, Forge Neo's "Torch Compile Integrated")."""
import pytest
import torch
import torch.nn.functional as F

from deepcache import DeepCacheEngine, DeepCacheParams
from deepcache.blockhooks import set_forward
from deepcache.schedule import plan_full_steps
from deepcache.testbed import Pipeline, build_unet

STEPS = 12
SIZE = 128  # a 16x16 latent: the tiny U-Net goes down to 2x2, and to 1x1 when shrunk


def deep_shrink(unet, depth, shrinking):
    """Kohya HRFix as Forge applies it: the output of ``input_blocks[depth]`` is downscaled while ``shrinking()``,
    and its mirror output block's output upscaled back, so every block in between runs at half resolution."""
    mirror = len(unet.output_blocks) - 1 - depth

    def resize(factor):
        def make(original):
            def patched(*args, **kwargs):
                out = original(*args, **kwargs)
                return F.interpolate(out, scale_factor=factor, mode="nearest") if shrinking() else out
            return patched
        return make

    set_forward(unet.input_blocks[depth], resize(0.5))
    set_forward(unet.output_blocks[mirror], resize(2.0))


def sample(pipe, params, shrink_until, engine=None):
    """Euler with Deep Shrink at depth 1 for the steps before ``shrink_until``; DeepCache when ``engine``."""
    sigmas = pipe.sigmas("euler", STEPS)
    schedule = pipe.timestep_schedule(sigmas)
    current = {"t": schedule[0]}
    pipe.unet.register_forward_pre_hook(lambda m, args: current.update(t=float(args[1][0])))
    deep_shrink(pipe.unet, 1, lambda: current["t"] > schedule[shrink_until] + 1e-3)
    if engine is not None:
        engine.install(pipe.unet)
        engine.begin_run(params, STEPS, schedule)
    latent = pipe.sample("euler", STEPS, size=SIZE)
    stats = engine.end_run() if engine is not None else None
    return latent, stats


@pytest.mark.parametrize("branch", [0, 1, 2])
def test_a_resolution_change_inside_the_unet_refreshes_the_cache(branch):
    """At branch >= the shrink depth a retrieval after the change would join a cached tensor of the other
    resolution to a fresh skip (a crash here, a stale interpolation in Forge): that step runs in full instead.
    At a shallower branch every tensor DeepCache touches keeps its shape, and the plan is kept."""
    params = DeepCacheParams(enabled=True, interval=3, branch=branch)
    latent, stats = sample(Pipeline(build_unet("tiny")), params, shrink_until=5, engine=DeepCacheEngine())
    reference, _ = sample(Pipeline(build_unet("tiny")), params, shrink_until=5)
    planned = [i for i, full in enumerate(plan_full_steps(params, STEPS)) if full]
    assert sorted(stats.steps_with_full_pass) == (planned if branch < 1 else sorted(planned + [5]))
    assert stats.cached_passes == STEPS - len(stats.steps_with_full_pass)
    assert (latent - reference).abs().mean() < 0.2 * reference.abs().mean()


def test_skipped_blocks_share_one_tensor_per_shape_for_the_whole_run(pipe):
    """No allocation per skipped block per retrieval pass: what a skipped block returns is the same tensor on
    every pass, and blocks of one shape share it."""
    engine = DeepCacheEngine()
    engine.install(pipe.unet)
    blocks = list(pipe.unet.input_blocks) + [pipe.unet.middle_block] + list(pipe.unet.output_blocks)
    returned: dict[int, set[tuple]] = {}

    def record(index, out):
        if engine.current_pass().retrieve:
            returned.setdefault(index, set()).add((out.data_ptr(), tuple(out.shape)))

    handles = [b.register_forward_hook(lambda m, a, out, i=i: record(i, out)) for i, b in enumerate(blocks)]
    engine.begin_run(DeepCacheParams(enabled=True, interval=3), STEPS,
                     pipe.timestep_schedule(pipe.sigmas("euler", STEPS)))
    pipe.sample("euler", STEPS)
    stats = engine.end_run()
    engine.uninstall()
    for handle in handles:
        handle.remove()
    provider, computed = len(blocks) - 2, {0, len(blocks) - 1}
    skipped = {i: r for i, r in returned.items() if i not in computed and i != provider}
    assert stats.cached_passes == 8 and len(skipped) == len(blocks) - 3
    assert all(len(r) == 1 for r in skipped.values())  # one tensor per block over all 8 retrieval passes
    tensors = set.union(*skipped.values())
    assert len(tensors) == len({shape for _, shape in tensors}) < len(skipped)  # one per shape


def compile_case(unet):
    """A pipeline around ``unet`` with DeepCache installed, and the run's parameters and schedule."""
    pipe = Pipeline(unet)
    engine = DeepCacheEngine()
    engine.install(unet)
    return pipe, engine, DeepCacheParams(enabled=True, interval=3), pipe.timestep_schedule(pipe.sigmas("euler", STEPS))


def compiled_runs(unet, pipe, engine, params, schedule, runs=2):
    """``runs`` DeepCache samplings through ``torch.compile(unet)`` (dynamo's eager backend); the last latent."""
    pipe.model.model.diffusion_model = torch.compile(unet, backend="eager", dynamic=True)
    try:
        for _ in range(runs):  # the second run reuses the graphs
            engine.begin_run(params, STEPS, schedule)
            latent = pipe.sample("euler", STEPS)
            stats = engine.end_run()
    finally:
        pipe.model.model.diffusion_model = unet
    return latent, stats


def eager_then_compiled(unet, **changes):
    """One DeepCache sampling (interval 3, ``changes``) in eager mode, then two through ``torch.compile`` with
    dynamo's counters cleared before them: both last latents and the compiled run's stats."""
    import torch._dynamo as dynamo

    pipe, engine, params, schedule = compile_case(unet)
    params = params.replace(**changes)
    engine.begin_run(params, STEPS, schedule)
    eager = pipe.sample("euler", STEPS)
    engine.end_run()
    dynamo.reset()
    dynamo.utils.counters.clear()
    try:
        compiled, stats = compiled_runs(unet, pipe, engine, params, schedule)
    finally:
        engine.uninstall()
    return eager, compiled, stats


def test_a_compiled_unet_compiles_once_per_kind_of_pass(tiny_unet):
    """A compiler traces the U-Net with DeepCache's wrappers inside: one graph for full passes and one for
    retrievals, no recompilation per block or per step, and the same result as without the compiler."""
    dynamo = pytest.importorskip("torch._dynamo")
    eager, compiled, stats = eager_then_compiled(tiny_unet)
    assert dynamo.utils.counters["stats"]["unique_graphs"] == 2
    assert not dynamo.utils.counters["graph_break"]
    assert stats.cached_passes == 8
    assert torch.allclose(compiled, eager, atol=1e-5)
    dynamo.reset()


def test_a_unet_whose_forward_breaks_the_graph_compiles_each_wrapper_once_per_kind_of_pass():
    """Forge's U-Net forward has graph breaks inside its block loop, so dynamo compiles each block call as a frame
    of its own. Every block's wrapper then has its own compiled frames, a few each (off, full, retrieval), far
    under dynamo's recompile limit (8) that a shared wrapper code reached before 1.0.0."""
    dynamo = pytest.importorskip("torch._dynamo")
    from torch._C._dynamo.eval_frame import _debug_get_cache_entry_list as cache_entries

    unet = build_unet("tiny")
    unet.input_blocks[3].register_forward_pre_hook(lambda module, args: dynamo.graph_break())
    pipe, engine, params, schedule = compile_case(unet)
    dynamo.reset()
    try:
        _, stats = compiled_runs(unet, pipe, engine, params, schedule)
        blocks = list(unet.input_blocks) + [unet.middle_block] + list(unet.output_blocks)
        entries = {block.forward.__code__.co_name: len(cache_entries(block.forward.__code__)) for block in blocks}
    finally:
        engine.uninstall()
        dynamo.reset()
    assert stats.cached_passes == 8
    assert len(entries) == len(blocks)  # one code object per block
    assert 0 < max(entries.values()) <= 3, entries


def tile_calls(unet, engine, tiles, ctx, schedule):
    """Tiled Diffusion / MultiDiffusion, Regional Prompter's latent mode, AnimateDiff's context windows: several
    U-Net calls of one shape per step (one per tile, region or window of frames). Returns each call's outputs."""
    engine.begin_run(DeepCacheParams(enabled=True, interval=3), len(schedule), schedule)
    with torch.no_grad():
        outputs = [[unet(tile, torch.full((tile.shape[0],), t), context=ctx) for tile in tiles] for t in schedule]
    return outputs, engine.end_run()


def test_tiles_and_windows_each_reuse_only_their_own_features(tiny_unet):
    """Each distinct U-Net call of a step reuses only its own deep features: every tile's outputs with four tiles
    per step are bit-identical to that tile sampled alone (a shared slot would hand tile 0's features to the
    others), and a single tile covering the image is plain DeepCache."""
    g = torch.Generator().manual_seed(0)
    tiles = [torch.randn(2, 4, 8, 8, generator=g) for _ in range(4)]
    ctx = torch.randn(2, 4, 32, generator=g)
    schedule = [900.0, 800.0, 700.0, 600.0, 500.0, 400.0]
    engine = DeepCacheEngine()
    engine.install(tiny_unet)
    together, stats = tile_calls(tiny_unet, engine, tiles, ctx, schedule)
    alone = [tile_calls(tiny_unet, engine, [tile], ctx, schedule)[0] for tile in tiles]
    engine.uninstall()
    assert stats.cached_passes == 4 * 4 and stats.cached_steps == 4
    for j in range(len(tiles)):
        assert all(torch.equal(together[i][j], alone[j][i][0]) for i in range(len(schedule)))
    assert not torch.equal(together[1][1], alone[0][1][0])  # the tiles' features do differ


UNIFORM_3 = DeepCacheParams(enabled=True, interval=3)


def window_calls(unet, engine, order_of_step, schedule, params=UNIFORM_3, threshold=None):
    """AnimateDiff's context windows: 4 frames, cond and uncond rows in one batch of 8, evaluated two frames at
    a time; ``order_of_step(s)`` gives the windows of step ``s`` in the order they are called. Every evaluation
    reports its whole batch first, as A1111's ``on_cfg_denoiser`` does. Returns each window's output per step."""
    g = torch.Generator().manual_seed(0)
    frames, drift = torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 4, 8, 8, generator=g)
    cond, uncond = torch.randn(1, 4, 32, generator=g), torch.randn(1, 4, 32, generator=g)
    ctx = torch.cat([cond.expand(4, -1, -1), uncond.expand(4, -1, -1)])
    engine.begin_run(params, len(schedule), schedule)
    if threshold is not None:  # the adaptive schedule's, beyond its parameter's range
        engine._run.refresh.threshold = threshold
    outputs, slots = [], []
    with torch.no_grad():
        for s, t in enumerate(schedule):
            x_in = torch.cat([frames + 0.05 * s * drift] * 2)  # the frames move a little every step
            engine.note_batch(x_in)
            step = {}
            for window in order_of_step(s):
                rows = window + [f + 4 for f in window]
                step[tuple(window)] = unet(x_in[rows] * 0.5, torch.full((len(rows),), t), context=ctx[rows])
            outputs.append(step)
            slots.append(len(engine._run.slots))
    window_calls.slots = slots  # slots held after each step
    return outputs, engine.end_run()


def test_windows_called_in_another_order_each_step_reuse_their_own_frames_features(tiny_unet):
    """AnimateDiff visits its context windows in another order at every step: a window's call reuses the deep
    features its own frames had on the full step, whatever its place in the step (keyed by its place, the second
    window would get the first one's frames)."""
    windows = [[0, 1], [2, 3]]
    schedule = [900.0, 800.0, 700.0, 600.0, 500.0, 400.0]
    engine = DeepCacheEngine()
    engine.install(tiny_unet)
    fixed, fixed_stats = window_calls(tiny_unet, engine, lambda s: windows, schedule)
    rotating, stats = window_calls(tiny_unet, engine, lambda s: windows[::-1] if s % 2 else windows, schedule)
    engine.uninstall()
    assert stats.cached_passes == fixed_stats.cached_passes == 2 * 4
    for step_fixed, step_rotating in zip(fixed, rotating):
        for window, out in step_fixed.items():
            assert torch.equal(out, step_rotating[window])


def test_windows_that_shift_gather_each_frames_features_from_the_window_that_carried_it(tiny_unet):
    """Windows that shift by a frame (AnimateDiff's stride) group the frames differently at every step: a
    retrieval call gathers each of its rows' features from the call that carried that row on the full step (cond
    and uncond copies apart), so every planned step is cached and each frame gets its own features: the ldm U-Net
    treats rows independently, so the output is that of one call carrying all frames."""
    schedule = [900.0, 800.0, 700.0, 600.0, 500.0, 400.0]
    engine = DeepCacheEngine()
    engine.install(tiny_unet)
    shifting, stats = window_calls(tiny_unet, engine, lambda s: [[s % 4, (s + 1) % 4], [(s + 2) % 4, (s + 3) % 4]],
                                   schedule)
    whole, _ = window_calls(tiny_unet, engine, lambda s: [[0, 1, 2, 3]], schedule)
    engine.uninstall()
    assert stats.steps_with_cached_pass == {1, 2, 4, 5}
    assert stats.cached_passes == 8 and stats.full_passes == 4
    for step_shifting, step_whole in zip(shifting, whole):
        for window, out in step_shifting.items():
            rows = list(window) + [f + 4 for f in window]
            torch.testing.assert_close(out, step_whole[(0, 1, 2, 3)][rows], rtol=1e-4, atol=1e-5)


def test_a_full_step_drops_the_slots_of_the_groupings_before_it(tiny_unet):
    """Every retrieval step with a new grouping of rows fills new slots; the next full step refills the slots of its
    own calls and drops the others, so a long animation's slots do not pile up."""
    groupings = [[[0, 1], [2, 3]], [[1, 2], [3, 0]], [[0, 2], [1, 3]]]
    schedule = [900.0, 800.0, 700.0, 600.0, 500.0, 400.0]
    engine = DeepCacheEngine()
    engine.install(tiny_unet)
    _, stats = window_calls(tiny_unet, engine, lambda s: groupings[s % 3], schedule)
    engine.uninstall()
    assert stats.cached_passes == 8
    assert window_calls.slots == [2, 4, 6, 2, 4, 6]


def test_a_window_with_a_frame_no_call_of_the_full_step_carried_runs_in_full(tiny_unet):
    """A row that no call of the full step carried has no features to reuse: its call runs in full (steps 1 and
    4), never on another frame's features; its own features then serve its next step."""
    schedule = [900.0, 800.0, 700.0, 600.0, 500.0, 400.0]
    engine = DeepCacheEngine()
    engine.install(tiny_unet)
    _, stats = window_calls(tiny_unet, engine, lambda s: [[0, 1]] if s % 3 == 0 else [[1, 2]], schedule)
    engine.uninstall()
    assert stats.steps_with_cached_pass == {2, 5}
    assert stats.cached_passes == 2 and stats.full_passes == 4


def test_modules_inside_a_skipped_block_are_skipped_with_it(tiny_unet):
    """AnimateDiff puts its motion modules inside the U-Net's blocks: a motion module in a skipped block runs
    only on full passes, one in a computed block on every pass."""
    calls = {"deep": 0, "shallow": 0}

    class Motion(torch.nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, x, *args, **kwargs):
            calls[self.name] += 1
            return x

    deep, shallow = tiny_unet.input_blocks[4], tiny_unet.output_blocks[-1]
    deep.append(Motion("deep"))
    shallow.append(Motion("shallow"))
    try:
        engine = DeepCacheEngine()
        engine.install(tiny_unet)
        _, stats = tile_calls(tiny_unet, engine, [torch.randn(2, 4, 8, 8)], torch.randn(2, 4, 32),
                              [900.0, 800.0, 700.0, 600.0, 500.0, 400.0])
        engine.uninstall()
    finally:
        del deep[-1], shallow[-1]
    assert (stats.full_passes, stats.cached_passes) == (2, 4)
    assert calls == {"deep": 2, "shallow": 6}


def test_a_patch_that_changes_a_blocks_output_in_place_acts_on_every_pass_and_never_on_the_cache(tiny_unet):
    """FreeU (Forge's built-in, A1111's extension) scales the backbone half of the tensor an output block hands on,
    in place, between blocks. At branch 0 that tensor is the cached one on retrieval passes: the patch must act on
    every pass and never reach the cache itself (else it would compound from one retrieval to the next)."""
    provider = tiny_unet.output_blocks[-2]
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 32, generator=g)
    schedule = [900.0, 800.0, 700.0, 600.0, 500.0, 400.0]
    engine = DeepCacheEngine()
    engine.install(tiny_unet)
    plain, _ = tile_calls(tiny_unet, engine, [x], ctx, schedule)

    def freeu(original):
        def patched(*args, **kwargs):
            out = original(*args, **kwargs)
            out[:, : out.shape[1] // 2] *= 1.5
            return out
        return patched

    set_forward(provider, freeu)  # after ours: it patches what our wrapper returns, as Forge's patches do
    try:
        engine.begin_run(DeepCacheParams(enabled=True, interval=3), len(schedule), schedule)
        with torch.no_grad():
            outputs = [tiny_unet(x, torch.full((2,), schedule[0]), context=ctx)]
            slot = next(iter(engine._run.slots.values()))
            cached = slot.cached.clone()
            outputs += [tiny_unet(x, torch.full((2,), t), context=ctx) for t in schedule[1:3]]
        stats = engine.end_run()
    finally:
        del provider.forward
        engine.uninstall()
    assert stats.cached_passes == 2
    assert torch.equal(slot.cached, cached)  # two retrievals later, the cache is what the full pass produced
    assert all(not torch.equal(outputs[i], plain[i][0]) for i in range(3))  # the patch acts on every pass


def test_two_block_sequences_in_one_unet_call_are_two_passes(tiny_unet):
    """sd-webui-controlnet's reference-only runs the U-Net's blocks on its reference image, then the real pass,
    inside one U-Net call: each sequence is a pass with its own slot, both cached on retrieval steps, and the real
    pass's outputs are those of the real pass alone (the reference's features never reach it)."""
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    g = torch.Generator().manual_seed(0)
    x, reference, ctx = (torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g),
                         torch.randn(2, 4, 32, generator=g))
    schedule = [900.0, 800.0, 700.0, 600.0, 500.0, 400.0]

    def with_reference(x, timesteps, context=None, **kwargs):
        UNetModel.forward(tiny_unet, reference, timesteps, context=context)
        return UNetModel.forward(tiny_unet, x, timesteps, context=context)

    engine = DeepCacheEngine()
    engine.install(tiny_unet)
    alone, _ = tile_calls(tiny_unet, engine, [x], ctx, schedule)
    tiny_unet.forward = with_reference
    try:
        both, stats = tile_calls(tiny_unet, engine, [x], ctx, schedule)
    finally:
        del tiny_unet.forward
        engine.uninstall()
    assert (stats.full_passes, stats.cached_passes) == (2 * 2, 2 * 4)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(alone, both))


@pytest.mark.parametrize("graph_break", [False, True], ids=["whole U-Net", "graph break in the block loop"])
def test_a_compiled_unet_compiles_nothing_new_in_later_generations(graph_break):
    """The webui installs a new engine at every generation (and uninstalls it after); a compiled U-Net (Forge
    Neo's Torch Compile, a user's torch.compile) then reuses the frames compiled in the first generation: the
    second and third compile no frame and recompile none of DeepCache's wrappers."""
    dynamo = pytest.importorskip("torch._dynamo")
    from torch._C._dynamo.eval_frame import _debug_get_cache_entry_list as cache_entries

    unet = build_unet("tiny")
    if graph_break:
        unet.input_blocks[3].register_forward_pre_hook(lambda module, args: dynamo.graph_break())
    pipe = Pipeline(unet)
    params = DeepCacheParams(enabled=True, interval=3)
    schedule = pipe.timestep_schedule(pipe.sigmas("euler", STEPS))
    blocks = list(unet.input_blocks) + [unet.middle_block] + list(unet.output_blocks)
    dynamo.reset()
    frames, entries, cached = [], [], []
    try:
        for _ in range(3):
            engine = DeepCacheEngine()
            engine.install(unet)
            _, stats = compiled_runs(unet, pipe, engine, params, schedule, runs=1)
            entries.append(sorted(len(cache_entries(block.forward.__code__)) for block in blocks))
            engine.uninstall()
            frames.append(dynamo.utils.counters["frames"]["total"])
            cached.append(stats.cached_passes)
    finally:
        dynamo.reset()
    assert cached == [8, 8, 8]
    assert frames[0] > 0 and frames[1] == frames[2] == frames[0], frames
    assert entries[1] == entries[2] == entries[0], entries


@pytest.mark.parametrize("threshold", [0.3, float("inf")])
def test_adaptive_windows_follow_one_decision_per_step(tiny_unet, threshold):
    """The adaptive schedule with AnimateDiff's shifting windows: the step's first window decides for all, so no
    step mixes full and cached passes; with a threshold nothing reaches it is the uniform schedule, call for call
    (the windows' probes are gathered per row like their deep features)."""
    schedule = [900.0, 800.0, 700.0, 600.0, 500.0, 400.0]
    shift = lambda s: [[s % 4, (s + 1) % 4], [(s + 2) % 4, (s + 3) % 4]]  # noqa: E731
    engine = DeepCacheEngine()
    engine.install(tiny_unet)
    adaptive, stats = window_calls(tiny_unet, engine, shift, schedule, threshold=threshold,
                                   params=DeepCacheParams(enabled=True, interval=3, schedule="adaptive"))
    uniform, uniform_stats = window_calls(tiny_unet, engine, shift, schedule)
    engine.uninstall()
    assert stats.partly_cached_steps == 0 and stats.cached_passes == 2 * stats.cached_steps
    if threshold == float("inf"):
        assert stats.steps_with_cached_pass == uniform_stats.steps_with_cached_pass == {1, 2, 4, 5}
        assert all(torch.equal(a[w], u[w]) for a, u in zip(adaptive, uniform) for w in a)

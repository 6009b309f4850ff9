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


def test_a_compiled_unet_compiles_once_per_kind_of_pass(tiny_unet):
    """A compiler traces the U-Net with DeepCache's wrappers inside: one graph for full passes and one for
    retrievals, no recompilation per block or per step, and the same result as without the compiler."""
    dynamo = pytest.importorskip("torch._dynamo")
    pipe = Pipeline(tiny_unet)
    params = DeepCacheParams(enabled=True, interval=3)
    schedule = pipe.timestep_schedule(pipe.sigmas("euler", STEPS))
    engine = DeepCacheEngine()
    engine.install(tiny_unet)
    engine.begin_run(params, STEPS, schedule)
    eager = pipe.sample("euler", STEPS)
    engine.end_run()
    dynamo.reset()
    dynamo.utils.counters.clear()
    pipe.model.model.diffusion_model = torch.compile(tiny_unet, backend="eager", dynamic=True)
    try:
        for _ in range(2):  # the second run reuses the graphs
            engine.begin_run(params, STEPS, schedule)
            compiled = pipe.sample("euler", STEPS)
            stats = engine.end_run()
    finally:
        pipe.model.model.diffusion_model = tiny_unet
        engine.uninstall()
    assert dynamo.utils.counters["stats"]["unique_graphs"] == 2
    assert not dynamo.utils.counters["graph_break"]
    assert stats.cached_passes == 8
    assert torch.allclose(compiled, eager, atol=1e-5)
    dynamo.reset()

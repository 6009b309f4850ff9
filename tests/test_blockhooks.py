"""Reaching the blocks of a U-Net that calls ``forward_timestep_embed(block, ...)`` (ComfyUI's ``ldm_patched``:
Forge Classic, reForge) instead of ``block(...)``."""
import copy
import types

import ldm_patched_double
import pytest
import torch
from ldm_patched_double import as_ldm_patched
from webui_doubles import (
    CFGDenoiserParams,
    Denoiser,
    KDiffusionSampler,
    Processing,
    UnetPatcher,
    forge_apply,
    install_modules,
    remove_modules,
)

from deepcache import DeepCacheEngine, DeepCacheParams
from deepcache.blockhooks import CallSiteDispatch, InstanceForwards, hooks_for
from deepcache.forge import LdmPatchedForgeAdapter
from deepcache.session import Session

SCHEDULE = [900.0, 800.0, 700.0, 600.0, 500.0, 400.0]
ON = DeepCacheParams(enabled=True, interval=3)


def outputs(unet, engine=None, params=ON):
    x, ctx = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1)), torch.zeros(2, 4, 32)
    if engine is not None:
        engine.begin_run(params, len(SCHEDULE), SCHEDULE)
    with torch.no_grad():
        result = [unet(x, torch.full((2,), t), context=ctx) for t in SCHEDULE]
    stats = engine.end_run() if engine is not None else None
    return result, stats


def test_a_comfy_style_unet_caches_exactly_like_the_same_unet_called_block_by_block(tiny_unet):
    comfy = as_ldm_patched(copy.deepcopy(tiny_unet))
    original = ldm_patched_double.forward_timestep_embed
    reference, _ = outputs(comfy)
    plain_engine, comfy_engine = DeepCacheEngine(), DeepCacheEngine()
    plain_engine.install(tiny_unet)
    comfy_engine.install(comfy)
    assert isinstance(hooks_for(comfy.input_blocks[0]), CallSiteDispatch)
    assert isinstance(hooks_for(tiny_unet.input_blocks[0]), InstanceForwards)
    assert ldm_patched_double.forward_timestep_embed is not original
    expected, plain_stats = outputs(tiny_unet, plain_engine)
    cached, stats = outputs(comfy, comfy_engine)
    assert (stats.full_passes, stats.cached_passes) == (plain_stats.full_passes, plain_stats.cached_passes) == (2, 4)
    assert all(torch.equal(a, b) for a, b in zip(cached, expected))
    assert not torch.equal(cached[1], reference[1])
    plain_engine.uninstall()
    comfy_engine.uninstall()
    assert ldm_patched_double.forward_timestep_embed is original
    assert all("forward" not in vars(b) for b in comfy.input_blocks)
    after, _ = outputs(comfy)
    assert all(torch.equal(a, b) for a, b in zip(after, reference))


def test_a_function_replaced_after_ours_is_kept_and_ours_only_passes_through(tiny_unet):
    comfy = as_ldm_patched(copy.deepcopy(tiny_unet))
    reference, _ = outputs(comfy)
    original = ldm_patched_double.forward_timestep_embed
    engine = DeepCacheEngine()
    engine.install(comfy)
    ours = ldm_patched_double.forward_timestep_embed
    theirs_calls = []

    def theirs(block, *args, **kwargs):
        theirs_calls.append(block)
        return ours(block, *args, **kwargs)

    ldm_patched_double.forward_timestep_embed = theirs
    try:
        engine.uninstall()
        assert ldm_patched_double.forward_timestep_embed is theirs
        after, _ = outputs(comfy)
        assert theirs_calls and all(torch.equal(a, b) for a, b in zip(after, reference))
    finally:
        ldm_patched_double.forward_timestep_embed = original


class ModelSampling:
    """ComfyUI's ``ModelSamplingDiscrete``: ``timestep(sigma)`` is the index of the nearest of 1000 sigmas."""

    def __init__(self, alphas_cumprod):
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5

    def timestep(self, sigma):
        return (sigma.log()[None] - self.sigmas.log()[:, None]).abs().argmin(dim=0).view(sigma.shape).float()


@pytest.fixture
def ldm_patched_model(pipe):
    """``p.sd_model`` of Forge Classic / reForge: the ComfyUI-style U-Net behind ``forge_objects.unet``."""
    comfy = as_ldm_patched(copy.deepcopy(pipe.unet))
    kmodel = types.SimpleNamespace(diffusion_model=comfy, model_sampling=ModelSampling(pipe.model.alphas_cumprod))
    sd_model = types.SimpleNamespace(forge_objects=types.SimpleNamespace(unet=UnetPatcher(kmodel)),
                                     sd_checkpoint_info="model")
    install_modules(sd_model)
    yield sd_model
    remove_modules()


def test_forge_classic_and_reforge_adapter(ldm_patched_model):
    """``ldm_patched``'s patcher: no ``predictor`` but ``model_sampling``; the U-Net has ``model_channels`` and no
    config; a patcher that was not reset since the last run (Forge Classic's hires pass) is not chained twice."""
    sd_model = ldm_patched_model
    session = Session(LdmPatchedForgeAdapter())
    p = Processing(sd_model)
    session.start(p, [True, 3, 0])
    sigmas = [14.0, 9.0, 6.0, 4.0, 2.5, 1.5]
    schedule = [float(sd_model.forge_objects.unet.model.model_sampling.timestep(torch.tensor(s))) for s in sigmas]
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 32)
    for _ in range(2):  # first pass, then a hires pass on the same, not reset, patcher
        session.before_sampling(p, hires=False)
        patcher = sd_model.forge_objects.unet
        wrapper = patcher.model_options["model_function_wrapper"]
        assert wrapper.deepcache_previous is None
        session.begin_run(len(sigmas), schedule)
        with torch.no_grad():
            for s in sigmas:
                forge_apply(patcher, x, torch.full((2,), s), ctx, [1, 0], timestep_model="model_sampling")
        stats = session.engine.stats
        assert (stats.full_passes, stats.cached_passes, stats.steps) == (2, 4, 6)
    session.after_sampling(p)
    assert not session.engine.installed
    assert ldm_patched_double.forward_timestep_embed.__name__ == "forward_timestep_embed"


def test_ldm_patched_steps_follow_the_models_own_rounding(pipe, ldm_patched_model):
    """reForge: the sampler's ``model_wrap.sigma_to_t`` interpolates (713.57) where ``model_sampling.timestep``,
    which reports each U-Net call, rounds to the nearest index (714). The schedule must use the same mapping as
    the calls, or a call lands in the step before its own: Euler, 8 steps, interval 3 caches 5 steps."""
    sd_model = ldm_patched_model
    steps, sigmas = 8, pipe.sigmas("euler", 8)
    session = Session(LdmPatchedForgeAdapter())
    p = Processing(sd_model, sampler=KDiffusionSampler(pipe.denoiser, sigmas))
    session.start(p, [True, 3, 0])
    session.before_sampling(p, hires=False)
    p.sampler.get_sigmas(p, steps)
    denoiser = Denoiser(p.sampler)
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 32)
    with torch.no_grad():
        for sigma in sigmas[:-1]:
            session.adapter.on_cfg_denoiser(CFGDenoiserParams(x, sigma[None], steps, denoiser))
            denoiser.step += 1
            forge_apply(sd_model.forge_objects.unet, x, sigma.expand(2), ctx, [1, 0],
                        timestep_model="model_sampling")
    session.after_sampling(p)
    assert p.extra_generation_params["DeepCache"] == "5/8 steps cached"

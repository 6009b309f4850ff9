"""The Forge adapter with a faithful double of Forge's ``UnetPatcher`` around a real U-Net."""
import types

import pytest
import torch
from webui_doubles import Processing, UnetPatcher, defined_in, forge_apply, install_modules, remove_modules

from deepcache.forge import ForgeAdapter
from deepcache.session import Session


class Predictor:
    """Forge's discrete predictor: timestep(sigma) is the index of the nearest of 1000 sigmas."""

    def __init__(self, alphas_cumprod):
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5

    def timestep(self, sigma):
        return (sigma.log()[None] - self.sigmas.log()[:, None]).abs().argmin(dim=0).view(sigma.shape).float()


@pytest.fixture
def forge_model(pipe):
    """``p.sd_model`` of Forge (also ``shared.sd_model``): the U-Net behind ``forge_objects.unet``."""

    def make(previous_wrapper=None):
        kmodel = types.SimpleNamespace(diffusion_model=pipe.unet, predictor=Predictor(pipe.model.alphas_cumprod))
        options = {"model_function_wrapper": previous_wrapper} if previous_wrapper else {}
        model = types.SimpleNamespace(forge_objects=types.SimpleNamespace(unet=UnetPatcher(kmodel, options)),
                                      sd_checkpoint_info="model")
        install_modules(model)
        return model

    yield make
    remove_modules()


def test_forge_clones_the_patcher_chains_the_wrapper_and_keys_by_cond_or_uncond(pipe, forge_model, monkeypatch):
    monkeypatch.setattr(pipe.unet, "config", {"model_channels": 32}, raising=False)  # Forge's U-Net config
    seen = []

    def multidiffusion(apply_model, args):
        seen.append(args["cond_or_uncond"])
        return apply_model(args["input"], args["timestep"], **args["c"])

    sd_model = forge_model(multidiffusion)
    original = sd_model.forge_objects.unet
    session = Session(ForgeAdapter())
    p = Processing(sd_model)
    session.start(p, [True, 3, 0])
    session.before_sampling(p, hires=False)
    patcher = sd_model.forge_objects.unet
    assert patcher is not original and "model_function_wrapper" in patcher.model_options
    assert original.model_options["model_function_wrapper"] is multidiffusion
    sigmas = [14.0, 9.0, 6.0, 4.0, 2.5, 1.5]
    schedule = [float(original.model.predictor.timestep(torch.tensor(s))) for s in sigmas]
    session.begin_run(len(sigmas), schedule)
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 32)
    with torch.no_grad():
        for s in sigmas:  # Forge's batch order: uncond then cond, and a cond-only call (cond_scale 1)
            forge_apply(patcher, x, torch.full((2,), s), ctx, [1, 0])
            forge_apply(patcher, x[:1], torch.full((1,), s), ctx[:1], [0])
    stats = session.engine.stats
    assert stats.cached_passes == 2 * 4 and stats.steps == 6
    assert seen == [[1, 0], [0]] * 6
    session.after_sampling(p)
    assert not session.engine.installed and "forward" not in vars(pipe.unet.input_blocks[0])


def test_a_transformer_model_is_declined(pipe, forge_model, monkeypatch):
    monkeypatch.setattr(pipe.unet, "config", {"model_channels": None}, raising=False)  # what Flux reports
    p = Processing(forge_model())
    session = Session(ForgeAdapter())
    session.start(p, [True])
    session.before_sampling(p, hires=False)
    assert "is not a U-Net" in p.extra_generation_params["DeepCache error"]
    assert not session.engine.installed


SPECTRUM = "/webui/extensions-builtin/sd_forge_spectrum/scripts/spectrum.py"
FORECAST = '''
def patch(previous=None, actual=(0, 1, 3)):
    """Spectrum: the U-Net runs on the 'actual' steps only, the others are forecast (here: the last output)."""
    state = {"step": 0, "last": None}

    def spectrum_unet_wrapper(apply_model, args):
        if state["step"] in actual or state["last"] is None:
            call = previous or (lambda f, a: f(a["input"], a["timestep"], **a["c"]))
            state["last"] = call(apply_model, args)
        state["step"] += 1
        return state["last"]
    return spectrum_unet_wrapper
'''
SIGMAS = [14.0, 9.0, 6.0, 4.0, 2.5, 1.5]


def sample_with(session, sd_model, after_ours=None, args=(True, 3, 0), late=None):
    """One run: our ``process_before_every_sampling``, then another script's (``after_ours`` patches the patcher),
    then the sampler's calls through whatever wrapper is in place."""
    p = Processing(sd_model)
    session.start(p, list(args))
    session.before_sampling(p, hires=False)
    if after_ours is not None:
        sd_model.forge_objects.unet = after_ours(sd_model.forge_objects.unet)
    patcher = sd_model.forge_objects.unet
    session.begin_run(len(SIGMAS), [float(patcher.model.predictor.timestep(torch.tensor(s))) for s in SIGMAS])
    if late is not None:  # patched after the first denoiser call, where no check can see it
        patcher = late(patcher)
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 32, generator=g)
    with torch.no_grad():
        out = [forge_apply(patcher, x, torch.full((2,), s), ctx, [1, 0]) for s in SIGMAS]
    stats = session.engine.stats
    session.after_sampling(p)
    return p, out, stats


def spectrum_after_ours(patcher):
    """Spectrum's ``process_before_every_sampling``: clone, set its wrapper, which calls the bare U-Net."""
    clone = patcher.clone()
    clone.set_model_unet_function_wrapper(defined_in(SPECTRUM, FORECAST, "patch")())
    return clone


def test_a_wrapper_set_after_ours_that_does_not_call_it_makes_ours_stand_down_before_sampling(
        pipe, forge_model, monkeypatch):
    """DeepCache decides at the first denoiser call, before any U-Net pass, and says so; the image is Spectrum's
    alone (pixel-identical to Spectrum without DeepCache)."""
    monkeypatch.setattr(pipe.unet, "config", {"model_channels": 32}, raising=False)
    p, out, stats = sample_with(Session(ForgeAdapter()), forge_model(), spectrum_after_ours)
    assert ("('sd_forge_spectrum') replaced DeepCache's without calling it"
            in p.extra_generation_params["DeepCache error"])
    assert "DeepCache" not in p.extra_generation_params and stats is None
    spectrum_model = forge_model()
    spectrum_model.forge_objects.unet = spectrum_after_ours(spectrum_model.forge_objects.unet)
    _, spectrum_alone, _ = sample_with(Session(ForgeAdapter()), spectrum_model, args=[False])
    assert all(torch.equal(a, b) for a, b in zip(out, spectrum_alone))


@pytest.mark.parametrize("where", ["before ours", "after ours, calling ours"])
def test_another_cache_in_the_wrapper_chain_makes_ours_stand_down_before_sampling(
        pipe, forge_model, monkeypatch, where):
    """A cache that chains the wrappers (set before ours, so ours calls it; or after ours, calling ours on the
    steps it computes) still decides which U-Net calls run: two caches would act on one run."""
    monkeypatch.setattr(pipe.unet, "config", {"model_channels": 32}, raising=False)
    patch = defined_in(SPECTRUM, FORECAST, "patch")
    after_ours = None
    if where == "before ours":
        sd_model = forge_model(patch())
    else:
        sd_model = forge_model()

        def after_ours(patcher):
            clone = patcher.clone()
            clone.set_model_unet_function_wrapper(patch(patcher.model_options["model_function_wrapper"]))
            return clone
    p, _, stats = sample_with(Session(ForgeAdapter()), sd_model, after_ours)
    assert "another U-Net cache ('sd_forge_spectrum') is on" in p.extra_generation_params["DeepCache error"]
    assert stats is None and "DeepCache" not in p.extra_generation_params


def test_a_wrapper_that_calls_ours_on_every_call_keeps_deepcache(pipe, forge_model, monkeypatch):
    """A wrapper set after ours that calls it on every U-Net call (tiles, regions) is not a cache: DeepCache acts."""
    monkeypatch.setattr(pipe.unet, "config", {"model_channels": 32}, raising=False)

    def tiles_after_ours(patcher):
        ours = patcher.model_options["model_function_wrapper"]
        clone = patcher.clone()
        clone.set_model_unet_function_wrapper(lambda apply_model, args: ours(apply_model, args))
        return clone

    p, _, stats = sample_with(Session(ForgeAdapter()), forge_model(), tiles_after_ours)
    assert p.extra_generation_params["DeepCache"] == "4/6 steps cached" and stats.cached_passes == 4


def test_a_wrapper_swapped_in_after_the_first_denoiser_call_is_still_reported(pipe, forge_model, monkeypatch):
    """No check before sampling can see a patch made later; the run then sees no U-Net call, and says why."""
    monkeypatch.setattr(pipe.unet, "config", {"model_channels": 32}, raising=False)
    p, out, _ = sample_with(Session(ForgeAdapter()), forge_model(), late=spectrum_after_ours)
    assert "replaced the U-Net function wrapper" in p.extra_generation_params["DeepCache error"]
    assert "DeepCache" not in p.extra_generation_params


def test_a_stand_down_is_said_once_per_generation(pipe, forge_model, monkeypatch, capsys):
    """A user who turns Spectrum on in a later generation sees the console say why DeepCache did nothing, for that
    generation too; the batches of one generation say it once."""
    monkeypatch.setattr(pipe.unet, "config", {"model_channels": 32}, raising=False)
    session = Session(ForgeAdapter())
    for _ in range(3):
        sample_with(session, forge_model(), spectrum_after_ours)
    p = session.p  # a second batch of the last generation: another sampling run of the same p
    session.before_sampling(p, hires=False)
    p.sd_model.forge_objects.unet = spectrum_after_ours(p.sd_model.forge_objects.unet)
    session.begin_run(len(SIGMAS), None)
    session.after_sampling(p)
    lines = [line for line in capsys.readouterr().out.splitlines() if "replaced DeepCache's without calling it" in line]
    assert len(lines) == 3, lines

"""The Forge adapter with a faithful double of Forge's ``UnetPatcher`` around a real U-Net."""
import types

import pytest
import torch
from webui_doubles import Processing, UnetPatcher, forge_apply, install_modules, remove_modules

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


def test_an_extension_that_replaces_the_unet_wrapper_wins_and_the_infotext_says_so(pipe, forge_model, monkeypatch):
    """Forge Neo's Spectrum clones the patcher after us and sets its own U-Net function wrapper without calling
    the one there: our blocks then see no reported call, run in full, and the infotext says why."""
    monkeypatch.setattr(pipe.unet, "config", {"model_channels": 32}, raising=False)
    sd_model = forge_model()
    session = Session(ForgeAdapter())
    p = Processing(sd_model)
    session.start(p, [True, 3, 0])
    session.before_sampling(p, hires=False)
    spectrum = sd_model.forge_objects.unet.clone()
    spectrum.set_model_unet_function_wrapper(lambda apply_model, args: apply_model(args["input"], args["timestep"],
                                                                                   **args["c"]))
    sigmas = [14.0, 9.0, 6.0, 4.0]
    session.begin_run(len(sigmas), [float(spectrum.model.predictor.timestep(torch.tensor(s))) for s in sigmas])
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 32)
    with torch.no_grad():
        out = [forge_apply(spectrum, x, torch.full((2,), s), ctx, [1, 0]) for s in sigmas]
    session.after_sampling(p)
    assert "replaced the U-Net function wrapper" in p.extra_generation_params["DeepCache error"]
    assert "DeepCache" not in p.extra_generation_params
    with torch.no_grad():
        assert torch.equal(out[-1], forge_apply(spectrum, x, torch.full((2,), sigmas[-1]), ctx, [1, 0]))

"""The glue that needs no webui: args, X/Y/Z axes, the session lifecycle and the A1111 adapter, with small
doubles of the webui objects (tests/webui_doubles.py) around a real U-Net and real k-diffusion sigmas."""
import contextlib
import copy
import re
import types

import pytest
import torch
from webui_doubles import (
    CFGDenoiserParams,
    Denoiser,
    KDiffusionSampler,
    Processing,
    defined_in,
    install_modules,
    remove_modules,
)

import deepcache
from deepcache import DeepCacheParams, UnsupportedModel
from deepcache.a1111 import A1111Adapter
from deepcache.session import ERROR_KEY, STATS_KEY, Session, resolve_params
from deepcache.testbed import SAMPLERS, build_unet
from deepcache.xyz import AXIS_PARAMS, add_axes, apply_param, confirm_param


def test_xyz_overrides_apply_to_the_cell_copy_only():
    p = types.SimpleNamespace()
    cell = copy.copy(p)
    apply_param("interval")(cell, 5, [5])
    apply_param("branch")(cell, 2, [2])
    assert not hasattr(p, "deepcache_overrides")
    params = resolve_params([False, 3, 0], cell.deepcache_overrides)
    assert (params.enabled, params.interval, params.branch) == (True, 5, 2)  # an axis turns it on
    assert not resolve_params([True], {"enabled": False, "interval": 4}).enabled


def test_xyz_confirm_rejects_bad_values():
    with pytest.raises(ValueError, match="'branch' must be int in"):
        confirm_param("branch")(None, [0, 12])
    confirm_param("start")(None, [0.0, 0.5])
    with pytest.raises(ValueError, match="'interval' must be int in"):  # not OverflowError (HTTP 500)
        confirm_param("interval")(None, [3, 10**400])


class XyzGrid:
    """The parts of scripts/xyz_grid.py that extensions use."""

    class AxisOption:
        def __init__(self, label, type, apply, confirm=None, choices=None):
            self.label, self.type, self.apply, self.confirm, self.choices = label, type, apply, confirm, choices

    @staticmethod
    def boolean_choice(reverse=False):
        return lambda: ["False", "True"] if reverse else ["True", "False"]

    def __init__(self):
        self.axis_options = [self.AxisOption("Nothing", str, None)]


def test_axes_are_added_once():
    grid = XyzGrid()
    assert add_axes(grid) and not add_axes(grid)
    labels = [o.label for o in grid.axis_options[1:]]
    assert labels == ["[DeepCache] Enabled", "[DeepCache] Interval", "[DeepCache] Branch", "[DeepCache] Start",
                      "[DeepCache] End", "[DeepCache] Schedule", "[DeepCache] Threshold",
                      "[DeepCache] Forecast"]
    assert len(labels) == len(AXIS_PARAMS)
    assert grid.axis_options[6].choices() == ["uniform", "non-uniform", "adaptive"]
    cell = types.SimpleNamespace()
    grid.axis_options[1].apply(cell, "False", ["True", "False"])
    assert cell.deepcache_overrides == {"enabled": False}


def test_axes_are_added_to_a_grid_without_boolean_choice():
    """Forge Classic's X/Y/Z module keeps ``boolean_choice`` elsewhere (``lib_xyz.utils``)."""
    grid = types.SimpleNamespace(AxisOption=XyzGrid.AxisOption, axis_options=[])
    assert add_axes(grid)
    assert grid.axis_options[0].choices() == ["False", "True"]


def test_axes_are_added_beside_a_peers_axes_with_the_same_prefix():
    grid = XyzGrid()
    grid.axis_options.append(grid.AxisOption("[DeepCache] Cache Resnet level", int, None))  # aria1th's
    assert add_axes(grid)
    assert "[DeepCache] Interval" in [o.label for o in grid.axis_options]


@pytest.fixture
def webui(tiny_unet, pipe):
    model = types.SimpleNamespace(model=types.SimpleNamespace(diffusion_model=tiny_unet), sd_checkpoint_info="a")
    shared = install_modules(model)
    yield types.SimpleNamespace(shared=shared, model=model, pipe=pipe)
    remove_modules()


def generation(webui, args, steps=9, session=None, before_first_step=None, sampler="euler", second_order=None):
    """What A1111 does for one txt2img batch of a new job, calling the script's hooks in its order;
    ``before_first_step`` runs after every script's ``process_before_every_sampling`` (as a later script's would)."""
    session = session or Session(A1111Adapter())
    p = Processing(webui.model, sampler=KDiffusionSampler(webui.pipe.denoiser, webui.pipe.sigmas(sampler, steps),
                                                          SAMPLERS[sampler].function,
                                                          second_order=sampler in SECOND_ORDER
                                                          if second_order is None else second_order))
    p.extra_generation_params[ERROR_KEY] = "left over from a previous X/Y/Z cell"
    webui.shared.state.begin()
    session.start(p, args)
    latent = sample(webui, session, p, steps, before_first_step)
    return p, session, latent


class Interrupted(Exception):
    """``sd_samplers_common.InterruptedException``: the webui's step callback raises it once the user interrupts;
    the sampler catches it and goes on with the last latent."""


def sample(webui, session, p, steps, before_first_step=None, seed=0, interrupt_after=None):
    """One sampling run of ``p`` (a batch) with the script's hooks around it; returns the final latent.
    ``interrupt_after``: the user presses Interrupt during that many-th step."""
    session.before_sampling(p, hires=False)
    if before_first_step is not None:
        before_first_step()
    sigmas = p.sampler.get_sigmas(p, steps)
    denoiser = Denoiser(p.sampler)

    def model(x, sigma, **kwargs):
        session.adapter.on_cfg_denoiser(CFGDenoiserParams(torch.cat([x, x]), sigma, steps, denoiser))
        denoiser.step += 1
        return webui.pipe.denoiser(x, sigma, cond=kwargs["cond"])

    cond, _ = webui.pipe.conditioning(1)
    torch.manual_seed(seed)  # ancestral samplers draw their noise from it
    function = getattr(webui.pipe.k.sampling, p.sampler.funcname)
    latent = None

    def callback(d):
        nonlocal latent
        latent = d["x"]
        if interrupt_after is not None and d["i"] + 1 >= interrupt_after:
            webui.shared.state.interrupted = True
        if getattr(webui.shared.state, "interrupted", False):
            raise Interrupted

    with torch.no_grad(), contextlib.suppress(Interrupted):
        latent = function(model, webui.pipe.noise(1, 64, seed=seed) * sigmas[0], sigmas, extra_args={"cond": cond},
                          disable=True, callback=callback)
    session.after_sampling(p)
    return latent


def test_a1111_lifecycle_caches_with_the_captured_schedule(webui):
    p, session, latent = generation(webui, [True, 3, 0])
    assert p.extra_generation_params[STATS_KEY] == "6/9 steps cached"
    assert p.extra_generation_params["DeepCache version"] == deepcache.__version__
    assert ERROR_KEY not in p.extra_generation_params
    assert not session.engine.installed and "get_sigmas" not in vars(p.sampler)
    off_p, _, off = generation(webui, [False])
    assert STATS_KEY not in off_p.extra_generation_params
    assert not torch.equal(latent, off)


def test_bad_args_generate_without_deepcache_and_say_why(webui):
    p, session, latent = generation(webui, [True, "often"])
    assert "'interval' must be int" in p.extra_generation_params[ERROR_KEY]
    assert STATS_KEY not in p.extra_generation_params
    assert torch.equal(latent, generation(webui, [False])[2])


def test_an_int_too_big_for_a_float_is_refused_like_any_bad_value(webui):
    p, _, latent = generation(webui, [True, 10**400])
    assert "'interval' must be int" in p.extra_generation_params[ERROR_KEY]
    assert torch.equal(latent, generation(webui, [False])[2])


def test_a_model_without_unet_blocks_warns_once_and_generates_normally(webui, capsys):
    normal = generation(webui, [False])[2]
    webui.model.is_sd3 = True
    p, session, latent = generation(webui, [True])
    generation(webui, [True], session=session)
    assert "SD3 is an MMDiT" in p.extra_generation_params[ERROR_KEY]
    assert STATS_KEY not in p.extra_generation_params
    assert torch.equal(latent, normal)
    assert capsys.readouterr().out.count("SD3 is an MMDiT") == 1
    with pytest.raises(UnsupportedModel):
        A1111Adapter().unet(p)


def test_branch_deeper_than_the_model_is_refused(webui):
    p, _, _ = generation(webui, [True, 3, 11])
    assert STATS_KEY in p.extra_generation_params  # tiny has 12 input blocks: 11 is fine
    webui.model.model.diffusion_model = build_unet("tiny-xl")
    p, _, _ = generation(webui, [True, 3, 11])
    assert "must be int in [0; 8] for this model" in p.extra_generation_params[ERROR_KEY]


def test_weights_changing_under_the_model_drop_the_cache(webui):
    adapter = A1111Adapter()
    session = Session(adapter)
    p = Processing(webui.model)
    session.start(p, [True])
    session.before_sampling(p, hires=False)
    session.begin_run(6, [900, 800, 700, 600, 500, 400])
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 32)
    unet = webui.model.model.diffusion_model
    with torch.no_grad():
        unet(x, torch.full((2,), 900.0), context=ctx)
        webui.shared.sd_model.sd_checkpoint_info = "refiner"
        adapter.on_cfg_denoiser(CFGDenoiserParams(x, torch.tensor([1.0]), 6, Denoiser(None, step=1)))
        unet(x, torch.full((2,), 800.0), context=ctx)
    assert session.engine.stats.cached_passes == 0
    session.cleanup()


def test_hires_pass_uses_its_own_parameters(webui):
    session = Session(A1111Adapter())
    p = Processing(webui.model)
    session.start(p, DeepCacheParams(enabled=True, hr_mode="own", hr_interval=2).as_args())
    session.before_sampling(p, hires=True)
    assert session.pending.interval == 2
    session.cleanup()
    session.start(p, DeepCacheParams(enabled=True, hr_mode="off").as_args())
    session.before_sampling(p, hires=True)
    assert session.pending is None and not session.engine.installed


def peer_forward(unet, extension_folder):
    """A forward as the peer DeepCache extensions set on the U-Net (an instance attribute defined in their
    extension's file); it passes through here, so the image is the plain one."""
    source = "def hijacked_unet_forward(*args, **kwargs):\n    return original(*args, **kwargs)\n"
    return defined_in(f"/webui/extensions/{extension_folder}/deepcache.py", source, "hijacked_unet_forward",
                      original=unet.forward)


@pytest.mark.parametrize("when", ["before our hook", "after our hook"])
def test_a_peer_deepcache_on_the_unet_makes_ours_stand_down(webui, capsys, when):
    unet = webui.model.model.diffusion_model
    normal = generation(webui, [False])[2]
    forward = peer_forward(unet, "sd-webui-deepcache-standalone")
    install_peer = lambda: setattr(unet, "forward", forward)  # noqa: E731
    try:
        if when == "before our hook":
            install_peer()
            p, session, latent = generation(webui, [True])
        else:
            p, session, latent = generation(webui, [True], before_first_step=install_peer)
        generation(webui, [True], session=session)
    finally:
        unet.__dict__.pop("forward", None)
    assert "('sd-webui-deepcache-standalone') hooks this U-Net" in p.extra_generation_params[ERROR_KEY]
    assert STATS_KEY not in p.extra_generation_params
    assert torch.equal(latent, normal)
    assert capsys.readouterr().out.count("another DeepCache extension") == 1
    assert not session.engine.installed and "_deepcache_engine" not in vars(unet)
    assert STATS_KEY in generation(webui, [True])[0].extra_generation_params  # peer gone: ours works again


SECOND_ORDER = ("heun", "dpm2", "dpmpp_2s_a", "dpmpp_sde")  # what A1111's sampler list marks "second_order"


@pytest.mark.parametrize("sampler", ["heun", "dpm2", "dpmpp_2s_a"])
def test_both_evaluations_of_a_sampler_step_follow_its_plan(webui, sampler):
    """Heun's second evaluation of step i is made at step i+1's noise level, DPM++ 2S a's below it: they are
    still step i's, so these samplers cache as many steps as Euler, and Heun's result is closer to the uncached
    one than when they counted with the next step (measured on the testbed: see the README)."""
    p, session, latent = generation(webui, [True, 3, 0], steps=12, sampler=sampler)
    euler_p, _, _ = generation(webui, [True, 3, 0], steps=12)
    assert p.extra_generation_params[STATS_KEY] == euler_p.extra_generation_params[STATS_KEY] == "8/12 steps cached"
    uncached = generation(webui, [False], steps=12, sampler=sampler)[2]
    assert (latent - uncached).abs().mean() < 0.1 * uncached.abs().mean()


def processing(webui, steps, sampler="euler", extra_generation_params=None):
    return Processing(webui.model, sampler=KDiffusionSampler(webui.pipe.denoiser, webui.pipe.sigmas(sampler, steps),
                                                             SAMPLERS[sampler].function),
                      extra_generation_params={} if extra_generation_params is None else extra_generation_params)


def outer_generation(webui, session, detailer, inner_args=None, n_iter=2, steps=9):
    """A1111's ``process_images_inner`` for ``n_iter`` batches; with ``detailer``, what ADetailer's
    ``postprocess_image`` does after each batch: ``postprocess`` on ``copy(p)``, an inpainting generation per face
    (an img2img ``p`` sharing the outer ``extra_generation_params``; DeepCache runs in it with ``inner_args``, i.e.
    when it is in ADetailer's script list), then ``process`` on ``copy(p)``. Returns each image's infotext entries
    (made after ``postprocess_image``), the outer latents, the inner latents and the inner infotexts."""
    webui.shared.state.begin()
    p = processing(webui, steps)
    args = [True, 3, 0]
    session.start(p, args)
    infotexts, latents, inner_latents, inner_infotexts = [], [], [], []
    for iteration in range(n_iter):
        latents.append(sample(webui, session, p, steps, seed=iteration))
        if detailer:
            session.end(copy.copy(p))
            if inner_args is not None:
                i2i = processing(webui, 6, extra_generation_params=p.extra_generation_params)
                session.start(i2i, inner_args)
                inner_latents.append(sample(webui, session, i2i, 6, seed=10 + iteration))
                inner_infotexts.append(dict(i2i.extra_generation_params))
                session.end(i2i)
            session.start(copy.copy(p), args)
        infotexts.append(dict(p.extra_generation_params))
    session.end(p)
    return infotexts, latents, inner_latents, inner_infotexts


@pytest.mark.parametrize("inner_args", [None, [True, 2, 1]], ids=["detailer without DeepCache", "with DeepCache"])
def test_a_generation_nested_in_another_leaves_the_outer_one_as_it_was(webui, inner_args):
    session = Session(A1111Adapter())
    plain_infotexts, plain_latents, _, _ = outer_generation(webui, session, detailer=False)
    infotexts, latents, inner_latents, inner_infotexts = outer_generation(webui, session, True, inner_args)
    assert [i[STATS_KEY] for i in plain_infotexts] == ["6/9 steps cached"] * 2
    assert infotexts == plain_infotexts
    assert all(torch.equal(a, b) for a, b in zip(latents, plain_latents))
    assert not session.enclosing and session.p is None and not session.engine.installed
    if inner_args is not None:  # the inner passes are cached by their own settings, from their own tensors only
        assert [i[STATS_KEY] for i in inner_infotexts] == ["3/6 steps cached"] * 2
        webui.shared.state.begin()
        alone = processing(webui, 6)
        alone_session = Session(A1111Adapter())
        alone_session.start(alone, inner_args)
        assert torch.equal(sample(webui, alone_session, alone, 6, seed=11), inner_latents[1])


def test_a_generation_left_unfinished_by_a_failed_job_is_not_an_outer_one(webui):
    session = Session(A1111Adapter())
    webui.shared.state.begin()
    crashed = processing(webui, 9)
    session.start(crashed, [True, 3, 0])
    session.before_sampling(crashed, hires=False)  # the job fails here: no post_sample, no postprocess
    p, _, _ = generation(webui, [True, 3, 0], session=session)
    assert p.extra_generation_params[STATS_KEY] == "6/9 steps cached"
    assert not session.enclosing and session.p is p
    assert STATS_KEY not in crashed.extra_generation_params or crashed.extra_generation_params[STATS_KEY] == "on"


def test_a_two_evaluation_sampler_the_webui_does_not_mark_says_what_was_cached(webui, capsys):
    """Forge Neo's "DPM++ 2s a RF" evaluates twice per step without the webui's ``second_order`` mark: its second
    evaluation lands below the next step's timestep, so some steps mix full and cached passes. The infotext
    then gives the passes too, as the console does, so both say what happened."""
    p, session, _ = generation(webui, [True, 3, 0], steps=12, sampler="dpmpp_2s_a", second_order=False)
    text = p.extra_generation_params[STATS_KEY]
    console = capsys.readouterr().out
    steps, passes = re.match(r"(\d+/12) steps cached \((\d+/\d+) U-Net passes from cache\)$", text).groups()
    assert f"{steps} steps cached, {passes} U-Net passes from cache" in console
    assert int(passes.split("/")[0]) > int(steps.split("/")[0])
    marked, _, _ = generation(webui, [True, 3, 0], steps=12, sampler="dpmpp_2s_a")
    assert marked.extra_generation_params[STATS_KEY] == "8/12 steps cached"  # marked: whole steps, no passes


def test_an_interrupted_run_counts_the_steps_it_ran(webui, capsys):
    """Interrupt at step 9 of 60: the infotext and the console count the 9 steps that ran, not the 60 planned."""
    p = processing(webui, 60)
    webui.shared.state.begin()
    session = Session(A1111Adapter())
    session.start(p, [True, 3, 0])
    sample(webui, session, p, 60, interrupt_after=9)
    assert p.extra_generation_params[STATS_KEY] == "6/9 steps cached, interrupted at 9/60"
    assert "6/9 steps cached, interrupted at 9/60, 6/9 U-Net passes from cache" in capsys.readouterr().out
    webui.shared.state.begin()  # the next job
    p, _, _ = generation(webui, [True, 3, 0])
    assert p.extra_generation_params[STATS_KEY] == "6/9 steps cached"


def test_forge_neos_unmarked_two_evaluation_sampler_counts_two_evaluations_per_step():
    """Forge Neo lists "DPM++ 2s a RF" without ``second_order``; it evaluates twice per step like DPM++ 2S a."""
    from deepcache.a1111 import evaluations_per_step

    rf = KDiffusionSampler(None, None, "sample_dpmpp_2s_ancestral_RF")
    assert evaluations_per_step(rf) == 2
    assert evaluations_per_step(KDiffusionSampler(None, None, "sample_euler")) is None

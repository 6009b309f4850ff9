"""ControlNet-aware caching on a real ldm U-Net with a ControlNet of the cldm architecture, driven by a real
k-diffusion sampler through a U-Net loop like sd-webui-controlnet's."""
import pytest
import torch

from deepcache import DeepCacheEngine, DeepCacheParams
from deepcache.controlnet import ControlNetSatellites, is_controlnet
from deepcache.testbed import ControlNet, control_residuals, controlled_forward, unet_with_control

STEPS = 9


@pytest.fixture(scope="module")
def controlnets(tiny_unet):
    return [ControlNet(tiny_unet, seed=1), ControlNet(tiny_unet, seed=2)]


def hint(seed: int, size: int = 64) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def module_state(module):
    return [dict(m.__dict__) for m in module.modules()]


def sample(pipe, units, params=None, aware=True, layer_runs=None):
    """One Euler run with the units' control; DeepCache on when ``params``; ControlNet-aware when ``aware``.
    Returns the latent and the engine's stats."""
    unet = pipe.unet
    engine = DeepCacheEngine()
    satellites = ControlNetSatellites(engine)
    unet.forward = controlled_forward(unet, units)
    handles = [block[0].register_forward_hook(lambda *a: layer_runs.append(1))  # a layer inside: really run
               for controlnet, _ in units for block in [*controlnet.input_blocks, controlnet.middle_block]
               ] if layer_runs is not None else []
    try:
        if params is not None:
            engine.install(unet)
            if aware:
                assert all(satellites.attach(controlnet) for controlnet, _ in units)
            engine.begin_run(params, STEPS, pipe.timestep_schedule(pipe.sigmas("euler", STEPS)))
        latent = pipe.sample("euler", STEPS)
        return latent, engine.end_run()
    finally:
        satellites.detach_all()
        engine.uninstall()
        del unet.forward
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("branch", [0, 2, 5, 10, 11])
def test_controlnet_aware_retrieval_equals_running_the_controlnet_in_full(pipe, controlnets, branch):
    units = [(controlnets[0], hint(0)), (controlnets[1], hint(1))]
    params = DeepCacheParams(enabled=True, interval=3, branch=branch)
    aware, stats = sample(pipe, units, params)
    in_full, full_stats = sample(pipe, units, params, aware=False)
    assert stats.cached_passes == full_stats.cached_passes == 6
    assert torch.allclose(aware, in_full, rtol=0, atol=1e-5 * in_full.abs().max().item())
    plain = sample(pipe, units)[0]
    assert not torch.equal(aware, plain)  # it is the cached result, and the control matters:
    assert not torch.equal(plain, sample(pipe, units[:1])[0])


def test_retrieval_steps_skip_the_controlnets_deep_blocks(pipe, controlnets):
    units = [(controlnets[0], hint(0))]
    params = DeepCacheParams(enabled=True, interval=3, branch=1)
    runs_aware, runs_in_full = [], []
    sample(pipe, units, params, layer_runs=runs_aware)
    sample(pipe, units, params, aware=False, layer_runs=runs_in_full)
    blocks = len(controlnets[0].input_blocks) + 1
    assert len(runs_in_full) == STEPS * blocks  # one U-Net call per step (cond and uncond batched)
    assert len(runs_aware) == 3 * blocks + 6 * 2  # full steps: all; retrieval steps: input_blocks[0..1]


def test_a_controlnet_that_starts_on_a_retrieval_step_runs_in_full_there(pipe, controlnets):
    """Guidance that starts late: the slot has no shapes for the ControlNet's skipped parts yet."""
    unet = pipe.unet
    engine = DeepCacheEngine()
    satellites = ControlNetSatellites(engine)
    engine.install(unet)
    satellites.attach(controlnets[0])
    schedule = pipe.timestep_schedule(pipe.sigmas("euler", STEPS))
    engine.begin_run(DeepCacheParams(enabled=True, interval=3), STEPS, schedule)
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 8, 32)
    units = [(controlnets[0], hint(0))]
    try:
        for step, t in enumerate(schedule):
            ts = torch.full((2,), t)
            if step < 1:
                unet(x, ts, context=ctx)
            else:
                unet_with_control(unet, x, ts, ctx, control_residuals(units, x, ts, ctx))
        stats = engine.end_run()
    finally:
        satellites.detach_all()
        engine.uninstall()
    assert stats.cached_passes == 6


def test_forge_order_controlnet_before_the_unet_call(pipe, controlnets):
    """Forge computes the control before calling the U-Net through its wrapper, which reports the call after
    the ControlNet ran: the ControlNet opens the pass and the U-Net joins it."""
    unet = pipe.unet
    units = [(controlnets[0], hint(0))]
    schedule = pipe.timestep_schedule(pipe.sigmas("euler", STEPS))
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 8, 32)
    outputs = {}
    for aware in (True, False):
        engine = DeepCacheEngine()
        satellites = ControlNetSatellites(engine)
        engine.install(unet, read_calls=False)
        if aware:
            satellites.attach(controlnets[0])
        engine.begin_run(DeepCacheParams(enabled=True, interval=3), STEPS, schedule)
        try:
            outs = []
            for t in schedule:
                ts = torch.full((2,), t)
                control = control_residuals(units, x, ts, ctx)
                engine.note_call(t, (0, 1))
                outs.append(unet_with_control(unet, x, ts, ctx, control))
            outputs[aware] = (outs, engine.end_run())
        finally:
            satellites.detach_all()
            engine.uninstall()
    (aware_outs, stats), (full_outs, _) = outputs[True], outputs[False]
    assert stats.cached_passes == 6 and len(stats.steps_with_full_pass) == 3
    for a, b in zip(aware_outs, full_outs):
        assert torch.allclose(a, b, rtol=0, atol=1e-5 * b.abs().max().item())


def test_detach_is_exact_and_other_controls_are_not_attached(tiny_unet, controlnets):
    controlnet = controlnets[0]
    before = module_state(controlnet)
    engine = DeepCacheEngine()
    engine.install(tiny_unet)
    satellites = ControlNetSatellites(engine)
    assert satellites.attach(controlnet) and not satellites.attach(controlnet)
    assert module_state(controlnet) != before
    t2i_adapter = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1))
    assert not is_controlnet(t2i_adapter) and not satellites.attach(t2i_adapter) and not satellites.attach(None)
    satellites.detach_all()
    engine.uninstall()
    assert module_state(controlnet) == before


def test_the_adapters_find_the_controlnets_of_a_generation(tiny_unet, controlnets):
    """sd-webui-controlnet: the hook object in the closure of the U-Net's bound ``forward_webui`` lists
    ``control_params``; Forge: ``UnetPatcher.controlnet_linked_list``."""
    import types

    from webui_doubles import Processing, install_modules, remove_modules

    from deepcache.a1111 import A1111Adapter
    from deepcache.forge import ForgeAdapter

    hook = types.SimpleNamespace(control_params=[
        types.SimpleNamespace(control_model=types.SimpleNamespace(control_model=controlnets[0])),
        types.SimpleNamespace(control_model=types.SimpleNamespace(control_model=controlnets[1]))])

    def forward_webui(self, x, timesteps=None, context=None, **kwargs):
        return hook.control_params  # closes over the hook object, as the extension's does

    model = types.SimpleNamespace(model=types.SimpleNamespace(diffusion_model=tiny_unet))
    install_modules(model)
    try:
        assert A1111Adapter().control_models(Processing(model)) == []
        tiny_unet.forward = forward_webui.__get__(tiny_unet)
        assert A1111Adapter().control_models(Processing(model)) == controlnets
    finally:
        del tiny_unet.forward
        remove_modules()
    second = types.SimpleNamespace(control_model=controlnets[1], previous_controlnet=None)
    first = types.SimpleNamespace(control_model=controlnets[0], previous_controlnet=second)
    forge = types.SimpleNamespace(forge_objects=types.SimpleNamespace(unet=types.SimpleNamespace(
        controlnet_linked_list=first)))
    assert ForgeAdapter().control_models(Processing(forge)) == controlnets

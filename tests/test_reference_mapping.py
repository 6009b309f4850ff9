"""Branch k computes the same layers as the reference implementation, DeepCache's ``DeepCacheSDHelper``
(pip package ``DeepCache``), on the equivalent diffusers U-Net.

Both U-Nets get SD1.5's block structure (4 down blocks of 2 layers, 3 with cross-attention, downsamplers
on the first 3). A layer "ran" on a retrieval step when a module inside it executed. diffusers' layers map
onto ldm's blocks as the webuis' checkpoint converters map their weights:
``conv_in`` = ``input_blocks[0]``, down block b layer l = ``input_blocks[1 + 3b + l]``, its downsampler =
``input_blocks[3 + 3b]``, up block u layer l (with its upsampler on l = 2) = ``output_blocks[3u + l]``.
"""
import types

import DeepCache
import diffusers
import pytest
import torch

from deepcache import DeepCacheEngine, DeepCacheParams
from deepcache.testbed import build_unet


def diffusers_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64, 64, 64), layers_per_block=2, cross_attention_dim=32,
        attention_head_dim=2, norm_num_groups=32,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3).eval()


def diffusers_layers(unet):
    """(ldm block name, a module that runs only when that layer really computes)."""
    layers = [("in0", unet.conv_in)]
    for b, block in enumerate(unet.down_blocks):
        for layer, resnet in enumerate(block.resnets):
            layers.append((f"in{1 + 3 * b + layer}", resnet.norm1))
        for sampler in block.downsamplers or []:
            layers.append((f"in{3 + 3 * b}", sampler.conv))
    layers.append(("mid", unet.mid_block.resnets[0].norm1))
    for u, block in enumerate(unet.up_blocks):
        for layer, resnet in enumerate(block.resnets):
            layers.append((f"out{3 * u + layer}", resnet.norm1))
    return layers


def ldm_layers(unet):
    return ([(f"in{i}", b[0]) for i, b in enumerate(unet.input_blocks)] + [("mid", unet.middle_block[0])]
            + [(f"out{j}", b[0]) for j, b in enumerate(unet.output_blocks)])


def ran_on_second_call(layers, first, second):
    ran = set()
    first()
    handles = [m.register_forward_hook(lambda *a, name=name: ran.add(name)) for name, m in layers]
    second()
    for h in handles:
        h.remove()
    return ran


def reference_retrieval(unet, branch):
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(10)
    helper = DeepCache.DeepCacheSDHelper(pipe=types.SimpleNamespace(unet=unet, scheduler=scheduler))
    helper.set_params(cache_interval=2, cache_branch_id=branch)
    helper.enable()
    x, ctx = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 32)
    t0, t1 = scheduler.timesteps[0], scheduler.timesteps[1]
    with torch.no_grad():
        ran = ran_on_second_call(diffusers_layers(unet), lambda: unet(x, t0, ctx), lambda: unet(x, t1, ctx))
    helper.disable()
    return ran


def our_retrieval(unet, branch):
    engine = DeepCacheEngine()
    engine.install(unet)
    engine.begin_run(DeepCacheParams(enabled=True, interval=2, branch=branch), 2, [900.0, 800.0])
    x, ctx = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 32)
    with torch.no_grad():
        ran = ran_on_second_call(ldm_layers(unet), lambda: unet(x, torch.tensor([900.0]), context=ctx),
                                 lambda: unet(x, torch.tensor([800.0]), context=ctx))
    engine.uninstall()
    return ran


@pytest.mark.parametrize("branch", range(12))
def test_branch_computes_the_reference_layers(branch):
    reference = reference_retrieval(diffusers_unet(), branch)
    ours = our_retrieval(build_unet("tiny"), branch)
    assert ours == reference
    assert ours == {f"in{i}" for i in range(branch + 1)} | {f"out{j}" for j in range(11 - branch, 12)}

import pytest
import torch
from torch import nn

from deepcache import DeepCacheEngine, DeepCacheParams, UnsupportedModel, inspect_unet
from deepcache.testbed import build_unet, context_dim, unet_kwargs


@pytest.mark.parametrize("arch,depth", [("tiny", 12), ("tiny-xl", 9), ("tiny-inpaint", 12)])
def test_supported_layouts(arch, depth):
    layout = inspect_unet(build_unet(arch))
    assert layout.depth == depth and layout.max_branch == depth - 1


class MMDiT(nn.Module):
    """The shape of SD3's diffusion model: joint transformer blocks, no input/output blocks."""

    def __init__(self):
        super().__init__()
        self.joint_blocks = nn.ModuleList([nn.Linear(4, 4)])


def test_a_model_without_unet_blocks_is_declined_with_a_reason():
    with pytest.raises(UnsupportedModel, match="MMDiT is not a U-Net.*missing input_blocks"):
        DeepCacheEngine().install(MMDiT())


def test_branch_beyond_the_models_depth_is_rejected():
    engine = DeepCacheEngine()
    engine.install(build_unet("tiny-xl"))
    with pytest.raises(ValueError, match=r"'branch' must be int in \[0, 8\]"):
        engine.begin_run(DeepCacheParams(enabled=True, branch=9), 10)


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_full_size_structures_run_every_branch(arch):
    """SD1.5 (12/1/12) and SDXL (9/1/9, transformer depths 0/2/10, ``y``) U-Nets at full width, tiny latent:
    every branch's retrieval pass returns the right shape and stays close to the full pass."""
    unet = build_unet(arch)
    ctx = torch.randn(2, 4, context_dim(unet))
    x = torch.randn(2, 4, 8, 8)
    engine = DeepCacheEngine()
    engine.install(unet)
    with torch.no_grad():
        for k in (0, len(unet.input_blocks) // 2, len(unet.input_blocks) - 1):
            engine.begin_run(DeepCacheParams(enabled=True, branch=k, interval=2), 2, [600.0, 590.0])
            full = unet(x, torch.full((2,), 600.0), **unet_kwargs(unet, ctx))
            cached = unet(x, torch.full((2,), 590.0), **unet_kwargs(unet, ctx))
            stats = engine.end_run()
            assert (stats.full_passes, stats.cached_passes) == (1, 1)
            assert cached.shape == full.shape and torch.isfinite(cached).all()
    engine.uninstall()

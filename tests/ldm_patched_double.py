"""A double of how ComfyUI's U-Net reaches its blocks (``ldm_patched/ldm/modules/diffusionmodules/openaimodel.py``
in Forge Classic and reForge): ``UNetModel.forward`` and ``TimestepEmbedSequential.forward`` both call the
module-level ``forward_timestep_embed(block, x, emb, context, transformer_options, output_shape)``, which runs
the block's layers itself, so a block's own ``forward`` is never used by the U-Net. Made from a real ldm U-Net:
its blocks and layers stay the real ones, only the call pattern is ComfyUI's."""
from __future__ import annotations

import torch
from ldm.modules.attention import SpatialTransformer
from ldm.modules.diffusionmodules import openaimodel
from ldm.modules.diffusionmodules.util import timestep_embedding


def forward_timestep_embed(ts, x, emb, context=None, transformer_options={}, output_shape=None):  # noqa: B006
    for layer in ts:
        if isinstance(layer, openaimodel.TimestepBlock):
            x = layer(x, emb)
        elif isinstance(layer, SpatialTransformer):
            x = layer(x, context)
        else:
            x = layer(x)
    return x


class TimestepEmbedSequential(openaimodel.TimestepEmbedSequential):
    def forward(self, *args, **kwargs):
        return forward_timestep_embed(self, *args, **kwargs)


class UNetModel(openaimodel.UNetModel):
    def forward(self, x, timesteps=None, context=None, y=None, control=None, transformer_options={}, **kwargs):  # noqa: B006
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels, repeat_only=False))
        hs, h = [], x
        for module in self.input_blocks:
            h = forward_timestep_embed(module, h, emb, context, transformer_options)
            hs.append(h)
        h = forward_timestep_embed(self.middle_block, h, emb, context, transformer_options)
        for module in self.output_blocks:
            h = torch.cat([h, hs.pop()], dim=1)
            h = forward_timestep_embed(module, h, emb, context, transformer_options, hs[-1].shape if hs else None)
        return self.out(h)


def as_ldm_patched(unet: openaimodel.UNetModel) -> UNetModel:
    """The same U-Net object with ComfyUI's call pattern."""
    for block in [*unet.input_blocks, unet.middle_block, *unet.output_blocks]:
        block.__class__ = TimestepEmbedSequential
    unet.__class__ = UNetModel
    return unet

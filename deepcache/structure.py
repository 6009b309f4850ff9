"""Recognising a U-Net that DeepCache can hook, and declining anything else with a reason."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


class UnsupportedModel(Exception):
    """The model has no ldm-style U-Net structure (for example SD3's MMDiT or Flux)."""


@dataclass(frozen=True)
class UNetLayout:
    """The blocks DeepCache wraps. Skip ``k`` links ``input_blocks[k]`` with ``output_blocks[n-1-k]``."""

    input_blocks: tuple[nn.Module, ...]
    middle_block: nn.Module
    output_blocks: tuple[nn.Module, ...]

    @property
    def depth(self) -> int:
        return len(self.input_blocks)

    @property
    def max_branch(self) -> int:
        return self.depth - 1


def inspect_unet(unet: nn.Module) -> UNetLayout:
    """Return the layout of an ldm/sgm ``UNetModel`` or Forge's ``IntegratedUNet2DConditionModel``."""
    name = type(unet).__name__
    missing = [a for a in ("input_blocks", "middle_block", "output_blocks", "out") if not hasattr(unet, a)]
    if missing:
        raise UnsupportedModel(f"{name} is not a U-Net with input/middle/output blocks "
                               f"(missing {', '.join(missing)}); DeepCache needs one (SD1.x, SD2.x, SDXL)")
    inputs, outputs = tuple(unet.input_blocks), tuple(unet.output_blocks)
    if not inputs or len(inputs) != len(outputs):
        raise UnsupportedModel(f"{name} has {len(inputs)} input and {len(outputs)} output blocks; "
                               "DeepCache needs the same non-zero number of each")
    return UNetLayout(inputs, unet.middle_block, outputs)

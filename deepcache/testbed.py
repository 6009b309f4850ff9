"""Real models for the benchmark and the tests: ldm's ``UNetModel`` with random, seeded weights, driven by
k-diffusion's samplers through a classifier-free-guidance denoiser shaped like the webui's.

Needs the dev dependencies (``stable-diffusion-sdkit`` for ``ldm``, ``k-diffusion``); the engine does not.
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

_torchvision_ops = None  # keeps the placeholder op library alive (its definitions vanish with the object)


def make_torchvision_importable() -> None:
    """Let ``import torchvision`` work beside CPU torch. PyPI's torchvision 0.28 is a CUDA build whose import
    fails on ``operator torchvision::nms does not exist``; declaring the two ops its fake-kernel registrations
    expect (never called here) fixes that without patching the installed package. Anything that may import
    torchvision (k-diffusion, diffusers) needs this first: the test session does it once in ``conftest.py``."""
    global _torchvision_ops
    if _torchvision_ops is not None:
        return
    try:
        importlib.import_module("torchvision")
    except RuntimeError as error:
        if "torchvision::nms" not in str(error):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _torchvision_ops = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            _torchvision_ops.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    except ImportError:  # no torchvision at all: nothing to fix
        pass


def import_k_diffusion() -> Any:
    make_torchvision_importable()
    return importlib.import_module("k_diffusion")


@dataclass(frozen=True)
class Arch:
    """A U-Net shape: ``unet`` are ldm ``UNetModel`` kwargs. SDXL's design adds what ldm's ``UNetModel`` lacks:
    ``depths``, the transformer depth at each level (the middle block takes the last level's), and
    ``adm_in_channels``, the width of the ``y`` vector embedded into the time embedding (sgm's ``label_emb``)."""

    name: str
    unet: dict[str, Any]
    description: str
    depths: tuple[int, ...] | None = None
    adm_in_channels: int | None = None


_SD15 = dict(in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1], num_res_blocks=2,
             channel_mult=[1, 2, 4, 4], num_heads=8, use_spatial_transformer=True, transformer_depth=1,
             context_dim=768, legacy=False)
_SDXL = dict(_SD15, channel_mult=[1, 2, 4], attention_resolutions=[4, 2], num_heads=-1, num_head_channels=64,
             context_dim=2048, use_linear_in_transformer=True)
ARCHS: dict[str, Arch] = {a.name: a for a in (
    Arch("sd15", dict(_SD15, image_size=32), "SD1.5 U-Net (v1-inference config), 12/1/12 blocks, 860M params"),
    Arch("sdxl", dict(_SDXL, image_size=32),
         "SDXL base U-Net (sd_xl_base config: 9/1/9 blocks, transformer depth 0/2/10, y of 2816), 2.6B params",
         depths=(0, 2, 10), adm_in_channels=2816),
    Arch("tiny", dict(_SD15, image_size=8, model_channels=32, num_heads=2, context_dim=32),
         "SD1.5 block layout (12/1/12) with 32 base channels, for tests"),
    Arch("tiny-xl", dict(_SD15, image_size=8, model_channels=32, channel_mult=[1, 2, 4], attention_resolutions=[4, 2],
                         num_heads=2, context_dim=32), "SDXL block layout (9/1/9) with 32 base channels"),
    Arch("tiny-sdxl", dict(_SDXL, image_size=8, model_channels=32, num_head_channels=16, context_dim=32),
         "SDXL's design (depths 0/2/3, y vector) with 32 base channels, for tests", depths=(0, 2, 3),
         adm_in_channels=24),
    Arch("tiny-inpaint", dict(_SD15, image_size=8, in_channels=9, model_channels=32, num_heads=2, context_dim=32),
         "9-channel inpainting U-Net, SD1.5 layout, 32 base channels"),
)}


def build_unet(arch: str | Arch, seed: int = 0) -> nn.Module:
    """An ldm ``UNetModel`` with seeded random weights. ldm zero-initialises the output conv, every
    ``proj_out`` and each ResBlock's last conv; those are re-randomised so that outputs depend on inputs."""
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    spec = ARCHS[arch] if isinstance(arch, str) else arch
    torch.manual_seed(seed)
    unet = UNetModel(**spec.unet).eval().requires_grad_(False)
    if spec.depths:
        _set_transformer_depths(unet, spec.depths)
    if spec.adm_in_channels:
        width = unet.time_embed[0].out_features
        unet.num_classes = "sequential"  # ldm's forward then adds ``label_emb(y)`` to the time embedding
        unet.label_emb = nn.Sequential(nn.Sequential(nn.Linear(spec.adm_in_channels, width), nn.SiLU(),
                                                     nn.Linear(width, width))).requires_grad_(False)
    for module in unet.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)) and not weight.any():
            nn.init.normal_(weight, std=0.02)
            if module.bias is not None:
                nn.init.normal_(module.bias, std=0.02)
    return unet


def _set_transformer_depths(unet: nn.Module, depths: Sequence[int]) -> None:
    """Give each ``SpatialTransformer`` the depth of its level, as sgm's ``transformer_depth`` list does
    (ldm takes one depth for all): level ``l`` has ``model_channels * channel_mult[l]`` channels, and the middle
    block's transformer sits at the deepest level. Added blocks are fresh, seeded copies of the first."""
    import copy

    from ldm.modules.attention import SpatialTransformer

    depth_of = {unet.model_channels * mult: depth for mult, depth in zip(unet.channel_mult, depths)}
    for module in unet.modules():
        if isinstance(module, SpatialTransformer):
            first = module.transformer_blocks[0]
            blocks = [first] + [copy.deepcopy(first) for _ in range(depth_of[module.in_channels] - 1)]
            for block in blocks[1:]:
                for layer in block.modules():
                    if hasattr(layer, "reset_parameters"):
                        layer.reset_parameters()
            module.transformer_blocks = nn.ModuleList(blocks)


def unet_kwargs(unet: nn.Module, context: torch.Tensor) -> dict[str, Any]:
    """The conditioning a U-Net call takes besides ``x`` and the timesteps. For SDXL's design: ``y`` (a seeded
    stand-in for the pooled text embedding and the size/crop embeddings), and ``context`` once per transformer
    block, because ldm's ``SpatialTransformer`` gives its block ``i`` ``context[i]`` where sgm's gives every
    block the one context (a list of the same tensor makes ldm do what sgm does)."""
    if getattr(unet, "num_classes", None) is None:
        return {"context": context}
    width = unet.label_emb[0][0].in_features
    y = torch.randn(1, width, generator=torch.Generator().manual_seed(0)).expand(len(context), -1)
    depth = len(unet.middle_block[1].transformer_blocks)  # the deepest level's: the most any block takes
    return {"context": [context] * depth, "y": y}


def time_embedding(unet: nn.Module, timesteps: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """The embedding every block receives, computed as ldm/sgm's ``UNetModel.forward`` does."""
    from ldm.modules.diffusionmodules.util import timestep_embedding

    emb = unet.time_embed(timestep_embedding(timesteps, unet.model_channels, repeat_only=False))
    return emb if y is None else emb + unet.label_emb(y)


class ControlNet(nn.Module):
    """The ``cldm.ControlNet`` architecture that sd-webui-controlnet and Forge run: a copy of the U-Net's time
    embedding, encoder and middle block, a hint encoder (image space to latent space, 8x down), and a 1x1
    "zero" conv after each input block and after the middle block. Built from a U-Net's own ldm modules; the
    convolutions that are zero-initialised in training get seeded random weights here, so every residual
    matters."""

    def __init__(self, unet: nn.Module, seed: int = 1, hint_channels: int = 3) -> None:
        super().__init__()
        import copy

        from ldm.modules.diffusionmodules.openaimodel import TimestepEmbedSequential

        torch.manual_seed(seed)
        self.model_channels = unet.model_channels
        self.time_embed = copy.deepcopy(unet.time_embed)
        self.input_blocks = copy.deepcopy(unet.input_blocks)
        self.middle_block = copy.deepcopy(unet.middle_block)
        widths = [hint_channels, 16, 16, 32, 32, 96, 96, 256]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            layers += [nn.Conv2d(a, b, 3, padding=1, stride=2 if i in (2, 4, 6) else 1), nn.SiLU()]
        layers.append(nn.Conv2d(widths[-1], self.model_channels, 3, padding=1))
        self.input_hint_block = TimestepEmbedSequential(*layers)
        channels = self._block_channels(unet)
        self.zero_convs = nn.ModuleList(TimestepEmbedSequential(nn.Conv2d(c, c, 1)) for c in channels[:-1])
        self.middle_block_out = TimestepEmbedSequential(nn.Conv2d(channels[-1], channels[-1], 1))
        for conv in [*(z[0] for z in self.zero_convs), self.middle_block_out[0]]:
            nn.init.normal_(conv.weight, std=0.05)
        self.eval().requires_grad_(False)

    def _block_channels(self, unet: nn.Module) -> list[int]:
        """Output channels of each input block and of the middle block (one tiny forward of the copies)."""
        from ldm.modules.diffusionmodules.util import timestep_embedding

        channels, h = [], torch.zeros(1, unet.input_blocks[0][0].in_channels, 16, 16)
        emb = self.time_embed(timestep_embedding(torch.zeros(1), self.model_channels))
        context = torch.zeros(1, 1, context_dim(unet))
        with torch.no_grad():
            for block in [*self.input_blocks, self.middle_block]:
                h = block(h, emb, context)
                channels.append(h.shape[1])
        return channels

    def forward(self, x: torch.Tensor, hint: torch.Tensor, timesteps: torch.Tensor,
                context: torch.Tensor) -> list[torch.Tensor]:
        """One residual per skip, then one for the middle block, as ``cldm.ControlNet.forward`` returns them."""
        from ldm.modules.diffusionmodules.util import timestep_embedding

        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        guided_hint = self.input_hint_block(hint, emb, context)
        outs, h = [], x
        for i, (block, zero_conv) in enumerate(zip(self.input_blocks, self.zero_convs)):
            h = block(h, emb, context)
            if i == 0:
                h = h + guided_hint
            outs.append(zero_conv(h, emb, context))
        h = self.middle_block(h, emb, context)
        outs.append(self.middle_block_out(h, emb, context))
        return outs


def controlled_forward(unet: nn.Module, units: Sequence[tuple[nn.Module, torch.Tensor]]) -> Callable:
    """A U-Net forward like sd-webui-controlnet's ``forward_webui`` (set as the U-Net's instance ``forward``):
    each unit's ControlNet runs first on its hint, then the U-Net loop with the summed residuals."""

    def forward(x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, y: torch.Tensor | None = None,
                **_: Any) -> torch.Tensor:
        return unet_with_control(unet, x, timesteps, context, control_residuals(units, x, timesteps, context), y)

    return forward


def control_residuals(units: Sequence[tuple[nn.Module, torch.Tensor]], x: torch.Tensor, timesteps: torch.Tensor,
                      context: torch.Tensor) -> list[torch.Tensor]:
    """The summed residuals of every unit (a ControlNet and its hint image)."""
    control = None
    for controlnet, hint in units:
        outs = controlnet(x, hint.expand(x.shape[0], -1, -1, -1), timesteps=timesteps, context=context)
        control = outs if control is None else [a + b for a, b in zip(control, outs)]
    return control


def unet_with_control(unet: nn.Module, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                      control: list[torch.Tensor], y: torch.Tensor | None = None) -> torch.Tensor:
    """The U-Net loop of the ControlNet extensions: every block called as ``module(...)``, the last residual
    added to the middle output and the others to the skips."""
    control = list(control)
    emb = time_embedding(unet, timesteps, y)
    hs, h = [], x
    for block in unet.input_blocks:
        h = block(h, emb, context)
        hs.append(h)
    h = unet.middle_block(h, emb, context) + control.pop()
    for block in unet.output_blocks:
        h = block(torch.cat([h, hs.pop() + control.pop()], dim=1), emb, context)
    return unet.out(h)


def context_dim(unet: nn.Module) -> int:
    """Width of the text conditioning the U-Net's cross-attention expects."""
    return next(m.to_k.in_features for name, m in unet.named_modules() if name.endswith("attn2"))


class LatentModel(nn.Module):
    """The part of ldm's ``LatentDiffusion`` that k-diffusion's ``CompVisDenoiser`` uses: ``alphas_cumprod``
    of SD's scaled-linear schedule and ``apply_model``, with the U-Net at ``model.diffusion_model`` as in
    the webui."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        from ldm.modules.diffusionmodules.util import make_beta_schedule

        betas = make_beta_schedule("linear", 1000, linear_start=0.00085, linear_end=0.012)
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - torch.as_tensor(betas), 0).float())
        self.model = nn.Module()
        self.model.diffusion_model = unet

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.model.diffusion_model(x, t, **unet_kwargs(self.model.diffusion_model, cond))


class CFGDenoiser(nn.Module):
    """Classifier-free guidance like A1111's: cond rows then uncond rows in one U-Net call, or in separate
    calls (``split``), optionally dropping the uncond half on every other call below ``min_uncond_sigma``
    (the webui's "Negative Guidance minimum sigma")."""

    def __init__(self, denoiser: nn.Module, cond: torch.Tensor, uncond: torch.Tensor, scale: float = 7.0,
                 split: bool = False, min_uncond_sigma: float = 0.0) -> None:
        super().__init__()
        self.inner, self.cond, self.uncond, self.scale = denoiser, cond, uncond, scale
        self.split, self.min_uncond_sigma, self.calls = split, min_uncond_sigma, 0

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        n = x.shape[0]
        skip_uncond = self.calls % 2 == 1 and float(sigma[0]) < self.min_uncond_sigma
        self.calls += 1
        if skip_uncond:
            return self.inner(x, sigma, cond=self.cond)
        if self.split:
            c = self.inner(x, sigma, cond=self.cond)
            u = self.inner(x, sigma, cond=self.uncond)
        else:
            c, u = self.inner(torch.cat([x, x]), torch.cat([sigma, sigma]),
                              cond=torch.cat([self.cond, self.uncond])).split(n)
        return u + (c - u) * self.scale


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    function: str
    karras: bool = False
    discard_penultimate: bool = False


SAMPLERS: dict[str, SamplerSpec] = {s.name: s for s in (
    SamplerSpec("euler", "sample_euler"),
    SamplerSpec("euler_a", "sample_euler_ancestral"),
    SamplerSpec("heun", "sample_heun"),
    SamplerSpec("dpm2", "sample_dpm_2", karras=True, discard_penultimate=True),
    SamplerSpec("lms", "sample_lms"),
    SamplerSpec("dpmpp_2m", "sample_dpmpp_2m", karras=True),
    SamplerSpec("dpmpp_2s_a", "sample_dpmpp_2s_ancestral", karras=True),
    SamplerSpec("dpmpp_sde", "sample_dpmpp_sde", karras=True),
)}


class Pipeline:
    """A text-free txt2img loop: seeded noise, a k-diffusion sampler (or a DDIM timestep loop), CFG."""

    def __init__(self, unet: nn.Module, context_tokens: int = 8) -> None:
        self.k = import_k_diffusion()
        self.unet = unet
        self.device = next(unet.parameters()).device
        self.model = LatentModel(unet).to(self.device)
        self.denoiser = self.k.external.CompVisDenoiser(self.model)
        self.context_tokens = context_tokens

    def conditioning(self, images: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        dim = context_dim(self.unet)
        cond = torch.randn(images, self.context_tokens, dim, generator=g)
        uncond = torch.randn(images, self.context_tokens, dim, generator=g) * 0.5
        return cond.to(self.device), uncond.to(self.device)

    def sigmas(self, sampler: str, steps: int) -> torch.Tensor:
        spec = SAMPLERS[sampler]
        n = steps + 1 if spec.discard_penultimate else steps
        if spec.karras:
            sigmas = self.k.sampling.get_sigmas_karras(n, self.denoiser.sigma_min.item(),
                                                       self.denoiser.sigma_max.item())
        else:
            sigmas = self.denoiser.get_sigmas(n)
        sigmas = sigmas.to(self.device)
        return torch.cat([sigmas[:-2], sigmas[-1:]]) if spec.discard_penultimate else sigmas

    def timestep_schedule(self, sigmas: torch.Tensor) -> list[float]:
        """The timestep the U-Net receives at each step (what ``DeepCacheEngine.begin_run`` takes)."""
        return [float(self.denoiser.sigma_to_t(s)) for s in sigmas[:-1]]

    def noise(self, images: int, size: int, seed: int = 0) -> torch.Tensor:
        channels = self.unet.input_blocks[0][0].in_channels
        noise = torch.randn(images, channels, size // 8, size // 8, generator=torch.Generator().manual_seed(seed))
        return noise.to(self.device)

    def sample(self, sampler: str, steps: int, images: int = 1, size: int = 64, seed: int = 0,
               split: bool = False, min_uncond_sigma: float = 0.0, callback: Callable | None = None) -> torch.Tensor:
        sigmas = self.sigmas(sampler, steps)
        cond, uncond = self.conditioning(images)
        cfg = CFGDenoiser(self.denoiser, cond, uncond, split=split, min_uncond_sigma=min_uncond_sigma)
        x = self.noise(images, size, seed) * sigmas[0]
        extra = {"noise_sampler": self.k.sampling.BrownianTreeNoiseSampler(
            x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seed)} if sampler == "dpmpp_sde" else {}
        torch.manual_seed(seed)
        with torch.no_grad():
            return getattr(self.k.sampling, SAMPLERS[sampler].function)(
                cfg, x, sigmas, callback=callback, disable=True, **extra)

    def ddim_timesteps(self, steps: int) -> list[int]:
        """A1111's DDIM timesteps (uniform, ``range(1, 1000, 1000 // steps)`` reversed) as integers."""
        return list(range(1, 1000, 1000 // steps))[::-1][:steps]

    def sample_ddim(self, steps: int, images: int = 1, size: int = 64, seed: int = 0) -> torch.Tensor:
        """Deterministic DDIM over integer timesteps, the way A1111's timestep samplers call the model."""
        alphas = self.model.alphas_cumprod
        timesteps = self.ddim_timesteps(steps)
        cond, uncond = self.conditioning(images)
        x = self.noise(images, size, seed)
        with torch.no_grad():
            for i, t in enumerate(timesteps):
                ts = torch.full((2 * images,), t, dtype=torch.long)
                kwargs = unet_kwargs(self.unet, torch.cat([cond, uncond]))
                c, u = self.unet(torch.cat([x, x]), ts, **kwargs).split(images)
                eps = u + (c - u) * 7.0
                a, a_prev = alphas[t], alphas[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.tensor(1.0)
                x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
                x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        return x

"""Random-weight SDXL checkpoints for the webui lab, built offline: base, refiner and a micro SDXL-shaped model.

For plumbing and behaviour checks only (the images are noise). Not a test; run it with the A1111 venv's python
(it imports the real `sgm` from the webui's repositories/generative-models, `open_clip` and `transformers`):

    flock -x /tmp/deepcache-bigmem.lock flock -s /tmp/deepcache-timing.lock \\
        /work/webui-lab/venv/bin/python tests/e2e/make_sdxl_checkpoints.py \\
        --webui /work/webui-lab/webui --out /work/webui-lab/webui/models/Stable-diffusion \\
        [--only base,refiner,micro] [--seed 1234] [--hf-home /work/webui-lab/hf-home] \\
        [--micro-text small|full] [--keep-zero-init] [--vae-approx-dir /work/webui-lab/webui/models/VAE-approx]

Writes into --out (each in fp16, tensors in name order, the same bytes for the same --seed):
  sdxl-base.safetensors     sd_xl_base.yaml: U-Net 2.57G params (`model.diffusion_model.*`), CLIP-L
                            (`conditioner.embedders.0.transformer.text_model.*`), OpenCLIP ViT-bigG-14 text tower
                            (`conditioner.embedders.1.model.*`, open_clip key names), VAE (`first_stage_model.*`).
  sdxl-refiner.safetensors  sd_xl_refiner.yaml: U-Net 2.3G params, bigG as `conditioner.embedders.0.model.*`, VAE.
                            Base and refiner share the bigG and VAE weights (one seed per component), as the
                            real pair does.
  micro-sdxl.safetensors    + micro-sdxl.yaml beside it (A1111 uses a yaml with the checkpoint's base name; Forge
                            ignores it and cannot load micro). The SDXL layout (9 input / 1 middle / 9 output
                            blocks, label_emb, linear proj_in/out) with model_channels 32, channel_mult [1,2,4],
                            transformer_depth [0,1,1], and a small VAE (ch 32, ch_mult [1,2,4,4]: still 8x).
                            --micro-text small (default): small text encoders too: CLIP-L from the lab's fake hub
                            repo `webui-lab/tiny-clip-text` (width 64, 2 layers; made by the kit's
                            make_tiny_configs.py; layer_idx 1) and an open_clip model `hf-hub:webui-lab/micro-openclip`
                            (text width 64, 2 layers, pooled 64) that this script writes into <hf-home>/hub; so
                            context_dim 128, adm_in_channels 1600, and the checkpoint only loads with that HF_HOME
                            (the kit's run-webui.sh sets it). --micro-text full: the real CLIP-L + bigG sizes
                            (context_dim 2048, adm_in_channels 2816; ~1.6 GiB file, no hub repo needed).

--vae-approx-dir also writes a random models/VAE-approx/vaeapprox-sdxl.pt (when missing): A1111's default settings
(live previews, "Approx NN") load it at the start of every SDXL txt2img, it is not in the webui's git tree, and
offline its download fails (HTTP 500 URLError). Forge does the same (link the file into forge/models/VAE-approx).
The alternative is the setting show_progress_type "Approx cheap" (or live_previews_enable false).

Construction needs no download: the U-Net and VAE come from sgm with the yaml's parameters (attention types forced
to the plain ones; the state-dict keys are the same), CLIP-L is transformers' CLIPTextModel from a config, bigG's
text tower is open_clip's TextTransformer built from its bundled ViT-bigG-14 config (plus `logit_scale`, which real
SDXL files also carry). The U-Net is built with torch's default dtype set to float16, so it never exists in fp32,
and the file is written tensor by tensor (no second in-memory copy as safetensors.save_file would make).

Two weight fixes (off with --keep-zero-init), as in the kit's make_random_checkpoint.py:
  1. sgm zero-initialises the U-Net's out conv, every proj_out and each ResBlock's last conv: left at zero, eps is
     0 everywhere and the image ignores the prompt. Every all-zero U-Net weight (dim >= 2) gets N(0, 0.02).
  2. the text encoders' final LayerNorm (CLIP-L final_layer_norm, bigG ln_final) gets weight N(1, 0.1) and a bias
     with mean 0.1: weight 1 / bias 0 gives token vectors of mean exactly 0, and the webui's "Original" emphasis
     divides by that mean (NaN).

Measured on the lab machine (2 cores, 24 GB, torch 2.13 CPU; one target per run; /usr/bin/time wall time incl.
~5 s of imports, and peak RSS; the peak is the bigG text tower's fp32 -> fp16 conversion beside the fp16 U-Net):
  base     75 s / 9.4 GiB    2515 tensors, 6,938,041,336 bytes, sha256 6c02a7ed11... (--seed 1234)
  refiner  74 s / 8.6 GiB    1858 tensors, 6,075,944,240 bytes, sha256 1b96bd5135...
  micro    14 s / 0.6 GiB     751 tensors,    33,761,824 bytes, sha256 cfb153c394... (small text encoders)
  micro    25 s / 4.6 GiB    1271 tensors,    1587.8 MiB,            sha256 538789cbf4... (--micro-text full)
Rebuilding gives byte-identical files (checked for refiner and micro). Both webuis load base and refiner (A1111 also
micro) and generate with them, incl. refiner_checkpoint; a 256x256 4-step Euler base image takes ~1 min on CPU,
and a server with base + refiner swapping peaks at ~20 GiB (A1111) / ~23 GiB RSS (Forge, incl. mapped file pages).
Anything over 4 GB on the shared machine runs under `flock -x /tmp/deepcache-bigmem.lock`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import struct
import sys
import time

FAKE_REVISION = "000000000000000000000000000000000ff11e00"  # the kit's fake hub snapshot name
MICRO_OPENCLIP_REPO = "webui-lab/micro-openclip"
MICRO_CLIP_L_REPO = "webui-lab/tiny-clip-text"
MICRO_OPENCLIP_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 28, "layers": 1, "width": 32, "head_width": 16, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
# openai/clip-vit-large-patch14's text config (only the shapes matter); used when the HF cache lacks it
CLIP_L_CFG = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
                  bos_token_id=0, eos_token_id=2, pad_token_id=1)
SEED_OFFSETS = {"unet": 0, "clip_l": 1, "clip_g": 2, "vae": 3}
ST_DTYPES = {"float16": "F16", "float32": "F32", "bfloat16": "BF16", "int64": "I64", "int32": "I32"}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def log(msg: str, t0: float) -> None:
    print(f"[{time.time() - t0:7.1f}s, peak RSS {peak_rss_gb():5.2f} GB] {msg}", flush=True)


def seed(base: int, component: str) -> None:
    import torch

    torch.manual_seed(base * 16 + SEED_OFFSETS[component])


def fp16_state_dict(module, prefix: str) -> dict:
    import torch

    out = {}
    for k, v in module.state_dict().items():
        v = v.detach()
        if v.is_floating_point() and v.dtype != torch.float16:
            v = v.to(torch.float16)
        out[prefix + k] = v.contiguous()
    return out


# ---------------------------------------------------------------- components
def build_unet(params: dict, seed_base: int, fix: bool, t0: float) -> dict:
    import torch
    from sgm.modules.diffusionmodules.openaimodel import UNetModel

    params = dict(params)
    params.update(use_checkpoint=False, spatial_transformer_attn_type="softmax")  # same keys, no xformers
    seed(seed_base, "unet")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)  # build directly in fp16: the base U-Net is 10.3 GB in fp32
    try:
        unet = UNetModel(**params)
    finally:
        torch.set_default_dtype(old)
    unet.eval()
    n = 0
    if fix:
        with torch.no_grad():
            for _, p in unet.named_parameters():
                if p.dim() >= 2 and not torch.any(p):
                    p.normal_(0.0, 0.02)
                    n += 1
    nparams = sum(p.numel() for p in unet.parameters())
    log(f"U-Net {nparams / 1e9:.3f}G params, {len(unet.input_blocks)}/1/{len(unet.output_blocks)} blocks, "
        f"{n} zero-initialised weights re-randomised", t0)
    return fp16_state_dict(unet, "model.diffusion_model.")


def fix_layer_norm(ln) -> None:
    import torch

    with torch.no_grad():
        ln.weight.normal_(1.0, 0.1)
        ln.bias.normal_(0.0, 0.5)
        ln.bias.add_(0.1 - ln.bias.mean())


def clip_l_config(repo: str | None):
    import transformers

    if repo is None:
        return transformers.CLIPTextConfig(**CLIP_L_CFG)
    return transformers.CLIPTextConfig.from_pretrained(repo)  # offline HF cache; raises when missing


def build_clip_l(cfg, prefix: str, seed_base: int, fix: bool, t0: float) -> dict:
    import transformers

    seed(seed_base, "clip_l")
    model = transformers.CLIPTextModel(cfg).eval()
    if fix:
        fix_layer_norm(model.text_model.final_layer_norm)
    log(f"CLIP-L text model: width {cfg.hidden_size}, {cfg.num_hidden_layers} layers, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params", t0)
    return fp16_state_dict(model, prefix + "transformer.")


def build_openclip_text(model_cfg: dict, seed_base: int, fix: bool):
    """open_clip's text tower with the key names of a CLIP model whose `visual` was deleted (as sgm's
    FrozenOpenCLIPEmbedder2 does): the TextTransformer's keys plus `logit_scale`."""
    import torch
    from open_clip.model import _build_text_tower

    seed(seed_base, "clip_g")
    text = _build_text_tower(model_cfg["embed_dim"], model_cfg["text_cfg"], quick_gelu=False, cast_dtype=None).eval()
    if fix:
        fix_layer_norm(text.ln_final)
    text.register_parameter("logit_scale", torch.nn.Parameter(torch.ones([]) * math.log(1 / 0.07)))
    return text


def openclip_sd(text, prefix: str, t0: float) -> dict:
    tr = text.transformer
    log(f"OpenCLIP text tower: width {tr.width}, {tr.layers} layers, pooled {text.text_projection.shape[1]}, "
        f"{sum(p.numel() for p in text.parameters()) / 1e6:.1f}M params", t0)
    return fp16_state_dict(text, prefix + "model.")


def build_vae(first_stage_params: dict, seed_base: int, t0: float) -> dict:
    import torch
    from sgm.modules.diffusionmodules.model import Decoder, Encoder

    dd = dict(first_stage_params["ddconfig"])
    dd["attn_type"] = "vanilla"  # same keys as vanilla-xformers
    embed_dim = first_stage_params["embed_dim"]
    seed(seed_base, "vae")
    vae = torch.nn.Module()  # the key layout of sgm's AutoencoderKL
    vae.encoder = Encoder(**dd)
    vae.decoder = Decoder(**dd)
    vae.quant_conv = torch.nn.Conv2d(2 * dd["z_channels"], 2 * embed_dim, 1)
    vae.post_quant_conv = torch.nn.Conv2d(embed_dim, dd["z_channels"], 1)
    nparams = sum(p.numel() for p in vae.parameters())
    log(f"VAE ch {dd['ch']} ch_mult {list(dd['ch_mult'])}: {nparams / 1e6:.1f}M params", t0)
    return fp16_state_dict(vae, "first_stage_model.")


# ---------------------------------------------------------------- output
def save_safetensors(path: str, tensors: dict, metadata: dict) -> None:
    """safetensors format, written one tensor at a time (safetensors.torch.save_file first copies every tensor
    into one bytes object, which doubles the peak memory). Keys sorted; data in key order."""
    import torch

    header = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    offset = 0
    names = sorted(tensors)
    for name in names:
        t = tensors[name]
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": ST_DTYPES[str(t.dtype).removeprefix("torch.")], "shape": list(t.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in names:
            t = tensors[name].contiguous().reshape(-1)
            f.write(t.view(torch.uint8).numpy().data if t.numel() else b"")
    os.replace(tmp, path)


def verify(path: str, tensors: dict) -> None:
    import torch
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        keys = set(f.keys())
        assert keys == set(tensors), "key mismatch after writing"
        for name in sorted(tensors)[:: max(1, len(tensors) // 25)]:
            assert torch.equal(f.get_tensor(name), tensors[name]), name


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def summarise(path: str, tensors: dict, t0: float) -> None:
    groups: dict[str, list[int]] = {}
    for k, v in tensors.items():
        parts = k.split(".")
        depth = {"conditioner": 3, "model": 2}.get(parts[0], 1)
        g = ".".join(parts[:depth])
        n = groups.setdefault(g, [0, 0])
        n[0] += 1
        n[1] += v.numel()
    size = os.path.getsize(path) / 2**20
    log(f"wrote {path}: {len(tensors)} tensors, {size:.1f} MiB, sha256 {sha256(path)[:10]}", t0)
    for g, (n, values) in sorted(groups.items()):
        print(f"    {g}.*: {n} tensors, {values / 1e6:.2f}M values")


# ---------------------------------------------------------------- targets
def write_micro_openclip_repo(hf_home: str, text, seed_base: int, t0: float) -> None:
    """A fake hub repo that open_clip.create_model('hf-hub:webui-lab/micro-openclip') reads offline: the config
    and a full CLIP state dict (a 1-layer visual tower is required by open_clip's strict load)."""
    import torch
    from open_clip.model import CLIP

    seed(seed_base, "clip_g")
    clip = CLIP(**MICRO_OPENCLIP_CFG).eval()
    sd = {k: v for k, v in clip.state_dict().items() if k.startswith("visual.")}
    sd.update({k: v.detach().clone() for k, v in text.state_dict().items()})  # the same text weights as the ckpt
    missing = set(clip.state_dict()) ^ set(sd)
    assert not missing, missing
    repo = os.path.join(hf_home, "hub", "models--" + MICRO_OPENCLIP_REPO.replace("/", "--"))
    snap = os.path.join(repo, "snapshots", FAKE_REVISION)
    os.makedirs(snap, exist_ok=True)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(FAKE_REVISION)
    cfg = {"model_cfg": MICRO_OPENCLIP_CFG,
           "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}}
    with open(os.path.join(snap, "open_clip_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    # legacy (non-zip) format: A1111's safe unpickler (modules/safe.py) rejects the zip entry `.format_version`
    # that torch >= 2.x writes, and then falls back to a download
    # (legacy files name storages by address, so the bytes vary; an existing file with equal tensors is kept)
    sd = {k: v.detach().float().contiguous().clone() for k, v in sd.items()}
    path = os.path.join(snap, "open_clip_pytorch_model.bin")
    if os.path.exists(path):
        old = torch.load(path, map_location="cpu")
        if old.keys() == sd.keys() and all(torch.equal(old[k], v) for k, v in sd.items()):
            log(f"fake hub repo {snap}: same weights, left as is", t0)
            return
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    log(f"wrote fake hub repo {snap}", t0)


def write_vae_approx(folder: str, seed_base: int) -> None:
    """A random `vaeapprox-sdxl.pt` for A1111: with its default settings (live previews on, "Approx NN") every SDXL
    txt2img first loads models/VAE-approx/vaeapprox-sdxl.pt, which is not in the webui's git tree, and offline the
    download fails with HTTP 500 `URLError`. Layout of modules/sd_vae_approx.VAEApprox (latent_channels 4)."""
    import torch

    path = os.path.join(folder, "vaeapprox-sdxl.pt")
    if os.path.exists(path):
        print(f"    {path} exists: left as is")
        return
    torch.manual_seed(seed_base * 16 + 4)
    chans = [4, 8, 16, 32, 64, 32, 16, 8, 3]
    kernels = [7, 5, 3, 3, 3, 3, 3, 3]
    sd = {}
    for i, k in enumerate(kernels):
        conv = torch.nn.Conv2d(chans[i], chans[i + 1], (k, k))
        sd[f"conv{i + 1}.weight"] = conv.weight.detach().clone()
        sd[f"conv{i + 1}.bias"] = conv.bias.detach().clone()
    os.makedirs(folder, exist_ok=True)
    torch.save(sd, path, _use_new_zipfile_serialization=False)  # legacy format: see write_micro_openclip_repo
    print(f"    wrote {path} (random weights; only live previews use it)")


def micro_config(base_cfg, small_text: bool, clip_l_width: int):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(OmegaConf.to_container(base_cfg))
    p = cfg.model.params
    n = p.network_config.params
    n.model_channels = 32
    n.channel_mult = [1, 2, 4]
    n.num_res_blocks = 2
    n.attention_resolutions = [4, 2]
    n.transformer_depth = [0, 1, 1]
    n.transformer_depth_middle = 1
    n.num_head_channels = 32
    dd = p.first_stage_config.params.ddconfig
    dd.ch = 32
    dd.ch_mult = [1, 2, 4, 4]
    dd.num_res_blocks = 1
    if small_text:
        emb = p.conditioner_config.params.emb_models
        emb[0].params.version = MICRO_CLIP_L_REPO
        emb[0].params.layer_idx = 1  # penultimate of 2 layers, as 11 is of CLIP-L's 12
        emb[1].params.arch = "hf-hub:" + MICRO_OPENCLIP_REPO
        emb[1].params.version = None
        n.context_dim = clip_l_width + MICRO_OPENCLIP_CFG["text_cfg"]["width"]
        n.adm_in_channels = MICRO_OPENCLIP_CFG["embed_dim"] + 3 * 512
    return cfg


def bigg_cfg() -> dict:
    import open_clip

    cfg = open_clip.get_model_config("ViT-bigG-14")  # bundled json, no download
    assert cfg is not None, "open_clip has no ViT-bigG-14 config"
    return cfg


def build_target(name: str, a, t0: float) -> None:
    from omegaconf import OmegaConf

    inference = os.path.join(a.webui, "repositories", "generative-models", "configs", "inference")
    fix = not a.keep_zero_init
    yaml_name = "sd_xl_refiner.yaml" if name == "refiner" else "sd_xl_base.yaml"
    cfg = OmegaConf.load(os.path.join(inference, yaml_name))
    out_base = os.path.join(a.out, {"base": "sdxl-base", "refiner": "sdxl-refiner", "micro": "micro-sdxl"}[name])
    small_text = name == "micro" and a.micro_text == "small"
    if name == "micro":
        clip_l_width = 768
        if small_text:
            try:
                clip_l_width = clip_l_config(MICRO_CLIP_L_REPO).hidden_size
            except OSError:
                sys.exit(f"--micro-text small needs the kit's fake hub repo {MICRO_CLIP_L_REPO} under {a.hf_home} "
                         "(make_tiny_configs.py writes it); pass --hf-home, or use --micro-text full")
        cfg = micro_config(cfg, small_text, clip_l_width)
    p = OmegaConf.to_container(cfg.model.params, resolve=True)
    log(f"--- {name}: {yaml_name}{' (micro sizes)' if name == 'micro' else ''} -> {out_base}.safetensors", t0)

    tensors: dict = {}
    tensors.update(build_unet(p["network_config"]["params"], a.seed, fix, t0))
    if name == "refiner":
        tensors.update(openclip_sd(build_openclip_text(bigg_cfg(), a.seed, fix), "conditioner.embedders.0.", t0))
    elif small_text:
        tensors.update(build_clip_l(clip_l_config(MICRO_CLIP_L_REPO), "conditioner.embedders.0.", a.seed, fix, t0))
        text = build_openclip_text(MICRO_OPENCLIP_CFG, a.seed, fix)
        write_micro_openclip_repo(a.hf_home, text, a.seed, t0)
        tensors.update(openclip_sd(text, "conditioner.embedders.1.", t0))
    else:
        try:
            clip_cfg = clip_l_config("openai/clip-vit-large-patch14")
        except Exception as e:  # any lookup failure: use the published numbers
            print(f"    (no cached CLIP-L config: {type(e).__name__}; using the built-in ViT-L/14 text config)")
            clip_cfg = clip_l_config(None)
        tensors.update(build_clip_l(clip_cfg, "conditioner.embedders.0.", a.seed, fix, t0))
        tensors.update(openclip_sd(build_openclip_text(bigg_cfg(), a.seed, fix), "conditioner.embedders.1.", t0))
    tensors.update(build_vae(p["first_stage_config"]["params"], a.seed, t0))

    os.makedirs(a.out, exist_ok=True)
    meta = {"note": "random weights, for testing only", "config": f"{os.path.basename(out_base)}.yaml"
            if name == "micro" else yaml_name, "seed": a.seed, "weight_fixes": fix,
            "made_by": "sd-webui-deepcache tests/e2e/make_sdxl_checkpoints.py"}
    if name == "micro":
        with open(out_base + ".yaml", "w") as f:
            f.write("# micro SDXL for quick behaviour runs; written by tests/e2e/make_sdxl_checkpoints.py\n")
            f.write(OmegaConf.to_yaml(cfg))
    save_safetensors(out_base + ".safetensors", tensors, meta)
    verify(out_base + ".safetensors", tensors)
    summarise(out_base + ".safetensors", tensors, t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--webui", required=True, help="A1111 folder (uses repositories/generative-models)")
    ap.add_argument("--out", required=True, help="output folder, e.g. <webui>/models/Stable-diffusion")
    ap.add_argument("--only", default="base,refiner,micro", help="comma-separated subset of base,refiner,micro")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--hf-home", default=None, help="HF cache root (default: $HF_HOME, else <webui>/../hf-home)")
    ap.add_argument("--micro-text", choices=["small", "full"], default="small")
    ap.add_argument("--keep-zero-init", action="store_true", help="skip the two weight fixes")
    ap.add_argument("--vae-approx-dir", default=None,
                    help="also write a random vaeapprox-sdxl.pt there when missing (<webui>/models/VAE-approx)")
    a = ap.parse_args()
    a.webui = os.path.abspath(a.webui)
    a.out = os.path.abspath(a.out)
    a.hf_home = os.path.abspath(a.hf_home or os.environ.get("HF_HOME") or os.path.join(a.webui, "..", "hf-home"))
    targets = [t.strip() for t in a.only.split(",") if t.strip()]
    unknown = set(targets) - {"base", "refiner", "micro"}
    if unknown:
        ap.error(f"unknown targets: {sorted(unknown)}")

    sgm_path = os.path.join(a.webui, "repositories", "generative-models")
    if not os.path.isdir(os.path.join(sgm_path, "sgm")):
        sys.exit(f"no sgm package under {sgm_path}; pass the A1111 folder with --webui")
    sys.path.insert(0, sgm_path)
    os.environ["HF_HOME"] = a.hf_home  # before transformers / huggingface_hub are imported
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    import torch

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    if a.vae_approx_dir:
        write_vae_approx(os.path.abspath(a.vae_approx_dir), a.seed)
    for name in targets:
        t0 = time.time()
        build_target(name, a, t0)
        log(f"--- {name} done", t0)


if __name__ == "__main__":
    main()

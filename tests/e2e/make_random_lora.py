"""Random kohya-format LoRA for the full-size SD1.5 checkpoint (U-Net attention layers only).

Keys (diffusers naming, as kohya sd-scripts writes them; A1111's built-in Lora maps them with
networks.convert_diffusers_name_to_compvis):
  lora_unet_{down_blocks_{0,1,2}_attentions_{0,1} | mid_block_attentions_0 | up_blocks_{1,2,3}_attentions_{0,1,2}}
    _transformer_blocks_0_{attn1,attn2}_{to_q,to_k,to_v,to_out_0}.{lora_down.weight, lora_up.weight, alpha}
= 16 transformers x 2 attentions x 4 projections = 128 modules, 384 tensors.
Shapes are read from the checkpoint (attn2.to_k/to_v take the 768-wide text context).

Magnitude: rank 4, alpha 4 (scale alpha/rank = 1), lora_down ~ N(0, 0.1), lora_up ~ N(0, 0.1):
delta W = up @ down has std 2 * 0.01 = 0.02, the size of the random base weights of those layers
(std ~ 1/sqrt(3*in) = 0.01-0.03), so <lora:random_lora:1> clearly changes the image.

usage: WEBUI_DIR=<webui folder> <webui venv>/bin/python tests/e2e/make_random_lora.py [out path]
       [--ckpt model.safetensors] [--seed N]
Run by the e2e lab, not by the tests (``tests/e2e/test_webui_lora.py`` uses the file it writes).
"""
import argparse
import os

import torch
from safetensors import safe_open
from safetensors.torch import save_file

WEBUI = os.environ.get("WEBUI_DIR", "webui")


def attention_modules():
    """(kohya diffusers-style prefix, compvis prefix in the checkpoint)"""
    out = []
    for i in range(3):
        for j in range(2):
            out.append((f"lora_unet_down_blocks_{i}_attentions_{j}",
                        f"model.diffusion_model.input_blocks.{1 + 3 * i + j}.1"))
    out.append(("lora_unet_mid_block_attentions_0", "model.diffusion_model.middle_block.1"))
    for i in range(1, 4):
        for j in range(3):
            out.append((f"lora_unet_up_blocks_{i}_attentions_{j}",
                        f"model.diffusion_model.output_blocks.{3 * i + j}.1"))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default=os.path.join(WEBUI, "models/Lora/random_lora.safetensors"))
    ap.add_argument("--ckpt", default=os.path.join(WEBUI, "models/Stable-diffusion/model.safetensors"))
    ap.add_argument("--seed", type=int, default=4321)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--alpha", type=float, default=4.0)
    ap.add_argument("--std", type=float, default=0.1)
    a = ap.parse_args()

    g = torch.Generator().manual_seed(a.seed)
    sd = {}
    with safe_open(a.ckpt, framework="pt") as f:
        keys = set(f.keys())
        for kohya, compvis in attention_modules():
            for attn in ("attn1", "attn2"):
                for proj, cv in (("to_q", "to_q"), ("to_k", "to_k"), ("to_v", "to_v"), ("to_out_0", "to_out.0")):
                    wkey = f"{compvis}.transformer_blocks.0.{attn}.{cv}.weight"
                    assert wkey in keys, wkey
                    out_dim, in_dim = f.get_slice(wkey).get_shape()
                    name = f"{kohya}_transformer_blocks_0_{attn}_{proj}"
                    sd[f"{name}.lora_down.weight"] = (torch.randn(a.rank, in_dim, generator=g) * a.std).half()
                    sd[f"{name}.lora_up.weight"] = (torch.randn(out_dim, a.rank, generator=g) * a.std).half()
                    sd[f"{name}.alpha"] = torch.tensor(a.alpha).half()
    meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(a.rank), "ss_network_alpha": str(a.alpha),
            "ss_base_model_version": "sd_v1", "ss_output_name": "random_lora", "ss_sd_model_name": "model.safetensors"}
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    save_file(sd, a.out, metadata=meta)
    print(f"saved {a.out}: {len(sd)} tensors ({len(sd) // 3} modules), {os.path.getsize(a.out) / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()

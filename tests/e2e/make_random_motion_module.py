"""Random-weight AnimateDiff motion module of the real SD1.5 v2 architecture (mm_sd_v15_v2), or with ``--sdxl`` of
the real SDXL architecture (mm_sdxl_v10_beta: MotionModuleType.AnimateDiffXL, down 3x2 / up 3x3, no mid block).

Built with the extension's own classes (sd-webui-animatediff/motion_module.py: MotionWrapper with
MotionModuleType.AnimateDiffV2 -> down_blocks 4x2, up_blocks 4x3, mid_block 1 temporal modules, max_len 32),
so the state-dict keys and shapes are exactly what the extension's loader expects
(MotionModuleType.get_mm_type: "mid_block" keys + "pe" keys -> AnimateDiffV2).

Weights: every Linear N(0, 0.02) weight, N(0, 0.02) bias; GroupNorm/LayerNorm weight 1 + N(0, 0.02), bias N(0, 0.02).
The real module zero-inits temporal_transformer.proj_out (making it a no-op); here proj_out gets
N(0, 0.02) too, so the temporal attention visibly mixes the frames.  pe (sinusoidal buffer) stays as built.
Saved as an fp16 state dict with torch.save(..., _use_new_zipfile_serialization=False) (.ckpt): the webui's
safe unpickler rejects torch 2.13's zip format (entry '.format_version').

usage: WEBUI_DIR=<webui folder> <webui venv>/bin/python tests/e2e/make_random_motion_module.py [out path] [--seed N]
       ... make_random_motion_module.py <model dir>/mm_sdxl_v10_beta.ckpt --sdxl
       ... make_random_motion_module.py <model dir>/mm_sd_v15_v2_noop.ckpt --zero-proj-out   (identity control)
Run by the e2e lab, not by the tests (``tests/e2e/test_webui_animatediff.py`` uses the file it writes).
"""
import argparse
import os
import sys

WEBUI = os.environ.get("WEBUI_DIR", "webui")
EXT = os.path.join(WEBUI, "extensions/sd-webui-animatediff")
sys.path.insert(0, os.path.join(WEBUI, "repositories/stable-diffusion-stability-ai"))  # ldm (FeedForward)
sys.path.insert(0, EXT)  # motion_module.py

import torch  # noqa: E402
from motion_module import MotionModuleType, MotionWrapper  # noqa: E402
from torch import nn  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default=os.path.join(EXT, "model/mm_sd_v15_v2.ckpt"))
    ap.add_argument("--sdxl", action="store_true", help="the SDXL architecture (AnimateDiffXL) instead of SD1.5 v2")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--std", type=float, default=0.02)
    ap.add_argument("--zero-proj-out", action="store_true",
                    help="keep proj_out at zero like the real untrained init (an identity; control run)")
    a = ap.parse_args()

    kind = MotionModuleType.AnimateDiffXL if a.sdxl else MotionModuleType.AnimateDiffV2
    torch.manual_seed(a.seed)
    mm = MotionWrapper(mm_name=os.path.basename(a.out), mm_hash=None, mm_type=kind)
    n_proj_out = 0
    with torch.no_grad():
        for name, mod in mm.named_modules():
            if isinstance(mod, nn.Linear):
                mod.weight.normal_(0, a.std)
                if mod.bias is not None:
                    mod.bias.normal_(0, a.std)
                if name.endswith("temporal_transformer.proj_out"):
                    n_proj_out += 1
                    if a.zero_proj_out:
                        mod.weight.zero_()
                        mod.bias.zero_()
            elif isinstance(mod, (nn.GroupNorm, nn.LayerNorm)):
                mod.weight.copy_(1 + a.std * torch.randn_like(mod.weight))
                mod.bias.normal_(0, a.std)

    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in mm.state_dict().items()}
    assert MotionModuleType.get_mm_type(sd) == kind, MotionModuleType.get_mm_type(sd)
    # the loader does mm.load_state_dict(sd, strict=True): check it here too
    MotionWrapper(mm_name="x", mm_hash=None, mm_type=kind).load_state_dict(sd, strict=True)
    zero = [k for k, v in sd.items() if v.abs().max() == 0]
    assert all(k.endswith(("proj_out.weight", "proj_out.bias")) for k in zero), zero[:5]
    assert a.zero_proj_out or not zero, zero[:5]

    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    # Legacy (non-zip) serialization: torch >= 2.x zip archives contain '<name>/.format_version' and
    # '.storage_alignment', which A1111 v1.10.1's safe unpickler (modules/safe.py allowed_zip_names_re) rejects
    # ("bad file inside ...: .format_version"; read_state_dict then returns None).
    torch.save(sd, a.out, _use_new_zipfile_serialization=False)
    n = sum(v.numel() for v in sd.values())
    pe = [k for k in sd if k.endswith(".pe")]
    print(f"saved {a.out}: {len(sd)} tensors, {n / 1e6:.1f}M values, {os.path.getsize(a.out) / 2**20:.1f} MiB, "
          f"proj_out {'zeroed' if a.zero_proj_out else 're-randomised'}: {n_proj_out}, pe buffers: {len(pe)} "
          f"shape {tuple(sd[pe[0]].shape)}, mid_block keys: {sum('mid_block' in k for k in sd)}")


if __name__ == "__main__":
    main()

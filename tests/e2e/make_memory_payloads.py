"""Request bodies for ``memory_series.py --payloads``: one per A1111 extension of the stack, as its e2e file sends
it, so one memory series passes through all of them in turn (off, then on, in the same server).

    python tests/e2e/make_memory_payloads.py /tmp/mem      # writes /tmp/mem/<extension>.json
    python tests/e2e/memory_series.py --url http://127.0.0.1:7860 --pid <server pid> --steps 2 --generations 50 \\
        --options '{"token_merging_ratio": 0, "hypertile_enable_unet": false, "hypertile_max_tile_unet": 256}' \\
        --payloads /tmp/mem/*.json

``--options`` saves ToMe and Hypertile off first, so that the ToMe + Hypertile body's ``override_settings`` is put
back after each of its requests (the webui keeps an override of an option never saved). The ADetailer body needs
scikit-image for its photo; the others need the extensions' defaults of the lab (AnimateDiff's
``mm_sd_v15_v2.ckpt``, the LoRA ``random_lora``). Not a test.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image
from webui_client import png_base64

BASE = {"prompt": "a red cat on a blue sofa", "negative_prompt": "blurry", "cfg_scale": 7, "sampler_name": "Euler"}


def bodies() -> dict[str, dict]:
    from skimage.data import astronaut

    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    photo = Image.fromarray(astronaut()).resize((256, 256))
    animation = {"model": "mm_sd_v15_v2.ckpt", "enable": True, "video_length": 16, "fps": 8, "batch_size": 8,
                 "overlap": 4, "closed_loop": "R-P", "format": ["GIF", "Frame"]}
    regions = [True, False, "Matrix", "Columns", "Mask", "Prompt", "1,1", "0.2", False, False, False, "Latent"]
    return {
        "animatediff_windows": {"width": 64, "height": 64, "prompt": "a cat walking",
                                "alwayson_scripts": {"AnimateDiff": {"args": [animation]}}},
        "tiled_diffusion": {"width": 256, "height": 256, "alwayson_scripts": {"Tiled Diffusion": {
            "args": [True, "MultiDiffusion", False, True, 1024, 1024, 24, 24, 8, 1]}}},
        "regional_prompter": {"width": 128, "height": 128, "prompt": "a red cat BREAK a blue dog",
                              "alwayson_scripts": {"Regional Prompter": {"args": regions}}},
        "lora": {"width": 128, "height": 128, "prompt": "a red cat on a blue sofa <lora:random_lora:1>"},
        "ultimate_upscale": {"width": 128, "height": 128, "prompt": "a red cat", "denoising_strength": 1.0,
                             "init_images": [png_base64(Image.fromarray(noise))], "script_name": "ultimate sd upscale",
                             "script_args": [None, 128, 128, 8, 0, 64, 0.35, 16, 1, False, 0, False, 4, 0, 2, 2048,
                                             2048, 2.0]},
        "adetailer": {"width": 256, "height": 256, "prompt": "a red cat", "denoising_strength": 0.5, "n_iter": 2,
                      "init_images": [png_base64(photo)], "alwayson_scripts": {"ADetailer": {
                          "args": [True, True, {"ad_model": "mediapipe_face_short"}]}}},
        "tome_hypertile": {"width": 256, "height": 256, "override_settings": {
            "token_merging_ratio": 0.5, "hypertile_enable_unet": True, "hypertile_max_tile_unet": 64}},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    out = ap.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    for name, body in bodies().items():
        (out / f"{name}.json").write_text(json.dumps(BASE | body))
        print(out / f"{name}.json")


if __name__ == "__main__":
    main()

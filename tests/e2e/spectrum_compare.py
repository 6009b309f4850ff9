"""DeepCache beside Forge Neo's built-in Spectrum cache, side by side: speed and drift from the uncached image.

    WEBUI_URL=http://127.0.0.1:7870 python tests/e2e/spectrum_compare.py --size 128 --steps 20 30 --rounds 2

For each step count, one interleaved series of: off, DeepCache ``[true, 3, 0]``, Spectrum at its defaults, and
Spectrum at faster settings (about DeepCache's speed). Each row: the median whole-request time, the speed-up
over off, and the mean absolute difference of the decoded image from the uncached one (0-255 levels). The API
returns decoded images only, so the final latents cannot be compared here. With random weights the drift says
how far each cache moves the result, not how good either image looks."""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import time
import urllib.request

import numpy as np

SPECTRUM = "spectrum integrated"
SPECTRUM_DEFAULTS = [True, 0.25, 6, 0.5, 2, 0.0, 6, 0.9]
SPECTRUM_FAST = [True, 0.25, 6, 0.5, 5, 0.0, 3, 0.9]  # cache window 5, warm-up 3 steps
VARIANTS = {"off": {"DeepCache": {"args": [False]}},
            "DeepCache [true, 3, 0]": {"DeepCache": {"args": [True, 3, 0]}},
            "Spectrum, defaults": {SPECTRUM: {"args": SPECTRUM_DEFAULTS}},
            "Spectrum, window 5, warm-up 3": {SPECTRUM: {"args": SPECTRUM_FAST}}}


def generate(url: str, size: int, steps: int, scripts: dict) -> tuple[float, np.ndarray]:
    from PIL import Image

    payload = {"prompt": "a red cat on a blue sofa", "width": size, "height": size, "steps": steps,
               "sampler_name": "Euler", "cfg_scale": 7, "seed": 7, "send_images": True, "save_images": False,
               "alwayson_scripts": scripts}
    request = urllib.request.Request(url + "/sdapi/v1/txt2img", json.dumps(payload).encode(),
                                     {"Content-Type": "application/json"})
    start = time.perf_counter()
    body = json.loads(urllib.request.urlopen(request, timeout=3600).read())
    elapsed = time.perf_counter() - start
    image = Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).convert("RGB")
    return elapsed, np.asarray(image, dtype=np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, nargs="+", default=[20, 30])
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    url = os.environ.get("WEBUI_URL", "http://127.0.0.1:7870")
    generate(url, 64, 4, VARIANTS["off"])  # warm-up
    for steps in a.steps:
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        images: dict[str, np.ndarray] = {}
        for _ in range(a.rounds):
            for name, scripts in VARIANTS.items():
                seconds, images[name] = generate(url, a.size, steps, scripts)
                times[name].append(seconds)
        off = statistics.median(times["off"])
        for name in VARIANTS:
            median = statistics.median(times[name])
            drift = float(np.abs(images[name] - images["off"]).mean())
            print(f"| {steps} | {name} | {median:.1f} s | {off / median:.2f}x | {drift:.2f} |", flush=True)


if __name__ == "__main__":
    main()

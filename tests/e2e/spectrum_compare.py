"""DeepCache beside Forge Neo's built-in Spectrum cache, side by side: speed and drift from the uncached image.

    WEBUI_URL=http://127.0.0.1:7870 python tests/e2e/spectrum_compare.py --size 128 --steps 20 30 --rounds 2 \
        [--latents /tmp/latents]

For each step count, one interleaved series of: off, DeepCache ``[true, 3, 0]``, Spectrum at its defaults, and
Spectrum at faster settings (about DeepCache's speed). Each row: the median whole-request time, the speed-up
over off, and the mean absolute difference of the decoded image from the uncached one (0-255 levels). The API
returns decoded images only; with ``--latents`` (the folder the webui's ``latent_probe.py`` writes to, see there)
each row also gives the mean absolute difference of the final latent. With random weights the drift says how far
each cache moves the result, not how good either image looks."""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image
from webui_client import Webui

SPECTRUM = "spectrum integrated"
SPECTRUM_DEFAULTS = [True, 0.25, 6, 0.5, 2, 0.0, 6, 0.9]
SPECTRUM_FAST = [True, 0.25, 6, 0.5, 5, 0.0, 3, 0.9]  # cache window 5, warm-up 3 steps
VARIANTS = {"off": ([False], {}),  # DeepCache args, other scripts
            "DeepCache [true, 3, 0]": ([True, 3, 0], {}),
            "Spectrum, defaults": ([False], {SPECTRUM: {"args": SPECTRUM_DEFAULTS}}),
            "Spectrum, window 5, warm-up 3": ([False], {SPECTRUM: {"args": SPECTRUM_FAST}})}


def generate(webui: Webui, size: int, steps: int, variant: tuple) -> tuple[float, np.ndarray]:
    deepcache, scripts = variant
    start = time.perf_counter()
    result = webui.txt2img(deepcache, width=size, height=size, steps=steps, seed=7, alwayson_scripts=dict(scripts))
    elapsed = time.perf_counter() - start
    return elapsed, np.asarray(Image.frombytes("RGB", (size, size), result.pixels()), dtype=np.float64)


def newest_latent(folder: Path | None, seen: set[Path]) -> np.ndarray | None:
    """The latent the probe wrote for the last request (exactly one new file, or the comparison is wrong)."""
    if folder is None:
        return None
    new = sorted(set(folder.glob("*.npy")) - seen)
    if len(new) != 1:
        raise RuntimeError(f"expected one new latent in {folder}, found {len(new)}: is latent_probe.py loaded?")
    seen.add(new[0])
    return np.load(new[0]).astype(np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, nargs="+", default=[20, 30])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--latents", type=Path, help="the folder the webui's latent_probe.py writes to")
    a = ap.parse_args()
    webui = Webui(os.environ.get("WEBUI_URL", "http://127.0.0.1:7870"))
    seen = set(a.latents.glob("*.npy")) if a.latents else set()
    generate(webui, 64, 4, VARIANTS["off"])  # warm-up
    newest_latent(a.latents, seen)
    for steps in a.steps:
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        images: dict[str, np.ndarray] = {}
        latents: dict[str, np.ndarray | None] = {}
        for _ in range(a.rounds):
            for name, variant in VARIANTS.items():
                seconds, images[name] = generate(webui, a.size, steps, variant)
                latents[name] = newest_latent(a.latents, seen)
                times[name].append(seconds)
        off = statistics.median(times["off"])
        for name in VARIANTS:
            median = statistics.median(times[name])
            drift = float(np.abs(images[name] - images["off"]).mean())
            row = f"| {steps} | {name} | {median:.1f} s | {off / median:.2f}x | {drift:.2f} |"
            if a.latents:
                row += f" {float(np.abs(latents[name] - latents['off']).mean()):.4f} |"
            print(row, flush=True)


if __name__ == "__main__":
    main()

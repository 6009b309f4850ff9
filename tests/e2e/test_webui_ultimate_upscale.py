"""This extension beside Ultimate SD Upscale (Coyote-A/ultimate-upscale-for-automatic1111), an img2img script
that runs one whole generation per tile. Skipped when it is not installed."""
from __future__ import annotations

import pytest
from webui_client import CACHED, ServerLog, png_base64, require_script

STEPS, DENOISE = 8, 0.5  # img2img runs 4 steps


@pytest.fixture(scope="module")
def upscale(webui) -> None:
    require_script(webui, "ultimate sd upscale", img2img=True)


@pytest.fixture(scope="module")
def image() -> str:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    return png_base64(Image.fromarray(pixels))


def upscaled(webui, image: str, deepcache: list | None):
    """128 -> 256 (Lanczos, scale from image 2), tiles of 128: a 2x2 grid, linear redraw, no seams fix."""
    args = [None, 128, 128, 8, 0, 64, 0.35, 16, 1, False, 0, False, 4, 0, 2, 2048, 2048, 2.0]
    return webui.img2img(image, deepcache, width=128, height=128, steps=STEPS, denoising_strength=DENOISE,
                         script_name="ultimate sd upscale", script_args=args)


def test_every_tile_is_its_own_cached_generation(webui, upscale, image):
    """Four tiles, four generations: each caches as a plain img2img of that many steps does, none starts from
    another tile's cache (a carried slot would serve the next tile's first steps)."""
    plain = webui.img2img(image, [True, 3, 0], width=128, height=128, steps=STEPS, denoising_strength=DENOISE)
    log = ServerLog()
    result = upscaled(webui, image, [True, 3, 0])
    expected = CACHED.search(plain.infotext).groups()
    assert CACHED.search(result.infotext).groups() == expected and "DeepCache error" not in result.infotext
    if log:
        lines = log.stats_lines()
        assert len(lines) == 4, lines
        assert all(line[:2] == tuple(map(int, expected)) for line in lines), lines


def test_ultimate_upscale_with_deepcache_off_is_itself_alone(webui, upscale, image):
    assert upscaled(webui, image, [False]).pixels() == upscaled(webui, image, None).pixels()

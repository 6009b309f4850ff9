"""DeepCache with ControlNet in a real webui (sd-webui-controlnet on A1111, the built-in one on Forge), through
one API payload for both extensions.

Set ``WEBUI_CONTROLNET_MODEL`` to a ControlNet model name as ``/controlnet/model_list`` lists it, and
``WEBUI_CONTROLNET_MODULE`` to the "no preprocessor" name where it is not "none" (Forge: "None"); without a
model, or without a ControlNet extension, these tests are skipped. With
``WEBUI_LOG`` set, the tests also check that the ControlNet was made to follow the cache.
"""
from __future__ import annotations

import os
import re

import pytest
from webui_client import CACHED, SIZE, STEPS, ServerLog, png_base64

MODEL = os.environ.get("WEBUI_CONTROLNET_MODEL")
MODULE = os.environ.get("WEBUI_CONTROLNET_MODULE", "none")  # the "no preprocessor" name (Forge: "None")
ON = [True, 3, 0]


def pattern(seed: int) -> str:
    """A high-contrast control image (a canny-like edge map needs no annotator)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (SIZE, SIZE), "black")
    draw = ImageDraw.Draw(image)
    r = SIZE // (3 + seed)
    draw.ellipse([SIZE // 2 - r, SIZE // 2 - r, SIZE // 2 + r, SIZE // 2 + r], outline="white", width=3)
    draw.rectangle([SIZE // 8, SIZE // 8, SIZE // 8 + r, SIZE // 8 + r // 2 + seed], outline="white", width=2)
    return png_base64(image)


def unit(seed: int = 0, **changes) -> dict:
    return {"enabled": True, "module": MODULE, "model": MODEL, "image": pattern(seed), "weight": 1.0,
            "guidance_start": 0.0, "guidance_end": 1.0, "pixel_perfect": False, "resize_mode": "Crop and Resize",
            "control_mode": "Balanced", **changes}


@pytest.fixture(scope="module")
def controlnet(webui):
    if not MODEL:
        pytest.skip("WEBUI_CONTROLNET_MODEL is not set")
    if "controlnet" not in [name.lower() for name in webui.request("/sdapi/v1/scripts").body["txt2img"]]:
        pytest.skip("no ControlNet extension in this webui")


def generate(webui, units: list[dict] | None, deepcache: list | None = None, **extra):
    scripts = {"ControlNet": {"args": units}} if units else {}
    if deepcache is not None:
        scripts["DeepCache"] = {"args": deepcache}
    return webui.txt2img(alwayson_scripts=scripts, **extra)


def test_controlnet_alone_is_untouched_by_deepcache_installed_but_off(webui, controlnet):
    alone = generate(webui, [unit()])
    assert "ControlNet" in alone.infotext and not CACHED.search(alone.infotext)
    assert alone.pixels() != generate(webui, None).pixels()  # the control is applied at all
    assert generate(webui, [unit()], [True, 1, 0]).pixels() == alone.pixels()  # hooks on, nothing cached
    generate(webui, [unit()], ON)
    assert generate(webui, [unit()], [False]).pixels() == alone.pixels()  # nothing left behind


def test_controlnet_with_deepcache_caches_follows_the_control_and_is_deterministic(webui, controlnet):
    log = ServerLog()
    cached = generate(webui, [unit()], ON)
    match = CACHED.search(cached.infotext)
    assert match and int(match.group(1)) == STEPS - len(range(0, STEPS, 3))
    assert "ControlNet" in cached.infotext
    assert cached.pixels() != generate(webui, None, ON).pixels()  # the control changes the image
    assert cached.pixels() == generate(webui, [unit()], ON).pixels()
    if log:
        assert "ControlNet(s) follow the cache" in log.text()


def test_two_units(webui, controlnet):
    one = generate(webui, [unit(0)], ON)
    two = generate(webui, [unit(0), unit(1, weight=0.7)], ON)
    assert CACHED.search(two.infotext) and two.pixels() != one.pixels()


def test_controlnet_with_hires_fix(webui, controlnet):
    extra = {"enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent", "denoising_strength": 0.5,
             "hr_second_pass_steps": STEPS // 2}
    if webui.is_forge:
        extra["hr_additional_modules"] = []
    result = generate(webui, [unit()], ON, **extra)
    assert re.search(r"hires \d+/\d+ steps cached", result.infotext), result.infotext


@pytest.mark.parametrize("changes", [{"guidance_end": 0.5}, {"guidance_start": 0.4},
                                     {"guidance_start": 0.2, "guidance_end": 0.7}])
def test_a_control_that_starts_late_or_ends_early(webui, controlnet, changes):
    result = generate(webui, [unit(**changes)], ON)
    assert CACHED.search(result.infotext)
    assert result.pixels() != generate(webui, [unit()], ON).pixels()


@pytest.mark.parametrize("changes", [{"pixel_perfect": True}, {"resize_mode": "Just Resize"},
                                     {"resize_mode": "Resize and Fill"}])
def test_pixel_perfect_and_resize_modes(webui, controlnet, changes):
    assert CACHED.search(generate(webui, [unit(**changes)], ON).infotext)

"""This extension beside ADetailer (Bing-su/adetailer), which runs a whole inpainting generation inside the outer
one, from ``postprocess_image``, for every image. Skipped when ADetailer is not installed.

ADetailer detects offline with mediapipe's face detector (shipped in its wheel). A random-weight model draws
noise, where nothing is detected; with ADetailer's "skip img2img" it detects on the img2img input instead, a real
photo (``skimage.data.astronaut()``), and inpaints the face. ``WEBUI_E2E_ADETAILER_SIZE`` sizes that photo
(default 256: mediapipe needs a face of some size)."""
from __future__ import annotations

import os
import re

import pytest
from webui_client import CACHED, STEPS, ServerLog, png_base64

ADETAILER = "ADetailer"
PHOTO_SIZE = int(os.environ.get("WEBUI_E2E_ADETAILER_SIZE", "256"))
FACE = {"ad_model": "mediapipe_face_short"}
SCRIPT_NAMES_DEFAULT = "dynamic_prompting,dynamic_thresholding,lora_block_weight,negpip,wildcard_recursive,wildcards"
ENTRY = re.compile(r"DeepCache(?: [a-z ]+)?: (?:\"[^\"]*\"|[^,]*)")


def deepcache_entries(infotext: str) -> list[str]:
    return ENTRY.findall(infotext)


@pytest.fixture(scope="module")
def adetailer(webui) -> None:
    scripts = webui.request("/sdapi/v1/scripts").body
    if "adetailer" not in [name.lower() for name in scripts["txt2img"]]:
        pytest.skip("ADetailer is not installed")


@pytest.fixture(scope="module")
def photo() -> str:
    skimage = pytest.importorskip("skimage")
    from PIL import Image

    return png_base64(Image.fromarray(skimage.data.astronaut()).resize((PHOTO_SIZE, PHOTO_SIZE)))


def with_adetailer(args: list, skip_img2img: bool = False, **detector: object) -> dict:
    return {ADETAILER: {"args": [True, skip_img2img, {**FACE, **detector}]}, "DeepCache": {"args": args}}


HIRES_BATCHES = {"n_iter": 2, "enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent", "denoising_strength": 0.5,
                 "hr_second_pass_steps": STEPS}


@pytest.mark.parametrize("prompt", ["[SKIP]", ""], ids=["inpainting skipped", "inpainting"])
def test_adetailer_leaves_the_outer_generations_infotext_and_images_as_they_were(webui, adetailer, prompt):
    """txt2img, batch count 2 and hires fix. mediapipe finds a "face" in the noise of a random model, and
    ADetailer's ``postprocess`` and ``process`` calls on ``copy(p)`` run for every image: DeepCache's entries stay
    those of the run without ADetailer, and where ADetailer skips the inpainting (its "[SKIP]" prompt), so do
    the images."""
    plain = webui.txt2img([True, 3, 0], **HIRES_BATCHES)
    detailed = webui.txt2img(alwayson_scripts=with_adetailer([True, 3, 0], ad_prompt=prompt), **HIRES_BATCHES)
    assert len(plain.info["infotexts"]) == len(detailed.info["infotexts"]) == 2
    for index, (a, b) in enumerate(zip(plain.info["infotexts"], detailed.info["infotexts"])):
        assert re.search(r"DeepCache: \"?\d+/\d+ steps cached \+ hires \d+/\d+ steps cached", b), b
        assert deepcache_entries(a) == deepcache_entries(b)
        assert "ADetailer" in b
        if prompt:
            assert plain.pixels(index) == detailed.pixels(index)


def test_adetailers_inpainting_pass_keeps_the_outer_infotext_true(webui, adetailer, photo):
    """img2img, batch count 2, ADetailer's "skip img2img": it finds the photo's face and inpaints it with a
    nested generation (DeepCache not in its script list: uncached). Each image's infotext still says what the
    outer generation cached, as it does with the same request where ADetailer finds no face."""
    result = webui.img2img(photo, n_iter=2, alwayson_scripts=with_adetailer([True, 3, 0], skip_img2img=True),
                           width=PHOTO_SIZE, height=PHOTO_SIZE)
    for infotext in result.info["infotexts"]:
        assert re.search(r"DeepCache: \"?\d+/\d+ steps cached", infotext), infotext
        assert "DeepCache error" not in infotext
    assert result.info["infotexts"][0].count("ADetailer model: mediapipe_face_short") == 1


def test_with_deepcache_in_adetailers_script_list_the_inner_pass_is_cached_and_the_outer_infotext_kept(
        webui, adetailer, photo):
    """ADetailer's own choice decides whether its passes are cached: "Script names to apply to ADetailer"."""
    # the API lists only options registered before it was built, which ADetailer's may not be
    log = ServerLog()
    before = webui.request("/sdapi/v1/options").body.get("ad_script_names", SCRIPT_NAMES_DEFAULT)
    if webui.request("/sdapi/v1/options", {"ad_script_names": f"{before},deepcache"}).status != 200:
        pytest.skip("this ADetailer has no 'ad_script_names' option")
    try:
        result = webui.img2img(photo, n_iter=2, alwayson_scripts=with_adetailer([True, 3, 0], skip_img2img=True),
                               width=PHOTO_SIZE, height=PHOTO_SIZE)
    finally:
        webui.request("/sdapi/v1/options", {"ad_script_names": before})
    for infotext in result.info["infotexts"]:
        assert re.search(r"DeepCache: \"?\d+/\d+ steps cached", infotext), infotext
        assert "DeepCache error" not in infotext
    if log:  # each image: the outer generation's stats line and its inpainting pass's own
        lines = log.stats_lines()
        assert len(lines) >= 2 * 2, lines


ADAPTIVE = [{"enabled": True, "schedule": "adaptive", "interval": 4, "threshold": 0.3, "forecast": True}]


def test_an_adaptive_outer_generation_keeps_its_decisions_beside_adetailer(webui, adetailer):
    """The adaptive schedule (with forecast) decides while sampling, from state of its own run: ADetailer's
    ``postprocess`` calls on a copy of ``p`` (inpainting skipped) leave the outer generation's infotext and images
    as they are without ADetailer."""
    plain = webui.txt2img(ADAPTIVE, **HIRES_BATCHES)
    detailed = webui.txt2img(alwayson_scripts=with_adetailer(ADAPTIVE, ad_prompt="[SKIP]"), **HIRES_BATCHES)
    for index, (a, b) in enumerate(zip(plain.info["infotexts"], detailed.info["infotexts"])):
        assert "DeepCache schedule: adaptive" in b and "ADetailer" in b
        assert deepcache_entries(a) == deepcache_entries(b)
        assert plain.pixels(index) == detailed.pixels(index)


def test_adetailers_nested_pass_runs_its_own_adaptive_schedule(webui, adetailer, photo):
    """With DeepCache in ADetailer's script list, its inpainting pass (a generation inside the outer one) is
    cached by the adaptive schedule too, with its own decisions; each image's infotext still says what its outer
    generation cached (ADetailer's "skip img2img" runs the outer img2img with one step), not the inner pass's."""
    before = webui.request("/sdapi/v1/options").body.get("ad_script_names", SCRIPT_NAMES_DEFAULT)
    if webui.request("/sdapi/v1/options", {"ad_script_names": f"{before},deepcache"}).status != 200:
        pytest.skip("this ADetailer has no 'ad_script_names' option")
    log = ServerLog()
    try:
        result = webui.img2img(photo, n_iter=2, alwayson_scripts=with_adetailer(ADAPTIVE, skip_img2img=True),
                               width=PHOTO_SIZE, height=PHOTO_SIZE)
    finally:
        webui.request("/sdapi/v1/options", {"ad_script_names": before})
    assert result.info["infotexts"][0].count("ADetailer model: mediapipe_face_short") == 1
    for infotext in result.info["infotexts"]:
        assert "DeepCache error" not in infotext and "DeepCache schedule: adaptive" in infotext, infotext
    if log:  # each image: its outer generation's stats line, then its inpainting pass's own
        lines = log.stats_lines()
        assert len(lines) == 2 * 2, lines
        for infotext, outer, inner in zip(result.info["infotexts"], lines[0::2], lines[1::2]):
            assert tuple(map(int, CACHED.search(infotext).groups())) == outer[:2], (infotext, outer)
            assert inner[1] > 1  # the inpainting pass: ADetailer's steps, cached on its own schedule

"""This extension beside the webui's built-in LoRA networks, which change the U-Net's layers when a prompt names
a LoRA. ``WEBUI_E2E_LORA`` names one in ``models/Lora`` (default ``random_lora``: the lab builds one of random
weights for the full-size SD1.5 checkpoint); skipped when the webui does not list it."""
from __future__ import annotations

import os

import pytest
from webui_client import CACHED

LORA = os.environ.get("WEBUI_E2E_LORA", "random_lora")
PROMPT = "a red cat on a blue sofa"


@pytest.fixture(scope="module")
def lora(webui) -> str:
    if LORA not in [entry["name"] for entry in webui.request("/sdapi/v1/loras").body]:
        pytest.skip(f"the webui lists no LoRA named '{LORA}'")
    return f"{PROMPT} <lora:{LORA}:1>"


def test_a_lora_acts_on_cached_generations_and_never_leaves_its_features_to_the_next(webui, lora):
    """Without, with, and again without the LoRA, all cached: the LoRA changes the image, and the generation
    after it is the one before it, pixel for pixel (nothing cached with the LoRA's weights is reused)."""
    before = webui.txt2img([True, 3, 0], prompt=PROMPT)
    with_lora = webui.txt2img([True, 3, 0], prompt=lora)
    after = webui.txt2img([True, 3, 0], prompt=PROMPT)
    assert with_lora.pixels() != before.pixels()
    assert after.pixels() == before.pixels()
    assert CACHED.search(with_lora.infotext).groups() == CACHED.search(before.infotext).groups()
    assert "Lora hashes" in with_lora.infotext and "DeepCache error" not in with_lora.infotext


def test_a_lora_with_deepcache_off_is_the_lora_alone(webui, lora):
    assert webui.txt2img([False], prompt=lora).pixels() == webui.txt2img(prompt=lora).pixels()

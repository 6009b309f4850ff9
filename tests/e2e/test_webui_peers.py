"""This extension beside another DeepCache extension (aria1th/sd-webui-deepcache-standalone on A1111,
LoganBooker/sd-deepcache on Forge), installed in the same webui, and beside Forge Classic/Neo's built-in
First Block Cache. Each test is skipped when its peer is not installed."""
from __future__ import annotations

import re

import pytest

CACHED = re.compile(r"DeepCache: \"?\d+/\d+ steps cached")
FBCACHE = "first block cache integrated"


@pytest.fixture(scope="module")
def peer_installed(webui) -> None:
    scripts = webui.request("/sdapi/v1/scripts").body
    if [name.lower() for name in scripts["txt2img"]].count("deepcache") < 2:
        pytest.skip("no other DeepCache extension is installed beside this one")


def test_both_load_and_the_api_key_reaches_this_extension(webui, peer_installed):
    assert CACHED.search(webui.txt2img([True, 3, 0]).infotext)


def test_with_the_peer_on_this_extension_stands_down(webui, peer_installed):
    """aria1th's peer is switched on by a setting; its forward then replaces the U-Net's for the generation."""
    options = webui.request("/sdapi/v1/options").body
    if "deepcache_enable_pass" not in options:
        pytest.skip("the installed peer cannot be switched on through the API (its args share our title)")
    before = options["deepcache_enable_pass"]
    try:
        result = webui.txt2img([True, 3, 0], override_settings={"deepcache_enable_pass": "both passes"})
    finally:  # an override of an option never saved would leak into later generations
        webui.request("/sdapi/v1/options", {"deepcache_enable_pass": before})
    assert "another DeepCache extension ('sd-webui-deepcache-standalone') hooks this U-Net" in result.infotext
    assert not CACHED.search(result.infotext)
    assert CACHED.search(webui.txt2img([True, 3, 0]).infotext)  # peer off again: ours caches


@pytest.fixture(scope="module")
def fbcache_on(webui) -> list:
    """First Block Cache's args switched on, its other arguments at the script's own defaults."""
    info = webui.request("/sdapi/v1/script-info").body
    script = next((s for s in info if s["name"] == FBCACHE and not s["is_img2img"]), None)
    if script is None:
        pytest.skip("the host has no built-in First Block Cache (Forge Classic/Neo's sd_forge_fbcache)")
    return [True] + [a["value"] for a in script["args"][1:]]


def test_with_first_block_cache_on_a_unet_deepcache_does_the_caching(webui, fbcache_on):
    """First Block Cache acts on DiT models only (it names them) and steps aside on a U-Net; DeepCache acts on
    U-Nets only. Both switched on: the image is DeepCache's alone, and DeepCache says it cached."""
    both = webui.txt2img([True, 3, 0], alwayson_scripts={FBCACHE: {"args": fbcache_on}})
    assert CACHED.search(both.infotext) and "DeepCache error" not in both.infotext
    assert both.pixels() == webui.txt2img([True, 3, 0]).pixels()
    assert webui.txt2img(alwayson_scripts={FBCACHE: {"args": fbcache_on}}).pixels() == webui.txt2img().pixels()

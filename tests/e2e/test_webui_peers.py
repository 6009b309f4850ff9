"""This extension beside another DeepCache extension (aria1th/sd-webui-deepcache-standalone on A1111,
LoganBooker/sd-deepcache on Forge), installed in the same webui. Skipped when no peer is installed."""
from __future__ import annotations

import re

import pytest

CACHED = re.compile(r"DeepCache: \"?\d+/\d+ steps cached")


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

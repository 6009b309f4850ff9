"""This extension beside Forge Neo's built-ins that touch the U-Net: Spectrum (a cache that forecasts the U-Net's
output, in Haoming02's Forge Classic/Neo repository; copied into the lab's Neo tree) and Torch Compile Integrated
(compiles the U-Net with torch.compile). Each test is skipped on a host without the script.

``WEBUI_LOG`` (the server's log) lets the compile test check that dynamo never gave up on DeepCache's code."""
from __future__ import annotations

import re

import numpy as np
import pytest
from webui_client import CACHED, ServerLog

SPECTRUM, COMPILE = "spectrum integrated", "torch compile integrated"


def script_defaults(webui, name: str) -> list:
    info = webui.request("/sdapi/v1/script-info").body
    script = next((s for s in info if s["name"] == name and not s["is_img2img"]), None)
    if script is None:
        pytest.skip(f"the host has no '{name}' script")
    return [arg["value"] for arg in script["args"]]


def test_spectrum_and_deepcache_never_both_act(webui):
    """Both on: DeepCache stands down before the first U-Net pass and says so; the image is Spectrum's alone."""
    spectrum = {SPECTRUM: {"args": [True] + script_defaults(webui, SPECTRUM)[1:]}}
    both = webui.txt2img([True, 3, 0], steps=20, alwayson_scripts=dict(spectrum))
    spectrum_alone = webui.txt2img([False], steps=20, alwayson_scripts=dict(spectrum))
    assert "another U-Net cache ('sd_forge_spectrum') is on" in both.infotext, both.infotext
    assert not CACHED.search(both.infotext)
    assert both.pixels() == spectrum_alone.pixels()
    assert spectrum_alone.pixels() != webui.txt2img([False], steps=20).pixels()  # Spectrum does act
    assert CACHED.search(webui.txt2img([True, 3, 0], steps=20).infotext)  # and DeepCache alone caches again


def test_a_compiled_unet_is_cached_without_dynamo_giving_up_on_deepcache(webui):
    """Torch Compile Integrated compiles the U-Net (inductor; its "guard_filter_fn" preset); DeepCache on it gives
    the cached counts and the uncompiled cached image (to compiler rounding), and dynamo never reaches its
    recompile limit in DeepCache's code (it did in the block wrapper before 1.0.0)."""
    script_defaults(webui, COMPILE)
    log = ServerLog()
    uncompiled = webui.txt2img([True, 3, 0])
    try:
        webui.txt2img([False], alwayson_scripts={COMPILE: {"args": ["guard_filter_fn"]}})  # compiles
        compiled = [webui.txt2img([True, 3, 0], alwayson_scripts={COMPILE: {"args": ["Automatic"]}})
                    for _ in range(2)]
    finally:
        webui.txt2img([False], alwayson_scripts={COMPILE: {"args": ["Disable"]}})
    for result in compiled:
        assert CACHED.search(result.infotext).group() == CACHED.search(uncompiled.infotext).group()
        difference = np.abs(np.frombuffer(result.pixels(), np.uint8).astype(int)
                            - np.frombuffer(uncompiled.pixels(), np.uint8))
        assert difference.mean() < 1.0, difference.mean()
    if log:
        text = log.text()
        assert not re.search(r"recompile_limit.*\n.*function: '\w+' \(.*deepcache", text), text[-3000:]

"""This extension beside A1111's built-in U-Net speed-ups: token merging (ToMe, ``tomesd``) and Hypertile. Each
changes the attention layers inside the blocks DeepCache wraps; DeepCache must keep its counts, the other's
effect must stay visible, and DeepCache off must stay off. Skipped on hosts without those options (Forge)."""
from __future__ import annotations

import contextlib

import pytest
from webui_client import CACHED

SIZE = 256  # Hypertile acts only where its tile is smaller than the attention's feature map
SETTINGS = {"tome": {"token_merging_ratio": (0.5, 0.0)},  # option: (value for the test, the webui's default)
            "hypertile": {"hypertile_enable_unet": (True, False), "hypertile_max_tile_unet": (64, 256)}}


@pytest.fixture
def settings(webui):
    """Set options for one test and put back what was there (``override_settings`` leaks unsaved options). The
    API's option list omits options registered after it was built (Hypertile's), so they are put back to the
    webui's default; an option a host lacks changes nothing, and the test says so."""
    @contextlib.contextmanager
    def apply(changes: dict):
        before = webui.request("/sdapi/v1/options").body
        result = webui.request("/sdapi/v1/options", {k: on for k, (on, _) in changes.items()})
        if result.status != 200:  # Forge Neo answers an option it lacks with HTTP 500 (KeyError)
            pytest.skip(f"the host has no {', '.join(changes)} option: {result.body.get('message')}")
        try:
            yield
        finally:
            webui.request("/sdapi/v1/options", {k: before.get(k, default) for k, (_, default) in changes.items()})
    return apply


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_builtin_speedup_beside_deepcache(webui, settings, name):
    """ToMe merges tokens only in the full-resolution attention (tomesd's default), which the lab's micro and
    tiny U-Nets lack: run this file with the full-size checkpoint loaded to see both act."""
    plain = webui.txt2img([True, 3, 0], width=SIZE, height=SIZE)
    off = webui.txt2img([False], width=SIZE, height=SIZE)
    with settings(SETTINGS[name]):
        both = webui.txt2img([True, 3, 0], width=SIZE, height=SIZE)
        other_alone = webui.txt2img([False], width=SIZE, height=SIZE)
        other_default = webui.txt2img(width=SIZE, height=SIZE)
    if other_alone.pixels() == off.pixels():
        pytest.skip(f"{name} changes nothing on the loaded model (no attention at the levels it acts on)")
    assert CACHED.search(both.infotext).groups() == CACHED.search(plain.infotext).groups()
    assert "DeepCache error" not in both.infotext
    assert both.pixels() != plain.pixels()  # the other speed-up still acts with DeepCache on
    assert other_alone.pixels() == other_default.pixels()  # DeepCache off is off
    assert "DeepCache" not in other_alone.infotext
    if name == "tome":
        assert "Token merging ratio: 0.5" in both.infotext
    else:
        assert "Hypertile U-Net: True" in both.infotext

"""This extension beside AnimateDiff (continue-revolution/sd-webui-animatediff), which puts motion modules inside
the U-Net's blocks and, with context windows, evaluates the frames a window at a time: several U-Net calls per
step whose windows move to other frames from step to step. Skipped when AnimateDiff is not installed.

``WEBUI_E2E_MOTION_MODULE`` names the motion module (default ``mm_sd_v15_v2.ckpt``; the lab builds one of random
weights with AnimateDiff's own classes). Needs a full-size SD1.5 checkpoint loaded (the motion modules have its
channel counts)."""
from __future__ import annotations

import os

import pytest
from webui_client import CACHED, ServerLog, require_script

MOTION_MODULE = os.environ.get("WEBUI_E2E_MOTION_MODULE", "mm_sd_v15_v2.ckpt")
FRAMES, STEPS, SIZE = 16, 6, 64
PROMPT = "a cat walking"


@pytest.fixture(scope="module")
def animatediff(webui) -> None:
    require_script(webui, "animatediff")


def animation(webui, deepcache: list | None, context: int, overlap: int = 4):
    """16 frames; ``context`` frames per U-Net call (16: one call per step). The response holds the GIF, then
    each frame as a PNG."""
    settings = {"model": MOTION_MODULE, "enable": True, "video_length": FRAMES, "fps": 8, "batch_size": context,
                "overlap": overlap, "closed_loop": "R-P", "format": ["GIF", "Frame"]}
    result = webui.txt2img(deepcache, prompt=PROMPT, width=SIZE, height=SIZE, steps=STEPS,
                           alwayson_scripts={"AnimateDiff": {"args": [settings]}})
    assert len(result.body["images"]) == FRAMES + 1, "AnimateDiff did not return its frames"
    return result


def frames(result) -> list[bytes]:
    return [result.pixels(i) for i in range(1, FRAMES + 1)]


@pytest.mark.parametrize("context", [16, 8], ids=["one call per step", "context windows"])
def test_animatediff_with_deepcache_off_is_animatediff_alone(webui, animatediff, context):
    assert frames(animation(webui, [False], context)) == frames(animation(webui, None, context))


def test_animatediff_without_windows_is_cached_as_planned(webui, animatediff):
    plain = webui.txt2img([True, 3, 0], prompt=PROMPT, width=SIZE, height=SIZE, steps=STEPS)
    log = ServerLog()
    result = animation(webui, [True, 3, 0], FRAMES)
    uncached = animation(webui, [False], FRAMES)
    assert len(result.info["infotexts"]) == FRAMES
    for infotext in result.info["infotexts"]:
        assert CACHED.search(infotext).groups() == CACHED.search(plain.infotext).groups(), infotext
        assert "DeepCache error" not in infotext
    assert frames(result) != frames(uncached)
    if log:
        assert log.stats_lines()[-1][2:] == (4, 6)  # one U-Net pass per step: 16 frames x cond/uncond


def test_context_windows_reuse_only_their_own_frames_features(webui, animatediff):
    """Windows of 8 frames overlapping by 4: 3 calls per step, and AnimateDiff moves each window to other frames
    from step to step. A call reuses deep features only of a call with the same frames on a full step (or a
    refresh since), so fewer passes come from cache than the plan's 12/18, and the infotext says how many."""
    log = ServerLog()
    result = animation(webui, [True, 3, 0], 8)
    infotext = result.info["infotexts"][0]
    assert "DeepCache error" not in infotext
    assert CACHED.search(infotext), infotext
    if log:
        cached_steps, steps, cached_passes, passes = log.stats_lines()[-1]
        assert steps == STEPS and passes == 3 * STEPS
        assert 0 < cached_passes < 12  # the plan alone would take 12, reusing other windows' frames
        assert f"({cached_passes}/{passes} U-Net passes from cache)" in infotext

"""This extension beside AnimateDiff (continue-revolution/sd-webui-animatediff), which puts motion modules inside
the U-Net's blocks and, with context windows, evaluates the frames a window at a time: several U-Net calls per
step whose windows move to other frames from step to step. Skipped when AnimateDiff is not installed.

``WEBUI_E2E_MOTION_MODULE`` names the motion module (default ``mm_sd_v15_v2.ckpt``; the lab builds one of random
weights with AnimateDiff's own classes), ``WEBUI_E2E_NOOP_MOTION_MODULE`` one that does nothing (default: the same
name ending ``_noop.ckpt``). Needs a full-size SD1.5 checkpoint loaded (the motion modules have its
channel counts)."""
from __future__ import annotations

import os

import pytest
from webui_client import CACHED, ServerLog, require_script

MOTION_MODULE = os.environ.get("WEBUI_E2E_MOTION_MODULE", "mm_sd_v15_v2.ckpt")
NOOP_MODULE = os.environ.get("WEBUI_E2E_NOOP_MOTION_MODULE", MOTION_MODULE.replace(".ckpt", "_noop.ckpt"))
FRAMES, STEPS, SIZE = 16, 6, 64
PROMPT = "a cat walking"


@pytest.fixture(scope="module")
def animatediff(webui) -> None:
    require_script(webui, "animatediff")


def animation(webui, deepcache: list | None, context: int, overlap: int = 4, model: str = MOTION_MODULE):
    """16 frames; ``context`` frames per U-Net call (16: one call per step). The response holds the GIF, then
    each frame as a PNG."""
    settings = {"model": model, "enable": True, "video_length": FRAMES, "fps": 8, "batch_size": context,
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


def test_context_windows_are_cached_as_planned(webui, animatediff):
    """Windows of 8 frames overlapping by 4: 3 calls per step, and AnimateDiff moves each window to other frames
    from step to step. Every frame was in some window on the full step, so each retrieval call gathers its frames'
    features from there: the plan's 12/18 passes from cache, and the infotext says 4/6 steps as for one call."""
    plain = webui.txt2img([True, 3, 0], prompt=PROMPT, width=SIZE, height=SIZE, steps=STEPS)
    log = ServerLog()
    result = animation(webui, [True, 3, 0], 8)
    infotext = result.info["infotexts"][0]
    assert "DeepCache error" not in infotext
    assert CACHED.search(infotext).groups() == CACHED.search(plain.infotext).groups(), infotext
    if log:
        assert log.stats_lines()[-1][2:] == (12, 3 * STEPS)


def test_context_windows_give_each_frame_its_own_features(webui, animatediff):
    """With a motion module that does nothing (proj_out zero, as the real one is initialised), the frames are
    independent rows: cached in windows that move at every step, each frame must come out as when all 16 are cached
    in one call. A window reusing another window's frames differs by a whole image's worth."""
    try:
        windowed = animation(webui, [True, 3, 0], 8, model=NOOP_MODULE)
    except AssertionError as error:
        pytest.skip(f"no identity motion module {NOOP_MODULE} (make_random_motion_module.py --zero-proj-out): {error}")
    whole = animation(webui, [True, 3, 0], FRAMES, model=NOOP_MODULE)
    uncached = animation(webui, [False], FRAMES, model=NOOP_MODULE)
    assert max(windowed.difference(whole, i) for i in range(1, FRAMES + 1)) < 0.5
    assert min(whole.difference(uncached, i) for i in range(1, FRAMES + 1)) > 0.5  # the check can tell


ADAPTIVE = {"enabled": True, "schedule": "adaptive", "interval": 4, "threshold": 0.3}


def test_adaptive_context_windows_follow_one_decision_per_step(webui, animatediff):
    """The adaptive schedule with three windows per step that move from step to step: the step's first window
    decides for all three, so every step is wholly full or wholly cached and the infotext counts whole steps."""
    log = ServerLog()
    result = animation(webui, [ADAPTIVE], 8)
    infotext = result.info["infotexts"][0]
    assert "DeepCache error" not in infotext and "U-Net passes" not in infotext, infotext
    cached, steps = map(int, CACHED.search(infotext).groups())
    assert steps == STEPS and 0 < cached < STEPS - 1, infotext
    if log:
        assert log.stats_lines()[-1] == (cached, STEPS, 3 * cached, 3 * STEPS)


def test_context_windows_forecast_each_frame_from_its_own_features(webui, animatediff):
    """Forecast with windows that move at every step: a retrieval extends each frame's own line (its features on
    the last two full steps, gathered per row), so with a motion module that does nothing the windowed frames come
    out as when all 16 are in one call; forecast does change them."""
    forecast = [{"enabled": True, "interval": 2, "forecast": True}]
    try:
        windowed = animation(webui, forecast, 8, model=NOOP_MODULE)
    except AssertionError as error:
        pytest.skip(f"no identity motion module {NOOP_MODULE} (make_random_motion_module.py --zero-proj-out): {error}")
    whole = animation(webui, forecast, FRAMES, model=NOOP_MODULE)
    reused = animation(webui, [{"enabled": True, "interval": 2}], FRAMES, model=NOOP_MODULE)
    apart = max(windowed.difference(whole, i) for i in range(1, FRAMES + 1))
    forecast_effect = min(whole.difference(reused, i) for i in range(1, FRAMES + 1))
    assert apart < 0.5 and apart < forecast_effect / 4, (apart, forecast_effect)  # the check can tell

"""The adaptive schedule inside a real webui: API, infotext and paste, X/Y/Z, hires, batches, tiles (one decision
per step for all of a step's calls), and off unchanged. See conftest.py for how to run."""
from __future__ import annotations

import re

import pytest
from test_webui_api import cached_steps
from webui_client import CACHED, STEPS, ServerLog, parse_infotext

from deepcache.params import DeepCacheParams

ADAPTIVE = DeepCacheParams(enabled=True, interval=4, schedule="adaptive", threshold=0.3)


def adaptive(**changes) -> list:
    return ADAPTIVE.replace(**changes).as_args()


@pytest.fixture(scope="module")
def baseline(webui):
    return webui.txt2img()


def test_adaptive_caches_says_so_and_pastes_back(webui):
    result = webui.txt2img(adaptive())
    cached, steps = cached_steps(result.infotext)
    assert steps == STEPS and 0 < cached <= STEPS - len(range(0, STEPS, 4))  # never fewer full steps than the bound
    assert "DeepCache schedule: adaptive" in result.infotext and "DeepCache threshold: 0.3" in result.infotext
    assert DeepCacheParams.from_infotext(parse_infotext(webui, result.infotext)) == ADAPTIVE


def test_a_threshold_of_zero_refreshes_every_step_and_gives_the_uncached_image(webui, baseline):
    """Every probe finds the cache stale: each pass goes on in full from its first skipped block, which gives
    exactly the image without DeepCache."""
    result = webui.txt2img(adaptive(threshold=0.0))
    assert cached_steps(result.infotext) == (0, STEPS)
    assert result.pixels() == baseline.pixels()


def test_off_is_still_bit_identical(webui, baseline):
    assert webui.txt2img(adaptive(enabled=False)).pixels() == baseline.pixels()


def test_threshold_and_schedule_axes(webui, baseline):
    script_args = xyz_args(webui, "[DeepCache] Threshold", "0, 2")
    result = webui.txt2img([True, 4, 0], script_name="x/y/z plot", script_args=script_args)
    if result.status != 200 or len(result.info["infotexts"]) < 3:
        pytest.skip(f"this webui's X/Y/Z plot fails through the API: {result.body}")
    cells = result.info["infotexts"][1:]
    assert all("DeepCache schedule: adaptive" in t for t in cells)  # a threshold axis selects adaptive
    assert int(CACHED.search(cells[0]).group(1)) == 0 and int(CACHED.search(cells[1]).group(1)) > 0
    assert webui.txt2img().pixels() == baseline.pixels()  # nothing leaked into later generations


def test_hires_same_uses_the_adaptive_schedule_and_batches_count_each_image(webui):
    hires = {"enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent", "denoising_strength": 0.6,
             "hr_second_pass_steps": 6, "hr_cfg": 7, "hr_cfg_scale": 7}
    if webui.is_forge:
        hires["hr_additional_modules"] = ["Use same choices"]
    result = webui.txt2img(adaptive(), batch_size=2, n_iter=2, **hires)
    assert len(result.body["images"]) == 4
    for text in result.info["infotexts"]:
        assert re.search(rf"DeepCache: \"?\d+/{STEPS} steps cached \+ hires \d+/6 steps cached", text), text
        assert "U-Net passes" not in text


def test_tiles_follow_one_decision_per_step(webui):
    """Forge's MultiDiffusion, one tile per call (nine per step at 128x128); the first call of a step decides, the
    others follow, so no step mixes full and cached passes."""
    info = webui.request("/sdapi/v1/script-info").body
    script = next((s for s in info if s["name"].startswith("multidiffusion integrated") and not s["is_img2img"]), None)
    if script is None:
        pytest.skip("the host has no MultiDiffusion built-in")
    args = [arg["value"] for arg in script["args"]]
    args[:6] = [True, "MultiDiffusion", 64, 64, 32, 1]
    log = ServerLog()
    result = webui.txt2img(adaptive(), width=128, height=128, alwayson_scripts={script["name"]: {"args": args}})
    cached, steps = cached_steps(result.infotext)
    assert 0 < cached < steps and "U-Net passes" not in result.infotext, result.infotext
    if log:
        cached_steps_, steps_, cached_passes, passes = log.stats_lines()[-1]
        assert passes > steps_ and cached_passes == cached_steps_ * passes // steps_, (cached_passes, passes)


def xyz_args(webui, axis: str, values: str) -> list:
    """The X/Y/Z plot script's args (its defaults) with ``axis`` over ``values`` on X (as text, also for an axis
    with choices) and sub-images included."""
    info = webui.request("/sdapi/v1/script-info").body
    xyz = next(s for s in info if s["name"] == "x/y/z plot" and not s["is_img2img"])
    axis_choices = next(a["choices"] for a in xyz["args"] if a["label"] == "X type")
    script_args = [a["choices"].index(a["value"]) if a["label"].endswith(" type") and a["value"] in a["choices"]
                   else a["value"] for a in xyz["args"]]
    labels = [a["label"] for a in xyz["args"]]
    for option in ("Include Sub Images", "Use text inputs instead of dropdowns"):  # the latter: choice axes
        if option in labels:
            script_args[labels.index(option)] = True
    script_args[labels.index("X type")] = axis_choices.index(axis)
    script_args[labels.index("X values")] = values
    return script_args


def test_forecast_caches_the_same_steps_draws_another_image_and_pastes_back(webui):
    """Forecast changes what a cached step serves, not which steps are cached: the same counts as the uniform
    schedule, another image, and the infotext restores it."""
    uniform = webui.txt2img([True, 3, 0])
    params = DeepCacheParams(enabled=True, interval=3, forecast=True)
    forecast = webui.txt2img(params.as_args())
    assert CACHED.search(forecast.infotext).groups() == CACHED.search(uniform.infotext).groups()
    assert "DeepCache forecast: True" in forecast.infotext and "DeepCache error" not in forecast.infotext
    assert DeepCacheParams.from_infotext(parse_infotext(webui, forecast.infotext)) == params
    assert forecast.pixels() != uniform.pixels()
    on_top = webui.txt2img(adaptive(forecast=True))
    assert "DeepCache forecast: True" in on_top.infotext and "DeepCache schedule: adaptive" in on_top.infotext


def test_forecast_axis(webui, baseline):
    result = webui.txt2img([True, 3, 0], script_name="x/y/z plot",
                           script_args=xyz_args(webui, "[DeepCache] Forecast", "False, True"))
    if result.status != 200 or len(result.info["infotexts"]) < 3:
        pytest.skip(f"this webui's X/Y/Z plot fails through the API: {result.body}")
    cells = result.info["infotexts"][1:]
    assert "DeepCache forecast" not in cells[0] and "DeepCache forecast: True" in cells[1]
    assert CACHED.search(cells[0]).groups() == CACHED.search(cells[1]).groups()
    assert result.pixels(1) != result.pixels(2)
    assert webui.txt2img().pixels() == baseline.pixels()  # nothing leaked into later generations

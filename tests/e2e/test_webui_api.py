"""The extension inside a real webui, through its HTTP API (see conftest.py for how to run)."""
from __future__ import annotations

import re
import threading
import time

import pytest
from webui_client import BRANCH_LIMIT, CACHED, OTHER, SIZE, STEPS, ServerLog, parse_infotext, png_base64

from deepcache.params import DeepCacheParams

ON = [True, 3, 0]


def cached_steps(infotext: str) -> tuple[int, int]:
    match = CACHED.search(infotext)
    assert match, f"no DeepCache stats in infotext: {infotext}"
    return int(match.group(1)), int(match.group(2))


@pytest.fixture(scope="module")
def baseline(webui):
    return webui.txt2img()


def test_extension_is_registered(webui):
    scripts = webui.request("/sdapi/v1/scripts").body
    assert "deepcache" in scripts["txt2img"] and "deepcache" in scripts["img2img"]


def test_on_caches_steps_and_off_afterwards_is_bit_identical(webui, baseline):
    on = webui.txt2img(ON)
    assert cached_steps(on.infotext) == (STEPS - len(range(0, STEPS, 3)), STEPS)
    assert on.pixels() != baseline.pixels()
    assert webui.txt2img().pixels() == baseline.pixels()
    assert "DeepCache" not in webui.txt2img([False, 3, 0]).infotext


def test_interval_one_is_bit_identical_to_off(webui, baseline):
    assert webui.txt2img([True, 1, 0]).pixels() == baseline.pixels()


@pytest.mark.parametrize("args,message", [
    ([True, "abc"], "'interval' must be int in [1; 50]"),
    ([True, 3, 99], "'branch' must be int in [0; 11]"),
    ([True, 3, 0, 0.9, 0.1], "'start' (0.9) must not exceed 'end'"),
    ([1, 3, 0], "'enabled' must be true or false"),
    ([{"interval": 2, "nonsense": 1}], "unknown DeepCache parameter"),
])
def test_bad_args_are_refused_with_a_message_and_the_image_is_generated(webui, baseline, args, message):
    result = webui.txt2img(args)
    assert "DeepCache error" in result.infotext and message in result.infotext
    assert not CACHED.search(result.infotext)
    assert result.pixels() == baseline.pixels()


def test_branch_limit_follows_the_loaded_model(webui, baseline):
    """A branch deeper than the loaded U-Net is refused (image without DeepCache) and its deepest branch caches:
    SDXL's U-Net has 9 input blocks, so 9-11 are refused there; SD1/SD2 take 11 (the lab's micro model fewer)."""
    sdxl = webui.family == "SDXL"
    result = webui.txt2img([True, 3, 9 if sdxl else 11])
    limit = BRANCH_LIMIT.search(result.infotext)
    if sdxl:
        assert limit and limit.group(1) == "8", result.infotext
    if limit:
        assert not CACHED.search(result.infotext) and result.pixels() == baseline.pixels()
    deepest = int(limit.group(1)) if limit else 11
    assert cached_steps(webui.txt2img([True, 3, deepest]).infotext)[0] > 0


def test_named_args_in_a_leading_dict(webui):
    result = webui.txt2img([{"enabled": True, "interval": 2}])
    assert cached_steps(result.infotext) == (STEPS // 2, STEPS)
    assert "DeepCache interval: 2" in result.infotext


def test_fewer_args_take_defaults_and_string_numbers_are_accepted(webui):
    assert cached_steps(webui.txt2img([True]).infotext)[0] == STEPS - len(range(0, STEPS, 3))
    assert "DeepCache interval: 4" in webui.txt2img(["true", "4"]).infotext


def test_infotext_round_trip(webui):
    args = DeepCacheParams(enabled=True, interval=4, branch=1, start=0.1, schedule="non-uniform").as_args()
    text = webui.txt2img(args).infotext
    parsed = parse_infotext(webui, text)
    assert DeepCacheParams.from_infotext(parsed) == DeepCacheParams.from_args(args)
    # the API's "infotext" field applies pasted parameters to the script's controls (1.8+)
    plain = webui.request("/sdapi/v1/txt2img", {"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                                "infotext": "x\nSteps: 1, Seed: 1, Size: 64x64"})
    if plain.status != 200:
        pytest.skip(f"this webui's API 'infotext' field fails without DeepCache too: {plain.body}")
    pasted = webui.txt2img(infotext=text)
    assert DeepCacheParams.from_infotext(parse_infotext(webui, pasted.infotext)) == DeepCacheParams.from_args(args)


def test_hires_fix_pass_is_cached_with_its_own_steps(webui):
    hires = {"enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent", "denoising_strength": 0.6,
             "hr_second_pass_steps": 6, "hr_cfg": 7, "hr_cfg_scale": 7}  # Forge Classic names it hr_cfg_scale
    if webui.is_forge:  # Forge's API fails on a hires request that does not name its modules
        hires["hr_additional_modules"] = ["Use same choices"]
    result = webui.txt2img(ON, **hires)
    assert re.search(rf"DeepCache: \"?\d+/{STEPS} steps cached \+ hires 4/6 steps cached", result.infotext)
    own = webui.txt2img([True, 3, 0, 0, 1, 0, "uniform", 1.4, 0.3, "own", 2, 0, 0, 1], **hires)
    assert "hires 3/6 steps cached" in own.infotext
    off = webui.txt2img([True, 3, 0, 0, 1, 0, "uniform", 1.4, 0.3, "off"], **hires)
    assert cached_steps(off.infotext)[1] == STEPS and "+ hires" not in off.infotext


def test_batches(webui):
    result = webui.txt2img(ON, batch_size=2, n_iter=2)
    assert len(result.body["images"]) == 4
    assert all(cached_steps(t)[1] == STEPS for t in result.info["infotexts"])


@pytest.mark.parametrize("extra", [
    {"s_min_uncond": 100.0},
    {"override_settings": {"skip_early_cond": 0.5}},
    {"override_settings": {"batch_cond_uncond": False}},
    {"negative_prompt": " ".join(["blurry, low quality"] * 40), "override_settings": {"pad_cond_uncond": False}},
], ids=["ngms", "skip-early-cond", "batch-cond-uncond-off", "unequal-prompt-lengths"])
def test_calls_that_change_batch_or_split_cond_uncond(webui, extra):
    overridden = list(extra.get("override_settings", {}))
    options = webui.request("/sdapi/v1/options").body
    missing = [k for k in overridden if k not in options]
    if missing:
        pytest.skip(f"this webui has no option {missing[0]} (Forge Classic removed it)")
    before = {k: v for k, v in options.items() if k in overridden}
    try:
        result = webui.txt2img(ON, **extra)
    finally:  # A1111 does not restore overridden settings that were at their default: do it here
        if before:
            webui.request("/sdapi/v1/options", before)
    cached, steps = cached_steps(result.infotext)
    assert steps == STEPS and cached > 0


SAMPLERS = ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a",
            "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart", "DDIM", "DDIM CFG++",
            "PLMS", "UniPC", "LCM"]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler(webui, sampler):
    names = {s["name"] for s in webui.request("/sdapi/v1/samplers").body}
    if sampler not in names:
        pytest.skip(f"{sampler} is not offered by this webui")
    result = webui.txt2img(ON, sampler_name=sampler)
    cached, steps = cached_steps(result.infotext)
    if sampler != "DPM adaptive":  # it chooses its own step count
        assert steps == STEPS, result.infotext
    assert cached > 0 or sampler == "DPM adaptive"


def test_img2img_counts_the_steps_actually_run(webui, baseline):
    image = baseline.body["images"][0]
    result = webui.img2img(image, ON)
    assert cached_steps(result.infotext)[1] == int(0.5 * STEPS) + 1
    assert webui.img2img(image).pixels() == webui.img2img(image, [False]).pixels()


def test_xyz_grid_axes(webui, baseline):
    info = webui.request("/sdapi/v1/script-info").body
    xyz = next(s for s in info if s["name"] == "x/y/z plot" and not s["is_img2img"])
    axis_choices = next(a["choices"] for a in xyz["args"] if a["label"] == "X type")
    # the script's own defaults for every argument (hosts differ in count and order), X axis set here
    script_args = [a["choices"].index(a["value"]) if a["label"].endswith(" type") and a["value"] in a["choices"]
                   else a["value"] for a in xyz["args"]]  # the axis dropdowns take an index
    labels = [a["label"] for a in xyz["args"]]
    script_args[labels.index("X values")] = "1, 2, 3"
    if "Include Sub Images" in labels:  # reForge returns the cells' infotexts only with it
        script_args[labels.index("Include Sub Images")] = True
    script_args[labels.index("X type")] = axis_choices.index("Seed")
    plain = webui.request("/sdapi/v1/txt2img", {"prompt": "x", "steps": 1, "width": SIZE, "height": SIZE,
                                                "script_name": "x/y/z plot", "script_args": script_args})
    if plain.status != 200:  # Forge Classic's X/Y/Z reads an option it no longer has (uni_pc_order)
        pytest.skip(f"this webui's X/Y/Z plot fails through the API without DeepCache too: {plain.body}")
    script_args[labels.index("X type")] = axis_choices.index("[DeepCache] Interval")
    result = webui.txt2img(script_name="x/y/z plot", script_args=script_args)
    infotexts = result.info["infotexts"]
    cells = [CACHED.search(t) for t in infotexts[1:]]
    assert [int(c.group(1)) for c in cells] == [0, STEPS // 2, STEPS - len(range(0, STEPS, 3))]
    assert webui.txt2img().pixels() == baseline.pixels()  # nothing leaked into later generations


def test_interrupt_leaves_no_hook_behind(webui, baseline):
    thread = threading.Thread(target=webui.txt2img, args=(ON,), kwargs={"steps": 40, "width": 2 * SIZE,
                                                                          "height": 2 * SIZE})
    thread.start()
    time.sleep(1.0)
    webui.request("/sdapi/v1/interrupt", {})
    thread.join()
    assert webui.txt2img().pixels() == baseline.pixels()


INTERRUPTED = re.compile(r"DeepCache: \"?(\d+)/(\d+) steps cached, interrupted at (\d+)/(\d+)")


def test_an_interrupted_run_counts_the_steps_it_ran(webui, baseline):
    """Interrupt a 150-step run once a few steps have run: the infotext and the console count the steps that ran
    (``k/n steps cached, interrupted at n/150``), not the 150 planned; the next generation is as before."""
    log = ServerLog()
    results = []
    thread = threading.Thread(target=lambda: results.append(webui.txt2img(ON, steps=150)))
    thread.start()
    deadline = time.time() + 600
    while time.time() < deadline and thread.is_alive():
        if webui.request("/sdapi/v1/progress?skip_current_image=true").body["state"]["sampling_step"] >= 4:
            break
        time.sleep(0.05)
    webui.request("/sdapi/v1/interrupt", {})
    thread.join()
    match = INTERRUPTED.search(results[0].infotext)
    assert match, results[0].infotext
    cached, ran, at, planned = map(int, match.groups())
    assert ran == at and 4 <= ran < planned == 150 and cached == ran - len(range(0, ran, 3))
    if log:
        assert f"{cached}/{ran} steps cached, interrupted at {ran}/150" in log.text()
    assert webui.txt2img().pixels() == baseline.pixels()


TWO_EVALUATIONS = ["Heun", "DPM2", "DPM2 a", "DPM++ 2S a", "DPM++ SDE", "DPM++ 2s a RF"]


@pytest.mark.parametrize("sampler", TWO_EVALUATIONS)
def test_a_two_evaluation_sampler_caches_whole_steps_as_euler_does(webui, sampler):
    """Both evaluations of a step follow its plan: the same cached steps as Euler, no step cached in part (the
    infotext would add the passes). Forge Neo's "DPM++ 2s a RF" is not marked second-order by the webui."""
    names = {s["name"] for s in webui.request("/sdapi/v1/samplers").body}
    if sampler not in names:
        pytest.skip(f"{sampler} is not offered by this webui")
    euler = webui.txt2img(ON, steps=6, scheduler="Automatic")
    result = webui.txt2img(ON, steps=6, sampler_name=sampler, scheduler="Automatic")
    assert CACHED.search(result.infotext).group() == CACHED.search(euler.infotext).group(), result.infotext
    assert "U-Net passes from cache" not in result.infotext


def other_checkpoint(webui) -> str:
    """A second checkpoint to switch to (hires checkpoint, refiner): ``WEBUI_E2E_OTHER``, or another in the
    A1111 lab, or skip."""
    if OTHER:
        return OTHER
    current = webui.request("/sdapi/v1/options").body.get("sd_model_checkpoint")  # None on reForge's API
    others = [m["title"] for m in webui.request("/sdapi/v1/sd-models").body
              if current and m["title"] != current and m["model_name"] not in current]
    if not others or webui.is_forge:
        pytest.skip("needs a second checkpoint of the same family (set WEBUI_E2E_OTHER; the A1111 lab has micro "
                    "and tiny)")
    return sorted(others, key=lambda title: "tiny" not in title)[0]


def test_hires_with_another_sampler_and_checkpoint(webui, baseline):
    # Forge main's API leaves hr_additional_modules None, which its own hires code cannot take: give its UI default
    forge = {"hr_additional_modules": ["Use same choices"]} if webui.is_forge else {}
    result = webui.txt2img(ON, enable_hr=True, hr_scale=2, hr_upscaler="Latent", denoising_strength=0.6,
                           hr_second_pass_steps=6, hr_sampler_name="DPM++ 2M",
                           hr_checkpoint_name=other_checkpoint(webui), **forge)
    assert "hires 4/6 steps cached" in result.infotext
    assert webui.txt2img().pixels() == baseline.pixels()


def test_refiner_switch_mid_run(webui):
    """After a refiner run A1111 may rebuild the base model from its file (a new object, so the reference for
    "nothing left behind" is a plain image after the same refiner run without DeepCache, not the first one)."""
    refiner = {"refiner_checkpoint": other_checkpoint(webui), "refiner_switch_at": 0.5}
    webui.txt2img(**refiner)
    plain_after_refiner = webui.txt2img().pixels()
    result = webui.txt2img(ON, **refiner)
    cached, steps = cached_steps(result.infotext)
    assert steps == STEPS and 0 < cached < STEPS // 2  # the refiner's own U-Net runs uncached
    assert webui.txt2img().pixels() == plain_after_refiner


def test_inpainting(webui, baseline):
    from PIL import Image

    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (SIZE // 4, SIZE // 4, 3 * SIZE // 4, 3 * SIZE // 4))
    inpaint = {"mask": png_base64(mask), "inpainting_fill": 1, "inpaint_full_res": False}
    result = webui.img2img(baseline.body["images"][0], ON, **inpaint)
    assert cached_steps(result.infotext)[1] == int(0.5 * STEPS) + 1
    off = webui.img2img(baseline.body["images"][0], **inpaint)
    assert off.pixels() == webui.img2img(baseline.body["images"][0], [False], **inpaint).pixels()

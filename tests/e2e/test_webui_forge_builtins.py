"""This extension beside Forge Neo's built-ins that touch the U-Net: Spectrum (a cache that forecasts the U-Net's
output, in Haoming02's Forge Classic/Neo repository; copied into the lab's Neo tree) and Torch Compile Integrated
(compiles the U-Net with torch.compile). Each test is skipped on a host without the script.

The built-ins that patch the U-Net or call it more than once per step (Forge main's FreeU, Self-Attention and
Perturbed-Attention Guidance, Kohya HRFix, StyleAlign, Dynamic Thresholding, Latent Modifier, MultiDiffusion and
Mixture of Diffusers, Never OOM; where the forks kept them) each get the same checks at 128x128, 8 steps: DeepCache
off is the built-in alone, DeepCache on caches as planned with every call of a cached step from cache, and the
built-in still acts. ``WEBUI_LOG`` (the server's log) lets the compile test check that dynamo never gave up on
DeepCache's code."""
from __future__ import annotations

import re
import time

import pytest
from webui_client import CACHED, ServerLog, png_base64

SPECTRUM, COMPILE = "spectrum integrated", "torch compile integrated"


def find_script(webui, name: str) -> tuple[str, list]:
    """The txt2img script whose name is ``name`` or starts with it (the forks name some built-ins differently:
    Forge main's "freeu integrated (sd 1.x, sd 2.x, sdxl)" is reForge's "freeu integrated"): its full name and its
    arguments' defaults."""
    info = webui.request("/sdapi/v1/script-info").body
    script = next((s for s in info if s["name"].startswith(name) and not s["is_img2img"]), None)
    if script is None:
        pytest.skip(f"the host has no '{name}' script")
    return script["name"], [arg["value"] for arg in script["args"]]


def script_defaults(webui, name: str) -> list:
    return find_script(webui, name)[1]


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
        assert result.difference(uncompiled) < 1.0, result.difference(uncompiled)
    if log:
        text = log.text()
        assert not re.search(r"recompile_limit.*\n.*function: '\w+' \(.*deepcache", text), text[-3000:]


def test_a_stand_down_is_said_at_every_generation(webui):
    """Spectrum on in three generations: the console says at each one, in one line, why DeepCache did nothing (it
    said so only at the first in the server's life before 1.1.0)."""
    spectrum = {SPECTRUM: {"args": [True] + script_defaults(webui, SPECTRUM)[1:]}}
    log = ServerLog()
    if not log:
        pytest.skip("WEBUI_LOG is not set: the console cannot be read")
    for _ in range(3):
        webui.txt2img([True, 3, 0], steps=6, alwayson_scripts=dict(spectrum))
    lines = [line for line in log.text().splitlines() if "[DeepCache]" in line and "another U-Net cache" in line]
    assert len(lines) == 3, lines


RECOMPILING = re.compile(r"Recompiling function (deepcache_\w+)")


def test_a_compiled_unet_compiles_deepcache_once_per_model(webui):
    """Torch Compile Integrated (its guard_filter_fn preset, inductor), three generations in a row: the second and
    third compile nothing new in DeepCache's code (each wrapper's code object is the same at every install, and
    what it reads is guarded by value), so they take about as long as each other. Needs the server started with
    ``TORCH_LOGS=recompiles`` and ``WEBUI_LOG``."""
    script_defaults(webui, COMPILE)
    log = ServerLog()
    if not log:
        pytest.skip("WEBUI_LOG is not set: dynamo's recompile log cannot be read")
    marks, seconds, results = [], [], []
    try:
        for _ in range(3):
            started = time.perf_counter()
            compile_on = {COMPILE: {"args": ["guard_filter_fn"]}}
            results.append(webui.txt2img([True, 3, 0], steps=10, alwayson_scripts=compile_on))
            seconds.append(time.perf_counter() - started)
            marks.append(len(RECOMPILING.findall(log.text())))
    finally:
        webui.txt2img([False], alwayson_scripts={COMPILE: {"args": ["Disable"]}})
    print(f"compiled generations: {[round(s, 1) for s in seconds]} s; DeepCache recompiles so far: {marks}")
    assert marks[2] == marks[1] == marks[0], marks  # nothing recompiled after the first generation
    assert all(CACHED.search(r.infotext).group() == CACHED.search(results[0].infotext).group() for r in results)
    assert abs(seconds[2] - seconds[1]) < 0.25 * max(seconds[1:]), seconds


# built-in: (script name, its arguments where they differ from the script's defaults, request fields)
PATCHES: dict[str, tuple[str, dict[int, object], dict]] = {
    "FreeU": ("freeu integrated", {0: True}, {}),
    "SAG": ("selfattentionguidance integrated", {0: True}, {}),
    "PAG": ("perturbedattentionguidance integrated", {0: True}, {}),
    "Kohya HRFix": ("kohya hrfix integrated", {0: True}, {}),  # block 3 shrunk 2x for the first 35 % of the steps
    "StyleAlign": ("stylealign integrated", {0: True}, {"batch_size": 2}),
    "Dynamic Thresholding": ("dynamicthresholding (cfg-fix) integrated", {0: True}, {}),
    "Latent Modifier": ("latentmodifier integrated", {0: True}, {}),
    "MultiDiffusion": ("multidiffusion integrated", {0: True, 1: "MultiDiffusion", 2: 64, 3: 64, 4: 32}, {}),
    "Mixture of Diffusers": ("multidiffusion integrated", {0: True, 1: "Mixture of Diffusers", 2: 64, 3: 64, 4: 32},
                             {}),
    "Never OOM": ("never oom integrated", {0: True, 1: True}, {}),
    # reForge's own built-ins (Forge main lacks them):
    # HyperTile: attn1 patch and attn1 output patch that split self-attention into tiles; at 128x128 the top level's
    # feature map is 16x16, so the tile size (pixels, /8 in the latent) must be under 128: 64 gives 2x2 tiles of 8x8
    "HyperTile": ("hypertile integrated", {0: True, 1: 64}, {}),
    "Mahiro CFG": ("mahiro cfg for reforge", {0: True}, {}),  # a post-CFG function (guidance toward the cond)
    # APG: replaces the sampler's CFG function (momentum and projected guidance), sets disable_cfg1_optimization
    "APG": ("\"apg's now your cfg\" and guidance limiter for reforge", {0: True}, {}),
    "RescaleCFG": ("rescalecfg for reforge", {0: True}, {}),  # replaces the sampler's CFG function (rescaled CFG)
    # Advanced Model Sampling: an object patch of model_sampling (Discrete, v-prediction, zero-terminal-SNR sigmas):
    # the sigmas and how the U-Net's output is read change, not its forward
    "Advanced Model Sampling": ("advanced model sampling for reforge", {0: True}, {}),
}


def all_pixels(result) -> list[bytes]:
    return [result.pixels(i) for i in range(len(result.body["images"]))]


@pytest.mark.parametrize("builtin", sorted(PATCHES))
def test_a_builtin_that_patches_the_unet_beside_deepcache(webui, builtin):
    name, args = find_script(webui, PATCHES[builtin][0])
    changes, request = PATCHES[builtin][1:]
    for index, value in changes.items():
        args[index] = value
    sizes = {"width": 128, "height": 128, "steps": 8, **request}

    def generate(deepcache, scripts):
        return webui.txt2img(deepcache, **sizes, alwayson_scripts=dict(scripts))

    patched = {name: {"args": args}}
    alone, off = generate(None, patched), generate([False], patched)
    assert all_pixels(off) == all_pixels(alone)  # DeepCache off is off
    plain_cached = generate([True, 3, 0], {})
    both = generate([True, 3, 0], patched)
    assert "DeepCache error" not in both.infotext
    assert CACHED.search(both.infotext).groups() == CACHED.search(plain_cached.infotext).groups(), both.infotext
    assert "U-Net passes from cache" not in both.infotext  # every call of a cached step came from cache
    if all_pixels(alone) != all_pixels(generate(None, {})):  # the built-in acts on this model ...
        assert all_pixels(both) != all_pixels(plain_cached)  # ... and still does with DeepCache on


def reference_image() -> str:
    """A colourful 128x128 picture to take the style from (any image will do for a model of random weights)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (128, 128), (30, 60, 160))
    draw = ImageDraw.Draw(image)
    draw.ellipse([24, 16, 104, 96], fill=(230, 200, 40), outline="white", width=4)
    draw.rectangle([0, 96, 128, 128], fill=(40, 160, 60))
    return png_base64(image)


def test_reference_only_on_forge_is_cached_and_still_applied(webui):
    """Forge's built-in ControlNet preprocessor reference_only (model-free) patches every self-attention and, in a
    conditioning modifier, runs the U-Net an extra time per step on the noised reference to record it: DeepCache
    off is reference_only alone, DeepCache on caches the plain run's steps with both calls of a cached step from
    cache, and the reference still changes the image."""
    if not webui.is_forge:
        pytest.skip("not Forge: reference_only is Forge's built-in preprocessor only there")
    modules = webui.request("/controlnet/module_list")
    if modules.status != 200 or "reference_only" not in modules.body.get("module_list", []):
        pytest.skip("the host has no 'reference_only' preprocessor")
    unit = {"enabled": True, "module": "reference_only", "model": "None", "image": reference_image(), "weight": 1.0,
            "resize_mode": "Crop and Resize", "threshold_a": 0.5, "guidance_start": 0.0, "guidance_end": 1.0}
    idle = {"enabled": False, "module": "None", "model": "None"}
    reference = {"ControlNet": {"args": [unit, idle, idle]}}

    def generate(deepcache, scripts):
        return webui.txt2img(deepcache, width=128, height=128, steps=8, alwayson_scripts=dict(scripts))

    alone, off = generate(None, reference), generate([False], reference)
    assert off.pixels() == alone.pixels()  # DeepCache off is off
    plain_cached = generate([True, 3, 0], {})
    log = ServerLog()
    both = generate([True, 3, 0], reference)
    assert "reference_only" in both.infotext and "DeepCache error" not in both.infotext, both.infotext
    assert CACHED.search(both.infotext).groups() == CACHED.search(plain_cached.infotext).groups(), both.infotext
    if log:  # two U-Net calls per step (recording, then the step's own), both from cache on a cached step
        cached, steps = map(int, CACHED.search(both.infotext).groups())
        assert log.stats_lines() == [(cached, steps, 2 * cached, 2 * steps)], log.text()[-3000:]
    assert alone.pixels() != generate(None, {}).pixels()  # the reference acts on this model ...
    assert both.pixels() != plain_cached.pixels()  # ... and still does with DeepCache on

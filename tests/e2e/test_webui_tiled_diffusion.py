"""This extension beside Tiled Diffusion (pkuliyi2015/multidiffusion-upscaler-for-automatic1111): MultiDiffusion
and Mixture of Diffusers call the U-Net once per tile (or per batch of tiles) at every step. Skipped when it is not
installed. With SDXL (``WEBUI_E2E_STEPS=4`` keeps it short on a CPU) the same grid applies."""
from __future__ import annotations

import pytest
from webui_client import CACHED, STEPS, ServerLog, require_script

SIZE = 256  # a 32x32 latent: tiles of 24 overlapping by 8 make a 2x2 grid; WEBUI_E2E_STEPS steps (8)


@pytest.fixture(scope="module")
def tiled(webui) -> None:
    require_script(webui, "tiled diffusion")


def tiled_args(method: str = "MultiDiffusion", tile: int = 24, tile_batch: int = 1) -> list:
    """The script's leading arguments (the webui keeps the defaults of the rest): enabled, method, overwrite
    size, keep input size, width, height, tile width, tile height (latent pixels), overlap, tile batch size."""
    return [True, method, False, True, 1024, 1024, tile, tile, 8, tile_batch]


def generate(webui, deepcache: list | None, args: list | None):
    scripts = {"Tiled Diffusion": {"args": args}} if args else {}
    return webui.txt2img(deepcache, width=SIZE, height=SIZE, steps=STEPS, alwayson_scripts=scripts)


@pytest.mark.parametrize("method", ["MultiDiffusion", "Mixture of Diffusers"])
def test_tiles_are_cached_as_planned_and_off_is_tiled_diffusion_alone(webui, tiled, method):
    plain = generate(webui, [True, 3, 0], None)
    log = ServerLog()
    tiles = generate(webui, [True, 3, 0], tiled_args(method))
    assert "Tiled Diffusion" in tiles.infotext and "DeepCache error" not in tiles.infotext
    assert CACHED.search(tiles.infotext).groups() == CACHED.search(plain.infotext).groups()
    if log:
        assert log.stats_lines()[-1][3] == 4 * STEPS  # four tiles, a U-Net call each per step
    alone = generate(webui, None, tiled_args(method))
    assert generate(webui, [False], tiled_args(method)).pixels() == alone.pixels()
    assert tiles.pixels() != alone.pixels()


def test_each_tile_reuses_only_its_own_features(webui, tiled):
    """Four tiles in four calls per step give the image of the four tiles in one call (one slot), up to the
    rounding by which batched and single tiles differ without DeepCache too: were the calls to share a slot,
    tiles 1-3 would be drawn with tile 0's deep features."""
    one_call = generate(webui, [True, 3, 0], tiled_args(tile_batch=4))
    four_calls = generate(webui, [True, 3, 0], tiled_args(tile_batch=1))
    rounding = generate(webui, [False], tiled_args(tile_batch=4)).difference(
        generate(webui, [False], tiled_args(tile_batch=1)))
    assert four_calls.difference(one_call) <= 2 * rounding + 0.5, (four_calls.difference(one_call), rounding)


def test_one_tile_covering_the_image_is_plain_deepcache(webui, tiled):
    """A grid of one tile makes Tiled Diffusion step aside; its region control with one region covering the
    image keeps its hook on, with one U-Net call per step over the whole latent: plain DeepCache's image."""
    region = [True, 0.0, 0.0, 1.0, 1.0, "", "", "Background", 0.2, 1234]
    args = tiled_args(tile=32) + ["None", 2.0, False, 10, 1, 1, 64, False, True, False, False] + region
    alone = webui.request("/sdapi/v1/txt2img", {"width": SIZE, "height": SIZE, "steps": 1, "alwayson_scripts": {
        "Tiled Diffusion": {"args": args}, "DeepCache": {"args": [False]}}})
    if alone.status != 200:  # its region control indexes SDXL's dict conditioning as a tensor
        pytest.skip(f"Tiled Diffusion's region control fails on this model without DeepCache: {alone.body}")
    covered = generate(webui, [True, 3, 0], args)
    assert "Tiled Diffusion" in covered.infotext
    assert covered.pixels() == generate(webui, [True, 3, 0], None).pixels()


@pytest.mark.parametrize("forecast", [False, True], ids=["adaptive", "adaptive with forecast"])
def test_adaptive_tiles_follow_one_decision_per_step(webui, tiled, forecast):
    """Four tiles, a call each per step: the step's first tile decides for the four, so every step is wholly full
    or wholly cached. With forecast each tile extends its own line (a slot per tile)."""
    adaptive = [{"enabled": True, "schedule": "adaptive", "interval": 4, "threshold": 0.3, "forecast": forecast}]
    log = ServerLog()
    tiles = generate(webui, adaptive, tiled_args())
    assert "Tiled Diffusion" in tiles.infotext and "DeepCache error" not in tiles.infotext
    assert "U-Net passes" not in tiles.infotext, tiles.infotext
    cached, steps = map(int, CACHED.search(tiles.infotext).groups())
    assert steps == STEPS and 0 < cached < STEPS, tiles.infotext
    if log:
        assert log.stats_lines()[-1] == (cached, STEPS, 4 * cached, 4 * STEPS)

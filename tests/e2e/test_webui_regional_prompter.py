"""This extension beside Regional Prompter (hako-mikan/sd-webui-regional-prompter). Attention mode replaces the
cross-attention of the U-Net's blocks; Latent mode turns ``batch_cond_uncond`` off for the run and calls the U-Net
once per region and once for the uncond at every step (three calls of one shape for two regions). Skipped when
it is not installed."""
from __future__ import annotations

import pytest
from webui_client import CACHED, ServerLog, require_script

PROMPT, SIZE, STEPS = "a red cat BREAK a blue dog", 128, 8


@pytest.fixture(scope="module")
def regional(webui) -> None:
    require_script(webui, "regional prompter")


def generate(webui, deepcache: list | None, mode: str | None):
    """Two regions side by side (Matrix, Columns, ratios 1,1)."""
    scripts = {"Regional Prompter": {"args": [True, False, "Matrix", "Columns", "Mask", "Prompt", "1,1", "0.2",
                                              False, False, False, mode]}} if mode else {}
    return webui.txt2img(deepcache, prompt=PROMPT, width=SIZE, height=SIZE, steps=STEPS, alwayson_scripts=scripts)


@pytest.mark.parametrize("mode,calls", [("Attention", 2), ("Latent", 3)])
def test_regions_are_cached_as_planned_and_off_is_regional_prompter_alone(webui, regional, mode, calls):
    """Each region's call reuses only its own features (keyed by its place among the step's calls): the counts
    are plain DeepCache's and every call of a planned retrieval step is served from cache."""
    plain = generate(webui, [True, 3, 0], None)
    log = ServerLog()
    regions = generate(webui, [True, 3, 0], mode)
    assert "RP Active" in regions.infotext and "DeepCache error" not in regions.infotext
    assert CACHED.search(regions.infotext).groups() == CACHED.search(plain.infotext).groups()
    if log:
        cached_steps, _, cached_passes, passes = log.stats_lines()[-1]
        assert (cached_passes, passes) == (calls * cached_steps, calls * STEPS)
    alone = generate(webui, None, mode)
    assert generate(webui, [False], mode).pixels() == alone.pixels()
    assert alone.pixels() != generate(webui, None, None).pixels()  # Regional Prompter does act
    assert regions.pixels() != plain.pixels()  # and still acts with DeepCache on

"""The UI estimate's retrieval costs: the benchmark's table for the loaded family, calibrated by the last run."""
import json
import re

from test_glue import generation, webui  # noqa: F401  (the fixture)

from deepcache.estimate import COSTS_ROUTE, FAMILIES, Calibration, estimate_html
from deepcache.stats import RunStats


def test_each_family_table_covers_its_branches():
    assert sorted(FAMILIES) == [9, 12]
    for depth, table in FAMILIES.items():
        assert len(table.costs) == depth and all(0 < c <= 1 for c in table.costs)


def test_uncalibrated_costs_follow_the_model_family():
    calibration = Calibration()
    assert calibration.costs(12)["costs"] == list(FAMILIES[12].costs)
    assert calibration.costs(9)["costs"] == list(FAMILIES[9].costs) and calibration.costs(9)["family"] == "SDXL"
    assert calibration.costs(None)["costs"] == list(FAMILIES[12].costs)  # nothing loaded: SD1's table


def test_a_measured_run_rescales_its_familys_table_only():
    calibration = Calibration()
    calibration.record(9, 2, RunStats(full_passes=7, cached_passes=13, full_seconds=7.0, cached_seconds=2.6))
    costs = calibration.costs(9)
    table = FAMILIES[9].costs
    assert costs["costs"][2] == 0.2
    assert costs["costs"][0] == round(table[0] * 0.2 / table[2], 4)
    assert "your last run" in costs["source"] and "branch 2" in costs["source"]
    assert calibration.costs(12)["costs"] == list(FAMILIES[12].costs)


def test_a_run_without_both_kinds_of_pass_does_not_calibrate():
    calibration = Calibration()
    calibration.record(12, 0, RunStats(full_passes=9, cached_passes=0, full_seconds=9.0))
    assert calibration.costs(12)["costs"] == list(FAMILIES[12].costs)


def test_a_generation_calibrates_the_estimate(webui):  # noqa: F811
    _, session, _ = generation(webui, [True, 3, 0])
    costs = session.calibration.costs(12)
    assert "your last run (branch 0" in costs["source"]
    assert 0 < costs["costs"][0] < 1 and costs["costs"] != list(FAMILIES[12].costs)


def test_the_placeholder_carries_costs_source_and_route():
    html = estimate_html(Calibration().costs(9))
    assert json.loads(re.search(r'data-costs="([^"]*)"', html)[1]) == list(FAMILIES[9].costs)
    assert f'data-route="{COSTS_ROUTE}"' in html and "SDXL" in html

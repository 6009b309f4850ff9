"""``python -m deepcache`` end to end on tiny U-Nets: the JSON the README and the closing notes quote."""
from __future__ import annotations

import json

import pytest

from deepcache import benchmark


def run_json(capsys: pytest.CaptureFixture, *args: str) -> dict:
    assert benchmark.main(["--size", "64", "--steps", "6", "--repeats", "1", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("arch", ["tiny", "tiny-sdxl"])
def test_benchmark_json_counts_the_passes_of_the_schedule(capsys, arch):
    r = run_json(capsys, "--arch", arch, "--interval", "3")
    assert (r["full_passes"], r["retrieval_passes"]) == (2, 4)  # steps 0 and 3 full, CFG in one batch
    assert r["full_steps"] == [0, 3]
    # a tiny U-Net's times are mostly Python overhead: only their consistency is checked here
    assert r["speedup"] > 0 and r["ideal_speedup"] > 0 and r["retrieval_over_full"] > 0
    assert r["achieved_over_ideal"] == pytest.approx(r["speedup"] / r["ideal_speedup"])
    assert -1 < r["disabled_overhead"] < 10 and -1 < r["disabled_overhead_total"] < 10
    assert 0 < r["max_abs_diff"] < 10 * r["latent_abs_mean"]  # the cache changes the image, a little


def test_benchmark_with_controlnet_reports_both_speedups(capsys):
    r = run_json(capsys, "--arch", "tiny", "--controlnet", "--branch", "1")
    assert r["speedup_without_controlnet"] == r["speedup"]
    assert r["with_over_without_controlnet"] == pytest.approx(r["speedup_with_controlnet"] / r["speedup"])


def test_refuses_a_branch_the_unet_does_not_have():
    with pytest.raises(SystemExit, match=r"--branch must be in \[0, 8\] for tiny-sdxl"):
        benchmark.main(["--arch", "tiny-sdxl", "--branch", "9", "--json"])


def test_disabled_overhead_pairs_steps_so_one_slow_step_does_not_count():
    clock = benchmark.Lockstep(["off", "disabled"])
    clock.steps = {"off": [1.0, 1.0, 1.0, 1.0, 1.0], "disabled": [1.01, 1.01, 1.01, 1.01, 1.5]}
    run = benchmark.Run(clock, {}, None, 0.0)
    assert run.disabled_overhead == pytest.approx(0.01)
    assert run.disabled_overhead_total == pytest.approx(0.108)


def test_benchmark_on_a_device_in_half_precision_reports_the_engines_cost_per_pass(capsys):
    r = run_json(capsys, "--arch", "tiny", "--device", "cpu", "--dtype", "bfloat16")
    assert (r["device"], r["device_name"], r["dtype"], r["compile"]) == ("cpu", "cpu", "bfloat16", None)
    assert (r["full_passes"], r["retrieval_passes"]) == (2, 4)
    assert r["engine_retrieval_s"] > 0 and r["bare_retrieval_s"] > 0
    assert r["wrapper_overhead_retrieval_us"] == pytest.approx(1e6 * (r["engine_retrieval_s"] - r["bare_retrieval_s"]))
    assert -1 < r["full_step_overhead"] < 10
    assert 0 < r["max_abs_diff"] < 10 * r["latent_abs_mean"]


def test_benchmark_compiles_every_copy_before_timing(capsys):
    """``--compile``: the compiled U-Nets (dynamo's eager backend here: no C++ toolchain needed) take the same
    passes; DeepCache on a compiled U-Net still skips its deep blocks."""
    r = run_json(capsys, "--arch", "tiny", "--compile", "eager")
    assert r["compile"] == "eager"
    assert (r["full_passes"], r["retrieval_passes"]) == (2, 4)
    assert r["speedup"] > 1


def test_the_device_synchronises_only_an_accelerator():
    calls = []
    cpu = benchmark.Device(benchmark.torch.device("cpu"), benchmark.torch.bfloat16)
    clock = benchmark.Lockstep(["a"], sync=lambda: calls.append("sync"))
    clock.run("a", lambda callback: [callback({}) for _ in range(3)])
    assert calls == ["sync"] * 8  # at the start and end of each of the 4 turns
    assert cpu.autocast().fast_dtype == benchmark.torch.bfloat16 and cpu.name() == "cpu"
    cpu.synchronize()  # nothing to wait for


def test_benchmark_reports_the_adaptive_probes_and_the_forecasts_cost_per_pass(capsys):
    r = run_json(capsys, "--arch", "tiny")
    for cost in ("probe", "forecast"):
        assert r[f"{cost}_s"] > 0
        assert r[f"{cost}_over_retrieval"] == pytest.approx(r[f"{cost}_s"] / r["engine_retrieval_s"])


def test_sweep_reports_drift_per_cost_for_every_schedule(capsys):
    """``--sweep``: the uncached run once, then each setting; more full passes drift less, and the analysis pairs
    the probe's change with the deep features' true change for every step the uniform schedule caches."""
    from deepcache import sweep

    assert sweep.main(["--sweep", "--arch", "tiny", "--steps", "8", "--intervals", "2,4", "--thresholds", "0,0.3",
                       "--bound", "4", "--analysis", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    rows = {(row["schedule"], row["interval"], row["threshold"]): row for row in r["rows"]}
    assert len(rows) == 10
    forecast, uniform = rows[("forecast", 4, None)], rows[("uniform", 4, None)]
    assert forecast["full_passes"] == uniform["full_passes"] and forecast["drift"] != uniform["drift"]
    assert rows[("uniform", 2, None)]["full_passes"] == 4 and rows[("uniform", 4, None)]["full_passes"] == 2
    assert rows[("uniform", 2, None)]["drift"] < rows[("uniform", 4, None)]["drift"]
    assert rows[("adaptive", 4, 0.0)]["full_passes"] == 8 and rows[("adaptive", 4, 0.0)]["drift"] == 0
    on_top = rows[("adaptive+forecast", 4, 0.3)]
    assert on_top["drift"] != rows[("adaptive", 4, 0.3)]["drift"]
    assert any(c["drift_over_base"] for c in r["comparison"] if c["schedule"] == "adaptive+forecast")
    assert len(r["analysis"]["points"]) == 6 and -1 <= r["analysis"]["spearman"] <= 1

import math

import pytest

from deepcache.params import DeepCacheParams
from deepcache.schedule import _non_uniform_positions, plan_full_steps


def full_steps(total, **kw):
    return [i for i, full in enumerate(plan_full_steps(DeepCacheParams(enabled=True, **kw), total)) if full]


def test_uniform():
    assert full_steps(20, interval=3) == [0, 3, 6, 9, 12, 15, 18]
    assert full_steps(10, interval=5) == [0, 5]


def test_interval_one_and_disabled_are_all_full():
    assert full_steps(7, interval=1) == list(range(7))
    assert all(plan_full_steps(DeepCacheParams(interval=3), 7))


def test_start_and_end_are_fractions_of_the_steps_run():
    assert full_steps(20, interval=3, start=0.4) == list(range(8)) + [8, 11, 14, 17]
    assert full_steps(20, interval=3, end=0.5) == [0, 3, 6, 9] + list(range(10, 20))
    # img2img at denoising 0.5 runs 11 steps: the window follows those 11, not the 20 requested
    assert full_steps(11, interval=3, start=0.4) == [0, 1, 2, 3, 4, 5, 8]


def test_final_full_steps():
    assert full_steps(20, interval=3, final_full_steps=2) == [0, 3, 6, 9, 12, 15, 18, 19]


@pytest.mark.parametrize("total,interval,center,expected", [
    (50, 5, 15, [0, 5, 9, 13, 17, 21, 26, 31, 37, 43]),
    (50, 3, 15, [0, 3, 6, 8, 11, 13, 15, 17, 20, 22, 25, 28, 32, 35, 38, 42, 46]),
])
def test_non_uniform_matches_the_papers_schedules(total, interval, center, expected):
    # published by horseee/DeepCache's sample_from_quad_center (pow 1.4, centre step 15)
    assert _non_uniform_positions(total, interval, center, 1.4) == expected
    assert full_steps(total, interval=interval, schedule="non-uniform", center=center / total) == expected


@pytest.mark.parametrize("total,interval", [(n, k) for n in range(1, 40) for k in range(2, 7)])
def test_non_uniform_always_gives_ceil_n_over_k_distinct_steps(total, interval):
    steps = full_steps(total, interval=interval, schedule="non-uniform")
    assert steps[0] == 0 and len(set(steps)) == len(steps) == math.ceil(total / interval)
    assert all(0 <= s < total for s in steps)


def reference_schedule():
    """``sample_from_quad_center`` of the installed DeepCache package (horseee/DeepCache), compiled from its source:
    importing the pipeline module that holds it would need transformers, which the function does not use."""
    import ast
    import importlib.util

    import numpy

    path = importlib.util.find_spec("DeepCache.sd.pipeline_stable_diffusion").origin
    tree = ast.parse(open(path, encoding="utf-8").read())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "sample_from_quad_center")
    namespace = {"np": numpy}
    exec(compile(ast.Module([node], []), path, "exec"), namespace)
    return namespace["sample_from_quad_center"]


def test_non_uniform_equals_the_reference_on_the_whole_grid():
    """4-60 steps x interval 2-10 x every centre step x pow 1.2/1.4/2.0, the centre given as the fraction
    c/steps (the UI's unit). Where the reference finds no pow > 1 it raises; the extension is uniform then."""
    import warnings

    reference = reference_schedule()
    compared = gave_up = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for steps in range(4, 61):
            for interval in range(2, 11):
                count = math.ceil(steps / interval)
                for centre in range(steps):
                    for power in (1.2, 1.4, 2.0):
                        ours = full_steps(steps, interval=interval, schedule="non-uniform", center=centre / steps,
                                          pow=power)
                        try:
                            expected = sorted(reference(steps, count, centre, power)[0])
                        except ValueError:
                            gave_up += 1
                            expected = list(range(0, steps, interval))
                        assert ours == [int(i) for i in expected], (steps, interval, centre, power)
                        compared += 1
    assert compared == 3 * sum(n * 9 for n in range(4, 61)) and gave_up < compared // 20


@pytest.mark.parametrize("steps,interval,center,power,expected", [
    (8, 2, 0.5, 2.0, [0, 3, 4, 6]),  # np.linspace rounding at exact integers (was [0, 2, 4, 6])
])
def test_non_uniform_known_differences_of_the_old_arithmetic(steps, interval, center, power, expected):
    assert full_steps(steps, interval=interval, schedule="non-uniform", center=center, pow=power) == expected


def test_non_uniform_centre_fraction_is_not_truncated_below_its_step():
    # 0.58 * 50 = 28.999999999999996: the centre is step 29, as the reference is given it
    assert full_steps(50, interval=3, schedule="non-uniform", center=0.58) == \
        sorted(reference_schedule()(50, 17, 29, 1.4)[0])

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

import pytest

from deepcache.params import PARAM_SPECS, DeepCacheParams


def test_defaults_are_off_interval_3_branch_0():
    p = DeepCacheParams()
    assert (p.enabled, p.interval, p.branch, p.start, p.end) == (False, 3, 0, 0.0, 1.0)
    assert [s.name for s in PARAM_SPECS] == list(DeepCacheParams.__dataclass_fields__)


@pytest.mark.parametrize("name,value,allowed", [
    ("interval", 0, "int in [1, 50]"), ("interval", 2.5, "int in [1, 50]"), ("branch", 12, "int in [0, 11]"),
    ("start", -0.1, "float in [0, 1]"), ("end", "x", "float in [0, 1]"), ("enabled", 1, "true or false"),
    ("schedule", "fast", "one of 'uniform', 'non-uniform'"), ("interval", True, "int in [1, 50]"),
    ("pow", 1.0, "float in [1.01, 3]"), ("start", float("nan"), "float in [0, 1]"),
])
def test_bad_values_name_the_parameter_and_its_range(name, value, allowed):
    with pytest.raises(ValueError) as err:
        DeepCacheParams(**{name: value})
    assert f"'{name}'" in str(err.value) and allowed in str(err.value)


def test_api_style_values_are_coerced():
    p = DeepCacheParams.from_args(["true", "4", 2.0, "0.25"])
    assert (p.enabled, p.interval, p.branch, p.start) == (True, 4, 2, 0.25)
    assert isinstance(p.interval, int) and isinstance(p.start, float)


def test_positional_args_follow_spec_order_and_missing_ones_default():
    p = DeepCacheParams.from_args([True, 5])
    assert p == DeepCacheParams(enabled=True, interval=5)
    assert DeepCacheParams.from_args(p.as_args()) == p


def test_named_args_in_a_leading_dict():
    assert DeepCacheParams.from_args([{"enabled": True, "branch": 3}]) == DeepCacheParams(enabled=True, branch=3)
    with pytest.raises(ValueError, match="unknown DeepCache parameter"):
        DeepCacheParams.from_args([{"intervall": 3}])


def test_too_many_args_rejected():
    with pytest.raises(ValueError, match="at most"):
        DeepCacheParams.from_args([True] + [3] * len(PARAM_SPECS))


def test_start_after_end_rejected():
    with pytest.raises(ValueError, match="'start'"):
        DeepCacheParams(start=0.6, end=0.5)


def test_infotext_lists_non_defaults_and_round_trips():
    p = DeepCacheParams(enabled=True, interval=4, schedule="non-uniform", hr_mode="own", hr_branch=2)
    text = p.infotext()
    assert text == {"DeepCache interval": 4, "DeepCache schedule": "non-uniform", "DeepCache hires": "own",
                    "DeepCache hires branch": 2}
    pasted = {"DeepCache": "13/20 steps cached", **{k: str(v) for k, v in text.items()}}
    assert DeepCacheParams.from_infotext(pasted) == p
    assert DeepCacheParams.from_infotext({"Steps": "20"}) == DeepCacheParams()


def test_hires_parameters():
    p = DeepCacheParams(enabled=True, interval=4, hr_interval=2, hr_branch=1, hr_start=0.1)
    assert p.for_hires() == p
    own = p.replace(hr_mode="own").for_hires()
    assert (own.interval, own.branch, own.start, own.end) == (2, 1, 0.1, 1.0)
    assert p.replace(hr_mode="off").for_hires() is None
    assert DeepCacheParams().for_hires() is None

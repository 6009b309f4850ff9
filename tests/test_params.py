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


@pytest.mark.parametrize("value", [10**400, -10**400, 10**5000, "1" + "0" * 400, "1e400"],
                         ids=["1e400", "-1e400", "1e5000", "str-1e400", "str-float-1e400"])
def test_numbers_too_big_for_a_float_are_refused_not_raised(value):
    for args in ([True, value], [True, 3, 0, value], [{"enabled": True, "pow": value}]):
        with pytest.raises(ValueError, match="must be") as err:
            DeepCacheParams.from_args(args)
        assert len(str(err.value)) < 200  # the value is named, not printed in full


@pytest.mark.parametrize("text,expected", [("3", 3), (" 3 ", 3), ("3.0", 3), ("+3", 3), ("\t4\n", 4), ("1e1", 10)])
def test_ascii_number_strings_are_accepted(text, expected):
    assert DeepCacheParams.from_args([True, text]).interval == expected


@pytest.mark.parametrize("text", ["\u0663", "\uff13", "3_0", "inf", "nan", "0x3", "\u20033", "3\u00a0", "", " ", "٣.0"])
def test_other_number_strings_are_refused(text):
    with pytest.raises(ValueError, match="'interval' must be int"):
        DeepCacheParams.from_args([True, text])


def test_fuzzed_args_only_ever_raise_value_error():
    import random

    rng = random.Random(1234)
    atoms = [None, True, False, 0, -1, 3, 2**63, 10**400, 1.5, float("nan"), float("inf"), -0.0, "", "3", "true",
             "\u0663", "x" * 10_000, [], [3], {}, {"interval": 3}, (1, 2), b"3", object(), 1j]
    names = [spec.name for spec in PARAM_SPECS] + ["bogus", "", "\u00e9"]
    for _ in range(2000):
        if rng.random() < 0.3:
            args = [{rng.choice(names): rng.choice(atoms) for _ in range(rng.randint(0, 4))}]
        else:
            args = [rng.choice(atoms) for _ in range(rng.randint(0, len(PARAM_SPECS) + 2))]
        try:
            DeepCacheParams.from_args(args)
        except ValueError as error:
            assert "DeepCache" in str(error)

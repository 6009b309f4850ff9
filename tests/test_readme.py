"""The README's API table is the contract API users code against: it must follow ``PARAM_SPECS``."""
import re
from pathlib import Path

from deepcache.params import PARAM_SPECS, SPECS_BY_NAME
from deepcache.xyz import AXIS_PARAMS, axis_label

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_api_table_matches_the_parameter_definitions():
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \| (\w+) \| ([^|]+) \| ([^|]+) \| `([^`]+)` \|", README, re.M)
    assert [(int(i), name, typ, allowed.strip(), label) for i, name, typ, _, allowed, label in rows] == [
        (i, s.name, s.type.__name__, s.allowed(), s.label) for i, s in enumerate(PARAM_SPECS)]


def test_xyz_axes_are_listed():
    for name in AXIS_PARAMS:
        assert f"`{axis_label(SPECS_BY_NAME[name])}`" in README


def test_one_version_named_by_the_changelog_and_the_package_metadata():
    import deepcache

    changelog = (Path(__file__).parents[1] / "CHANGELOG.md").read_text()
    assert re.search(r"^## (\S+) —", changelog, re.M).group(1) == deepcache.__version__
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'attr = "deepcache.__version__"' in pyproject
    assert (Path(__file__).parents[1] / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_the_api_table_is_the_generated_one():
    from deepcache.params import api_table

    assert api_table() in README

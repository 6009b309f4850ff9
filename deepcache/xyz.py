"""X/Y/Z plot axes for the main parameters, derived from ``PARAM_SPECS``.

An axis sets ``p.deepcache_overrides`` on the cell's own copy of ``p`` (a fresh dict each time, so nothing
reaches other cells or later generations); ``Session.start`` applies it over the script args.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .params import SPECS_BY_NAME, ParamSpec
from .session import OVERRIDES_ATTR

AXIS_PARAMS = ("enabled", "interval", "branch", "start", "end", "schedule", "threshold", "forecast")
AXIS_PREFIX = "[DeepCache] "


def axis_label(spec: ParamSpec) -> str:
    return AXIS_PREFIX + ("Enabled" if spec.name == "enabled" else spec.label.removeprefix("DeepCache ").capitalize())


def apply_param(name: str) -> Callable[[Any, Any, Any], None]:
    spec = SPECS_BY_NAME[name]

    def apply(p: Any, value: Any, _values: Any) -> None:
        setattr(p, OVERRIDES_ATTR, {**getattr(p, OVERRIDES_ATTR, {}), name: spec.coerce(value)})

    return apply


def confirm_param(name: str) -> Callable[[Any, Any], None]:
    """Reject a bad axis value before the grid starts, with the same message as a bad script arg."""
    spec = SPECS_BY_NAME[name]

    def confirm(_p: Any, values: Any) -> None:
        for value in values:
            spec.coerce(value)

    return confirm


def add_axes(xyz_grid: Any) -> bool:
    """Extend ``xyz_grid.axis_options`` once (``before_ui`` fires again on "Reload UI"). Only our own labels
    count: aria1th/sd-webui-deepcache-standalone adds axes under the same "[DeepCache] " prefix."""
    ours = {axis_label(SPECS_BY_NAME[name]) for name in AXIS_PARAMS}
    if any(getattr(option, "label", "") in ours for option in xyz_grid.axis_options):
        return False
    for name in AXIS_PARAMS:
        spec = SPECS_BY_NAME[name]
        if spec.type is bool:
            xyz_grid.axis_options.append(xyz_grid.AxisOption(
                axis_label(spec), str, apply_param(name), confirm=confirm_param(name),
                choices=lambda: ["False", "True"]))  # A1111's boolean_choice(reverse=True); Forge Classic lacks it
        elif spec.choices:
            xyz_grid.axis_options.append(xyz_grid.AxisOption(
                axis_label(spec), str, apply_param(name), confirm=confirm_param(name),
                choices=lambda spec=spec: list(spec.choices)))
        else:
            xyz_grid.axis_options.append(xyz_grid.AxisOption(
                axis_label(spec), spec.type, apply_param(name), confirm=confirm_param(name)))
    return True

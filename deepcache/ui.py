"""Gradio controls for the script, derived from ``PARAM_SPECS`` (works with Gradio 3 in A1111 and 4 in Forge)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .estimate import estimate_html
from .params import PARAM_SPECS, ParamSpec

MAIN_ROWS = (("interval", "branch"), ("start", "end"))
SHOWN_AFTER = {"threshold": "schedule", "forecast": "threshold"}  # an advanced control shown after its partner


def control(gr: Any, spec: ParamSpec, elem_id: Callable[[str], str], value: Any = None, visible: bool = True) -> Any:
    """One Gradio component for a parameter: a radio for choices, a checkbox for a flag, else a slider."""
    value = spec.default if value is None else value
    common = dict(label=spec.label.removeprefix("DeepCache ").capitalize(), value=value, visible=visible,
                  elem_id=elem_id(spec.name), elem_classes=["deepcache-control"])
    if spec.choices:
        return gr.Radio(choices=list(spec.choices), **common)
    if spec.type is bool:
        return gr.Checkbox(**common)
    return gr.Slider(minimum=spec.minimum, maximum=spec.maximum, step=spec.step, **common)


def build(gr: Any, accordion: Callable[..., Any], elem_id: Callable[[str], str],
          defaults: dict[str, Any], max_branch: Callable[[], int], costs: dict[str, Any]) -> list[Any]:
    """The accordion with the enable box in its header, the main sliders, an estimate line and an advanced
    group; returns the components in ``PARAM_SPECS`` order (the script's positional args). Turning it on
    sets the branch sliders' maximum to what the loaded model has (11 for SD1/SD2, 8 for SDXL). ``costs`` are
    the estimate's first retrieval costs (``Calibration.costs``); the JavaScript refreshes them."""
    made: dict[str, Any] = {}
    enabled = PARAM_SPECS[0]
    with accordion(False, label=enabled.label, elem_id=elem_id("accordion")) as made[enabled.name]:
        for row in MAIN_ROWS:
            with gr.Row():
                for name in row:
                    made[name] = control(gr, _spec(name), elem_id, defaults.get(name))
        gr.HTML(estimate_html(costs), elem_id=elem_id("estimate"))
        with gr.Accordion("Advanced", open=False, elem_id=elem_id("advanced")):
            for spec in advanced_order():
                # the threshold acts on the adaptive schedule only: shown with it
                visible = spec.name != "threshold" or made["schedule"].value == "adaptive"
                made[spec.name] = control(gr, spec, elem_id, defaults.get(spec.name), visible)
    made["enabled"].change(fn=lambda: [gr.update(maximum=max_branch())] * 2, inputs=[],
                           outputs=[made["branch"], made["hr_branch"]], show_progress=False)
    # also when a pasted infotext selects the schedule
    made["schedule"].change(fn=lambda schedule: gr.update(visible=schedule == "adaptive"), inputs=[made["schedule"]],
                            outputs=[made["threshold"]], show_progress=False)
    return [made[spec.name] for spec in PARAM_SPECS]


def advanced_order() -> list[ParamSpec]:
    """The advanced controls in ``PARAM_SPECS`` order, except that each of ``SHOWN_AFTER`` follows its partner
    (new parameters are appended to ``PARAM_SPECS`` for the API's positional order, not where they belong)."""
    order = [spec for spec in PARAM_SPECS if spec.advanced and spec.name not in SHOWN_AFTER]
    for name, after in SHOWN_AFTER.items():
        order.insert(order.index(_spec(after)) + 1, _spec(name))
    return order


def _spec(name: str) -> ParamSpec:
    return next(spec for spec in PARAM_SPECS if spec.name == name)

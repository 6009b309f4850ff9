"""The speed-up a user can expect before generating, shown live in the UI.

``RETRIEVAL_COST`` is the cost of a retrieval step relative to a full step for each branch, measured by
``python -m deepcache --size 256 --plot`` (SD1.5 U-Net, CPU); the UI's JavaScript receives it with the
plan rule so that the estimate follows the sliders without a server round trip.
"""
from __future__ import annotations

import html
import json

from .params import PARAM_SPECS

RETRIEVAL_COST: tuple[float, ...] = (0.06, 0.19, 0.28, 0.33, 0.45, 0.52, 0.59, 0.67, 0.8, 0.87, 0.87, 0.91)


def estimate_html() -> str:
    """The placeholder the script's JavaScript fills in, carrying the costs and the controls' help texts."""
    help_texts = {spec.name: spec.help for spec in PARAM_SPECS}
    return (f'<span class="deepcache-estimate" data-costs="{html.escape(json.dumps(RETRIEVAL_COST))}" '
            f'data-help="{html.escape(json.dumps(help_texts))}"></span>')

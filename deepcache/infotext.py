"""The infotext entries DeepCache writes beside its parameters' own (``DeepCacheParams.infotext``)."""
from __future__ import annotations

from .params import PARAM_SPECS

STATS_KEY = PARAM_SPECS[0].label  # "DeepCache": its presence in an infotext means "enabled"
ERROR_KEY = "DeepCache error"
VERSION_KEY = "DeepCache version"
INFOTEXT_KEYS = (STATS_KEY, ERROR_KEY, VERSION_KEY) + tuple(spec.label for spec in PARAM_SPECS[1:])

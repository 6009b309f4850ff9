"""Every DeepCache parameter, defined once.

The UI, the API's positional order, the infotext keys, paste-back and the X/Y/Z axes are all derived from
``PARAM_SPECS``; nothing else in the project lists the parameters again.
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SCHEDULES = ("uniform", "non-uniform", "adaptive")
# What a JSON client sends for a number in a string: ASCII digits only ("3", " 3 ", "3.0", "1e1"); float() alone
# would also take "٣", "3_0", "inf" and "nan".
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_BLANKS = " \t\r\n"
HIRES_MODES = ("same", "own", "off")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its type, allowed range or choices, default, and the human-readable infotext key."""

    name: str
    type: type
    default: Any
    label: str
    help: str
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None
    advanced: bool = False

    def allowed(self) -> str:
        if self.type is bool:
            return "true or false"
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        return f"{self.type.__name__} in [{_fmt(self.minimum)}, {_fmt(self.maximum)}]"

    def coerce(self, value: Any) -> Any:
        """Convert a UI/API/infotext value to this type, or raise ``ValueError`` naming the parameter.

        Never raises anything else, whatever ``value`` is (an int of 400 digits, a list, a NaN)."""
        try:
            converted = self._convert(value)
            valid = converted is not None and self._in_range(converted)
        except (ArithmeticError, TypeError, ValueError):
            valid = False
        if not valid:
            raise ValueError(f"DeepCache parameter '{self.name}' must be {self.allowed()}, got {_short_repr(value)}")
        return converted

    def _convert(self, value: Any) -> Any:
        if self.type is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip(_BLANKS).lower() in ("true", "false"):
                return value.strip(_BLANKS).lower() == "true"
            return None
        if isinstance(value, bool):
            return None
        if self.type is str:
            return value if isinstance(value, str) else None
        if isinstance(value, str):
            text = value.strip(_BLANKS)
            if not _NUMBER.fullmatch(text):
                return None
            value = float(text)
        if isinstance(value, int):
            return value if self.type is int else float(value)  # float() of a huge int raises OverflowError
        if not isinstance(value, float) or not math.isfinite(value):
            return None
        if self.type is int:
            return int(value) if value.is_integer() else None
        return value

    def _in_range(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if self.minimum is not None and value < self.minimum:
            return False
        return self.maximum is None or value <= self.maximum


def _short_repr(value: Any, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters: a 400-digit number or a long list must not flood the infotext."""
    if isinstance(value, int) and value.bit_length() > 4 * limit:
        return f"<int of about {int(value.bit_length() * math.log10(2)) + 1} digits>"
    try:
        text = repr(value)
    except Exception:  # a value whose repr fails is still refused with a message
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _fmt(x: float | None) -> str:
    return "-inf" if x is None else f"{x:g}"


MAX_BRANCH = 11  # SD1/SD2 have 12 input blocks; the loaded model may allow fewer (SDXL: 8), checked at install.

PARAM_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("enabled", bool, False, "DeepCache", "Turn DeepCache on for this generation."),
    ParamSpec("interval", int, 3, "DeepCache interval",
              "Every N-th step runs the whole U-Net; the steps between reuse its deep features (1 = off).",
              1, 50, 1),
    ParamSpec("branch", int, 0, "DeepCache branch",
              "How many shallow blocks are recomputed on cached steps: 0 is fastest, higher keeps more detail.",
              0, MAX_BRANCH, 1),
    ParamSpec("start", float, 0.0, "DeepCache start",
              "Fraction of the steps actually run before caching may start.", 0.0, 1.0, 0.01),
    ParamSpec("end", float, 1.0, "DeepCache end",
              "Fraction of the steps actually run after which every step is full again.", 0.0, 1.0, 0.01),
    ParamSpec("final_full_steps", int, 0, "DeepCache final full steps",
              "This many last steps always run the whole U-Net.", 0, 100, 1, advanced=True),
    ParamSpec("schedule", str, "uniform", "DeepCache schedule",
              "uniform: every N-th step is full; non-uniform: the paper's 1:N schedule, full steps dense "
              "around the centre; adaptive: a step runs in full when the shallow features moved more than the "
              "threshold since the last full step (at least every N-th).", choices=SCHEDULES, advanced=True),
    ParamSpec("pow", float, 1.4, "DeepCache pow",
              "Non-uniform schedule: how strongly full steps gather around the centre.", 1.01, 3.0, 0.01,
              advanced=True),
    ParamSpec("center", float, 0.3, "DeepCache center",
              "Non-uniform schedule: where the full steps are densest, as a fraction of the run.", 0.0, 1.0, 0.01,
              advanced=True),
    ParamSpec("hr_mode", str, "same", "DeepCache hires",
              "Hires-fix pass: same settings as the first pass, its own interval/branch/start/end, or off.",
              choices=HIRES_MODES, advanced=True),
    ParamSpec("hr_interval", int, 3, "DeepCache hires interval", "Hires pass interval (hires 'own').",
              1, 50, 1, advanced=True),
    ParamSpec("hr_branch", int, 0, "DeepCache hires branch", "Hires pass branch (hires 'own').",
              0, MAX_BRANCH, 1, advanced=True),
    ParamSpec("hr_start", float, 0.0, "DeepCache hires start", "Hires pass start (hires 'own').",
              0.0, 1.0, 0.01, advanced=True),
    ParamSpec("hr_end", float, 1.0, "DeepCache hires end", "Hires pass end (hires 'own').",
              0.0, 1.0, 0.01, advanced=True),
    # new parameters go at the end: API clients pass args by position
    ParamSpec("threshold", float, 0.5, "DeepCache threshold",
              "Adaptive schedule: how far the shallow features may move (relative mean change) before a step "
              "refreshes the cache; lower keeps more detail and caches fewer steps.", 0.0, 2.0, 0.01,
              advanced=True),
    ParamSpec("forecast", bool, False, "DeepCache forecast",
              "On cached steps, extrapolate the deep features from the last two full steps (first order in the "
              "timestep) instead of reusing the last ones as they are: less drift for the same speed.",
              advanced=True),
)

SPECS_BY_NAME: dict[str, ParamSpec] = {spec.name: spec for spec in PARAM_SPECS}


@dataclass(frozen=True)
class DeepCacheParams:
    """A validated parameter set; constructing one with a bad value raises ``ValueError``."""

    enabled: bool = False
    interval: int = 3
    branch: int = 0
    start: float = 0.0
    end: float = 1.0
    final_full_steps: int = 0
    schedule: str = "uniform"
    pow: float = 1.4
    center: float = 0.3
    hr_mode: str = "same"
    hr_interval: int = 3
    hr_branch: int = 0
    hr_start: float = 0.0
    hr_end: float = 1.0
    threshold: float = 0.5
    forecast: bool = False

    def __post_init__(self) -> None:
        for spec in PARAM_SPECS:
            object.__setattr__(self, spec.name, spec.coerce(getattr(self, spec.name)))
        for lo, hi in (("start", "end"), ("hr_start", "hr_end")):
            if getattr(self, lo) > getattr(self, hi):
                raise ValueError(f"DeepCache parameter '{lo}' ({getattr(self, lo):g}) must not exceed "
                                 f"'{hi}' ({getattr(self, hi):g})")

    @classmethod
    def from_args(cls, args: Sequence[Any]) -> DeepCacheParams:
        """Build from positional args in ``PARAM_SPECS`` order (missing trailing args take defaults).

        A first element that is a dict is read as named args instead (``{"enabled": true, "interval": 4}``),
        the usual way webui API clients pass named script args.
        """
        args = list(args)
        if args and isinstance(args[0], Mapping):
            return cls.from_mapping(args[0])
        if len(args) > len(PARAM_SPECS):
            raise ValueError(f"DeepCache takes at most {len(PARAM_SPECS)} args, got {len(args)}")
        return cls(**{spec.name: value for spec, value in zip(PARAM_SPECS, args)})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DeepCacheParams:
        unknown = sorted(_short_repr(key) for key in values if key not in SPECS_BY_NAME)
        if unknown:
            raise ValueError(f"unknown DeepCache parameter(s) {', '.join(unknown)}; known: {', '.join(SPECS_BY_NAME)}")
        return cls(**dict(values))

    def replace(self, **changes: Any) -> DeepCacheParams:
        return dataclasses.replace(self, **changes)

    def for_hires(self) -> DeepCacheParams | None:
        """The parameters of the hires-fix pass, or None when DeepCache is off for it."""
        if not self.enabled or self.hr_mode == "off":
            return None
        if self.hr_mode == "same":
            return self
        return self.replace(interval=self.hr_interval, branch=self.hr_branch, start=self.hr_start, end=self.hr_end)

    def as_args(self) -> list[Any]:
        return [getattr(self, spec.name) for spec in PARAM_SPECS]

    def infotext(self) -> dict[str, Any]:
        """Infotext entries: the enable key always, every other parameter only when it differs from its default
        (so a pasted infotext restores exactly this set, and defaults stay out of the text)."""
        entries: dict[str, Any] = {}
        for spec in PARAM_SPECS[1:]:
            value = getattr(self, spec.name)
            if value != spec.default and (not spec.name.startswith("hr_") or spec.name == "hr_mode"
                                          or self.hr_mode == "own"):
                entries[spec.label] = value
        return entries

    @classmethod
    def from_infotext(cls, fields: Mapping[str, Any]) -> DeepCacheParams:
        """Inverse of ``infotext``: parameters absent from the text take their defaults."""
        values: dict[str, Any] = {}
        for spec in PARAM_SPECS[1:]:
            if spec.label in fields:
                values[spec.name] = spec.coerce(fields[spec.label])
        return cls(enabled=PARAM_SPECS[0].label in fields, **values)


def api_table() -> str:
    """The README's API table (positional order, type, default, allowed values, infotext key, meaning), generated
    here so that it cannot drift from ``PARAM_SPECS``: ``python -c "from deepcache.params import api_table;
    print(api_table())"``; ``tests/test_readme.py`` checks the README holds it."""

    def shown(spec: ParamSpec) -> str:
        if spec.type is bool:
            return str(spec.default).lower()
        return f'"{spec.default}"' if spec.type is str else f"{spec.default:g}"

    rows = ["| # | name | type | default | allowed | infotext key | meaning |", "|---|---|---|---|---|---|---|"]
    rows += [f"| {i} | `{s.name}` | {s.type.__name__} | {shown(s)} | {s.allowed()} | `{s.label}` | {s.help} |"
             for i, s in enumerate(PARAM_SPECS)]
    return "\n".join(rows)

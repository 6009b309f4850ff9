"""Webui-independent glue between a generation (``p``) and the engine, shared by the A1111 and Forge adapters.

One ``Session`` per webui process. The script calls it at the lifecycle points; the adapter says how to find
the U-Net, how to capture the sampler's schedule and how the webui signals a step.
"""
from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from torch import nn

from . import __version__
from .controlnet import ControlNetSatellites
from .engine import DeepCacheEngine, EngineConflict
from .estimate import Calibration
from .params import PARAM_SPECS, DeepCacheParams
from .peers import peer_hook
from .stats import RunStats
from .structure import UnsupportedModel

log = logging.getLogger("deepcache")

STATS_KEY = PARAM_SPECS[0].label  # "DeepCache": its presence in an infotext means "enabled"
ERROR_KEY = "DeepCache error"
VERSION_KEY = "DeepCache version"
INFOTEXT_KEYS = (STATS_KEY, ERROR_KEY, VERSION_KEY) + tuple(spec.label for spec in PARAM_SPECS[1:])
OVERRIDES_ATTR = "deepcache_overrides"  # set on a copied ``p`` by the X/Y/Z axes
MARK_ATTR = "deepcache_generation"  # set on ``p`` by ``start``; a shallow copy of ``p`` carries it along
GENERATION_STATE = ("p", "mark", "task", "engine", "controlnets", "params", "pending", "runs", "pending_label",
                    "run_label", "generation_params")  # what a nested generation saves of the one around it


class Adapter(Protocol):
    """What a webui must provide."""

    name: str
    reports_calls: bool  # U-Net calls are reported by a wrapper the webui may let another extension replace

    def unet(self, p: Any) -> nn.Module:
        """The U-Net of the model ``p`` samples with; raises ``UnsupportedModel`` for anything else."""

    def unet_of_model(self, model: Any) -> nn.Module:
        """The U-Net of a loaded model (``shared.sd_model``)."""

    def install(self, session: Session, unet: nn.Module) -> None:
        """Install the session's engine on ``unet`` the way this webui reports U-Net calls."""

    def prepare(self, p: Any, session: Session) -> None:
        """Arrange for ``session.begin_run`` to be called once the run's schedule is known."""

    def release(self) -> None:
        """Undo whatever ``prepare`` attached to webui objects."""

    def control_models(self, p: Any) -> list[nn.Module]:
        """The ControlNet models (any kind) that will run beside the U-Net in this generation."""

    def task(self) -> Hashable | None:
        """What tells the webui's jobs apart (one API request, one Generate click); None when unknown."""

    def conflict(self) -> str | None:
        """Why DeepCache must not act on the run about to sample (another cache or wrapper decides which U-Net
        calls run), asked at its first denoiser call when every extension's patch is in place; None if nothing."""


def resolve_params(args: Sequence[Any], overrides: dict[str, Any] | None = None) -> DeepCacheParams:
    """Script args (UI values, API JSON) plus X/Y/Z overrides. An axis other than "enabled" turns
    DeepCache on, so that a sweep over intervals needs no second axis."""
    params = DeepCacheParams.from_args(args)
    if overrides:
        changes = dict(overrides)
        if "enabled" not in changes:
            changes["enabled"] = True
        params = DeepCacheParams.from_mapping({**{s.name: getattr(params, s.name) for s in PARAM_SPECS}, **changes})
    return params


@dataclass
class Enclosing:
    """A generation suspended while one started inside it runs (ADetailer inpaints from ``postprocess_image``)."""

    state: dict[str, Any]  # its GENERATION_STATE
    adapter_state: dict[str, Any]  # the adapter's attributes, which hold one generation's run at a time
    infotext: dict[str, Any] | None  # its DeepCache entries, when the nested generation writes into the same dict


class Session:
    """The state of the generation in progress: its parameters, the engine, the stats of its runs.

    A generation started inside another one of the same webui job (ADetailer's inpainting passes run while the
    outer generation has batches and a hires pass to go) gets a state of its own, engine included, and leaves
    the outer one exactly as it was, infotext entries too. A copy of the generation's ``p`` (ADetailer calls
    ``process`` and ``postprocess`` on ``copy(p)`` to restore the scripts) is the same generation."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self.calibration = Calibration()
        self.print_stats = True
        self.warned: set[str] = set()
        self.enclosing: list[Enclosing] = []
        self._reset()

    def _reset(self) -> None:
        self.p: Any = None  # the processing object of the generation in progress
        self.mark: object | None = None
        self.task: Hashable | None = None
        self.engine = DeepCacheEngine()
        self.controlnets = ControlNetSatellites(self.engine)
        self.params: DeepCacheParams | None = None
        self.pending: DeepCacheParams | None = None
        self.runs: list[tuple[str, RunStats]] = []
        self.pending_label = self.run_label = ""  # "hires" for the hires-fix pass
        self.generation_params: dict[str, Any] = {}  # the infotext entries of the generation in progress

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def start(self, p: Any, args: Sequence[Any]) -> DeepCacheParams | None:
        """A new generation: drop any leftover hook, read the parameters, write their infotext. Inside a
        generation of the same job, a nested one (its own state); a copy of the current ``p`` changes nothing."""
        if self._is_copy(p):
            return self.params
        task = self.adapter.task()
        if self.p is not None and p is not self.p and task is not None and task == self.task:
            self._enter(p)
        else:
            self.cleanup()
        self.p, self.task, self.mark = p, task, object()
        try:
            setattr(p, MARK_ATTR, self.mark)
        except AttributeError:  # a processing object without a __dict__: its copies cannot be recognised
            pass
        for key in INFOTEXT_KEYS:  # X/Y/Z cells share one dict: never carry a previous cell's keys
            p.extra_generation_params.pop(key, None)
        try:
            params = resolve_params(args, getattr(p, OVERRIDES_ATTR, None))
        except ValueError as error:
            self.warn(f"{error}; generating without DeepCache")
            p.extra_generation_params[ERROR_KEY] = str(error).replace(",", ";")
            return None
        if not params.enabled:
            return None
        self.params = params
        p.extra_generation_params[STATS_KEY] = "on"
        p.extra_generation_params.update(params.infotext())
        p.extra_generation_params[VERSION_KEY] = __version__
        return params

    def before_sampling(self, p: Any, hires: bool) -> None:
        """A sampling run is about to start (first pass, hires pass, each batch)."""
        self.collect()
        self.adapter.release()
        run_params = None
        if self.params is not None:
            run_params = self.params.for_hires() if hires else self.params
        if run_params is None:
            self.pending = None
            return
        self.generation_params = p.extra_generation_params
        try:
            unet = self.adapter.unet(p)
            self._check_peers(unet)
            self.adapter.install(self, unet)
            self.engine.check_branch(run_params.branch)
            attached = sum(self.controlnets.attach(model) for model in self.adapter.control_models(p))
            if attached and self.print_stats:
                print(f"[DeepCache] {attached} ControlNet(s) follow the cache: retrieval steps skip their deep blocks")
        except (UnsupportedModel, EngineConflict, ValueError) as error:
            self._refuse(error)
            return
        self.pending = run_params
        self.pending_label = "hires" if hires else ""
        self.adapter.prepare(p, self)

    def begin_run(self, total_steps: int, schedule: Sequence[float] | None) -> None:
        """Called by the adapter at the first denoiser call of a run, when every extension's hook is in place."""
        if self.pending is None or not self.engine.installed:
            return
        try:
            self._check_peers(self.engine.unet)
            conflict = self.adapter.conflict()
            if conflict is not None:
                raise EngineConflict(conflict)
        except EngineConflict as error:
            self._refuse(error)
            return
        self.collect()
        self.engine.begin_run(self.pending, total_steps, schedule)
        self.run_label = self.pending_label

    def after_sampling(self, p: Any) -> None:
        """The batch's sampling is over (both passes): unhook, and write this batch's stats."""
        self.collect()
        self._unhook()
        if self.params is not None and self.runs and STATS_KEY in p.extra_generation_params:
            p.extra_generation_params[STATS_KEY] = " + ".join(
                (f"{label} " if label else "") + stats.cached_text() for label, stats in self.runs)
        self.runs = []

    def end(self, p: Any) -> None:
        """The generation of ``p`` is over (``postprocess``): unhook; back to the enclosing generation if any."""
        if self._is_copy(p):
            return
        if self.enclosing and p is self.p:
            self._leave()
        else:
            self.cleanup()

    def cleanup(self) -> None:
        """Remove every hook and forget every generation (a new job, a failure, unload)."""
        while self.enclosing:
            self._leave()
        self._unhook()
        self._reset()

    # ---- nesting -----------------------------------------------------------------------------------------
    def _is_copy(self, p: Any) -> bool:
        return self.p is not None and p is not self.p and getattr(p, MARK_ATTR, None) is self.mark

    def _enter(self, p: Any) -> None:
        """Suspend the generation in progress for one started inside it."""
        outer = self.p.extra_generation_params
        shared = getattr(p, "extra_generation_params", None) is outer
        self.enclosing.append(Enclosing({name: getattr(self, name) for name in GENERATION_STATE},
                                        dict(vars(self.adapter)),
                                        {k: outer[k] for k in INFOTEXT_KEYS if k in outer} if shared else None))
        self._reset()

    def _leave(self) -> None:
        """End the nested generation and resume the one around it as it was."""
        self._unhook()
        outer = self.enclosing.pop()
        for name, value in outer.state.items():
            setattr(self, name, value)
        vars(self.adapter).clear()
        vars(self.adapter).update(outer.adapter_state)
        if outer.infotext is not None:
            entries = self.p.extra_generation_params
            for key in INFOTEXT_KEYS:
                entries.pop(key, None)
            entries.update(outer.infotext)

    # ---- helpers -----------------------------------------------------------------------------------------
    @staticmethod
    def _check_peers(unet: nn.Module) -> None:
        peer = peer_hook(unet)
        if peer is not None:
            raise EngineConflict(f"another DeepCache extension ('{peer}') hooks this U-Net: disable it or this one "
                                 "so that two caches never stack")

    def _refuse(self, error: Exception) -> None:
        """Generate this run without DeepCache: console line (once), ``DeepCache error`` in the infotext."""
        self._report(error)
        self._unhook()
        self.pending = None

    def _report(self, error: Exception) -> None:
        self.warn(f"{error}; generating without DeepCache")
        self.generation_params[ERROR_KEY] = str(error).replace(",", ";")
        self.generation_params.pop(STATS_KEY, None)

    def _unhook(self) -> None:
        self.controlnets.detach_all()
        self.engine.uninstall()
        self.adapter.release()

    def collect(self) -> None:
        """End the engine's run, if any: keep its stats for the infotext and its pass times for the estimate."""
        branch = self.engine.branch if self.engine.running else None
        layout = self.engine.layout
        stats = self.engine.end_run()
        if stats is not None and stats.steps:
            self.runs.append((self.run_label, stats))
            if layout is not None and branch is not None:
                self.calibration.record(layout.depth, branch, stats)
            if self.print_stats:
                print(f"[DeepCache {__version__}]{' ' + self.run_label if self.run_label else ''} {stats.summary()}")
        elif stats is not None and self.adapter.reports_calls:
            # the run began at the webui's first denoiser call, yet no U-Net call was reported: another
            # extension replaced the U-Net function wrapper without calling ours (Forge Neo's Spectrum does)
            self._report(RuntimeError("another extension replaced the U-Net function wrapper (e.g. a cache such as "
                                      "Spectrum): it ran this sampling, so DeepCache did not; disable one of them"))

    def warn(self, message: str) -> None:
        """Print a warning once per process (a model DeepCache cannot handle is not news at every image); the
        infotext carries it for every image."""
        log.debug(message)
        if message not in self.warned:
            self.warned.add(message)
            print(f"[DeepCache] {message}")

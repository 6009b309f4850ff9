"""Webui-independent glue between a generation (``p``) and the engine, shared by the A1111 and Forge adapters.

One ``Session`` per webui process. The script calls it at the lifecycle points; the adapter says how to find
the U-Net, how to capture the sampler's schedule and how the webui signals a step.
"""
from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from typing import Any

from torch import nn

from . import __version__
from .adapter import Adapter
from .controlnet import ControlNetSatellites
from .engine import DeepCacheEngine, EngineConflict
from .estimate import Calibration
from .infotext import ERROR_KEY, INFOTEXT_KEYS, STATS_KEY, VERSION_KEY
from .nesting import EnclosingGenerations
from .params import PARAM_SPECS, DeepCacheParams
from .peers import peer_hook
from .stats import RunStats
from .structure import UnsupportedModel

log = logging.getLogger("deepcache")

OVERRIDES_ATTR = "deepcache_overrides"  # set on a copied ``p`` by the X/Y/Z axes
MARK_ATTR = "deepcache_generation"  # set on ``p`` by ``start``; a shallow copy of ``p`` carries it along


def resolve_params(args: Sequence[Any], overrides: dict[str, Any] | None = None) -> DeepCacheParams:
    """Script args (UI values, API JSON) plus X/Y/Z overrides. An axis other than "enabled" turns
    DeepCache on, so that a sweep over intervals needs no second axis; a threshold axis selects the adaptive
    schedule (unless a schedule axis is there too)."""
    params = DeepCacheParams.from_args(args)
    if overrides:
        changes = dict(overrides)
        if "enabled" not in changes:
            changes["enabled"] = True
        if "threshold" in changes and "schedule" not in changes:
            changes["schedule"] = "adaptive"  # a threshold acts on the adaptive schedule only
        params = DeepCacheParams.from_mapping({**{s.name: getattr(params, s.name) for s in PARAM_SPECS}, **changes})
    return params


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
        self.enclosing = EnclosingGenerations()
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
        self.told: set[str] = set()  # stand-downs this generation has printed

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def start(self, p: Any, args: Sequence[Any]) -> DeepCacheParams | None:
        """A new generation: drop any leftover hook, read the parameters, write their infotext. Inside a
        generation of the same job, a nested one (its own state); a copy of the current ``p`` changes nothing."""
        if self._is_copy(p):
            return self.params
        task = self.adapter.task()
        if self.p is not None and p is not self.p and task is not None and task == self.task:
            self.enclosing.suspend(self, p)
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
            self._check_peers(self.engine.unet)  # another extension installed: said once per process
        except EngineConflict as error:
            self._refuse(error)
            return
        conflict = self.adapter.conflict()  # what the user turned on for this generation: said at each one
        if conflict is not None:
            self._refuse(EngineConflict(conflict), stand_down=True)
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
            self._resume_enclosing()
        else:
            self.cleanup()

    def cleanup(self) -> None:
        """Remove every hook and forget every generation (a new job, a failure, unload)."""
        while self.enclosing:
            self._resume_enclosing()
        self._unhook()
        self._reset()

    # ---- nesting -----------------------------------------------------------------------------------------
    def _is_copy(self, p: Any) -> bool:
        return self.p is not None and p is not self.p and getattr(p, MARK_ATTR, None) is self.mark

    def _resume_enclosing(self) -> None:
        """End the nested generation and resume the one around it as it was."""
        self._unhook()
        self.enclosing.resume(self)

    # ---- helpers -----------------------------------------------------------------------------------------
    @staticmethod
    def _check_peers(unet: nn.Module) -> None:
        peer = peer_hook(unet)
        if peer is not None:
            raise EngineConflict(f"another DeepCache extension ('{peer}') hooks this U-Net: disable it or this one "
                                 "so that two caches never stack")

    def _refuse(self, error: Exception, stand_down: bool = False) -> None:
        """Generate this run without DeepCache: a console line, ``DeepCache error`` in the infotext."""
        self._report(error, stand_down)
        self._unhook()
        self.pending = None

    def _report(self, error: Exception, stand_down: bool = False) -> None:
        """``stand_down``: another extension decides this run's U-Net calls (a cache, a wrapper in DeepCache's
        place). That depends on what the user turned on for this generation, so the console says it once per
        generation; what cannot change between images (an unsupported model) is said once per process."""
        self.warn(f"{error}; generating without DeepCache", self.told if stand_down else self.warned)
        self.generation_params[ERROR_KEY] = str(error).replace(",", ";")
        self.generation_params.pop(STATS_KEY, None)

    def _unhook(self) -> None:
        self.controlnets.detach_all()
        self.engine.uninstall()
        self.adapter.release()

    def collect(self) -> None:
        """End the engine's run, if any: keep its stats for the infotext and its pass times for the estimate."""
        params, layout = self.engine.params, self.engine.layout
        stats = self.engine.end_run()
        if stats is not None and stats.steps:
            stats.interrupted = self.adapter.interrupted()
            self.runs.append((self.run_label, stats))
            if layout is not None and params is not None:
                self.calibration.record(layout.depth, params.branch, stats)
                if params.schedule == "adaptive":
                    self.calibration.record_adaptive(params, stats)
            if self.print_stats:
                print(f"[DeepCache {__version__}]{' ' + self.run_label if self.run_label else ''} {stats.summary()}")
        elif stats is not None and self.adapter.reports_calls:
            # the run began at the webui's first denoiser call, yet no U-Net call was reported: another
            # extension replaced the U-Net function wrapper without calling ours (Forge Neo's Spectrum does)
            self._report(RuntimeError("another extension replaced the U-Net function wrapper (e.g. a cache such as "
                                      "Spectrum): it ran this sampling, so DeepCache did not; disable one of them"),
                         stand_down=True)

    def warn(self, message: str, said: set[str] | None = None) -> None:
        """Print a warning once per process (a model DeepCache cannot handle is not news at every image), or once
        per ``said`` set (a generation's); the infotext carries it for every image."""
        said = self.warned if said is None else said
        log.debug(message)
        if message not in said:
            said.add(message)
            print(f"[DeepCache] {message}")

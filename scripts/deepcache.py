"""DeepCache for AUTOMATIC1111 and Forge: an AlwaysVisible script that only wires the webui's lifecycle and
UI to the ``deepcache`` engine."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import gradio as gr
from modules import script_callbacks, scripts, shared
from modules.ui_components import InputAccordion

PACKAGE = "sd_webui_deepcache_engine"


def import_own_package() -> None:
    """Import this extension's ``deepcache/`` folder as ``PACKAGE``: other extensions provide a top-level
    ``deepcache`` too (aria1th/sd-webui-deepcache-standalone has ``deepcache.py``), and whichever of the two took
    that name in ``sys.modules`` first would break the other."""
    if PACKAGE in sys.modules:
        return
    folder = Path(__file__).resolve().parent.parent / "deepcache"
    spec = importlib.util.spec_from_file_location(PACKAGE, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    try:
        spec.loader.exec_module(package)
    except BaseException:
        del sys.modules[PACKAGE]
        raise


import_own_package()
from sd_webui_deepcache_engine import webui  # noqa: E402
from sd_webui_deepcache_engine.estimate import COSTS_ROUTE  # noqa: E402
from sd_webui_deepcache_engine.params import PARAM_SPECS, SPECS_BY_NAME  # noqa: E402
from sd_webui_deepcache_engine.peers import peer_extensions  # noqa: E402
from sd_webui_deepcache_engine.session import STATS_KEY, Session  # noqa: E402
from sd_webui_deepcache_engine.structure import inspect_unet  # noqa: E402
from sd_webui_deepcache_engine.ui import build  # noqa: E402

adapter = webui.detect()
session = Session(adapter)
SETTINGS_SECTION = ("deepcache", "DeepCache")
SETTING_DEFAULTS = ("interval", "branch")  # defaults a user may change in Settings


class DeepCacheScript(scripts.Script):
    sorting_priority = 15  # Forge: order among the built-in accordions

    def title(self) -> str:
        return "DeepCache"

    def show(self, is_img2img: bool):
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool):
        defaults = {name: shared.opts.data.get(f"deepcache_default_{name}", SPECS_BY_NAME[name].default)
                    for name in SETTING_DEFAULTS}
        controls = build(gr, InputAccordion, self.elem_id, defaults, loaded_max_branch,
                         session.calibration.costs(loaded_depth()))
        self.infotext_fields = [(controls[0], lambda d: STATS_KEY in d)] + [
            (c, lambda d, s=spec: d.get(s.label, s.default) if STATS_KEY in d else None)
            for c, spec in zip(controls[1:], PARAM_SPECS[1:])]
        self.paste_field_names = [spec.label for spec in PARAM_SPECS[1:]]
        return controls

    def process(self, p, *args):
        session.print_stats = bool(shared.opts.data.get("deepcache_console_stats", True))
        session.start(p, args)

    def process_before_every_sampling(self, p, *args, **kwargs):
        session.before_sampling(p, hires=bool(getattr(p, "is_hr_pass", False)))

    def process_batch(self, p, *args, **kwargs):
        if not webui.HAS_EVERY_SAMPLING_HOOK:  # 1.8/1.9
            session.before_sampling(p, hires=False)

    def before_hr(self, p, *args):
        if not webui.HAS_EVERY_SAMPLING_HOOK:
            session.before_sampling(p, hires=True)

    def post_sample(self, p, ps, *args):
        session.after_sampling(p)

    def postprocess_batch(self, p, *args, **kwargs):
        session.after_sampling(p)  # 1.6/1.7 have no post_sample; a no-op when it already ran

    def postprocess(self, p, processed, *args):
        session.end(p)


def loaded_depth() -> int | None:
    """How many input blocks the loaded model's U-Net has; None when there is none or it cannot be told."""
    try:
        return inspect_unet(adapter.unet_of_model(shared.sd_model)).depth
    except Exception:
        return None


def loaded_max_branch() -> int:
    """The deepest branch the loaded model has (its maximum in the UI); the spec's when it cannot be told."""
    depth = loaded_depth()
    return SPECS_BY_NAME["branch"].maximum if depth is None else depth - 1


def on_app_started(_demo, app) -> None:
    """The estimate's costs for the loaded model, refreshed by the UI's JavaScript (calibrated by the last run)."""
    app.add_api_route(COSTS_ROUTE, lambda: session.calibration.costs(loaded_depth()), methods=["GET"])


def on_ui_settings() -> None:
    for name in SETTING_DEFAULTS:
        spec = SPECS_BY_NAME[name]
        shared.opts.add_option(f"deepcache_default_{name}", shared.OptionInfo(
            spec.default, f"Default {spec.label.removeprefix('DeepCache ')}", gr.Slider,
            {"minimum": spec.minimum, "maximum": spec.maximum, "step": spec.step}, section=SETTINGS_SECTION))
    shared.opts.add_option("deepcache_console_stats", shared.OptionInfo(
        True, "Print DeepCache stats to the console after each sampling run", section=SETTINGS_SECTION))


def add_xyz_axes() -> None:
    """Our X/Y/Z axes, once the X/Y/Z script is loaded. Called when this script is imported too: an API-only
    server (``--nowebui``) builds the X/Y/Z script's axis list before ``before_ui`` fires, and an axis added later
    is missing from it (the webui's X/Y/Z script is loaded before the extensions' scripts)."""
    xyz = next((d.module for d in scripts.scripts_data if d.script_class.__module__ == "xyz_grid.py"), None)
    if xyz is not None:
        from sd_webui_deepcache_engine.xyz import add_axes

        add_axes(xyz)


def on_before_ui() -> None:
    add_xyz_axes()
    peers = peer_extensions((d.path for d in scripts.scripts_data), Path(__file__).resolve().parent.parent)
    if peers:
        session.warn(f"another DeepCache extension is installed: {', '.join(peers)}. API requests for 'DeepCache' "
                     "reach this one; disable the other in Extensions (a generation where both are on runs "
                     "without this one's cache)")


add_xyz_axes()
script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_before_ui(on_before_ui)
script_callbacks.on_app_started(on_app_started)
script_callbacks.on_cfg_denoiser(adapter.on_cfg_denoiser)
script_callbacks.on_script_unloaded(session.cleanup)

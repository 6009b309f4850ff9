"""HTTP client for the end-to-end tests: a running webui (A1111 or Forge) with this extension installed.

Set ``WEBUI_URL`` (e.g. http://127.0.0.1:7861) to run them; without it every test here is skipped.
``WEBUI_E2E_SIZE`` (default 64) and ``WEBUI_E2E_STEPS`` (default 8) size the images. ``WEBUI_E2E_MODEL`` names
the checkpoint to test with (loaded before the first test; default: the one loaded), ``WEBUI_E2E_OTHER`` the
checkpoint to switch to for the refiner and hires-checkpoint tests (e.g. the SDXL refiner; default: another
checkpoint of the A1111 lab, skipped on Forge).
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

URL = os.environ.get("WEBUI_URL", "").rstrip("/")
SIZE = int(os.environ.get("WEBUI_E2E_SIZE", "64"))
STEPS = int(os.environ.get("WEBUI_E2E_STEPS", "8"))
MODEL = os.environ.get("WEBUI_E2E_MODEL", "")
OTHER = os.environ.get("WEBUI_E2E_OTHER", "")
COSTS_ROUTE = "/deepcache/v1/costs"
# options the API's option list omits (registered after it was built), at the webui's defaults
HYPERTILE_DEFAULTS = {"hypertile_enable_unet": False, "hypertile_max_tile_unet": 256}
# the infotext's refusal of a branch deeper than the loaded U-Net; group 1 is its deepest branch
BRANCH_LIMIT = re.compile(r"'branch' must be int in \[0; (\d+)\] for this model")


@dataclass
class Result:
    status: int
    body: dict[str, Any]

    @property
    def info(self) -> dict[str, Any]:
        return json.loads(self.body["info"])

    @property
    def infotext(self) -> str:
        return self.info["infotexts"][0]

    def pixels(self, index: int = 0) -> bytes:
        from PIL import Image

        return Image.open(io.BytesIO(base64.b64decode(self.body["images"][index]))).convert("RGB").tobytes()

    def difference(self, other: Result, index: int = 0) -> float:
        """The mean absolute difference of the two images, in 0-255 levels."""
        import numpy as np

        a, b = (np.frombuffer(r.pixels(index), np.uint8).astype(int) for r in (self, other))
        return float(np.abs(a - b).mean())


class Webui:
    def __init__(self, url: str) -> None:
        self.url = url
        self._forge: bool | None = None

    @property
    def is_forge(self) -> bool:
        if self._forge is None:
            self._forge = "forge_additional_modules" in self.request("/sdapi/v1/options").body
        return self._forge

    def request(self, path: str, payload: dict | None = None, timeout: float = 1800) -> Result:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return Result(response.status, json.loads(response.read() or b"{}"))
        except urllib.error.HTTPError as error:
            return Result(error.code, json.loads(error.read() or b"{}"))

    @property
    def family(self) -> str:
        """The loaded model's family as the extension sees it ("SD1.x/SD2.x" or "SDXL")."""
        return self.request(COSTS_ROUTE).body["family"]

    @contextlib.contextmanager
    def settings(self, changes: dict[str, Any], defaults: dict[str, Any] | None = None) -> Iterator[None]:
        """Webui options for a series of requests, put back afterwards (``override_settings`` leaks unsaved
        options). The API's option list omits options registered after it was built (Hypertile's): those go
        back to ``defaults``."""
        before = {**(defaults or {}), **self.request("/sdapi/v1/options").body}
        result = self.request("/sdapi/v1/options", changes)
        assert result.status == 200, result.body
        try:
            yield
        finally:
            self.request("/sdapi/v1/options", {key: before[key] for key in changes if key in before})

    def load(self, checkpoint: str) -> None:
        """Make ``checkpoint`` (a title or file name) the loaded model."""
        result = self.request("/sdapi/v1/options", {"sd_model_checkpoint": checkpoint})
        assert result.status == 200, result.body
        loaded = self.request("/sdapi/v1/options").body["sd_model_checkpoint"]
        assert checkpoint.rsplit(".", 1)[0] in loaded, f"asked for {checkpoint}, the webui has {loaded}"

    def txt2img(self, deepcache: list | None = None, **extra: Any) -> Result:
        payload = {"prompt": "a red cat on a blue sofa", "negative_prompt": "blurry", "width": SIZE,
                   "height": SIZE, "steps": STEPS, "cfg_scale": 7, "sampler_name": "Euler", "seed": 1234,
                   "batch_size": 1, "n_iter": 1, "send_images": True, "save_images": False, **extra}
        if deepcache is not None:
            payload.setdefault("alwayson_scripts", {})["DeepCache"] = {"args": deepcache}
        result = self.request("/sdapi/v1/txt2img", payload)
        assert result.status == 200, result.body
        return result

    def img2img(self, image_b64: str, deepcache: list | None = None, **extra: Any) -> Result:
        payload = {"init_images": [image_b64], "prompt": "a red cat", "width": SIZE, "height": SIZE,
                   "steps": STEPS, "sampler_name": "Euler", "seed": 99, "denoising_strength": 0.5,
                   "send_images": True, "save_images": False, **extra}
        if deepcache is not None:
            payload["alwayson_scripts"] = {"DeepCache": {"args": deepcache}}
        result = self.request("/sdapi/v1/img2img", payload)
        assert result.status == 200, result.body
        return result


def parse_infotext(webui: Webui, text: str) -> dict[str, Any]:
    """The webui's own parser, through the API: what "paste" and "PNG Info" see."""
    return webui.request("/sdapi/v1/png-info", {"image": "data:image/png;base64," + png_with_text(text)}).body[
        "parameters"]


def png_base64(image: Any, **save: Any) -> str:
    """A PIL image as the base64 PNG the API takes (init images, masks, ControlNet inputs)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save)
    return base64.b64encode(buffer.getvalue()).decode()


def png_with_text(text: str) -> str:
    from PIL import Image, PngImagePlugin

    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", text)
    return png_base64(Image.new("RGB", (8, 8)), pnginfo=meta)


CACHED = re.compile(r"DeepCache: \"?(\d+)/(\d+) steps cached")  # the infotext's cached-step count
STATS_LINE = re.compile(  # the console's stats line of a run
    r"\[DeepCache[^\]]*\](?: [a-z ]+)? (\d+)/(\d+) steps cached, (\d+)/(\d+) U-Net passes from cache")


class ServerLog:
    """The webui's console output (``WEBUI_LOG``, the file its output goes to) from a point on; empty without it."""

    def __init__(self) -> None:
        self.path = os.environ.get("WEBUI_LOG")
        self.start = os.path.getsize(self.path) if self.path else 0

    def __bool__(self) -> bool:
        return bool(self.path)

    def text(self) -> str:
        if not self.path:
            return ""
        with open(self.path, encoding="utf-8", errors="replace") as log:
            log.seek(self.start)
            return log.read()

    def stats_lines(self) -> list[tuple[int, ...]]:
        """Each DeepCache stats line since the start: (cached steps, steps, cached passes, passes)."""
        return [tuple(map(int, m.groups())) for m in STATS_LINE.finditer(self.text())]


def require_script(webui: Webui, name: str, img2img: bool = False) -> None:
    """Skip the test unless the webui has the script ``name`` (its title in lower case) in that tab."""
    import pytest

    scripts = webui.request("/sdapi/v1/scripts").body["img2img" if img2img else "txt2img"]
    if name not in [script.lower() for script in scripts]:
        pytest.skip(f"the webui has no '{name}' script (the extension is not installed)")

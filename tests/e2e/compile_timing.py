"""Per-step times inside Forge Neo with its "Torch Compile Integrated", with and without DeepCache.

    WEBUI_URL=http://127.0.0.1:7870 WEBUI_LOG=<server log> python tests/e2e/compile_timing.py --size 128 --steps 20

Runs off and DeepCache uncompiled (two rounds), then compiles (preset ``guard_filter_fn``; the first request of
each kind is reported apart: it compiles), then off and DeepCache compiled (two rounds), then switches compile off.
Each row: the whole request's time, DeepCache's console line (its U-Net pass times) and the progress bar's rate,
both read from the server log. One webui alone on the machine, nothing else computing."""
from __future__ import annotations

import argparse
import json
import os
import re
import time

from webui_client import Webui

COMPILE = "torch compile integrated"
RATE = re.compile(r"(\d+/\d+) \[[\d:]+<[\d:]+, +([\d.]+)(s/it|it/s)\]")


def generate(webui: Webui, log: str, size: int, steps: int, deepcache: list, preset: str | None) -> dict:
    with open(log, errors="replace") as f:
        seen = len(f.read())
    start = time.perf_counter()
    webui.txt2img(deepcache, width=size, height=size, steps=steps, send_images=False,
                  alwayson_scripts={COMPILE: {"args": [preset]}} if preset else {})
    elapsed = time.perf_counter() - start
    with open(log, errors="replace") as f:
        new = f.read()[seen:]
    stats = [line.split("]", 1)[1].strip() for line in new.splitlines() if "[DeepCache" in line and "cached" in line]
    rates = RATE.findall(new)
    return {"seconds": round(elapsed, 2), "deepcache": stats[-1] if stats else "", "rate": rates[-1] if rates else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()
    webui, log = Webui(os.environ.get("WEBUI_URL", "http://127.0.0.1:7870")), os.environ["WEBUI_LOG"]
    plan = [("warm-up, off", [False], None)] + [("uncompiled, off", [False], None),
                                                ("uncompiled, DeepCache", [True, 3, 0], None)] * 2
    plan += [("compiling, off (first request)", [False], "guard_filter_fn"),
             ("compiled, DeepCache (first request)", [True, 3, 0], "Automatic")]
    plan += [("compiled, off", [False], "Automatic"), ("compiled, DeepCache", [True, 3, 0], "Automatic")] * 2
    plan += [("compile switched off", [False], "Disable")]
    for label, deepcache, preset in plan:
        print(label, json.dumps(generate(webui, log, a.size, a.steps, deepcache, preset)), flush=True)


if __name__ == "__main__":
    main()

"""Speed of DeepCache inside a running webui: alternate generations without and with it, print the ratio.

usage: python tests/e2e/speed_check.py --url http://127.0.0.1:7860 [--checkpoint model.safetensors]
       [--size 256] [--steps 20] [--sampler Euler] [--pairs 2]
Not a test (speed targets are not asserted in timed tests): the numbers go into the closing notes.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from webui_client import Webui


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--checkpoint", help="switch to this checkpoint first (and back afterwards)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sampler", default="Euler")
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--args", default="[true, 3, 0]", help="DeepCache args (JSON list)")
    a = ap.parse_args()
    webui = Webui(a.url.rstrip("/"))
    previous = webui.request("/sdapi/v1/options").body.get("sd_model_checkpoint")
    if a.checkpoint:
        webui.request("/sdapi/v1/options", {"sd_model_checkpoint": a.checkpoint})
    try:
        common = dict(width=a.size, height=a.size, steps=a.steps, sampler_name=a.sampler)
        webui.txt2img(**{**common, "steps": 2})  # warm-up (model load, first-call allocations)
        ratios = []
        for pair in range(a.pairs):
            start = time.perf_counter()
            webui.txt2img(**common)
            off = time.perf_counter() - start
            start = time.perf_counter()
            on = webui.txt2img(json.loads(a.args), **common)
            took = time.perf_counter() - start
            stats = on.infotext.split("DeepCache: ")[1].split(",")[0]
            ratios.append(off / took)
            print(f"pair {pair + 1}: off {off:.1f}s, DeepCache {took:.1f}s ({stats}) -> {off / took:.2f}x", flush=True)
        print(f"median speed-up {statistics.median(ratios):.2f}x over {a.pairs} pairs, "
              f"{a.size}x{a.size}, {a.steps} steps, {a.sampler}")
    finally:
        if a.checkpoint and previous:
            webui.request("/sdapi/v1/options", {"sd_model_checkpoint": previous})


if __name__ == "__main__":
    main()

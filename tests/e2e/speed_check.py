"""Speed of DeepCache inside a running webui: interleave generations without it, with it, and optionally with
a peer extension on a second server (same webui folder and checkpoint, the other extension disabled there),
and print the ratios.

usage: python tests/e2e/speed_check.py --url http://127.0.0.1:7860 [--checkpoint model.safetensors]
       [--size 256] [--steps 20] [--sampler Euler] [--batch-size 1] [--rounds 2] [--args '[true, 3, 0]']
       [--options '{"token_merging_ratio": 0.5}']   (webui settings for the whole series, restored afterwards)
       [--peer-url http://127.0.0.1:7864 --peer-args '[...]' --peer-name sd-deepcache]
       [--alwayson '{"ControlNet": {"args": [{...}]}}']   (other scripts in every request, e.g. a ControlNet)
       [--variant 'First Block Cache={"first block cache integrated": {"args": [true, 0.1, 3, 20]}}']
                                          (one more row: without DeepCache, with these scripts added)
Not a test (speed targets are not asserted in timed tests): the numbers go into the closing notes. Hold an
exclusive lock on the machine for the whole series: a 2-core machine gives worthless timings otherwise.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from webui_client import HYPERTILE_DEFAULTS, Result, Webui


def timed(generate: Callable[[], Result]) -> tuple[float, Result]:
    start = time.perf_counter()
    result = generate()
    return time.perf_counter() - start, result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--checkpoint", help="switch to this checkpoint first (and back afterwards)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sampler", default="Euler")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--options", default="{}", help="webui settings for the series (JSON object), restored afterwards")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--args", default="[true, 3, 0]", help="DeepCache args (JSON list)")
    ap.add_argument("--peer-url", help="a second server where another DeepCache extension answers to 'DeepCache'")
    ap.add_argument("--peer-args", help="that extension's args (JSON list) at the equivalent settings")
    ap.add_argument("--peer-name", default="peer")
    ap.add_argument("--alwayson", default="{}", help="other alwayson_scripts for every request (JSON object)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                    help="a row without DeepCache whose requests add these alwayson_scripts (repeatable)")
    a = ap.parse_args()
    webui = Webui(a.url.rstrip("/"))
    peer = Webui(a.peer_url.rstrip("/")) if a.peer_url else None
    options = {**json.loads(a.options), **({"sd_model_checkpoint": a.checkpoint} if a.checkpoint else {})}
    with webui.settings(options, defaults=HYPERTILE_DEFAULTS):
        series(a, webui, peer, options)


def series(a: argparse.Namespace, webui: Webui, peer: Webui | None, options: dict) -> None:
    """The interleaved rounds and their medians, with the series' options in place."""
    sizes = dict(width=a.size, height=a.size, steps=a.steps, sampler_name=a.sampler, batch_size=a.batch_size)

    def common() -> dict:
        return {**sizes, "alwayson_scripts": json.loads(a.alwayson)}  # a fresh dict: txt2img adds DeepCache

    variants: dict[str, Callable[[], Result]] = {
        "off": lambda: webui.txt2img(**common()),
        "DeepCache (this)": lambda: webui.txt2img(json.loads(a.args), **common())}
    for name, scripts in (v.split("=", 1) for v in a.variant):
        variants[name] = lambda scripts=scripts: webui.txt2img(
            **{**common(), "alwayson_scripts": {**json.loads(a.alwayson), **json.loads(scripts)}})
    if peer is not None:
        variants[a.peer_name] = lambda: peer.txt2img(json.loads(a.peer_args), **common())
        peer.txt2img(**{**common(), "steps": 2})
    webui.txt2img(**{**common(), "steps": 2})  # warm-up (model load, first-call allocations)
    times: dict[str, list[float]] = {name: [] for name in variants}
    images: dict[str, bytes] = {}
    for round_ in range(a.rounds):
        for name, generate in variants.items():
            took, result = timed(generate)
            times[name].append(took)
            images[name] = result.pixels()
            print(f"round {round_ + 1}: {name} {took:.1f}s", flush=True)
    off = statistics.median(times["off"])
    print(f"\n{a.size}x{a.size}, batch {a.batch_size}, {a.steps} steps, {a.sampler}, options {options}, "
          f"{a.rounds} interleaved rounds (median)")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.1f} s | {off / statistics.median(values):.2f}x |")
    if peer is not None:
        same = images["DeepCache (this)"] == images[a.peer_name]
        print(f"this extension's and {a.peer_name}'s images are {'pixel-identical' if same else 'different'}")


if __name__ == "__main__":
    main()

"""Memory of a running webui over a series of generations in the same server, first with DeepCache off, then on:
the server's resident set size (RSS, from ``/proc/<pid>/status``) after each generation, and its growth over each
series. A leak (cached tensors, hooks or state kept between generations) shows as steady growth in the "on"
series only.

usage: python tests/e2e/memory_series.py --url http://127.0.0.1:7860 --pid $(pgrep -f 'launch.py.*7860' | head -1)
       [--generations 50] [--size 256] [--steps 8] [--args '[true, 3, 0]']
       [--alwayson '{"ControlNet": {"args": [{...}]}}']   (other scripts in every request)
       [--prompt-suffix ' <lora:random_lora:1>'] [--options '{"token_merging_ratio": 0.5}'] [--batch-size 1]
       [--payloads a.json b.json ...]   (request bodies, one per generation in turn: each extension in one series;
                                         img2img where the body has init_images; steps and seed set here, and
                                         its DeepCache entry replaced by the variant's)
Not a test: the numbers go into the closing notes and the README's compatibility table.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from webui_client import HYPERTILE_DEFAULTS, Webui


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", type=int, required=True, help="the webui server's process id")
    ap.add_argument("--generations", type=int, default=50, help="generations per variant")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--args", default="[true, 3, 0]", help="DeepCache args (JSON list)")
    ap.add_argument("--alwayson", default="{}", help="other alwayson_scripts for every request (JSON object)")
    ap.add_argument("--prompt-suffix", default="", help="appended to the prompt (e.g. a LoRA tag)")
    ap.add_argument("--options", default="{}", help="webui settings for the series (JSON object), restored afterwards")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--payloads", nargs="*", default=[], help="request bodies used in turn (JSON files)")
    a = ap.parse_args()
    webui = Webui(a.url.rstrip("/"))
    with webui.settings(json.loads(a.options), defaults=HYPERTILE_DEFAULTS):
        series(a, webui)


def series(a: argparse.Namespace, webui: Webui) -> None:
    """Generations off, then on, and the RSS after each."""
    variants = {"off": None, "on": json.loads(a.args)}

    bodies = [json.loads(Path(path).read_text()) for path in a.payloads]

    def generate(deepcache: list | None, seed: int) -> None:
        if not bodies:
            webui.txt2img(deepcache, width=a.size, height=a.size, steps=a.steps, seed=seed, batch_size=a.batch_size,
                          prompt="a red cat on a blue sofa" + a.prompt_suffix, alwayson_scripts=json.loads(a.alwayson))
            return
        body = dict(bodies[seed % len(bodies)], steps=a.steps, seed=seed)
        scripts = {k: v for k, v in body.get("alwayson_scripts", {}).items() if k.lower() != "deepcache"}
        body["alwayson_scripts"] = scripts | ({"DeepCache": {"args": deepcache}} if deepcache is not None else {})
        result = webui.request("/sdapi/v1/img2img" if "init_images" in body else "/sdapi/v1/txt2img", body)
        assert result.status == 200, result.body

    for seed in range(max(1, len(bodies))):  # warm-up: the first generation allocates for good (model, caches)
        generate(None, seed)
    rss: dict[str, list[float]] = {name: [] for name in variants}
    for name, deepcache in variants.items():
        for index in range(a.generations):
            generate(deepcache, seed=index)
            rss[name].append(rss_mib(a.pid))
            print(f"{name} {index + 1}: {rss[name][-1]:.0f} MiB", flush=True)
    print(f"\n{a.generations} generations per variant, {a.size}x{a.size}, batch {a.batch_size}, {a.steps} steps, "
          f"alwayson {a.alwayson}, options {a.options}, prompt suffix {a.prompt_suffix!r}, payloads {a.payloads}")
    for name, values in rss.items():
        print(f"| {name} | first {values[0]:.0f} MiB | last {values[-1]:.0f} MiB | growth {values[-1] - values[0]:+.0f}"
              f" MiB | max {max(values):.0f} MiB |")


if __name__ == "__main__":
    main()

"""A seeded, bounded fuzz of ``alwayson_scripts`` args through the real webui API.

Every payload must give an image; an invalid one must be refused with ``DeepCache error`` naming the parameter
that our own parser names for it, and the server log must hold no traceback from this extension. Set
``WEBUI_LOG`` to the server's log file to check the log; ``WEBUI_E2E_FUZZ`` sets the number of payloads (200).
"""
from __future__ import annotations

import os
import random
import re
from typing import Any

import pytest
from webui_client import BRANCH_LIMIT, ServerLog

from deepcache.params import PARAM_SPECS, DeepCacheParams

COUNT = int(os.environ.get("WEBUI_E2E_FUZZ", "200"))
WEBUI_BIG_INT = "Integer exceeds 64-bit range"  # the webui's own HTTP 500 when it echoes such a request back
NAMES = [spec.name for spec in PARAM_SPECS]

ATOMS: list[Any] = [
    True, False, None, 0, 1, -1, 3, 7, 11, 12, 50, 51, 100, 2**31, 2**63 - 1, 10**400, -10**30, 0.5, 1.5, 2.0, 1e308,
    -0.0, 1e-300, "", " ", "3", " 3 ", "3.0", "1e1", "true", "false", "TRUE", "yes", "\u0663", "\uff13", "3_0",
    "inf", "nan", "0x3", "\u00e9\u00e8", "\U0001f600", "uniform", "non-uniform", "adaptive", "own", "off", "same",
    "x" * 2000,
    [], [3], {}, {"a": 1}, [[[]]],
]


def random_args(rng: random.Random) -> list[Any]:
    shape = rng.random()
    if shape < 0.25:  # named args in a leading dict, sometimes with an unknown or unicode name
        keys = NAMES + ["bogus", "\u00e9nabled", "Interval", ""]
        named = {rng.choice(keys): rng.choice(ATOMS) for _ in range(rng.randint(0, 4))}
        named.setdefault("enabled", rng.choice([True, True, "true", 1]))
        return [named]
    args = [rng.choice([True, True, True, "true", False, 1, "on", None])]
    for spec in PARAM_SPECS[1:rng.randint(1, len(PARAM_SPECS) + 3)]:
        if rng.random() < 0.12:
            args.append(rng.choice(ATOMS))
        else:  # a valid value, so that later parameters are reached too
            args.append(spec.default if spec.choices or spec.type is bool else rng.uniform(spec.minimum, spec.maximum)
                        if spec.type is float else rng.randint(int(spec.minimum), int(spec.maximum)))
    return args + [rng.choice(ATOMS) for _ in range(rng.randint(0, 3) if rng.random() < 0.1 else 0)]


def expected_error(args: list[Any], max_branch: int) -> str | None:
    """What our own parser says of the args the script receives (the webui fills missing positions with the
    UI defaults and drops args beyond the script's own count), and the loaded model's branch limit."""
    received = list(args[:len(PARAM_SPECS)]) + [spec.default for spec in PARAM_SPECS[len(args):]]
    try:
        params = DeepCacheParams.from_args(received)
    except ValueError as error:
        return str(error)
    if params.enabled and params.branch > max_branch:
        return f"DeepCache parameter 'branch' must be int in [0, {max_branch}] for this model"
    return None


@pytest.fixture(scope="module")
def max_branch(webui) -> int:
    """The loaded model's deepest branch: the lab's micro model has fewer blocks than SD1.5."""
    infotext = webui.txt2img([True, 3, 11], steps=2).infotext
    match = BRANCH_LIMIT.search(infotext)
    return int(match.group(1)) if match else 11


def first_name(error: str) -> str:
    match = re.search(r"'(\w+)'", error)
    return match.group(1) if match else "unknown DeepCache parameter"


def has_big_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not -2**63 <= value < 2**64
    if isinstance(value, dict):
        return any(has_big_int(v) for v in value.values())
    if isinstance(value, list):
        return any(has_big_int(v) for v in value)
    return False


@pytest.mark.parametrize("seed", [20261123])
def test_fuzzed_args_never_break_a_generation(webui, max_branch, seed):
    rng = random.Random(seed)
    log = ServerLog()
    refused = accepted = echoed_big = 0
    for index in range(COUNT):
        args = random_args(rng)
        payload = {"prompt": "fuzz", "width": 64, "height": 64, "steps": 2, "sampler_name": "Euler", "seed": index,
                   "send_images": True, "save_images": False, "alwayson_scripts": {"DeepCache": {"args": args}}}
        result = webui.request("/sdapi/v1/txt2img", payload)
        if has_big_int(args) and result.status == 500 and WEBUI_BIG_INT in str(result.body):
            echoed_big += 1  # the image was made; the webui cannot echo the request (not the extension's)
            continue
        assert result.status == 200, (index, args, result.body)
        assert result.body["images"], (index, args)
        infotext = result.infotext
        error = expected_error(args, max_branch)
        if error is None:
            accepted += 1
            assert "DeepCache error" not in infotext, (index, args, infotext)
        else:
            refused += 1
            assert "DeepCache error" in infotext, (index, args, error, infotext)
            assert first_name(error) in infotext.split("DeepCache error", 1)[1], (index, args, error, infotext)
            assert not re.search(r"DeepCache: \"?\d+/\d+ steps cached", infotext), (index, args, infotext)
    print(f"fuzz: {COUNT} payloads, {refused} refused, {accepted} accepted, {echoed_big} big-int echoes (HTTP 500 "
          "from the webui itself)")
    assert refused > COUNT // 4 and accepted > 0
    if log:
        written = log.text()
        ours = [block for block in written.split("Traceback")[1:]
                if re.search(r'File "[^"]*(/deepcache/|/scripts/deepcache\.py)', block)]
        assert not ours, "traceback from the extension in the server log:\n" + ours[0][:3000]
        assert "Error running" not in written, written[written.index("Error running"):][:2000]

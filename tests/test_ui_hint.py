"""The UI's live estimate (javascript/deepcache.js) run in Node.js against a small stand-in of the page: the
text it shows, and the few-steps hint (a hint beside the estimate, never a refusal)."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from deepcache.estimate import FEW_STEPS, Calibration, estimate_html

SCRIPT = Path(__file__).resolve().parent.parent / "javascript" / "deepcache.js"
PAGE = """
const values = %(values)s;
const span = {dataset: %(dataset)s, textContent: '', title: ''};
function element(id) {
  return {value: String(values[id]), title: '', addEventListener() {},
          querySelector() { return this; }};
}
global.gradioApp = () => ({
  querySelector(selector) {
    if (selector.endsWith('.deepcache-estimate')) return selector.includes('txt2img') ? span : null;
    const id = selector.replace(/^#/, '').split(' ')[0].replace('script_txt2img_deepcache_', '');
    return id in values ? element(id) : null;
  },
  getElementById(id) { return element(id); },
});
global.onUiLoaded = (callback) => callback();
global.fetch = () => new Promise(() => {});
require(%(script)s);
console.log(span.textContent);
"""


def estimate_text(steps: int, interval: int = 3, branch: int = 0, schedule: str = "uniform",
                  calibration: Calibration | None = None) -> str:
    data = dict(re.findall(r'data-([\w-]+)="([^"]*)"', estimate_html((calibration or Calibration()).costs(12))))
    dataset = {re.sub(r"-(\w)", lambda m: m.group(1).upper(), k): v.replace("&quot;", '"').replace("&#x27;", "'")
               for k, v in data.items()}
    values = {"txt2img_steps": steps, "interval": interval, "branch": branch, "start": 0, "end": 1,
              "final_full_steps": 0, "schedule": schedule}
    page = PAGE % {"values": json.dumps(values), "dataset": json.dumps(dataset), "script": json.dumps(str(SCRIPT))}
    done = subprocess.run(["node", "-e", page], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")


@needs_node
def test_the_estimate_follows_steps_and_interval():
    text = estimate_text(20)
    assert text.startswith("≈") and "7 of 20 steps run the whole U-Net, 13 reuse its deep features" in text
    assert "few steps" not in text


@needs_node
def test_few_steps_add_a_hint_beside_the_estimate():
    text = estimate_text(FEW_STEPS - 2)
    assert "3 of 8 steps run the whole U-Net" in text  # the estimate is still there
    assert f"gains little below ~{FEW_STEPS} steps" in text
    assert "few steps" not in estimate_text(FEW_STEPS)


@needs_node
def test_the_adaptive_schedule_shows_a_range_and_the_last_run():
    """The adaptive schedule decides while sampling: no single figure, a range up to the uniform estimate at its
    interval, and what the last adaptive run cached."""
    from deepcache import DeepCacheParams
    from deepcache.stats import RunStats

    calibration = Calibration()
    uniform = estimate_text(20, interval=4)
    assert "5 of 20 steps run the whole U-Net" in uniform
    assert "last adaptive run" not in estimate_text(20, interval=4, schedule="adaptive")
    calibration.record_adaptive(DeepCacheParams(enabled=True, schedule="adaptive", interval=4, threshold=0.5),
                                RunStats(total_steps=20, steps_seen=set(range(20)),
                                         steps_with_full_pass={0, 1, 2, 4, 8, 12, 16}, full_passes=7,
                                         cached_passes=13, full_seconds=7.0, cached_seconds=0.5))
    text = estimate_text(20, interval=4, schedule="adaptive", calibration=calibration)
    speedup = re.search(r"≈([\d.]+)× faster \(estimate\)", uniform).group(1)
    assert f"adaptive: decided while sampling, between 1.0× and ≈{speedup}× faster" in text
    assert "last adaptive run (threshold 0.5, interval 4): 13/20 steps cached" in text

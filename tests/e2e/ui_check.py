"""Drive the real webui UI once in headless Chromium (Playwright): open the DeepCache accordion in txt2img,
change the interval, check the live estimate and the tooltips, generate, check the infotext, and save a
screenshot of the accordion.

usage: python tests/e2e/ui_check.py --url http://127.0.0.1:7860 [--out docs/accordion.png]
Needs ``playwright`` (no browser download: it uses the system Chromium at /usr/bin/chromium).
"""
from __future__ import annotations

import argparse
import sys

from playwright.sync_api import sync_playwright

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PREFIX = "#tab_txt2img #script_txt2img_deepcache_"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--out", default="accordion.png")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    a = ap.parse_args()
    problems = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=a.chromium, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.goto(a.url)
        page.wait_for_selector("#txt2img_prompt textarea", timeout=120_000)
        page.fill("#txt2img_prompt textarea", "a photo of a cat")
        for elem, value in (("#txt2img_width", 64), ("#txt2img_height", 64), ("#txt2img_steps", 20)):
            box = page.locator(f"{elem} input[type=number]")
            box.fill(str(value))
            box.press("Enter")
        page.locator(f"{PREFIX}accordion .label-wrap").first.click()
        page.wait_for_timeout(500)
        if not page.locator(f"{PREFIX}accordion-visible-checkbox").first.is_checked():
            problems.append("opening the accordion did not tick its checkbox")
        interval = page.locator(f"{PREFIX}interval input[type=number]").first
        interval.fill("4")
        interval.press("Enter")
        page.wait_for_timeout(300)
        estimate = page.inner_text(f"{PREFIX}estimate")
        print("estimate:", estimate)
        if "5 of 20 steps" not in estimate:
            problems.append(f"the estimate does not follow the interval: {estimate!r}")
        title = page.get_attribute(f"{PREFIX}branch", "title") or ""
        if "shallow blocks" not in title:
            problems.append(f"no tooltip on the branch slider: {title!r}")
        page.locator(f"{PREFIX}accordion").first.screenshot(path=a.out)
        print("screenshot", a.out)
        page.click("#txt2img_generate")
        page.wait_for_function("() => (document.querySelector('#html_info_txt2img') || {}).innerText"
                               "?.includes('DeepCache')", timeout=300_000)
        info = page.inner_text("#html_info_txt2img")
        print("infotext:", info.replace("\n", " | "))
        for expected in ("DeepCache: 15/20 steps cached", "DeepCache interval: 4"):
            if expected not in info:
                problems.append(f"{expected!r} missing from the infotext")
        problems += adaptive_schedule(page)
        browser.close()
    for problem in problems:
        print("FAIL:", problem, file=sys.stderr)
    print("UI check:", "failed" if problems else "passed")
    return 1 if problems else 0


def adaptive_schedule(page) -> list[str]:
    """Advanced -> Schedule -> adaptive shows the threshold slider (hidden before), the estimate turns into a range,
    a generation (with Forecast ticked) says so in its infotext, and the estimate then shows that run's count."""
    problems = []
    page.locator(f"{PREFIX}advanced").first.click()
    page.wait_for_timeout(300)
    threshold = page.locator(f"{PREFIX}threshold").first
    if threshold.is_visible():
        problems.append("the threshold slider is shown with the uniform schedule")
    page.locator(f"{PREFIX}schedule label", has_text="adaptive").first.click()
    page.wait_for_timeout(500)
    if not threshold.is_visible():
        problems.append("choosing the adaptive schedule did not show the threshold slider")
    estimate = page.inner_text(f"{PREFIX}estimate")
    print("adaptive estimate:", estimate)
    if "adaptive: decided while sampling" not in estimate:
        problems.append(f"the estimate does not give a range for the adaptive schedule: {estimate!r}")
    forecast = page.locator(f"{PREFIX}forecast input[type=checkbox]").first
    if not forecast.is_visible():
        problems.append("no Forecast checkbox under Advanced")
    forecast.check()
    page.click("#txt2img_generate")
    page.wait_for_function("() => (document.querySelector('#html_info_txt2img') || {}).innerText"
                           "?.includes('DeepCache schedule: adaptive')", timeout=300_000)
    info = page.inner_text("#html_info_txt2img")
    print("adaptive infotext:", info.replace("\n", " | "))
    if "DeepCache forecast: True" not in info:
        problems.append(f"ticking Forecast did not reach the infotext: {info!r}")
    page.wait_for_timeout(2000)  # the estimate refreshes itself when a generation writes its infotext
    estimate = page.inner_text(f"{PREFIX}estimate")
    print("estimate after the run:", estimate)
    if "last adaptive run" not in estimate:
        problems.append(f"the estimate does not show the last adaptive run: {estimate!r}")
    page.locator(f"{PREFIX}accordion").first.screenshot(path="accordion-adaptive.png")
    return problems


if __name__ == "__main__":
    sys.exit(main())

"""What open web pages cost the engine: frame time p99 and underruns of `serve` with no page open,
and with two (headless Chromium, the page at /ui/ LISTENing to everything), run after run in turn
so that the spread between runs of one kind shows what the machine's own noise is.

    .venv/bin/python bench/pages.py [--model my.distill] [--seconds 20] [--runs 3]

serve records to a file (`--output`, paced like a sound card) and logs its telemetry once a
second (`-v`); the figures are its last line: frame p99 over the last second's window and the
underruns of the whole run. Needs Debian's chromium and chromium-driver. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TELEMETRY = re.compile(r"frame ([\d.]+)/([\d.]+) ms \(p50/p99\).*underruns (\d+)")


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def run(model: str, seconds: float, pages: int, driver) -> dict:
    http = free_port(socket.SOCK_STREAM)
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([sys.executable, "-m", "distill_live", "serve", model, "--output", f"{tmp}/out.wav",
                                 "--seconds", str(seconds), "-v", "--osc-port", "0", "--oscquery-port", str(http),
                                 "--midi-api", "off"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{http}/ui/"
        for _ in range(600):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        handles = []
        for i in range(pages):
            if i:
                driver.switch_to.new_window("window")
            driver.get(url)
            handles.append(driver.current_window_handle)
        _, err = proc.communicate(timeout=seconds + 120)
        for h in handles[1:]:
            driver.switch_to.window(h)
            driver.close()
        if handles:
            driver.switch_to.window(handles[0])
            driver.get("about:blank")
    last = TELEMETRY.findall(err)[-1]
    return {"pages": pages, "frame_ms_p50": float(last[0]), "frame_ms_p99": float(last[1]), "underruns": int(last[2])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    demo = next(p for p in (ROOT / "distill_live/demo/demo.distill", ROOT / "demo/demo.distill") if p.exists())
    ap.add_argument("--model", default=str(demo))
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    driver = browser()
    try:
        runs = [run(args.model, args.seconds, pages, driver) for _ in range(args.runs) for pages in (0, 2)]
    finally:
        driver.quit()
    summary = {}
    for pages in (0, 2):
        mine = [r for r in runs if r["pages"] == pages]
        p99 = [r["frame_ms_p99"] for r in mine]
        summary[f"{pages}_pages"] = {"frame_ms_p99": p99, "p99_spread_ms": max(p99) - min(p99),
                                     "underruns": [r["underruns"] for r in mine]}
    print(json.dumps({"model": Path(args.model).name, "seconds": args.seconds, "machine": platform.processor() or
                      platform.machine(), "cpus": os.cpu_count(), "load": os.getloadavg()[0], **summary}, indent=1))


if __name__ == "__main__":
    main()

"""What open web pages cost the engine: frame time p99 and underruns of `serve` with no page open,
and with two (headless Chromium, the page at /ui/ LISTENing to everything), run after run in turn
so that the spread between runs of one kind shows what the machine's own noise is.

    .venv/bin/python bench/pages.py [--model my.distill] [--seconds 20] [--runs 3] [--clients socket] [--realtime]

`--clients socket` opens two bare WebSocket clients instead of pages, LISTENing to everything the
page does: what the feed costs `serve` alone, without a browser drawing on the same machine.

serve records to a file (`--output`, paced like a sound card) and logs its telemetry once a
second (`-v`); the figures are its last line: frame p99 over the telemetry's window (the last 500
frames, 10 s of the demo) and the underruns of the whole run. Needs Debian's chromium and chromium-driver. Prints one JSON object.
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
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from oscpeers import free_port  # noqa: E402

TELEMETRY = re.compile(r"frame ([\d.]+)/([\d.]+) ms \(p50/p99\).*underruns (\d+)")


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def listen(url: str, stop: threading.Event, counts: list) -> None:
    """A bare OSCQuery client: LISTEN to every node of the tree, as the page does, and count what comes."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    def addresses(node: dict):
        if "FULL_PATH" in node and "TYPE" in node:
            yield node["FULL_PATH"]
        for child in node.get("CONTENTS", {}).values():
            yield from addresses(child)

    tree = json.load(urllib.request.urlopen(url.replace("ws://", "http://"), timeout=5))
    with connect(url) as ws:
        for address in addresses(tree):
            ws.send(json.dumps({"COMMAND": "LISTEN", "DATA": address}))
        while not stop.is_set():
            try:
                ws.recv(timeout=0.5)
                counts.append(1)
            except TimeoutError:
                pass
            except ConnectionClosed:  # serve has finished
                return


def run(model: str, seconds: float, pages: int, driver, realtime: bool = False) -> dict:
    http = free_port(socket.SOCK_STREAM)
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([sys.executable, "-m", "distill_live", "serve", model, "--output", f"{tmp}/out.wav",
                                 "--seconds", str(seconds), "-v", "--osc-port", "0", "--oscquery-port", str(http),
                                 "--midi-api", "off", *(["--realtime"] if realtime else [])],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{http}/ui/"
        for _ in range(600):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        handles, stop, counts = [], threading.Event(), []
        sockets = [threading.Thread(target=listen, args=(f"ws://127.0.0.1:{http}/", stop, counts))
                   for _ in range(pages if driver is None else 0)]
        for t in sockets:
            t.start()
        for i in range(pages if driver is not None else 0):
            if i:
                driver.switch_to.new_window("window")
            driver.get(url)
            handles.append(driver.current_window_handle)
        _, err = proc.communicate(timeout=seconds + 120)
        stop.set()
        for t in sockets:
            t.join()
        for h in handles[1:]:
            driver.switch_to.window(h)
            driver.close()
        if handles:
            driver.switch_to.window(handles[0])
            driver.get("about:blank")
    last = TELEMETRY.findall(err)[-1]
    return {"pages": pages, "frame_ms_p50": float(last[0]), "frame_ms_p99": float(last[1]), "underruns": int(last[2]),
            **({"messages": len(counts)} if sockets else {})}


def summarise(runs: list[dict], sockets: bool = False) -> dict:
    """Per kind (0 and 2 open): each run's frame p99, their median and spread, the underruns; and how many
    runs with two open are inside the spread (lowest..highest p99) of the runs with none: the issue's test."""
    summary = {}
    for pages in (0, 2):
        mine = [r for r in runs if r["pages"] == pages]
        p99 = [r["frame_ms_p99"] for r in mine]
        summary[f"{pages}_pages"] = {"frame_ms_p99": p99, "p99_median_ms": float(np.median(p99)),
                                     "p99_spread_ms": round(max(p99) - min(p99), 3),
                                     "underruns": [r["underruns"] for r in mine],
                                     **({"messages": [r["messages"] for r in mine]} if pages and sockets else {})}
    lo, hi = min(summary["0_pages"]["frame_ms_p99"]), max(summary["0_pages"]["frame_ms_p99"])
    summary["2_pages"]["inside_spread_of_none"] = sum(lo <= v <= hi for v in summary["2_pages"]["frame_ms_p99"])
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    demo = next(p for p in (ROOT / "distill_live/demo/demo.distill", ROOT / "demo/demo.distill") if p.exists())
    ap.add_argument("--model", default=str(demo))
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", choices=("browser", "socket"), default="browser",
                    help="pages in headless Chromium (default) or bare WebSocket clients")
    ap.add_argument("--realtime", action="store_true", help="serve --realtime: the generator thread above the "
                    "browser (needs root or an rtprio limit, `ulimit -r`)")
    args = ap.parse_args()
    driver = browser() if args.clients == "browser" else None
    try:
        runs = [run(args.model, args.seconds, pages, driver, args.realtime) for _ in range(args.runs)
                for pages in (0, 2)]
    finally:
        if driver is not None:
            driver.quit()
    summary = summarise(runs, sockets=driver is None)
    print(json.dumps({"model": Path(args.model).name, "clients": args.clients, "realtime": args.realtime,
                      "seconds": args.seconds, "machine": platform.processor() or
                      platform.machine(), "cpus": os.cpu_count(), "load": os.getloadavg()[0], **summary}, indent=1))


if __name__ == "__main__":
    main()

"""How many OSC control messages per second the server applies without loss and without an underrun,
while the engine plays.

A separate process (as Max, Pd or SuperCollider would be) sends `/distill/gain` and
`/distill/world/<name>` messages over UDP on loopback at a fixed rate for a few seconds; the engine
plays into a stand-in sound card that takes one hop per frame period through the engine's own
callback. A message counts as applied when the generator thread reports it applied
(`engine.changes`, drained by the OSC reply thread). Replies (`/distill/state` for each change,
meters, stats) go to a local socket, as they would to a patch.

    .venv/bin/python bench/osc_throughput.py [--model my.distill] [--rates 1000,5000,20000] [--seconds 3]

Prints one JSON object. The goal is at least 5,000 messages per second.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from distill_live.control.osc.server import OscServer  # noqa: E402
from distill_live.live.engine import Engine  # noqa: E402
from distill_live.live.soundcard import PacedOutput  # noqa: E402
from distill_live.model.modelfile import random_model  # noqa: E402

SENDER = r"""
import json, socket, sys, time
from pythonosc.osc_message_builder import OscMessageBuilder
port, rate, seconds, worlds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
addresses = ["/distill/gain"] + [f"/distill/world/{w}" for w in worlds]
packets = []
for i in range(4096):
    b = OscMessageBuilder(addresses[i % len(addresses)])
    b.add_arg(0.25 + 0.5 * (i % 1000) / 1000.0)
    packets.append(b.build().dgram)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
total = int(rate * seconds)
start = time.perf_counter()
sent = 0
while sent < total:
    due = int((time.perf_counter() - start) * rate) + 1  # messages that should be out by now
    while sent < min(due, total):
        sock.sendto(packets[sent % 4096], ("127.0.0.1", port))
        sent += 1
    if sent < total:
        time.sleep(0.0005)
print(json.dumps({"sent": sent, "seconds": time.perf_counter() - start}))
"""


class Sink:
    """Where replies go: reads and counts them."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port, self.count, self.stop_flag = self.sock.getsockname()[1], 0, threading.Event()
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while not self.stop_flag.is_set():
            try:
                self.sock.recv(65536)
                self.count += 1
            except OSError:
                pass


def measure(engine: Engine, server: OscServer, rate: float, seconds: float) -> dict:
    c, t = server.counters, engine.telemetry
    packets0, applied0, underruns0, pauses0 = c.packets, c.applied, t.underruns, c.flood_pauses
    frames0 = t.frames
    r = subprocess.run([sys.executable, "-c", SENDER, str(server.port), str(rate), str(seconds),
                        *engine.registry.worlds], capture_output=True, text=True, timeout=seconds * 10 + 60)
    if r.returncode != 0:
        raise SystemExit(f"the sender failed: {r.stderr.strip().splitlines()[-1:]}")
    sender = json.loads(r.stdout)
    # let the last messages reach the next frame boundaries and the reply thread
    last, idle_since = -1, time.monotonic()
    while time.monotonic() - idle_since < 0.5:
        if c.applied != last:
            last, idle_since = c.applied, time.monotonic()
        if c.applied - applied0 >= sender["sent"]:
            break
        time.sleep(0.05)
    compute = np.array(list(t.compute)) * 1000
    applied = c.applied - applied0
    return {
        "rate_asked": rate,
        "sent": sender["sent"],
        "send_seconds": round(sender["seconds"], 3),
        "rate_sent": round(sender["sent"] / sender["seconds"]),
        "received": c.packets - packets0,
        "applied": applied,
        "lost": sender["sent"] - applied,
        "underruns": t.underruns - underruns0,
        "flood_pauses": c.flood_pauses - pauses0,  # the receive thread rested to leave the generator its share
        "frames": t.frames - frames0,
        "frame_ms_p50": round(float(np.percentile(compute, 50)), 2),
        "frame_ms_p99": round(float(np.percentile(compute, 99)), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a .distill file (default: a random-weight tiny model)")
    ap.add_argument("--rates", default="1000,2000,5000,10000,20000,40000", help="messages per second to try")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds of sending per rate")
    ap.add_argument("--no-replies", action="store_true", help="send no replies (state, meters, stats)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the generator (default 1)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    if args.model:
        from distill_live.model.modelfile import load_model

        model, model_name = load_model(args.model), os.path.basename(args.model)
    else:
        model, model_name = random_model("tiny", 0, ["bells", "noise"], [40] * 3), "tiny preset, random weights"
    engine = Engine(model, buffer_ms=60)
    sink = Sink()
    server = OscServer(engine, port=0, reply=None if args.no_replies else ("127.0.0.1", sink.port))
    engine.registry.submit("/distill/play", [1])
    engine.start()
    card = PacedOutput(engine, 1, engine.hop)  # stands in for a sound card
    card.open()
    time.sleep(1.0)  # warm up
    results = []
    try:
        for rate in [float(r) for r in args.rates.split(",")]:
            results.append(measure(engine, server, rate, args.seconds))
            time.sleep(0.5)
    finally:
        card.close()
        server.close()
        engine.stop()
        sink.stop_flag.set()
    clean = [r["rate_sent"] for r in results if r["lost"] == 0 and r["underruns"] == 0]
    print(json.dumps({
        "benchmark": "osc_throughput",
        "model": model_name,
        "sample_rate": engine.sample_rate,
        "frame_ms": round(1000 * engine.hop / engine.sample_rate, 2),
        "replies": not args.no_replies,
        "replies_sent": server.counters.replies,
        "torch_threads": args.threads,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "load_avg_1m": round(os.getloadavg()[0], 2)},
        "results": results,
        "max_rate_without_loss_or_underrun": max(clean) if clean else 0,
        "goal": 5000,
    }, indent=2))


if __name__ == "__main__":
    main()

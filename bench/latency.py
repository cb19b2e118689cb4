"""Control-to-sound latency of `distill-live serve`, end to end through a real JACK server.

Starts a private jackd (dummy driver), runs `distill-live serve MODEL --stopped` into it, and
listens to the engine's JACK output with a JACK client of its own. Each trial sends one OSC
message at a known JACK frame time and finds the first sample it changed in the captured audio:

* `play`: `/distill/play 1` to a stopped engine (digital silence until then): the message goes
  through the OSC thread, the registry and the generator thread, which starts the model and the
  fade-in; the onset is the first non-zero sample.
* `gain`: `/distill/gain 1` to an engine playing at gain 0: the same path, the gain ramp.

Latency = onset frame time - send frame time, as the JACK graph sees it (add the card's own
playback latency, one period on the dummy driver, for the speaker). Prints one JSON object with
p50/p90/p99/max per control, the settings, and the engine's underruns.

    .venv/bin/python bench/latency.py MODEL [--period 256] [--trials 40] [--buffer-ms 10]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from jackaudio import jack_env, start_jackd, stop_process  # noqa: E402  (the tests' private jackd)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OnsetListener:
    """A JACK client whose process callback finds the first sample above `level` once armed."""

    def __init__(self, server: str, level: float):
        import jack

        self.client = jack.Client("latency-probe", servername=server, no_start_server=True)
        self.port = self.client.inports.register("in")
        self.level = level
        self.armed = False
        self.onset: int | None = None  # JACK frame time of the first loud sample
        self.quiet_periods = 0
        self.client.set_process_callback(self._process)
        self.client.activate()

    def _process(self, frames: int) -> None:
        x = self.port.get_array()
        hits = np.flatnonzero(np.abs(x) > self.level)
        self.quiet_periods = 0 if hits.size else self.quiet_periods + 1
        if self.armed and self.onset is None and hits.size:
            self.onset = self.client.last_frame_time + int(hits[0])

    def arm(self) -> None:
        self.onset = None
        self.armed = True

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"latency: timed out waiting for {what}")
        time.sleep(0.001)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--period", type=int, default=256, help="JACK frames per period (default 256 = 5.3 ms)")
    p.add_argument("--rate", type=int, default=48000)
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--buffer-ms", type=float, default=None, help="serve --buffer-ms (default: serve's default)")
    args = p.parse_args()
    name = f"distill-latency-{os.getpid()}"
    env = jack_env(name)
    try:
        jackd = start_jackd(name, args.period, args.rate)
    except RuntimeError as e:
        raise SystemExit(f"latency: {e}")
    serve = probe = None
    try:
        port = free_port()
        cmd = [sys.executable, "-m", "distill_live", "serve", args.model, "--stopped", "--osc-port", str(port),
               "--no-oscquery", "--midi-api", "off", "--channels", "1"]
        if args.buffer_ms is not None:
            cmd += ["--buffer-ms", str(args.buffer_ms)]
        serve = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        probe = OnsetListener(name, level=1e-6)
        wait(lambda: probe.client.get_ports("PortAudio.*", is_output=True, is_audio=True), 60, "serve's JACK port")
        probe.client.connect(probe.client.get_ports("PortAudio.*", is_output=True, is_audio=True)[0].name,
                             probe.port.name)
        from pythonosc.udp_client import SimpleUDPClient

        osc = SimpleUDPClient("127.0.0.1", port)
        time.sleep(1.0)
        results: dict[str, list[float]] = {"play": [], "gain": []}
        rng = random.Random(0)
        for control in ("play", "gain"):
            if control == "gain":
                osc.send_message("/distill/gain", 0.0)
                osc.send_message("/distill/play", 1)
            for _ in range(args.trials):
                wait(lambda: probe.quiet_periods * args.period > 0.15 * args.rate, 10, "silence")
                time.sleep(rng.uniform(0, 0.03))  # land anywhere in a frame and a period
                probe.arm()
                sent = probe.client.frame_time
                osc.send_message(f"/distill/{control}", 1 if control == "play" else 1.0)
                wait(lambda: probe.onset is not None, 5, f"the onset after /distill/{control}")
                results[control].append(1000.0 * (probe.onset - sent) / args.rate)
                osc.send_message(f"/distill/{control}", 0 if control == "play" else 0.0)
        serve.send_signal(2)
        out, err = serve.communicate(timeout=30)
        under = re.search(r"(\d+) underruns", out)
        report = {"model": args.model, "jack_period": args.period, "jack_period_ms": round(1000 * args.period / args.rate, 2),
                  "rate": args.rate, "trials": args.trials, "buffer_ms": args.buffer_ms,
                  "underruns": int(under.group(1)) if under else None}
        for control, values in results.items():
            v = np.array(values)
            report[control] = {f"p{q}": round(float(np.percentile(v, q)), 2) for q in (50, 90, 99)}
            report[control]["max"] = round(float(v.max()), 2)
        print(json.dumps(report, indent=2))
        return 0
    finally:
        if probe is not None:
            probe.close()
        if serve is not None and serve.poll() is None:
            serve.kill()
        stop_process(jackd)


if __name__ == "__main__":
    sys.exit(main())

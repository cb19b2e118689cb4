"""Soak `distill-live serve`: a long run into a private JACK server under a flood of OSC and MIDI.

Starts a private jackd (dummy driver, non-realtime), runs `distill-live serve MODEL -v` into it with
its virtual JACK MIDI input, and for `--minutes`:

* floods OSC at `--rate` messages a second with random *valid* controls built from the model's
  parameter registry (gain, temperature, topk, topp, guidance, world weights, descriptors and their
  /free, cue jumps, freeze on/off, loop, levels, lock, mutate, seed, reset, play);
* plays MIDI into serve's input "distill:distill" from a JACK MIDI port of its own: CC sweeps on
  the generic map's controllers, notes (with note-offs), pitch bend, pressure, program changes.

Replies go to a listener of ours (`--reply`). At the end it checks that serve still obeys a control
(`/distill/gain` then `/distill/dump` shows the value), stops serve with SIGINT and prints one JSON
object: minutes, messages and MIDI events sent, underruns, frame-time p99 (from serve's `-v` lines:
each is the p99 of the last 500 frames, ~10 s; we take one every 10 s, so the windows do not
overlap, and report their median and max), resident memory, open file descriptors and threads
(from /proc) after a 10 s warm-up and at the end, memory growth, the engine's faults and errors, and
when the machine itself stopped for over 5 ms meanwhile (tests/stalls.py), beside the underruns' times.

    .venv/bin/python bench/soak.py [MODEL] [--minutes 10] [--rate 1000] [--midi-rate 200]

The module also serves tests/test_soak.py (Soak); the private jackd is tests/jackaudio.py's.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import socket
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from jackaudio import jack_env, start_jackd, stop_process  # noqa: E402  (the tests' private jackd)
from oscpeers import free_port  # noqa: E402
from stalls import MachineStalls  # noqa: E402

DEMO = ROOT / "distill_live" / "demo" / "demo.distill"
WARM_UP = 10.0  # seconds after serve's first line before the "start" figures are taken
V_LINE = re.compile(r"rtf ([\d.]+)\s+frame ([\d.]+)/([\d.]+) ms \(p50/p99\).*underruns (\d+)")
FINAL = re.compile(r"stopped after (\d+) frames, (\d+) underruns")


# -- /proc figures ---------------------------------------------------------------------------------


def proc_figures(pid: int) -> dict:
    """Resident memory (MiB), threads and open file descriptors of a live process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return {"rss_mib": round(rss_kb / 1024, 1), "threads": threads, "fds": fds}


# -- random valid controls -------------------------------------------------------------------------


def control_pool(model_path: str | Path) -> list:
    """(weight, make(rng) -> (address, args)) for every control worth flooding, from the registry.
    /distill/model (hot-swap) is left out; play is sent as 1 only (a stopped engine tests nothing)."""
    from distill_live.control.params import ParamRegistry
    from distill_live.model.modelfile import load_model

    registry = ParamRegistry.for_model(load_model(model_path))
    pool = []
    for address, p in registry.params.items():
        name = p.name
        if name in ("model",):
            continue
        if name == "play":
            pool.append((1, lambda r, a=address: (a, [1])))
        elif p.types == "f":
            pool.append((4, lambda r, a=address, lo=p.lo, hi=p.hi: (a, [r.uniform(lo, hi)])))
        elif p.types == "i":
            hi = min(p.hi, 1 << 20) if name == "seed" else p.hi
            w = 1 if name in ("levels", "lock", "loop", "seed") else 2
            pool.append((w, lambda r, a=address, lo=int(p.lo), hi=int(hi): (a, [r.randint(lo, hi)])))
        elif p.types == "b":  # freeze
            pool.append((2, lambda r, a=address: (a, [r.randint(0, 1)])))
        elif p.types == "f*":  # mix: one weight per world
            pool.append((2, lambda r, a=address, n=len(registry.worlds): (a, [r.random() for _ in range(n)])))
        elif p.types == "i,f?":  # cue jump, with or without a crossfade
            pool.append((2, lambda r, a=address, lo=int(p.lo), hi=int(p.hi):
                         (a, [r.randint(lo, hi)] + ([r.uniform(0.0, 0.2)] if r.random() < 0.5 else []))))
        elif p.types == "":  # triggers: descriptor/.../free, reset
            pool.append((1 if name == "reset" else 2, lambda r, a=address: (a, [])))
    return pool


class OscFlood(threading.Thread):
    """Sends random valid controls to serve at `rate` messages a second, paced in 10 ms batches."""

    def __init__(self, port: int, pool: list, rate: float, seed: int = 0):
        super().__init__(daemon=True, name="osc-flood")
        from pythonosc.udp_client import SimpleUDPClient

        self.client = SimpleUDPClient("127.0.0.1", port)
        self.makers = [m for _, m in pool]
        self.weights = [w for w, _ in pool]
        self.rate, self.rng = rate, random.Random(seed)
        self.sent = 0
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.stop.is_set():
            due = int((time.monotonic() - start) * self.rate) - self.sent
            for maker in self.rng.choices(self.makers, self.weights, k=max(0, due)):
                address, args = maker(self.rng)
                try:
                    self.client.send_message(address, args)
                    self.sent += 1
                except OSError:
                    self.errors += 1
            self.stop.wait(0.01)


class MidiFlood(threading.Thread):
    """A JACK MIDI controller playing into serve's virtual input: CC sweeps, notes, bend, pressure."""

    CCS = (1, 7, 11, 74, 71, 16, 17, 18, 19)

    def __init__(self, server: str, rate: float, seed: int = 0):
        super().__init__(daemon=True, name="midi-flood")
        import mido

        os.environ["JACK_DEFAULT_SERVER"] = server  # rtmidi opens its JACK client on this server
        self.mido = mido
        self.out = mido.Backend("mido.backends.rtmidi/UNIX_JACK").open_output("out", client_name="soak-midi")
        self.rate, self.rng = rate, random.Random(seed)
        self.sent = 0
        self.stop = threading.Event()

    def connect(self, patchbay, timeout: float = 30.0) -> str:
        """Connect our output to serve's virtual input (the JACK MIDI port of a client named like distill)."""
        deadline = time.monotonic() + timeout
        while True:
            ports = [p.name for p in patchbay.get_ports(is_midi=True, is_input=True)
                     if p.name.split(":", 1)[0].startswith("distill")]
            mine = [p.name for p in patchbay.get_ports("soak-midi", is_midi=True, is_output=True)]
            if ports and mine:
                patchbay.connect(mine[0], ports[0])
                return ports[0]
            if time.monotonic() > deadline:
                raise RuntimeError(f"no JACK MIDI input named like 'distill' after {timeout}s: "
                                   f"{[p.name for p in patchbay.get_ports(is_midi=True)]}")
            time.sleep(0.1)

    def _events(self):
        """An endless stream of messages: sweeps of one CC up and down, with notes and the rest between."""
        M, r = self.mido.Message, self.rng
        held: list[int] = []
        while True:
            cc = r.choice(self.CCS)
            for v in list(range(0, 128, 8)) + list(range(127, -1, -8)):
                yield M("control_change", control=cc, value=v)
                roll = r.random()
                if roll < 0.05:
                    note = r.randint(36, 36 + 40)
                    held.append(note)
                    yield M("note_on", note=note, velocity=r.randint(1, 127))
                elif roll < 0.10 and held:
                    yield M("note_off", note=held.pop(0))
                elif roll < 0.13:
                    yield M("pitchwheel", pitch=r.randint(-8192, 8191))
                elif roll < 0.15:
                    yield M("aftertouch", value=r.randint(0, 127))
                elif roll < 0.16:
                    yield M("program_change", program=r.randint(0, 5))
                elif roll < 0.18:
                    yield M("control_change", control=64, value=r.choice((0, 127)))  # sustain: freeze

    def run(self) -> None:
        events = self._events()
        start = time.monotonic()
        while not self.stop.is_set():
            due = int((time.monotonic() - start) * self.rate) - self.sent
            for _ in range(max(0, due)):
                self.out.send(next(events))
                self.sent += 1
            self.stop.wait(0.01)

    def close(self) -> None:
        self.out.close()


class Replies(threading.Thread):
    """Receives serve's replies: counts everything, keeps only what the soak reads (bounded)."""

    def __init__(self):
        super().__init__(daemon=True, name="replies")
        from pythonosc.osc_message import OscMessage

        self.OscMessage = OscMessage
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self.stats: list[tuple] = []  # /distill/stats (rtf, buffer_ms, underruns, latency_ms)
        self.errors: list[str] = []
        self.watch: set[str] = set()  # /distill/state addresses to keep
        self.states: list[tuple] = []
        self.closing = threading.Event()

    def run(self) -> None:
        while not self.closing.is_set():
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, OSError):
                continue
            self.count += 1
            try:
                msg = self.OscMessage(data)
            except Exception:
                continue
            if msg.address == "/distill/stats":
                self.stats.append(tuple(msg.params))
            elif msg.address == "/distill/error":
                if len(self.errors) < 1000:
                    self.errors.append(str(msg.params[0]))
            elif msg.address == "/distill/state" and msg.params and msg.params[0] in self.watch:
                self.states.append(tuple(msg.params))

    def close(self) -> None:
        self.closing.set()
        self.join(timeout=1)
        self.sock.close()


class Soak:
    """serve MODEL into JACK server `server` with a flood of OSC and MIDI; figures in `self.report()`."""

    def __init__(self, model: str | Path, server: str, rate: float = 1000, midi_rate: float = 200,
                 extra: tuple = ()):
        import jack

        self.model, self.server = str(model), server
        self.rate, self.midi_rate = rate, midi_rate
        self.port = free_port()
        self.replies = Replies()
        self.replies.watch.add("/distill/gain")
        # the flood saves presets: into a file of the soak's own, not beside the model (the bundled demo's
        # folder is the package's)
        self.presets = Path(tempfile.mkdtemp(prefix="distill-soak-")) / "soak.presets.toml"
        self.cmd = [sys.executable, "-m", "distill_live", "serve", self.model, "-v", "--osc-port", str(self.port),
                    "--no-oscquery", "--reply", f"127.0.0.1:{self.replies.port}", "--midi-api", "jack",
                    "--midi-virtual", "--presets", str(self.presets), *map(str, extra)]
        self.patchbay = jack.Client("soak-patchbay", servername=server, no_start_server=True)
        self.lines: list[str] = []  # serve's stdout and stderr, as they come
        self.v_lines: list[tuple[float, tuple]] = []  # (monotonic, (rtf, p50, p99, underruns))
        self.proc: subprocess.Popen | None = None
        self.osc = self.midi = None
        self.stalls: MachineStalls | None = None
        self.figures: dict = {}

    def _read(self, stream) -> None:
        for line in stream:
            line = line.rstrip("\n")
            m = V_LINE.search(line)
            if m:
                self.v_lines.append((time.monotonic(), tuple(float(x) for x in m.groups())))
            elif len(self.lines) < 5000:
                self.lines.append(line)

    def start(self) -> "Soak":
        self.replies.start()
        self.proc = subprocess.Popen(self.cmd, env=jack_env(self.server), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()
        deadline = time.monotonic() + 90
        while not any("Ctrl-C stops" in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("serve did not start:\n" + "\n".join(self.lines[-30:]))
            time.sleep(0.1)
        self.started = time.monotonic()
        self.stalls = MachineStalls()
        self.midi = MidiFlood(self.server, self.midi_rate)
        self.midi_port = self.midi.connect(self.patchbay)
        self.osc = OscFlood(self.port, control_pool(self.model), self.rate)
        self.osc.start()
        self.midi.start()
        return self

    def warm(self) -> None:
        """Wait out the warm-up, then take the start figures."""
        time.sleep(max(0.0, self.started + WARM_UP - time.monotonic()))
        self.figures["start"] = proc_figures(self.proc.pid)
        self.figures["start_time"] = time.monotonic()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop_flood(self) -> None:
        for f in (self.osc, self.midi):
            if f is not None:
                f.stop.set()
                f.join(timeout=2)
        time.sleep(0.5)  # let the last messages land

    def obeys(self, value: float = 0.777, timeout: float = 5.0) -> bool:
        """Send /distill/gain VALUE and /distill/dump; True once the dump (or the change) reports it."""
        from pythonosc.udp_client import SimpleUDPClient

        client = SimpleUDPClient("127.0.0.1", self.port)
        client.send_message("/distill/play", 1)
        client.send_message("/distill/gain", value)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.3)
            client.send_message("/distill/dump", [])
            time.sleep(0.2)
            if any(abs(float(s[1]) - value) < 1e-4 for s in self.replies.states[-50:] if len(s) > 1):
                return True
        return False

    def sounding(self) -> None:
        """Put serve back as it starts, playing: every stored control at its default, the descriptors free,
        then /distill/reset. The flood leaves random controls, and some of them are rightly quiet (a region
        looped on a silent passage, the brightness held at 0, the gain near 0): 2 of 60 end states rendered
        under 1e-3 RMS. What the soak asks is whether serve still sounds, not whether those do."""
        from pythonosc.udp_client import SimpleUDPClient

        from distill_live.control.params import PREFIX, ParamRegistry
        from distill_live.model.modelfile import load_model

        registry = ParamRegistry.for_model(load_model(self.model))
        client = SimpleUDPClient("127.0.0.1", self.port)
        for address, value in registry.values.items():
            if address == f"{PREFIX}/play" or (address.startswith(f"{PREFIX}/corpus/") and not registry.corpus):
                continue
            if address.startswith(f"{PREFIX}/descriptor/"):
                client.send_message(f"{address}/free", [])
            else:
                client.send_message(address, [value])
        client.send_message(f"{PREFIX}/play", 1)
        client.send_message(f"{PREFIX}/reset", [])

    def end_figures(self) -> None:
        self.figures["end"] = proc_figures(self.proc.pid)
        self.figures["underruns_at_end"] = self.v_lines[-1][1][3] if self.v_lines else None
        self.figures["end_time"] = time.monotonic()
        self.figures["stalls"] = self.stalls.stop()

    def finish(self, timeout: float = 60.0) -> int:
        """SIGINT serve (its Ctrl-C: fade out, stop) and wait; returns its exit status."""
        self.proc.send_signal(2)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        time.sleep(0.3)  # the reader threads drain the pipes
        return rc

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.midi is not None:
            self.midi.close()
        if self.stalls is not None:
            self.stalls.kill()
        self.replies.close()
        self.patchbay.close()
        shutil.rmtree(self.presets.parent, ignore_errors=True)

    def _underrun_times(self) -> list:
        """Seconds since serve started at which the -v lines first showed more underruns (first 20)."""
        out, last = [], 0
        for t, v in self.v_lines:
            if v[3] > last:
                out.append(round(t - self.started, 1))
                last = v[3]
        final = FINAL.search("\n".join(self.lines))
        if final and int(final.group(2)) > last:
            out.append("at stop")
        return out[:20]

    def report(self, rc: int | None = None) -> dict:
        s, e = self.figures.get("start", {}), self.figures.get("end", {})
        stalls = self.figures.get("stalls", {})
        text = "\n".join(self.lines)
        final = FINAL.search(text)
        # one -v line every 10 s, from after the warm-up: non-overlapping 500-frame (10 s) windows
        t0 = self.figures.get("start_time", 0.0)
        picked, last = [], None
        for t, v in self.v_lines:
            if t >= t0 and (last is None or t - last >= 10.0):
                picked.append(v)
                last = t
        p99s = sorted(v[2] for v in picked)
        at_warm = [v[3] for t, v in self.v_lines if t <= t0]
        growth = 100.0 * (e["rss_mib"] - s["rss_mib"]) / s["rss_mib"] if s and e else None
        minutes = (self.figures.get("end_time", time.monotonic()) - self.started) / 60
        return {
            "model": os.path.relpath(self.model, ROOT) if self.model.startswith(str(ROOT)) else self.model,
            "minutes": round(minutes, 2),
            "osc_rate": self.rate, "midi_rate": self.midi_rate,
            "messages_sent": self.osc.sent if self.osc else 0,
            "midi_events_sent": self.midi.sent if self.midi else 0,
            "replies_received": self.replies.count,
            "frames": int(final.group(1)) if final else None,
            "underruns": int(final.group(2)) if final else (int(self.replies.stats[-1][2]) if self.replies.stats else None),
            "underruns_during_warm_up": int(at_warm[-1]) if at_warm else None,
            "underruns_during_flood": int(self.figures["underruns_at_end"] - (at_warm[-1] if at_warm else 0))
            if self.figures.get("underruns_at_end") is not None else None,
            "underrun_times_s": self._underrun_times(),
            # the machine itself stopping (tests/stalls.py), when and for how long (ms) past 5 ms
            "machine_stalls_over_5ms": stalls.get("over_5ms"), "machine_stall_worst_ms": stalls.get("worst_ms"),
            "machine_stall_times_s": [(round(t - self.started, 1), ms) for t, ms in stalls.get("stalls", [])[:20]],
            "frame_ms_p99": p99s[-1] if p99s else None,  # worst 10 s window
            "frame_ms_p99_median_window": p99s[len(p99s) // 2] if p99s else None,
            "frame_ms_p50_median_window": sorted(v[1] for v in picked)[len(picked) // 2] if picked else None,
            "rtf_min_window": min(v[0] for v in picked) if picked else None,
            "rss_mib_start": s.get("rss_mib"), "rss_mib_end": e.get("rss_mib"),
            "rss_growth_pct": round(growth, 2) if growth is not None else None,
            "fds_start": s.get("fds"), "fds_end": e.get("fds"),
            "threads_start": s.get("threads"), "threads_end": e.get("threads"),
            "errors_reported": len(self.replies.errors),
            "errors_kinds": dict(collections.Counter(e.split(":")[0][:60] for e in self.replies.errors).most_common(5)),
            "tracebacks": text.count("Traceback"),
            "exit_status": rc,
        }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default=str(DEMO))
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=1000.0, help="OSC messages a second")
    p.add_argument("--midi-rate", type=float, default=200.0, help="MIDI events a second")
    p.add_argument("--period", type=int, default=1024, help="JACK frames per period")
    args = p.parse_args()
    name = f"distill-soak-{os.getpid()}"
    jackd = start_jackd(name, args.period)
    soak = None
    try:
        soak = Soak(Path(args.model).resolve(), name, args.rate, args.midi_rate).start()
        soak.warm()
        end = soak.started + 60 * args.minutes
        while time.monotonic() < end and soak.alive():
            time.sleep(1.0)
        if not soak.alive():
            print("\n".join(soak.lines[-40:]), file=sys.stderr)
            raise SystemExit(f"soak: serve died after {(time.monotonic() - soak.started) / 60:.1f} minutes")
        soak.end_figures()
        soak.stop_flood()
        obeys = soak.obeys()
        rc = soak.finish()
        report = soak.report(rc)
        report["obeys_at_end"] = obeys
        report["jack_period"] = args.period
        print(json.dumps(report, indent=2))
        return 0 if rc == 0 and obeys else 1
    finally:
        if soak is not None:
            soak.close()
        stop_process(jackd)


if __name__ == "__main__":
    sys.exit(main())

"""`distill-live serve MODEL --input`: a live input encoded through the codec, end to end through a
private JACK server (dummy driver). One JACK client plays known signals into the engine's input ports
(`PortAudio:in_0/1`), another records its output, and both know the JACK frame time of every sample.

The model is the bundled demo: its codec (8000 steps) reconstructs loudness and brightness, which the
suite's quickly trained model (600 codec steps) does not.
"""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from pythonosc.udp_client import SimpleUDPClient

from distill_live.control.params import ParamRegistry
from distill_live.live.audioinput import AudioInput
from distill_live.live.player import Player
from distill_live.model.modelfile import load_model
from jackaudio import JackSource, TimedCapture
from oscpeers import Listener, wait_for

pytestmark = pytest.mark.slow  # runs serve into JACK

DEMO = Path(__file__).resolve().parent.parent / "distill_live" / "demo" / "demo.distill"
P = "/distill"


def serve(*args, env=None) -> tuple[subprocess.Popen, int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "distill_live", "serve", str(DEMO), "--osc-port", str(port),
                             "--no-oscquery", "--midi-api", "off", *map(str, args)],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, port


def input_ports(client) -> list[str]:
    """The engine's JACK input ports (PortAudio names its client PortAudio, PortAudio-01, ...)."""
    return [p.name for p in client.get_ports(r"PortAudio(-\d+)?:in_", is_audio=True)]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def centroid(x: np.ndarray, rate: int) -> float:
    power = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    return float((power * np.fft.rfftfreq(len(x), 1 / rate)).sum() / power.sum())


def bright(seconds: float, rate: int, rng) -> np.ndarray:
    """Struck partials (1.5 to 3.5 kHz, and 2.7 times that), like the demo's bells."""
    t = np.arange(int(seconds * rate)) / rate
    out = np.zeros_like(t)
    for onset in np.arange(0, seconds, 0.25):
        f = rng.uniform(1500, 3500)
        partials = np.sin(2 * np.pi * f * t) + 0.5 * np.sin(2 * np.pi * 2.7 * f * t)
        out += np.where(t >= onset, np.exp(-(t - onset) * 4), 0) * partials
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def dark(seconds: float, rate: int, rng) -> np.ndarray:
    """Noise below 300 Hz, like the demo's drones."""
    spec = np.fft.rfft(rng.standard_normal(int(seconds * rate)))
    spec[np.fft.rfftfreq(int(seconds * rate), 1 / rate) > 300] = 0
    out = np.fft.irfft(spec, int(seconds * rate))
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def test_bad_input_device_is_one_sentence(jack_server):
    proc, _ = serve("--input", "no-such-input", "--seconds", 1, env=jack_server.env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "no input device matches 'no-such-input'" in lines[0] and "system" in lines[0], err


def test_without_input_nothing_listens(jack_server):
    import jack

    assert f"{P}/input/mode" not in ParamRegistry.for_model(load_model(DEMO))
    proc, _ = serve("--seconds", 3, env=jack_server.env)
    client = jack.Client("distill-ports", servername=jack_server.name, no_start_server=True)
    try:
        wait_for(lambda: client.get_ports("PortAudio", is_output=True) or proc.poll() is not None, 60, "the output")
        assert not input_ports(client), "serve without --input opened an input stream"
    finally:
        client.close()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "listening" not in out, out + err
    assert re.search(r"stopped after \d+ frames", out), out


def test_freeze_holds_what_the_input_last_played():
    """Whenever the prior takes over from the input it starts from the input's last loud frames: frozen,
    it loops them. Offline, the input fed as its callback would be."""
    model = load_model(DEMO)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as serve does: at batch 1, two threads on two busy cores are many times slower
    try:
        held = {make.__name__: frozen_after(make, model) for make in (bright, dark)}
    finally:
        torch.set_num_threads(threads)
    rate = model.config.codec.sample_rate
    assert min(rms(x) for x in held.values()) > 5e-3  # the input stopped; its last frames go on
    assert centroid(held["bright"], rate) > 3 * centroid(held["dark"], rate)


def frozen_after(make, model) -> np.ndarray:
    """Resynthesise one second of `make`, freezing at 0.9 s, then silence: what plays after the input stops."""
    rate, hop = model.config.codec.sample_rate, model.config.codec.hop
    signal = np.concatenate([make(1.0, rate, np.random.default_rng(0)), np.zeros(rate, np.float32)])
    audio_input = AudioInput(1, rate, rate, hop, seconds=3)
    audio_input.callback(signal[:, None], len(signal), None, None)
    audio_input.pull()
    registry = ParamRegistry.for_model(model, audio_input=True)
    registry.submit(f"{P}/play", [1])
    registry.submit(f"{P}/freeze", [1], at=0.9)  # while the input still plays
    player = Player(model, registry, audio_input=audio_input)
    out, codes = [], []
    for _ in range(len(signal) // hop):
        out.append(player.next_frame())
        codes.append(tuple(player.last_codes.tolist()))
    played, looped = set(codes[:45]), set(codes[45:])  # frame 45 starts at 0.9 s
    assert looped <= played, "frozen, the prior loops the input's codes"
    return np.concatenate(out)[int(1.1 * rate):]


class Rig:
    """A running `serve --input`, a JACK source playing into its input and a capture of its output."""

    def __init__(self, jack_server):
        self.rate = jack_server.sample_rate
        self.listener = Listener()
        self.capture = TimedCapture(jack_server.name, channels=1, seconds=90.0, client_name="distill-input-capture")
        self.source = JackSource(jack_server.name, seconds=8.0)
        self.proc, port = serve("--input", "-v", "--set", "input/hold=0.2",
                                "--reply", f"127.0.0.1:{self.listener.port}", env=jack_server.env)
        self.log: list[tuple[float, str]] = []  # (time.monotonic(), line) of serve's log, as it comes
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        self.osc = SimpleUDPClient("127.0.0.1", port)
        self.capture.connect(timeout=60)
        inputs = wait_for(lambda: input_ports(self.capture.client) or self.proc.poll() is not None, 60,
                          "the engine's input ports")
        assert self.proc.poll() is None, self.proc.communicate()
        self.source.connect(inputs)

    def _read_log(self) -> None:
        for line in self.proc.stderr:
            self.log.append((time.monotonic(), line))

    def margins(self, since: float, until: float) -> list[float]:
        """What the engine kept ready beyond a card block (ms), as `-v` logged it once a second from `since`
        (time.monotonic()) to the first line after `until`."""
        wait_for(lambda: any(t > until for t, line in self.log if "margin" in line), 10, "serve's next -v line")
        return [float(m.group(1)) for t, line in list(self.log) if t >= since
                if (m := re.search(r"margin ([\d.]+) ms", line))]

    def set(self, name: str, value) -> None:
        """Send a control and wait until the engine has applied it (its /distill/state reply)."""
        applied = lambda: self.listener.of(f"{P}/state").count([f"{P}/{name}", value])  # noqa: E731
        before = applied()
        self.osc.send_message(f"{P}/{name}", value)
        wait_for(lambda: applied() > before, 10, f"/distill/{name} {value} applied")

    def underruns(self) -> int:
        """The engine's underrun count, from its next /distill/stats."""
        before = len(self.listener.of(f"{P}/stats"))
        return wait_for(lambda: self.listener.of(f"{P}/stats")[before:], 10, "/distill/stats")[0][2]

    def play(self, signal: np.ndarray, tail: float = 0.3) -> np.ndarray:
        """Play `signal` into the engine; returns its output over the same time, plus `tail` seconds."""
        start = self.source.play(signal)
        return self.capture.since(start, len(signal) + int(tail * self.rate))[:, 0]

    def close(self) -> str:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=30)
        self._reader.join(timeout=10)
        err = "".join(line for _, line in self.log)
        for part in (self.source, self.capture, self.listener):
            part.close()
        assert self.proc.returncode == 0, err
        return out + err


@pytest.fixture(scope="module")
def rig(jack_server):
    rig = Rig(jack_server)
    try:
        yield rig
    finally:
        log = rig.close()
    assert "Traceback" not in log and "input: latency" in log, log  # -v logs the input's figures


def test_resynth_follows_the_input_loudness_and_brightness(rig):
    rate, rng = rig.rate, np.random.default_rng(1)
    rig.set("input/mode", 1)
    before = rig.underruns()
    silence = np.zeros(int(0.8 * rate), np.float32)
    out = rig.play(np.concatenate([silence, bright(1.2, rate, rng), silence, dark(1.2, rate, rng), silence]))
    part = lambda a, b: out[int(a * rate):int(b * rate)]  # noqa: E731 (seconds from the signal's start)
    quiet = rms(part(0.3, 0.8)), rms(part(2.3, 2.8)), rms(part(4.3, 4.8))
    loud = rms(part(1.1, 2.0)), rms(part(3.1, 4.0))
    assert max(quiet) < 0.5 * min(loud), (quiet, loud)  # the output's loudness follows the input
    assert min(loud) > 5e-3, loud
    high, low = centroid(part(1.1, 2.0), rate), centroid(part(3.1, 4.0), rate)
    assert high > 3 * low, (high, low)  # and so does its brightness
    assert rig.underruns() == before


def test_continue_carries_on_when_the_input_stops(rig):
    rate, rng = rig.rate, np.random.default_rng(2)
    rig.set("input/mode", 2)
    before = rig.underruns()
    out = rig.play(np.concatenate([bright(1.0, rate, rng), np.zeros(2 * rate, np.float32)]))
    during = rms(out[int(0.2 * rate):rate])
    after = [rms(out[int(a * rate):int((a + 0.5) * rate)]) for a in (1.5, 2.0, 2.5)]
    # in resynth mode silence comes out near silent (the test above); here the prior goes on playing
    assert min(after) > 0.3 * during, (during, after)
    assert rig.underruns() == before


def test_input_to_output_latency(rig, jack_server):
    """The lag at which the output's loudness best follows the input's, for struck partials at uneven
    times (resynth mode): the input-to-output latency, in the graph (a real card adds its own input and
    output latency, about a period each)."""
    rate, rng = rig.rate, np.random.default_rng(3)
    rig.set("input/mode", 1)
    strikes = (0.3, 0.75, 1.05, 1.6, 1.9, 2.6, 2.8, 3.5)
    t = np.arange(int(4.0 * rate)) / rate
    signal = sum(np.where(t >= at, np.exp(-(t - at) * 25), 0.0) * np.sin(2 * np.pi * rng.uniform(1500, 3500) * t)
                 for at in strikes)
    began = time.monotonic()
    out = rig.play((0.3 * signal).astype(np.float32), tail=0.0)
    kept = max(rig.margins(since=began - 3.0, until=time.monotonic()))  # (ms) see below
    step = rate // 1000  # envelopes in 1 ms steps
    env_in, env_out = (np.sqrt(np.mean(x[: len(x) // step * step].reshape(-1, step) ** 2, axis=1))
                       for x in (signal, out))
    lags = np.arange(0, 250)
    fit = [np.corrcoef(env_in[: len(env_in) - lag], env_out[lag:])[0, 1] for lag in lags]
    latency, best = lags[int(np.argmax(fit))], max(fit)
    print(f"input to output latency at JACK period {jack_server.period}: {latency} ms (correlation {best:.2f}, "
          f"kept up to {kept:.1f} ms)")
    assert best > 0.5, best  # the output's loudness follows the input's
    # one frame to fill the encoder's window, then one card block and what the engine keeps ready for the
    # card (Engine.kept): `--buffer-ms` (10) or, if more, two card blocks, or, for two minutes after the
    # machine stopped serve or the card, 1.5 x the stop (the input's cushion follows it and comes down), and
    # for the first two minutes 15 ms (a first stop of 10 ms presumed: FIRST_STOP)
    period = 1000 * jack_server.period / rate
    assert 2 * period <= kept <= 100, kept
    assert latency < 20 + period + kept + 30, (latency, kept)

"""JACK for the tests and the benchmarks: start a private jackd (the one way they all start it), and
record what another JACK client plays.

Uses the JACK-Client package (``import jack``) in the test process. Whatever plays the
audio (the engine, or a test script using sounddevice) runs in a *subprocess* started
with ``jack_server.env``: PortAudio reads ``JACK_DEFAULT_SERVER`` once, at
``Pa_Initialize``, so it cannot be pointed at the private test server from inside an
already-running process that imported sounddevice.

How PortAudio (Debian libportaudio2 19.6) shows up in JACK, as measured:

* The JACK client is named ``PortAudio`` (a second PortAudio process on the same server
  becomes ``PortAudio-01``, then ``PortAudio-02``...). The client exists from the moment
  sounddevice is imported (``Pa_Initialize``), but has no ports yet.
* Opening an output stream with N channels registers output ports ``PortAudio:out_0``
  ... ``PortAudio:out_{N-1}`` (input streams: ``PortAudio:in_0`` ...). Starting the stream
  auto-connects them to ``system:playback_1`` ... (fan-out to our capture is fine).
* In sounddevice, the device is the one whose host API is named
  ``'JACK Audio Connection Kit'``; the server's ``system`` client is that device
  (2 in, 2 out with the fixture's dummy driver).
* Use *callback* streams. PortAudio 19.6's JACK blocking mode (``stream.write`` /
  ``read`` without a callback) is broken for anything but 2 channels: mono streams abort
  the process with glibc "double free or corruption" at stop/close, and a mono write
  with ``blocksize=1024`` hangs. Callback streams with 1 or 2 channels are fine.

Typical use::

    with JackCapture(jack_server.name, channels=1, seconds=1.0, trigger_level=0.01) as cap:
        proc = subprocess.Popen([...], env=jack_server.env)
        cap.connect("PortAudio", timeout=10)
        audio = cap.wait(timeout=10)          # (frames, channels) float32
        assert cap.xruns == 0

or in one call: ``record(name, "PortAudio", channels=2, seconds=1.0)`` once the source's
ports exist.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_SOURCE = r"PortAudio(-\d+)?"
JACK_START_TIMEOUT = 15.0  # jackd is usually up in ~0.5 s
JACK_STOP_TIMEOUT = 5.0


# -- a private JACK server -------------------------------------------------------------------------


def jack_env(name: str) -> dict:
    """os.environ for processes that use the JACK server `name` (and never autostart another)."""
    return dict(os.environ, JACK_DEFAULT_SERVER=name, JACK_NO_AUDIO_RESERVATION="1", JACK_NO_START_SERVER="1")


def jack_up(name: str) -> bool:
    """Whether the JACK server `name` accepts clients."""
    import jack

    jack.set_error_function(lambda m: None)  # silence "cannot connect" while polling
    try:
        jack.Client("distill-probe", servername=name, no_start_server=True).close()
        return True
    except jack.JackError:
        return False
    finally:
        jack.set_error_function(None)


def _die_with_parent() -> None:
    """In the jackd child: get SIGTERM if its parent dies without stopping it."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def start_jackd(name: str, period: int = 1024, rate: int = 48000, log: Path | None = None,
                realtime: bool = False) -> subprocess.Popen:
    """`jackd --no-realtime -n NAME -d dummy` (`-R` with `realtime`: what a performer runs, where the user
    may), waited for until it accepts clients. Raises RuntimeError (with jackd's output when `log` holds
    it) if it does not start."""
    jackd = shutil.which("jackd")
    if jackd is None:
        raise RuntimeError("jackd is not installed: run scripts/setup.sh")
    cmd = [jackd, "-R" if realtime else "--no-realtime", "-n", name, "-d", "dummy", "-r", str(rate), "-p", str(period)]
    out = open(log, "ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, env=jack_env(name), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    if log:
        out.close()
    deadline = time.monotonic() + JACK_START_TIMEOUT
    while not jack_up(name):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            said = log.read_text(errors="replace") if log else ""
            raise RuntimeError(f"jackd did not accept clients (exit {proc.returncode}): {' '.join(cmd)}\n{said}")
        time.sleep(0.05)
    return proc


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = JACK_STOP_TIMEOUT) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


# -- recording what a client plays -----------------------------------------------------------------


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _client_of(port_name: str) -> str:
    return port_name.split(":", 1)[0]


class JackCapture:
    """A JACK client with ``channels`` audio inputs recording into a preallocated buffer.

    The process callback copies each period into ``self.buffer`` (shape
    ``(frames, channels)``, float32, allocated up front) until it is full; nothing is
    allocated on the audio thread apart from what JACK-Client itself does.

    ``trigger_level``: if set, recording starts at the first sample (on any channel)
    whose absolute value exceeds it, so the result does not depend on when the
    connection took effect. If None, recording starts with the first period after
    ``activate`` (i.e. on entering the ``with`` block).

    ``xruns`` counts the xruns the server reported to this client while it was active
    (any client being late counts: JACK reports xruns server-wide).
    """

    def __init__(
        self,
        server_name: str,
        channels: int = 2,
        seconds: float = 1.0,
        *,
        client_name: str = "distill-capture",
        trigger_level: float | None = None,
    ):
        import jack  # JACK-Client; imported lazily so a missing package fails only users

        self._jack = jack
        self.server_name = server_name
        self.channels = int(channels)
        self.trigger_level = trigger_level
        self.client = jack.Client(client_name, servername=server_name, no_start_server=True)
        self.sample_rate: int = self.client.samplerate
        self.blocksize: int = self.client.blocksize
        self.frames = int(round(seconds * self.sample_rate))
        self.buffer = np.zeros((self.frames, self.channels), dtype=np.float32)
        self.inports = [self.client.inports.register(f"in_{i + 1}") for i in range(self.channels)]
        self.connected: list[str] = []
        self.xruns = 0
        self.periods = 0  # process callbacks seen while active
        self._pos = 0
        self._armed = trigger_level is None
        self._done = threading.Event()
        self.client.set_process_callback(self._process)
        self.client.set_xrun_callback(self._xrun)
        self._active = False

    # -- audio thread -------------------------------------------------------------
    def _process(self, nframes: int) -> None:
        self.periods += 1
        if self._done.is_set():
            return
        pos = self._pos
        start = 0
        if not self._armed:
            level = self.trigger_level
            first = nframes
            for port in self.inports:
                hits = np.flatnonzero(np.abs(port.get_array()) > level)
                if hits.size:
                    first = min(first, int(hits[0]))
            if first == nframes:
                return
            self._armed = True
            start = first
        n = min(nframes - start, self.frames - pos)
        for ch, port in enumerate(self.inports):
            self.buffer[pos : pos + n, ch] = port.get_array()[start : start + n]
        self._pos = pos + n
        if self._pos >= self.frames:
            self._done.set()

    def _xrun(self, delayed_usecs: float) -> None:
        self.xruns += 1

    # -- control ------------------------------------------------------------------
    def activate(self) -> "JackCapture":
        if not self._active:
            self.client.activate()
            self._active = True
        return self

    def close(self) -> None:
        if self._active:
            self.client.deactivate()
            self._active = False
        self.client.close()

    def __enter__(self) -> "JackCapture":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.close()

    def source_ports(self, source: str = DEFAULT_SOURCE) -> list[str]:
        """Audio output ports of clients whose name fully matches regex ``source``."""
        pat = re.compile(source)
        ports = self.client.get_ports(is_audio=True, is_output=True)
        names = [p.name for p in ports if pat.fullmatch(_client_of(p.name))]
        return sorted(names, key=_natural_key)

    def connect(self, source: str = DEFAULT_SOURCE, timeout: float = 10.0, min_ports: int = 1) -> list[str]:
        """Wait until clients matching ``source`` have at least ``min_ports`` audio
        outputs, then connect them in order (out_0 -> in_1, ...) to our inputs.

        Returns the connected source port names. Raises TimeoutError listing the ports
        that do exist if none show up in time.
        """
        self.activate()
        deadline = time.monotonic() + timeout
        while True:
            names = self.source_ports(source)
            if len(names) >= min_ports:
                break
            if time.monotonic() > deadline:
                present = [p.name for p in self.client.get_ports()]
                raise TimeoutError(
                    f"no JACK output ports from a client matching {source!r} after {timeout}s; "
                    f"ports on server {self.server_name!r}: {present}"
                )
            time.sleep(0.02)
        for src, dst in zip(names, self.inports):
            self.client.connect(src, dst)
            self.connected.append(src)
        return list(self.connected)

    @property
    def recorded(self) -> int:
        return self._pos

    @property
    def data(self) -> np.ndarray:
        """The part of the buffer recorded so far (a view)."""
        return self.buffer[: self._pos]

    def wait(self, timeout: float = 10.0) -> np.ndarray:
        """Block until the buffer is full; return it. TimeoutError says how far it got."""
        if not self._done.wait(timeout):
            what = "waiting for the trigger" if not self._armed else f"{self._pos}/{self.frames} frames"
            raise TimeoutError(
                f"capture incomplete after {timeout}s: {what}; connected {self.connected}, "
                f"{self.periods} periods, {self.xruns} xruns"
            )
        return self.buffer


@dataclass
class Recording:
    data: np.ndarray  # (frames, channels) float32
    sample_rate: int
    ports: list[str]
    xruns: int


def record(
    server_name: str,
    source: str = DEFAULT_SOURCE,
    channels: int = 2,
    seconds: float = 1.0,
    *,
    timeout: float = 10.0,
    trigger_level: float | None = None,
    client_name: str = "distill-capture",
) -> Recording:
    """Connect to ``source``'s outputs (waiting for them) and record ``seconds``."""
    with JackCapture(
        server_name, channels, seconds, client_name=client_name, trigger_level=trigger_level
    ) as cap:
        ports = cap.connect(source, timeout=timeout)
        data = cap.wait(timeout=timeout + seconds)
        return Recording(data.copy(), cap.sample_rate, ports, cap.xruns)


def dominant_frequency(signal: np.ndarray, sample_rate: int, resolution_hz: float = 0.25) -> float:
    """Frequency of the largest spectral peak of a mono signal (Hann window, zero-padded
    to ``resolution_hz`` bins, parabolic interpolation)."""
    x = np.asarray(signal, dtype=np.float64)
    x = x - x.mean()
    n = max(len(x), int(round(sample_rate / resolution_hz)))
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=n))
    k = int(np.argmax(spec[1:-1])) + 1
    a, b, c = np.log(spec[k - 1 : k + 2] + 1e-30)
    shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
    return (k + shift) * sample_rate / n


class TimedCapture(JackCapture):
    """A JackCapture that notes the JACK frame time of its first recorded sample (``first_frame``),
    so a sample it recorded can be matched to what another client played at a known frame time."""

    first_frame: int | None = None

    def _process(self, nframes: int) -> None:
        if self.first_frame is None and self._armed:
            self.first_frame = self.client.last_frame_time
        super()._process(nframes)

    def since(self, frame_time: int, frames: int) -> np.ndarray:
        """The ``frames`` recorded from JACK frame time ``frame_time`` on (waits until they are)."""
        start = frame_time - self.first_frame
        deadline = time.monotonic() + 10.0 + frames / self.sample_rate
        while self._pos < start + frames:
            if time.monotonic() > deadline:
                raise TimeoutError(f"recorded {self._pos} frames, waiting for {start + frames}")
            time.sleep(0.01)
        return self.buffer[start : start + frames].copy()


class JackSource:
    """A JACK client that plays a signal once through its audio outputs, then silence: a performer
    playing into another client's inputs. ``play`` returns the JACK frame time of the signal's first
    sample, so a TimedCapture can find what came back."""

    def __init__(self, server_name: str, channels: int = 1, seconds: float = 10.0, *,
                 client_name: str = "distill-source"):
        import jack

        self.client = jack.Client(client_name, servername=server_name, no_start_server=True)
        self.sample_rate: int = self.client.samplerate
        self.buffer = np.zeros(int(round(seconds * self.sample_rate)), dtype=np.float32)
        self.outports = [self.client.outports.register(f"out_{i + 1}") for i in range(channels)]
        self._length = 0  # samples of `buffer` to play; 0 = silence
        self._pos = 0
        self._start: int | None = None
        self._started = threading.Event()
        self.client.set_process_callback(self._process)
        self.client.activate()

    def _process(self, nframes: int) -> None:
        length = self._length  # first: `play` sets the position before the length
        pos = self._pos
        n = max(0, min(nframes, length - pos))
        if n and pos == 0:
            self._start = self.client.last_frame_time
            self._started.set()
        for port in self.outports:
            out = port.get_array()
            out[:n] = self.buffer[pos : pos + n]
            out[n:] = 0.0
        if n:
            self._pos = pos + n

    def connect(self, destinations: list[str]) -> None:
        """Every output to every port named (e.g. both inputs of a stereo stream: a mono source on both)."""
        for src in self.outports:
            for dst in destinations:
                self.client.connect(src, dst)

    def play(self, signal: np.ndarray, timeout: float = 10.0) -> int:
        """Play ``signal`` (mono float) from the next period; returns the frame time of its first sample."""
        self._length = 0  # silence while the buffer is rewritten
        time.sleep(2 * self.client.blocksize / self.sample_rate)  # a period in progress ends
        self._started.clear()
        self.buffer[: len(signal)] = signal
        self._pos = 0
        self._length = len(signal)
        if not self._started.wait(timeout):
            raise TimeoutError("the JACK source was not called back")
        return self._start

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()

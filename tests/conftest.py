"""Shared fixtures. Keep this file small: fixtures used by one test file live in that file; helpers
shared by several are modules beside it (models.py, cards.py, jackaudio.py, audiofiles.py, oscpeers.py).

A test that uses ``jack_server`` or ``trained_model`` is marked ``slow`` here (see
``pytest_collection_modifyitems``); modules that are slow for other reasons mark themselves.

``jack_server`` (session scope): a real JACK server (Debian jackd2) on the dummy driver,
under a private name, so tests get a real-time-paced sound card without hardware.
Anything that talks to it through PortAudio/sounddevice must run in a subprocess with
``env=jack_server.env`` (PortAudio reads JACK_DEFAULT_SERVER only at Pa_Initialize).
In-process JACK clients (tests/jackaudio.py) use ``servername=jack_server.name``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jackaudio import jack_env, start_jackd, stop_process

JACK_SAMPLE_RATE = 48000
# Frames per period. 1024 (21.3 ms, about one 20 ms model frame; also jackd's dummy
# default) because measured on the 2-core dev/CI machines with Python callbacks on both
# ends (sounddevice player + JACK-Client capture), non-realtime jackd: period 256 gave
# xruns in 7 of 10 two-second runs, 512 in 1 of 20, 1024 in 0 of 50, even with both cores
# busy. JACK reports xruns server-wide, so one late Python client flags every client.
JACK_PERIOD = int(os.environ.get("DISTILL_TEST_JACK_PERIOD", "1024"))
SLOW_FIXTURES = {"jack_server", "trained_model"}  # a real-time server, a minute or two of training


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@dataclass(frozen=True)
class JackServer:
    name: str  # server name: JACK_DEFAULT_SERVER / jack.Client(servername=...)
    env: dict = field(repr=False)  # os.environ copy for subprocesses using this server
    sample_rate: int
    period: int  # frames per JACK period
    pid: int
    log: Path  # jackd's stdout+stderr

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


@pytest.fixture(scope="session")
def jack_server(tmp_path_factory) -> JackServer:
    try:
        import jack  # noqa: F401  (JACK-Client, from the dev extra)
    except (ImportError, OSError) as e:
        pytest.fail(f"the JACK-Client package cannot be imported ({e}): run scripts/setup.sh", pytrace=False)

    # A jackd killed with SIGKILL (a test of a vanishing sound card does that) leaves its shared
    # memory behind, and JACK refuses new servers once its small server registry is full: with no
    # jackd running, nothing in /dev/shm/jack* belongs to anyone, so clear it.
    if subprocess.run(["pgrep", "-x", "jackd"], capture_output=True).returncode != 0:
        for stale in Path("/dev/shm").glob("jack*"):
            if stale.is_file():  # (jack_db-N is a folder; it does no harm)
                stale.unlink(missing_ok=True)
    name = f"distill-test-{os.getpid()}"
    log = tmp_path_factory.mktemp("jackd") / "jackd.log"
    try:
        proc = start_jackd(name, JACK_PERIOD, JACK_SAMPLE_RATE, log)
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    server = JackServer(name, jack_env(name), JACK_SAMPLE_RATE, JACK_PERIOD, proc.pid, log)
    try:
        yield server
    finally:
        stop_process(proc)


# -- a small trained model, shared by the tests that need one that makes sense ---------------------


def _partials(rng, seconds: float, sr: int) -> "np.ndarray":
    import numpy as np

    t = np.arange(int(seconds * sr)) / sr
    out = np.zeros_like(t)
    for onset in np.arange(0, seconds, 0.5):
        f = rng.uniform(1500, 3500)
        env = np.where(t >= onset, np.exp(-(t - onset) * 6), 0)
        out += env * (np.sin(2 * np.pi * f * t) + 0.5 * np.sin(2 * np.pi * 2.7 * f * t))
    return 0.3 * out / np.abs(out).max()


def _rumble(rng, seconds: float, sr: int) -> "np.ndarray":
    import numpy as np

    spec = np.fft.rfft(rng.standard_normal(int(seconds * sr)))
    spec[np.fft.rfftfreq(int(seconds * sr), 1 / sr) > 300] = 0
    out = np.fft.irfft(spec, int(seconds * sr))
    return 0.3 * out / np.abs(out).max()


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> Path:
    """A `tiny` model trained by the real CLI on two worlds: bright bells and dark rumble (a minute or two)."""
    import numpy as np
    import soundfile as sf

    root = tmp_path_factory.mktemp("trained")
    rng = np.random.default_rng(0)
    for world, make in (("bells", _partials), ("rumble", _rumble)):
        (root / "data" / world).mkdir(parents=True)
        for i in range(4):
            sf.write(root / "data" / world / f"{world}{i}.wav", make(rng, 3.0, 16000), 16000)
    model = root / "models" / "trained.distill"
    r = subprocess.run([sys.executable, "-m", "distill_train", root / "data", "-o", model, "--preset", "tiny",
                        "--steps", "600", "--prior-steps", "500", "--seed", "0", "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return model

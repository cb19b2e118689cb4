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


def pytest_sessionstart(session) -> None:
    """A jackd killed with SIGKILL (a test of a vanishing sound card does that) leaves its shared memory
    behind, and JACK refuses new servers once its small server registry is full: with no jackd running,
    nothing in /dev/shm/jack* belongs to anyone, so clear it. Here, before any test has opened a JACK
    client: this process's libjack keeps the registry it attached at its first client, and clearing it
    under a live libjack (after a test's private jackd came and went) made every later client fail."""
    if subprocess.run(["pgrep", "-x", "jackd"], capture_output=True).returncode != 0:
        for stale in Path("/dev/shm").glob("jack*"):
            if stale.is_file():  # (jack_db-N is a folder; it does no harm)
                stale.unlink(missing_ok=True)


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


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> Path:
    """A `tiny` model trained by the real CLI on two worlds that differ in every descriptor: struck
    bells and dark rumble (tests/worlds.py; about a minute)."""
    from worlds import train, write_worlds

    root = tmp_path_factory.mktemp("trained")
    model = root / "models" / "trained.distill"
    r = train(write_worlds(root / "data"), model, seed=0)
    assert r.returncode == 0, r.stderr[-2000:]
    return model

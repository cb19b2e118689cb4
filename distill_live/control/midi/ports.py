"""MIDI ports: open them, read them on one thread, and steer the engine through a mapper.

    controller ──► rtmidi port ──► MIDI thread: parse (mido) ─► Mapper ─► registry.submit_validated
                                                  │
                                                  └─ clock ticks ─► MidiClock (tempo, beats)

Ports come from python-rtmidi on the ALSA sequencer or JACK MIDI; messages are parsed with mido.
The ports are *polled* by our own thread every quarter millisecond instead of using rtmidi callbacks:
under JACK, rtmidi calls its callback from JACK's real-time process thread, and a Python
callback there would have to take the GIL in the middle of the audio cycle. Polling keeps all
Python off that thread; rtmidi still timestamps each message when it arrives, so clock timing
stays accurate.

The MIDI thread only translates and submits to the registry (thread-safe, never blocks): it never
touches torch, the generator or the audio callback.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from distill_live import UserError, atomic_write

from .mapfile import MidiMapError
from .mapper import Mapper

VIRTUAL_NAME = "distill"  # the port other programs connect to
# Seconds between looks at the ports when nothing came in. A key that arrives just after a look waits
# for the next one, and if that pushes its pre-empt past the card's next block it is heard a JACK
# period later: at 128 frames a note-on's p99 was 8.3-9.8 ms polling every 1 ms, 7.7-8.8 every 0.25
# (docs/benchmarks.md). The MIDI thread then takes 4.5% of a core on this project's virtual machine,
# 1.3% at 1 ms (serve stopped, 20 s); less on a laptop, whose timers are cheaper.
POLL = 0.00025
LEARN_FILE = "distill-midi.toml"
# python-rtmidi has no wheel for Python 3.13 yet, so distill installs without it there (see pyproject)
NO_RTMIDI = ("MIDI is off: python-rtmidi is not installed" + (
    f" (it has no ready-made package for Python {sys.version_info.major}.{sys.version_info.minor} yet); get MIDI "
    "with `pip install python-rtmidi`, which builds it (needs a C++ compiler, and on Linux the ALSA headers: "
    "libasound2-dev), or use Python 3.12" if sys.version_info >= (3, 13) else "; get it with "
    "`pip install python-rtmidi`") + ". OSC and everything else work without it.")


# -- which MIDI system -----------------------------------------------------------------------------


@contextmanager
def _quiet_stderr():
    """libjack and alsa-lib print to stderr when there is no server; keep that off the console."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _rtmidi():
    import rtmidi

    return rtmidi


def _api_id(api: str) -> int:
    rtmidi = _rtmidi()
    return {"alsa": rtmidi.API_LINUX_ALSA, "jack": rtmidi.API_UNIX_JACK}.get(api, rtmidi.API_UNSPECIFIED)


def _jack_running() -> bool:
    rtmidi = _rtmidi()
    if rtmidi.API_UNIX_JACK not in rtmidi.get_compiled_api():
        return False
    with _quiet_stderr():
        try:
            probe = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="distill-probe")
        except rtmidi.RtMidiError:
            return False
    probe.delete()
    return True


def choose_api(requested: str | None = "auto") -> tuple[str | None, str]:
    """("alsa" | "jack" | "native", "") or (None, one sentence saying why MIDI is off)."""
    requested = requested or "auto"
    if requested == "off":
        return None, "MIDI is off (--midi-api off)."
    try:
        _rtmidi()
    except ImportError:
        return None, NO_RTMIDI
    has_alsa = os.path.exists("/dev/snd/seq")
    if requested == "alsa":
        return ("alsa", "") if has_alsa else (
            None, "MIDI is off: --midi-api alsa needs the ALSA sequencer (/dev/snd/seq), which this machine "
                  "does not have; playing on without MIDI.")
    if requested == "jack":
        return ("jack", "") if _jack_running() else (
            None, "MIDI is off: --midi-api jack needs a running JACK server; playing on without MIDI.")
    if not sys.platform.startswith("linux"):
        return "native", ""  # CoreMIDI or Windows MM: rtmidi's default
    if has_alsa:
        return "alsa", ""
    if _jack_running():
        return "jack", ""
    return None, ("MIDI is off: this machine has no MIDI system (no ALSA sequencer at /dev/snd/seq and no "
                  "JACK server running); playing on without MIDI.")


def _open_in(api: str, client: str):
    rtmidi = _rtmidi()
    with _quiet_stderr():
        port = rtmidi.MidiIn(_api_id(api), name=client, queue_size_limit=4096)
    port.ignore_types(sysex=True, timing=False, active_sense=True)  # keep clock, drop sysex and sensing
    return port


def list_ports(api: str | None = None) -> list[str]:
    """Names of the MIDI inputs that can be opened (what `--midi-in` matches against)."""
    chosen, _ = choose_api(api)
    if chosen is None:
        return []
    try:
        port = _open_in(chosen, "distill-list")
    except _rtmidi().RtMidiError:
        return []
    try:
        return list(port.get_ports())
    finally:
        port.delete()


def match_port(prefix: str, names: list[str]) -> str | None:
    """The input called `prefix`, else the first whose name starts with it (ignoring case)."""
    if prefix in names:
        return prefix
    return next((n for n in names if n.lower().startswith(prefix.lower())), None)


# -- the running MIDI control ----------------------------------------------------------------------


class MidiControl:
    """Open MIDI inputs feeding one engine through one map."""

    def __init__(self, engine, mapper: Mapper, api: str, log: Callable[[str], None] = print,
                 channels: tuple[int, ...] = (), learn_path: str | Path | None = None):
        self.engine = engine
        self.registry = engine.registry
        self.mapper = mapper
        self.api = api
        self.log = log
        self.channels = frozenset(channels)  # 0-15; empty = all
        self.learn_path = learn_path
        self.ports: list[tuple[str, object]] = []  # (what it listens to, rtmidi.MidiIn)
        self._running = False
        self._thread: threading.Thread | None = None
        self._save_pending = False
        self.last_scheduled: tuple[float, list[str]] | None = None  # engine time and addresses of the
        mapper.on_learn = self._learned                                # latest quantised (beat-held) batch

    # -- ports -----------------------------------------------------------------------------------

    def open_virtual(self, name: str = VIRTUAL_NAME) -> str:
        port = _open_in(self.api, name)
        try:
            port.open_virtual_port(name)
        except _rtmidi().RtMidiError as e:
            port.delete()
            raise UserError(f"cannot create the MIDI input '{name}' on {self.api}: {e}")
        self.ports.append((f"{name} (virtual)", port))
        return name

    def open_all(self) -> list[str]:
        """Open every MIDI input there is now: what serve listens to where no virtual input can be made."""
        probe = _open_in(self.api, "distill-list")
        names = list(probe.get_ports())
        probe.delete()
        for name in names:
            self.open(name)
        return names

    def open(self, prefix: str) -> str:
        port = _open_in(self.api, "distill-in")
        names = port.get_ports()
        name = match_port(prefix, names)
        if name is None:
            port.delete()
            raise UserError(f"no MIDI input starts with '{prefix}' (inputs: {', '.join(names) or 'none'})")
        try:
            port.open_port(names.index(name), "in")
        except _rtmidi().RtMidiError as e:
            port.delete()
            raise UserError(f"cannot open the MIDI input '{name}': {e}")
        self.ports.append((name, port))
        return name

    # -- the MIDI thread -------------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="distill-midi", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import mido

        while self._running:
            busy = False
            for _, port in self.ports:
                batch = []
                while (item := port.get_message()) is not None:
                    batch.append(item)
                if not batch:
                    continue
                busy = True
                # rtmidi gives each message's delay after the one before; the last arrived about now.
                times = [time.monotonic()] * len(batch)
                for i in range(len(batch) - 1, 0, -1):
                    times[i - 1] = times[i] - batch[i][1]
                for (data, _), t in zip(batch, times):
                    try:
                        msg = mido.Message.from_bytes(data)
                    except ValueError:
                        continue  # a broken message: nothing to do
                    self.dispatch(msg, t)
            if self._save_pending:
                self._save_pending = False
                self._autosave()
            if not busy:
                time.sleep(POLL)

    def dispatch(self, msg, t: float) -> None:
        """Translate one message heard at `t` (time.monotonic()) and submit the result."""
        if self.channels and getattr(msg, "channel", None) not in (None, *self.channels):
            return
        try:
            out = self.mapper.handle(msg, t)
            # What one message does (a key: gain, cue and play) lands on one frame, as one batch.
            for at in dict.fromkeys(at for _, _, at in out):
                batch = [(address, args) for address, args, when in out if when == at]
                if at is not None:
                    at = self.engine_time(at)
                    self.last_scheduled = (at, [address for address, _ in batch])
                self.registry.submit_validated(batch, at=at)
        except Exception as e:  # never let one odd message stop MIDI
            self.log(f"MIDI: ignored {msg.type} ({e})")

    def engine_time(self, t: float) -> float:
        """Engine time (what `submit(at=...)` takes) of the moment `t` on time.monotonic()."""
        return self.engine.time_of(time.time() + (t - time.monotonic()))

    # -- learn, save, tempo ----------------------------------------------------------------------

    def learn(self, address: str) -> None:
        """Bind the next CC moved to this parameter (raises MidiMapError for an unknown one)."""
        address = self.mapper.learn(address)
        self.log(f"MIDI learn: move a control to bind it to {address}")

    def _learned(self, message: str) -> None:
        self.log(f"MIDI {message}")
        if self.learn_path is not None:
            self._save_pending = True  # saved by the MIDI thread after this message, outside the map lock

    def _autosave(self) -> None:
        try:
            self.save(self.learn_path)
            self.log(f"MIDI map saved to {self.learn_path}")
        except MidiMapError as e:
            self.log(str(e))

    def save(self, path: str | Path) -> None:
        """Write the current map (with anything learned) as TOML, atomically. Comments are not kept."""
        path = Path(path).expanduser()
        text = self.mapper.save_text()
        try:
            atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        except OSError as e:
            raise MidiMapError(f"cannot write midi map '{path}': {e.strerror}")

    def tempo(self) -> float | None:
        """Beats per minute of the incoming MIDI clock, or None without one."""
        return self.mapper.clock.tempo(time.monotonic())

    def close(self) -> None:
        self._running = False
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1)
        for _, port in self.ports:
            port.close_port()
            port.delete()
        self.ports = []

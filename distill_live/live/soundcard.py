"""Where the engine's ring buffer goes: a PortAudio output stream, or a file written in real time;
and where the optional audio input comes from: a PortAudio input stream.

Both outputs drain the ring through `Engine.callback`, the input fills its own through
`AudioInput.callback`: the only code that runs on the audio thread. Streams are watched from the
main thread: if the device disappears or PortAudio aborts the stream, `check()` says so once and
reopens it when the device is back.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("distill.soundcard")

JACK = "JACK Audio Connection Kit"


class NoSoundCard(Exception):
    """No usable output device; the message is one sentence saying what to do instead."""


def _sd():
    try:
        import sounddevice as sd
    except OSError as e:  # the PortAudio library itself is missing
        raise NoSoundCard(f"PortAudio is not installed ({e}); install libportaudio2, or record to a file "
                          "with --output FILE.wav") from None
    return sd


def output_devices() -> list[dict]:
    """Every device that can play, with its index, name, host API, channels and default rate."""
    return _devices("output")


def input_devices() -> list[dict]:
    """Every device that can record (for `serve --input`), described as `output_devices` does."""
    return _devices("input")


def _devices(direction: str) -> list[dict]:
    sd = _sd()
    apis = sd.query_hostapis()
    return [dict(index=i, name=d["name"], hostapi=apis[d["hostapi"]]["name"], channels=d[f"max_{direction}_channels"],
                 rate=int(d["default_samplerate"]), latency_ms=round(1000 * d[f"default_low_{direction}_latency"], 1))
            for i, d in enumerate(sd.query_devices()) if d[f"max_{direction}_channels"] > 0]


def choose_device(wanted: str | None, direction: str = "output") -> dict:
    """The device by index or by (case-insensitive) name prefix or substring; JACK first, then the
    default output (or input), when nothing is asked for."""
    devices = _devices(direction)
    if not devices:
        if direction == "input":
            raise NoSoundCard("no audio input found: leave out --input, or start a JACK server (e.g. "
                              "`jackd -d dummy` on a headless machine)")
        raise NoSoundCard("no sound card found: record to a file with --output FILE.wav, or start a JACK "
                          "server (e.g. `jackd -d dummy` on a headless machine)")
    if wanted is None:
        sd = _sd()
        jack = [d for d in devices if d["hostapi"] == JACK]
        if jack:
            return jack[0]
        default = sd.default.device[0 if direction == "input" else 1]
        return next((d for d in devices if d["index"] == default), devices[0])
    if wanted.isdigit():
        hit = [d for d in devices if d["index"] == int(wanted)]
    else:
        low = wanted.lower()
        hit = [d for d in devices if d["name"].lower().startswith(low)] or \
              [d for d in devices if low in d["name"].lower()]
    if not hit:
        names = ", ".join(f"{d['index']}: {d['name']}" for d in devices)
        raise NoSoundCard(f"no {direction} device matches '{wanted}'; the devices are {names}")
    return hit[0]


def device_rate(device: dict, model_rate: int, asked: int | None, direction: str = "output") -> int:
    """What was asked if the device runs it, else the model's rate (no resampling), else the device's."""
    sd = _sd()
    check = sd.check_input_settings if direction == "input" else sd.check_output_settings
    for rate in ([asked] if asked else []) + [model_rate, device["rate"]]:
        try:
            check(device=device["index"], samplerate=rate, channels=1, dtype="float32")
            return rate
        except Exception:
            continue
    raise NoSoundCard(f"{direction} device '{device['name']}' accepts none of the rates {asked or ''} {model_rate} "
                      f"{device['rate']} Hz")


class SoundCard:
    """A PortAudio output stream draining `engine.callback`, reopened if it dies."""

    what = "sound card"

    def __init__(self, engine, device: dict, channels: int, blocksize: int, latency: str | float):
        self.engine, self.device = engine, device
        self.channels, self.blocksize, self.latency = channels, blocksize, latency
        self.stream = None
        self.failures = 0
        self._said = False
        self._retry_at = 0.0

    def open(self) -> None:
        sd = _sd()
        self.stream = sd.OutputStream(device=self.device["index"], samplerate=self.engine.sample_rate,
                                      blocksize=self.blocksize, channels=self.channels, dtype="float32",
                                      latency=self.latency, callback=self.engine.callback)
        self.stream.start()
        self.engine.output_latency = float(self.stream.latency)
        self._said = False

    def check(self) -> None:
        """From the main loop: if the stream died (device gone, stream aborted), say so and reopen it."""
        if self.stream is not None and self.stream.active:
            return
        if not self._said:
            self.engine.report(f"the {self.what} '{self.device['name']}' stopped; trying to reopen it")
            self._said = True
        self._while_stopped()
        if time.monotonic() < self._retry_at:  # PortAudio prints a line per failed open: not 10 a second
            return
        self._retry_at = time.monotonic() + 1.0
        self.failures += 1
        if self.stream is not None:
            # closing a stream whose JACK server died blocks forever in Pa_CloseStream (PortAudio 19.6
            # waits for a process callback that never comes): let a spare thread wait for it, not serve
            dead, self.stream = self.stream, None
            threading.Thread(target=dead.close, kwargs={"ignore_errors": True}, name="distill-close-stream",
                             daemon=True).start()
        try:
            self.open()
            log.warning("the %s '%s' works again", self.what, self.device["name"])
        except Exception:
            self.stream = None

    def _while_stopped(self) -> None:
        # no callback drains the ring now: throw its audio away here, so the generator keeps running
        # and controls, replies and dumps go on while the card is gone
        self.engine.ring.discard()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close(ignore_errors=True)


class InputCard(SoundCard):
    """A PortAudio input stream filling `engine.input` (an AudioInput), reopened if it dies."""

    what = "audio input"

    def open(self) -> None:
        sd = _sd()
        feed = self.engine.input
        self.stream = sd.InputStream(device=self.device["index"], samplerate=feed.rate, blocksize=self.blocksize,
                                     channels=self.channels, dtype="float32", latency=self.latency,
                                     callback=feed.callback)
        self.stream.start()
        feed.latency = float(self.stream.latency)
        self._said = False

    def _while_stopped(self) -> None:
        pass  # the engine stops waiting for input that does not come, and fills its frames with silence


class PacedOutput:
    """Drains the engine in real time without a sound card: `block` samples from `engine.callback` every
    block period, on a fixed schedule, each handed to `played`. FileOutput writes them to a file; the
    tests and benchmarks stand in for a sound card with it."""

    def __init__(self, engine, channels: int, block: int):
        self.engine, self.channels, self.block = engine, channels, block
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="distill-paced-output", daemon=True)

    def open(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        buf = np.zeros((self.block, self.channels), np.float32)
        period = self.block / self.engine.sample_rate
        start, k = time.monotonic(), 0
        while not self._stop.is_set():
            due = start + k * period
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.engine.callback(buf, self.block, None, None)
            self.played(buf, due)
            k += 1

    def played(self, block: np.ndarray, due: float) -> None:
        """What became of a block [block, channels] the card took at time.monotonic() `due`: nothing here."""

    def check(self) -> None:
        pass

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)


class FileOutput(PacedOutput):
    """Records the engine in real time into a sound file, for machines with no sound card.

    The file is written under a temporary name and renamed when playing stops, so a half-written
    recording never takes the place of a finished one."""

    def __init__(self, engine, path: str | Path, channels: int, block: int):
        import soundfile as sf

        super().__init__(engine, channels, block)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.part")
        fmt = "FLAC" if self.path.suffix.lower() == ".flac" else "WAV"
        self.file = sf.SoundFile(self.tmp, "w", samplerate=engine.sample_rate, channels=channels, format=fmt,
                                 subtype="PCM_24")

    def played(self, block: np.ndarray, due: float) -> None:
        self.file.write(block)

    def close(self) -> None:
        """Finish the recording; one that never started (serve stopped with an error first) is dropped,
        so it does not take the place of an earlier recording at the same path."""
        started = self._thread.ident is not None
        super().close()
        self.file.close()
        if started:
            self.tmp.replace(self.path)
        else:
            self.tmp.unlink(missing_ok=True)

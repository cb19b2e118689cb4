"""A take: what the engine plays, and the score of every control it applied, alongside the card.

    serve --record take.wav --record-score take.score

The generator thread copies each chunk it makes into a preallocated ring (`audio`), before the
card's resampler, so the file is at the model's own rate; a writer thread drains it into the sound
file. A trigger that pre-empts (engine.py) replaces the few milliseconds the card had queued; they
stay in the take, which is everything the Player made, so that render gives the take back exactly.
The score listens to the engine's changes and writes each one with the engine time of the chunk it
was applied at, to the exact float (`repr`), so

    distill-live render MODEL -o again.wav --seconds S --seed N --sample-rate RATE --score take.score

applies every control at the very chunk it was applied live and gives the same samples (the score's
first lines say the exact command). What render cannot redo is written as a comment: a model
hot-swap and preset commands (a recall's crossfade is written as the steps it applied). The audio
input is not in a score, so serve refuses --record-score with --input.

Both files are written under temporary names and renamed when serve stops, so a take cut short never
replaces an earlier one; what was written is in the `.part` files.
"""
from __future__ import annotations

import logging
import queue
import shlex
import threading
from pathlib import Path

import numpy as np
import soundfile as sf

from distill_live import atomic_write
from distill_live.control.params import PREFIX

from .ringbuffer import RingBuffer

log = logging.getLogger("distill.take")

RING_SECONDS = 10.0  # audio the writer may fall behind by before the take loses some
NOT_REPLAYED = (f"{PREFIX}/model", f"{PREFIX}/preset/save", f"{PREFIX}/preset/recall")  # comments in a score


def score_line(at: float, address: str, args: tuple) -> str:
    """One score line: the time to the exact float, the address, the arguments as the registry gave them."""
    words = [repr(a) if isinstance(a, float) else shlex.quote(str(a)) for a in args]
    line = " ".join([repr(at), address, *words])
    return f"# {line}" if address in NOT_REPLAYED else line


class Take:
    """Records an engine: `audio` (a sound file, at the model's rate) and/or `score`. Attach it to the
    engine (`engine.take = take`) and `start()` it before the engine starts; `close()` after it stops."""

    def __init__(self, engine, model_name: str, seed: int, audio: str | Path | None = None,
                 score: str | Path | None = None):
        self.engine = engine
        self.rate = engine.model_rate
        self.model_name, self.seed = model_name, seed
        self.audio_path = Path(audio) if audio else None
        self.score_path = Path(score) if score else None
        self.audio = RingBuffer(int(RING_SECONDS * self.rate))
        self.samples = 0  # written to the file
        self.lost = 0  # samples the writer fell too far behind for (a disk that stalls for seconds)
        self._file = None
        self._lines = None
        self._changes = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="distill-take", daemon=True)
        for path in (self.audio_path, self.score_path):
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
        if self.audio_path is not None:
            fmt = "FLAC" if self.audio_path.suffix.lower() == ".flac" else "WAV"
            self._file = sf.SoundFile(self._part(self.audio_path), "w", samplerate=self.rate, channels=1, format=fmt,
                                      subtype="PCM_24")
        if self.score_path is not None:
            self._lines = open(self._part(self.score_path), "w", encoding="utf-8")
            self._changes = engine.changes.listen()

    @staticmethod
    def _part(path: Path) -> Path:
        return path.with_name(f".{path.name}.part")

    def start(self) -> None:
        self._thread.start()

    def put(self, chunk: np.ndarray) -> None:
        """From the generator thread: a chunk the engine made (a copy into the ring; never waits)."""
        if self._file is not None and self.audio.write(chunk) < len(chunk):
            self.lost += 1

    def _run(self) -> None:
        block = np.zeros(self.rate // 10, np.float32)
        while not self._stop.wait(0.05):
            self._drain(block)
        self._drain(block)

    def _drain(self, block: np.ndarray) -> None:
        if self._file is not None:
            while self.audio.available():
                n = self.audio.read_into(block[: min(len(block), self.audio.available())])
                self._file.write(block[:n])
                self.samples += n
        if self._lines is not None:
            while True:
                try:
                    at, address, args = self._changes.get_nowait()
                except queue.Empty:
                    break
                self._lines.write(score_line(at, address, args) + "\n")
            self._lines.flush()

    def close(self) -> None:
        """Finish both files and put them in place (call after the engine stopped)."""
        if self._thread.ident is None:  # never started: leave nothing behind
            for path, f in ((self.audio_path, self._file), (self.score_path, self._lines)):
                if f is not None:
                    f.close()
                    self._part(path).unlink(missing_ok=True)
            return
        self._stop.set()
        self._thread.join(timeout=10)
        if self._changes is not None:
            self.engine.changes.unlisten(self._changes)
        if self._file is not None:
            self._file.close()
            self._part(self.audio_path).replace(self.audio_path)
        if self._lines is not None:
            self._lines.close()
            self._finish_score()
        if self.lost:
            log.warning("the take lost audio %d times: the disk could not keep up", self.lost)

    def _finish_score(self) -> None:
        """The score with its first lines: what it is, the command that renders it again, and `play 0`
        (render starts playing at 0; the take started as serve did)."""
        part = self._part(self.score_path)
        seconds = self.engine.time
        head = [f"# a take of {self.model_name}: every control the engine applied, at the chunk it applied it",
                f"# render it again, sample for sample: distill-live render {shlex.quote(self.model_name)} "
                f"-o take.wav --seconds {seconds!r} --seed {self.seed} --sample-rate {self.rate} "
                f"--score {shlex.quote(self.score_path.name)}",
                f"0.0 {PREFIX}/play 0"]
        body = part.read_text(encoding="utf-8")
        atomic_write(self.score_path, lambda tmp: Path(tmp).write_text("\n".join(head) + "\n" + body,
                                                                       encoding="utf-8"))
        part.unlink()

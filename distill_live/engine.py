"""The live engine: a generator thread keeps a small ring buffer filled; the sound card drains it.

    control threads ──submit──► ParamRegistry ──apply_due──► Player (generator thread)
                                                                   │ one frame per step
                                                                   ▼
                                         sound card callback ◄── RingBuffer

The callback only copies from the ring (and counts underruns). Everything heavy happens in the
generator thread, which keeps the ring at `target_frames` frames and never more: whatever is
queued is latency.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque

import numpy as np

from .modelfile import DistillModel
from .params import ParamRegistry
from .player import Player
from .ringbuffer import RingBuffer


class Telemetry:
    """Per-frame compute times and counters, written by the generator, read by anyone."""

    def __init__(self, frame_period: float, window: int = 500):
        self.frame_period = frame_period
        self.compute = deque(maxlen=window)  # seconds per frame, recent window
        self.underruns = 0
        self.frames = 0

    def summary(self) -> dict:
        times = np.array(self.compute) if self.compute else np.zeros(1)
        p50, p99 = np.percentile(times, [50, 99])
        return {
            "frames": self.frames,
            "underruns": self.underruns,
            "frame_ms_p50": round(p50 * 1000, 3),
            "frame_ms_p99": round(p99 * 1000, 3),
            "rtf": round(self.frame_period / max(p50, 1e-9), 2),
        }


class Engine:
    def __init__(self, model: DistillModel, registry: ParamRegistry | None = None, seed: int = 0,
                 target_frames: int = 2):
        self.player = Player(model, registry, seed)
        self.registry = self.player.registry
        c = model.config.codec
        self.sample_rate, self.hop = c.sample_rate, c.hop
        self.target = target_frames * self.hop
        self.ring = RingBuffer(self.hop * 64)
        self.telemetry = Telemetry(self.hop / self.sample_rate)
        self.level = 0.0  # recent peak of the output, for meters
        self.changes: queue.SimpleQueue = queue.SimpleQueue()  # (address, args) applied, for /distill/state
        self._running = False
        self._thread: threading.Thread | None = None

    # -- generator thread ------------------------------------------------------------------------

    def queued_seconds(self) -> float:
        return self.ring.available() / self.sample_rate

    def time_of(self, wall: float) -> float:
        """Engine time (what `ParamRegistry.submit(at=...)` takes) of the frame heard at wall-clock `wall`
        (time.time() seconds), so a timed bundle lands on the frame that plays at its timetag."""
        return self.player.time - self.queued_seconds() + (wall - time.time())

    def generate_one(self) -> None:
        t0 = time.perf_counter()
        frame = self.player.next_frame()
        for change in self.player.applied:
            self.changes.put(change)
        self.telemetry.compute.append(time.perf_counter() - t0)
        self.telemetry.frames += 1
        self.level = float(np.abs(frame).max())
        self.ring.write(frame)

    def _run(self) -> None:
        idle = self.hop / self.sample_rate / 8
        while self._running:
            if self.ring.available() < self.target:
                self.generate_one()
            else:
                time.sleep(idle)

    def start(self) -> None:
        while self.ring.available() < self.target:  # prefill so the first callback has audio
            self.generate_one()
        self._running = True
        self._thread = threading.Thread(target=self._run, name="distill-generator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=2)

    # -- audio callback side ---------------------------------------------------------------------

    def callback(self, outdata: np.ndarray, frames: int, time_info, status) -> None:
        """sounddevice output callback: copy from the ring, nothing else."""
        if self.ring.read_into(outdata) < frames:
            self.telemetry.underruns += 1

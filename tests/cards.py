"""A stand-in for a sound card, for tests that play an engine in real time without one.

`PacedCard` is the product's `PacedOutput` (what `serve --output` records with): it takes `block`
samples from the engine's own audio callback every block period, on a fixed schedule, and here keeps
what it played two ways: `heard`, every sample from the start (up to `seconds`), indexed by card
sample; and `blocks`, the last `seconds` as (wall time the block was due, samples).
"""
from __future__ import annotations

import math
import time
from collections import deque

import numpy as np
import torch

from distill_live.live.engine import Engine
from distill_live.live.soundcard import PacedOutput


class PacedCard(PacedOutput):
    def __init__(self, engine: Engine, block: int | None = None, seconds: float = 20.0):
        super().__init__(engine, channels=1, block=block or engine.hop)
        self.rate = engine.sample_rate
        self.period = self.block / self.rate
        self.heard = np.zeros(int(seconds * self.rate), np.float32)
        self.consumed = 0  # samples taken so far
        self.blocks: deque[tuple[float, np.ndarray]] = deque(maxlen=math.ceil(seconds / self.period))
        self.underruns: list[tuple[int, int]] = []  # (card sample, samples missing) where the ring ran dry
        self.t0 = 0.0  # time.monotonic() the first block was due
        self._read = 0  # the engine ring's read counter after the last block
        self._wall = time.time() - time.monotonic()

    def start(self) -> "PacedCard":
        """Start the engine, then the card."""
        self.engine.start()
        self._read = self.engine.ring.read
        self.open()
        return self

    def stop(self) -> None:
        self.close()
        self.engine.stop()

    def played(self, block: np.ndarray, due: float) -> None:
        if self.consumed == 0:
            self.t0 = due
        got = self.engine.ring.read - self._read
        self._read = self.engine.ring.read
        if got < self.block:
            self.underruns.append((self.consumed + got, self.block - got))
        samples = block[:, 0].copy()
        keep = max(0, min(self.block, len(self.heard) - self.consumed))
        self.heard[self.consumed:self.consumed + keep] = samples[:keep]
        self.consumed += self.block
        self.blocks.append((due + self._wall, samples))

    def played_since(self, wall: float) -> np.ndarray:
        """What was played from wall-clock time `wall` (time.time()) on."""
        blocks = [b for t, b in list(self.blocks) if t >= wall]
        return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)

    def wait_frames(self, n: int, timeout: float = 10.0) -> None:
        """Wait until the engine has made `n` more frames."""
        target = self.engine.player.frames + n
        deadline = time.monotonic() + timeout
        while self.engine.player.frames < target:
            assert time.monotonic() < deadline, "the engine stopped making frames"
            time.sleep(self.period / 2)

    def sample_at(self, monotonic: float) -> int:
        """Which card sample was playing at that moment (time.monotonic())."""
        return round((monotonic - self.t0) * self.rate)

    def engine_time(self, card_sample: int) -> float:
        """Engine time of a card sample: the engine's start-up silence and the silence of underruns
        before it do not count."""
        missing = sum(n for at, n in self.underruns if at < card_sample)
        return (card_sample - self.engine.lead_in - missing) / self.rate


def paced_engine(model, seed: int = 0, buffer_ms: float = 60.0, presets=None) -> PacedCard:
    """An Engine playing into a PacedCard, both started (`.stop()` stops both)."""
    torch.set_num_threads(1)  # 2 shared cores: intra-op threads make a frame 10-50x slower under load
    return PacedCard(Engine(model, seed=seed, buffer_ms=buffer_ms, presets=presets)).start()

"""Helpers for the OSC tests: a random-weight model, an engine played by a real-time-paced stand-in
for the sound card, and a UDP listener that collects replies.

The "sound card" is a thread that takes one hop from the ring every frame period, on a fixed
schedule, through the engine's own audio callback, and keeps what it played with the wall time it
played it, so tests can check both values and audio.
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from distill_live.live.engine import Engine
from distill_live.model.codec import Codec
from distill_live.model.config import preset
from distill_live.model.modelfile import DistillModel
from distill_live.model.prior import Prior
from pythonosc.osc_message import OscMessage

WORLDS = ["bells", "noise"]


def tiny_model(seed: int = 0) -> DistillModel:
    torch.manual_seed(seed)
    cfg = preset("tiny")
    cfg.prior.worlds = len(WORLDS)
    c = cfg.codec
    return DistillModel(cfg, Codec(c).eval(), Prior(cfg.prior, c.levels, c.codebook_size).eval(),
                        [torch.randint(c.codebook_size, (40, c.levels)) for _ in range(3)],
                        {"manifest": {"worlds": list(WORLDS)}})


class PacedEngine:
    """An Engine whose ring is drained at real-time pace by a thread standing in for the sound card."""

    def __init__(self, model: DistillModel, seed: int = 0, buffer_ms: float = 60.0, keep_seconds: float = 20.0):
        torch.set_num_threads(1)  # 2 shared cores: intra-op threads make a frame 10-50x slower under load
        self.engine = Engine(model, seed=seed, buffer_ms=buffer_ms)
        self.hop, self.rate = self.engine.hop, self.engine.sample_rate
        self.period = self.hop / self.rate
        self.blocks: list[tuple[float, np.ndarray]] = []  # (wall time played, samples)
        self.keep = int(keep_seconds / self.period)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "PacedEngine":
        self.engine.start()
        self._thread = threading.Thread(target=self._card, name="test-soundcard", daemon=True)
        self._thread.start()
        return self

    def _card(self) -> None:
        t0 = time.time()
        k = 0
        while not self._stop.is_set():
            due = t0 + k * self.period
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            out = np.zeros((self.hop, 1), np.float32)
            self.engine.callback(out, self.hop, None, None)
            self.blocks.append((due, out[:, 0].copy()))
            if len(self.blocks) > self.keep:
                del self.blocks[: len(self.blocks) - self.keep]
            k += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.engine.stop()

    def played_since(self, wall: float) -> np.ndarray:
        blocks = [b for t, b in list(self.blocks) if t >= wall]
        return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)

    def wait_frames(self, n: int, timeout: float = 10.0) -> None:
        """Wait until the engine has made `n` more frames."""
        target = self.engine.player.frames + n
        deadline = time.monotonic() + timeout
        while self.engine.player.frames < target:
            assert time.monotonic() < deadline, "the engine stopped making frames"
            time.sleep(self.period / 2)


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    """Poll until `predicate()` is truthy (returns it); fails the test with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@dataclass
class Listener:
    """A UDP socket on loopback collecting every OSC message sent to it (parsed with python-osc)."""

    sock: socket.socket = field(default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    messages: list = field(default_factory=list)  # (address, params)

    def __post_init__(self):
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(65536)
            except (socket.timeout, OSError):
                continue
            msg = OscMessage(data)
            self.messages.append((msg.address, msg.params))

    def of(self, address: str) -> list:
        return [p for a, p in list(self.messages) if a == address]

    def close(self):
        self._stop.set()
        self._thread.join(timeout=1)
        self.sock.close()

"""A preallocated single-producer single-consumer ring of float32 samples.

The generator thread is the only writer and the audio callback the only reader. Each side moves
only its own counter, and Python's GIL makes an int assignment atomic, so neither side ever takes
a lock or allocates.
"""
from __future__ import annotations

import numpy as np


class RingBuffer:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.data = np.zeros(capacity, dtype=np.float32)
        self.written = 0  # total samples ever written (producer's counter)
        self.read = 0  # total samples ever read (consumer's counter)

    def available(self) -> int:
        return self.written - self.read

    def space(self) -> int:
        return self.capacity - self.available()

    def write(self, samples: np.ndarray) -> int:
        """Producer: append as many samples as fit; returns how many were written."""
        n = min(len(samples), self.space())
        start = self.written % self.capacity
        first = min(n, self.capacity - start)
        self.data[start:start + first] = samples[:first]
        self.data[: n - first] = samples[first:n]
        self.written += n
        return n

    def read_into(self, out: np.ndarray) -> int:
        """Consumer: fill out [frames] or [frames, channels] (mono copied to every channel).

        Returns how many frames came from the ring; the rest are zeros (an underrun)."""
        frames = out.shape[0]
        n = min(frames, self.available())
        start = self.read % self.capacity
        first = min(n, self.capacity - start)
        if out.ndim == 2:
            out[:first] = self.data[start:start + first, None]
            out[first:n] = self.data[: n - first, None]
        else:
            out[:first] = self.data[start:start + first]
            out[first:n] = self.data[: n - first]
        out[n:] = 0.0
        self.read += n
        return n

    def discard(self, n: int | None = None) -> int:
        """Consumer: drop the oldest `n` samples (all waiting when None) without reading them; returns how many."""
        n = self.available() if n is None else max(0, min(n, self.available()))
        self.read += n
        return n

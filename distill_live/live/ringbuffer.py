"""A preallocated single-producer single-consumer ring of float32 samples.

The generator thread is the only writer and the audio callback the only reader. Each side moves
only its own counter, and Python's GIL makes an int assignment atomic, so neither side ever takes
a lock or allocates.

The writer may also take back what it queued and the reader has not begun (`replace_unread`, for a
trigger that must not wait behind it): see there why that is safe without a lock.
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
        n = max(0, min(frames, self.available()))
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

    def replace_unread(self, samples: np.ndarray, guard: int, fade: int) -> int:
        """Producer: keep the next `guard` samples (one card block), replace everything queued after them
        with `samples`, crossfading from the queued audio over the first `fade` samples; returns how many
        queued samples were dropped.

        Why no lock is needed: the reader copies at most one block (`guard`) per call, starting at `read`,
        and moves `read` only once it has copied. So at any moment it may be copying [read, read + guard)
        and nothing past that, and the cut at read + guard is never in the middle of a copy. The writer
        first pulls `written` back to the cut (one int store), so a copy that starts from then on stops
        there; only then does it rewrite the samples past the cut, which nobody can be reading, and it
        publishes them by moving `written` on, as `write` always does. The one way this can go wrong is
        the reader finishing its block and starting the next one inside the few microseconds between
        those two stores: that block comes up short, counted as an underrun, never torn audio.
        """
        cut = self.read + guard
        dropped = self.written - cut
        if dropped <= 0:
            self.write(samples)
            return 0
        n = min(fade, dropped, len(samples))
        start = cut % self.capacity
        old = self.data[(start + np.arange(n)) % self.capacity]  # the queued audio at the cut (a copy)
        ramp = np.arange(1, n + 1, dtype=np.float32) / (n + 1)
        samples = np.concatenate([old * (1.0 - ramp) + samples[:n] * ramp, samples[n:]])
        self.written = cut
        self.write(samples)
        return dropped

    def discard(self, n: int | None = None) -> int:
        """Consumer: drop the oldest `n` samples (all waiting when None) without reading them; returns how many."""
        n = self.available() if n is None else max(0, min(n, self.available()))
        self.read += n
        return n

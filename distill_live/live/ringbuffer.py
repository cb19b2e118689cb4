"""A preallocated single-producer single-consumer ring of float32 samples.

The generator thread is the only writer and the audio callback the only reader. Each side moves
only its own counter, and Python's GIL makes an int assignment atomic, so neither side ever takes
a lock or allocates.

The writer may also have the reader skip what it queued to something it queued later (`skip`: a
trigger or a fader that must not wait behind what is queued): see there why that is safe without a
lock.
"""
from __future__ import annotations

import numpy as np


def put(array: np.ndarray, at: int, values: np.ndarray) -> None:
    """`values` into the ring-shaped `array` from position `at` on (a running count, wrapped here)."""
    start, n = at % len(array), len(values)
    first = min(n, len(array) - start)
    array[start:start + first] = values[:first]
    array[:n - first] = values[first:]


def take(array: np.ndarray, start: int, end: int) -> np.ndarray:
    """A copy of the ring-shaped `array` from running position `start` to `end`."""
    return array[np.arange(start, end) % len(array)]


class RingBuffer:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.data = np.zeros(capacity, dtype=np.float32)
        self.written = 0  # total samples ever written (producer's counter)
        self.read = 0  # total samples ever read (consumer's counter)
        self.skip_at = -1  # see `skip`: a copy that starts here...
        self.skip_to = -1  # ...starts here instead

    def available(self) -> int:
        read = self.read
        return self.written - (self.skip_to if read == self.skip_at else read)

    def space(self) -> int:
        return self.capacity - self.available()

    def write(self, samples: np.ndarray) -> int:
        """Producer: append as many samples as fit; returns how many were written."""
        n = min(len(samples), self.space())
        put(self.data, self.written, samples[:n])
        self.written += n
        return n

    def read_into(self, out: np.ndarray) -> int:
        """Consumer: fill out [frames] or [frames, channels] (mono copied to every channel).

        Returns how many frames came from the ring; the rest are zeros (an underrun)."""
        if self.read == self.skip_at:  # the writer queued what plays next further on (`skip`)
            self.read = self.skip_to
        frames = out.shape[0]
        n = max(0, min(frames, self.written - self.read))
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

    def skip(self, at: int, to: int) -> None:
        """Producer: the reader's next copy, if it starts at `at` (where `read` is when this is called), starts
        at `to` instead (at most `written`): what lies between is dropped unheard, so what the writer queued
        at `to` is heard at the card's next block (a trigger or a fader, cardqueue.py).

        Why no lock is needed: the reader moves `read` to `to` only when it finds `read` at `at`, before it
        copies; `skip_to` is stored before `skip_at`, so it never jumps to a stale place. If the reader
        was copying as the writer looked at `read` (it can lose the GIL to the writer between any two
        lines), it moves `read` past `at` and never skips: it plays on through what was queued, which is
        still there, and the writer sees that (`read` past `at` and short of `to`) and puts right what it
        queued at `to` (cardqueue.py `CardQueue.tend`).
        """
        self.skip_to = to
        self.skip_at = at

    def discard(self, n: int | None = None) -> int:
        """Consumer: drop the oldest `n` samples (all waiting when None) without reading them; returns how many."""
        n = self.available() if n is None else max(0, min(n, self.available()))
        self.read += n
        return n

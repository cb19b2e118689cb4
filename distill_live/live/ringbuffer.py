"""A preallocated single-producer single-consumer ring of float32 samples.

The generator thread is the only writer and the audio callback the only reader. Each side moves
only its own counter, and Python's GIL makes an int assignment atomic, so neither side ever takes
a lock or allocates.

The writer may also take back what it queued and the reader has not begun (`cut_unread`, for a trigger
or a gain that must not wait behind it): see there why that is safe without a lock.
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

    def cut_unread(self, guard: int) -> int:
        """Producer: take back everything queued beyond the next `guard` samples (one card block), for the
        writer to queue something else in its place; returns where the ring now ends (`written`), where
        the next `write` goes. The samples taken back stay in `data` until then.

        Why no lock is needed: the reader copies at most one block (`guard`) per call, from `read` up to
        `written` as it found them, and moves `read` only once it has copied. The writer first pulls
        `written` back to the cut at read + guard (one int store), so a copy that starts from then on
        stops there. The reader may have moved on between the writer's look at `read` and that store
        (the generator can lose the GIL to it between any two lines), and a copy it began then may reach
        past that cut, up to its new `read` + guard: so the writer looks at `read` again and cuts no
        sooner than that. What lies before the cut is the queued audio, untouched; only past it does the
        writer rewrite, where no copy can be, and it publishes the new samples by moving `written` on,
        as `write` always does. A copy that starts before they are written may come up short (an
        underrun, counted), never torn.
        """
        end = self.written
        cut = self.read + guard
        if end <= cut:
            return end
        self.written = cut  # a copy that starts from now on stops here...
        cut = min(end, max(cut, self.read + guard))  # ...and one that began before stops here at the latest
        self.written = cut
        return cut

    def discard(self, n: int | None = None) -> int:
        """Consumer: drop the oldest `n` samples (all waiting when None) without reading them; returns how many."""
        n = self.available() if n is None else max(0, min(n, self.available()))
        self.read += n
        return n

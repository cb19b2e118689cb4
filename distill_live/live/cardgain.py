"""The gain as the card hears it: applied where chunks enter the ring, so a fader reaches into what is queued.

The Player applies the gain to each chunk it makes (player.py), which is what a take records and what
`render` gives again from the score. But a chunk is made a card block plus the margin before the card
plays it (engine.py), so a gain applied there is heard that much later. The engine therefore queues
the Player's chunks *before* the gain (`Player.ungained`), and this class gains them on the way into
the ring, eased towards `target` sample by sample with the gain's own smoothing (`Param.smooth`, an
exponential of 50 ms). Untimed gain messages (a fader, a knob; `Param.at_card`) set the target at
once and `reach`: everything queued past the block the card may be reading is gained again from the
gain at that point, towards the new target, the same way the ring takes back what a trigger replaces
(`RingBuffer.cut_unread`), so the card hears the change at its next block and the gain stays
continuous. Timed messages (a bundle with a time tag, a score) move the target when the Player applies
them: they are heard at their time.

So the card hears a gain change up to a block and a margin (a few ms) before the take has it; the take
and its render agree sample for sample. The output's safety (`soft_clip`) is applied here after the gain,
at the card's rate, as the Player applies it to the take.
"""
from __future__ import annotations

import numpy as np

from .player import soft_clip
from .ringbuffer import RingBuffer

ARRIVED = 1e-6  # a gain this close to its target is set to it, so gain 0 is digital silence (as the Player's)


class CardGain:
    def __init__(self, ring: RingBuffer, sample_rate: int, smooth: float, gain: float = 1.0):
        self.ring = ring
        self.sample_rate = sample_rate
        self.smooth = smooth  # seconds: the time constant of the easing towards the target
        self.target = gain
        # beside every sample in the ring: what it was before the gain, and the gain it got
        self.ungained = np.zeros(ring.capacity, np.float32)
        self.gains = np.full(ring.capacity, gain, np.float32)

    def settle(self, gain: float) -> None:
        """Start at `gain` (what serve was started with), with nothing to ease from."""
        self.target = gain
        self.gains[:] = gain

    def write(self, ungained: np.ndarray) -> np.ndarray:
        """Queue samples after everything queued; returns them as the card will play them."""
        return self._commit(self.ring.written, ungained)

    def replace_unread(self, ungained: np.ndarray, guard: int, fade: int) -> None:
        """A trigger: keep the next `guard` samples (the block the card may be reading), put `ungained` in place
        of everything queued after them, crossfading from it over the first `fade` samples."""
        end = self.ring.written
        cut = self.ring.cut_unread(guard)
        n = min(fade, end - cut, len(ungained))
        old = self.ungained[(cut + np.arange(n)) % self.ring.capacity]
        ramp = np.arange(1, n + 1, dtype=np.float32) / (n + 1)
        self._commit(cut, np.concatenate([old * (1.0 - ramp) + ungained[:n] * ramp, ungained[n:]]))

    def ease_to(self, target: float) -> None:
        """A gain in its turn (a timed one, at its time): what is queued from now on eases towards it."""
        self.target = target

    def reach(self, target: float, guard: int) -> None:
        """An untimed gain: ease towards `target` from the first sample past the next `guard`, gaining again
        what is queued there."""
        self.target = target
        end = self.ring.written
        cut = self.ring.cut_unread(guard)
        if cut < end:
            self._commit(cut, self.ungained[(cut + np.arange(end - cut)) % self.ring.capacity])

    def _commit(self, at: int, ungained: np.ndarray) -> np.ndarray:
        """Gain `ungained` from ring position `at` (where the ring writes next), continuing the gain of the
        sample before it, and queue it."""
        capacity = self.ring.capacity
        where = (at + np.arange(len(ungained))) % capacity
        gains = self._ease(float(self.gains[(at - 1) % capacity]), len(ungained))
        self.ungained[where] = ungained
        self.gains[where] = gains
        out = soft_clip((ungained * gains).astype(np.float32))
        self.ring.write(out)
        return out

    def _ease(self, start: float, n: int) -> np.ndarray:
        """The next `n` gains from `start` towards the target."""
        if abs(start - self.target) < ARRIVED or self.smooth <= 0:
            return np.full(n, self.target, np.float32)
        steps = np.arange(1, n + 1) / (self.smooth * self.sample_rate)
        gains = self.target + (start - self.target) * np.exp(-steps)
        gains[np.abs(gains - self.target) < ARRIVED] = self.target
        return gains.astype(np.float32)

"""What is queued for the card: the ring's writer side, which applies the gain and lets a trigger or a fader
reach past what is queued.

Every chunk the engine makes reaches the card a block and a margin later (engine.py), so whatever is
queued delays what a performer does. Two kinds of action must not wait behind it:

* **A trigger** (a cue jump, a reset, play; engine.py `_preempt`) is put in place of everything the card
  has not begun to play. Its chunks are queued after what is there, crossfaded from the sample the card
  plays next over the first `fade` samples (4 ms), and the ring is told to skip to them at the card's
  next block (`RingBuffer.skip`): what lay between is dropped unheard.
* **The gain.** The Player applies the gain to each chunk it makes (player.py), which is what a take
  records and what `render` gives again from the score. Here the Player's chunks are queued *before*
  the gain (`Player.ungained`) and gained on their way into the ring, eased towards `target` sample by
  sample with the gain's own smoothing (`Param.smooth`, an exponential of 50 ms). An untimed gain (a
  fader, a knob, a key's velocity; `Param.at_card`) sets the target at once and `reach`es: what is
  queued is queued again, gained from the gain the card is at, and the card skips to it, so it hears
  the change from its next block, without a step. A timed gain (a bundle's time tag, a score) moves
  the target when the Player applies it (`ease_to`): it is heard at its time.

Beside every sample in the ring this keeps what it was before the gain and the gain it got, which is
what makes both possible. The card may be copying a block just as a skip is set; it then plays on past
the skip, and at the generator's next look (`tend`) the skip is set again from where the card is: a
block later, never torn. The card hears a fader up to a block and a margin before the take has it,
and skips the few ms a trigger replaced; the take and its render agree sample for sample. The output's
safety (`soft_clip`) is applied here, after the gain, at the card's rate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .player import fade_in, soft_clip
from .ringbuffer import RingBuffer, put, take

ARRIVED = 1e-6  # a gain this close to its target is set to it, so gain 0 is digital silence (as the Player's)


@dataclass
class Skip:
    """Samples queued at `to` for the card to skip to when its next block starts at `at`: a trigger's chunks,
    or what was queued from `at` on, gained again."""

    at: int
    to: int
    fresh: np.ndarray  # what was queued at `to`, before the gain and the crossfade (to set a missed skip again)
    fade: int
    origin: int | None  # the ring position `fresh` was taken from, for a copy of what was queued (None: new)


class CardQueue:
    def __init__(self, ring: RingBuffer, sample_rate: int, smooth: float, gain: float = 1.0):
        self.ring = ring
        self.sample_rate = sample_rate
        self.smooth = smooth  # seconds: the time constant of the easing towards the target
        self.target = gain
        self.ungained = np.zeros(ring.capacity, np.float32)  # beside every sample in the ring: before the gain
        self.gains = np.full(ring.capacity, gain, np.float32)  # and the gain it got
        self.skip: Skip | None = None  # a skip the card has not come to yet
        self._reach_waits = False  # a fader moved while a skip was waiting: it reaches once the card skipped

    def settle(self, gain: float) -> None:
        """Start at `gain` (what serve was started with), with nothing to ease from."""
        self.target = gain
        self.gains[:] = gain

    def write(self, ungained: np.ndarray) -> None:
        """Queue samples after everything queued."""
        self._commit(self.ring.written, ungained)

    # -- triggers --------------------------------------------------------------------------------

    def trigger(self, ungained: np.ndarray, fade: int) -> None:
        """Put `ungained` in place of everything queued that the card has not begun to play, crossfading from
        it over the first `fade` samples: the card skips to it at its next block (see the module's text)."""
        self.tend()  # (a missed skip is set again first; a waiting one is replaced by this)
        self._queue_and_skip(ungained, fade)

    def tend(self) -> None:
        """Look at the skip waiting for the card, a trigger's or a fader's (each pass of the generator): done once
        the card took it; set again if the card missed it (it was copying as the skip was set); then a fader
        that waited for it reaches."""
        s = self.skip
        if s is None:
            return
        read = self.ring.read
        if read == s.at:  # the card has not come to it yet
            return
        self.skip = None
        if read < s.to:  # missed: the card played on through what was queued; skip from where it is now
            after = s.to + len(s.fresh)  # (with what was queued after the skip's samples)
            since = take(self.ungained, after, self.ring.written)
            self._queue_and_skip(np.concatenate([s.fresh, since]), s.fade, s.origin)
            return
        if self._reach_waits:
            self._reach_waits = False
            self.reach(self.target)

    # -- the gain --------------------------------------------------------------------------------

    def ease_to(self, target: float) -> None:
        """A gain in its turn (a timed one, at its time): what is queued from now on eases towards it."""
        self.target = target

    def reach(self, target: float) -> None:
        """An untimed gain: ease towards `target` from the card's next block on: what is queued is queued again,
        gained from the gain the card is at, and the card skips to it."""
        self.target = target
        if self.skip is not None:  # what plays next is decided once the card has skipped
            self._reach_waits = True
            return
        at, end = self.ring.read, self.ring.written
        self._queue_and_skip(take(self.ungained, at, end), 0, origin=at)

    # -- inside ----------------------------------------------------------------------------------

    def _queue_and_skip(self, fresh: np.ndarray, fade: int, origin: int | None = None) -> None:
        """Queue `fresh` after everything, crossfaded from the sample the card plays next, and have the card
        skip to it. The card may copy a block meanwhile: then it is queued again from where the card is
        now (a few times at most), so that the skip is set right after the look at where the card reads.
        `origin`: `fresh` is a copy of what was queued from there on, so what the card has played of it since
        is left out."""
        for _ in range(3):
            at, to = self.ring.read, self.ring.written
            if origin is not None:
                fresh, origin = fresh[at - origin:], at
            self._commit(to, self._crossfade(at, to, fresh, fade), after=at)
            read = self.ring.read
            if read >= to:  # the card is already playing them, as queued (crossfaded from `at`): nothing to skip
                self.skip = None
                return
            if read == at:
                break
        self.skip = Skip(at, to, fresh, fade, origin)
        self.ring.skip(at, to)

    def _crossfade(self, at: int, end: int, fresh: np.ndarray, fade: int) -> np.ndarray:
        """`fresh`, faded in over its first `fade` samples from what was queued from ring position `at` to `end`."""
        return fade_in(take(self.ungained, at, at + min(fade, end - at, len(fresh))), fresh)

    def _commit(self, at: int, ungained: np.ndarray, after: int | None = None) -> None:
        """Gain `ungained` and queue it at ring position `at` (where the ring writes next), continuing the gain
        of the sample before position `after` (default: `at`, the sample before it)."""
        gains = self._ease(float(self.gains[((at if after is None else after) - 1) % self.ring.capacity]),
                           len(ungained))
        put(self.ungained, at, ungained)
        put(self.gains, at, gains)
        self.ring.write(soft_clip((ungained * gains).astype(np.float32, copy=False)))

    def _ease(self, start: float, n: int) -> np.ndarray:
        """The next `n` gains from `start` towards the target."""
        if abs(start - self.target) < ARRIVED or self.smooth <= 0:
            return np.full(n, self.target, np.float32)
        steps = np.arange(1, n + 1) / (self.smooth * self.sample_rate)
        gains = self.target + (start - self.target) * np.exp(-steps)
        gains[np.abs(gains - self.target) < ARRIVED] = self.target
        return gains.astype(np.float32)

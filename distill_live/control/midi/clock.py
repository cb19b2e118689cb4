"""Follow a MIDI clock: tempo, transport and where the next beat or bar falls.

A drum machine, DAW or sequencer sends 24 clock ticks per quarter note (24 ppqn), plus Start,
Stop, Continue and Song Position. From them this module knows

- the tempo: a straight line fitted through the arrival times of the ticks of the last two
  beats (least squares), so the jitter of single ticks (USB, JACK periods) mostly cancels;
- the position: which tick we are on since Start (Song Position moves it);
- the time of the next beat or bar, so a cue jump or a freeze can be quantised: the control
  code submits the message with `at=` that time instead of "now".

Times are plain seconds on whatever clock the caller uses (`time.monotonic()` live, the MIDI
file's own seconds offline); the caller converts the result to engine time. Nothing here
sleeps, allocates much, or touches audio.

Without any Start/Stop/Continue (some devices only send ticks) the clock runs free: the first
tick heard is taken as a downbeat.
"""
from __future__ import annotations

from collections import deque

PPQN = 24  # MIDI clock ticks per quarter note
TEMPO_WINDOW = 2 * PPQN  # ticks averaged for the tempo estimate (two beats)
GAP = 1.0  # seconds without a tick after which the tick history starts over
STALE = 2.0  # seconds without a tick after which the tempo is unknown


class MidiClock:
    def __init__(self, beats_per_bar: int = 4):
        self.beats_per_bar = beats_per_bar
        self.running = False
        self.tick = -1  # index of the last tick heard since Start (Start means: the next tick is 0)
        self.last_time: float | None = None  # when that tick arrived
        self._ticks: deque[tuple[int, float]] = deque(maxlen=TEMPO_WINDOW + 1)  # (tick count, arrival time)
        self._count = 0  # ticks heard ever (unlike `tick`, Start and Song Position do not move it)
        self._transport_seen = False

    def handle(self, msg, t: float) -> bool:
        """Take one mido message heard at time `t`. Returns True if it was a clock/transport message."""
        kind = msg.type
        if kind == "clock":
            if self._ticks and t - self._ticks[-1][1] > GAP:
                self._ticks.clear()
            self._count += 1
            self._ticks.append((self._count, t))
            self.last_time = t
            if self.running or not self._transport_seen:
                self.tick += 1
            return True
        if kind == "start":
            self._transport_seen = True
            self.running, self.tick = True, -1
        elif kind == "continue":
            self._transport_seen = True
            self.running = True
        elif kind == "stop":
            self._transport_seen = True
            self.running = False
        elif kind == "songpos":
            # Song Position counts sixteenth notes (6 ticks); the next tick lands on it.
            self._transport_seen = True
            self.tick = msg.pos * (PPQN // 4) - 1
        else:
            return False
        return True

    def _fit(self) -> tuple[float, float] | None:
        """(seconds per tick, fitted arrival time of the last tick), or None with too few ticks."""
        n = len(self._ticks)
        if n < 2:
            return None
        mean_i = sum(i for i, _ in self._ticks) / n
        mean_t = sum(t for _, t in self._ticks) / n
        spread = sum((i - mean_i) ** 2 for i, _ in self._ticks)
        period = sum((i - mean_i) * (t - mean_t) for i, t in self._ticks) / spread
        if period <= 0:
            return None
        return period, mean_t + period * (self._count - mean_i)

    def tempo(self, now: float | None = None) -> float | None:
        """Beats per minute from the recent ticks, or None without a recent clock."""
        fit = self._fit()
        if fit is None or (now is not None and now - self._ticks[-1][1] > STALE):
            return None
        return 60.0 / (PPQN * fit[0])

    def time_of_tick(self, tick: int) -> float | None:
        """When tick number `tick` (counted from Start) fell or will fall, on the fitted line."""
        fit = self._fit()
        if fit is None:
            return None
        period, last = fit
        return last + (tick - self.tick) * period

    def next_boundary(self, t: float, unit: str = "beat") -> float | None:
        """Time (same clock as `t`) of the first beat or bar strictly after time `t`.

        None when quantising is impossible: the clock is stopped, or no tempo is known yet.
        """
        fit = self._fit()
        if fit is None or not (self.running or not self._transport_seen):
            return None
        period, last = fit
        size = PPQN * (self.beats_per_bar if unit == "bar" else 1)
        now_tick = self.tick + (t - last) / period  # fractional tick position at time t
        return self.time_of_tick((int(now_tick // size) + 1) * size)

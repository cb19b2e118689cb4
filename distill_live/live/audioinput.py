"""The live audio input (`serve --input`): from a sound card's input to one model frame at a time.

    input callback ──copy──► RingBuffer ──pull──► mono, model rate ──► waiting input ──next_frame──► Player
      (audio thread)                      (generator thread)                           (one hop per frame)

The input callback only copies the card's block into a preallocated ring, as the output callback
only copies out of one, and notes the time: whether the input is late is judged by when the card
delivered, not by when the generator looked. The generator thread pulls what arrived, mixes it to
mono, resamples it to the model's rate and keeps it waiting until the Player takes it, a frame (hop
samples) at a time.

Whatever input waits is latency: the engine sets how much when the input starts (a cushion of
silence in front of it) and skips the oldest if more waits than it needs (see
`Engine._input_allows`). An input that stops arriving (a card unplugged) never holds the engine up:
its frames are filled with silence, and when it comes back the engine sets the cushion up again.
"""
from __future__ import annotations

import time

import numpy as np

from .resample import StreamResampler
from .ringbuffer import RingBuffer


class AudioInput:
    def __init__(self, channels: int, rate: int, model_rate: int, hop: int, seconds: float = 1.0):
        self.channels, self.rate, self.model_rate, self.hop = channels, rate, model_rate, hop
        self.ring = RingBuffer(round(channels * rate * seconds))  # interleaved, written by the callback
        self._scratch = np.zeros(self.ring.capacity, np.float32)
        self._resampler = StreamResampler(rate, model_rate) if rate != model_rate else None
        self.waiting = RingBuffer(round(model_rate * seconds))  # mono, model rate; generator thread only
        self.latency = 0.0  # seconds the card takes to deliver a sample (set when its stream opens)
        self.block = 0  # frames per card callback
        self.owed = 0  # samples of silence to play before the waiting input: a latency cushion
        self.resumed = False  # input arrived after the waiting input ran dry (the engine sets the cushion up again)
        self.overruns = 0  # card blocks that did not fit in the ring (the generator fell behind)
        self.skipped = 0  # samples skipped to keep the latency down
        self.short = 0  # frames that had to be filled with silence
        self.arrived: float | None = None  # time.monotonic() of the card's last block (set by the callback)
        self._dry = True  # nothing has arrived yet, or a frame was filled with silence since

    # -- audio callback side ---------------------------------------------------------------------

    def callback(self, indata: np.ndarray, frames: int, time_info, status) -> None:
        """sounddevice input callback: copy into the ring and note the time, nothing else."""
        self.block = frames
        if self.ring.space() >= indata.size:
            self.ring.write(indata.reshape(-1))
        else:
            self.overruns += 1
        self.arrived = time.monotonic()

    # -- generator thread ------------------------------------------------------------------------

    def pull(self) -> None:
        """Move what the card delivered into the waiting input: mono, at the model's rate."""
        n = self.ring.available() // self.channels * self.channels
        if n == 0:
            return
        block = self._scratch[:n]
        self.ring.read_into(block)
        mono = block.reshape(-1, self.channels).mean(axis=1) if self.channels > 1 else block.copy()
        if self._resampler is not None:
            mono = self._resampler.process(mono)
        overflow = len(mono) - self.waiting.space()
        if overflow > 0:  # the waiting ring is full (the generator stalled): drop the oldest input, keep the newest
            dropped = self.waiting.discard(overflow)
            mono = mono[overflow - dropped:]
            self.skipped += overflow
        self.waiting.write(mono)
        if self._dry:
            self.resumed, self._dry = True, False

    def late(self) -> bool:
        """No card block for a block and a half: input is not coming (yet), so nothing should wait for it."""
        arrived = self.arrived
        return arrived is None or time.monotonic() - arrived > 1.5 * self.block / self.rate + 0.002

    def available(self) -> int:
        """Samples waiting (the cushion of silence included), at the model's rate."""
        return self.owed + self.waiting.available()

    def queued(self) -> float:
        """Seconds of input waiting: what `available` counts and what the card delivered since the last pull
        (any thread may ask)."""
        return self.available() / self.model_rate + self.ring.available() // self.channels / self.rate

    def ready(self) -> bool:
        """A whole frame is waiting, or none is coming: the next frame need not wait."""
        return self.available() >= self.hop or self.late()

    def delay(self, samples: int) -> None:
        """Play `samples` of silence before the input waiting now."""
        self.owed += max(0, samples)

    def skip(self, samples: int) -> None:
        """Drop the oldest `samples` waiting."""
        samples = max(0, min(samples, self.available()))
        cushion = min(self.owed, samples)
        self.owed -= cushion
        self.waiting.discard(samples - cushion)
        self.skipped += samples

    def next_frame(self) -> np.ndarray:
        """The next hop samples (float32, model rate), filled with silence where none arrived."""
        frame = np.zeros(self.hop, np.float32)
        silent = min(self.owed, self.hop)
        self.owed -= silent
        if silent + self.waiting.read_into(frame[silent:]) < self.hop:
            self.short += 1
            self._dry = True
        return frame

"""A streaming resampler for when the sound card cannot run the model's rate.

soxr (used offline) hands back audio in lumps of tens of milliseconds, and every lump is latency
on stage. This one returns every chunk's worth at once, with a delay of `half_width` input
samples (1 ms for a 16 kHz model): a windowed-sinc interpolator evaluated at each output
sample's position. Any ratio works; downsampling lowers the cutoff so nothing aliases.
"""
from __future__ import annotations

import numpy as np


class StreamResampler:
    def __init__(self, in_rate: int, out_rate: int, half_width: int = 16):
        self.step = in_rate / out_rate  # input samples per output sample
        self.cutoff = min(1.0, out_rate / in_rate) * 0.95  # of the input's Nyquist
        self.hw = half_width
        self.offsets = np.arange(-half_width + 1, half_width + 1)  # taps around each position
        self.history = np.zeros(2 * half_width, np.float32)  # the last input samples
        self.pos = float(half_width)  # next output's position in history + new input: `hw` samples behind
        self.delay = half_width / in_rate  # seconds

    def process(self, chunk: np.ndarray) -> np.ndarray:
        buf = np.concatenate([self.history, chunk.astype(np.float32, copy=False)])
        last = len(buf) - self.hw - 1  # an output needs `hw` samples after its position
        n = max(0, int(np.floor((last - self.pos) / self.step)) + 1)
        positions = self.pos + self.step * np.arange(n)
        base = np.floor(positions).astype(np.int64)
        x = self.offsets[None, :] - (positions - base)[:, None]  # distance of each tap, in input samples
        window = 0.42 + 0.5 * np.cos(np.pi * x / self.hw) + 0.08 * np.cos(2 * np.pi * x / self.hw)
        kernel = self.cutoff * np.sinc(self.cutoff * x) * window
        out = (buf[base[:, None] + self.offsets[None, :]] * kernel).sum(axis=1).astype(np.float32)
        self.pos += self.step * n
        drop = len(buf) - len(self.history)
        self.history = buf[drop:]
        self.pos -= drop
        return out

"""A streaming resampler for when the sound card cannot run the model's rate.

soxr (used offline) hands back audio in lumps of tens of milliseconds, and every lump is latency
on stage. This one returns every chunk's worth at once, with a delay of `half_width` input
samples (1 ms for a 16 kHz model): a windowed-sinc interpolator evaluated at each output
sample's position. Any ratio works; downsampling lowers the cutoff so nothing aliases.

The rates a card runs are small multiples of each other (16 -> 48 kHz is 1:3, 48 -> 44.1 kHz is
160:147), so an output sample falls at one of a few fractional positions between input samples,
the same ones over and over. Positions are counted exactly, in 1/`phases` of an input sample, and
the kernel for each position is computed once, when the resampler is made. The engine sends chunks
of one size, so the chunks' starting positions repeat too (one for 16 -> 48 kHz, a few dozen for
48 -> 44.1): for each, the chunk's whole interpolation is laid out once as a matrix from the input
to the output samples, and a chunk then costs one matrix-vector product (about 3 us, against 9 us
for gathering the taps each time).
"""
from __future__ import annotations

from math import gcd

import numpy as np

from ..model.kernels import hold_blas_to_one_thread

MAX_PHASES = 4096  # more distinct positions than this (an odd pair of rates): kernels per chunk
MAX_PLANS = 512  # chunk layouts kept (one per starting position and chunk size met)


class StreamResampler:
    def __init__(self, in_rate: int, out_rate: int, half_width: int = 16):
        hold_blas_to_one_thread()  # (a chunk's product is numpy's BLAS: see model/kernels.py)
        g = gcd(in_rate, out_rate)
        self.in_step, self.phases = in_rate // g, out_rate // g  # an output every in_step/phases inputs
        self.cutoff = min(1.0, out_rate / in_rate) * 0.95  # of the input's Nyquist
        self.hw = half_width
        self.offsets = np.arange(-half_width + 1, half_width + 1)  # taps around each position
        self.buffer = np.zeros(2 * half_width, np.float32)  # the last input samples, then the chunk
        self.pos = half_width * self.phases  # next output's position in history + new input, in 1/phases
        self.delay = half_width / in_rate  # seconds
        self.table = self.kernel(np.arange(self.phases) / self.phases) if self.phases <= MAX_PHASES else None
        self.plans: dict[tuple[int, int], tuple[np.ndarray, int]] = {}  # (pos, len(buf)) -> (matrix, advance)

    def kernel(self, frac: np.ndarray) -> np.ndarray:
        """The taps for outputs at these fractions (0..1) past an input sample: [len(frac), 2 * hw]."""
        x = self.offsets[None, :] - frac[:, None]  # distance of each tap, in input samples
        window = 0.42 + 0.5 * np.cos(np.pi * x / self.hw) + 0.08 * np.cos(2 * np.pi * x / self.hw)
        return (self.cutoff * np.sinc(self.cutoff * x) * window).astype(np.float32)

    def process(self, chunk: np.ndarray) -> np.ndarray:
        keep, buf = 2 * self.hw, self.buffer
        if len(buf) != keep + len(chunk):  # a chunk of another size: a buffer for it, with the history
            buf = self.buffer = np.concatenate([buf[len(buf) - keep:], np.zeros(len(chunk), np.float32)])
        else:
            buf[:keep] = buf[len(chunk):]  # the history moves to the front (numpy copies overlaps safely)
        buf[keep:] = chunk
        key = (self.pos, len(buf))
        plan = self.plans.get(key)
        if plan is None:
            plan = self._plan(len(buf))
            if self.table is not None and len(self.plans) < MAX_PLANS:
                self.plans[key] = plan
        matrix, advance = plan
        self.pos += advance
        return matrix @ buf

    def _plan(self, size: int) -> tuple[np.ndarray, int]:
        """The interpolation of a buffer of `size` samples from the current position: a matrix [outputs,
        size] holding each output's taps at its input samples, and how far the position then moves."""
        last = (size - self.hw - 1) * self.phases  # an output needs `hw` samples after its position
        n = max(0, (last - self.pos) // self.in_step + 1)
        positions = self.pos + self.in_step * np.arange(n, dtype=np.int64)
        base, phase = np.divmod(positions, self.phases)
        taps = self.table[phase] if self.table is not None else self.kernel(phase / self.phases)
        matrix = np.zeros((n, size), np.float32)
        np.put_along_axis(matrix, base[:, None] + self.offsets[None, :], taps, axis=1)
        drop = size - 2 * self.hw
        return matrix, self.in_step * n - drop * self.phases

"""Per-frame musical descriptors: loudness, brightness, noisiness.

The trainer computes them on the training audio (they condition the prior); the live engine
and the tests compute them on generated audio. Frame t covers samples [t*hop, (t+1)*hop); its
descriptors look at the 2*hop samples ending at (t+1)*hop (zeros before the start), so they
are causal and a stream can compute them as it goes.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

DESCRIPTORS = ("loudness", "brightness", "noisiness")

FLOOR_DB = -100.0  # loudness of digital silence
SILENCE_DB = -60.0  # frames quieter than this do not shape the normalisation ranges
_EPS = 1e-12  # keeps logs and ratios finite; digital silence gets flatness 1
_CHUNK = 4096  # frames per rfft call: bounds memory on long files


def frame_descriptors(audio: np.ndarray, hop: int, sample_rate: int) -> np.ndarray:
    """[n // hop, 3] float32: loudness (dB RMS), brightness (spectral centroid, Hz),
    noisiness (spectral flatness, 0 = pure tone .. ~0.56 = white noise .. 1 = flat)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"frame_descriptors takes mono audio, got shape {audio.shape}")
    frames = len(audio) // hop
    out = np.zeros((frames, 3), np.float32)
    if frames == 0:
        return out
    padded = np.concatenate([np.zeros(hop, np.float32), audio[: frames * hop]])
    windows = sliding_window_view(padded, 2 * hop)[::hop]  # [frames, 2*hop], a view, no copy
    hann = np.hanning(2 * hop + 1)[:-1].astype(np.float32)  # periodic Hann
    freqs = np.fft.rfftfreq(2 * hop, 1 / sample_rate).astype(np.float32)
    for a in range(0, frames, _CHUNK):
        x = windows[a:a + _CHUNK]
        # Hann-weighted mean square: the plain RMS for steady sounds, smooth across frames
        mean_square = (x * x * hann).sum(-1) / hann.sum()
        out[a:a + _CHUNK, 0] = np.maximum(10 * np.log10(np.maximum(mean_square, 10 ** (FLOOR_DB / 10))), FLOOR_DB)
        magnitude = np.abs(np.fft.rfft(x * hann, axis=-1))
        out[a:a + _CHUNK, 1] = (magnitude * freqs).sum(-1) / (magnitude.sum(-1) + _EPS)
        power = magnitude * magnitude
        flatness = np.exp(np.log(power + _EPS).mean(-1)) / (power.mean(-1) + _EPS)
        out[a:a + _CHUNK, 2] = np.clip(flatness, 0.0, 1.0)
    return out


class DescriptorStream:
    """`frame_descriptors` of audio that comes a piece at a time (what the engine plays), each frame
    computed once, when its hop is complete: the newest `keep` frames, as `frame_descriptors` of the
    whole stream gives them, but for its first frame (a frame looks at the hop before it too, so the
    first hop only primes the stream)."""

    def __init__(self, hop: int, sample_rate: int, keep: int):
        self.hop, self.rate, self.keep = hop, sample_rate, keep
        self.frames: deque = deque(maxlen=keep)  # raw descriptors [3] of the newest frames, oldest first
        self._pending = np.zeros(0, np.float32)  # the samples after the last complete hop
        self._before: np.ndarray | None = None  # the last complete hop: the first half of the next frame's look

    def feed(self, audio: np.ndarray) -> None:
        audio = np.concatenate([self._pending, np.asarray(audio, np.float32)])
        complete = len(audio) // self.hop * self.hop
        self._pending = audio[complete:]
        if complete == 0:
            return
        if self._before is None:  # priming: the first hop has no hop before it
            self._before, audio, complete = audio[:self.hop], audio[self.hop:], complete - self.hop
            if complete == 0:
                return
        self.frames.extend(frame_descriptors(np.concatenate([self._before, audio[:complete]]), self.hop, self.rate)[1:])
        self._before = audio[complete - self.hop:complete]

    def newest(self) -> np.ndarray:
        """[n, 3]: the newest frames' raw descriptors, oldest first (n <= keep)."""
        return np.array(self.frames, np.float32).reshape(-1, 3)


def _scaled(raw: np.ndarray) -> np.ndarray:
    """Raw descriptors on the scales they are normalised on."""
    out = np.array(raw, dtype=np.float64)
    # brightness on a log-frequency scale: an octave is an octave, wherever it is
    out[..., 1] = np.log(np.maximum(out[..., 1], 1.0))
    return out


def _unscaled(scaled: np.ndarray) -> np.ndarray:
    out = np.array(scaled, dtype=np.float64)
    out[..., 1] = np.exp(out[..., 1])
    return out


def smoothed(raw: np.ndarray, frames: int) -> np.ndarray:
    """Each frame's descriptors [n, 3] averaged over the `frames` frames centred on it (fewer at the
    ends), brightness on its log scale: a sound's character over that stretch, not one frame's."""
    raw = np.asarray(raw, np.float64).reshape(-1, 3)
    if frames <= 1 or len(raw) == 0:
        return raw.astype(np.float32)
    total = np.concatenate([np.zeros((1, 3)), np.cumsum(_scaled(raw), axis=0)])
    at = np.arange(len(raw))
    first, end = np.maximum(at - frames // 2, 0), np.minimum(at - frames // 2 + frames, len(raw))
    return _unscaled((total[end] - total[first]) / (end - first)[:, None]).astype(np.float32)


_MIN_SPAN = np.array([1.0, 0.05, 0.01])  # dB, log Hz (5 %), flatness: a constant descriptor still maps somewhere


@dataclass(frozen=True)
class DescriptorStats:
    """The range each descriptor spans in the training set, in raw units (dB, Hz, flatness).

    lo and hi are the 5th and 95th percentiles over the training frames louder than
    SILENCE_DB; normalise maps lo..hi to 0..1 (clipped), so 0 and 1 are the quietest /
    darkest / most tonal and the loudest / brightest / noisiest the model has really heard.
    `window`: the frames each descriptor was averaged over (`smoothed`) before that, so what a held
    target means: the sound's character over that stretch (1: one frame's value, as older models).
    """
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    window: int = 1

    @classmethod
    def fit(cls, raw: Sequence[np.ndarray], window: int = 1) -> DescriptorStats:
        """The ranges of `raw` descriptors, each array already `smoothed` over `window` frames."""
        frames = np.concatenate([np.asarray(r, np.float64).reshape(-1, 3) for r in raw]) if raw else np.zeros((0, 3))
        sounding = frames[frames[:, 0] > SILENCE_DB]
        if len(sounding) == 0:
            sounding = frames
        if len(sounding) == 0:
            raise ValueError("cannot fit descriptor statistics on zero frames")
        lo, hi = np.percentile(_scaled(sounding), [5, 95], axis=0)
        widen = np.maximum(_MIN_SPAN - (hi - lo), 0) / 2
        lo, hi = _unscaled(lo - widen), _unscaled(hi + widen)
        return cls(tuple(float(v) for v in lo), tuple(float(v) for v in hi), window)

    def measure(self, recent: np.ndarray) -> np.ndarray:
        """[3] normalised: what the most recent frames of raw descriptors [n, 3] measure, averaged over
        the last `window` of them as the model was conditioned (what the live view shows)."""
        recent = np.asarray(recent, np.float64).reshape(-1, 3)[-self.window:]
        return self.normalise(_unscaled(_scaled(recent).mean(0)))

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        lo, hi = _scaled(np.array(self.lo)), _scaled(np.array(self.hi))
        return np.clip((_scaled(raw) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)

    def denormalise(self, normalised: np.ndarray) -> np.ndarray:
        lo, hi = _scaled(np.array(self.lo)), _scaled(np.array(self.hi))
        return _unscaled(lo + np.asarray(normalised, np.float64) * (hi - lo)).astype(np.float32)

    def to_dict(self) -> dict:
        return {**{name: {"lo": self.lo[i], "hi": self.hi[i]} for i, name in enumerate(DESCRIPTORS)},
                "window": self.window}

    @classmethod
    def from_dict(cls, d: dict) -> DescriptorStats:
        try:
            lo = tuple(float(d[name]["lo"]) for name in DESCRIPTORS)
            hi = tuple(float(d[name]["hi"]) for name in DESCRIPTORS)
            window = int(d.get("window", 1))  # older models: one frame
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"descriptor statistics need lo and hi for each of {', '.join(DESCRIPTORS)}: {e!r}")
        if window < 1:
            raise ValueError(f"descriptor statistics: window must be at least 1 frame, got {window}")
        return cls(lo, hi, window)

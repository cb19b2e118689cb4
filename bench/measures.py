"""What a listener hears, as numbers: the measures bench/quality.py and bench/corpus.py share.

Everything here looks at log-mel spectrograms (40 bands, 1024-point FFT, hop 256) at the model's own
rate, so nothing above the model's Nyquist counts. Two scales:

- single frames (`mel_frames`): the spectral colour of an instant;
- windows of about a second (`window_stats`): per band, the mean, the spread within the window and
  the mean frame-to-frame change. The mean is the colour; spread and change are the motion, which
  single frames cannot see: frames shuffled in time have the colour of the collection and none of
  its motion.

On top of those: a Fréchet distance between Gaussians fitted to two sets of such vectors, a
nearest-world-centroid classifier (`WorldEar`) that says which world a window sounds like, how long
a sound lasts (`self_similarity` at a lag), how noisy it is (`flatness`, and how near a world's own
stretches land to it: `excerpt_flatness`), and how a codec blurs a recording's partials (`blur`, on a
plain 1024-point spectrum rather than mel bands).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from distill_live.model.descriptors import frame_descriptors
from distill_train.losses import log_mel

N_FFT, HOP, BANDS = 1024, 256, 40
AUDIBLE_DB = -50.0  # a window or frame quieter than this (RMS, dBFS) is silence, left out of the statistics
RANGE = np.log(1000.0)  # self-similarity looks at the 60 dB below a file's loudest band


def log_mel_frames(audio: np.ndarray, rate: int) -> np.ndarray:
    """Log-mel spectrogram [frames, BANDS] (natural log of magnitude)."""
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]
    return log_mel(x, rate, N_FFT, HOP, BANDS)[0].T.numpy()


def mel_frames(audio: np.ndarray, rate: int) -> np.ndarray:
    """Log-mel frames [frames, 64] of the single-frame Fréchet figure (bench/corpus.py's yardstick)."""
    return log_mel(torch.from_numpy(audio)[None], rate, 1024, 256, 64)[0].T.numpy()


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of vectors [n, dims]."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    vals, vecs = np.linalg.eigh(ca)
    sqrt_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    cross = np.linalg.eigvalsh(sqrt_a @ cb @ sqrt_a)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.sqrt(np.clip(cross, 0, None)).sum())


@dataclass
class WindowStats:
    """Per audible window, per band: mean log-mel, its spread within the window, its mean |frame-to-frame change|."""
    mean: np.ndarray  # [windows, BANDS]
    spread: np.ndarray
    change: np.ndarray

    def __len__(self) -> int:
        return len(self.mean)

    def colour(self) -> np.ndarray:
        """The mean spectrum with the level removed (each window's mean over bands subtracted): its colour."""
        return self.mean - self.mean.mean(1, keepdims=True)

    def colour_and_motion(self) -> np.ndarray:
        return np.concatenate([self.colour(), self.spread, self.change], 1)

    def statistics(self) -> np.ndarray:
        """Mean (level kept), spread and change: what the one-second Fréchet distance compares."""
        return np.concatenate([self.mean, self.spread, self.change], 1)

    @staticmethod
    def join(parts: list[WindowStats]) -> WindowStats:
        empty = np.zeros((0, BANDS), np.float32)
        return WindowStats(*(np.concatenate([getattr(p, k) for p in parts] or [empty])
                             for k in ("mean", "spread", "change")))

    def sample(self, n: int, seed: int = 0) -> WindowStats:
        """`n` windows drawn without replacement (all of them when there are no more)."""
        if n >= len(self):
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self), n, replace=False))
        return WindowStats(self.mean[keep], self.spread[keep], self.change[keep])


def window_stats(audio: np.ndarray, rate: int, window: float = 1.0, step: float | None = None) -> WindowStats:
    """Statistics of the audible `window`-second windows of `audio`, one every `step` seconds (default: `window`)."""
    size, stride = int(window * rate), int((step or window) * rate)
    if len(audio) < size:
        return WindowStats.join([])
    frames = log_mel_frames(audio, rate)
    per = max(2, round(window * rate / HOP))
    rows = []
    for start in range(0, len(audio) - size + 1, stride):
        x = audio[start:start + size]
        if 10 * np.log10(np.mean(x ** 2) + 1e-20) < AUDIBLE_DB:
            continue
        mel = frames[start // HOP:start // HOP + per]
        rows.append((mel.mean(0), mel.std(0), np.abs(np.diff(mel, axis=0)).mean(0)))
    if not rows:
        return WindowStats.join([])
    return WindowStats(*(np.array(r, np.float32) for r in zip(*rows)))


class WorldEar:
    """Which world a window sounds like: the nearest world centroid of the training audio, on colour or
    on colour and motion, each feature standardised over the training windows.

    `audio_per_world`: training audio of each world (files one after another, so that one-shots
    shorter than a window still count)."""

    KINDS = ("colour", "colour_and_motion")

    def __init__(self, audio_per_world: list[np.ndarray], rate: int, window: float = 1.0):
        self.rate, self.window = rate, window
        stats = [window_stats(a, rate, window) for a in audio_per_world]
        self.scale, self.centroids = {}, {}
        for kind in self.KINDS:
            every = np.concatenate([getattr(s, kind)() for s in stats])
            self.scale[kind] = every.std(0) + 1e-6
            self.centroids[kind] = np.stack([getattr(s, kind)().mean(0) / self.scale[kind] if len(s) else
                                             np.full(every.shape[1], np.inf) for s in stats])

    @classmethod
    def of(cls, clips, worlds: int, rate: int, window: float = 1.0) -> WorldEar:
        """The ear of training clips (anything with `.audio` and `.world`, as distill_train's dataset has)."""
        return cls([np.concatenate([c.audio for c in clips if c.world == i] or [np.zeros(0, np.float32)])
                    for i in range(worlds)], rate, window)

    def heard(self, audio: np.ndarray) -> dict[str, np.ndarray]:
        """The world each audible window of `audio` is heard as, by colour and by colour and motion."""
        stats = window_stats(audio, self.rate, self.window)
        out = {}
        for kind in self.KINDS:
            f = getattr(stats, kind)() / self.scale[kind]
            out[kind] = ((f[:, None] - self.centroids[kind][None]) ** 2).sum(-1).argmin(1) if len(stats) else \
                np.zeros(0, np.int64)
        return out

    @classmethod
    def cross_validated(cls, files_per_world: list[list[np.ndarray]], rate: int, window: float = 1.0,
                        folds: int = 4) -> dict[str, tuple[int, int]]:
        """How often real audio is heard as its own world by an ear that never heard it: (hits, windows)
        per kind. Each world's files are dealt into `folds` groups; each group in turn is left out of the
        ear and heard by it (the files of a group one after another, so one-shots shorter than a window
        count). A world of one file is never heard (nothing of it would be left to learn from) but stays
        a world the others can be mistaken for, as in the ear of all the files."""
        counts = {kind: [0, 0] for kind in cls.KINDS}
        empty = np.zeros(0, np.float32)
        for fold in range(folds):
            ear = cls([np.concatenate([f for j, f in enumerate(files) if j % folds != fold] or [empty])
                       for files in files_per_world], rate, window)
            for world, files in enumerate(files_per_world):
                left_out = [f for j, f in enumerate(files) if j % folds == fold]
                if len(files) < 2 or not left_out:
                    continue
                heard = ear.heard(np.concatenate(left_out))
                for kind in cls.KINDS:
                    counts[kind][0] += int((heard[kind] == world).sum())
                    counts[kind][1] += len(heard[kind])
        return {kind: (hits, n) for kind, (hits, n) in counts.items()}


def self_similarity(files: list[np.ndarray], rate: int, lag: float) -> tuple[float | None, int]:
    """How much of a sound is still there `lag` seconds later, within each file: the mean correlation
    between the spectral shape of a sounding log-mel frame and of the frame `lag` later, and the number
    of such pairs.

    Each band counts by how far it stands above a floor 60 dB below the file's loudest band, and each
    frame's mean over bands is removed, so that shape counts and level does not (a decaying note keeps
    its shape): a frame followed by silence scores 0, a steady tone 1, a spectrum that keeps changing
    less, and white noise, whose only shape is its random ripple, about 0."""
    shift = round(lag * rate / HOP)
    total, pairs = 0.0, 0
    for audio in files:
        mel = log_mel_frames(audio, rate)
        v = np.clip(mel - (mel.max() - RANGE), 0, None)
        v = np.where(v.any(1, keepdims=True), v - v.mean(1, keepdims=True), 0)
        if len(v) <= shift:
            continue
        a, b = v[:-shift], v[shift:]
        norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        sounding = norm_a > 0
        cos = (a * b).sum(1) / np.maximum(norm_a * norm_b, 1e-12)
        total += float(cos[sounding].sum())
        pairs += int(sounding.sum())
    return (total / pairs if pairs else None), pairs


def flatness(audio: np.ndarray, rate: int) -> float | None:
    """Spectral flatness (0 = pure tone, ~0.56 = white noise), averaged over the audible frames, as the
    noisiness descriptor measures it (model/descriptors.py: what `/distill/descriptor/noisiness`
    holds); None when all is silence."""
    frames = frame_descriptors(np.asarray(audio, np.float32), HOP, rate)
    audible = frames[frames[:, 0] >= AUDIBLE_DB]
    return float(audible[:, 2].mean()) if len(audible) else None


def near(ratio: float | None, tolerance: float = 0.25) -> bool:
    """Whether a ratio of generated (or coded) to real is within `tolerance` of 1: the issue's "within 25%"."""
    return ratio is not None and abs(ratio - 1) <= tolerance


def excerpt_flatness(files: list[np.ndarray], rate: int, seconds: float, trials: int = 20, seed: int = 0
                     ) -> list[float]:
    """How near a stretch of a world's own recordings lands to the world's `flatness`: the ratio, to the
    flatness of all of `files`, of `trials` random `seconds`-long stretches of them played one after
    another in a random order (as the prior learns a world). What a stretch holds decides its flatness (a
    world's files can span decades: Sonic Pi's `ambi` from a drone at 2e-7 to rain at 0.3), so a
    generated stretch of the same length can land only about as near as these do."""
    whole = flatness(np.concatenate(files), rate)
    rng, n, out = np.random.default_rng(seed), int(seconds * rate), []
    for _ in range(trials):
        played = np.concatenate([files[i] for i in rng.permutation(len(files))])
        played = np.tile(played, -(-n // len(played)) + 1)  # (a world shorter than a stretch plays again)
        start = int(rng.integers(0, len(played) - n + 1))
        f = flatness(played[start:start + n], rate)
        if f is not None and whole:
            out.append(f / whole)
    return out


def blur(real: np.ndarray, through: np.ndarray) -> dict | None:
    """How a codec changes a recording's spectrum, in the frames within 20 dB of its loudest: the mean
    change in dB of the bins within 30 dB of each frame's peak (`peaks_db`, below 0: partials come out
    weaker) and of the bins more than 60 dB under it (`floor_db`, above 0: the floor comes out
    stronger), and the share of such deep bins in the recording and through the codec. A codec that
    blurs its partials lowers the peaks and raises the floor around them; one that adds hiss raises
    the floor and the share of deep bins falls. None when either is silent."""
    window = torch.hann_window(N_FFT)
    power = lambda x: (torch.stft(torch.from_numpy(np.ascontiguousarray(x, np.float32)), N_FFT, HOP, window=window,
                                  return_complex=True).abs() ** 2).T.numpy()  # [frames, bins]
    p, q = power(real), power(through)
    n = min(len(p), len(q))
    p, q = p[:n], q[:n]
    if not p.any() or not q.any():
        return None
    level = 10 * np.log10(p.sum(1) + 1e-12)
    loud = level > level.max() - 20
    peak = p.max(1, keepdims=True)
    change = 10 * np.log10((q + 1e-12) / (p + 1e-12))
    top, deep = (p >= 1e-3 * peak) & loud[:, None], (p < 1e-6 * peak) & loud[:, None]
    mean = lambda m: float(change[m].mean()) if m.any() else None
    return {"peaks_db": mean(top), "floor_db": mean(deep), "deep_share_real": float(deep[loud].mean()),
            "deep_share_through": float(((q < 1e-6 * peak) & loud[:, None])[loud].mean())}

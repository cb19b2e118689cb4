"""Two synthetic worlds that differ in every descriptor, the tiny model the real CLI trains on
them, and how the steering tests hear what comes out.

    bells   decaying partials (1.5-3.5 kHz and 2.7x), each struck with a short burst of noise:
            bright; noisy at the strike and tonal after it; loud onsets, quiet tails
    rumble  noise below 300 Hz at a steady level: dark, tonal (by spectral flatness, which looks at
            the whole band), loud

Used by tests/conftest.py (`trained_model`, trained once per session with seed 0), by
tests/test_controls.py and by bench/steering.py, which trains the same model with ten seeds and
reports each control's effect as the tests measure it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
FILES_PER_WORLD = 4
SECONDS = 3.0
# codec and prior steps of the test model: at 600 codec steps (and the codec's learning rate of the
# time, 2e-3) 6 of 10 seeds gave a codec that played the bells as a dull hum, and no control can make
# that bright (docs/benchmarks.md, "Steering")
CODEC_STEPS, PRIOR_STEPS = 1000, 500
RENDER_SEEDS = (1, 2, 3)  # each control's effect is pooled over these: one 6 s draw can go either way
RENDER_SECONDS = 6
TARGETS = (0.05, 0.95)  # a descriptor held low, then high


def bells(rng: np.random.Generator, seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    out = np.zeros_like(t)
    for onset in np.arange(0, seconds, 0.5):
        f = rng.uniform(1500, 3500)
        env = np.where(t >= onset, np.exp(-(t - onset) * 6), 0)
        out += env * (np.sin(2 * np.pi * f * t) + 0.5 * np.sin(2 * np.pi * 2.7 * f * t))
        out += np.where(t >= onset, np.exp(-(t - onset) * 60), 0) * rng.standard_normal(len(t))  # the strike
    return 0.3 * out / np.abs(out).max()


def rumble(rng: np.random.Generator, seconds: float, sr: int) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(int(seconds * sr)))
    spec[np.fft.rfftfreq(int(seconds * sr), 1 / sr) > 300] = 0
    out = np.fft.irfft(spec, int(seconds * sr))
    return 0.3 * out / np.abs(out).max()


WORLDS = {"bells": bells, "rumble": rumble}


def write_worlds(root: Path) -> Path:
    """root/<world>/<world><i>.wav for every world; returns root."""
    rng = np.random.default_rng(0)
    for world, make in WORLDS.items():
        (root / world).mkdir(parents=True, exist_ok=True)
        for i in range(FILES_PER_WORLD):
            sf.write(root / world / f"{world}{i}.wav", make(rng, SECONDS, SAMPLE_RATE), SAMPLE_RATE)
    return root


def train(data: Path, model: Path, seed: int = 0, env: dict | None = None) -> subprocess.CompletedProcess:
    """The test model, trained by the real CLI (a minute on two cores)."""
    return subprocess.run([sys.executable, "-m", "distill_train", data, "-o", model, "--preset", "tiny",
                           "--steps", str(CODEC_STEPS), "--prior-steps", str(PRIOR_STEPS), "--seed", str(seed),
                           "--quiet"], capture_output=True, text=True, env=env)


# -- hearing what comes out ------------------------------------------------------------------------


def descriptors_of(audio: np.ndarray, model) -> np.ndarray:
    """Mean loudness (dB), brightness (Hz) and noisiness of the frames louder than -60 dB."""
    from distill_live.model.descriptors import frame_descriptors

    c = model.config.codec
    d = frame_descriptors(audio, c.hop, c.sample_rate)
    loud = d[:, 0] > -60
    return d[loud].mean(0)


def settled(audio: np.ndarray) -> np.ndarray:
    """The last two thirds: the first seconds still carry the start-up state, not the control."""
    return audio[len(audio) // 3:]


def play(model, messages, seeds=RENDER_SEEDS, seconds: float = RENDER_SECONDS) -> np.ndarray:
    """The settled parts of renders with these messages, one per seed, end to end."""
    from distill_live.live.player import render

    return np.concatenate([settled(render(model, seconds, seed=seed, messages=messages)) for seed in seeds])


def loudness_db(audio: np.ndarray, model) -> float:
    """Mean loudness of all frames (dB), quiet ones included: the descriptor the loudness hold steers."""
    from distill_live.model.descriptors import frame_descriptors

    c = model.config.codec
    return float(frame_descriptors(audio, c.hop, c.sample_rate)[:, 0].mean())


def world_references(model, data: Path) -> dict[str, np.ndarray]:
    """Each world's descriptors, measured on its training files."""
    return {w: np.mean([descriptors_of(sf.read(f)[0], model) for f in sorted((data / w).glob("*.wav"))], 0)
            for w in model.worlds}


def world_distances(got: np.ndarray, references: dict[str, np.ndarray]) -> dict[str, float]:
    """How far descriptors are from each world's, each descriptor in units of how much the worlds differ."""
    refs = np.array(list(references.values()))
    scale = refs.max(0) - refs.min(0) + 1e-6
    return {w: float(np.abs((got - ref) / scale).sum()) for w, ref in references.items()}

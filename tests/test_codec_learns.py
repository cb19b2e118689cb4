"""A tiny codec trained briefly on a bright and a dark sound must tell them apart.

Before the encoder's input was zero for empty bins and the training loss floored its logs relative
to the target's level, a fresh codec learnt one average spectrum (broadband noise at ~3.8 kHz) for
every input: the decoder's output did not depend on what went in.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distill_live.model.codec import Codec
from distill_live.model.config import preset
from distill_train.codec_stage import spectral_loss
from distill_train.loop import learning_rate

pytestmark = pytest.mark.slow  # trains a codec for a while

# At 200-600 steps the bright clip still comes out 9-30 dB quiet (the decoder has not yet learnt
# phases that add up for partials between its bins); from about 1000 steps it holds for every seed tried.
STEPS, BATCH, LR = 1000, 8, 3e-3


def _clips(sr: int, rng: np.random.Generator, seconds: float = 2.0):
    t = np.arange(int(seconds * sr)) / sr

    def bright():  # decaying partials between 1.5 and 9.5 kHz
        out = np.zeros_like(t)
        for onset in np.arange(0, seconds, 0.5):
            f = rng.uniform(1500, 3500)
            env = np.where(t >= onset, np.exp(-(t - onset) * 6), 0)
            out += env * (np.sin(2 * np.pi * f * t) + 0.5 * np.sin(2 * np.pi * 2.7 * f * t))
        return 0.3 * out / np.abs(out).max()

    def dark():  # noise below 300 Hz
        spec = np.fft.rfft(rng.standard_normal(len(t)))
        spec[np.fft.rfftfreq(len(t), 1 / sr) > 300] = 0
        out = np.fft.irfft(spec, len(t))
        return 0.3 * out / np.abs(out).max()

    return ([torch.tensor(bright(), dtype=torch.float32) for _ in range(2)],
            [torch.tensor(dark(), dtype=torch.float32) for _ in range(2)])


def _level(x: torch.Tensor) -> float:
    return 20 * math.log10(float(x.pow(2).mean().sqrt()) + 1e-9)


def _centroid(x: torch.Tensor, sr: int) -> float:
    power = torch.fft.rfft(x).abs() ** 2
    return float((power * torch.fft.rfftfreq(x.shape[-1], 1 / sr)).sum() / power.sum().clamp_min(1e-20))


# On the code before the encoder-input and relative-floor fixes (commit 1a6c1fc) both clips came out
# as the same ~3.8 kHz noise.
def test_reconstruction_follows_the_input():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = preset("tiny").codec
    sr, hop = cfg.sample_rate, cfg.hop
    brights, darks = _clips(sr, rng)
    clips = brights + darks
    crop = 32 * hop
    codec = Codec(cfg)
    opt = torch.optim.AdamW(codec.parameters(), lr=LR, betas=(0.8, 0.99), weight_decay=0.01)
    for step in range(1, STEPS + 1):
        for group in opt.param_groups:
            group["lr"] = learning_rate(LR, step / STEPS, 0.05)
        batch = []
        for _ in range(BATCH):
            c = clips[rng.integers(len(clips))]
            s = rng.integers(0, (len(c) - crop) // hop) * hop
            batch.append(c[s:s + crop] * float(10 ** (rng.uniform(-6, 6) / 20)))
        audio = torch.stack(batch)
        recon, _, commit = codec(audio, quantizer_dropout=step % 2 == 0)
        loss = spectral_loss(recon, audio[:, :recon.shape[1]], sr) + commit
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(codec.parameters(), 1.0)
        opt.step()

    codec.eval()
    figures = {}
    with torch.no_grad():
        for name, clip in (("bright", brights[0]), ("dark", darks[0])):
            audio = clip[None, : (len(clip) // hop) * hop]
            out = codec.decode(codec.encode(audio))
            figures[name] = (_level(audio), _level(out), _centroid(audio[0], sr), _centroid(out[0], sr))
    text = ", ".join(f"{k}: in {a:.1f} dB {c:.0f} Hz, out {b:.1f} dB {d:.0f} Hz" for k, (a, b, c, d) in figures.items())
    assert figures["bright"][3] > 3 * figures["dark"][3], text
    for name, (level_in, level_out, _, _) in figures.items():
        assert abs(level_out - level_in) < 6, f"{name} level off: {text}"

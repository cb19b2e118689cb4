"""The output never passes full scale: the Player bends peaks above 0.9 smoothly towards ±1."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from distill_live.live.player import render, soft_clip
from distill_live.model.modelfile import load_model

DEMO = Path(__file__).resolve().parents[1] / "distill_live" / "demo" / "demo.distill"


def test_soft_clip_passes_what_is_below_the_knee_and_bounds_the_rest():
    x = np.linspace(-6.0, 6.0, 12001, dtype=np.float32)
    y = soft_clip(x)
    quiet = np.abs(x) <= 0.9
    assert np.array_equal(y[quiet], x[quiet])
    assert np.abs(y).max() <= 1.0 and np.all(np.diff(y) >= 0)  # bounded, and louder stays louder
    bend = soft_clip(np.linspace(0.91, 1.5, 60, dtype=np.float32))  # not a hard clip: below 1, still rising
    assert bend.max() < 1.0 and np.all(np.diff(bend) > 0)
    assert soft_clip(np.float32([-2.0]))[0] < -0.99
    assert np.array_equal(soft_clip(np.float32([np.nan, np.inf, 0.5])), np.float32([0.0, 0.0, 0.5]))
    slope = (soft_clip(np.float32([0.9 + 1e-3]))[0] - 0.9) / 1e-3  # no corner at the knee
    assert abs(slope - 1.0) < 0.01


def test_the_demo_pushed_to_gain_2_stays_within_full_scale():
    model = load_model(DEMO)
    audio = render(model, 10, seed=2, messages=[(0.0, "/distill/gain", (2.0,))])
    assert np.abs(audio).max() <= 1.0
    assert np.mean(np.abs(audio) > 0.5) > 0.001  # loud, so the bound was needed

"""Descriptors as the prior is conditioned on them (model/descriptors.py): averaged over a window of
frames, so a held target means a stretch of sound, and the window travels with the model."""
from __future__ import annotations

import numpy as np
import pytest

from distill_live.model.descriptors import DescriptorStats, DescriptorStream, frame_descriptors, smoothed


def test_smoothed_averages_the_frames_centred_on_each_one():
    raw = np.zeros((10, 3), np.float32)
    raw[:, 1] = 1000.0
    raw[4, 0], raw[4, 2], raw[4, 1] = -20.0, 0.5, 4000.0  # one strike among quiet tonal frames
    out = smoothed(raw, 5)
    # frames 2..6 see the strike (a fifth of their window), the others do not
    assert np.allclose(out[2:7, 0], -4.0) and np.allclose(out[2:7, 2], 0.1)
    assert np.allclose(out[[0, 1, 7, 8, 9], 0], 0.0) and np.allclose(out[[0, 1, 7, 8, 9], 2], 0.0)
    assert np.allclose(out[2:7, 1], 1000.0 * 4 ** 0.2)  # brightness: an average of octaves
    assert np.allclose(out[0, 0], 0.0)  # at the ends, over the frames there are
    assert np.array_equal(smoothed(raw, 1), raw)


def test_a_struck_sound_is_steadily_noisy_once_averaged():
    # a short noise burst every half second over a decaying tone: frame by frame its noisiness swings by
    # orders of magnitude within every half second, so a target held high matched the strike frames
    # alone, never a stretch of training audio; averaged over half a second it is steady
    sr, hop = 16000, 320
    t = np.arange(3 * sr) / sr
    rng = np.random.default_rng(0)
    struck = sum(np.where(t >= on, np.exp(-(t - on) * 6) * np.sin(2 * np.pi * 2000 * t)
                          + np.exp(-(t - on) * 60) * rng.standard_normal(len(t)), 0) for on in np.arange(0, 3, 0.5))
    frames = frame_descriptors(struck, hop, sr)
    inner = slice(25, -25)
    by_frame, averaged = frames[inner, 2], smoothed(frames, 25)[inner, 2]
    assert by_frame.max() > 1000 * by_frame.min()
    assert averaged.max() < 3 * averaged.min()


def test_the_window_travels_with_the_statistics_and_old_models_mean_one_frame():
    raw = np.random.default_rng(0).uniform([-60, 100, 0], [-10, 8000, 0.5], (200, 3)).astype(np.float32)
    stats = DescriptorStats.fit([smoothed(raw, 25)], 25)
    assert DescriptorStats.from_dict(stats.to_dict()) == stats and stats.window == 25
    old = {name: v for name, v in stats.to_dict().items() if name != "window"}
    assert DescriptorStats.from_dict(old).window == 1
    with pytest.raises(ValueError, match="window"):
        DescriptorStats.from_dict({**stats.to_dict(), "window": 0})


def test_what_the_live_view_measures_is_the_average_over_the_window():
    raw = np.zeros((30, 3), np.float32)
    raw[:, 0], raw[:, 1] = -40.0, 1000.0
    raw[-5:, 0] = -20.0  # the last five frames louder
    stats = DescriptorStats(lo=(-40.0, 100.0, 0.0), hi=(-20.0, 10000.0, 0.5), window=10)
    assert np.isclose(stats.measure(raw)[0], 0.5)  # half of the last ten frames at each end of the range
    assert np.isclose(DescriptorStats(stats.lo, stats.hi).measure(raw)[0], 1.0)  # one frame: the last


def test_a_stream_measures_each_frame_once_as_frame_descriptors_measures_the_whole():
    # what the page's live view measures: the engine's output as it comes, in pieces of any size
    sr, hop = 16000, 320
    rng = np.random.default_rng(1)
    audio = (rng.standard_normal(sr) * np.linspace(0.01, 1, sr) + np.sin(np.arange(sr) * 0.3)).astype(np.float32)
    whole = frame_descriptors(audio, hop, sr)
    stream, at = DescriptorStream(hop, sr, keep=10), 0
    for size in rng.integers(0, 3 * hop, 100):
        piece = audio[at:at + size]
        at += len(piece)
        stream.feed(piece)
        done = at // hop  # frames complete so far; the first (it has no hop before it) only primes the stream
        assert len(stream.newest()) == min(10, max(0, done - 1))
        if done > 1:
            assert np.allclose(stream.newest(), whole[max(1, done - 10):done], rtol=1e-5, atol=1e-4), at

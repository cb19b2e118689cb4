"""The live resampler: right pitch and level, steady output per chunk, small delay, no aliasing."""
import numpy as np
import pytest

from distill_live.live.resample import StreamResampler


@pytest.mark.parametrize("src,dst", [(16000, 48000), (24000, 44100), (48000, 44100), (48000, 16000)])
def test_a_sine_comes_out_as_the_same_sine(src, dst):
    f = 440.0
    r = StreamResampler(src, dst)
    x = np.sin(2 * np.pi * f * np.arange(src) / src).astype(np.float32)
    chunk = src // 200  # 5 ms chunks, as the engine sends them
    outs = [r.process(x[i:i + chunk]) for i in range(0, len(x), chunk)]
    sizes = [len(o) for o in outs[1:]]  # (the first is shorter by the delay)
    assert max(sizes) - min(sizes) <= 1  # every chunk's worth comes out at once, no lumps
    y = np.concatenate(outs)
    assert abs(len(y) - dst) <= r.hw * dst / src + 1
    t = np.arange(len(y)) / dst - r.delay
    expected = np.sin(2 * np.pi * f * t)
    body = slice(dst // 10, len(y) - dst // 10)
    assert np.abs(y[body] - expected[body]).max() < 0.02


def test_downsampling_removes_what_the_new_rate_cannot_hold():
    src, dst = 48000, 16000
    r = StreamResampler(src, dst)
    x = np.sin(2 * np.pi * 12000 * np.arange(src) / src).astype(np.float32)  # above 8 kHz
    y = np.concatenate([r.process(x[i:i + 240]) for i in range(0, src, 240)])
    assert np.abs(y[1000:-1000]).max() < 0.1  # would alias to 4 kHz at full level without the filter


def direct(src: int, dst: int, x: np.ndarray, hw: int = 16) -> np.ndarray:
    """The same interpolator evaluated sample by sample from its definition, all input at once."""
    step, cutoff = src / dst, min(1.0, dst / src) * 0.95
    buf = np.concatenate([np.zeros(2 * hw), x])
    out, k = [], 0
    while (pos := hw + k * step) <= len(buf) - hw - 1:
        base = int(np.floor(pos))
        d = np.arange(-hw + 1, hw + 1) - (pos - base)
        window = 0.42 + 0.5 * np.cos(np.pi * d / hw) + 0.08 * np.cos(2 * np.pi * d / hw)
        out.append(np.dot(buf[base - hw + 1:base + hw + 1], cutoff * np.sinc(cutoff * d) * window))
        k += 1
    return np.array(out)


@pytest.mark.parametrize("src,dst", [(16000, 48000), (24000, 48000), (48000, 44100), (22050, 48000),
                                     (48000, 16000), (16000, 47999)])
def test_precomputed_kernels_give_the_interpolator_s_own_samples(src, dst):
    """Kernels computed once per position (or per chunk, for an odd pair of rates like 16 -> 47.999
    kHz) give what the formula gives at every output sample, however the input is chunked."""
    x = np.random.default_rng(0).uniform(-1, 1, src // 10).astype(np.float32)
    r = StreamResampler(src, dst)
    chunks = np.split(x, np.cumsum(np.random.default_rng(1).integers(1, src // 100, 40)))
    y = np.concatenate([r.process(c) for c in chunks])
    want = direct(src, dst, x.astype(np.float64))
    assert len(y) == len(want)
    assert np.abs(y - want).max() < 1e-5

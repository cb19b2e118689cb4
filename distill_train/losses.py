"""STFT, mel filterbank and the spectral distances used as losses and as quality figures.

Hand-written on torch.stft so nothing depends on torchaudio.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch


def stft_magnitude(audio: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """|STFT| of [B, n] audio -> [B, bins, frames]."""
    window = _hann(n_fft, audio.device)
    spec = torch.stft(audio, n_fft, hop, n_fft, window, center=True, pad_mode="constant", return_complex=True)
    return spec.abs()


@lru_cache(maxsize=32)
def _hann_cpu(n: int) -> torch.Tensor:
    return torch.hann_window(n)


def _hann(n: int, device: torch.device) -> torch.Tensor:
    return _hann_cpu(n).to(device)


def hz_to_mel(hz: float | torch.Tensor):
    return 2595.0 * (torch.log10(1.0 + torch.as_tensor(hz) / 700.0))


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=32)
def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular HTK-style mel filters, [n_mels, n_fft // 2 + 1], each filter summing to about 1."""
    bins = n_fft // 2 + 1
    freqs = torch.linspace(0, sample_rate / 2, bins)
    mel_points = torch.linspace(0.0, float(hz_to_mel(sample_rate / 2)), n_mels + 2)
    hz_points = mel_to_hz(mel_points)
    lower, centre, upper = hz_points[:-2, None], hz_points[1:-1, None], hz_points[2:, None]
    rising = (freqs[None] - lower) / (centre - lower).clamp_min(1e-5)
    falling = (upper - freqs[None]) / (upper - centre).clamp_min(1e-5)
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return fb / fb.sum(dim=1, keepdim=True).clamp_min(1e-8)


def log_mel(audio: torch.Tensor, sample_rate: int, n_fft: int, hop: int, n_mels: int) -> torch.Tensor:
    """Log-mel spectrogram [B, n_mels, frames]."""
    mag = stft_magnitude(audio, n_fft, hop)
    fb = mel_filterbank(n_fft, n_mels, sample_rate).to(audio.device)
    return torch.log(torch.einsum("mf,bft->bmt", fb, mag) + 1e-5)


def stft_scales(sample_rate: int) -> list[int]:
    """FFT sizes of about 11, 21 and 43 ms at any rate, as powers of two."""
    base = 2 ** round(math.log2(sample_rate * 0.021))
    return [base // 2, base, base * 2]


def _floor(target_mag: torch.Tensor, relative_floor: float | None) -> torch.Tensor | float:
    """The magnitude added before taking logs: 1e-5, or `relative_floor` x each item's peak target magnitude.

    A fixed floor far below the signal makes the log-L1 terms mostly about near-silent bins (a clip
    with energy only below 300 Hz has hundreds of bins at the floor): the loss then rewards matching
    the shape of the noise floor rather than where the energy is, and a small codec settles on one
    average spectrum for every input. A floor relative to the target's own peak (1e-3 = -60 dB)
    weights the bins that carry the sound, at any level.
    """
    if relative_floor is None:
        return 1e-5
    peak = target_mag.detach().flatten(1).amax(1).clamp_min(1e-5 / relative_floor)
    return (relative_floor * peak).view(-1, *([1] * (target_mag.dim() - 1)))


def multi_resolution_stft_distance(x: torch.Tensor, y: torch.Tensor, sample_rate: int,
                                   relative_floor: float | None = None) -> torch.Tensor:
    """Spectral convergence + log-magnitude L1, averaged over three resolutions. x: estimate, y: target.

    `relative_floor`: see `_floor` (None: the fixed 1e-5 floor, kept for quality figures).
    """
    total = x.new_zeros(())
    scales = stft_scales(sample_rate)
    for n_fft in scales:
        mx, my = stft_magnitude(x, n_fft, n_fft // 4), stft_magnitude(y, n_fft, n_fft // 4)
        convergence = torch.linalg.vector_norm(my - mx) / torch.linalg.vector_norm(my).clamp_min(1e-5)
        floor = _floor(my, relative_floor)
        log_mag = (torch.log(mx + floor) - torch.log(my + floor)).abs().mean()
        total = total + convergence + log_mag
    return total / len(scales)


def multi_scale_mel_distance(x: torch.Tensor, y: torch.Tensor, sample_rate: int,
                             relative_floor: float | None = None) -> torch.Tensor:
    """Log-mel L1 averaged over three resolutions. `relative_floor`: see `_floor`."""
    total = x.new_zeros(())
    scales = stft_scales(sample_rate)
    for n_fft, n_mels in zip(scales, (40, 64, 80)):
        fb = mel_filterbank(n_fft, n_mels, sample_rate).to(x.device)
        mx = torch.einsum("mf,bft->bmt", fb, stft_magnitude(x, n_fft, n_fft // 4))
        my = torch.einsum("mf,bft->bmt", fb, stft_magnitude(y, n_fft, n_fft // 4))
        floor = _floor(my, relative_floor)
        total = total + (torch.log(mx + floor) - torch.log(my + floor)).abs().mean()
    return total / len(scales)


def frame_level_distance(x: torch.Tensor, y: torch.Tensor, n_fft: int = 512) -> torch.Tensor:
    """L1 between the log RMS levels (natural log of amplitude) of x and y per STFT frame.

    A training term: the log-spectral terms alone let a small codec answer a sparse, bright sound
    (a few partials it cannot yet place) with near silence, since every bin it fills off a partial
    costs as much as the partial it misses. Frames more than 60 dB below the target's loudest
    frame count as that level.
    """
    ex = stft_magnitude(x, n_fft, n_fft // 4).pow(2).sum(1)
    ey = stft_magnitude(y, n_fft, n_fft // 4).pow(2).sum(1)
    floor = 1e-6 * ey.detach().amax(1, keepdim=True).clamp_min(1e-10)
    return 0.5 * (torch.log(ex + floor) - torch.log(ey + floor)).abs().mean()

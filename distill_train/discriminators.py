"""Discriminators for the adversarial stage: multi-period (waveform) and multi-scale STFT (spectrum).

The multi-period discriminator (HiFi-GAN) folds the waveform into columns of p samples for a few
prime periods p, so each sub-discriminator judges structure that repeats every p samples: it is
what teaches a decoder clean periodic waveforms and consistent phase. The multi-scale STFT
discriminator (EnCodec) looks at the real and imaginary parts of three spectrograms, so it judges
phase and fine spectral detail that magnitude losses cannot see.

Each sub-discriminator returns its logits and the activations of every layer (for feature matching).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from distill_train.losses import stft_scales

Features = list[torch.Tensor]
Judgement = list[tuple[torch.Tensor, Features]]  # (logits, features) of each sub-discriminator

PERIODS = (2, 3, 5, 7, 11)


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, width: int):
        super().__init__()
        self.period = period
        channels = [1, width, 2 * width, 4 * width, 8 * width]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(a, b, (5, 1), (3, 1), padding=(2, 0))) for a, b in zip(channels, channels[1:]))
        self.last = weight_norm(nn.Conv2d(channels[-1], channels[-1], (5, 1), padding=(2, 0)))
        self.out = weight_norm(nn.Conv2d(channels[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, Features]:
        n = audio.shape[-1]
        x = F.pad(audio, (0, (-n) % self.period), mode="reflect")
        x = x.view(x.shape[0], 1, -1, self.period)
        features = []
        for conv in [*self.convs, self.last]:
            x = F.leaky_relu(conv(x), 0.1)
            features.append(x)
        x = self.out(x)
        features.append(x)
        return x.flatten(1), features


class SpectrumDiscriminator(nn.Module):
    def __init__(self, n_fft: int, width: int):
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.convs = nn.ModuleList([weight_norm(nn.Conv2d(2, width, (3, 9), padding=(1, 4)))])
        for dilation in (1, 2, 4):
            self.convs.append(weight_norm(nn.Conv2d(width, width, (3, 9), (1, 2), padding=(dilation, 4),
                                                    dilation=(dilation, 1))))
        self.convs.append(weight_norm(nn.Conv2d(width, width, (3, 3), padding=(1, 1))))
        self.out = weight_norm(nn.Conv2d(width, 1, (3, 3), padding=(1, 1)))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, Features]:
        spec = torch.stft(audio.squeeze(1), self.n_fft, self.n_fft // 4, window=self.window, return_complex=True)
        x = torch.stack([spec.real, spec.imag], 1).transpose(2, 3)  # [B, 2, frames, bins]
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            features.append(x)
        x = self.out(x)
        features.append(x)
        return x.flatten(1), features


class Discriminator(nn.Module):
    """All sub-discriminators together: `forward(audio [B, n])` -> [(logits, features), ...]."""

    def __init__(self, sample_rate: int, width: int = 16):
        super().__init__()
        self.parts = nn.ModuleList([*(PeriodDiscriminator(p, width) for p in PERIODS),
                                    *(SpectrumDiscriminator(n, width) for n in stft_scales(sample_rate))])

    def forward(self, audio: torch.Tensor) -> Judgement:
        x = audio[:, None]
        return [part(x) for part in self.parts]


def discriminator_loss(real: Judgement, fake: Judgement) -> torch.Tensor:
    """Hinge loss: real logits pushed above 1, fake below -1."""
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for (r, _), (f, _) in zip(real, fake)) / len(real)


def generator_losses(real: Judgement, fake: Judgement) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial hinge loss, feature matching) for the decoder; `real` computed without gradients.

    Feature matching is the L1 between the discriminators' activations on real and decoded audio,
    each layer divided by the mean size of its real activations so every layer counts alike.
    """
    adversarial = sum(F.relu(1 - f).mean() for f, _ in fake) / len(fake)
    matching, layers = 0.0, 0
    for (_, real_feats), (_, fake_feats) in zip(real, fake):
        for r, f in zip(real_feats, fake_feats):
            matching = matching + (r - f).abs().mean() / r.abs().mean().clamp_min(1e-5)
            layers += 1
    return adversarial, matching / layers

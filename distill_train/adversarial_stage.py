"""Adversarial stage: fine-tune the codec's decoder against discriminators, encoder and codes frozen.

Spectral losses judge magnitudes; they cannot tell a decoder that the phases of its overlapping
windows disagree, which leaves tonal sounds a little rough and quiet. Here the decoder also learns
to fool a multi-period and a multi-scale STFT discriminator (`discriminators.py`: hinge loss plus
feature matching), with the codec stage's spectral losses kept so it stays faithful. The encoder
and quantizer do not change, so codes (and a prior trained on them) stay valid.

Everything else — crops, held-out figures, codebook health, previews, report — is the codec
stage's (this stage is a `CodecStage` with another loss and a second optimizer).
"""
from __future__ import annotations

from pathlib import Path

import torch

from distill_live.model.codec import Codec

from . import distributed
from .codec_stage import CodecStage, spectral_loss
from .discriminators import Discriminator, discriminator_loss, generator_losses

ADVERSARIAL_WEIGHT = 0.1  # the hinge loss, next to spectral losses of about 1-2
MATCHING_WEIGHT = 1.0
DISCRIMINATOR_WIDTH = 16  # channels of the first layer of each sub-discriminator


class AdversarialStage(CodecStage):
    name = "adversarial"
    recon_name = "adversarial"
    loss_label = "train (spectral + mel + adversarial + feature matching)"

    def __init__(self, codec: Codec, dataset, batch_size: int, seed: int, device: torch.device, run_dir: Path,
                 lr: float):
        self.start_codec = codec
        super().__init__(codec.cfg, dataset, batch_size, seed, device, run_dir)
        self.disc_optimizer = torch.optim.AdamW(self.discriminator.parameters(), lr=lr, betas=(0.8, 0.99))

    def prepare_training(self) -> None:
        """Start from the trained codec, freeze its encoder and quantizer; DDP around the decoder and discriminator."""
        self.codec.load_state_dict(self.start_codec.state_dict())
        self.codec.encoder.requires_grad_(False)
        self.codec.quantizer.requires_grad_(False)
        self.discriminator = Discriminator(self.cfg.sample_rate, DISCRIMINATOR_WIDTH).to(self.device)
        self.ddp_decoder = distributed.wrap(self.codec.decoder, self.device)
        self.ddp_discriminator = distributed.wrap(self.discriminator, self.device)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"codec": self.codec, "discriminator": self.discriminator}

    def parameters(self) -> list:
        return list(self.codec.decoder.parameters())

    def train_step(self, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        self.codec.eval()  # encoder and quantizer frozen: no EMA updates, no quantizer dropout
        self.codec.decoder.train()
        audio, _, _ = self.sampler.batch(self.batch_size, distributed.rank(), distributed.world_size())
        audio = audio.to(self.device)
        levels = self.cfg.levels
        if torch.rand((), generator=self.gen) < self.cfg.quantizer_dropout:  # the decoder keeps decoding fewer levels
            levels = int(torch.randint(1, self.cfg.levels + 1, (), generator=self.gen))
        with torch.no_grad():
            latent = self.codec.latent(self.codec.encode(audio), levels)
        recon, _ = self.ddp_decoder(latent, self.codec.decoder.start(audio.shape[0]))
        target = audio[:, : recon.shape[1]]

        # the discriminator's step, with its own optimizer (the loop steps the decoder's); real and decoded
        # audio go through in one batch, since DDP allows one forward pass per backward pass
        judged = self.ddp_discriminator(torch.cat([target, recon.detach()]))
        n = len(target)
        disc = discriminator_loss([(x[:n], f) for x, f in judged], [(x[n:], f) for x, f in judged])
        self.disc_optimizer.zero_grad(set_to_none=True)
        disc.backward()
        torch.nn.utils.clip_grad_norm_(self.discriminator.parameters(), 1.0)
        self.disc_optimizer.step()

        spectral = spectral_loss(recon, target, self.cfg.sample_rate)
        with torch.no_grad():
            real = self.discriminator(target)
        adversarial, matching = generator_losses(real, self.ddp_discriminator(recon))
        loss = spectral + ADVERSARIAL_WEIGHT * adversarial + MATCHING_WEIGHT * matching
        return loss, {"spectral": spectral.item(), "adversarial": adversarial.item(), "matching": matching.item(),
                      "discriminator": disc.item()}

    def extra_tensors(self) -> dict:
        tensors = super().extra_tensors()
        for index, entries in self.disc_optimizer.state_dict()["state"].items():
            tensors.update({f"disc_optim.{index}.{k}": v for k, v in entries.items()})
        return tensors

    def load_extra_tensors(self, tensors: dict) -> None:
        super().load_extra_tensors(tensors)
        state: dict = {}
        for key, value in tensors.items():
            if key.startswith("disc_optim."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        groups = self.disc_optimizer.state_dict()["param_groups"]
        self.disc_optimizer.load_state_dict({"state": state, "param_groups": groups})

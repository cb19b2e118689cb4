"""Codec stage: fit the streaming RVQ codec to the performer's sounds.

Losses: multi-resolution STFT distance + multi-scale log-mel L1 (log floors relative to each
target crop's peak) + per-frame level L1 + commitment. Quantizer dropout
on a seeded share of the batches; k-means initialisation happens inside the quantizer on the
first real batch. Held-out loss is measured on whole held-out clips in eval mode; codebook health
is checked at every evaluation, with a warning when a level collapses.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from distill_live.model.codec import Codec
from distill_live.model.config import CodecConfig
from distill_train.losses import frame_level_distance, multi_resolution_stft_distance, multi_scale_mel_distance

from . import distributed
from .health import code_counts, codebook_health, collapse_warnings
from .loop import Stage
from .report import codec_report, safe_name, write_wav

CROP_FRAMES = 32  # frames per training crop (0.64 s at 50 frames/s)
VALID_MAX_FRAMES = 500  # each held-out clip is scored on at most its first 10 s (at 50 frames/s)
VALID_MAX_CLIPS = 16
HEALTH_MAX_FRAMES = 20000  # frames encoded for a health check during training
PREVIEWS = 3
PREVIEW_FRAMES = 400
# The training loss floors its log magnitudes at this share of each target crop's peak (-60 dB):
# with the fixed 1e-5 floor of the quality figures, near-silent bins dominate the log-L1 terms and a
# fresh codec learns one average spectrum for every input (see `distill_train.losses._floor`).
RELATIVE_FLOOR = 1e-3
# Weight of the per-frame level term (see `distill_train.losses.frame_level_distance`).
LEVEL_WEIGHT = 0.0  # 1-3 pulled the bright clip dark in tests/test_codec_learns.py; off until tuned


def spectral_loss(recon: torch.Tensor, target: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """The training loss less commitment: multi-resolution STFT + multi-scale mel (relative floor) + level."""
    return (multi_resolution_stft_distance(recon, target, sample_rate, relative_floor=RELATIVE_FLOOR)
            + multi_scale_mel_distance(recon, target, sample_rate, relative_floor=RELATIVE_FLOOR)
            + LEVEL_WEIGHT * frame_level_distance(recon, target))


class CodecStage(Stage):
    name = "codec"
    recon_name = "reconstruction"  # previews/<clip>-<recon_name>.wav
    loss_label = "train (spectral + mel + commitment)"

    def __init__(self, cfg: CodecConfig, dataset, batch_size: int, seed: int, device: torch.device, run_dir: Path):
        from distill_train.data import CropSampler

        self.cfg, self.dataset, self.batch_size, self.device, self.run_dir = cfg, dataset, batch_size, device, run_dir
        self.codec = Codec(cfg).to(device)
        self.prepare_training()
        self.sampler = CropSampler(dataset.train(), CROP_FRAMES, cfg.hop, seed, augment=True, descriptors=False)
        self.gen = torch.Generator().manual_seed(seed + 1)  # which batches use quantizer dropout
        valid = dataset.valid()
        self.valid_source = "held-out clips" if valid else "training clips (nothing could be held out)"
        self.valid_clips = (valid or dataset.train())[:VALID_MAX_CLIPS]
        self.health: list[dict] = []
        self.counts = np.zeros((cfg.levels, cfg.codebook_size), dtype=np.int64)

    def prepare_training(self) -> None:
        self.model = distributed.wrap(self.codec, self.device)  # what train_step calls (DDP under torchrun)

    def modules(self):
        return {"codec": self.codec}

    def train_step(self, step: int):
        self.codec.train()
        audio, _, _ = self.sampler.batch(self.batch_size, distributed.rank(), distributed.world_size())
        audio = audio.to(self.device)
        dropout = bool(torch.rand((), generator=self.gen) < self.cfg.quantizer_dropout)  # the same on every rank
        recon, _, commit = self.model(audio, quantizer_dropout=dropout)
        target = audio[:, : recon.shape[1]]
        stft = multi_resolution_stft_distance(recon, target, self.cfg.sample_rate, relative_floor=RELATIVE_FLOOR)
        mel = multi_scale_mel_distance(recon, target, self.cfg.sample_rate, relative_floor=RELATIVE_FLOOR)
        level = frame_level_distance(recon, target)
        loss = stft + mel + LEVEL_WEIGHT * level + commit
        return loss, {"stft": stft.item(), "mel": mel.item(), "level": level.item(), "commit": commit.item()}

    def _clip_audio(self, clip, frames: int) -> torch.Tensor:
        n = min(len(clip.audio) // self.cfg.hop, frames) * self.cfg.hop
        return torch.from_numpy(clip.audio[:n]).to(self.device)[None]

    @torch.no_grad()
    def evaluate(self, step: int) -> dict:
        self.codec.eval()
        stft, mel = [], []
        for clip in self.valid_clips:
            audio = self._clip_audio(clip, VALID_MAX_FRAMES)
            recon = self.codec.decode(self.codec.encode(audio))
            stft.append(float(multi_resolution_stft_distance(recon, audio, self.cfg.sample_rate)))
            mel.append(float(multi_scale_mel_distance(recon, audio, self.cfg.sample_rate)))
        self.check_health(step, warn=step > 1)
        self.codec.train()
        figures = {"valid": float(np.mean(stft) + np.mean(mel)), "stft": float(np.mean(stft)),
                   "mel": float(np.mean(mel))}
        figures.update({f"utilization{h['level']}": h["utilization"] for h in self.health})
        return figures

    @torch.no_grad()
    def check_health(self, step: int, warn: bool) -> None:
        """Codebook health on the held-out clips plus training clips, up to HEALTH_MAX_FRAMES frames."""
        codes, frames = [], 0
        for clip in self.dataset.valid() + self.dataset.train():
            if frames >= HEALTH_MAX_FRAMES:
                break
            c = self.codec.encode(self._clip_audio(clip, HEALTH_MAX_FRAMES - frames))[0]
            codes.append(c)
            frames += len(c)
        self.counts = code_counts(codes, self.cfg.levels, self.cfg.codebook_size)
        self.health = codebook_health(self.counts)
        if warn:
            for line in collapse_warnings(self.health):
                self.say(f"{self.name} step {step}: {line}")

    @torch.no_grad()
    def on_checkpoint(self, step: int, history: dict, final: bool) -> None:
        """Audio previews (held-out originals next to their reconstructions) and report-codec.png."""
        was_training = self.codec.training
        self.codec.eval()
        previews = self.run_dir / "previews"
        previews.mkdir(parents=True, exist_ok=True)
        first = None
        used = set()
        for clip in self.valid_clips[:PREVIEWS]:
            name = safe_name(Path(clip.path).stem)
            while name in used:
                name += "_"
            used.add(name)
            audio = self._clip_audio(clip, PREVIEW_FRAMES)
            recon = self.codec.decode(self.codec.encode(audio))[0].cpu().numpy()
            original = audio[0].cpu().numpy()
            write_wav(previews / f"{name}-original.wav", original, self.cfg.sample_rate)
            write_wav(previews / f"{name}-{self.recon_name}.wav", recon, self.cfg.sample_rate)
            if first is None:
                first = (original, recon)
        if not self.health:
            self.check_health(step, warn=False)
        codec_report(self.run_dir / f"report-{self.name}.png", history, self.health, self.counts,
                     first[0] if first else None, first[1] if first else None, self.cfg.sample_rate,
                     f"{self.name}, step {step}{' (final)' if final else ''}: {self.cfg.levels} levels x "
                     f"{self.cfg.codebook_size} codes", self.loss_label)
        self.codec.train(was_training)

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])

    def extra_tensors(self) -> dict:
        return {"quantizer_dropout_rng": self.gen.get_state()}

    def load_extra_tensors(self, tensors: dict) -> None:
        self.gen.set_state(tensors["quantizer_dropout_rng"])


@torch.no_grad()
def extract_codes(codec: Codec, clips, device: torch.device) -> list[torch.Tensor]:
    """Codes [frames, levels] of each whole clip, in eval mode (these are the cues)."""
    codec.eval()
    hop = codec.cfg.hop
    out = []
    for clip in clips:
        n = (len(clip.audio) // hop) * hop
        out.append(codec.encode(torch.from_numpy(clip.audio[:n]).to(device)[None])[0].cpu().long())
    return out


def recordings(clips, cues: list[torch.Tensor], hop: int) -> list[torch.Tensor]:
    """Each clip's audio as the model file keeps it for corpus playback: 16-bit, as many samples as its
    cue has frames (model/corpus.py plays frame i of a cue as samples [i * hop, (i + 1) * hop))."""
    return [torch.from_numpy(np.round(np.clip(clip.audio[:len(cue) * hop], -1.0, 32767 / 32768) * 32768)
                             .astype(np.int16)) for clip, cue in zip(clips, cues)]

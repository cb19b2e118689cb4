"""Random-weight models for tests that need a real model file but not a trained one.

A training forward pass runs the quantizer's k-means init, so the codebooks are not all zero
and the decoder makes sound."""
from __future__ import annotations

from pathlib import Path

import torch

from distill_live.model.codec import Codec
from distill_live.model.config import preset
from distill_live.model.modelfile import DistillModel, save_model
from distill_live.model.prior import Prior

WORLDS = ("bells", "noise")


def random_model(seed: int = 0, worlds=WORLDS, kind: str = "tiny", cues: int = 3) -> DistillModel:
    torch.manual_seed(seed)
    cfg = preset(kind)
    cfg.prior.worlds = len(worlds)
    c = cfg.codec
    codec = Codec(c)
    codec(torch.randn(4, c.hop * 40))
    return DistillModel(cfg, codec.eval(), Prior(cfg.prior, c.levels, c.codebook_size).eval(),
                        [torch.randint(c.codebook_size, (40, c.levels)) for _ in range(cues)],
                        {"manifest": {"worlds": list(worlds)}})


def random_model_file(path: Path, seed: int = 0, **kw) -> Path:
    save_model(path, random_model(seed, **kw))
    return path

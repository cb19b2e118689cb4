"""Random-weight models for tests that need a real model but not a trained one: all built one way,
by the same `random_model` that `distill-live bench preset:NAME` uses (random codebooks included,
so the decoder makes sound). A trained one is the session's `trained_model` (conftest.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from distill_live.model import modelfile
from distill_live.model.codec import Codec
from distill_live.model.modelfile import DistillModel, save_model

WORLDS = ("bells", "noise")


def random_model(seed: int = 0, worlds: Sequence[str] = WORLDS, kind: str = "tiny",
                 cues: int | Sequence[int] = 3) -> DistillModel:
    """A `kind`-preset model with these worlds and `cues` random passages of 40 frames (or of these lengths)."""
    return modelfile.random_model(kind, seed, worlds, [40] * cues if isinstance(cues, int) else cues)


def random_model_file(path: Path, seed: int = 0, **kw) -> Path:
    save_model(path, random_model(seed, **kw))
    return path


def random_codec(kind: str) -> Codec:
    """The codec of a random `kind`-preset model."""
    return random_model(kind=kind).codec

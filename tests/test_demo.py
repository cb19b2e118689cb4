"""The bundled demo model (distill_live/demo/demo.distill, made by scripts/make_demo.py): its worlds are really
different when played, and the tour score beside it plays on it.

The worlds test renders the model through a score that visits every world in turn and classifies
half-second windows of the render by their descriptors (loudness, brightness, noisiness, scaled
0..1 against the training set), nearest-centroid against references computed from the model's own
training passages (its cues, decoded by its codec, so no training audio is needed). If the prior
ignored the world it is told to play, the sections would sound alike and the classifier would
do no better than chance (1 in 4).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distill_live.control.params import ParamRegistry
from distill_live.control.score import load_score, parse_score
from distill_live.live.player import render
from distill_live.model.descriptors import DescriptorStats, frame_descriptors
from distill_live.model.modelfile import load_model

DEMO = Path(__file__).resolve().parents[1] / "distill_live" / "demo"
SECTION = 6.0  # seconds of each world in the test score
SETTLE = 1.0  # seconds skipped after each change of world (smoothing, the prior's memory)
WINDOW = 25  # frames per classified window (half a second at 50 frames/s)


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_model(DEMO / "demo.distill")


def _scale(raw) -> np.ndarray:
    out = np.array(raw, dtype=np.float64)
    out[..., 1] = np.log(np.maximum(out[..., 1], 1.0))  # brightness in octaves, as the model normalises it
    return out


def features(model, audio: np.ndarray) -> np.ndarray:
    """[frames, 3] descriptors on the training set's scale (0..1 = its 5th..95th percentiles).

    Unlike DescriptorStats.normalise, not clipped to 0..1 (only to -2..3, so silent frames do not
    swamp a window): this small codec plays its tonal worlds quieter than the training audio, and
    clipping would squash their loudness differences to 0."""
    c = model.config.codec
    stats = DescriptorStats.from_dict(model.meta["descriptor_stats"])
    lo, hi = _scale(stats.lo), _scale(stats.hi)
    raw = frame_descriptors(audio, c.hop, c.sample_rate)
    return np.clip((_scale(raw) - lo) / (hi - lo), -2.0, 3.0)


def windows(feats: np.ndarray) -> np.ndarray:
    """[windows, 6]: each half second's mean and spread of the three descriptors."""
    n = len(feats) // WINDOW
    w = feats[: n * WINDOW].reshape(n, WINDOW, -1)
    return np.concatenate([w.mean(axis=1), w.std(axis=1)], axis=-1)


def references(model) -> tuple[np.ndarray, np.ndarray]:
    """Each world's centroid [worlds, 6] of the windows of its training passages (the cues, decoded by
    the model's codec), and the pooled spread of windows within a world [6] (the distance's units)."""
    files = model.meta["manifest"]["files"]
    assert len(files) == len(model.cues)
    per_world: dict[str, list[np.ndarray]] = {w: [] for w in model.worlds}
    with torch.inference_mode():
        for entry, cue in zip(files, model.cues):
            audio = model.codec.decode(cue[None])[0].numpy()
            per_world[entry["world"]].append(windows(features(model, audio)))
    groups = [np.concatenate(per_world[w]) for w in model.worlds]
    spread = np.sqrt(np.mean(np.concatenate([g - g.mean(axis=0) for g in groups]) ** 2, axis=0))
    return np.stack([g.mean(axis=0) for g in groups]), np.maximum(spread, 1e-3)


def visiting_score(worlds: list[str]) -> str:
    lines = ["0 /distill/temperature 0.9", "0 /distill/guidance 2"]  # guidance 2: steer firmly
    for i, world in enumerate(worlds):
        lines += [f"{i * SECTION:g} /distill/world/{w} {int(w == world)}" for w in worlds]
    return "\n".join(lines)


def test_every_world_is_recognisable_by_its_descriptors(model):
    worlds = model.worlds
    assert len(worlds) >= 4
    registry = ParamRegistry.for_model(model)
    messages = parse_score(visiting_score(worlds), registry, source="test score")
    with torch.inference_mode():
        audio = render(model, SECTION * len(worlds), seed=0, messages=messages, registry=registry)
    feats = features(model, audio)
    fps = model.config.codec.frame_rate
    refs, spread = references(model)
    refs = refs / spread  # distances in units of the spread within a world
    # the references themselves must be apart, or the test would prove nothing
    gaps = np.linalg.norm(refs[:, None] - refs[None], axis=-1)[~np.eye(len(worlds), dtype=bool)]
    assert gaps.min() > 0.5, f"the worlds' training passages are too alike: {np.round(refs, 2)}"

    confusion = np.zeros((len(worlds), len(worlds)), int)
    means = []
    for i in range(len(worlds)):
        section = feats[int((i * SECTION + SETTLE) * fps): int((i + 1) * SECTION * fps)]
        w = windows(section) / spread
        means.append(w.mean(axis=0))
        guess = np.linalg.norm(w[:, None] - refs[None], axis=-1).argmin(axis=1)
        confusion[i] = np.bincount(guess, minlength=len(worlds))
    report = "\n".join(f"  {w:>10}: " + " ".join(f"{n:3d}" for n in row) + f"   mean {np.round(m, 2)}  ref "
                       f"{np.round(r, 2)}" for w, row, m, r in zip(worlds, confusion, means, refs))
    accuracy = np.trace(confusion) / confusion.sum()
    # each world's render as a whole is nearest to its own world's training passages ...
    nearest = [int(np.linalg.norm(refs - m, axis=-1).argmin()) for m in means]
    assert nearest == list(range(len(worlds))), f"render sections nearest to the wrong worlds:\n{report}"
    # ... and most half-second windows are too (chance is 1 in len(worlds))
    print(f"{accuracy:.0%} of windows recognised\n{report}")
    assert accuracy >= 0.6, f"only {accuracy:.0%} of windows recognised (rows: asked, columns: heard):\n{report}"


def test_the_tour_score_parses_against_the_models_registry(model):
    registry = ParamRegistry.for_model(model)
    messages = load_score(DEMO / "tour.score", registry)
    addresses = {address for _, address, _ in messages}
    for world in model.worlds:  # it visits every world
        assert f"/distill/world/{world}" in addresses
        assert any(a == f"/distill/world/{world}" and args == (1.0,) for _, a, args in messages)
    assert {"/distill/cue", "/distill/freeze"} <= addresses
    assert any(a.startswith("/distill/descriptor/") for a in addresses)


def test_the_demo_model_is_small_and_complete(model):
    assert (DEMO / "demo.distill").stat().st_size < 5_000_000
    assert model.prior is not None and len(model.cues) >= 20

"""Each control moves a trained model's output in the expected direction.

The model is the session's `trained_model` (tests/conftest.py): a tiny model trained by the real
CLI on two synthetic worlds that differ in every descriptor, 'bells' (bright decaying partials, struck
with a burst of noise) and 'rumble' (dark low noise) (tests/worlds.py). bench/steering.py trains the
same model with ten seeds and reports the effects these tests measure.
"""
from __future__ import annotations

import numpy as np
import pytest

from distill_live.live.player import Player, render
from distill_live.model.modelfile import load_model
from worlds import TARGETS, descriptors_of, loudness_db, play, world_distances, world_references


@pytest.fixture(scope="session")
def trained(trained_model):
    return load_model(trained_model), trained_model.parent.parent


def held(model, descriptor: str) -> dict[float, np.ndarray]:
    """The settled output with `descriptor` held low and high (guidance 2), pooled over the render seeds."""
    return {target: play(model, [(0, f"/distill/descriptor/{descriptor}", (target,)), (0, "/distill/guidance", (2.0,))])
            for target in TARGETS}


def test_brightness_target_moves_the_spectral_centroid(trained):
    model, _ = trained
    centroids = {t: descriptors_of(audio, model)[1] for t, audio in held(model, "brightness").items()}
    assert centroids[0.95] > centroids[0.05] * 1.2, centroids


def test_loudness_target_moves_the_level(trained):
    model, _ = trained
    levels = {t: loudness_db(audio, model) for t, audio in held(model, "loudness").items()}
    assert levels[0.95] > levels[0.05] + 20 * np.log10(1.2), levels  # frames x1.2 louder, on average


def test_noisiness_target_moves_the_spectral_flatness(trained):
    model, _ = trained
    flatness = {t: descriptors_of(audio, model)[2] for t, audio in held(model, "noisiness").items()}
    assert flatness[0.95] > flatness[0.05] * 1.2, flatness


def test_world_weight_pulls_towards_that_worlds_sound(trained):
    model, root = trained
    references = world_references(model, root / "data")
    for world in model.worlds:
        got = descriptors_of(play(model, [(0, f"/distill/world/{world}", (1.0,))]), model)
        distances = world_distances(got, references)
        assert min(distances, key=distances.get) == world, (world, distances, got, references)


def test_freeze_repeats_the_last_frames(trained):
    model, _ = trained
    player = Player(model, seed=2)
    player.registry.submit("/distill/play", [1])
    player.registry.submit("/distill/loop", [5])
    for _ in range(20):
        player.next_frame()
    player.registry.submit("/distill/freeze", [1])
    codes = []
    for _ in range(20):
        player.next_frame()
        codes.append(player.last_codes.tolist())
    assert codes[:5] == codes[5:10] == codes[10:15]
    assert len({tuple(c) for c in codes[:5]}) > 1  # a loop, not one held frame


def test_fewer_levels_change_the_output_and_leave_fine_levels_empty(trained):
    model, _ = trained
    full = render(model, 2, seed=1)
    coarse = render(model, 2, seed=1, messages=[(0, "/distill/levels", (1,))])
    assert not np.allclose(full, coarse)
    player = Player(model, seed=1)
    player.registry.submit("/distill/play", [1])
    player.registry.submit("/distill/levels", [1])
    player.next_frame()
    assert player.last_codes[0] >= 0 and (player.last_codes[1:] == -1).all()


def test_lock_follows_the_cue_on_coarse_levels(trained):
    model, _ = trained
    player = Player(model, seed=3)
    reg = player.registry
    for address, args in (("/distill/play", [1]), ("/distill/cue", [1, 0.0]), ("/distill/lock", [2])):
        reg.submit(address, args)
    got = []
    for _ in range(10):
        player.next_frame()
        got.append(player.last_codes[:2].tolist())
    cue = model.cues[1]
    # the jump plays the passage's frame 0 and primes the prior with it; locked levels then follow
    # the passage from frame 1 on
    assert got == cue[0:10, :2].tolist()


@pytest.mark.parametrize("levels", [None, 2])
def test_a_cue_jump_opens_with_the_passages_first_frame(trained, levels):
    """The frame a cue jump starts with is the passage's own first frame (its coarse levels when fewer
    are played). Sampled by the prior, all eight levels would not come out as the passage's."""
    model, _ = trained
    player = Player(model, seed=3)
    reg = player.registry
    reg.submit("/distill/play", [1])
    if levels is not None:
        reg.submit("/distill/levels", [levels])
    for _ in range(3):
        player.next_frame()
    reg.submit("/distill/cue", [1, 0.0])
    player.next_frame()
    cue = model.cues[1]
    expected = cue[0].clone()
    if levels is not None:
        expected[levels:] = -1
    assert player.last_codes.tolist() == expected.tolist()


def test_temperature_zero_is_deterministic_whatever_the_seed(trained):
    model, _ = trained
    a = render(model, 1, seed=1, messages=[(0, "/distill/temperature", (0.0,))])
    b = render(model, 1, seed=2, messages=[(0, "/distill/temperature", (0.0,))])
    c = render(model, 1, seed=1)
    d = render(model, 1, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(c, d)

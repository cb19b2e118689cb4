"""bench/measures.py, the measures of bench/quality.py and bench/corpus.py, on synthetic signals whose answer
is known: a collection of held notes, the same notes cut into 16 ms frames and shuffled, tones and bursts."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distill_live.model.modelfile import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from measures import WorldEar, blur, excerpt_flatness, flatness, frechet, self_similarity, window_stats  # noqa: E402

RATE = 16000


def notes(seconds: float, seed: int, low: float = 110.0, high: float = 880.0, held: float = 1.0) -> np.ndarray:
    """A take of the collection: harmonic notes held `held` to twice that (seconds) each, pitches drawn
    between `low` and `high`."""
    rng = np.random.default_rng(seed)
    out = []
    while sum(map(len, out)) < seconds * RATE:
        t = np.arange(int(rng.uniform(held, 2 * held) * RATE)) / RATE
        f = rng.uniform(low, high)
        tone = sum(np.sin(2 * np.pi * f * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
        out.append(0.2 * tone * np.minimum(1, t / 0.02) * np.exp(-t * 0.5))
    return np.concatenate(out)[: int(seconds * RATE)].astype(np.float32)


def shuffled_frames(audio: np.ndarray, seed: int, frame: int = 256) -> np.ndarray:
    """The same audio, its 16 ms frames in random order: the same colour, none of the motion."""
    frames = audio[: len(audio) // frame * frame].reshape(-1, frame)
    return frames[np.random.default_rng(seed).permutation(len(frames))].reshape(-1)


def noise_hits(seconds: float, seed: int, every: float = 1 / 3) -> np.ndarray:
    """Another world: bright noise bursts 60 ms long, one `every` seconds."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * RATE), np.float32)
    burst = int(0.06 * RATE)
    for start in range(0, len(out) - burst, int(every * RATE)):
        hit = rng.standard_normal(burst) * np.exp(-np.arange(burst) / (0.02 * RATE))
        out[start:start + burst] = 0.3 * np.diff(hit, prepend=0)  # differentiated: bright
    return out


def one_second(audio: np.ndarray) -> np.ndarray:
    return window_stats(audio, RATE, 1.0, 0.5).statistics()


def test_a_copy_of_real_audio_scores_at_the_floor_and_shuffled_frames_far_from_it():
    train, held_out = notes(60, seed=1), notes(40, seed=2)
    floor = frechet(one_second(train), one_second(held_out))
    assert frechet(one_second(held_out.copy()), one_second(held_out)) < 1e-3 * floor
    shuffled = frechet(one_second(shuffled_frames(train, seed=3)), one_second(held_out))
    # held notes and their frames in random order have the same spectrum on average; one-second
    # windows tell them apart by how the spectrum moves within the second
    assert shuffled > 3 * floor
    # another take of the same notes, a different seed, stays near the floor
    assert frechet(one_second(notes(60, seed=4)), one_second(held_out)) < 2 * floor


def test_motion_is_what_tells_shuffled_frames_apart():
    held = window_stats(notes(40, seed=2), RATE)
    shuffled = window_stats(shuffled_frames(notes(40, seed=2), seed=3), RATE)
    # within a held note the spectrum barely changes from frame to frame; shuffled, it jumps every frame
    assert shuffled.change.mean() > 2 * held.change.mean()


def test_silent_windows_are_left_out():
    audio = np.concatenate([notes(3, seed=1), np.zeros(2 * RATE, np.float32), notes(3, seed=2)])
    assert len(window_stats(audio, RATE)) == 6
    assert len(window_stats(np.zeros(3 * RATE, np.float32), RATE)) == 0
    assert len(window_stats(notes(0.5, seed=1), RATE)) == 0  # shorter than a window


def test_a_steady_tone_lasts_and_noise_does_not():
    t = np.arange(6 * RATE) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for lag in (0.5, 2.0):
        similarity, pairs = self_similarity([tone], RATE, lag)
        assert similarity > 0.97 and pairs > 100
        bursts, _ = self_similarity([noise_hits(6, seed=1, every=0.7)], RATE, lag)  # 0.7 s: lags fall between
        assert bursts < 0.6
        hiss, _ = self_similarity([0.1 * np.random.default_rng(0).standard_normal(6 * RATE)], RATE, lag)
        assert abs(hiss) < 0.2  # white noise has no shape to keep, only random ripple
    # only within files: a file shorter than the lag adds nothing
    assert self_similarity([tone[: RATE // 4]], RATE, 0.5) == (None, 0)


def test_notes_held_for_seconds_last_longer_than_a_restless_patchwork():
    for lag in (0.5, 2.0):
        held, _ = self_similarity([notes(30, seed=1, held=2.0)], RATE, lag)
        restless, _ = self_similarity([notes(30, seed=1, held=0.2)], RATE, lag)  # a new note every 0.2-0.4 s
        assert held > restless + 0.1, lag


def test_flatness_tells_tones_from_noise():
    t = np.arange(2 * RATE) / RATE
    tone = flatness((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), RATE)
    noise = flatness((0.1 * np.random.default_rng(0).standard_normal(2 * RATE)).astype(np.float32), RATE)
    assert tone < 0.05 and noise > 0.4
    assert flatness(np.zeros(RATE, np.float32), RATE) is None


def test_a_stretch_of_a_world_is_as_noisy_as_the_world_only_when_its_files_are_alike():
    """A world of a held tone and a burst of noise: a stretch shorter than both holds mostly one of them, and
    its flatness lands far from the world's; a stretch of a world of one steady sound lands on it."""
    t = np.arange(3 * RATE) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    noise = (0.1 * np.random.default_rng(0).standard_normal(3 * RATE)).astype(np.float32)
    unlike = np.array(excerpt_flatness([tone, noise], RATE, seconds=1.0, trials=20))
    assert len(unlike) == 20
    assert (np.abs(unlike - 1) > 0.25).mean() >= 0.75  # most stretches are mostly tone or mostly noise
    assert unlike.min() < 0.75 and unlike.max() > 1.25
    alike = np.array(excerpt_flatness([noise[:RATE], noise[RATE:]], RATE, seconds=1.0, trials=20))
    assert np.all(np.abs(alike - 1) <= 0.25)
    # a world shorter than the stretch plays again to fill it
    assert len(excerpt_flatness([noise[:RATE // 2]], RATE, seconds=2.0, trials=3)) == 3


def test_blur_tells_partials_spread_from_hiss_added():
    """A codec that spreads a tone's partials lowers their peaks and keeps about as many deep bins;
    one that adds hiss raises the floor and leaves few deep bins; a perfect codec changes nothing."""
    t = np.arange(2 * RATE) / RATE
    partials = [(440.0 * k, 1 / k) for k in range(1, 6)]
    tone = sum(a * np.sin(2 * np.pi * f * t) for f, a in partials).astype(np.float32)
    rng = np.random.default_rng(0)
    # half of each partial's amplitude, and noise shaped into a 40 Hz wide skirt around it
    freqs = np.fft.rfftfreq(len(t), 1 / RATE)
    shape = sum(a * np.exp(-0.5 * ((freqs - f) / 40.0) ** 2) for f, a in partials)
    skirts = np.fft.irfft(np.fft.rfft(rng.standard_normal(len(t))) * shape, len(t))
    spread = (0.5 * tone + 0.5 * tone.std() * skirts / skirts.std()).astype(np.float32)
    hiss = (tone + 0.03 * rng.standard_normal(len(t))).astype(np.float32)

    same = blur(tone, tone)
    assert same["peaks_db"] == pytest.approx(0, abs=1e-6) and same["floor_db"] == pytest.approx(0, abs=1e-6)
    blurred = blur(tone, spread)
    assert blurred["peaks_db"] < -1.5
    assert blurred["deep_share_through"] == pytest.approx(blurred["deep_share_real"], abs=0.1)
    noisy = blur(tone, hiss)
    assert noisy["floor_db"] > 20 and abs(noisy["peaks_db"]) < 0.5
    assert noisy["deep_share_through"] < noisy["deep_share_real"] / 2
    assert blur(tone, np.zeros_like(tone)) is None


def test_the_ear_recognises_two_different_worlds_whatever_their_level():
    ear = WorldEar([notes(30, seed=1, high=220), noise_hits(30, seed=1)], RATE)
    for world, audio in enumerate([notes(10, seed=5, high=220), noise_hits(10, seed=5)]):
        for gain in (1.0, 0.1):  # colour has the level removed: a quieter take is the same world
            heard = ear.heard(gain * audio)
            for kind in WorldEar.KINDS:
                assert len(heard[kind]) == 10
                assert np.mean(heard[kind] == world) >= 0.9, (world, gain, kind)


def test_the_ear_with_motion_tells_held_notes_from_their_frames_shuffled():
    # two worlds of the same notes: held, and cut into shuffled frames
    ear = WorldEar([notes(40, seed=1), shuffled_frames(notes(40, seed=2), seed=3)], RATE)
    held, shuffled = ear.heard(notes(20, seed=4)), ear.heard(shuffled_frames(notes(20, seed=5), seed=6))
    assert np.mean(held["colour_and_motion"] == 0) >= 0.9
    assert np.mean(shuffled["colour_and_motion"] == 1) >= 0.9


def test_the_cross_validated_ear_hears_files_it_never_heard_and_skips_a_world_of_one_file():
    tones = [notes(3, seed=s, high=220) for s in range(8)]
    hits = [noise_hits(3, seed=s) for s in range(8)]
    alone = [notes(3, seed=9, low=2000, high=3000)]  # one file: nothing left to learn from when it is left out
    counts = WorldEar.cross_validated([tones, hits, alone], RATE)
    for kind in WorldEar.KINDS:
        right, windows = counts[kind]
        assert windows == 2 * 8 * 3  # every second of the 16 files of the two worlds, none of the lone one
        assert right >= 0.9 * windows, kind


@pytest.mark.slow  # uses the session's trained model (a minute to train, shared) and renders a few seconds
def test_quality_bench_reports_every_group_with_its_targets(trained_model):
    import quality

    data = trained_model.parent.parent / "data"
    result = json.loads(json.dumps(quality.measure(trained_model, data, seconds=4, world_seconds=3)))
    codec, structure, worlds = result["codec"], result["structure"], result["worlds"]
    spectral = codec["spectral"]
    assert set(spectral) == {"codec", "opus_6kbps", "opus_12kbps", "opus_24kbps"}
    assert spectral["opus_6kbps"]["stft_distance"] > spectral["opus_24kbps"]["stft_distance"] > 0
    if importlib.util.find_spec("visqol") is None:  # the bench extra (scripts/setup.sh --bench-data)
        assert "not installed" in codec["visqol_mos_lqo_48khz"]
    else:
        mos = codec["visqol_mos_lqo_48khz"]
        assert 1 <= mos["opus_6kbps"] < mos["opus_24kbps"] <= 5  # more bits, heard as better
        assert isinstance(codec["done_when"]["pass"], bool)
    distance = structure["frechet_1s_windows"]
    assert set(distance) == {"generated", "floor_training_audio", "unigram_codes", "shuffled_training_codes"}
    assert all(d > 0 for d in distance.values())
    for lag in ("0.5s", "2s"):
        assert 0 < structure["self_similarity"][lag]["real"] <= 1
        assert 0 < structure["self_similarity"][lag]["real_files_in_sequence"] <= 1
    assert set(structure["done_when"]) == {"frechet_generated_minus_floor_over_best_baseline_minus_floor",
                                           "frechet_pass", "self_similarity_pass"}
    assert set(worlds["per_world"]) == {"bells", "rumble"}
    # the ceiling: the held-out file of these two unlike worlds is heard as its own world by colour
    assert worlds["by_colour"]["real_held_out"] == 1.0
    assert 0 <= worlds["by_colour_and_motion"]["real_held_out"] <= 1
    # ... and so is every file, heard by an ear that never heard it (the ratio's ceiling)
    assert worlds["by_colour"]["real_cross_validated"] == 1.0
    assert worlds["by_colour"]["windows"]["real_cross_validated"] > worlds["by_colour"]["windows"]["real_held_out"]
    assert worlds["by_colour"]["ratio"] == worlds["by_colour"]["generated"]
    for row in worlds["per_world"].values():
        assert 0 < row["flatness_generated"] < 1 and 0 < row["flatness_real"] < 1 and row["flatness_ratio"] > 0
        assert row["flatness_codec_ratio"] > 0
        assert 0 <= row["flatness_own_stretches_within"] <= 1
    within, rows = worlds["worlds_flatness_within_25pct"], worlds["per_world"].values()
    assert within["generated"] == sum(abs(row["flatness_ratio"] - 1) <= 0.25 for row in rows)
    assert within["recordings_own_stretches"] == pytest.approx(sum(row["flatness_own_stretches_within"] for row in rows),
                                                               abs=0.01)
    assert set(worlds["done_when"]) == {"by_colour_pass", "by_colour_and_motion_pass", "flatness_pass"}


@pytest.mark.slow  # uses the session's trained model
def test_quality_bench_plays_every_render_with_the_controls_it_is_given(trained_model):
    import quality

    data = trained_model.parent.parent / "data"
    plain = quality.measure(trained_model, data, seconds=4, world_seconds=3, codec=False)
    greedy = quality.measure(trained_model, data, seconds=4, world_seconds=3, codec=False,
                             settings=[quality.setting("temperature=0")])
    assert "codec" not in plain and greedy["controls"] == {"/distill/temperature": (0.0,)}
    # the most likely code every frame: another stretch of sound, beside the same references
    assert greedy["structure"]["frechet_1s_windows"]["generated"] != plain["structure"]["frechet_1s_windows"]["generated"]
    assert greedy["structure"]["frechet_1s_windows"]["floor_training_audio"] == \
        plain["structure"]["frechet_1s_windows"]["floor_training_audio"]


@pytest.mark.slow  # uses the session's trained model
def test_codec_noise_bench_reports_each_world_through_the_codec(trained_model):
    import codec_noise

    data = trained_model.parent.parent / "data"
    result = json.loads(json.dumps(codec_noise.codec_noise(trained_model, data)))
    assert set(result["worlds"]) == {"bells", "rumble"}
    for row in result["worlds"].values():
        assert row["flatness_ratio"] > 0
        assert set(row["blur"]) == {"peaks_db", "floor_db", "deep_share_real", "deep_share_through"}
        assert 0 <= row["blur"]["deep_share_real"] <= 1
    assert result["median_flatness_ratio"] in [row["flatness_ratio"] for row in result["worlds"].values()]
    assert 0 <= result["worlds_within_25_percent"] <= 2 and result["codec_steps"] > 0


@pytest.mark.slow  # uses the session's trained model
def test_codec_noise_bench_decodes_the_levels_it_is_asked_for(trained_model):
    import codec_noise
    import quality

    model = load_model(trained_model)
    audio = np.random.default_rng(0).standard_normal(model.config.codec.hop * 20).astype(np.float32) * 0.1
    with torch.inference_mode():
        played = {n: quality.through_codec(model, audio, n) for n in (None, 1, quality.LATENT)}
    assert {len(x) for x in played.values()} == {len(audio)}
    assert not np.allclose(played[None], played[1]) and not np.allclose(played[None], played[quality.LATENT])
    data = trained_model.parent.parent / "data"
    rows = [codec_noise.codec_noise(trained_model, data, n) for n in (None, 1, quality.LATENT)]
    assert [row["levels"] for row in rows] == [model.config.codec.levels, 1, quality.LATENT]
    assert len({row["median_flatness_ratio"] for row in rows}) == 3

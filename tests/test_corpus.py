"""Corpus playback (model/corpus.py): the codes played as the training recordings they point at.

The test model is a random `tiny` model whose cues are given recordings of steady sines (a different
pitch and phase each), so a hard cut between two of them is a step far larger than any step inside
one, and whose coarse codes are all different, so each frame has exactly one nearest frame."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from distill_live.control.params import ParamError, ParamRegistry
from distill_live.live.audioinput import AudioInput
from distill_live.live.player import Player, render
from distill_live.model.modelfile import FORMAT_VERSION, ModelFileError, load_model, save_model
from models import random_model

P = "/distill"
FRAMES = (40, 55, 30)
AMPLITUDE = 0.5


def sine_model(seed: int = 0):
    model = random_model(seed, cues=FRAMES)
    c = model.config.codec
    rng = np.random.default_rng(seed)
    pairs = rng.permutation(c.codebook_size ** 2)[: sum(FRAMES)]  # coarse codes (levels 0 and 1), all different
    model.cues, model.recordings, at = [], [], 0
    for frames in FRAMES:
        codes = torch.from_numpy(rng.integers(c.codebook_size, size=(frames, c.levels)))
        codes[:, 0] = torch.from_numpy(pairs[at:at + frames] // c.codebook_size)
        codes[:, 1] = torch.from_numpy(pairs[at:at + frames] % c.codebook_size)
        at += frames
        t = np.arange(frames * c.hop) / c.sample_rate
        wave = AMPLITUDE * np.sin(2 * np.pi * rng.uniform(150, 700) * t + rng.uniform(0, 2 * np.pi))
        model.cues.append(codes.long())
        model.recordings.append(torch.from_numpy(np.round(wave * 32767).astype(np.int16)))
    model.meta["manifest"]["files"] = [{"world": w} for w in ("bells", "noise", "bells")]
    return model


@pytest.fixture(scope="module")
def model():
    return sine_model()


def recording(model, i: int) -> np.ndarray:
    return model.recordings[i].numpy().astype(np.float32) / 32768.0


def play(corpus, codes, **kw) -> tuple[np.ndarray, int]:
    return played(corpus, codes, **kw)[:2]


def played(corpus, codes, **kw) -> tuple[np.ndarray, int, list[int]]:
    """Audio, jumps, and the corpus frame played at each frame."""
    state, out, frames = corpus.start(), [], []
    for frame in codes:
        audio, state = corpus.play(state, frame, **kw)
        out.append(audio)
        frames.append(state.frame)
    return np.concatenate(out), state.jumps, frames


def foreign_codes(model, frames: int, seed: int = 1) -> torch.Tensor:
    """Codes that match no frame of the corpus exactly (fresh random ones)."""
    c = model.config.codec
    return torch.randint(c.codebook_size, (frames, c.levels), generator=torch.Generator().manual_seed(seed))


def test_a_training_files_own_codes_play_back_its_recording_sample_for_sample(model):
    for i in range(len(FRAMES)):
        out, jumps = play(model.corpus, model.cues[i], stick=1.0, fade=0.01)
        assert jumps == 0  # to its last frame
        np.testing.assert_allclose(out, recording(model, i), atol=1e-6)
    # not only at the maximum stick: exact codes are always the nearest, and continuing wins a tie
    out, jumps = play(model.corpus, model.cues[1], stick=0.0, fade=0.01)
    np.testing.assert_allclose(out, recording(model, 1), atol=1e-6)


def test_a_recording_left_at_its_end_fades_out_without_a_step(model):
    # an abrupt ending: file 1's codes then file 0's; the fade at the join plays file 1's last samples
    # backwards, where silence after them (or a cut) steps by the last sample's full value
    codes = torch.cat([model.cues[1], model.cues[0]])
    out, _, frames = played(model.corpus, codes, stick=1.0, fade=0.01)
    join = len(model.cues[1])
    assert model.corpus.left[frames[join - 1]] == 0 and model.corpus.left[frames[join]] == len(model.cues[0]) - 1
    hop, end = model.config.codec.hop, len(recording(model, 1))
    np.testing.assert_allclose(out[:end], recording(model, 1), atol=1e-6)
    calm = max(np.abs(np.diff(recording(model, i))).max() for i in range(len(FRAMES)))
    assert np.abs(np.diff(out[end - hop:end + hop])).max() <= calm * 1.1
    assert abs(recording(model, 1)[-1]) > 2 * calm  # the recording ends abruptly: a cut to silence would step


def test_jumps_crossfade_without_a_click(model):
    out, jumps = play(model.corpus, foreign_codes(model, 300), stick=0.5, fade=0.01)
    assert jumps >= 10  # the codes match nothing: it must jump, and each join is checked below
    calm = max(np.abs(np.diff(recording(model, i))).max() for i in range(len(FRAMES)))
    steps = np.abs(np.diff(out))
    # a hard cut between two sines can step by up to twice their amplitude; the fade (10 ms) adds at most
    # 2 * AMPLITUDE / fade length to the steepest step inside a recording
    assert steps.max() <= calm * 1.1, (steps.max(), calm)
    assert np.abs(out).max() <= AMPLITUDE * 1.01  # aligned, in-phase joins: no bump in level either


def test_stick_sets_how_long_a_recording_plays_before_a_jump(model):
    codes = foreign_codes(model, 300)
    jumps = [play(model.corpus, codes, stick=s, fade=0.005)[1] for s in (0.0, 0.5, 0.9, 1.0)]
    assert jumps[0] > jumps[1] > jumps[2] >= jumps[3], jumps
    # at the maximum it leaves a recording only where it ends: at its last frame, or at the one before
    # when a jump's alignment started it up to ALIGN later (a whole frame would then run past the end)
    _, _, frames = played(model.corpus, codes, stick=1.0, fade=0.005)
    for before, after in zip(frames, frames[1:]):
        assert after == before + 1 or model.corpus.left[before] <= 1, (before, after)


def test_weighted_worlds_are_preferred(model):
    codes = foreign_codes(model, 200)
    def share_of_bells(weights):
        state, frames = model.corpus.start(), []
        for frame in codes:
            _, state = model.corpus.play(state, frame, stick=0.0, world_weights=weights)
            frames.append(state.frame)
        return np.mean(model.corpus.world[frames] == 0)
    assert share_of_bells([1.0, 0.0]) > share_of_bells(None) > share_of_bells([0.0, 1.0])


def test_a_corpus_render_is_deterministic_and_plays_the_recordings(model):
    quiet = (0.0, f"{P}/gain", (0.1,))  # no peak reaches the soft clip, so mixes add up
    corpus = [quiet, (0.0, f"{P}/corpus/mix", (1.0,))]
    a = render(model, 1.5, seed=3, messages=corpus)
    b = render(model, 1.5, seed=3, messages=corpus)
    neural = render(model, 1.5, seed=3, messages=[quiet])
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, neural[: len(a)])
    assert np.abs(a).max() <= 0.1 * AMPLITUDE * 1.01  # only the sines: nothing of the neural decoder's sound
    half = render(model, 1.5, seed=3, messages=[quiet, (0.0, f"{P}/corpus/mix", (0.5,))])
    np.testing.assert_allclose(half, (a + neural) / 2, atol=1e-5)  # the mix crossfades the two decoders


def test_recordings_round_trip_and_info_says_how_big(model, tmp_path):
    path = tmp_path / "corpus.distill"
    save_model(path, model)
    loaded = load_model(path)
    for mine, theirs in zip(model.recordings, loaded.recordings):
        assert torch.equal(mine, theirs)
    info = loaded.info()
    assert info["format_version"] == FORMAT_VERSION == 2
    samples = sum(FRAMES) * model.config.codec.hop
    assert info["corpus"] == {"seconds": round(samples / model.config.codec.sample_rate, 3), "bytes": 2 * samples}


def test_a_model_without_recordings_refuses_the_corpus_controls_in_one_sentence(tmp_path):
    path = tmp_path / "bare.distill"
    save_model(path, random_model())
    registry = ParamRegistry.for_model(load_model(path))
    with pytest.raises(ParamError) as e:
        registry.submit(f"{P}/corpus/mix", [1.0])
    message = str(e.value)
    assert "holds no recordings" in message and "\n" not in message
    assert f"{P}/corpus/mix" in message


def test_old_model_files_load_and_play_without_a_corpus():
    demo = load_model(Path(__file__).resolve().parents[1] / "distill_live" / "demo" / "demo.distill")
    assert demo.meta["format_version"] == 1 and demo.recordings == [] and demo.corpus is None
    assert demo.info()["corpus"] is None
    assert np.isfinite(render(demo, 0.2)).all()


# -- damage to the recordings is refused at load, like any other ------------------------------------

@pytest.fixture(scope="module")
def saved(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("corpus") / "good.distill"
    save_model(path, model)
    return path


def refused(path) -> str:
    with pytest.raises(ModelFileError) as e:
        load_model(path)
    message = str(e.value)
    assert str(path) in message and "\n" not in message, message
    return message


def test_a_damaged_recording_is_refused(saved, tmp_path):
    raw = bytearray(saved.read_bytes())
    header, n = _header(raw)
    start, _ = header["corpus.1"]["data_offsets"]
    raw[8 + n + start + 101] ^= 0x40
    bad = tmp_path / "flipped.distill"
    bad.write_bytes(bytes(raw))
    assert "damaged" in refused(bad)


def test_a_truncated_recording_is_refused(saved, tmp_path):
    raw = saved.read_bytes()
    header, n = _header(raw)
    start, _ = header["corpus.1"]["data_offsets"]
    bad = tmp_path / "cut.distill"
    bad.write_bytes(raw[:8 + n + start + 1000])  # cut in the middle of a recording
    assert "truncated" in refused(bad)


def test_a_recording_of_the_wrong_length_is_refused(tmp_path):
    model = sine_model()
    model.recordings[2] = model.recordings[2][:-5]
    path = tmp_path / "short.distill"
    save_model(path, model)
    assert "recording of cue 2" in refused(path)


def test_a_missing_recording_is_refused(saved, tmp_path):
    tensors = load_file(saved)
    del tensors["corpus.0"]
    with open(saved, "rb") as f:
        meta = _header(f.read())[0]["__metadata__"]
    bad = tmp_path / "missing.distill"
    save_file(tensors, bad, metadata=meta)
    assert "missing" in refused(bad)


def _header(raw: bytes) -> tuple[dict, int]:
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), n


def test_resynthesis_through_the_corpus_plays_the_recording_nearest_the_input():
    """serve --input in resynth mode with corpus/mix 1: a sine at one of the recordings' pitches, played
    into the input, comes out as that recording (the other recordings are other pitches)."""
    model = random_model(cues=(50, 50, 50))
    c = model.config.codec
    t = np.arange(50 * c.hop) / c.sample_rate
    pitches = (200.0, 450.0, 1000.0)
    waves = [AMPLITUDE * np.sin(2 * np.pi * f * t) for f in pitches]
    model.recordings = [torch.from_numpy(np.round(w * 32767).astype(np.int16)) for w in waves]
    model.cues = [model.codec.encode(torch.from_numpy(w.astype(np.float32))[None])[0] for w in waves]
    feed = AudioInput(1, c.sample_rate, c.sample_rate, c.hop)
    played = (AMPLITUDE * np.sin(2 * np.pi * pitches[1] * t[: 30 * c.hop] + 1.0)).astype(np.float32)
    feed.callback(played[:, None], len(played), None, None)
    feed.pull()
    registry = ParamRegistry.for_model(model, audio_input=True)
    registry.submit(f"{P}/play", [1])
    registry.submit(f"{P}/corpus/mix", [1.0])
    registry.submit(f"{P}/corpus/stick", [0.2])  # three recordings: a wrong one is 1/3 down the list at most
    player = Player(model, registry, audio_input=feed)
    out = np.concatenate([player.next_frame() for _ in range(30)])[10 * c.hop:]
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    heard = np.fft.rfftfreq(len(out), 1 / c.sample_rate)[spectrum.argmax()]
    assert abs(heard - pitches[1]) < 10, heard

"""The data pipeline on real files written here and decoded by libsndfile, and the descriptors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from audiofiles import FORMATS, corrupt, empty, header_only, nan_wav, noise, sine, write
from distill_live.model.descriptors import DESCRIPTORS, DescriptorStats, frame_descriptors
from distill_train.data import CropSampler, DatasetError, load_dataset

SR, HOP = 16000, 320  # the tiny preset's rate: 50 frames/s
CROP = 32  # frames


def load(root, **kw):
    lines: list[str] = []
    kw.setdefault("min_seconds", 0.5)
    return load_dataset(root, SR, HOP, crop_frames=CROP, log=lines.append, **kw), lines


# ---------------------------------------------------------------- formats

@pytest.mark.parametrize("kind", list(FORMATS))
def test_each_format_decodes_to_mono_at_the_model_rate(tmp_path, kind):
    ext = FORMATS[kind][0]
    write(tmp_path / f"tone{ext}", sine(1000, 1.0, 44100, channels=2), 44100, kind)
    ds, lines = load(tmp_path)
    assert lines == [] and ds.skipped == []
    [clip] = ds.clips
    assert clip.path == f"tone{ext}" and clip.audio.dtype == np.float32 and clip.audio.ndim == 1
    assert abs(len(clip.audio) - SR) <= HOP  # 1 s, within one frame
    spectrum = np.abs(np.fft.rfft(clip.audio))
    assert np.argmax(spectrum) * SR / len(clip.audio) == pytest.approx(1000, abs=5)  # the pitch survived resampling
    assert np.abs(clip.audio).max() <= 0.99
    assert 20 * np.log10(np.sqrt(np.mean(clip.audio ** 2))) == pytest.approx(-20, abs=0.1)
    assert clip.descriptors.shape == (len(clip.audio) // HOP, 3)


def test_extensions_are_case_insensitive_and_others_ignored(tmp_path):
    write(tmp_path / "LOUD.WAV", sine(440, 1.0, SR), SR)
    write(tmp_path / "b.Flac", sine(440, 1.0, SR), SR, "flac")
    (tmp_path / "notes.txt").write_text("not audio")
    write(tmp_path / ".hidden.wav", sine(440, 1.0, SR), SR)
    write(tmp_path / ".cache" / "c.wav", sine(440, 1.0, SR), SR)
    ds, lines = load(tmp_path)
    assert sorted(c.path for c in ds.clips) == ["LOUD.WAV", "b.Flac"]
    assert lines == []


# ---------------------------------------------------------------- bad files

def test_each_bad_file_is_skipped_with_one_line_naming_it_and_why(tmp_path):
    write(tmp_path / "good.wav", sine(440, 3.0, SR), SR)
    corrupt(tmp_path / "corrupt.wav")
    empty(tmp_path / "empty.wav")
    header_only(tmp_path / "header.wav")
    write(tmp_path / "silent.wav", np.zeros(SR), SR)
    nan_wav(tmp_path / "nan.wav")
    (tmp_path / "readme.txt").write_text("hello")
    ds, lines = load(tmp_path)
    assert {c.path for c in ds.clips} == {"good.wav"}
    expected = {"corrupt.wav": "corrupt", "empty.wav": "empty", "header.wav": "zero length",
                "silent.wav": "silent", "nan.wav": "NaN"}
    assert dict(ds.skipped).keys() == expected.keys()
    assert len(lines) == len(expected)
    for name, why in expected.items():
        [line] = [line for line in lines if name in line]
        assert why in line and "\n" not in line
        assert why in dict(ds.skipped)[name]
    assert not any("readme" in line for line in lines)
    assert ds.manifest()["skipped"] == [{"path": p, "reason": r} for p, r in ds.skipped]


def test_a_format_this_libsndfile_cannot_read_is_skipped_as_unsupported(tmp_path, monkeypatch):
    write(tmp_path / "a.wav", sine(440, 1.0, SR), SR)
    write(tmp_path / "b.mp3", sine(440, 1.0, SR), SR, "mp3")
    formats = {k: v for k, v in sf.available_formats().items() if k != "MP3"}
    monkeypatch.setattr(sf, "available_formats", lambda: formats)
    ds, lines = load(tmp_path)
    assert [c.path for c in ds.clips] == ["a.wav"]
    assert len(lines) == 1 and "b.mp3" in lines[0] and "unsupported format" in lines[0]


def test_silence_is_trimmed_from_both_ends(tmp_path):
    quiet = np.zeros(SR // 2)
    write(tmp_path / "a.wav", np.concatenate([quiet, sine(440, 1.0, SR), quiet]), SR, "wavfloat")
    ds, _ = load(tmp_path)
    assert abs(len(ds.clips[0].audio) - SR) <= SR // 100  # within one 10 ms trim window


# ---------------------------------------------------------------- short files, too little audio

def test_short_files_are_zero_padded_to_one_crop_not_dropped(tmp_path):
    write(tmp_path / "long.wav", noise(3.0, SR), SR)
    write(tmp_path / "blip.wav", sine(880, 0.1, SR), SR)
    ds, lines = load(tmp_path, valid_fraction=0)
    blip = next(c for c in ds.clips if c.path == "blip.wav")
    assert lines == [] and len(blip.audio) == CROP * HOP
    sounding = np.flatnonzero(np.abs(blip.audio) > 1e-4)
    assert sounding[-1] < 0.1 * SR + 2 and np.all(blip.audio[int(0.1 * SR) + 2:] == 0)
    assert len(blip.descriptors) == CROP


def test_too_little_audio_raises_with_the_numbers(tmp_path):
    write(tmp_path / "a.wav", sine(440, 0.4, SR), SR)
    write(tmp_path / "b.wav", sine(440, 0.4, SR), SR)
    corrupt(tmp_path / "c.wav")
    with pytest.raises(DatasetError) as e:
        load_dataset(tmp_path, SR, HOP, log=lambda _: None)
    message = str(e.value)
    assert "0.8 s" in message and "2 of 3 files" in message and "2.0 s" in message and str(tmp_path) in message


def test_a_folder_with_no_usable_audio_raises(tmp_path):
    corrupt(tmp_path / "a.wav")
    with pytest.raises(DatasetError, match="0 of 1 files"):
        load_dataset(tmp_path, SR, HOP, log=lambda _: None)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DatasetError, match="no audio files"):
        load_dataset(tmp_path / "nothing", SR, HOP)


# ---------------------------------------------------------------- worlds

def test_subfolders_are_worlds_and_loose_root_files_get_the_root_name(tmp_path):
    root = tmp_path / "my sounds"
    write(root / "drums" / "kick.wav", noise(0.5, SR), SR)
    write(root / "drums" / "deeper" / "snare.wav", noise(0.5, SR), SR)
    write(root / "pads" / "warm.wav", sine(220, 1.0, SR), SR)
    write(root / "loose.wav", sine(330, 1.0, SR), SR)
    ds, _ = load(root)
    world = {c.path: ds.worlds[c.world] for c in ds.clips}
    assert world == {"loose.wav": "my_sounds", "drums/kick.wav": "drums", "drums/deeper/snare.wav": "drums",
                     "pads/warm.wav": "pads"}
    assert ds.manifest()["worlds"] == ds.worlds and len(ds.worlds) == 3


def test_without_subfolders_every_file_is_a_world(tmp_path):
    for name in ("kick.wav", "kick.flac", "hat.wav"):
        write(tmp_path / name, noise(0.5, SR), SR, "flac" if name.endswith("flac") else "wav16")
    ds, _ = load(tmp_path)
    assert sorted(ds.worlds) == ["hat", "kick", "kick-2"]
    assert sorted(c.world for c in ds.train()) == [0, 1, 2]


# ---------------------------------------------------------------- validation split

def world_folder(root, files_per_world):
    seed = 0
    for w, n in files_per_world.items():
        for i in range(n):
            seed += 1
            write(root / w / f"{w}{i}.wav", noise(0.7, SR, seed=seed), SR)


def test_validation_holds_out_whole_files_deterministically(tmp_path):
    world_folder(tmp_path, {"a": 12, "b": 7, "solo": 1})
    ds, _ = load(tmp_path)
    valid, train = {c.path for c in ds.valid()}, {c.path for c in ds.train()}
    assert len(valid) == 2 and not valid & train and len(valid | train) == 20
    assert "solo/solo0.wav" in train
    again, _ = load(tmp_path)
    assert {c.path for c in again.valid()} == valid
    choices = {frozenset(c.path for c in load(tmp_path, seed=s)[0].valid()) for s in range(5)}
    assert len(choices) > 1
    manifest = json.loads(json.dumps(ds.manifest()))
    assert sorted(f["path"] for f in manifest["files"] if f["split"] == "valid") == sorted(valid)


def test_the_only_file_of_a_world_is_never_held_out(tmp_path):
    world_folder(tmp_path, {"a": 2, "b": 1, "c": 1, "d": 1})
    for seed in range(6):
        ds, _ = load(tmp_path, seed=seed)
        assert [c.path for c in ds.valid()] in (["a/a0.wav"], ["a/a1.wav"])


def test_with_few_files_validation_is_the_tail_of_each_file(tmp_path):
    write(tmp_path / "take.wav", noise(10.0, SR), SR)
    whole, _ = load(tmp_path, valid_fraction=0)
    ds, _ = load(tmp_path)
    [train], [valid] = ds.train(), ds.valid()
    assert train.path == valid.path == "take.wav"
    assert len(valid.audio) % HOP == 0 and abs(len(valid.audio) - SR) <= HOP  # 10 % of 10 s
    np.testing.assert_array_equal(np.concatenate([train.audio, valid.audio]), whole.clips[0].audio)


# ---------------------------------------------------------------- descriptors

def test_descriptor_frames_are_causal_and_counted_by_hop():
    x = noise(1.0, SR).astype(np.float32)
    d = frame_descriptors(x[:10 * HOP + 100], HOP, SR)
    assert d.shape == (10, 3) and d.dtype == np.float32
    changed = x.copy()
    changed[6 * HOP:] = 0
    np.testing.assert_array_equal(frame_descriptors(changed, HOP, SR)[:6], frame_descriptors(x, HOP, SR)[:6])
    assert frame_descriptors(x[:HOP - 1], HOP, SR).shape == (0, 3)


def test_loudness_is_rms_in_db():
    for amp in (0.5, 0.05):
        loud = frame_descriptors(sine(1000, 0.5, SR, amp), HOP, SR)[2:, 0]
        np.testing.assert_allclose(loud, 20 * np.log10(amp / np.sqrt(2)), atol=0.2)
    assert np.all(frame_descriptors(np.zeros(SR), HOP, SR)[:, 0] == -100)


def test_brightness_follows_pitch():
    low, high = (frame_descriptors(sine(f, 0.5, SR), HOP, SR)[2:, 1] for f in (200, 4000))
    assert np.all(high > 4 * low)
    np.testing.assert_allclose(np.median(low), 200, rtol=0.1)
    np.testing.assert_allclose(np.median(high), 4000, rtol=0.05)


def test_noise_is_noisier_than_a_sine():
    tone = frame_descriptors(sine(1000, 0.5, SR), HOP, SR)[2:, 2]
    hiss = frame_descriptors(noise(0.5, SR), HOP, SR)[2:, 2]
    assert tone.max() < 0.05 and hiss.min() > 0.3 and np.all(hiss <= 1)


def test_stats_fit_percentiles_of_sounding_frames_and_normalise_to_unit_range():
    rng = np.random.default_rng(0)
    n = 20000
    raw = np.stack([rng.uniform(-40, 0, n), np.exp(rng.uniform(np.log(100), np.log(10000), n)),
                    rng.uniform(0, 1, n)], -1)
    silence = np.tile([[-100.0, 0.0, 1.0]], (5000, 1))
    stats = DescriptorStats.fit([raw[: n // 2], raw[n // 2:], silence])
    np.testing.assert_allclose(stats.lo, [-38, 100 * 100 ** 0.05, 0.05], rtol=0.03)
    np.testing.assert_allclose(stats.hi, [-2, 100 * 100 ** 0.95, 0.95], rtol=0.03)
    # brightness is normalised on a log scale: the geometric middle of lo and hi is 0.5
    middle = [(stats.lo[0] + stats.hi[0]) / 2, np.sqrt(stats.lo[1] * stats.hi[1]), (stats.lo[2] + stats.hi[2]) / 2]
    np.testing.assert_allclose(stats.normalise(np.array(middle)), 0.5, atol=1e-5)
    norm = stats.normalise(raw)
    assert norm.dtype == np.float32 and norm.min() == 0 and norm.max() == 1
    inside = np.all((norm > 0) & (norm < 1), axis=-1)
    np.testing.assert_allclose(stats.denormalise(norm[inside]), raw[inside], rtol=1e-4)
    assert DescriptorStats.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats
    assert list(stats.to_dict()) == [*DESCRIPTORS, "window"] and stats.window == 1


def test_dataset_descriptors_are_normalised_against_training_frames(tmp_path):
    write(tmp_path / "dark" / "a.wav", sine(150, 1.0, SR), SR)
    write(tmp_path / "bright" / "b.wav", noise(1.0, SR), SR)
    ds, _ = load(tmp_path, valid_fraction=0)
    by_world = {ds.worlds[c.world]: c.descriptors[2:].mean(0) for c in ds.clips}
    assert all(0 <= v <= 1 for c in ds.clips for v in c.descriptors.ravel())
    assert by_world["bright"][1] > by_world["dark"][1] + 0.5
    assert by_world["bright"][2] > by_world["dark"][2] + 0.5
    assert DescriptorStats.from_dict(ds.stats.to_dict()) == ds.stats


# ---------------------------------------------------------------- crop sampler

@pytest.fixture
def two_clips(tmp_path):
    write(tmp_path / "short.wav", noise(1.0, SR, seed=1), SR, "wavfloat")
    swell = np.geomspace(0.01, 1, 10 * SR)  # 40 dB of loudness range, so descriptors are not all clipped
    write(tmp_path / "long.wav", noise(10.0, SR, seed=2) * swell, SR, "wavfloat")
    ds, _ = load(tmp_path, valid_fraction=0)
    return ds


def find_crop(ds, audio):
    """(clip, sample offset) where this crop was cut from."""
    for clip in ds.clips:
        hits = [o for o in range(len(clip.audio) - len(audio) + 1) if clip.audio[o] == audio[0]
                and np.array_equal(clip.audio[o:o + len(audio)], audio)]
        if hits:
            return clip, hits[0]
    raise AssertionError("crop not found in any clip")


def test_crops_are_frame_aligned_slices_with_their_descriptors(two_clips):
    ds = two_clips
    audio, world, desc = CropSampler(ds.clips, CROP, HOP, seed=3).batch(8)
    assert audio.shape == (8, CROP * HOP) and world.shape == (8,) and desc.shape == (8, CROP, 3)
    assert (audio.dtype, world.dtype, desc.dtype) == (torch.float32, torch.int64, torch.float32)
    for b in range(8):
        clip, offset = find_crop(ds, audio[b].numpy())
        assert offset % HOP == 0
        assert world[b] == clip.world
        np.testing.assert_array_equal(desc[b].numpy(), clip.descriptors[offset // HOP: offset // HOP + CROP])


def test_crops_come_from_files_in_proportion_to_their_length(two_clips):
    ds = two_clips
    long_world = next(c.world for c in ds.clips if c.path == "long.wav")
    _, world, _ = CropSampler(ds.clips, CROP, HOP, seed=0).batch(3000)
    frames = {c.path: len(c.audio) // HOP for c in ds.clips}
    share = frames["long.wav"] / sum(frames.values())
    assert (world == long_world).float().mean().item() == pytest.approx(share, abs=0.03)


def test_sampler_is_deterministic_and_resumes_exactly(two_clips):
    ds = two_clips
    a, b = CropSampler(ds.clips, CROP, HOP, seed=7), CropSampler(ds.clips, CROP, HOP, seed=7)
    for x, y in zip(a.batch(4), b.batch(4)):
        assert x.equal(y)
    assert not CropSampler(ds.clips, CROP, HOP, seed=8).batch(4)[0].equal(CropSampler(ds.clips, CROP, HOP, seed=7).batch(4)[0])
    state = json.loads(json.dumps(a.state_dict()))
    expected = [a.batch(4) for _ in range(3)]
    resumed = CropSampler(ds.clips, CROP, HOP, seed=123)
    resumed.load_state_dict(state)
    for want in expected:
        for x, y in zip(want, resumed.batch(4)):
            assert x.equal(y)


def test_augmentation_changes_gain_and_polarity_and_loudness_follows(two_clips):
    ds = two_clips
    plain = CropSampler(ds.clips, CROP, HOP, seed=5).batch(16)
    aug = CropSampler(ds.clips, CROP, HOP, seed=5, augment=True, stats=ds.stats, sample_rate=SR).batch(16)
    assert aug[1].equal(plain[1])  # same crops, transformed
    ratio = (aug[0] / plain[0]).numpy()
    gains = ratio[:, 0]
    np.testing.assert_allclose(ratio, np.broadcast_to(gains[:, None], ratio.shape), rtol=1e-4)
    assert np.all(np.abs(20 * np.log10(np.abs(gains))) <= 6 + 1e-4)
    assert (gains > 0).any() and (gains < 0).any()
    span = ds.stats.hi[0] - ds.stats.lo[0]
    before = plain[2][..., 0].numpy()
    expected = np.clip(before + (20 * np.log10(np.abs(gains)) / span)[:, None], 0, 1)
    inside = (before > 0) & (before < 1)  # where clipping hid nothing, the shift is exact
    assert inside.mean() > 0.5
    np.testing.assert_allclose(aug[2][..., 0].numpy()[inside], expected[inside], atol=2e-3)
    np.testing.assert_allclose(aug[2][..., 1:].numpy(), plain[2][..., 1:].numpy(), atol=2e-3)

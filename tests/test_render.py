"""Offline render through the real CLI: determinism, file formats, scores and their errors."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from models import random_model_file

pytestmark = pytest.mark.slow  # runs distill-live render


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return random_model_file(tmp_path_factory.mktemp("model") / "m.distill")


def live(*args):
    return subprocess.run([sys.executable, "-m", "distill_live", *map(str, args)], capture_output=True, text=True)


SCORE = """# a small score
0.0  /distill/world/bells 1
0.5  /distill/temperature 0.7
0.8  /distill/cue 2 0.1
1.2  /distill/freeze 1
"""


def test_same_seed_and_score_give_the_same_samples(model_path, tmp_path):
    score = tmp_path / "score.txt"
    score.write_text(SCORE)
    outs = []
    for name, seed in (("a.wav", 3), ("b.wav", 3), ("c.wav", 4)):
        r = live("render", model_path, "-o", tmp_path / name, "--seconds", 1.5, "--seed", seed, "--score", score)
        assert r.returncode == 0, r.stderr
        outs.append(sf.read(tmp_path / name, dtype="int32")[0])
    assert np.array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])
    assert np.abs(outs[0]).max() > 0


def test_default_file_is_48k_24bit_wav_and_flac_by_extension(model_path, tmp_path):
    for name, fmt in (("x.wav", "WAV"), ("x.flac", "FLAC")):
        r = live("render", model_path, "-o", tmp_path / name, "--seconds", 0.5)
        assert r.returncode == 0, r.stderr
        info = sf.info(tmp_path / name)
        assert (info.format, info.subtype, info.samplerate) == (fmt, "PCM_24", 48000)
        assert abs(info.frames - 24000) <= 1


def test_set_changes_the_output(model_path, tmp_path):
    # (a random model can be loud: both renders at low gain, so neither clips)
    base = live("render", model_path, "-o", tmp_path / "a.wav", "--seconds", 1, "--set", "gain=0.2")
    quiet = live("render", model_path, "-o", tmp_path / "b.wav", "--seconds", 1, "--set", "gain=0.05")
    assert base.returncode == quiet.returncode == 0
    a, b = sf.read(tmp_path / "a.wav")[0], sf.read(tmp_path / "b.wav")[0]
    a, b = a[len(a) // 5:], b[len(b) // 5:]  # after the gain has settled (it is smoothed from its default)
    assert np.abs(a).max() < 0.99
    assert np.sqrt(np.mean(b ** 2)) == pytest.approx(0.25 * np.sqrt(np.mean(a ** 2)), rel=0.05)


@pytest.mark.parametrize("line, words", [
    ("1.0 /distill/nonsense 1", ["line 2", "unknown address /distill/nonsense"]),
    ("1.0 /distill/temperature 7", ["line 2", "out of range"]),
    ("soon /distill/play 1", ["line 2", "not a time"]),
    ("1.0", ["line 2", "address is missing"]),
    ("1.0 /distill/cue 99", ["line 2", "out of range"]),
    ("1.0 /distill/gain loud", ["line 2", "takes one number"]),
])
def test_bad_score_stops_before_rendering_and_names_the_line(model_path, tmp_path, line, words):
    score = tmp_path / "bad.txt"
    score.write_text(f"0 /distill/play 1\n{line}\n")
    out = tmp_path / "never.wav"
    r = live("render", model_path, "-o", out, "--seconds", 1, "--score", score)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    for w in words:
        assert w in r.stderr
    assert not out.exists()


def test_missing_model_is_one_sentence(tmp_path):
    r = live("render", tmp_path / "nope.distill", "-o", tmp_path / "x.wav")
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr

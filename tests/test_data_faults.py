"""Bad audio files among good ones: each is skipped with one line naming it and saying why, and training
goes on with the rest; when every file is bad, distill-train ends with one sentence and exit code 2.

Real files written here and read by libsndfile: random bytes, a header with no frames, an empty file,
all-NaN and all-inf float WAVs, a 64-channel WAV, sample rates of 1 Hz, 768 kHz and 8 MHz, a broken
link and a named pipe. A 1 Hz file is the dangerous one: resampled to 16 kHz it would grow 16000-fold,
so it must be refused from its header, before decoding.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiofiles import corrupt, empty, header_only, noise, sine, write
from distill_train.data import load_dataset

ROOT = Path(__file__).resolve().parents[1]
SR, HOP = 16000, 320


def float_wav(path: Path, value: float, seconds: float = 1.0) -> Path:
    sf.write(path, np.full(int(SR * seconds), value, np.float32), SR, subtype="FLOAT")
    return path


def bad_files(folder: Path) -> dict[str, str]:
    """Write every kind of bad file into folder; returns name -> a word its skip reason must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    corrupt(folder / "corrupt.wav")
    header_only(folder / "no-frames.wav")
    empty(folder / "empty.flac")
    float_wav(folder / "all-nan.wav", np.nan)
    float_wav(folder / "all-inf.wav", np.inf)
    sf.write(folder / "channels-64.wav", sine(440, 0.5, SR, channels=64).astype(np.float32), SR, subtype="PCM_16")
    sf.write(folder / "rate-1hz.wav", sine(0.1, 4000, 1).astype(np.float32), 1, subtype="PCM_16")  # 4000 samples
    sf.write(folder / "rate-768k.wav", sine(440, 0.5, 768000).astype(np.float32), 768000, subtype="PCM_16")
    sf.write(folder / "rate-8mhz.wav", sine(440, 0.01, 8000000).astype(np.float32), 8000000, subtype="PCM_16")
    os.symlink(folder / "gone.wav", folder / "broken-link.wav")
    reasons = {"corrupt.wav": "corrupt", "no-frames.wav": "zero length", "empty.flac": "empty",
               "all-nan.wav": "NaN", "all-inf.wav": "infinite", "channels-64.wav": "64 channels",
               "rate-1hz.wav": "sample rate 1 Hz", "rate-768k.wav": "sample rate 768000 Hz",
               "rate-8mhz.wav": "sample rate 8000000 Hz", "broken-link.wav": "not a regular file"}
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "pipe.wav")  # reading it would wait for a writer forever
        reasons["pipe.wav"] = "not a regular file"
    return reasons


def good_files(folder: Path) -> list[str]:
    write(folder / "tone.wav", sine(330, 2.0, SR), SR)
    write(folder / "hiss.flac", noise(2.0, SR, seed=4), SR, "flac")
    write(folder / "stereo.wav", sine(550, 1.5, 44100, channels=2), 44100)
    return ["tone.wav", "hiss.flac", "stereo.wav"]


def check_skip_lines(lines: list[str], reasons: dict[str, str]) -> None:
    skips = [line for line in lines if line.startswith("skipped ")]
    assert len(skips) == len(reasons), "\n".join(lines)
    for name, why in reasons.items():
        [line] = [line for line in skips if line.startswith(f"skipped {name}: ")]
        assert why in line and "\n" not in line, line


def test_each_bad_file_is_skipped_with_one_line_and_the_rest_are_used(tmp_path):
    reasons = bad_files(tmp_path)
    good = good_files(tmp_path)
    lines: list[str] = []
    ds = load_dataset(tmp_path, SR, HOP, crop_frames=32, min_seconds=0.5, log=lines.append)
    assert sorted({c.path for c in ds.clips}) == sorted(good)
    assert dict(ds.skipped).keys() == reasons.keys()
    check_skip_lines(lines, reasons)


def test_absurd_rates_and_channel_counts_are_refused_from_the_header(tmp_path, monkeypatch):
    """The header is enough: nothing of these files is decoded (a 1 Hz file would be resampled 16000-fold)."""
    bad_files(tmp_path / "bad")
    read = []
    real_read = sf.read
    monkeypatch.setattr(sf, "read", lambda path, *a, **k: read.append(Path(path).name) or real_read(path, *a, **k))
    with pytest.raises(Exception):
        load_dataset(tmp_path / "bad", SR, HOP, log=lambda _: None)
    assert not {"channels-64.wav", "rate-1hz.wav", "rate-768k.wav", "rate-8mhz.wav"} & set(read), read


@pytest.mark.slow  # trains a model
def test_training_goes_on_with_the_good_files(tmp_path):
    data = tmp_path / "data"
    reasons = bad_files(data)
    good = good_files(data)
    out = tmp_path / "m.distill"
    r = subprocess.run([sys.executable, "-m", "distill_train", str(data), "-o", str(out), "--preset", "tiny",
                        "--stages", "codec", "--steps", "2", "--batch-size", "2", "--eval-every", "2",
                        "--checkpoint-every", "100", "--quiet"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    check_skip_lines(r.stderr.splitlines(), reasons)
    from distill_live.model.modelfile import load_model

    manifest = load_model(out).meta["manifest"]
    assert sorted({f["path"] for f in manifest["files"]}) == sorted(good)
    assert sorted(s["path"] for s in manifest["skipped"]) == sorted(reasons)


def test_when_every_file_is_bad_one_sentence_and_exit_2(tmp_path, capsys):
    from distill_train.cli import main

    reasons = bad_files(tmp_path / "data")
    out = tmp_path / "m.distill"
    assert main([str(tmp_path / "data"), "-o", str(out), "--preset", "tiny"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    check_skip_lines(lines[:-1], reasons)
    last = lines[-1]
    assert last.startswith("distill-train: ") and f"0 of {len(reasons)} files usable" in last, last
    assert last.count(". ") == 0 and "Traceback" not in last
    assert not out.exists() and not out.with_name(out.name + ".run").exists()

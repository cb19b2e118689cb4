"""Real audio files for tests: signals, every format distill reads, the broken files it must survive, and
the training tests' collection of sounds (one way to make a folder of them)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

# kind -> (extension, soundfile format, subtype)
FORMATS = {
    "wav16": (".wav", "WAV", "PCM_16"),
    "wav24": (".wav", "WAV", "PCM_24"),
    "wavfloat": (".wav", "WAV", "FLOAT"),
    "flac": (".flac", "FLAC", "PCM_16"),
    "aiff": (".aiff", "AIFF", "PCM_16"),
    "ogg": (".ogg", "OGG", "VORBIS"),
    "mp3": (".mp3", "MP3", "MPEG_LAYER_III"),
}


def sine(freq: float, seconds: float, sr: int, amp: float = 0.5, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    mono = amp * np.sin(2 * np.pi * freq * t)
    return mono if channels == 1 else np.stack([mono] * channels, axis=1)


def noise(seconds: float, sr: int, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    return amp * np.random.default_rng(seed).uniform(-1, 1, int(round(seconds * sr)))


def write(path: Path, audio: np.ndarray, sr: int, kind: str = "wav16") -> Path:
    """Write audio in one of FORMATS; MP3 goes through ffmpeg when this libsndfile cannot encode it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _, fmt, subtype = FORMATS[kind]
    if fmt == "MP3" and "MP3" not in sf.available_formats():
        _write_mp3_ffmpeg(path, audio, sr)
    else:
        sf.write(path, audio, sr, format=fmt, subtype=subtype)
    return path


def _write_mp3_ffmpeg(path: Path, audio: np.ndarray, sr: int) -> None:
    wav = path.with_suffix(".tmp.wav")
    sf.write(wav, audio, sr, subtype="PCM_16")
    subprocess.run([shutil.which("ffmpeg") or "ffmpeg", "-y", "-loglevel", "error", "-i", wav, "-b:a", "192k", path],
                   check=True)
    wav.unlink()


def corrupt(path: Path, size: int = 4000) -> Path:
    """Random bytes under an audio name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def empty(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def header_only(path: Path, sr: int = 16000) -> Path:
    """A valid WAV header announcing zero frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(0, np.float32), sr, subtype="PCM_16")
    return path


def nan_wav(path: Path, sr: int = 16000, seconds: float = 1.0) -> Path:
    """A float WAV that is fine except for a run of NaN samples."""
    audio = sine(440, seconds, sr).astype(np.float32)
    audio[len(audio) // 2: len(audio) // 2 + 100] = np.nan
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sr, subtype="FLOAT")
    return path


# -- the training tests' collection ----------------------------------------------------------------

SR = 16000  # the tiny preset's rate


def bells(seconds: float, pitch: float, rng, sr: int = SR) -> np.ndarray:
    """A bell struck every 0.6 s: three decaying partials, slightly detuned at random."""
    t = np.arange(int(seconds * sr)) / sr
    out = np.zeros_like(t)
    for start in np.arange(0, seconds, 0.6):  # a strike every 0.6 s
        u = np.clip(t - start, 0, None)
        on = t >= start
        for ratio, decay in ((1.0, 3.0), (2.76, 5.0), (5.4, 8.0)):
            f = pitch * ratio * (1 + 0.01 * rng.standard_normal())
            out += on * np.sin(2 * np.pi * f * u) * np.exp(-decay * u) / ratio
    return 0.3 * out


def filtered_noise(seconds: float, cutoff: float, rng, sr: int = SR) -> np.ndarray:
    """Noise through a low-pass at `cutoff` Hz, swelling at 1.3 Hz."""
    n = int(seconds * sr)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    spectrum *= 1 / (1 + (freqs / cutoff) ** 4)
    x = np.fft.irfft(spectrum, n)
    t = np.arange(n) / sr
    return 0.3 * x / np.abs(x).max() * (0.6 + 0.4 * np.sin(2 * np.pi * 1.3 * t))


def bells_and_hiss(root: Path, count: int, seconds: float, seed: int, worlds: bool = True,
                   pitch_step: float = 1 / 4, cutoff: float = 500.0, hiss: str = "flac") -> Path:
    """`count` bells (bell{i}.wav, rising by `pitch_step` octaves from 330 Hz) and as many hisses
    (hiss{i}.flac or .wav, cutoff doubling from `cutoff`), in worlds `bells/` and `noise/` or side by
    side in `root`. The same arguments give the same files."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        bell = bells(seconds, 330 * 2 ** (i * pitch_step), rng).astype(np.float32)
        noise = filtered_noise(seconds, cutoff * 2 ** i, rng).astype(np.float32)
        write(root / ("bells" if worlds else "") / f"bell{i}.wav", bell, SR)
        write(root / ("noise" if worlds else "") / f"hiss{i}.{hiss}", noise, SR, "flac" if hiss == "flac" else "wav16")
    return root

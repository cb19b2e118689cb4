"""Real audio files for tests: signals, every format distill reads, and the broken files it must survive."""
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

"""From a folder of a performer's sounds to training crops.

Rules, in the order a file meets them:

- Audio is every .wav .flac .aif .aiff .ogg .mp3 file (any case) under the root, in sorted
  order; hidden files and folders (name starting with ".") are ignored.
- Each file is decoded with soundfile, mixed to mono, resampled with soxr to the model rate,
  trimmed of leading and trailing silence (10 ms windows more than 60 dB below the file's
  loudest window), set to -20 dBFS RMS and then turned down if needed so no peak exceeds 0.99.
- A file that cannot be used is skipped with one log line saying why: not a regular file
  (a broken link, a pipe), unreadable or corrupt, a format this libsndfile cannot read, empty,
  zero length, a sample rate outside 4 kHz .. 384 kHz, more than 32 channels, more than 2 GiB
  once decoded, NaN/inf samples, or silent (no sample above -60 dBFS). The header is read
  first, so such a file is refused before it is decoded or resampled.
- Files shorter than one training crop are zero-padded at the end, never dropped: most short
  files are one-shots (hits, plucks) that really do end in silence, and repeating them would
  invent a rhythm and a click at the seam.
- Worlds: each subfolder of the root is a world, with everything below it. Files lying directly
  in the root next to subfolders form one more world named after the root folder. With no
  subfolders at all, every file is its own world, named by its file stem. Names are made safe
  for OSC addresses (spaces and OSC special characters become "_") and made unique ("kick",
  "kick-2").
- Validation: about `valid_fraction` of the files (at least one) are held out whole, chosen by
  seed, never the last training file of its world. When that is impossible — fewer than 4
  usable files, or every world is a single file — the last `valid_fraction` of each file (at
  least one crop, in whole frames) is held out instead, for files long enough to leave a
  crop for training; files too short for that stay whole in training.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import soxr
import torch

from distill_live.model.descriptors import DescriptorStats, frame_descriptors

AUDIO_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".aif": "AIFF", ".aiff": "AIFF", ".ogg": "OGG", ".mp3": "MP3"}
SILENT_DBFS = -60.0  # a file whose every sample is below this is silent
TRIM_DB = 60.0  # trimmed edges are this far below the file's loudest 10 ms
TARGET_DBFS = -20.0  # RMS level every file is set to
PEAK = 0.99
MIN_VALID_FILES = 4  # below this, validation takes the tail of each file instead of whole files
MIN_RATE, MAX_RATE = 4000, 384000  # Hz; outside this a file's rate is a damaged header, not a recording
MAX_CHANNELS = 32  # mixed down to mono; more is a multitrack or ambisonic session, not one sound
MAX_DECODED_BYTES = 2 * 2 ** 30  # float32, all channels, before the mix-down


class DatasetError(Exception):
    """The folder cannot make a training set; the message says why in one sentence."""


@dataclass
class AudioClip:
    path: str  # relative to root
    world: int  # index into Dataset.worlds
    audio: np.ndarray  # float32 mono at sample_rate, trimmed, normalised, padded to at least one crop
    descriptors: np.ndarray  # [frames, 3] normalised 0..1
    split: str  # "train" or "valid"


@dataclass
class Dataset:
    root: str
    sample_rate: int
    hop: int
    worlds: list[str]
    clips: list[AudioClip]
    skipped: list[tuple[str, str]]  # (path, reason)
    stats: DescriptorStats

    def train(self) -> list[AudioClip]:
        return [c for c in self.clips if c.split == "train"]

    def valid(self) -> list[AudioClip]:
        return [c for c in self.clips if c.split == "valid"]

    def seconds(self) -> float:
        """Total length of all clips, padding of short files included."""
        return sum(len(c.audio) for c in self.clips) / self.sample_rate

    def manifest(self) -> dict:
        return {
            "root": self.root,
            "sample_rate": self.sample_rate,
            "hop": self.hop,
            "seconds": round(self.seconds(), 3),
            "worlds": list(self.worlds),
            "files": [{"path": c.path, "world": self.worlds[c.world], "seconds": round(len(c.audio) / self.sample_rate, 3),
                       "split": c.split} for c in self.clips],
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


def _print_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def find_audio(root: Path) -> list[Path]:
    """Audio files under root, relative to it, in sorted order, hidden files and folders left out."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_FORMATS:
                found.append((Path(folder) / name).relative_to(root))
    return found


def _dbfs(x: np.ndarray) -> np.ndarray:
    return 20 * np.log10(np.maximum(x, 1e-10))


def prepare(path: Path, sample_rate: int) -> np.ndarray | str:
    """Decoded, mono, resampled, trimmed and level-set audio, or the reason the file cannot be used."""
    fmt = AUDIO_FORMATS[path.suffix.lower()]
    if fmt not in sf.available_formats():
        return f"unsupported format: this libsndfile ({sf.__libsndfile_version__}) cannot read {fmt}"
    if not path.is_file():  # is_file follows links: a broken link, a pipe or a device ends here
        return "not a regular file (a broken link, a pipe or a device)"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    unreadable = f"unreadable: corrupt, or not a {fmt} encoding libsndfile can decode"
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, OSError, ValueError):
        # libsndfile's own message is often misleading here ("file does not exist"), so it is left out
        return unreadable
    if not MIN_RATE <= info.samplerate <= MAX_RATE:
        return f"sample rate {info.samplerate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz (a damaged header?)"
    if info.channels > MAX_CHANNELS:
        return f"{info.channels} channels, more than the {MAX_CHANNELS} mixed down to mono: export a mono or stereo mix"
    if info.frames * info.channels * 4 > MAX_DECODED_BYTES:
        return (f"too large to decode at once ({info.frames * info.channels * 4 / 2 ** 30:.1f} GiB as float32): "
                f"split it into shorter files")
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError, ValueError, MemoryError):
        return unreadable
    if len(audio) == 0:
        return "zero length (no audio frames)"
    if not np.isfinite(audio).all():
        return "contains NaN or infinite samples"
    mono = audio.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ").astype(np.float32)
    if len(mono) == 0 or _dbfs(np.abs(mono).max()) < SILENT_DBFS:
        return f"silent (no sample above {SILENT_DBFS:.0f} dBFS)"
    window = max(1, sample_rate // 100)
    blocks = len(mono) // window
    if blocks > 0:
        level = _dbfs(np.sqrt((mono[: blocks * window].reshape(blocks, window) ** 2).mean(1)))
        loud = np.flatnonzero(level > level.max() - TRIM_DB)
        end = len(mono) if loud[-1] == blocks - 1 else (loud[-1] + 1) * window  # keep a ragged tail with the last block
        mono = mono[loud[0] * window: end]
    mono = mono * (10 ** (TARGET_DBFS / 20) / np.sqrt(np.mean(mono.astype(np.float64) ** 2)))
    peak = np.abs(mono).max()
    if peak > PEAK:
        mono = mono * (PEAK / peak)
    return mono.astype(np.float32)


_OSC_UNSAFE = re.compile(r"[\s#*,/?\[\]{}]+")


def _world_names(keys: list[str]) -> list[str]:
    """OSC-safe, unique names, in the order given."""
    names: list[str] = []
    for key in keys:
        base = _OSC_UNSAFE.sub("_", key).strip("_") or "world"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def _assign_worlds(paths: list[Path], root: Path) -> tuple[list[str], list[int]]:
    """World names, and the world of each file (paths relative to root)."""
    if all(len(p.parts) == 1 for p in paths):
        return _world_names([p.stem for p in paths]), list(range(len(paths)))  # one world per file
    keys = [p.parts[0] if len(p.parts) > 1 else None for p in paths]  # None: a file lying in the root
    unique = list(dict.fromkeys(keys))
    names = _world_names([k if k is not None else (root.resolve().name or "root") for k in unique])
    return names, [unique.index(k) for k in keys]


def _hold_out_files(worlds: list[int], n_valid: int, seed: int) -> set[int]:
    """Indices of files to hold out, never a world's last training file."""
    left = np.bincount(worlds)
    held: set[int] = set()
    for i in np.random.default_rng(seed).permutation(len(worlds)):
        if len(held) == n_valid:
            break
        if left[worlds[i]] > 1:
            held.add(int(i))
            left[worlds[i]] -= 1
    return held


def load_dataset(root: str | Path, sample_rate: int, hop: int, *, crop_frames: int = 32, valid_fraction: float = 0.1,
                 min_seconds: float = 2.0, seed: int = 0, log: Callable[[str], None] = _print_stderr) -> Dataset:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"'{root}' is not a folder")
    paths = find_audio(root)
    if not paths:
        raise DatasetError(f"no audio files ({' '.join(sorted(set(AUDIO_FORMATS)))}) found in '{root}'")

    usable: list[tuple[Path, np.ndarray]] = []
    skipped: list[tuple[str, str]] = []
    for rel in paths:
        result = prepare(root / rel, sample_rate)
        if isinstance(result, str):
            skipped.append((rel.as_posix(), result))
            log(f"skipped {rel.as_posix()}: {result}")
        else:
            usable.append((rel, result))

    seconds = sum(len(a) for _, a in usable) / sample_rate
    if seconds < min_seconds:
        raise DatasetError(f"only {seconds:.1f} s of usable audio in '{root}' ({len(usable)} of {len(paths)} files "
                           f"usable); at least {min_seconds:.1f} s is needed")

    worlds, world_of = _assign_worlds([rel for rel, _ in usable], root)

    crop = crop_frames * hop
    held: set[int] = set()
    if valid_fraction > 0 and len(usable) >= MIN_VALID_FILES:
        held = _hold_out_files(world_of, max(1, round(valid_fraction * len(usable))), seed)
    split_tails = valid_fraction > 0 and not held

    pieces: list[tuple[str, int, np.ndarray, str]] = []
    for i, (rel, audio) in enumerate(usable):
        tail = max(crop_frames, int(np.ceil(valid_fraction * len(audio) / hop))) * hop
        if split_tails and len(audio) - tail >= crop:
            pieces.append((rel.as_posix(), world_of[i], audio[:-tail], "train"))
            pieces.append((rel.as_posix(), world_of[i], audio[-tail:], "valid"))
        else:
            pieces.append((rel.as_posix(), world_of[i], audio, "valid" if i in held else "train"))

    clips, raw = [], []
    for path, world, audio, split in pieces:
        if len(audio) < crop:
            audio = np.concatenate([audio, np.zeros(crop - len(audio), np.float32)])
        raw.append(frame_descriptors(audio, hop, sample_rate))
        clips.append(AudioClip(path, world, audio, raw[-1], split))
    stats = DescriptorStats.fit([r for r, c in zip(raw, clips) if c.split == "train"])
    for clip in clips:
        clip.descriptors = stats.normalise(clip.descriptors)
    return Dataset(str(root), sample_rate, hop, worlds, clips, skipped, stats)


class CropSampler:
    """Random training crops; each crop is a whole number of frames and starts on a frame boundary.

    Files are drawn in proportion to their length. With `augment`, each crop also gets a random
    gain of ±6 dB and a random polarity; its descriptors are then recomputed from the augmented
    audio (with the frame before the crop as context, exactly as for the whole file) and
    normalised with `stats`, so loudness follows the gain and the other two stay as they were.
    With `descriptors=False` (for the codec, which trains on audio alone) there are none: batch
    returns None for them and skips recomputing them, which is nearly all the work of an augmented
    batch (on a GPU box it took as long as the codec's training step). The crops drawn are the same.
    """

    def __init__(self, clips: list[AudioClip], crop_frames: int, hop: int, seed: int = 0, *, augment: bool = False,
                 stats: DescriptorStats | None = None, sample_rate: int | None = None, descriptors: bool = True):
        if not clips:
            raise ValueError("CropSampler needs at least one clip")
        short = [c.path for c in clips if len(c.audio) < crop_frames * hop]
        if short:
            raise ValueError(f"clips shorter than one crop of {crop_frames} frames: {', '.join(short)}")
        if augment and descriptors and (stats is None or sample_rate is None):
            raise ValueError("augment needs the dataset's stats and sample_rate to recompute loudness")
        self.clips, self.crop_frames, self.hop = clips, crop_frames, hop
        self.augment, self.stats, self.sample_rate, self.descriptors = augment, stats, sample_rate, descriptors
        frames = np.array([len(c.audio) // hop for c in clips], dtype=np.float64)
        self.weights = frames / frames.sum()
        self.rng = np.random.default_rng(seed)

    def batch(self, batch_size: int, part: int = 0,
              parts: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """audio [B, crop_frames*hop] float32, world [B] long, descriptors [B, crop_frames, 3] float32 (or None).

        With `parts` > 1 (one part per training process), the draw is for the batch of all parts
        together and this returns part `part` of it: every process keeps the same generator state.
        """
        n, hop, total = self.crop_frames, self.hop, batch_size * parts
        mine = slice(part * batch_size, (part + 1) * batch_size)
        which = self.rng.choice(len(self.clips), size=total, p=self.weights)
        starts = [int(self.rng.integers(0, len(self.clips[i].audio) // hop - n + 1)) for i in which]
        which, starts = which[mine], starts[mine]
        audio = np.stack([self.clips[i].audio[s * hop:(s + n) * hop] for i, s in zip(which, starts)])
        desc = None
        if self.descriptors:
            desc = np.stack([self.clips[i].descriptors[s:s + n] for i, s in zip(which, starts)])
        if self.augment:
            gains = 10 ** (self.rng.uniform(-6, 6, total) / 20) * self.rng.choice([-1.0, 1.0], total)
            gains = gains[mine]
            audio = (audio * gains[:, None]).astype(np.float32)
        if self.augment and self.descriptors:
            for b, (i, s) in enumerate(zip(which, starts)):
                context = self.clips[i].audio[(s - 1) * hop:s * hop] if s > 0 else np.zeros(hop, np.float32)
                raw = frame_descriptors(np.concatenate([context * gains[b], audio[b]]), hop, self.sample_rate)[1:]
                desc[b] = self.stats.normalise(raw)
        world = np.array([self.clips[i].world for i in which], dtype=np.int64)
        return (torch.from_numpy(audio), torch.from_numpy(world),
                None if desc is None else torch.from_numpy(np.ascontiguousarray(desc)))

    def state_dict(self) -> dict:
        """JSON-able: the generator's full state, so a resumed run draws the same crops."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]

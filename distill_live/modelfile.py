"""The .distill file: one safetensors file, weights as tensors, everything else as JSON metadata.

Never pickle: a model file is shared between people and must not be able to run code. The header
is checked by hand before anything is allocated, so a damaged or hostile file is refused with one
sentence instead of a traceback or a huge allocation.
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .codec import Codec
from .config import ModelConfig
from .prior import Prior

FORMAT_VERSION = 1
MODEL_TYPE = "distill"
MAX_HEADER = 64 * 1024 * 1024
DTYPE_SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "U8": 1, "BOOL": 1, "F64": 8, "I8": 1}


class ModelFileError(Exception):
    """A model file that cannot be used; the message is one sentence naming the file."""


@dataclass
class DistillModel:
    config: ModelConfig
    codec: Codec
    prior: Prior | None = None
    cues: list[torch.Tensor] = field(default_factory=list)  # per training file: codes [frames, levels]
    meta: dict = field(default_factory=dict)  # manifest, descriptor_stats, health, history

    @property
    def worlds(self) -> list[str]:
        return list(self.meta.get("manifest", {}).get("worlds", []))

    def info(self) -> dict:
        c = self.config.codec
        return {
            "format_version": FORMAT_VERSION,
            "sample_rate": c.sample_rate,
            "hop": c.hop,
            "frame_rate": c.frame_rate,
            "levels": c.levels,
            "codebook_size": c.codebook_size,
            "bitrate": round(c.frame_rate * c.levels * (c.codebook_size - 1).bit_length(), 1),
            "prior": self.config.prior.kind if self.prior is not None else None,
            "worlds": self.worlds,
            "cues": len(self.cues),
            "health": self.meta.get("health", {}),
            "files": len(self.meta.get("manifest", {}).get("files", [])),
            "seconds": self.meta.get("manifest", {}).get("seconds"),
            "descriptor_stats": self.meta.get("descriptor_stats"),
            "config": self.config.to_dict(),
        }


def atomic_write(path: str | Path, write) -> None:
    """Call write(tmp_path) on a temp file beside `path`, then rename it over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(path: str | Path, model: DistillModel) -> None:
    tensors = {f"codec.{k}": v for k, v in model.codec.state_dict().items()}
    if model.prior is not None:
        tensors.update({f"prior.{k}": v for k, v in model.prior.state_dict().items()})
    for i, cue in enumerate(model.cues):
        tensors[f"cues.{i}"] = cue.to(torch.int16)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta = dict(model.meta, format_version=FORMAT_VERSION, model_type=MODEL_TYPE,
                config=model.config.to_dict(), has_prior=model.prior is not None, cues=len(model.cues))
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"distill": json.dumps(meta)}))


def _read_header(path: Path) -> tuple[dict, dict]:
    """Validate the safetensors header without loading tensors. Returns (tensor entries, distill metadata)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ModelFileError(f"'{path}' is too short to be a model file ({size} bytes)")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > min(MAX_HEADER, size - 8):
            raise ModelFileError(f"'{path}' is not a distill model file or is truncated (bad header length)")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ModelFileError(f"'{path}' is not a distill model file or is damaged (header is not valid JSON)")
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise ModelFileError(f"'{path}' is a safetensors file without distill metadata, not a distill model")
    data_size = size - 8 - header_len
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            count = 1
            for n in shape:
                count *= int(n)
            ok = dtype in DTYPE_SIZES and 0 <= start <= end <= data_size and (end - start) == count * DTYPE_SIZES[dtype]
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ModelFileError(f"'{path}' is damaged or truncated: tensor '{name}' does not fit in the file")
    try:
        meta = json.loads(header["__metadata__"]["distill"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise ModelFileError(f"'{path}' is a safetensors file without distill metadata, not a distill model")
    if not isinstance(meta, dict) or meta.get("model_type") != MODEL_TYPE:
        raise ModelFileError(f"'{path}' is not a distill model file (model type {meta.get('model_type')!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(f"'{path}' has no valid format version")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"'{path}' was written by a newer distill (format {version}; this one reads up to "
                             f"{FORMAT_VERSION}): upgrade distill to load it")
    return header, meta


def load_model(path: str | Path, device: str = "cpu") -> DistillModel:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file '{path}' does not exist")
    header, meta = _read_header(path)
    try:
        config = ModelConfig.from_dict(meta["config"])
        codec = Codec(config.codec)
        prior = Prior(config.prior, config.codec.levels, config.codec.codebook_size) if meta.get("has_prior") else None
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"'{path}' has an invalid configuration: {e}")
    expected = {f"codec.{k}": v.shape for k, v in codec.state_dict().items()}
    if prior is not None:
        expected.update({f"prior.{k}": v.shape for k, v in prior.state_dict().items()})
    expected.update({f"cues.{i}": None for i in range(int(meta.get("cues", 0)))})
    for name, shape in expected.items():
        if name not in header:
            raise ModelFileError(f"'{path}' is incomplete: tensor '{name}' is missing")
        if shape is not None and list(header[name]["shape"]) != list(shape):
            raise ModelFileError(f"'{path}' does not match its configuration: tensor '{name}' has shape "
                                 f"{header[name]['shape']}, expected {list(shape)}")
    try:
        tensors = load_file(path, device=device)
    except Exception as e:  # safetensors reports damage in many ways; all mean the same to a user
        raise ModelFileError(f"'{path}' is damaged and cannot be read ({type(e).__name__})")
    for t in tensors.values():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ModelFileError(f"'{path}' is damaged: it contains NaN or infinite weights")
    try:
        codec.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("codec.")})
        if prior is not None:
            prior.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("prior.")})
    except RuntimeError:
        raise ModelFileError(f"'{path}' holds tensors this version of distill does not know")
    codec.to(device).eval()
    if prior is not None:
        prior.to(device).eval()
    cues = [tensors[f"cues.{i}"].long() for i in range(int(meta.get("cues", 0)))]
    levels, size = config.codec.levels, config.codec.codebook_size
    for i, cue in enumerate(cues):
        if cue.dim() != 2 or cue.shape[1] != levels or (cue.numel() and (cue.min() < 0 or cue.max() >= size)):
            raise ModelFileError(f"'{path}' is damaged: cue {i} holds codes outside the codebook")
    return DistillModel(config, codec, prior, cues, meta)

"""The .distill file: one safetensors file, weights as tensors, everything else as JSON metadata.

Never pickle: a model file is shared between people and must not be able to run code. The header
is checked by hand before anything is allocated, so a damaged or hostile file is refused with one
sentence instead of a traceback or a huge allocation.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file
from torch.overrides import TorchFunctionMode

from distill_live import atomic_write

from .codec import Codec
from .config import ModelConfig, preset
from .corpus import Corpus
from .prior import Prior

FORMAT_VERSION = 2  # 2: may hold the training recordings (corpus.<i>); a file without them is written as 1
MODEL_TYPE = "distill"
MAX_HEADER = 64 * 1024 * 1024
DTYPE_SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "U8": 1, "BOOL": 1, "F64": 8, "I8": 1}
TORCH_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
                torch.int32: "I32", torch.int16: "I16", torch.uint8: "U8", torch.bool: "BOOL", torch.float64: "F64",
                torch.int8: "I8"}
CUE_DTYPES = {"I16", "I32", "I64", "U8", "I8"}
# Config numbers that make Python objects (blocks, layers, quantizer levels) rather than tensors: the
# tensors are checked against the file before anything real is built, but a loop of a billion modules
# would hang before that check could run.
CONFIG_COUNTS = {"enc_blocks", "dec_blocks", "up_blocks", "levels", "layers", "heads", "upsample", "kernel"}
MAX_COUNT = 256
MAX_INT = 1 << 24


class ModelFileError(Exception):
    """A model file that cannot be used; the message is one sentence naming the file."""


@dataclass
class DistillModel:
    config: ModelConfig
    codec: Codec
    prior: Prior | None = None
    cues: list[torch.Tensor] = field(default_factory=list)  # per training file: codes [frames, levels]
    meta: dict = field(default_factory=dict)  # manifest, descriptor_stats, health, history
    recordings: list[torch.Tensor] = field(default_factory=list)  # per cue: int16 audio [frames * hop], or none

    @functools.cached_property
    def corpus(self) -> Corpus | None:
        """The recordings as a corpus to play (corpus.py), built on first use; None without them."""
        if not self.recordings:
            return None
        return Corpus(self.codec, self.cues, self.recordings, self.cue_worlds)

    @property
    def cue_worlds(self) -> list[int]:
        """Per cue, the index of the world its training file came from (-1: none, or the manifest does not say)."""
        worlds = self.worlds
        files = self.meta.get("manifest", {}).get("files", [])
        cue_worlds = [worlds.index(f.get("world")) if f.get("world") in worlds else -1 for f in files]
        return cue_worlds if len(cue_worlds) == len(self.cues) else [-1] * len(self.cues)

    def prepare_streaming(self) -> None:
        """Make frame-by-frame playing as fast as it gets (`Codec.prepare_streaming`,
        `Prior.prepare_streaming`): once per model, where it is loaded, so that no frame pays for it."""
        self.codec.prepare_streaming()
        if self.prior is not None:
            self.prior.prepare_streaming()

    @property
    def worlds(self) -> list[str]:
        return list(self.meta.get("manifest", {}).get("worlds", []))

    def info(self) -> dict:
        c = self.config.codec
        return {
            "format_version": self.meta.get("format_version", FORMAT_VERSION),
            "sample_rate": c.sample_rate,
            "hop": c.hop,
            "frame_rate": c.frame_rate,
            "levels": c.levels,
            "codebook_size": c.codebook_size,
            "bitrate": round(c.frame_rate * c.levels * (c.codebook_size - 1).bit_length(), 1),
            "prior": self.config.prior.kind if self.prior is not None else None,
            "worlds": self.worlds,
            "cues": len(self.cues),
            "corpus": {"seconds": round(sum(len(r) for r in self.recordings) / c.sample_rate, 3),
                       "bytes": sum(2 * len(r) for r in self.recordings)} if self.recordings else None,
            "health": self.meta.get("health", {}),
            "files": len(self.meta.get("manifest", {}).get("files", [])),
            "seconds": self.meta.get("manifest", {}).get("seconds"),
            "descriptor_stats": self.meta.get("descriptor_stats"),
            "memorisation": self.meta.get("history", {}).get("prior", {}).get("memorisation"),
            "config": self.config.to_dict(),
        }


def random_model(preset_name: str, seed: int = 0, worlds: Sequence[str] = (), cues: Sequence[int] = (),
                 recordings: bool = False) -> DistillModel:
    """A model of a preset's shape with random weights: speed depends only on the shape, so `distill-live
    bench preset:NAME` needs no trained model, and the tests use it. The codebooks are random too
    (untrained ones stay zero until k-means runs on a first training batch, and every code would
    decode alike). `worlds`: their names (default: the preset's count, world0, world1...); `cues`: the
    length in frames of each random training passage; `recordings`: give each passage a recording
    (band-limited noise at a random loudness), so the corpus decoder can play it."""
    cfg = preset(preset_name)
    worlds = list(worlds) or [f"world{i}" for i in range(cfg.prior.worlds)]
    cfg.prior.worlds = len(worlds)
    c = cfg.codec
    torch.manual_seed(seed)
    codec = Codec(c)
    with torch.no_grad():
        for key, value in codec.quantizer.state_dict().items():
            if key.endswith("_codebook.embed"):
                value.normal_()
    prior = Prior(cfg.prior, c.levels, c.codebook_size)
    passages = [torch.randint(c.codebook_size, (frames, c.levels)) for frames in cues]
    audio = []
    if recordings:
        for frames in cues:
            noise = torch.randn(frames * c.hop).cumsum(0) * torch.rand(()) * 0.02
            noise -= torch.nn.functional.avg_pool1d(noise[None, None], 63, 1, 31, count_include_pad=False)[0, 0]
            audio.append((noise.clamp(-1, 1) * 32767).round().to(torch.int16))
    return DistillModel(cfg, codec.eval(), prior.eval(), passages, {"manifest": {"worlds": worlds}}, audio)


def save_model(path: str | Path, model: DistillModel) -> None:
    tensors = {f"codec.{k}": v for k, v in model.codec.state_dict().items()}
    if model.prior is not None:
        tensors.update({f"prior.{k}": v for k, v in model.prior.state_dict().items()})
    for i, cue in enumerate(model.cues):
        tensors[f"cues.{i}"] = cue.to(torch.int16)
    if model.recordings and len(model.recordings) != len(model.cues):
        raise ValueError(f"{len(model.recordings)} recordings for {len(model.cues)} cues: one per cue, or none")
    for i, audio in enumerate(model.recordings):
        tensors[f"corpus.{i}"] = audio.to(torch.int16)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta = dict(model.meta, format_version=FORMAT_VERSION if model.recordings else 1, model_type=MODEL_TYPE,
                config=model.config.to_dict(), has_prior=model.prior is not None, cues=len(model.cues),
                corpus=bool(model.recordings))
    meta.pop("checksum", None)
    meta["checksum"] = _checksum(tensors, meta)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"distill": json.dumps(meta)}))


def _checksum(tensors: dict[str, torch.Tensor], meta: dict) -> str:
    """sha256 over every tensor (name, dtype, shape, bytes) and the metadata, so any damage is noticed."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{TORCH_DTYPES.get(t.dtype, t.dtype)}:{list(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps({k: v for k, v in meta.items() if k != "checksum"}, sort_keys=True).encode())
    return "sha256:" + h.hexdigest()


def _short(value, n: int = 60) -> str:
    """A value from a file, cut to fit in a one-line message."""
    text = value if isinstance(value, str) else repr(value)
    text = text.replace("\n", " ").replace("\r", " ")
    return text if len(text) <= n else text[: n - 3] + "..."


def _json(text):
    """json.loads, with every way it can fail (deep nesting, 5000-digit numbers) as ValueError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply")


def _check_config(path: Path, d) -> ModelConfig:
    """A ModelConfig from the file's JSON, every field of the right type and of a sane size."""
    if not isinstance(d, dict) or not all(isinstance(d.get(k, {}), dict) for k in ("codec", "prior")):
        raise ModelFileError(f"'{path}' has an invalid configuration (not a table of codec and prior settings)")
    try:
        config = ModelConfig.from_dict(d)
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"'{path}' has an invalid configuration: {_short(str(e), 120)}")
    for part in (config.codec, config.prior):
        for f in dataclasses.fields(part):
            value, default = getattr(part, f.name), f.default
            if isinstance(default, bool) or not isinstance(default, (int, float, str)):
                continue
            ok = type(value) is type(default) or (isinstance(default, float) and type(value) is int)
            if ok and isinstance(default, int):
                ok = 0 < value <= (MAX_COUNT if f.name in CONFIG_COUNTS else MAX_INT)
            elif ok and isinstance(default, float):
                ok = math.isfinite(value) and value >= 0
            if not ok:
                raise ModelFileError(f"'{path}' has an invalid configuration: {f.name} = {_short(value)}")
    return config


def _read_header(path: Path) -> tuple[dict, dict]:
    """Validate the safetensors header without loading tensors. Returns (tensor entries, distill metadata)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ModelFileError(f"'{path}' is too short to be a model file ({size} bytes)")
            (header_len,) = struct.unpack("<Q", raw)
            if header_len > min(MAX_HEADER, size - 8):
                raise ModelFileError(f"'{path}' is not a distill model file or is truncated (bad header length)")
            text = f.read(header_len)
    except OSError as e:
        raise ModelFileError(f"model file '{path}' cannot be read ({e.strerror or type(e).__name__})")
    try:
        header = _json(text)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
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
                if type(n) is not int or n < 0:
                    raise ValueError(n)
                count *= n
            ok = type(start) is int and type(end) is int and dtype in DTYPE_SIZES and 0 <= start <= end <= data_size and (end - start) == count * DTYPE_SIZES[dtype]
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ModelFileError(f"'{path}' is damaged or truncated: tensor '{_short(name)}' does not fit in the file")
    try:
        meta = _json(header["__metadata__"]["distill"])
    except (KeyError, TypeError, ValueError):
        raise ModelFileError(f"'{path}' is a safetensors file without distill metadata, not a distill model")
    if not isinstance(meta, dict):
        raise ModelFileError(f"'{path}' is not a distill model file (its metadata is not a table)")
    if meta.get("model_type") != MODEL_TYPE:
        raise ModelFileError(f"'{path}' is not a distill model file (model type {_short(meta.get('model_type'))})")
    version = meta.get("format_version")
    if type(version) is not int or version < 1:
        raise ModelFileError(f"'{path}' has no valid format version")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"'{path}' was written by a newer distill (format {version}; this one reads up to "
                             f"{FORMAT_VERSION}): upgrade distill to load it")
    return header, meta


class _ShapesOnly(TorchFunctionMode):
    """Modules built on the meta device hold shapes only, so their random initialisation is skipped:
    torch draws `normal_` (the embeddings') on the meta device by a Python path that imports its
    compiler, a second and more for every process that loads a model."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.nn.init.normal_, torch.Tensor.normal_):
            tensor = args[0] if args else kwargs["tensor"]
            if tensor.is_meta:
                return tensor
        return func(*args, **kwargs)


def _modules(path: Path, config: ModelConfig, has_prior: bool, device: str | None):
    """Codec and prior for `config`; on the meta device when `device` is None (shapes only, no memory)."""
    try:
        with torch.device(device or "meta"), _ShapesOnly():
            codec = Codec(config.codec)
            prior = Prior(config.prior, config.codec.levels, config.codec.codebook_size) if has_prior else None
    except Exception as e:  # a config that passed the type checks can still be inconsistent (hop, heads...)
        raise ModelFileError(f"'{path}' has an invalid configuration ({type(e).__name__}: "
                             f"{_short(str(e) or 'cannot build the model', 120)})")
    return codec, prior


def load_model(path: str | Path, device: str = "cpu") -> DistillModel:
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"'{path}' is a folder, not a model file")
    if not path.is_file():
        raise ModelFileError(f"model file '{path}' does not exist" if not path.exists() else
                             f"'{path}' is not a regular file, not a model file")
    header, meta = _read_header(path)
    config = _check_config(path, meta.get("config"))
    has_prior, n_cues, has_corpus = meta.get("has_prior"), meta.get("cues", 0), meta.get("corpus", False)
    if type(has_prior) is not bool:
        raise ModelFileError(f"'{path}' is damaged: it does not say whether it holds a prior")
    if type(n_cues) is not int or not 0 <= n_cues <= len(header):
        raise ModelFileError(f"'{path}' is damaged: its cue count {_short(n_cues, 20)} does not match its tensors")
    if type(has_corpus) is not bool:
        raise ModelFileError(f"'{path}' is damaged: it does not say whether it holds its recordings")
    recordings = [f"corpus.{i}" for i in range(n_cues)] if has_corpus else []
    # every tensor's name, shape and dtype, checked against modules built on the meta device: no memory
    # is taken before the file is known to hold exactly what the configuration needs
    codec, prior = _modules(path, config, has_prior, None)
    expected = {f"codec.{k}": v for k, v in codec.state_dict().items()}
    if prior is not None:
        expected.update({f"prior.{k}": v for k, v in prior.state_dict().items()})
    for name, value in expected.items():
        if name not in header:
            raise ModelFileError(f"'{path}' is incomplete: tensor '{name}' is missing")
        if list(header[name]["shape"]) != list(value.shape):
            raise ModelFileError(f"'{path}' does not match its configuration: tensor '{name}' has shape "
                                 f"{_short(header[name]['shape'])}, expected {list(value.shape)}")
        if header[name]["dtype"] != TORCH_DTYPES.get(value.dtype):
            raise ModelFileError(f"'{path}' does not match its configuration: tensor '{name}' is "
                                 f"{_short(header[name]['dtype'])}, expected {TORCH_DTYPES.get(value.dtype)}")
    for i in range(n_cues):
        entry = header.get(f"cues.{i}")
        if entry is None:
            raise ModelFileError(f"'{path}' is incomplete: tensor 'cues.{i}' is missing")
        if entry["dtype"] not in CUE_DTYPES or len(entry["shape"]) != 2 or entry["shape"][1] != config.codec.levels:
            raise ModelFileError(f"'{path}' is damaged: cue {i} is not a table of codes ({_short(entry['dtype'])}, shape "
                                 f"{_short(entry['shape'])})")
    for i, name in enumerate(recordings):
        entry = header.get(name)
        if entry is None:
            raise ModelFileError(f"'{path}' is incomplete: the recording of cue {i} ('{name}') is missing")
        if entry["dtype"] != "I16" or entry["shape"] != [header[f"cues.{i}"]["shape"][0] * config.codec.hop]:
            raise ModelFileError(f"'{path}' is damaged: the recording of cue {i} is not 16-bit audio as long as "
                                 f"its codes ({_short(entry['dtype'])}, shape {_short(entry['shape'])})")
    unknown = sorted(set(header) - set(expected) - {f"cues.{i}" for i in range(n_cues)} - set(recordings)
                     - {"__metadata__"})
    if unknown:
        raise ModelFileError(f"'{path}' holds tensors this version of distill does not know ('{_short(unknown[0])}')")
    unbuffered = sum(b.numel() * b.element_size() for m in (codec, prior) if m is not None for b in m.buffers())
    if unbuffered > MAX_HEADER:  # buffers rebuilt from the configuration (windows), not stored in the file
        raise ModelFileError(f"'{path}' has an invalid configuration (it would need {unbuffered / 2 ** 30:.1f} GiB "
                             f"of working buffers)")

    try:
        tensors = load_file(path, device="cpu")
    except Exception as e:  # safetensors reports damage in many ways; all mean the same to a user
        raise ModelFileError(f"'{path}' is damaged and cannot be read ({type(e).__name__})")
    for t in tensors.values():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ModelFileError(f"'{path}' is damaged: it contains NaN or infinite weights")
    size = config.codec.codebook_size
    for i in range(n_cues):
        cue = tensors[f"cues.{i}"]
        if cue.numel() and (cue.min() < 0 or cue.max() >= size):
            raise ModelFileError(f"'{path}' is damaged: cue {i} holds codes outside the codebook")
    if "checksum" in meta and meta["checksum"] != _checksum(tensors, meta):
        raise ModelFileError(f"'{path}' is damaged: its contents do not match the checksum written with it")
    codec, prior = _modules(path, config, has_prior, "cpu")
    try:
        codec.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("codec.")})
        if prior is not None:
            prior.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("prior.")})
    except RuntimeError:
        raise ModelFileError(f"'{path}' holds tensors this version of distill does not know")
    codec.to(device).eval()
    if prior is not None:
        prior.to(device).eval()
    cues = [tensors[f"cues.{i}"].long() for i in range(n_cues)]
    return DistillModel(config, codec, prior, cues, meta, [tensors[name] for name in recordings])

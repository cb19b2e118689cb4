"""Every number that defines a model, in one place, stored whole in the .distill file."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class CodecConfig:
    sample_rate: int = 48000
    hop: int = 960  # samples per frame: 48000 / 960 = 50 frames/s = 20 ms
    enc_dim: int = 256
    enc_blocks: int = 4
    latent_dim: int = 64  # dimension the quantizer works in
    levels: int = 8  # residual quantizer levels, coarse to fine
    codebook_size: int = 256
    ema_decay: float = 0.9
    commitment: float = 0.25
    quantizer_dropout: float = 0.5  # share of batches trained with fewer levels
    dec_dim: int = 256
    dec_blocks: int = 4
    upsample: int = 4  # decoder time resolution = frame rate * upsample
    up_dim: int = 128
    up_blocks: int = 2
    kernel: int = 7  # causal depthwise kernel, in steps of the block's own rate

    @property
    def head_hop(self) -> int:
        return self.hop // self.upsample

    @property
    def head_n_fft(self) -> int:
        return 4 * self.head_hop

    @property
    def enc_n_fft(self) -> int:
        return 2 * self.hop

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop


@dataclass
class PriorConfig:
    kind: str = "gru"  # "gru" or "transformer"
    dim: int = 384
    layers: int = 1
    heads: int = 4  # transformer only
    context: int = 64  # transformer only: frames in the rolling key/value cache
    head_hidden: int = 256
    worlds: int = 1
    descriptors: int = 3
    world_dropout: float = 0.2  # chance a training example is seen without its world
    descriptor_dropout: float = 0.3  # chance each descriptor is left free
    unconditioned: float = 0.15  # chance an example is seen with no world and no descriptor (what guidance subtracts)
    dropout: float = 0.1
    condition_heads: bool = True  # world and descriptors also reach the per-level heads (see Prior)
    descriptor_bins: int = 8  # a held descriptor is read as this many soft bins (1: as its raw value)


@dataclass
class ModelConfig:
    codec: CodecConfig = field(default_factory=CodecConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        # model files older than these played without them
        prior = {"condition_heads": False, "descriptor_bins": 1, **d.get("prior", {})}
        return cls(codec=_build(CodecConfig, d.get("codec", {})), prior=_build(PriorConfig, prior))


def _build(kind, d: dict):
    known = {f.name for f in fields(kind)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {kind.__name__} fields: {', '.join(sorted(unknown))}")
    return kind(**d)


PRESETS: dict[str, ModelConfig] = {
    # For tests: 16 kHz, small everywhere, trains in seconds on a CPU.
    "tiny": ModelConfig(
        CodecConfig(sample_rate=16000, hop=320, enc_dim=48, enc_blocks=1, latent_dim=16, levels=4,
                    codebook_size=32, dec_dim=48, dec_blocks=1, upsample=2, up_dim=32, up_blocks=1, kernel=5),
        PriorConfig(dim=48, heads=2, context=16, head_hidden=48, dropout=0.0),
    ),
    # For laptops and the benchmark: 24 kHz, trains usefully in tens of minutes on 2 cores. A latent of 64 (was
    # 32): the same 30 minutes' model holds sounds as long as the collection's on more seeds and is heard as its
    # world more often (docs/benchmarks.md, "The wider latent, the same day").
    "small": ModelConfig(
        CodecConfig(sample_rate=24000, hop=480, enc_dim=128, enc_blocks=2, latent_dim=64, levels=8,
                    dec_dim=192, dec_blocks=3, upsample=2, up_dim=96, up_blocks=1),
        PriorConfig(dim=256, head_hidden=192),
    ),
    "default": ModelConfig(),
}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return ModelConfig.from_dict(PRESETS[name].to_dict())

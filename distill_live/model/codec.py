"""The codec: causal encoder -> residual vector quantizer -> causal decoder with an inverse-STFT head.

Every convolution looks only at the past, so encoder and decoder run one frame at a time with a small
cached state (`Codec.start_encoding` / `encode_step`, `Codec.start` / `decode_step`) and give the
same numbers as a whole sequence at once: encoding or decoding a sequence is streaming from a zero
state. Each block has one definition and chooses its fast path itself: for the few steps of a
streamed frame, outside training, the operations that are slow at that size (depthwise conv1d,
complex assembly, the overlap-add loop) become equivalent cheaper ones, since at batch 1 the cost is
in the number of operations rather than in their size. Training and long inputs take the plain
path, so training is exactly what it was. tests/test_streaming.py checks that the two agree.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .compiled import CompiledFrameStep
from .config import CodecConfig

log = logging.getLogger(__name__)


def _import_residual_vq():
    """vector_quantize_pytorch's ResidualVQ, imported without torch's compiler. Its einx marks einx's
    operations for `torch.compile` when it is first imported, and that imports torch._dynamo: about a
    second more for every process that loads a model. distill never compiles with torch (its live
    loops are numba's), so the marking is skipped."""
    allow_in_graph = torch.compiler.allow_in_graph
    torch.compiler.allow_in_graph = lambda fn: fn
    try:
        from vector_quantize_pytorch import ResidualVQ
    finally:
        torch.compiler.allow_in_graph = allow_in_graph
    return ResidualVQ


ResidualVQ = _import_residual_vq()


def fixed_table(table: torch.Tensor) -> torch.Tensor:
    """A table computed once on the CPU (a window, phase advances), placed on the device the module is
    being built on. A model file is checked against modules built on the meta device, where torch
    makes such tables by a Python path that imports its compiler (about a second)."""
    return table.to(torch.get_default_device())


STREAM_STEPS = 8  # inputs this short (a streamed frame: 1 step, or `upsample` after the decoder's upsampling)
#                   take the fast path outside training


def fast(module: nn.Module, steps: int) -> bool:
    """Whether a block takes its fast path: a streamed frame's few steps, not training."""
    return steps <= STREAM_STEPS and not module.training


class CausalBlock(nn.Module):
    """ConvNeXt block on [B, T, D] whose depthwise convolution sees only the past.

    The blocks are called with `block.forward(...)`, not `block(...)`: at batch 1 nn.Module's call
    machinery costs about as much as a block's arithmetic, and no hooks are used.
    """

    def __init__(self, dim: int, kernel: int):
        super().__init__()
        self.context = kernel - 1
        self.depthwise = nn.Conv1d(dim, dim, kernel, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.expand = nn.Linear(dim, 3 * dim)
        self.project = nn.Linear(3 * dim, dim)
        self.scale = nn.Parameter(torch.full((dim,), 0.1))

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, T, D]; past: the last `context` inputs [B, D, context]. Returns output and new past.

        Fast path: the depthwise convolution over `past` + x becomes a multiply-add over sliding windows
        (for a handful of outputs a conv1d call costs ~40 us of setup, the multiply-add ~5 us).
        """
        seq = torch.cat([past, x.transpose(1, 2)], dim=2)  # [B, D, context + T]
        streaming = fast(self, x.shape[1])
        if not streaming:
            h = self.depthwise(seq).transpose(1, 2)
        elif x.shape[1] == 1:
            h = ((seq * self.depthwise.weight[:, 0]).sum(-1) + self.depthwise.bias)[:, None]
        else:
            windows = seq.unfold(2, self.context + 1, 1)  # [B, D, T, kernel]
            h = (windows * self.depthwise.weight).sum(-1).transpose(1, 2) + self.depthwise.bias  # [B, T, D]
        h = F.layer_norm(h, self.norm.normalized_shape, self.norm.weight, self.norm.bias, self.norm.eps)
        h = F.linear(F.gelu(F.linear(h, self.expand.weight, self.expand.bias)), self.project.weight, self.project.bias)
        out = torch.addcmul(x, self.scale, h) if streaming else x + self.scale * h  # the same sum, in one op
        return out, seq[:, :, x.shape[1]:]


@dataclass
class EncoderState:
    """What the streaming encoder remembers between frames: fixed size, never grows."""

    samples: torch.Tensor  # [B, n_fft - hop] the last input samples, the start of the next frame's window
    block_past: list[torch.Tensor]
    # codebooks [levels, K, latent_dim] and their squared norms [levels, K], copied once per stream by
    # `Codec.start_encoding` (see `Codec.latent_table` for why they are not cached on the codec)
    books: torch.Tensor | None = None
    books_sq: torch.Tensor | None = None


class Encoder(nn.Module):
    """Causal STFT front end (frame t sees audio up to the end of frame t) + blocks -> latent per frame."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.hop, self.n_fft = cfg.hop, cfg.enc_n_fft
        self.register_buffer("window", fixed_table(torch.hann_window(self.n_fft, device="cpu")), persistent=False)
        self.proj = nn.Linear(self.n_fft // 2 + 1, cfg.enc_dim)
        self.blocks = nn.ModuleList(CausalBlock(cfg.enc_dim, cfg.kernel) for _ in range(cfg.enc_blocks))
        self.norm = nn.LayerNorm(cfg.enc_dim)
        self.out = nn.Linear(cfg.enc_dim, cfg.latent_dim)

    def _features(self, windows: torch.Tensor) -> torch.Tensor:
        """Unwindowed frames [..., n_fft] -> projected log spectra [..., enc_dim]."""
        # log(1 + |X| / 1e-4) / 4: an empty bin is 0, not log(1e-4) = -9.2. With the plain log, every
        # empty bin added the same large constant to the projection, which (after the norms) drowned
        # out the few bins that tell one sound from another: a fresh codec could not tell a bright
        # clip from a dark one and learnt one average spectrum for both.
        return F.linear(torch.log1p(torch.fft.rfft(windows * self.window).abs() * 1e4) * 0.25, self.proj.weight,
                        self.proj.bias)

    def start(self, batch: int = 1) -> EncoderState:
        p = self.proj.weight
        return EncoderState(p.new_zeros(batch, self.n_fft - self.hop),
                            [p.new_zeros(batch, p.shape[0], b.context) for b in self.blocks])

    def forward(self, audio: torch.Tensor, state: EncoderState) -> tuple[torch.Tensor, EncoderState]:
        """audio [B, n] -> latent [B, n // hop, latent_dim], continuing from `state` (`start` for silence
        before the audio). Frame t's window ends with its last sample."""
        frames = audio.shape[-1] // self.hop
        seq = torch.cat([state.samples, audio[:, : frames * self.hop]], dim=1)
        x = self._features(seq.unfold(-1, self.n_fft, self.hop))
        block_past = []
        for block, past in zip(self.blocks, state.block_past):
            x, past = block.forward(x, past)
            block_past.append(past)
        latent = F.linear(F.layer_norm(x, self.norm.normalized_shape, self.norm.weight, self.norm.bias, self.norm.eps),
                          self.out.weight, self.out.bias)
        return latent, EncoderState(seq[:, seq.shape[1] - state.samples.shape[1]:], block_past, state.books,
                                    state.books_sq)


class ISTFTHead(nn.Module):
    """Predicts magnitude and phase per step, inverse FFT, window, overlap-add (Vocos-style).

    Step t's window starts at sample t*hop, so after step t the samples [t*hop, (t+1)*hop) are
    complete: no look-ahead. The unfinished overlap is carried in `tail`.

    The predicted phase is relative to absolute time, not to the start of each step's window: the
    head adds the advance 2*pi*k*(t*hop)/n_fft of bin k at step t before the inverse FFT. Without
    it, a steady sound needs a phase that turns by a different amount per bin from one step to the
    next (a quarter turn per bin index at hop = n_fft/4): a decoder whose features change slowly
    (the same latent drives several steps) predicts nearly the same phase at neighbouring steps, so
    their overlapping windows cancel in every bin whose index is not a multiple of n_fft/hop, and
    the output comes out quiet and dull whatever the codes. With the advance, a steady partial has a
    steady predicted phase. The advance repeats every `period` steps; `start` is the step index
    modulo `period` (carried in the decoder state).
    """

    def __init__(self, dim: int, n_fft: int, hop: int):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.out = nn.Linear(dim, n_fft + 2)
        self.register_buffer("window", fixed_table(torch.hann_window(n_fft, device="cpu")), persistent=False)
        self.period = n_fft // math.gcd(n_fft, hop)
        bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64, device="cpu")
        shift = (torch.arange(self.period, dtype=torch.float64, device="cpu")[:, None] * hop) % n_fft
        advance = (2 * math.pi * bins[None] * shift / n_fft) % (2 * math.pi)
        self.register_buffer("advance", fixed_table(advance.float()), persistent=False)  # [period, bins]

    def _phase_advance(self, steps: int, start: int) -> torch.Tensor:
        if steps == 1:
            return self.advance[start % self.period]
        index = (torch.arange(steps, device=self.advance.device) + start) % self.period
        return self.advance[index]  # [steps, bins]

    def forward(self, x: torch.Tensor, tail: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, steps, dim] -> (audio [B, steps * hop], new tail). Fast path: the spectrum in polar form in
        one call, and the overlap-add as one fold."""
        batch, steps = x.shape[0], x.shape[1]
        streaming = fast(self, steps)
        log_mag, phase = F.linear(x, self.out.weight, self.out.bias).chunk(2, dim=-1)
        phase = phase + self._phase_advance(steps, start)
        mag = torch.exp(log_mag.clamp(max=6.0))
        spec = torch.polar(mag, phase) if streaming else torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))
        frames = torch.fft.irfft(spec, n=self.n_fft) * self.window  # [B, steps, n_fft]
        length = steps * self.hop
        if streaming:
            out = F.fold(frames.transpose(1, 2), (1, length + tail.shape[1]), (1, self.n_fft), stride=(1, self.hop))
            out = out.view(batch, -1)
            out[:, :tail.shape[1]] += tail
        else:
            out = F.pad(tail, (0, length))
            for i in range(self.n_fft // self.hop):
                part = frames[:, :, i * self.hop:(i + 1) * self.hop].reshape(batch, length)
                out[:, i * self.hop:i * self.hop + length] += part
        return out[:, :length], out[:, length:]


@dataclass
class DecoderState:
    """Everything the decoder remembers between frames: fixed size, never grows."""

    block_past: list[torch.Tensor]
    up_past: list[torch.Tensor]
    tail: torch.Tensor
    # codebooks as one lookup table, copied once per stream by `Codec.start` (see `Codec.latent_table`)
    table: torch.Tensor | None = None
    # head steps decoded so far, modulo the head's phase-advance period (see `ISTFTHead`)
    head_step: int = 0


class Decoder(nn.Module):
    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.cfg = cfg
        self.inp = nn.Linear(cfg.latent_dim, cfg.dec_dim)
        self.blocks = nn.ModuleList(CausalBlock(cfg.dec_dim, cfg.kernel) for _ in range(cfg.dec_blocks))
        self.norm = nn.LayerNorm(cfg.dec_dim)
        self.up = nn.Linear(cfg.dec_dim, cfg.upsample * cfg.up_dim)  # one frame -> `upsample` steps
        self.up_blocks = nn.ModuleList(CausalBlock(cfg.up_dim, cfg.kernel) for _ in range(cfg.up_blocks))
        self.up_norm = nn.LayerNorm(cfg.up_dim)
        self.head = ISTFTHead(cfg.up_dim, cfg.head_n_fft, cfg.head_hop)
        # `prepare_frame_step`'s compiled step, in a tuple, as nothing torch should look into (its weights are
        # the decoder's own)
        self._compiled: tuple = ()
        self._prepare_tried = False  # (a compile that failed is not tried again at every voice's start)

    def start(self, batch: int = 1) -> DecoderState:
        p = self.inp.weight
        return DecoderState(
            [p.new_zeros(batch, self.cfg.dec_dim, b.context) for b in self.blocks],
            [p.new_zeros(batch, self.cfg.up_dim, b.context) for b in self.up_blocks],
            p.new_zeros(batch, self.head.n_fft - self.head.hop),
        )

    def forward(self, latent: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """latent [B, T, latent_dim] -> audio [B, T*hop], continuing from `state`.

        Written with the functional ops and `block.forward`: at batch 1 a frame is a few MFLOP, its time
        goes to reading the weights (8 MB for the default preset) and to the fixed cost of each
        operation, and module dispatch is one of those costs.
        """
        batch, frames = latent.shape[0], latent.shape[1]
        x = F.linear(latent, self.inp.weight, self.inp.bias)
        block_past = []
        for block, past in zip(self.blocks, state.block_past):
            x, past = block.forward(x, past)
            block_past.append(past)
        x = F.layer_norm(x, self.norm.normalized_shape, self.norm.weight, self.norm.bias, self.norm.eps)
        x = F.linear(x, self.up.weight, self.up.bias).reshape(batch, frames * self.cfg.upsample, self.cfg.up_dim)
        up_past = []
        for block, past in zip(self.up_blocks, state.up_past):
            x, past = block.forward(x, past)
            up_past.append(past)
        x = F.layer_norm(x, self.up_norm.normalized_shape, self.up_norm.weight, self.up_norm.bias, self.up_norm.eps)
        audio, tail = self.head.forward(x, state.tail, state.head_step)
        head_step = (state.head_step + x.shape[1]) % self.head.period
        return audio, DecoderState(block_past, up_past, tail, state.table, head_step)

    def prepare_frame_step(self) -> None:
        """Compile `forward` for one frame at batch 1, for `frame_step` (see model/compiled.py).

        At batch 1 a frame's time went largely to the fixed cost of each of its hundred tensor
        operations; the compiled step does the same arithmetic in a few loops (the default preset's
        decoder frame: 0.25 ms against 0.62-1.0 as a TorchScript trace, AMD EPYC). It reads the decoder's
        own parameters, not copies, so training goes on changing what it plays. The first compile takes a
        few seconds and is cached on disk: done where a model is loaded, never in the generator thread.
        Where it cannot be compiled (numba failing on this machine), `frame_step` stays `forward`.
        """
        if self._prepare_tried or self.training or self.inp.weight.device.type != "cpu":
            return
        self._prepare_tried = True
        try:
            step = CompiledFrameStep(self)
            state = self.start(1)
            with torch.no_grad():
                step(np.zeros((1, self.cfg.latent_dim), np.float32), state.tail.numpy(), 0,
                     [p.numpy() for p in state.block_past + state.up_past])
        except Exception as e:  # (numba's errors have no common base: any of them means "not on this machine")
            log.info("the decoder's frame step runs uncompiled (%s)", e)
            return
        self._compiled = (step,)

    def frame_step(self, latent: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """`forward` for one frame, latent [B, 1, latent_dim]: compiled at batch 1 once `prepare_frame_step` ran."""
        if not self._compiled or latent.shape[0] != 1 or self.training:
            return self.forward(latent, state)
        pasts = [p.numpy() for p in state.block_past + state.up_past]
        audio, tail, head_step, pasts = self._compiled[0](latent[0].numpy(), state.tail.numpy(),
                                                          int(state.head_step), pasts)
        blocks = len(self.blocks)
        pasts = [torch.from_numpy(p) for p in pasts]
        return torch.from_numpy(audio), DecoderState(pasts[:blocks], pasts[blocks:], torch.from_numpy(tail),
                                                     state.table, head_step)


class Codec(nn.Module):
    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = ResidualVQ(
            dim=cfg.latent_dim,
            num_quantizers=cfg.levels,
            codebook_size=cfg.codebook_size,
            decay=cfg.ema_decay,
            commitment_weight=cfg.commitment,
            kmeans_init=True,
            kmeans_iters=10,
            threshold_ema_dead_code=2,
            quantize_dropout=True,
        )
        self.decoder = Decoder(cfg)
        offsets = torch.arange(cfg.levels, device="cpu") * (cfg.codebook_size + 1) + 1  # see `latent_table`
        self.register_buffer("_level_offsets", fixed_table(offsets), persistent=False)

    def forward(self, audio: torch.Tensor, quantizer_dropout: bool = False):
        """Training pass: audio [B, n] -> (reconstruction [B, T*hop], codes [B, T, L], commitment loss)."""
        self.quantizer.quantize_dropout = quantizer_dropout and self.cfg.levels > 1
        latent, _ = self.encoder(audio, self.encoder.start(audio.shape[0]))
        with torch.autocast(audio.device.type, enabled=False):  # the quantizer stays in float32
            quantized, codes, commit = self.quantizer(latent.float())
        recon, _ = self.decoder(quantized, self.decoder.start(audio.shape[0]))
        return recon, codes, commit.sum()

    @torch.no_grad()
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B, n] -> codes [B, n // hop, levels]. Call in eval mode."""
        self.quantizer.quantize_dropout = False
        latent, _ = self.encoder(audio, self.encoder.start(audio.shape[0]))
        _, codes, _ = self.quantizer(latent)
        return codes

    def start_encoding(self, batch: int = 1) -> EncoderState:
        state = self.encoder.start(batch)
        with torch.no_grad():
            state.books = self.codebooks().detach().clone()
            state.books_sq = (state.books ** 2).sum(-1)
        return state

    @torch.no_grad()
    def encode_step(self, audio: torch.Tensor, state: EncoderState) -> tuple[torch.Tensor, EncoderState]:
        """One frame: audio [B, hop] -> (codes [B, levels], new state), the codes `encode` gives that frame.

        The residual quantizer's nearest-codebook search (the same squared distance its `cdist`
        computes), written out for one frame: the library's forward costs far more in bookkeeping.
        """
        latent, state = self.encoder.forward(audio, state)
        residual, codes = latent[:, 0], []
        for books, books_sq in zip(state.books, state.books_sq):
            distance = (residual ** 2).sum(-1, keepdim=True) + books_sq - 2 * residual @ books.T
            code = distance.clamp_min(1e-8).argmin(-1)  # [B]
            residual = residual - books[code]
            codes.append(code)
        return torch.stack(codes, dim=1), state

    def codebooks(self) -> torch.Tensor:
        """[levels, codebook_size, latent_dim]."""
        return self.quantizer.codebooks

    def latent(self, codes: torch.Tensor, levels: int | None = None) -> torch.Tensor:
        """Sum of the codebook vectors of the first `levels` levels (-1 = absent): codes [..., L] -> [..., latent_dim]."""
        books = self.codebooks()
        levels = self.cfg.levels if levels is None else levels
        out = 0
        for level in range(levels):
            c = codes[..., level]
            out = out + books[level][c.clamp_min(0)] * (c >= 0).unsqueeze(-1)
        return out

    def decode(self, codes: torch.Tensor, levels: int | None = None) -> torch.Tensor:
        """codes [B, T, L] -> audio [B, T*hop], decoding only the coarse `levels`."""
        audio, _ = self.decoder(self.latent(codes, levels), self.decoder.start(codes.shape[0]))
        return audio

    def latent_table(self) -> torch.Tensor:
        """All codebooks as one table [levels * (codebook_size + 1), latent_dim] for `decode_step`.

        Each level gets a zero row in front, so code c of level l is row l * (K + 1) + c + 1 and an
        absent code (-1) lands on a zero row: a frame's latent is then one `embedding_bag` sum
        instead of a gather, mask and add per level. The quantizer updates its codebooks through
        `.data` (no version bump), so the table is not cached on the codec but copied per stream.
        """
        books = self.codebooks().detach()
        return F.pad(books, (0, 0, 1, 0)).reshape(-1, books.shape[-1])

    def start(self, batch: int = 1, sharing: DecoderState | None = None) -> DecoderState:
        """A fresh decoding stream. `sharing`: a stream of this codec playing now, whose latent table the new
        one reads too (a cue jump's fresh decoder: the codebooks have not changed since it was made)."""
        state = self.decoder.start(batch)
        if sharing is not None and sharing.table is not None:
            state.table = sharing.table
        else:
            with torch.no_grad():
                state.table = self.latent_table()
        return state

    def prepare_streaming(self) -> None:
        """Make `decode_step` at batch 1 as fast as it gets (see `Decoder.prepare_frame_step`); once per
        codec, where the model is loaded, so that no frame pays for it."""
        self.decoder.prepare_frame_step()

    @torch.no_grad()
    def decode_step(self, codes: torch.Tensor, state: DecoderState, levels: int | None = None):
        """One frame: codes [B, L] (-1 = absent) -> (audio [B, hop], new state). Streaming inference only."""
        levels = self.cfg.levels if levels is None else max(0, min(self.cfg.levels, int(levels)))
        if state.table is None:
            state.table = self.latent_table()
        rows = codes[:, :levels] + self._level_offsets[:levels]
        latent = F.embedding_bag(rows, state.table, mode="sum")  # [B, latent_dim]
        return self.decoder.frame_step(latent[:, None], state)

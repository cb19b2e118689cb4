"""The prior: an autoregressive model over code frames, steerable by world and descriptors.

A temporal model (GRU, or a small transformer with a rolling key/value cache) reads the previous
frame's codes plus the conditioning and yields one vector per frame; per-level heads then pick the
frame's codes coarse to fine, each head seeing the levels already chosen.

The conditioning (the world weights and the held descriptors, one vector) is added to the temporal
model's input and, with `condition_heads` (every model trained since it existed), to its output
before the heads too. Through the temporal model alone it was weak: the previous frame's codes
already say most of what the next frame will be, so a small prior learnt to lean on them, and a
held descriptor moved the output on some training seeds and not on others. Training sequences
that move to another world midway, with the condition, teach the same thing from the other side:
when the condition changes, the sound follows (distill_train/prior_stage.py).

Live use is one frame at a time:

    state = prior.start(seed=1)
    codes, state = prior.step(state, Controls(temperature=0.9, world_weights=[1, 0]))

The state has a fixed size, so a set can run for hours without memory growth.

At batch 1 a frame is a few MFLOP: its time goes to reading the weights (about 9 MB for the default
preset) and to the fixed cost of each tensor operation. `step` keeps the second small: it reuses the
conditioning while the controls do not change, feeds the GRU through one fused cell call, adds each
chosen code's head embedding once instead of re-summing all coarser levels per level, draws a frame's
random numbers in one call (`draws`) and samples each level in numpy (`sample`). `forward` (training)
and `level_logits` are the plain definitions; tests/test_fast_step.py checks that `step` samples
exactly what they give.

Unlike the codec's blocks, the prior keeps two definitions (`forward` and `step`, and the same pair in
its attention layers): `forward` is teacher-forced, every level of every frame given at once, while
`step` samples each level before the next can be computed and carries the recurrent or rolling
key/value memory, so one cannot be the other on a short input without losing the speed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .compiled import gru_from_codes, prior_heads, sample_code
from .config import PriorConfig

HISTORY = 256  # frames of past codes kept for freeze/loop (5 s at 50 frames/s)


@dataclass
class Controls:
    """What a performer steers, applied inside `Prior.step`. Live, the parameter registry builds it
    (control/params.py): each field from the control of the same name, `world_weights` from the
    world/ controls and `descriptors` from the descriptor/ controls."""

    # 0.9, not the plain 1.0: on Sonic Pi's samples, a minute generated at 0.9 moved more like the
    # collection (one-second Fréchet) on each of three seeds, its worlds were heard as themselves more
    # often and it was less noisy (docs/benchmarks.md, "Prior quality")
    temperature: float = 0.9
    topk: int = 0  # 0 = off
    topp: float = 1.0  # 1 = off
    # classifier-free guidance: 1 = plain conditional. At 2 each world, asked for alone, was heard as itself
    # far more often (docs/benchmarks.md, "Guidance 2 by default") and a world change at once
    guidance: float = 2.0
    world_weights: Sequence[float] | None = None  # None = no world (unconditioned)
    descriptors: Sequence[float | None] = (None, None, None)  # held target 0..1, or None = free
    levels: int | None = None  # sample only the coarse levels (None = all)
    mutate: float = 0.0  # chance each sampled code is replaced by a random one
    freeze: bool = False  # hold: loop the last `loop` frames
    loop: int = 8
    lock: int = 0  # coarse levels taken from the current cue passage


@dataclass
class PriorState:
    memory: list[torch.Tensor]  # row 0 conditional, row 1 unconditional (for guidance)
    prev: torch.Tensor  # [L] codes of the last frame, -1 = nothing yet
    history: torch.Tensor  # [HISTORY, L] ring of past frames
    written: int
    generator: torch.Generator
    steps: int = 0  # frames processed by the temporal model (transformer positions)
    cue: torch.Tensor | None = None  # [frames, L] passage used by lock
    cue_pos: int = 0
    frozen: torch.Tensor | None = None  # [n, L] the loop being held
    frozen_pos: int = 0
    # (controls key, [2, dim] tensor, its GRU input gates or None): reused while the controls stay the same
    condition: tuple | None = None

    def recent(self, n: int) -> torch.Tensor:
        n = max(1, min(n, self.written, HISTORY))
        idx = [(self.written - n + i) % HISTORY for i in range(n)]
        return self.history[idx]


@dataclass
class Checkpoint:
    """What `Prior.step` changes in a state, kept so that the step can be taken back (`Prior.rewind`):
    the player makes the frame playing again when a control that steers the prior arrives partway
    through it (live/player.py). The fields a step replaces are kept as they were (a shallow copy);
    those it writes in place are kept as the parts it writes: the history's row, the generator's
    state, and a transformer's key/value cache slot."""

    state: PriorState  # a shallow copy, before the step
    row: torch.Tensor  # the history row the step writes
    generator: torch.Tensor  # the generator's state
    slots: list[torch.Tensor]  # transformer: each memory tensor's slot the step writes ([] for the GRU)


@dataclass
class StepTables:
    """The weights `Prior.step` reads, rearranged for a frame at batch 1 (`Prior.prepare_streaming`).

    A frame's heads run one level at a time, each on h plus the embeddings of the codes chosen above
    it. Their first layers are linear, so all of them are applied to h in one product, and a chosen
    code then adds its embedding's image under each finer level's first layer, a row of `embedded`.
    Likewise the GRU's input gates are linear in its input, the previous frame's code embeddings plus
    the conditioning: each code's image is a row of `input_gates`, and the conditioning's is computed
    when the controls change. So the matrix-vector products a frame runs are one per level and the
    GRU's recurrent one, and the numbers are the plain definitions' up to float rounding
    (tests/test_fast_step.py). 20 MB for the default preset (13 for small), of which a frame reads the
    first layers and a row per code. The GRU's first layer (`compiled.gru_from_codes`) and the heads
    (the first layers' product, then per level GELU, second layer, guidance and the draw:
    `compiled.prior_heads`) are compiled.
    """

    first: np.ndarray  # every level's first layer, one above the other: [levels * head_hidden, dim]
    first_bias: np.ndarray
    # [level]: [codebook_size, (levels - 1 - level) * head_hidden], and an unused [1, 1] for the finest level
    # (so that it is a tuple of one type, as the compiled heads take it)
    embedded: tuple[np.ndarray, ...]
    second: tuple[np.ndarray, ...]  # [level]: the second layer's weight [codebook_size, head_hidden], its own
    second_bias: tuple[np.ndarray, ...]
    gru: list[list[torch.Tensor]]  # GRU only: `nn.GRU.all_weights`, as they are (a property that builds the lists)
    # GRU only (None for the transformer): the first layer's input gates of each code, each level's
    # rows after a zero row (an absent code, -1, lands on it), as `Codec.latent_table` lays them out
    input_gates: np.ndarray | None  # [levels * (codebook_size + 1), 3 * dim]
    level_offsets: np.ndarray | None  # [levels]: where each level's rows begin, past its zero row
    recurrent: tuple[np.ndarray, np.ndarray] | None  # GRU only: the first layer's W_hh and b_hh, its own


class AlibiAttention(nn.Module):
    """Causal self-attention over a sliding window, with ALiBi distance penalties.

    ALiBi depends only on the distance between frames, so a rolling cache needs no positions
    that grow without bound.
    """

    def __init__(self, dim: int, heads: int, context: int):
        super().__init__()
        self.heads, self.context = heads, context
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        slopes = torch.tensor([2 ** (-8 * (i + 1) / heads) for i in range(heads)])
        self.register_buffer("slopes", slopes, persistent=False)

    def _split(self, x):
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        q, k, v = (self._split(p) for p in self.qkv(x).chunk(3, dim=-1))
        pos = torch.arange(t, device=x.device)
        dist = pos[:, None] - pos[None, :]
        bias = -self.slopes[:, None, None] * dist.clamp_min(0)
        bias = bias.masked_fill((dist < 0) | (dist >= self.context), float("-inf"))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.out(y.transpose(1, 2).reshape(x.shape))

    def step(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, step: int) -> torch.Tensor:
        """x [B, 1, D]; keys/values [B, H, context, hd] ring buffers updated in place."""
        q, k, v = (self._split(p) for p in self.qkv(x).chunk(3, dim=-1))
        slot = step % self.context
        keys[:, :, slot] = k[:, :, 0]
        values[:, :, slot] = v[:, :, 0]
        # distance of each slot from now; slots never written are masked out
        ages = (slot - torch.arange(self.context, device=x.device)) % self.context
        bias = -self.slopes[:, None, None] * ages.to(x.dtype)
        bias = bias.masked_fill(ages > step, float("-inf"))
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=bias)
        return self.out(y.transpose(1, 2).reshape(x.shape))


class TransformerLayer(nn.Module):
    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
        self.attn = AlibiAttention(cfg.dim, cfg.heads, cfg.context)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, 4 * cfg.dim), nn.GELU(), nn.Linear(4 * cfg.dim, cfg.dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def step(self, x, keys, values, step):
        x = x + self.attn.step(self.norm1(x), keys, values, step)
        return x + self.mlp(self.norm2(x))


class Prior(nn.Module):
    def __init__(self, cfg: PriorConfig, levels: int, codebook_size: int):
        super().__init__()
        self.cfg, self.levels, self.codebook_size = cfg, levels, codebook_size
        self.code_embed = nn.ModuleList(nn.Embedding(codebook_size, cfg.dim) for _ in range(levels))
        self.start_frame = nn.Parameter(torch.zeros(cfg.dim))
        self.world_embed = nn.Embedding(cfg.worlds + 1, cfg.dim)  # last row: no world
        self.descriptor_proj = nn.Linear(cfg.descriptors * (cfg.descriptor_bins + 1), cfg.dim)  # (bins * held, held)
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.kind == "gru":
            self.gru = nn.GRU(cfg.dim, cfg.dim, cfg.layers, batch_first=True)
        elif cfg.kind == "transformer":
            self.layers = nn.ModuleList(TransformerLayer(cfg) for _ in range(cfg.layers))
        else:
            raise ValueError(f"unknown prior kind '{cfg.kind}' (gru or transformer)")
        self.norm = nn.LayerNorm(cfg.dim)
        self.head_embed = nn.ModuleList(nn.Embedding(codebook_size, cfg.dim) for _ in range(levels - 1))
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(cfg.dim, cfg.head_hidden), nn.GELU(), nn.Linear(cfg.head_hidden, codebook_size))
            for _ in range(levels)
        )
        self._tables: StepTables | None = None

    # -- shared pieces ---------------------------------------------------------------------------

    def embed_frames(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [..., L] (-1 = level absent) -> [..., dim]."""
        out = 0
        for level, table in enumerate(self.code_embed):
            c = codes[..., level]
            out = out + table(c.clamp_min(0)) * (c >= 0).unsqueeze(-1)
        return out

    def condition(self, world_weights: torch.Tensor, descriptors: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
        """world_weights [B, (T,) worlds+1] (rows sum to 1; last column = no world); descriptors, held [B, ..., 3]."""
        world = world_weights @ self.world_embed.weight
        bins = self.cfg.descriptor_bins
        desc = self.descriptor_proj(torch.cat([self.descriptor_bins(descriptors) * held.repeat_interleave(bins, -1), held],
                                              dim=-1))
        if desc.dim() > world.dim():
            world = world[:, None]
        return world + desc

    def descriptor_bins(self, descriptors: torch.Tensor) -> torch.Tensor:
        """Descriptor values [..., D] (0..1) as overlapping triangular bins [..., D * bins].

        Each part of a descriptor's range gets its own direction in the conditioning, as each world
        has its own embedding. Read as one raw value through a linear layer, "dark" and "bright" were
        only the two ends of one direction, which a small prior learnt slowly: the steering tests'
        model, kept at its best held-out step (200 of 500), held brightness the wrong way on some
        training seeds and CPUs (docs/benchmarks.md, "Steering").
        """
        bins = self.cfg.descriptor_bins
        if bins == 1:
            return descriptors
        centres = torch.linspace(0.0, 1.0, bins, device=descriptors.device, dtype=descriptors.dtype)
        return (1 - (descriptors[..., None] - centres).abs() * (bins - 1)).clamp_min(0).flatten(-2)

    def level_logits(self, h: torch.Tensor, chosen: torch.Tensor, level: int) -> torch.Tensor:
        """Logits of `level` given the temporal output h [..., dim] and the chosen coarser codes [..., >=level]."""
        x = h
        for j in range(level):
            x = x + self.head_embed[j](chosen[..., j])
        return self.heads[level](x)

    # -- training: whole sequences ---------------------------------------------------------------

    def forward(self, codes: torch.Tensor, world_weights: torch.Tensor, descriptors: torch.Tensor,
                held: torch.Tensor, input_levels: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits [B, T, L, K] for codes [B, T, L].

        world_weights are [B, W+1], or [B, T, W+1] for a condition that changes along the sequence;
        descriptors/held [B, T, 3] are the targets for each predicted frame. `input_levels` [B]
        optionally hides fine levels of the input frames, as happens live when fewer levels are
        sampled.
        """
        b, t, _ = codes.shape
        prev = codes[:, :-1]
        if input_levels is not None:
            keep = torch.arange(self.levels, device=codes.device) < input_levels[:, None, None]
            prev = prev.masked_fill(~keep, -1)
        x = torch.cat([self.start_frame.expand(b, 1, -1), self.embed_frames(prev)], dim=1)
        cond = self.condition(world_weights, descriptors, held)
        h = self.norm(self._temporal(self.drop(x + cond)))
        if self.cfg.condition_heads:
            h = h + cond
        return torch.stack([self.level_logits(h, codes, level) for level in range(self.levels)], dim=2)

    def _temporal(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.kind == "gru":
            return self.gru(x)[0]
        for layer in self.layers:
            x = layer(x)
        return x

    # -- live: one frame at a time ---------------------------------------------------------------

    def prepare_streaming(self) -> None:
        """Precompute what makes `step` faster at batch 1 (`StepTables`); once per model, where it is
        loaded. Training (`train()`) drops them, since they copy the weights as they are now. On the
        CPU only. Two steps of a throwaway state here load (or, the first time on a machine, compile) the
        compiled GRU cell and heads, so that no frame pays for it."""
        if self._tables is not None or self.training or self.start_frame.device.type != "cpu":
            return
        with torch.no_grad():
            first_weight = torch.cat([head[0].weight for head in self.heads])  # [levels * head_hidden, dim]
            first_bias = torch.cat([head[0].bias for head in self.heads])
            width = self.cfg.head_hidden
            embedded = tuple(F.linear(table.weight, first_weight[(level + 1) * width:]).numpy()
                             for level, table in enumerate(self.head_embed)) + (np.zeros((1, 1), np.float32),)
            input_gates = offsets = recurrent = None
            if self.cfg.kind == "gru":
                w_ih = self.gru.weight_ih_l0
                input_gates = torch.cat([F.pad(F.linear(table.weight, w_ih), (0, 0, 1, 0))
                                         for table in self.code_embed]).numpy()
                offsets = np.arange(self.levels) * (self.codebook_size + 1) + 1
                recurrent = (self.gru.weight_hh_l0.detach().numpy(), self.gru.bias_hh_l0.detach().numpy())
        second = tuple(head[2].weight.detach().numpy() for head in self.heads)
        second_bias = tuple(head[2].bias.detach().numpy() for head in self.heads)
        gru = self.gru.all_weights if self.cfg.kind == "gru" else []
        self._tables = StepTables(first_weight.numpy(), first_bias.numpy(), embedded, second, second_bias, gru,
                                  input_gates, offsets, recurrent)
        # (the GRU's loop runs from the second step; not under `kernels.playing`, whose switch is global:
        # a hot swap prepares its model in another thread while frames play)
        state = self.start(0)
        for _ in range(2):
            self.step(state, Controls())

    def train(self, mode: bool = True) -> "Prior":
        if mode:  # (eval() keeps them: the weights do not change outside training)
            self._tables = None
        return super().train(mode)

    def start(self, seed: int = 0) -> PriorState:
        p = self.start_frame
        if self.cfg.kind == "gru":
            memory = [p.new_zeros(self.cfg.layers, 2, self.cfg.dim)]
        else:
            hd = self.cfg.dim // self.cfg.heads
            shape = (self.cfg.layers, 2, self.cfg.heads, self.cfg.context, hd)
            memory = [p.new_zeros(shape), p.new_zeros(shape)]
        gen = torch.Generator(device=p.device)
        gen.manual_seed(int(seed))
        return PriorState(memory, torch.full((self.levels,), -1, dtype=torch.long, device=p.device),
                          torch.zeros(HISTORY, self.levels, dtype=torch.long, device=p.device), 0, gen)

    def checkpoint(self, state: PriorState) -> Checkpoint:
        """Keep what the next `step` of `state` changes (a few kB, a few microseconds), for `rewind`."""
        slots = []
        if self.cfg.kind == "transformer":  # (a GRU's step makes new memory tensors: the copy keeps the old)
            slot = state.steps % self.cfg.context
            slots = [m[:, :, :, slot].clone() for m in state.memory]
        return Checkpoint(replace(state, memory=list(state.memory)), state.history[state.written % HISTORY].clone(),
                          state.generator.get_state(), slots)

    def rewind(self, checkpoint: Checkpoint) -> PriorState:
        """The state as it was at `checkpoint`, taken just before one `step` (or none) of it, which it takes
        back (the state that step returned is not to be used again): the next step draws the same random
        numbers again, so the same controls choose the same codes."""
        before = checkpoint.state
        if checkpoint.slots:
            slot = before.steps % self.cfg.context
            for memory, kept in zip(before.memory, checkpoint.slots):
                memory[:, :, :, slot] = kept
        before.history[before.written % HISTORY] = checkpoint.row
        before.generator.set_state(checkpoint.generator)
        return replace(before, memory=list(before.memory))

    def _controls_condition(self, controls: Controls) -> torch.Tensor:
        """[2, dim]: row 0 with the performer's conditioning, row 1 unconditioned."""
        worlds, count = self.cfg.worlds, self.cfg.descriptors
        weights = [[0.0] * (worlds + 1), [0.0] * worlds + [1.0]]
        ww = controls.world_weights
        total = sum(max(0.0, float(w)) for w in ww) if ww is not None else 0.0
        if total > 0:
            for i, w in enumerate(list(ww)[:worlds]):
                weights[0][i] = max(0.0, float(w)) / total
        else:
            weights[0][-1] = 1.0
        values, held = [[0.0] * count, [0.0] * count], [[0.0] * count, [0.0] * count]
        for i, v in enumerate(list(controls.descriptors)[:count]):
            if v is not None:
                values[0][i] = min(1.0, max(0.0, float(v)))
                held[0][i] = 1.0
        device = self.start_frame.device
        return self.condition(*(torch.tensor(t, device=device) for t in (weights, values, held)))

    def _state_condition(self, state: PriorState, controls: Controls) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`_controls_condition` and, prepared, the GRU's input gates of it (see `StepTables`),
        recomputed only when the conditioning controls change."""
        ww = controls.world_weights
        key = (None if ww is None else tuple(ww), tuple(controls.descriptors))
        if state.condition is None or state.condition[0] != key:
            cond = self._controls_condition(controls)
            gates = None
            if self._tables is not None and self._tables.input_gates is not None:
                w_ih, _, b_ih, _ = self._tables.gru[0]
                gates = F.linear(cond, w_ih, b_ih)
            state.condition = (key, cond, gates)
        return state.condition[1], state.condition[2]

    def _embed_prev(self, state: PriorState) -> torch.Tensor:
        """`embed_frames(state.prev)` [dim] with one row read per present level, added in the same order."""
        x = None
        for table, c in zip(self.code_embed, state.prev.tolist()):
            if c >= 0:
                x = table.weight[c] if x is None else x + table.weight[c]
        return self.start_frame.new_zeros(self.cfg.dim) if x is None else x

    def _input(self, state: PriorState, cond: torch.Tensor) -> torch.Tensor:
        """The temporal model's input [2, dim]: the previous frame's codes (or the start) plus the conditioning."""
        return (self.start_frame if state.steps == 0 else self._embed_prev(state)) + cond

    def _advance(self, state: PriorState, cond: torch.Tensor, cond_gates: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """Feed the previous frame through the temporal model; returns h [2, dim] and updates memory.
        `cond_gates`: the GRU's input gates of `cond`, when prepared (see `StepTables`)."""
        if self.cfg.kind == "gru":  # nn.GRU's arithmetic, one fused cell call per layer
            tables = self._tables
            layers = self.gru.all_weights if tables is None else tables.gru
            if cond_gates is not None and tables is not None and state.steps > 0:  # compiled, from the tables
                x = np.empty((2, self.cfg.dim), np.float32)
                prev = np.ascontiguousarray(state.prev.numpy())  # (a cue's row may be a view: one compiled layout)
                gru_from_codes(prev, tables.level_offsets, tables.input_gates, cond_gates.numpy(),
                               state.memory[0][0].numpy(), *tables.recurrent, x)
                x = torch.from_numpy(x)
                hidden, layers = [x], layers[1:]
            else:
                x, hidden = self._input(state, cond), []
            for layer, weights in enumerate(layers, start=len(hidden)):
                x = torch.gru_cell(x, state.memory[0][layer], *weights)
                hidden.append(x)
            state.memory[0] = torch.stack(hidden)
        else:
            keys, values = state.memory
            x = self._input(state, cond)[:, None]
            for i, layer in enumerate(self.layers):
                x = layer.step(x, keys[i], values[i], state.steps)
            x = x[:, 0]
        state.steps += 1
        h = F.layer_norm(x, self.norm.normalized_shape, self.norm.weight, self.norm.bias, self.norm.eps)
        return h + cond if self.cfg.condition_heads else h

    def _remember(self, state: PriorState, codes: torch.Tensor) -> None:
        state.history[state.written % HISTORY] = codes
        state.written += 1
        state.prev = codes

    @torch.no_grad()
    def step(self, state: PriorState, controls: Controls, given: Sequence[int] | None = None
             ) -> tuple[torch.Tensor, PriorState]:
        """Choose the next frame's codes [L] (levels not sampled are -1). `given` [L]: codes to take
        instead of sampling (-1: sample that level), teacher-forced as `lock` takes a cue's, so the
        levels sampled around them follow them and the memory goes on from what was played (a held
        region of the code grid, see live/player.py)."""
        if controls.freeze:
            if state.frozen is None:
                state.frozen, state.frozen_pos = state.recent(controls.loop).clone(), 0
            codes = state.frozen[state.frozen_pos % state.frozen.shape[0]]
            state.frozen_pos += 1
            return codes, state
        state.frozen = None

        h = self._advance(state, *self._state_condition(state, controls))
        levels = self.levels if controls.levels is None else max(1, min(self.levels, int(controls.levels)))
        lock = min(int(controls.lock), levels) if state.cue is not None else 0
        chosen = [-1] * self.levels
        if lock:
            chosen[:lock] = state.cue[state.cue_pos % state.cue.shape[0], :lock].tolist()
            state.cue_pos += 1
        if given is not None:
            chosen = [g if g >= 0 and level < levels else c for level, (g, c) in enumerate(zip(given, chosen))]
        held = controls.world_weights is not None or any(d is not None for d in controls.descriptors)
        guided = controls.guidance != 1.0 and held  # (nothing held: the two rows agree, guidance changes nothing)
        noise = draws(sum(c < 0 for c in chosen[:levels]), self.codebook_size, state.generator)
        # level_logits(h, chosen, level) = heads[level](h + sum of head_embed[j][chosen[j]], j < level).
        # Plain: the running sum x grows by one embedding per level, added in the same order. Prepared
        # (`StepTables`): the heads' first layers are linear, so every level's first layer of h is
        # one product, and each chosen code adds its embedding's image under the finer levels' first layers;
        # the levels' loop is compiled (model/compiled.py).
        x = h if guided else h[:1]
        tables = self._tables
        if tables is not None:
            picked = np.array(chosen, dtype=np.int64)
            prior_heads(x.numpy(), tables.first, tables.first_bias, tables.second, tables.second_bias, tables.embedded,
                        picked, levels, float(controls.guidance), *_sampling(controls), noise)
            chosen = picked.tolist()
        else:
            rows = iter(noise)
            for level in range(levels):
                if chosen[level] < 0:
                    logits = self.heads[level](x).cpu().numpy()
                    logits = logits[1] + controls.guidance * (logits[0] - logits[1]) if guided else logits[0]
                    chosen[level] = sample(logits, controls, next(rows))
                if level + 1 < levels:
                    x = x + self.head_embed[level].weight[chosen[level]]
        codes = torch.tensor(chosen, dtype=torch.long, device=h.device)
        self._remember(state, codes)
        return codes, state

    @torch.no_grad()
    def step_logprobs(self, state: PriorState, codes: torch.Tensor, controls: Controls):
        """Teacher-forced step: log-probabilities [L, K] of the next frame, then advance with `codes`."""
        h = self._advance(state, self._controls_condition(controls))[:1]
        logits = torch.stack([self.level_logits(h, codes[None], level)[0] for level in range(self.levels)])
        self._remember(state, codes)
        return torch.log_softmax(logits, dim=-1), state

    @torch.no_grad()
    def jump(self, state: PriorState, passage: torch.Tensor, frame: int = 0, controls: Controls | None = None,
             warmup: int = 16) -> PriorState:
        """Prime the state from a training passage [frames, L] so generation continues from `frame`."""
        fresh = self.start(0)
        fresh.generator = state.generator
        fresh.condition = state.condition  # (the same controls give the same conditioning: kept, not made again)
        frame = max(0, min(int(frame), passage.shape[0] - 1))
        cond, gates = self._state_condition(fresh, controls or Controls())  # (kept: the next step reuses it)
        for codes in passage[max(0, frame - warmup): frame + 1]:
            self._advance(fresh, cond, gates)
            self._remember(fresh, codes.to(fresh.prev.device).long())
        fresh.cue, fresh.cue_pos = passage.long(), frame + 1
        return fresh


def draws(count: int, size: int, generator: torch.Generator) -> np.ndarray:
    """What `sample` needs for a frame's `count` sampled levels, from the prior's generator in one call
    [count, size + 2]: per level, Gumbel noise for each of the `size` codes, then two uniform numbers
    for mutation (whether, and to which code)."""
    uniform = torch.rand(count, size + 2, generator=generator, device=generator.device)
    uniform[:, :size].log_().neg_().log_().neg_()  # -log(-log u): u = 0 gives -inf, a code never drawn
    return uniform.cpu().numpy()


def sample(logits: np.ndarray, controls: Controls, noise: np.ndarray) -> int:
    """One code from logits [K] with temperature, top-k, top-p and mutation; `noise` [K + 2] is the
    level's row of `draws`.

    The draw is the Gumbel-max race: the code whose logit / temperature plus its Gumbel noise is the
    largest comes up with probability softmax(logits / temperature), what `torch.multinomial` draws
    by another route (tests/test_fast_step.py checks the frequencies). The noise for a whole frame
    comes from one call to the generator, and the race is compiled (`compiled.sample_code`, which the
    prepared step's heads call too): a level costs about a microsecond, where softmax,
    `torch.multinomial`'s exponential race and their draws cost 13.
    """
    return sample_code(np.ascontiguousarray(logits, dtype=np.float32), *_sampling(controls), noise)


def _sampling(controls: Controls) -> tuple[float, int, float, float]:
    """What `sample_code` reads of the controls, each as the one type it is compiled for."""
    return float(controls.temperature), int(controls.topk), float(controls.topp), float(controls.mutate)

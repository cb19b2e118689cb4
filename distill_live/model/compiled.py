"""A frame's arithmetic as plain loops compiled by numba: the decoder's frame step and the prior's heads.

At batch 1 a frame is a few MFLOP in a few hundred tensor operations, and the fixed cost of each
operation (dispatch, checks, allocation: 2-5 us in a TorchScript trace, about 1 in numpy) was most of
the frame. Here each decoder block is one compiled function (the depthwise convolution, layer norm,
the two products, GELU and the residual, with nothing between them), and so are the prior's GRU cell
and its loop over the levels (GELU, second layer, guidance and the draw). On this project's machine
(AMD EPYC, one thread, one run after the other): the default preset's decoder frame 0.25 ms against
the trace's 0.62-1.0, its prior step 0.30 against 0.43-0.72 (docs/benchmarks.md, "Compiled loops").

numba compiles with the LLVM its wheel ships, so a user's machine needs no compiler. The first
compile takes a few seconds and is cached on disk (numba's `cache=True`: beside this file, or in the
user's cache folder where that is read-only); it happens where a model is prepared for playing
(`Decoder.prepare_frame_step`, `Prior.prepare_streaming`), never in the generator thread. The
functions release Python's lock (`nogil`), so the OSC and MIDI threads run while a frame is computed,
as they did beside torch's kernels.

The same numbers as the plain definitions within float rounding: the sums run in another order
(tests/test_fast_step.py holds the decoder to 1e-5 of the signal's scale for every preset, and the
prior to the plain definition's codes). NaN and infinity propagate as in torch: the fast-math flags
allow reordering sums and fusing multiply-adds, not assuming that a broken model never makes NaN.

The decoder's weights are numpy views of its own parameters, not copies: what training writes into
them in place (an optimizer step, `load_state_dict`) is what the next frame plays.
"""
from __future__ import annotations

import numpy as np
import torch
from numba import njit

# reordered sums (so that a dot product runs in SIMD lanes) and fused multiply-adds; not `nnan`/`ninf`,
# which would let the compiler assume a broken model never makes NaN
FAST = {"reassoc", "contract", "nsz", "arcp"}


@njit(fastmath=FAST, nogil=True, cache=True)
def linear(x, weight, bias, out):
    """out[t] = weight @ x[t] + bias: x [T, in], weight [out, in] (torch's layout), out [T, out]. Two t's at a time,
    so that each weight is read once for both (the decoder's upsampled steps, guidance's two rows): a product's
    cost is reading its matrix. Each output is the same sum in the same order as one t at a time."""
    n_out, n_in = weight.shape
    steps = x.shape[0]
    t = 0
    while t + 1 < steps:
        for i in range(n_out):
            a = np.float32(0.0)
            b = np.float32(0.0)
            for j in range(n_in):
                w = weight[i, j]
                a += w * x[t, j]
                b += w * x[t + 1, j]
            out[t, i] = a + bias[i]
            out[t + 1, i] = b + bias[i]
        t += 2
    if t < steps:
        for i in range(n_out):
            a = np.float32(0.0)
            for j in range(n_in):
                a += weight[i, j] * x[t, j]
            out[t, i] = a + bias[i]


@njit(nogil=True, cache=True)
def _layer_norm(x, weight, bias, eps, out):
    steps, dim = x.shape
    for t in range(steps):
        mean = np.float32(0.0)
        for d in range(dim):
            mean += x[t, d]
        mean /= dim
        var = np.float32(0.0)
        for d in range(dim):
            z = x[t, d] - mean
            var += z * z
        var /= dim
        scale = np.float32(1.0) / np.sqrt(var + eps)
        for d in range(dim):
            out[t, d] = (x[t, d] - mean) * scale * weight[d] + bias[d]


# erf(x) ~ x P(x^2) / Q(x^2) on [-4, 4] (beyond it erf is +-1 in float32): a rational function fitted by least
# squares to erf at Chebyshev points of [0, 4] (Sanathanan-Koerner iterations, then refined), 3.6e-7 from erf at
# most in float32. Only multiplications, additions and one division, where `math.erf` is a call to the C library
# per value: GELU on 1,024 values takes 3.3 us against 11.6 (a frame of the default preset runs 10,000 of them).
_ERF_P = tuple(np.float32(c) for c in (1.1283788525564482, 0.21171254971394415, 0.05213602766653639,
                                       0.004192019688776731, 0.00015262338554324122, -1.9704895554353423e-06,
                                       1.9127544234972837e-08))
_ERF_Q = tuple(np.float32(c) for c in (1.0, 0.5209544406670716, 0.11987310836920526, 0.015355711616306023,
                                       0.0010717891465946365))


@njit(fastmath=FAST, nogil=True, cache=True)
def _gelu(v):
    """GELU with erf, as torch's `F.gelu` computes it, within 1.1e-6 of it in double precision (torch's own
    float32 GELU: 1.2e-6), erf from the rational function above."""
    x = v * np.float32(0.7071067811865476)
    x = x if x < np.float32(4.0) else np.float32(4.0)
    x = x if x > np.float32(-4.0) else np.float32(-4.0)
    u = x * x
    p0, p1, p2, p3, p4, p5, p6 = _ERF_P
    q0, q1, q2, q3, q4 = _ERF_Q
    p = (((((p6 * u + p5) * u + p4) * u + p3) * u + p2) * u + p1) * u + p0
    q = (((q4 * u + q3) * u + q2) * u + q1) * u + q0
    return np.float32(0.5) * v * (np.float32(1.0) + x * p / q)


@njit(fastmath=FAST, nogil=True, cache=True)
def _gelu_rows(x, out):
    """out = GELU(x), x and out [T, D] (may be the same array)."""
    for t in range(x.shape[0]):
        for i in range(x.shape[1]):
            out[t, i] = _gelu(x[t, i])


@njit(nogil=True, cache=True)
def _block(x, past, new_past, depthwise, depthwise_bias, norm_weight, norm_bias, eps, expand, expand_bias,
           project, project_bias, scale):
    """`CausalBlock.forward` in place on x [T, D]; past [D, context] -> new_past (the last `context` inputs)."""
    steps, dim = x.shape
    context = past.shape[1]
    h = np.empty((steps, dim), np.float32)
    for d in range(dim):
        for t in range(steps):
            acc = depthwise_bias[d]
            for k in range(context + 1):
                s = t + k
                acc += (past[d, s] if s < context else x[s - context, d]) * depthwise[d, k]
            h[t, d] = acc
        for c in range(context):
            s = c + steps
            new_past[d, c] = past[d, s] if s < context else x[s - context, d]
    normed = np.empty((steps, dim), np.float32)
    _layer_norm(h, norm_weight, norm_bias, eps, normed)
    wide = np.empty((steps, expand.shape[0]), np.float32)
    linear(normed, expand, expand_bias, wide)
    _gelu_rows(wide, wide)
    linear(wide, project, project_bias, h)
    for t in range(steps):
        for d in range(dim):
            x[t, d] += scale[d] * h[t, d]


@njit(nogil=True, cache=True)
def _polar(head_out, advance, start, spectrum):
    """The head's [log magnitude | phase] per step -> complex spectrum, phase advanced (see `ISTFTHead`)."""
    bins = spectrum.shape[1]
    period = advance.shape[0]
    for t in range(head_out.shape[0]):
        row = (start + t) % period
        for k in range(bins):
            mag = np.exp(min(head_out[t, k], np.float32(6.0)))
            phase = head_out[t, bins + k] + advance[row, k]
            spectrum[t, k] = complex(mag * np.cos(phase), mag * np.sin(phase))


@njit(nogil=True, cache=True)
def _overlap_add(frames, window, tail, hop, audio, new_tail):
    steps, n_fft = frames.shape
    length = steps * hop
    out = np.zeros(length + tail.shape[0], np.float32)
    out[:tail.shape[0]] = tail
    for t in range(steps):
        for i in range(n_fft):
            out[t * hop + i] += frames[t, i] * window[i]
    audio[:] = out[:length]
    new_tail[:] = out[length:]


def _view(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().numpy()


class CompiledFrameStep:
    """`Decoder.forward` for one frame at batch 1 (made by `Decoder.prepare_frame_step`).

    `(latent [1, latent_dim], tail [1, n], head_step, pasts [1, D, context] each) -> (audio [1, steps * hop],
    tail, head_step, pasts)`, every array fresh, so a state kept aside (a cue's first frame) stays as it was.
    """

    def __init__(self, decoder):
        cfg = decoder.cfg
        self.upsample, self.up_dim = cfg.upsample, cfg.up_dim
        self.blocks = [self._weights(b) for b in decoder.blocks]
        self.up_blocks = [self._weights(b) for b in decoder.up_blocks]
        self.inp = (_view(decoder.inp.weight), _view(decoder.inp.bias))
        self.norm = (_view(decoder.norm.weight), _view(decoder.norm.bias), np.float32(decoder.norm.eps))
        self.up = (_view(decoder.up.weight), _view(decoder.up.bias))
        self.up_norm = (_view(decoder.up_norm.weight), _view(decoder.up_norm.bias), np.float32(decoder.up_norm.eps))
        head = decoder.head
        self.head = (_view(head.out.weight), _view(head.out.bias))
        self.advance, self.window = _view(head.advance), _view(head.window)
        self.n_fft, self.hop, self.period = head.n_fft, head.hop, head.period

    @staticmethod
    def _weights(block) -> tuple:
        """A `CausalBlock`'s parameters as `_block` takes them (views, not copies)."""
        return (_view(block.depthwise.weight[:, 0]), _view(block.depthwise.bias), _view(block.norm.weight),
                _view(block.norm.bias), np.float32(block.norm.eps), _view(block.expand.weight),
                _view(block.expand.bias), _view(block.project.weight), _view(block.project.bias), _view(block.scale))

    def __call__(self, latent: np.ndarray, tail: np.ndarray, head_step: int, pasts: list[np.ndarray]):
        x = np.empty((1, self.inp[0].shape[0]), np.float32)
        linear(latent, *self.inp, x)
        new_pasts = [np.empty_like(p) for p in pasts]
        for weights, past, new in zip(self.blocks, pasts, new_pasts):
            _block(x, past[0], new[0], *weights)
        normed = np.empty_like(x)
        _layer_norm(x, *self.norm, normed)
        up = np.empty((1, self.up[0].shape[0]), np.float32)
        linear(normed, *self.up, up)
        x = up.reshape(self.upsample, self.up_dim)
        for weights, past, new in zip(self.up_blocks, pasts[len(self.blocks):], new_pasts[len(self.blocks):]):
            _block(x, past[0], new[0], *weights)
        normed = np.empty_like(x)
        _layer_norm(x, *self.up_norm, normed)
        head_out = np.empty((self.upsample, self.head[0].shape[0]), np.float32)
        linear(normed, *self.head, head_out)
        spectrum = np.empty((self.upsample, self.n_fft // 2 + 1), np.complex64)
        _polar(head_out, self.advance, head_step, spectrum)
        frames = np.fft.irfft(spectrum, n=self.n_fft)
        audio, new_tail = np.empty((1, self.upsample * self.hop), np.float32), np.empty_like(tail)
        _overlap_add(frames, self.window, tail[0], self.hop, audio[0], new_tail[0])
        return audio, new_tail, (head_step + self.upsample) % self.period, new_pasts


# -- the prior's heads and GRU ------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def sample_code(logits, temperature, topk, topp, mutate, noise):
    """One code from logits [K] (float32): see `prior.sample`, which calls this."""
    k = logits.shape[0]
    if mutate > 0 and noise[k] < mutate:
        return min(int(noise[k + 1] * k), k - 1)
    if temperature <= 1e-4:
        return int(np.argmax(logits))
    z = logits / np.float32(temperature)
    if 0 < topk < k:
        kth = np.partition(z, k - topk)[k - topk]
        for i in range(k):
            if z[i] < kth:
                z[i] = -np.inf
    if topp < 1.0:  # keep the smallest set of codes whose probabilities reach topp
        order = np.argsort(-z, kind="mergesort")
        probs = np.exp(z[order] - z[order[0]])
        probs /= probs.sum()
        reached = np.float32(0.0)
        for j in range(k):
            reached += probs[j]
            if reached - probs[j] > np.float32(topp):
                z[order[j]] = -np.inf
    return int(np.argmax(z + noise[:k]))


@njit(fastmath=FAST, nogil=True, cache=True)
def prior_heads(h, first, first_bias, second, second_bias, embedded, chosen, levels, guidance, temperature, topk,
                topp, mutate, noise):
    """The per-level heads of `Prior.step`, prepared (see `StepTables`), coarse to fine, in place on `chosen`.

    h [rows, dim]: the temporal model's output (row 0 conditional, row 1 unconditional when guided);
    first / first_bias: every level's first layer, one above the other; second / second_bias: each level's
    second layer; embedded[level]: each code's image under the finer levels' first layers; chosen [levels]
    (-1: sample it); noise: a row of `prior.draws` per level sampled, in order.
    """
    rows = h.shape[0]
    size, width = second[0].shape
    hidden = np.empty((rows, first.shape[0]), np.float32)
    linear(h, first, first_bias, hidden)
    activated = np.empty((rows, width), np.float32)
    logits = np.empty((rows, size), np.float32)
    drawn = 0
    for level in range(levels):
        if chosen[level] < 0:
            _gelu_rows(hidden[:, level * width:(level + 1) * width], activated)
            linear(activated, second[level], second_bias[level], logits)
            if rows == 2:
                row = logits[1] + np.float32(guidance) * (logits[0] - logits[1])
            else:
                row = logits[0].copy()
            chosen[level] = sample_code(row, temperature, topk, topp, mutate, noise[drawn])
            drawn += 1
        if level + 1 < levels:
            image = embedded[level][chosen[level]]
            for r in range(rows):
                for i in range(image.shape[0]):
                    hidden[r, (level + 1) * width + i] += image[i]



@njit(fastmath=FAST, nogil=True, cache=True)
def gru_from_codes(prev, offsets, input_gates, condition_gates, hidden, recurrent, recurrent_bias, out):
    """`torch.gru_cell` for the prior's first GRU layer, its input the previous frame's codes plus the
    conditioning, given as gates (see `prior.StepTables`): prev [levels] (-1: absent, a zero row),
    input_gates [levels * (K + 1), 3 * dim], condition_gates [rows, 3 * dim] (with the input bias),
    hidden [rows, dim] -> out [rows, dim]."""
    rows, dim = hidden.shape
    hidden_gates = np.empty((rows, 3 * dim), np.float32)
    linear(hidden, recurrent, recurrent_bias, hidden_gates)
    gates = np.empty(3 * dim, np.float32)
    for r in range(rows):
        gates[:] = condition_gates[r]
        for level in range(prev.shape[0]):
            gates += input_gates[prev[level] + offsets[level]]
        for d in range(dim):
            reset = np.float32(1.0) / (np.float32(1.0) + np.exp(-(gates[d] + hidden_gates[r, d])))
            update = np.float32(1.0) / (np.float32(1.0) + np.exp(-(gates[dim + d] + hidden_gates[r, dim + d])))
            new = np.tanh(gates[2 * dim + d] + reset * hidden_gates[r, 2 * dim + d])
            out[r, d] = new + (hidden[r, d] - new) * update

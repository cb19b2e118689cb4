"""Figures about what a model learned: codebook health (codec) and memorisation (prior)."""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import torch

COLLAPSE_UTILISATION = 0.10  # a level using fewer than 10% of its codes has collapsed
COLLAPSE_PERPLEXITY = 2.0  # ... or one whose codes are as predictable as a coin flip


def code_counts(codes: Iterable[torch.Tensor], levels: int, codebook_size: int) -> np.ndarray:
    """How often each code is used: [levels, codebook_size] from code sequences [frames, levels]."""
    counts = np.zeros((levels, codebook_size), dtype=np.int64)
    for seq in codes:
        seq = torch.as_tensor(seq).reshape(-1, levels).long().cpu()
        for level in range(levels):
            c = seq[:, level]
            c = c[c >= 0]
            counts[level] += torch.bincount(c, minlength=codebook_size).numpy()[:codebook_size]
    return counts


def codebook_health(counts: np.ndarray) -> list[dict]:
    """Per level: utilisation (share of codes used at least once), perplexity (exp of the entropy of
    the code distribution, in codes: 1 = one code, K = all used evenly) and dead codes (never used)."""
    out = []
    for level, row in enumerate(counts):
        total = row.sum()
        used = int((row > 0).sum())
        if total > 0:
            p = row[row > 0] / total
            perplexity = float(math.exp(-(p * np.log(p)).sum()))
        else:
            perplexity = 0.0
        out.append({"level": level, "utilization": round(used / len(row), 4), "perplexity": round(perplexity, 2),
                    "dead": int(len(row) - used)})
    return out


def collapse_warnings(health: Sequence[dict]) -> list[str]:
    """One plain line per collapsed level, empty when all levels are healthy."""
    lines = []
    for h in health:
        if h["utilization"] < COLLAPSE_UTILISATION or h["perplexity"] < COLLAPSE_PERPLEXITY:
            lines.append(f"warning: codebook level {h['level']} has collapsed: it uses {h['utilization']:.0%} of its "
                         f"codes (perplexity {h['perplexity']:.1f}, {h['dead']} dead); more data, a smaller "
                         f"--codebook-size or a lower --ema-decay may help")
    return lines


# -- memorisation ---------------------------------------------------------------------------------

_MOD = (1 << 61) - 1  # Mersenne prime for the rolling hash
_BASE = 1_000_003


def _frame_ids(seqs: list[np.ndarray], table: dict) -> list[np.ndarray]:
    """Map each frame (a row of codes) to a small integer shared across sequences."""
    out = []
    for seq in seqs:
        ids = np.empty(len(seq), dtype=np.int64)
        for i, row in enumerate(map(bytes, np.ascontiguousarray(seq, dtype=np.int64))):
            ids[i] = table.setdefault(row, len(table) + 1)
        out.append(ids)
    return out


def _prefix(ids: np.ndarray) -> list[int]:
    h = [0]
    for v in ids.tolist():
        h.append((h[-1] * _BASE + v) % _MOD)
    return h


def _ngram_hashes(prefix: list[int], n: int) -> set[int]:
    if len(prefix) - 1 < n:
        return set()
    p = pow(_BASE, n, _MOD)
    return {(prefix[i + n] - prefix[i] * p) % _MOD for i in range(len(prefix) - n)}


def memorisation(generated: torch.Tensor, training: Sequence[torch.Tensor], n: int = 8,
                 level0_only: bool = False) -> dict:
    """How much of a generated code sequence [T, L] copies the training sequences verbatim.

    Frames are compared whole (all levels equal), or only their level-0 code with `level0_only`.
    Returns the longest run of consecutive generated frames found as one run in a training sequence,
    and the share of generated n-grams (n consecutive frames) that occur in the training sequences.
    """
    def prep(seq):
        a = torch.as_tensor(seq).long().cpu().numpy()
        return a[:, :1] if level0_only else a

    table: dict = {}
    gen_ids = _frame_ids([prep(generated)], table)[0]
    train_ids = _frame_ids([prep(s) for s in training], table)
    gen_prefix = _prefix(gen_ids)
    train_prefix = [_prefix(ids) for ids in train_ids]

    def found(length: int) -> tuple[int, int]:
        """(generated n-grams of this length present in training, total generated n-grams)."""
        known = set()
        for p in train_prefix:
            known |= _ngram_hashes(p, length)
        if len(gen_prefix) - 1 < length:
            return 0, 0
        pw = pow(_BASE, length, _MOD)
        grams = [(gen_prefix[i + length] - gen_prefix[i] * pw) % _MOD for i in range(len(gen_prefix) - length)]
        return sum(g in known for g in grams), len(grams)

    lo, hi = 0, min(len(gen_ids), max((len(i) for i in train_ids), default=0))
    while lo < hi:  # longest run: present(k) is monotone in k
        mid = (lo + hi + 1) // 2
        if found(mid)[0] > 0:
            lo = mid
        else:
            hi = mid - 1
    hits, total = found(n)
    return {"frames": int(len(gen_ids)), "compare": "level 0 codes" if level0_only else "whole frames (all levels)",
            "longest_copy_frames": int(lo), f"ngram{n}_overlap": round(hits / total, 4) if total else 0.0}

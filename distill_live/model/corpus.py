"""Corpus playback: the second way to turn codes into sound, by playing the training recordings.

The neural decoder invents every sample, and a small one trained for half an hour smears transients
and loses the top octave. The model file can also hold the recordings its cues were encoded from
(16-bit PCM at the model's rate), and then each code frame the prior makes can be played as the
frame of real audio whose codes are nearest: real fidelity, steered by the prior.

Matching every frame to its nearest neighbour alone changes recording every frame (passages of
20-30 ms: the right colour, no motion), and so does a tolerance in distance: a prior's codes are
rarely as near any real frame as real frames are to each other. So continuation is the rule, judged
by rank: each frame, the share of the corpus nearer to the codes than the frame that would continue
the recording (0: it is the nearest) is averaged over the last few frames (the doubt), and the
recording is left only when the doubt passes `stick` (0: the nearest frame always wins; 0.75, the
default: once three quarters of the corpus fits better; 1: never before the recording ends). One
noisy frame does not make a jump; a prior that has moved on does, within a few frames. Frames are
compared by the latent of their coarse levels only (the fine levels are the detail a small prior
gets least right). Measured on sonic-pi-samples (bench/corpus.py): nearest frame with a distance
tolerance, passages of 20-30 ms at any setting; by rank at 0.75, a median of 0.74 s.

A jump crossfades (linearly) from the old recording, still running, into the new one, shifted by
up to a few milliseconds to where the two line up best (cross-correlation over the fade), and no
new jump starts while a fade runs. Continuing reads the recording straight on, so the codes of a
training file played back give that file's audio sample for sample.

Nothing here knows about threads or controls: the player passes stick, fade and world weights in.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

MAX_FADE = 0.1  # seconds: the longest crossfade at a jump
ALIGN = 0.003  # seconds: how far a jump may shift to line up with the recording it leaves
WORLD_PREFERENCE = 0.5  # a frame of an unweighted world counts this share of a typical distance farther
DOUBT = 0.3  # how quickly doubt about the recording playing follows the continuation's rank (per frame)


@dataclass
class CorpusState:
    """Where one voice's playback is: the next sample to play, the frame it belongs to, and the
    recording being faded out after a jump (its next sample, and samples of fade left)."""

    pos: int = -1  # -1: nothing played yet
    frame: int = -1
    old: int = 0
    fade_left: int = 0
    fade_len: int = 0
    doubt: float = 0.0  # how far down the candidates the continuation has been lately (0: the nearest)
    jumps: int = 0  # jumps made so far (the bench counts passages with it)


class Corpus:
    """The recordings of a model's cues, and the table of their frames to search.

    `recordings`: int16 audio [frames * hop] per cue; `cues`: codes [frames, levels] per cue;
    `worlds`: the world index of each cue (-1: not known)."""

    def __init__(self, codec, cues: list[torch.Tensor], recordings: list[torch.Tensor], worlds: list[int]):
        cfg = codec.cfg
        self.hop, self.sample_rate = cfg.hop, cfg.sample_rate
        self.coarse = max(1, cfg.levels // 2)
        self.pad = int(MAX_FADE * self.sample_rate) + int(ALIGN * self.sample_rate) + self.hop
        pieces, starts, left, frame_world = [np.zeros(self.pad, np.float32)], [], [], []
        offset = self.pad
        for cue, rec, world in zip(cues, recordings, worlds):
            n = len(cue)
            pieces += [rec.numpy().astype(np.float32) / 32768.0, np.zeros(self.pad, np.float32)]
            starts.append(offset + np.arange(n) * self.hop)
            left.append(np.arange(n - 1, -1, -1))
            frame_world.append(np.full(n, world))
            offset += n * self.hop + self.pad
        self.audio = np.concatenate(pieces)
        self.starts = np.concatenate(starts).astype(np.int64)
        self.left = np.concatenate(left)  # frames of its recording after each frame
        self.world = np.concatenate(frame_world).astype(np.int64)
        with torch.no_grad():
            self.books = codec.codebooks()[: self.coarse].detach().float().numpy()  # [coarse, K, D]
            keys = codec.latent(torch.cat(cues), self.coarse).float().numpy()
        self.keys = np.ascontiguousarray(keys)
        self.keys_sq = (keys ** 2).sum(1)
        self.frames = len(self.starts)
        pairs = np.random.default_rng(0).integers(self.frames, size=(2, min(4096, self.frames)))
        # how far apart two frames of the corpus typically are: the unit of the world preference
        self.spread = float(np.median(((keys[pairs[0]] - keys[pairs[1]]) ** 2).sum(1))) or 1.0

    @property
    def seconds(self) -> float:
        return self.frames * self.hop / self.sample_rate

    def start(self) -> CorpusState:
        return CorpusState()

    def distances(self, codes: torch.Tensor, world_weights: list[float] | None = None) -> np.ndarray:
        """Squared distance from the coarse latent of `codes` [levels] (-1 = absent) to every frame,
        plus the world preference: frames of worlds weighted less than the most weighted one count
        farther, up to WORLD_PREFERENCE typical frame steps for a world at 0."""
        c = codes[: self.coarse].tolist()
        query = np.zeros(self.keys.shape[1], np.float32)
        for level, code in enumerate(c):
            if code >= 0:
                query += self.books[level, code]
        d = self.keys_sq - 2.0 * (self.keys @ query) + float(query @ query)
        if world_weights is not None and max(world_weights) > 0:
            w = np.asarray(world_weights, np.float32)
            penalty = WORLD_PREFERENCE * self.spread * (1.0 - w / w.max())
            d += np.append(penalty, 0.0)[self.world]  # world -1 (not known): index -1, no penalty
        return d

    def play(self, state: CorpusState, codes: torch.Tensor, stick: float = 0.5, fade: float = 0.01,
             world_weights: list[float] | None = None) -> tuple[np.ndarray, CorpusState]:
        """One frame of audio [hop] for `codes` [levels], and the new state."""
        hop = self.hop
        d = self.distances(codes, world_weights)
        s = dataclasses.replace(state)
        if s.pos < 0:  # the first frame: start at the nearest frame, nothing to fade from
            s.frame = int(np.argmin(d))
            s.pos = int(self.starts[s.frame])
            out = self.audio[s.pos:s.pos + hop].copy()
            s.pos += hop
            return out, s
        # a recording is left while a fade's worth of it remains (the fade plays that out), and a jump
        # lands where a fade's worth of the new one follows: no fade ever runs past a recording's end
        length = max(1, min(int(fade * self.sample_rate), int(MAX_FADE * self.sample_rate)))
        need = -(-length // hop)
        landing = np.where(self.left > need, d, np.inf)
        best = int(np.argmin(landing)) if np.isfinite(landing).any() else int(np.argmin(d))
        can_go_on = self.left[s.frame] > need
        if can_go_on:
            rank = np.count_nonzero(d < d[s.frame + 1]) / self.frames  # share of frames nearer than going on
            s.doubt += (rank - s.doubt) * DOUBT
        if can_go_on and (s.fade_left > 0 or s.doubt <= stick):
            s.frame += 1
        else:
            s.old, s.fade_left, s.fade_len, s.doubt = s.pos, length, length, 0.0
            s.frame, s.pos = best, self._aligned(s.pos, int(self.starts[best]), length)
            s.jumps += 1
        out = self.audio[s.pos:s.pos + hop].copy()
        if s.fade_left > 0:
            n = min(hop, s.fade_left)
            done = s.fade_len - s.fade_left
            ramp = (np.arange(done, done + n, dtype=np.float32) + 1.0) / (s.fade_len + 1.0)
            out[:n] = self.audio[s.old:s.old + n] * (1.0 - ramp) + out[:n] * ramp
            s.old += n
            s.fade_left -= n
        s.pos += hop
        return out, s

    def _aligned(self, old: int, new: int, length: int) -> int:
        """`new` moved by up to ALIGN seconds to where the recording there best matches the next
        `length` samples of the one being left (normalised cross-correlation): the fade then mixes
        two waves in step instead of cancelling them."""
        lag = int(ALIGN * self.sample_rate)
        if lag == 0:
            return new
        leaving = self.audio[old:old + length]
        window = self.audio[new - lag:new + lag + length]
        corr = np.correlate(window, leaving, mode="valid")  # [2 * lag + 1]
        energy = np.convolve(window ** 2, np.ones(length, np.float32), mode="valid") + 1e-9
        return new - lag + int(np.argmax(corr / np.sqrt(energy)))

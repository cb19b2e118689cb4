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
new jump starts while a fade runs. Continuing reads the recording straight on, to its last frame, so
the codes of a training file played back give that file's audio sample for sample. A recording left
at its end has nothing after it to fade out: the fade then plays its last samples backwards
(reflected at the end), which goes on from the last sample without a step, where silence after an
abrupt ending would click.

Nothing here knows about threads or controls: the player passes stick, fade and world weights in.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

STICK = 0.75  # the default of /distill/corpus/stick (see above)
FADE = 0.02  # seconds: the default crossfade at a jump (/distill/corpus/fade)
MAX_FADE = 0.1  # seconds: the longest crossfade at a jump
ALIGN = 0.003  # seconds: how far a jump may shift to line up with the recording it leaves
WORLD_PREFERENCE = 0.5  # a frame of an unweighted world counts this share of a typical distance farther
DOUBT = 0.3  # how quickly doubt about the recording playing follows the continuation's rank (per frame)


@dataclass
class CorpusState:
    """Where one voice's playback is: the next sample to play, the frame it belongs to, and the
    recording being faded out after a jump (its next sample, its end, and samples of fade left)."""

    pos: int = -1  # -1: nothing played yet
    frame: int = -1
    old: int = 0
    old_end: int = 0  # the first sample after the recording being faded out
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
        pieces, starts, begins, left, frame_world = [np.zeros(self.pad, np.int16)], [], [], [], []
        offset = self.pad
        for cue, rec, world in zip(cues, recordings, worlds):
            n = len(cue)
            pieces += [rec.numpy(), np.zeros(self.pad, np.int16)]
            starts.append(offset + np.arange(n) * self.hop)
            begins.append(np.full(n, offset))
            left.append(np.arange(n - 1, -1, -1))
            frame_world.append(np.full(n, world))
            offset += n * self.hop + self.pad
        self.audio = np.concatenate(pieces)  # int16 as stored (an hour at 48 kHz is 330 MB so, twice that as float)
        self.starts = np.concatenate(starts).astype(np.int64)
        self.begins = np.concatenate(begins).astype(np.int64)  # the first sample of each frame's recording
        self.left = np.concatenate(left)  # frames of its recording after each frame
        self.world = np.concatenate(frame_world).astype(np.int64)
        # the search is torch's, not numpy's: numpy's BLAS runs its own threads, and on busy cores a
        # matrix-vector product took 13 ms of wall time where torch on the engine's one thread takes 0.3
        with torch.no_grad():
            self.books = codec.codebooks()[: self.coarse].detach().float().clone()  # [coarse, K, D]
            self.keys = codec.latent(torch.cat(cues), self.coarse).detach().float().contiguous()
        self.keys_sq = (self.keys ** 2).sum(1)
        self.frames = len(self.starts)
        pairs = torch.from_numpy(np.random.default_rng(0).integers(self.frames, size=(2, min(4096, self.frames))))
        # how far apart two frames of the corpus typically are: the unit of the world preference
        self.spread = float(((self.keys[pairs[0]] - self.keys[pairs[1]]) ** 2).sum(1).median()) or 1.0

    @property
    def seconds(self) -> float:
        return self.frames * self.hop / self.sample_rate

    def start(self) -> CorpusState:
        return CorpusState()

    def distances(self, codes: torch.Tensor, world_weights: list[float] | None = None) -> np.ndarray:
        """Squared distance from the coarse latent of `codes` [levels] (-1 = absent) to every frame,
        plus the world preference: frames of worlds weighted less than the most weighted one count
        farther, up to WORLD_PREFERENCE of a typical distance between two frames for a world at 0."""
        query = torch.zeros(self.keys.shape[1])
        for level, code in enumerate(codes[: self.coarse].tolist()):
            if code >= 0:
                query += self.books[level, code]
        d = (self.keys_sq - 2.0 * torch.mv(self.keys, query) + query.dot(query)).numpy()
        if world_weights is not None and max(world_weights) > 0:
            w = np.asarray(world_weights, np.float32)
            penalty = WORLD_PREFERENCE * self.spread * (1.0 - w / w.max())
            d += np.append(penalty, 0.0)[self.world]  # world -1 (not known): index -1, no penalty
        return d

    def play(self, state: CorpusState, codes: torch.Tensor, stick: float = STICK, fade: float = FADE,
             world_weights: list[float] | None = None) -> tuple[np.ndarray, CorpusState]:
        """One frame of audio [hop] for `codes` [levels], and the new state."""
        hop = self.hop
        d = self.distances(codes, world_weights)
        s = dataclasses.replace(state)
        if s.pos < 0:  # the first frame: start at the nearest frame, nothing to fade from
            s.frame = int(np.argmin(d))
            s.pos = int(self.starts[s.frame])
            out = self.read(s.pos, hop)
            s.pos += hop
            return out, s
        # a jump lands where two fades' worth of the new recording follow (one to fade in, one to leave
        # it again), so no fade is cut short by the next
        length = max(1, min(int(fade * self.sample_rate), int(MAX_FADE * self.sample_rate)))
        need = -(-length // hop)
        landing = np.where(self.left > 2 * need, d, np.inf)
        best = int(np.argmin(landing)) if np.isfinite(landing).any() else int(np.argmin(d))
        end = self.end(s.frame)
        can_go_on = self.left[s.frame] > 0 and s.pos + hop <= end  # (a jump's alignment may have shifted it later)
        if can_go_on:
            rank = np.count_nonzero(d < d[s.frame + 1]) / self.frames  # share of frames nearer than going on
            s.doubt += (rank - s.doubt) * DOUBT
        if can_go_on and (s.fade_left > 0 or s.doubt <= stick):
            s.frame += 1
        else:
            s.old, s.old_end = s.pos, end
            s.fade_left, s.fade_len, s.doubt = length, length, 0.0
            s.frame, s.pos = best, self._aligned(self.leaving(s.old, s.old_end, length), best)
            s.jumps += 1
        out = self.read(s.pos, hop)
        if s.fade_left > 0:
            n = min(hop, s.fade_left)
            done = s.fade_len - s.fade_left
            ramp = (np.arange(done, done + n, dtype=np.float32) + 1.0) / (s.fade_len + 1.0)
            out[:n] = self.leaving(s.old, s.old_end, n) * (1.0 - ramp) + out[:n] * ramp
            s.old += n
            s.fade_left -= n
        s.pos += hop
        return out, s

    def read(self, start: int, n: int) -> np.ndarray:
        """`n` samples of the recordings from `start`, as float32."""
        return self.audio[start:start + n].astype(np.float32) * (1.0 / 32768.0)

    def end(self, frame: int) -> int:
        """The first sample after the recording `frame` belongs to."""
        return int(self.starts[frame]) + (int(self.left[frame]) + 1) * self.hop

    def leaving(self, start: int, end: int, n: int) -> np.ndarray:
        """`n` samples of the recording being faded out, from `start`, reflected at its `end` (the first
        sample after it): past its end it plays backwards, going on from its last sample without a step."""
        at = np.arange(start, start + n)
        at = np.where(at < end, at, 2 * end - 1 - at)
        return self.audio[at].astype(np.float32) * (1.0 / 32768.0)

    def _aligned(self, leaving: np.ndarray, frame: int) -> int:
        """Where to start playing `frame`: its first sample, moved by up to ALIGN seconds (never before
        its recording's start) to where the recording best matches `leaving`, the samples of the one
        being left over the fade (normalised cross-correlation): the fade then mixes two waves in step
        instead of cancelling them."""
        lag, length, new = int(ALIGN * self.sample_rate), len(leaving), int(self.starts[frame])
        if lag == 0:
            return new
        begin = max(new - lag, int(self.begins[frame]))
        window = self.read(begin, new + lag - begin + length)
        corr = np.correlate(window, leaving, mode="valid")  # [new + lag - begin + 1]
        energy = np.convolve(window ** 2, np.ones(length, np.float32), mode="valid") + 1e-9
        return begin + int(np.argmax(corr / np.sqrt(energy)))

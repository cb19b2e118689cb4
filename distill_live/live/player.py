"""The Player turns parameters into audio, one chunk (a sixteenth of a frame) at a time.

It is the heart of both `render` (offline, as fast as possible) and `serve` (the generator thread
feeding the ring buffer). The model makes a whole frame at once (one prior step, one decoder
step, any crossfade between voices), but control messages are applied every chunk, and the
play/stop fade and the gain are applied per chunk too: so starting, stopping and gain answer
within a chunk (1.25 ms; live, the card applies the gain itself, to what is queued too: see
live/cardqueue.py). What steers the prior (worlds, descriptors, temperature...) is heard from the
chunk it arrives at too: the frame playing is made again under it, from the same memory and random
numbers, and crossfaded to over `SPLICE` (`Player._remake`); live, the engine puts such a chunk in place
of what the card has queued (`heard_at_once`). Triggers do not wait for the frame to
end: a start from silence, a cue jump and a reset begin a new frame at the chunk they arrive, and a
cue or reset fades from the rest of the frame it cuts into over `SPLICE` (4 ms: shorter than any
note onset a player would call late, long enough that the cut is not heard as a click). A cue jump's first frame is the passage's
own first frame, as the codec encoded it: what is heard at once is the passage's start, with no
prior step between the trigger and the sound, and the prior, primed with that frame, goes on from
the next. Render does the same, so a take renders again sample for sample. That first frame is
decoded once and kept (`FirstFrames`): a key pressed again waits for no decoding at all.

With an audio input (serve --input, see audioinput.py) each frame also encodes a frame of the
input, and the input's codes can take the prior's place: `/distill/input/mode` 1 (resynth) decodes
the input's codes, so the model plays what the input plays; 2 (continue) does the same while the
input is above the gate, and once it has stayed below for `/distill/input/hold` seconds the prior
takes over from what the input last played. Whenever the prior takes over from the input (the gate
closing, a switch to mode 0, a freeze) it is first primed, as a cue jump does, with the input's
last loud frames.

The Player remembers the codes of the last `HISTORY` frames it played (what the code grid shows),
numbered from 0 at the first frame. `/distill/region/...` holds a region of them: its frames' codes
are taken when it is held (or its span moves) and replayed frame by frame in a loop, teacher-forced
into the prior (`Prior.step`'s `given`), so the prior's memory follows what plays and a release
carries on from it. Lock gives the region's levels and the prior samples the others around them;
loop gives whole frames; mutate is lock with each held code replaced at random, at the
`/distill/mutate` chance, as it comes round, so the loop evolves. Where the region holds no code
(frames played while stopped, levels not decoded) the prior fills in. All of it happens at the frame
boundary in this thread, and is as reproducible in `render` as every other control.

A model that holds its recordings can also play the codes as those recordings (model/corpus.py):
`/distill/corpus/mix` crossfades from the neural decoder (0) to the corpus (1). A decoder at a mix
that does not hear it is not run, so either alone costs only itself; the neural decoder starts
afresh when it comes back, under the mix's ramp.
"""
from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from distill_live.control.params import INPUT_MODES, PREFIX, REGION_MODES, ParamRegistry
from distill_live.model import kernels
from distill_live.model.codec import EncoderState
from distill_live.model.corpus import FADE, STICK, CorpusState
from distill_live.model.modelfile import DistillModel
from distill_live.model.prior import HISTORY, Controls, PriorState

from .audioinput import AudioInput

PLAY_FADE = 0.05  # seconds: start/stop fade
CHUNKS = 16  # chunks per frame: how often controls are applied (1.25 ms at 50 frames/s)
SPLICE = 0.004  # seconds: the crossfade where a trigger cuts into a frame (see `Player.next_chunk`)
GESTURE = 0.1  # seconds without a steering message before the next one remakes the frame playing (`Player._remake`)
# A gesture's onset pulls harder (`Player._pulled`): the ONSET_FRAMES frames that first play it are made with
# guidance's push (guidance - 1) ONSET_PULL times as far, up to guidance ONSET_MOST (8 at the default 2). On the
# demo a held loudness was first heard within 5-7 ms in nine trials of ten instead of 27-31 (docs/benchmarks.md,
# "A gesture's onset pulls harder")
ONSET_PULL = 7.0
ONSET_FRAMES = 2
ONSET_MOST = 8.0
INPUT_MEMORY = 16  # loud input frames the prior is primed with when it takes over (as many as a cue jump)
FIRST_FRAMES = 128  # cue jumps' first frames kept decoded (`FirstFrames`): one per key of a keyboard


def soft_clip(audio: np.ndarray, knee: float = 0.9) -> np.ndarray:
    """The output's safety: samples within ±`knee` pass unchanged, louder ones bend smoothly towards ±1
    and never reach past it. A decoder can burst several times louder than anything it was trained
    on (the demo, now and then: peaks of 4-5), and a sound card would clip that hard at full scale."""
    if np.abs(audio).max(initial=0.0) <= knee:  # the usual case, in one pass (NaN compares False)
        return audio
    if not np.isfinite(audio).all():  # a model gone wrong plays silence, not noise at full scale
        audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
    over = np.abs(audio) > knee
    if not over.any():
        return audio
    room = 1.0 - knee
    shaped = audio.copy()
    loud = audio[over]
    shaped[over] = np.sign(loud) * (knee + room * np.tanh((np.abs(loud) - knee) / room))
    return shaped


def fade_in(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """`new`, crossfaded from `old` over `old`'s length (a new array): how a cut or a splice avoids a click."""
    n = len(old)
    fade = np.arange(1, n + 1, dtype=np.float32) / (n + 1)
    return np.concatenate([old * (1.0 - fade) + new[:n] * fade, new[n:]])


@dataclass
class Heard:
    """One frame of the audio input, and what the Player decided about it."""

    audio: torch.Tensor  # [1, hop], gain applied
    loud: bool  # above the gate: worth remembering for the prior
    leads: bool  # its codes are played this frame, not the prior's


@dataclass
class Playback:
    """How a frame's codes become sound: the corpus's share (at the frame's start and end), and how it
    plays (see Corpus.play)."""

    mix_from: float = 0.0
    mix_to: float = 0.0
    stick: float = STICK
    fade: float = FADE


@dataclass
class Region:
    """A held region of the code grid: the codes of its frames, every level, as they were played (the
    mode says which levels it gives), and where its loop is."""

    codes: torch.Tensor  # [frames, L]
    pos: int = 0


def _coarse(codes: torch.Tensor, controls: Controls) -> torch.Tensor:
    """Codes to play instead of the prior's, with the levels `controls.levels` leaves out absent (-1)."""
    if controls.levels is None:
        return codes
    codes = codes.clone()  # (the input's memory or the cue holds the same tensor)
    codes[int(controls.levels):] = -1
    return codes


class FirstFrames:
    """The frames a fresh decoder makes of given codes, made once and kept (the `size` last used): a cue jump's
    first frame then waits for no decoding. A fresh decoder remembers nothing, so its first frame depends on the
    codes and the model alone, and the frame kept is the one it would make again. Its audio is kept read-only,
    and its state is only read by the steps after it (a decoder step makes a new state)."""

    def __init__(self, size: int = FIRST_FRAMES):
        self.size = size
        self.model: DistillModel | None = None  # whose frames are kept (another model's clears them)
        self.kept: OrderedDict[bytes, tuple[np.ndarray, object]] = OrderedDict()

    def decode(self, model: DistillModel, codes: torch.Tensor, fresh: object) -> tuple[np.ndarray, object]:
        """What `model.codec.decode_step` makes of `codes` [levels] from `fresh`, a fresh decoder state:
        (audio [hop], the decoder's state after it)."""
        if model is not self.model:
            self.model, self.kept = model, OrderedDict()
        key = codes.numpy().tobytes()
        frame = self.kept.get(key)
        if frame is not None:
            self.kept.move_to_end(key)
            return frame
        audio, state = model.codec.decode_step(codes[None], fresh)
        audio = audio[0].numpy().copy()  # (the decoder's output may be a view of its state)
        audio.setflags(write=False)
        self.kept[key] = audio, state
        if len(self.kept) > self.size:
            self.kept.popitem(last=False)
        return audio, state


@dataclass
class Voice:
    """One model and the memory of its prior, decoder and (with an audio input) encoder."""

    model: DistillModel
    prior_state: PriorState
    decoder_state: object
    encoder_state: EncoderState | None = None
    memory: deque = field(default_factory=lambda: deque(maxlen=INPUT_MEMORY))  # codes of the last loud input frames
    lead: torch.Tensor | None = None  # the input's codes, to play at the next step instead of the prior's
    following: bool = False  # the last frame played the input's codes
    corpus_state: CorpusState | None = None  # playback of the recordings (None: not playing them)
    neural: bool = True  # the neural decoder ran at the last frame (its state is current)
    # a cue jumped to (/distill/cue): its first frame (`opening`) plays at the next step, as recorded,
    # and the prior is primed with it (`Prior.jump` from `cue`) at the step after, so the trigger's
    # first frame waits for no work of the prior
    opening: torch.Tensor | None = None
    cue: torch.Tensor | None = None
    # its decoder is fresh, and the first frame it decodes comes from here (a cue jump's voice; then None)
    first_frames: FirstFrames | None = None

    @classmethod
    def start(cls, model: DistillModel, seed: int, listening: bool | EncoderState | None = False) -> "Voice":
        """A fresh prior and decoder. `listening`: whether the voice encodes the audio input, from a
        fresh encoder state (True) or carrying on with one of the same model's (a reset restarts the
        prior, not the encoding of an input that goes on)."""
        if listening is True:
            listening = model.codec.start_encoding(1)
        model.prepare_streaming()  # (at once when done: a hot-swapped model was prepared as it loaded)
        return cls(model, model.prior.start(seed), model.codec.start(1), listening or None)

    def listen(self, heard: Heard, encoded: tuple[torch.Tensor, EncoderState] | None = None
               ) -> tuple[torch.Tensor, EncoderState]:
        """Encode a frame of the audio input (before `step`); returns (codes, new encoder state).
        `encoded`: what another voice with this model and encoder state got from the same frame."""
        codes, self.encoder_state = encoded or self.model.codec.encode_step(heard.audio, self.encoder_state)
        encoded = codes, self.encoder_state
        codes = codes[0]
        if heard.loud:
            self.memory.append(codes)
        self.lead = codes if heard.leads else None
        return encoded

    def step(self, controls: Controls, playback: Playback | None = None, given: list[int] | None = None
             ) -> tuple[np.ndarray, torch.Tensor]:
        """Make a frame: (audio, codes). `given`: codes the prior takes instead of sampling (-1: sample)."""
        if self.lead is not None:
            codes, self.lead = _coarse(self.lead, controls), None
            self.following = True
        elif self.opening is not None:
            codes, self.opening = _coarse(self.opening, controls), None
        else:
            if self.cue is not None:  # the prior goes on from the cue's first frame
                self.prior_state, self.cue = self.model.prior.jump(self.prior_state, self.cue, 0, controls), None
            if self.following:
                self._prime(controls)
            codes, self.prior_state = self.model.prior.step(self.prior_state, controls, given)
        return self.sound(codes, controls, playback or Playback()), codes

    @property
    def prior_plays(self) -> bool:
        """The next `step` is the prior's: not the input's codes, nor a cue's first frame or the jump after it."""
        return self.lead is None and self.opening is None and self.cue is None and not self.following

    def checkpoint(self) -> tuple:
        """What the next `step` changes, for `rewind` (the decoder's and the corpus's states are replaced
        by a step, never written into, so the old ones are kept as they are)."""
        return self.model.prior.checkpoint(self.prior_state), self.decoder_state, self.corpus_state, self.neural

    def rewind(self, checkpoint: tuple) -> None:
        """Take back the `step` made since `checkpoint`: the next step makes the same frame again, with the
        same random numbers, under the controls it is then given."""
        prior, self.decoder_state, self.corpus_state, self.neural = checkpoint
        self.prior_state = self.model.prior.rewind(prior)

    def sound(self, codes: torch.Tensor, controls: Controls, playback: Playback) -> np.ndarray:
        """The frame's audio: the neural decoder, the corpus, or a crossfade of the two."""
        corpus = self.model.corpus if playback.mix_from > 0 or playback.mix_to > 0 else None
        if corpus is None:
            self.corpus_state = None
        elif self.corpus_state is None:
            self.corpus_state = corpus.start()
        neural = corpus is None or playback.mix_from < 1 or playback.mix_to < 1
        if neural:
            if not self.neural:
                self.decoder_state = self.model.codec.start(1)
            if self.first_frames is not None:
                audio, self.decoder_state = self.first_frames.decode(self.model, codes, self.decoder_state)
            else:
                audio, self.decoder_state = self.model.codec.decode_step(codes[None], self.decoder_state)
                audio = audio[0].numpy()
            self.first_frames = None
        self.neural = neural
        if corpus is None:
            return audio
        played, self.corpus_state = corpus.play(self.corpus_state, codes, playback.stick, playback.fade,
                                                controls.world_weights)
        if not neural:
            return played
        mix = np.linspace(playback.mix_from, playback.mix_to, len(played) + 1, dtype=np.float32)[1:]
        return audio * (1.0 - mix) + played * mix

    def _prime(self, controls: Controls) -> None:
        """The prior takes over from the input: start it from the input's last loud frames, as a cue
        jump starts it from a training passage (the cue that `lock` follows stays the performer's)."""
        self.following = False
        if not self.memory:
            return
        old = self.prior_state
        self.prior_state = self.model.prior.jump(old, torch.stack(list(self.memory)), len(self.memory) - 1, controls)
        self.prior_state.cue, self.prior_state.cue_pos = old.cue, old.cue_pos


@dataclass
class Remake:
    """How to make the frame playing again (`Player._remake`): the voice that made it, what its step changed,
    and what it read."""

    voice: Voice
    checkpoint: tuple
    controls: Controls
    playback: Playback


class Player:
    def __init__(self, model: DistillModel, registry: ParamRegistry | None = None, seed: int = 0,
                 audio_input: AudioInput | None = None, on_fault: Callable[[str], None] | None = None):
        if model.prior is None:
            raise ValueError("this model has only a codec; train a prior (distill-train --stages prior) to play it")
        self.registry = registry or ParamRegistry.for_model(model, audio_input is not None)
        self.input = audio_input
        if audio_input is not None and f"{PREFIX}/input/mode" not in self.registry:
            raise ValueError("a player with an audio input needs a registry made with audio_input=True")
        self.hop = model.config.codec.hop
        self.sample_rate = model.config.codec.sample_rate
        self.frame_rate = model.config.codec.frame_rate
        self.chunk = self.hop // max(n for n in range(1, CHUNKS + 1) if self.hop % n == 0)
        self.frames = 0  # model frames made (silent ones included)
        self.samples = 0  # samples played
        self.voice = Voice.start(model, seed, listening=audio_input is not None)
        self.first_frames = FirstFrames()  # cue jumps' first frames, decoded once (`FirstFrames`)
        self.input_gain = 1.0
        self.quiet = math.inf  # seconds the input has been below the gate
        self.fading: tuple[Voice, int, int] | None = None  # old voice, frames left, fade length
        self.smoothed: dict[str, float] = {}  # eased values of the gain, the corpus mix and the input gain
        self.remake: Remake | None = None  # how to make the frame playing again (None: it cannot be)
        self.remade = False  # the last chunk made the frame playing again (its codes changed)
        # the last chunk plays, from its first sample, a steering message for now at a gesture's onset (the
        # engine puts it in place of what the card has queued: engine.py, `poll`)
        self.heard_at_once = False
        self._frame_controls: Controls | None = None  # what the frame playing was made under (None: silence)
        # a gesture's onset for now came in the frame's last SPLICE: the next frame, as soon, plays it from its first
        # chunk (`heard_at_once`), and the engine makes the chunks up to it at once
        self.onset_waits = False
        self._pull_frames = 0  # frames left that a gesture's onset pulls harder (`_pulled`)
        self._steered_at = -math.inf  # `time` when a message that steers the prior was last applied
        self.envelope = 0.0  # play/stop fade level
        self.gain = float(self.registry.get("gain"))
        self.corpus_mix = 0.0  # the corpus's share at the end of the last frame
        self.last_codes = torch.full((model.config.codec.levels,), -1, dtype=torch.long)
        self.history = torch.full((HISTORY, model.config.codec.levels), -1, dtype=torch.long)  # frame n at n % HISTORY
        self.region: Region | None = None  # the held region (None: free, or nothing to hold yet)
        self.retake = False  # take the region's codes again at the next frame (it was held, or its span moved)
        self.on_fault = on_fault or (lambda sentence: None)  # told what went wrong (render has no one to tell)
        self.applied: list[tuple[str, tuple]] = []  # messages applied at the last chunk (the engine reports them)
        self.raw = np.zeros(self.hop, np.float32)  # the current frame, before fade and gain
        self.ungained = np.zeros(self.chunk, np.float32)  # the last chunk before the gain (the card gains it itself)
        self.pos = self.hop  # where the next chunk starts in `raw`; hop = a new frame is needed
        self.raw_silent = True  # `raw` was not computed (stopped)
        self.cut = False  # a trigger was applied: the next chunk begins a new frame, not the rest of this one
        self.splice = round(SPLICE * self.sample_rate)  # samples a cut fades over
        self._last_cut = -self.hop  # `samples` when a trigger last cut in
        self._frame_ramp = np.linspace(0.0, 1.0, self.hop, endpoint=False, dtype=np.float32) + 1.0 / self.hop
        self._ramp = np.linspace(0.0, 1.0, self.chunk, endpoint=False, dtype=np.float32) + 1.0 / self.chunk

    @property
    def model(self) -> DistillModel:
        return self.voice.model

    @property
    def time(self) -> float:
        return self.samples / self.sample_rate

    def _smooth(self, address: str, target: float, rate: float) -> float:
        """One step of `address`'s easing towards `target`, at `rate` steps a second, kept in `smoothed`."""
        memory = self.smoothed
        tau = self.registry.params[address].smooth
        current = memory.get(address, target)
        if tau > 0:
            current += (target - current) * (1.0 - math.exp(-1.0 / (tau * rate)))
            if abs(target - current) < 1e-6:  # arrive, so gain 0 is digital silence
                current = target
        memory[address] = current
        return current

    def playback(self) -> Playback:
        """How this frame's codes become sound, from the corpus/ controls (the mix eased at the frame rate)."""
        start = self.corpus_mix
        if self.registry.corpus:
            self.corpus_mix = self._smooth(f"{PREFIX}/corpus/mix", self.registry.get("corpus/mix"), self.frame_rate)
            return Playback(start, self.corpus_mix, self.registry.get("corpus/stick"), self.registry.get("corpus/fade"))
        return Playback()

    def crossfade_to(self, voice: Voice, seconds: float) -> None:
        """Play `voice` from the next frame, crossfading from the voice playing over `seconds`; at once when
        nothing is heard (stopped, faded out): there is nothing to fade from, and a pad that starts a cue
        from silence then costs one voice's frame instead of two (the play fade-in keeps it from clicking)."""
        if self.envelope == 0.0:
            self.voice, self.fading = voice, None
            return
        frames = max(1, round(seconds * self.frame_rate))
        self.fading = (self.voice, frames, frames)
        self.voice = voice

    def _may_cut(self) -> bool:
        """Whether a trigger begins a new frame at the chunk it arrives (see `frame_due`). Not when the frame
        playing ends within `SPLICE` anyway (its end is as soon, and the splice would be shorter than
        SPLICE), not when a trigger cut in less than a frame ago (a flood of triggers costs at most one
        extra frame a frame), and not with an audio input (its frames come whole: a frame begun mid-frame
        would find only part of one; the trigger waits for the frame's end, at most a frame)."""
        return (self.input is None and self.hop - self.pos >= self.splice
                and self.samples - self._last_cut >= self.hop)

    def _command(self, address: str, args: tuple) -> None:
        name = address[len(PREFIX) + 1:]
        model = self.voice.model
        if name == "cue":
            index, fade = args
            cue = model.cues[index]  # (the fresh voice jumps from the playing one's state after the cue's first frame)
            fresh = Voice(model, self.voice.prior_state, model.codec.start(1, sharing=self.voice.decoder_state),
                          self.voice.encoder_state, opening=cue[0], cue=cue, first_frames=self.first_frames)
            self.crossfade_to(fresh, fade)
            self.cut = self.cut or self._may_cut()
        elif name == "reset":
            self.crossfade_to(Voice.start(model, self.registry.get("seed"), listening=self.voice.encoder_state),
                              PLAY_FADE)
            self.cut = self.cut or self._may_cut()
        elif name == "seed":
            self.voice.prior_state.generator.manual_seed(int(args[0]))
            self.remake = None  # (a remake would draw the frame's numbers again, from before the seed)
        elif name == "region/mode":
            if not args[0]:
                self.region = None
            elif self.region is None:  # held from free (lock -> loop keeps what it holds)
                self.retake = True
        elif name in ("region/start", "region/length"):
            self.retake = True

    def _take_region(self) -> None:
        """Take the region's codes from the history, at a frame boundary: its span clamped to the frames
        the history keeps (a frame not made yet counts as the newest; before the first, nothing is held
        until the hold is sent again)."""
        self.retake = False
        made = self.frames  # frames 0 .. made - 1 are in the history
        start, length = self.registry.get("region/start"), self.registry.get("region/length")
        first = min(max(made + start if start < 0 else start, made - HISTORY, 0), made - 1)
        last = min(first + length, made)
        self.region = Region(self.history[torch.arange(first, last) % HISTORY]) if last > first >= 0 else None

    def _held(self) -> list[int] | None:
        """The held region's codes for this frame (-1: the prior samples that level), or None when free."""
        mode = REGION_MODES[self.registry.get("region/mode")]
        if mode == "free" or self.region is None:
            return None
        region = self.region
        row = region.codes[region.pos % len(region.codes)]
        region.pos += 1
        if mode == "loop":
            return row.tolist()
        top, bottom = sorted((self.registry.get("region/top"), self.registry.get("region/bottom")))
        held = row[top:bottom + 1]  # a view: a mutation stays in the loop
        chance = self.registry.get("mutate")
        if mode == "mutate" and chance > 0:
            generator = self.voice.prior_state.generator
            hit = torch.rand(len(held), generator=generator) < chance
            fresh = torch.randint(self.model.config.codec.codebook_size, (len(held),), generator=generator)
            held[hit] = fresh[hit]
        given = [-1] * len(row)
        given[top:bottom + 1] = held.tolist()
        return given

    def _listen(self) -> Heard:
        """Take the input's next frame and decide whether it leads: the gate and the input mode."""
        start_gain = self.input_gain
        self.input_gain = self._smooth(f"{PREFIX}/input/gain", self.registry.get("input/gain"), self.frame_rate)
        audio = self.input.next_frame() * (start_gain + (self.input_gain - start_gain) * self._frame_ramp)
        level = 10 * math.log10(float(np.mean(audio ** 2)) + 1e-20)
        loud = level > self.registry.get("input/gate")
        self.quiet = 0.0 if loud else self.quiet + 1.0 / self.frame_rate
        mode = INPUT_MODES[self.registry.get("input/mode")]
        leads = mode == "resynth" or (mode == "continue" and self.quiet <= self.registry.get("input/hold"))
        held = self.registry.get("freeze") or self.registry.get("region/mode")  # a hold plays the prior's codes
        return Heard(torch.from_numpy(audio)[None], loud, leads and not held)

    def _next_raw_frame(self, playing: bool) -> None:
        """Make the next frame of the model (or a silent one, without running the model, when stopped).
        A frame that cuts into the one playing (a trigger) fades from the rest of it over `SPLICE`."""
        if self.retake and self.registry.get("region/mode"):
            self._take_region()
        rest = self.raw[self.pos:self.pos + self.splice].copy() if self.cut and not self.raw_silent else self.raw[:0]
        if self.cut:
            self._last_cut = self.samples
        self.frames += 1
        self.pos = 0
        self.cut = False
        if self.input is not None:
            # taken and encoded even when stopped: time goes on, and the encoder's window must hold the
            # input just before play starts, not what it heard when the player last played (an encoder
            # step is cheap; the prior and decoder, the cost of a frame, stay idle)
            heard = self._listen()
            done = {}  # a cue jump or reset hands the fresh voice the same encoder: encode once for both
            for voice in [self.voice] + ([self.fading[0]] if self.fading is not None else []):
                same = (id(voice.model), id(voice.encoder_state))
                done[same] = voice.listen(heard, done.get(same))
        self.remake = None
        if not playing:
            self._frame_controls = None
            self._pull_frames = 0
            self.raw[:] = 0.0
            self.raw_silent = True
            self.history[(self.frames - 1) % HISTORY] = -1
            return
        controls = self._frame_controls = self.registry.controls()
        playback = self.playback()
        given = self._held()
        if self.input is None and self.fading is None and given is None and self.voice.prior_plays:
            self.remake = Remake(self.voice, self.voice.checkpoint(), controls, playback)
        pulled = self._pulled(controls)
        audio, self.last_codes = self.voice.step(pulled, playback, given)
        self.history[(self.frames - 1) % HISTORY] = self.last_codes
        if self.fading is not None:
            old, left, total = self.fading
            old_audio, _ = old.step(pulled, playback)
            mix = (total - left + self._frame_ramp) / total  # 0 -> 1 across the fade
            audio = old_audio * (1.0 - mix) + audio * mix
            self.fading = (old, left - 1, total) if left > 1 else None
        audio = self._finite(audio)
        if len(rest):  # (a new array: the decoder's output may be a view of its state)
            audio = fade_in(rest, audio)
        self.raw[:] = audio
        self.raw_silent = False

    def _finite(self, audio: np.ndarray) -> np.ndarray:
        """A frame's audio, or silence if the model made NaN or inf: a memory gone to NaN would play
        silence for good, so the voice starts afresh."""
        if np.isfinite(audio).all():
            return audio
        self.voice = Voice.start(self.voice.model, self.registry.get("seed"), listening=self.input is not None)
        self.fading = self.remake = None
        self.on_fault("the model made a frame of NaN or inf: it plays on from a fresh start")
        return np.zeros_like(audio)

    def _remake(self) -> None:
        """A control that steers the prior arrived partway through the frame playing: make the frame again
        under the new controls, from the memory and with the random numbers it was made from, and
        crossfade to the new one from here over `SPLICE`. Both are the same stretch of time, so nothing is
        skipped, and where the change does not move the prior's choice of codes the two frames are the
        same sound. The change is heard from the next chunk instead of the next frame: on average half a
        frame sooner (docs/benchmarks.md, "Steering latency").
        Only a gesture's onset is remade: the first steering message after `GESTURE` without one (a pad, a
        key, the first step of a fader). While a fader or a knob keeps moving, its steps are read frame by
        frame, each at most a frame after it came, as the frame it steers begins: a frame remade at every
        step would double the engine's work for as long as the hand moves, and with it the chance that a
        stall of the machine empties the card's queue (at 128 frames, with a world change every frame:
        8 underruns in 90 s where none came without the changes). Not where the frame cannot be made
        again as it was (`remake` is None: two voices crossfading, a held region, an audio input, a cue's
        first frame, a seed sent since the frame began), nor when the frame ends within `SPLICE` anyway."""
        remake = self.remake
        if self.voice is not remake.voice:  # (a crossfade begun changes the voice)
            return
        controls = self.registry.controls()
        if controls == remake.controls:  # (a control sent again at the value it had)
            return
        self.remake = None
        self.voice.rewind(remake.checkpoint)
        audio, self.last_codes = self.voice.step(self._pulled(controls), remake.playback)
        audio = self._finite(audio)
        self.history[(self.frames - 1) % HISTORY] = self.last_codes
        self.raw[self.pos:] = fade_in(self.raw[self.pos:self.pos + self.splice], audio[self.pos:])
        self.remade = True

    def decode_first_frames(self) -> None:
        """Decode the cues' first frames under the controls now (`FirstFrames`): no key's first press waits for it."""
        model, controls, playing = self.model, self.registry.controls(), self.voice.decoder_state
        with kernels.playing():
            for cue in model.cues[:self.first_frames.size]:  # (fresh decoders reading the playing one's table)
                self.first_frames.decode(model, _coarse(cue[0], controls), model.codec.start(1, sharing=playing))

    def _pulled(self, controls: Controls) -> Controls:
        """`controls` for the next frame made: while a gesture's onset pulls (the `ONSET_FRAMES` frames that first
        play it, the frame remade among them), guidance above 1 pushes `ONSET_PULL` times as far from what the
        prior would play with nothing held, up to `ONSET_MOST`, so that the change bites at once; then the
        guidance set holds it. At guidance 1 (the plain prior) nothing is pulled."""
        if self._pull_frames <= 0:
            return controls
        self._pull_frames -= 1
        g = controls.guidance
        if g <= 1.0:
            return controls
        return replace(controls, guidance=max(g, min(1.0 + ONSET_PULL * (g - 1.0), ONSET_MOST)))

    def next_chunk(self) -> np.ndarray:
        """Produce the next `chunk` samples (float32 mono)."""
        self.applied = applied = self.registry.apply_due(self.time)
        self.remade = False
        if applied:
            with kernels.playing():
                for address, args in applied:
                    self._command(address, args)
        playing = bool(self.registry.get("play"))
        steered = bool(applied) and any(self.registry.steers(address) for address, _ in applied)
        onset = steered and self.at_onset()
        self.heard_at_once = False
        if onset and self.registry.controls() != self._frame_controls:  # (not a value sent again)
            self._pull_frames = ONSET_FRAMES
        if self.frame_due():
            made_under = self._frame_controls
            with kernels.playing():
                self._next_raw_frame(playing or self.envelope > 0.0)
            changed = self._frame_controls is not None and self._frame_controls != made_under
            self.heard_at_once = changed and (self.onset_waits or (onset and self.registry.steered_now))
            self.onset_waits = False
        elif onset and self.hop - self.pos < self.splice:  # the frame ends within SPLICE: the next one plays it
            self.onset_waits = self.registry.steered_now and self.input is None
        elif onset and self.remake is not None:
            with kernels.playing():
                self._remake()
            self.heard_at_once = self.remade and self.registry.steered_now
        if steered:
            self._steered_at = self.time

        start_env = self.envelope
        step = self.chunk / max(1.0, PLAY_FADE * self.sample_rate)
        target = 1.0 if playing else 0.0
        self.envelope = min(target, start_env + step) if target > start_env else max(target, start_env - step)
        start_gain = self.gain
        self.gain = self._smooth(f"{PREFIX}/gain", self.registry.get("gain"), self.sample_rate / self.chunk)
        raw = self.raw[self.pos:self.pos + self.chunk]
        self.pos += self.chunk
        self.samples += self.chunk
        if start_env == 0.0 and self.envelope == 0.0:
            self.ungained = np.zeros(self.chunk, dtype=np.float32)
            return self.ungained.copy()
        env, gain = self._ramped(start_env, self.envelope), self._ramped(start_gain, self.gain)
        self.ungained = raw * env
        return soft_clip((self.ungained * gain).astype(np.float32, copy=False))  # (float32 already: no copy)

    def _ramped(self, start: float, end: float) -> np.ndarray | np.float32:
        """A chunk's ramp from `start` to `end`; a steady value (the usual case) as one number, which
        multiplies to the same float32 samples as a ramp of equal values, without building it."""
        return np.float32(start) if start == end else start + (end - start) * self._ramp

    def at_onset(self) -> bool:
        """A steering message applied at the next chunk would begin a gesture: none came for `GESTURE`. Such a
        message is heard from that chunk (the frame playing remade, or a frame beginning under it), and the
        engine puts the chunk in place of what the card has queued (`heard_at_once`; engine.py, `poll`);
        the steps of a gesture that goes on are read at the frames."""
        return self.time - self._steered_at >= GESTURE

    def frame_due(self) -> bool:
        """The next chunk begins a new frame: at the frame boundary, at once when starting from silence, or
        after a cue jump or reset (a trigger cuts into the frame playing, it does not wait for its end)."""
        return self.pos >= self.hop or self.cut or (bool(self.registry.get("play")) and self.raw_silent)

    def frame_left(self) -> int:
        """Samples of the frame playing (model rate) not yet made into chunks."""
        return max(0, self.hop - self.pos)

    def silent_chunk(self) -> np.ndarray:
        """Silence in place of a chunk that failed: time goes on, and the next chunk starts a new frame."""
        self.samples += self.chunk
        self.pos = self.hop
        self.ungained = np.zeros(self.chunk, dtype=np.float32)
        return self.ungained.copy()

    def next_frame(self) -> np.ndarray:
        """Produce the next `hop` samples, a chunk at a time (what render and bench use)."""
        chunks, applied = [], []
        for _ in range(self.hop // self.chunk):
            chunks.append(self.next_chunk())
            applied += self.applied
        self.applied = applied
        return np.concatenate(chunks)

    def swap_model(self, model: DistillModel, seconds: float = 0.1) -> None:
        """Hot-swap to an already loaded model with a crossfade (call from the generator thread)."""
        if model.prior is None:
            raise ValueError("the new model has no prior")
        self.crossfade_to(Voice.start(model, self.registry.get("seed"), listening=self.input is not None), seconds)


def render(model: DistillModel, seconds: float, seed: int = 0,
           messages: list[tuple[float, str, tuple]] = (), registry: ParamRegistry | None = None) -> np.ndarray:
    """Render `seconds` of audio offline. `messages` are (time, address, args), e.g. from a score."""
    registry = registry or ParamRegistry.for_model(model)
    registry.submit(f"{PREFIX}/play", [1], at=0.0)
    for at, address, args in messages:
        registry.submit(address, args, at=at)
    player = Player(model, registry, seed)
    frames = math.ceil(seconds * player.frame_rate)
    out = np.concatenate([player.next_frame() for _ in range(frames)]) if frames else np.zeros(0, np.float32)
    return out[: round(seconds * model.config.codec.sample_rate)]

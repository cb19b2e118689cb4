"""The live engine: a generator thread keeps a small ring buffer filled; the sound card drains it.

    control threads ──submit──► ParamRegistry ──apply_due──► Player (generator thread)
                                                                   │ one frame per step
                                                                   ▼ (resampled if the card
                                         sound card callback ◄── RingBuffer   needs another rate)

The callback only copies from the ring (and counts underruns). Everything heavy happens in the
generator thread, which keeps the ring one sound card block plus a margin ahead and never more:
whatever is queued is latency. It makes each chunk (a sixteenth of a frame, see player.py) just in
time: when the ring falls below that, so a control is applied at the last chunk before it would be
heard. The margin is measured, not guessed (`Margin`): what noticing and making a chunk has cost on
this machine over the last seconds, and how long it stopped the generator or the card over the last
minutes, never less than `buffer_ms` nor than two card blocks (`kept`: a card can ask for two blocks
back to back). A trigger (a cue jump, a reset, play) does not even wait for that: it wakes the
generator, which makes its chunks at once and puts them in place of what the card has queued, heard
from its next block (`_preempt`); so does the onset of a gesture that steers the prior (a world pad, a
fader's first step), which the Player plays from the chunk that applies it (`Player.heard_at_once`),
while the steps of a gesture that goes on wait their turn. The gain is applied as chunks are queued
(cardqueue.py), so a fader reaches into what is queued too. Model files asked for over OSC
(`/distill/model`) are loaded by a third thread so the generator never waits on a disk.

With an audio input (audioinput.py) the generator also pulls what the input callback copied, and
a frame waits until a whole frame of input has arrived; input beyond what keeps the card fed is
skipped, so the input is heard about one frame + one card block (the longer, if the input card's blocks
are another size) + what is kept (`kept`) after it arrives.
"""
from __future__ import annotations

import functools
import gc
import logging
import math
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from distill_live.control.changes import Changes
from distill_live.control.params import PREFIX, ParamRegistry
from distill_live.control.presets import FREE, Presets, take_snapshot
from distill_live.model import kernels
from distill_live.model.descriptors import DescriptorStats
from distill_live.model.modelfile import DistillModel, ModelFileError, load_model
from distill_live.model.prior import Controls

from .audioinput import AudioInput
from .cardqueue import CardQueue
from .player import GESTURE, SPLICE, Heard, Playback, Player, Voice
from .resample import StreamResampler
from .ringbuffer import RingBuffer, put, take

log = logging.getLogger("distill.engine")

MODEL = f"{PREFIX}/model"  # hot-swap: the engine loads it off the generator thread
GAIN = f"{PREFIX}/gain"  # applied to what is queued for the card (cardqueue.py)
SAVE, RECALL = f"{PREFIX}/preset/save", f"{PREFIX}/preset/recall"  # presets: the engine keeps them
CODE_HISTORY = 1024  # frames of codes kept for the surfaces (20 s at 50 frames/s)
IDLE = 0.0005  # seconds the generator waits between looks at the ring when it has nothing to do
MAX_MARGIN = 0.1  # seconds: the most the measured margin grows to (see Margin)
STOP_MEMORY = 120.0  # seconds: how long the margin remembers the machine stopping the generator or the card (Margin)
# seconds: the stop the margin is ready for before the machine has shown its own, for STOP_MEMORY from the
# start: the first stop of a session ran the card dry (9.5 ms, 34 s into a run, 2 ms kept ready then)
FIRST_STOP = 0.010
CARD_GONE = 1.0  # seconds: a card this late has not stalled but stopped (gone, reopening: soundcard.py)
HEAVY = 0.02  # seconds: the least margin while voices crossfade or a model loads (the old fixed buffer + 10 ms)
PRESET_WRITES = 0.5  # seconds: the presets file is written at most this often (a flood of saves: the last one)
REALTIME_PRIORITY = 5  # SCHED_FIFO priority of the generator with --realtime: below JACK's threads


@dataclass
class Ramp:
    """A continuous control crossfading to a preset's value, a step each frame (see `Engine._recall`)."""

    start: float
    target: float
    t0: float
    t1: float
    sent: float | None = None  # the last step submitted: anything else applied to the address ends the ramp


class Telemetry:
    """Per-frame compute times and counters, written by the generator, read by anyone."""

    def __init__(self, frame_period: float, window: int = 500):
        self.frame_period = frame_period
        self.compute = deque(maxlen=window)  # seconds per frame, recent window
        self.underruns = 0
        self.frames = 0
        self.faults = 0  # frames the generator could not make (silence instead)

    def summary(self) -> dict:
        times = np.array(self.compute.copy()) if self.compute else np.zeros(1)  # (a copy is one step: never torn)
        p50, p99 = np.percentile(times, [50, 99])
        return {
            "frames": self.frames,
            "underruns": self.underruns,
            "faults": self.faults,
            "frame_ms_p50": round(p50 * 1000, 3),
            "frame_ms_p99": round(p99 * 1000, 3),
            "rtf": round(self.frame_period / max(p50, 1e-9), 2) if self.compute else 0.0,  # 0: no frame yet
        }


def realtime_priority() -> str:
    """Put the calling thread on real-time scheduling (SCHED_FIFO) at `REALTIME_PRIORITY`, below the sound
    card's callback (jackd -R runs it at 10 and above), so a busy desktop cannot delay a frame. Linux
    allows it without root when the user's rtprio limit (`ulimit -r`, e.g. the audio group's) is above 0.
    Returns what happened, in words."""
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_RTPRIO)[0]
        priority = REALTIME_PRIORITY if limit == resource.RLIM_INFINITY else min(REALTIME_PRIORITY, limit)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(max(1, priority)))  # 0: this thread, on Linux
        return f"real-time priority {max(1, priority)}"
    except (ImportError, AttributeError, OSError) as e:
        return (f"normal priority: real-time was refused ({getattr(e, 'strerror', None) or e}); on Linux add "
                "yourself to the audio group with an rtprio limit (ulimit -r)")


def freeze_what_is_loaded() -> int:
    """Collect what is garbage now, then take every object alive (torch, numba, the model: about 400,000)
    out of Python's cycle collector for good (`gc.freeze`). A full collection walks every tracked object
    holding the interpreter's lock, and with all that loaded it took 190 ms: about once in six minutes
    under the soak's flood, the collector ran one by itself, the generator waited, and the card ran
    dry (docs/reliability.md). Afterwards a full collection walks only what was made since (1.3 ms in
    serve). Call once, where everything is loaded and before the card starts: the collection here takes
    that long once. Returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class Margin:
    """How far ahead of the card the generator keeps the ring beyond one card block: as little as this
    machine, measured as it plays, allows (just-in-time generation).

    Two things are measured. Each chunk's cost: from the generator's last look that found the ring full
    enough to the moment the chunk is queued, i.e. the time to notice the ring ran low (the idle wait
    and how late the OS woke the thread) plus the compute (a whole frame at a frame's first chunk). And
    the machine's stops: how long the generator went from the end of one look to the start of the
    next, or the card past its next block without calling back, whichever is longer. A machine that
    stops threads (a virtual machine's host taking its cores, a driver, a waking idle core) stops the
    card's callback too, and the card then asks for everything it missed back to back (JACK runs the
    late cycles at once). If the generator looks first, it finds the ring full and nothing to do; the
    card then takes all of it, and only what was queued answers (on a 2-core virtual machine whose
    threads were woken 5-23 ms late a few times a minute, every underrun came so, after a stop longer
    than the margin; the generator's gaps and the card's lateness each caught stops the other did
    not). Such a machine stops again: the margin remembers it for minutes, not seconds. Before it has
    stopped, the margin takes it that it stopped for `first_stop` as it started: serve cannot know how
    long its machine stops before it has seen it, and a first stop found too little ready.

    The margin is the larger of 1.5 x the p99 and the worst cost of the last `window` seconds, and of
    1.5 x the longest stop of the last `memory` seconds (the next may be longer), never below `floor`
    (serve --buffer-ms) and, unless the floor is higher, never above `MAX_MARGIN`: a machine that
    stalls for longer than that cannot be played live anyway, and a margin that large would make every
    control late by as much. A slow chunk or a stop raises it at once; it comes down again once the
    slow chunks are `window` seconds old and the stop `memory` seconds old. So a quiet machine plays
    tight, one that stops stays glitch-free (what is queued delays only a moving fader's steps and the
    audio input: triggers, the gain and a gesture's onset reach past it, engine.py and cardqueue.py).
    """

    def __init__(self, floor: float, chunks_per_second: float, window: float = 2.0, memory: float = STOP_MEMORY,
                 first_stop: float = FIRST_STOP, now: float | None = None):
        self.floor = floor  # seconds
        self.costs: deque = deque(maxlen=max(1, round(window * chunks_per_second)))
        self.p99 = self.worst = 0.0
        self.memory = memory
        self.stops: deque = deque()  # (when, seconds) of the last `memory` s, each longer than every one after it
        if first_stop:  # (`now`: time.perf_counter() seconds, as `stopped` takes)
            self.stops.append((time.perf_counter() if now is None else now, first_stop))
        self._since_update = 0
        self._update()

    def add(self, cost: float) -> None:
        self.costs.append(cost)
        self.worst = max(self.worst, cost)
        self.seconds = max(self.seconds, min(cost, MAX_MARGIN))
        self._since_update += 1
        if self._since_update >= 64:  # the percentile now and then: it costs more than a chunk's bookkeeping
            self._since_update = 0
            costs = np.array(self.costs)
            self.p99, self.worst = float(np.percentile(costs, 99)), float(costs.max())
            self._update()

    def stopped(self, seconds: float, now: float) -> None:
        """The machine stopped the generator or the card for `seconds`, as the generator saw at its look at
        `now` (time.perf_counter() seconds)."""
        longest = self.stop
        while self.stops and self.stops[-1][1] <= seconds:  # outlasted by this one: never the longest again
            self.stops.pop()
        self.stops.append((now, seconds))
        while self.stops[0][0] <= now - self.memory:
            self.stops.popleft()
        if self.stop != longest:
            self._update()

    @property
    def stop(self) -> float:
        """The longest stop of the last `memory` seconds (`stops` runs from the longest down)."""
        return self.stops[0][1] if self.stops else 0.0

    def _update(self) -> None:
        self.seconds = max(self.floor, min(MAX_MARGIN, max(1.5 * max(self.p99, self.stop), self.worst)))


class Engine:
    """One model playing into a ring buffer at `device_rate` (the model's rate unless the card
    needs another). `models_dir` confines `/distill/model` paths (default: no hot-swap)."""

    def __init__(self, model: DistillModel, registry: ParamRegistry | None = None, seed: int = 0,
                 buffer_ms: float = 10.0, device_rate: int | None = None, models_dir: str | Path | None = None,
                 audio_input: AudioInput | None = None, presets: Presets | None = None, realtime: bool = False):
        self.player = Player(model, registry, seed, audio_input, on_fault=self._fault)
        self.input = audio_input
        self.registry = self.player.registry
        c = model.config.codec
        self.model_rate, self.hop = c.sample_rate, c.hop
        self.frame_rate = c.frame_rate
        self.sample_rate = device_rate or c.sample_rate  # rate of the ring and the card
        self._resampler = StreamResampler(self.model_rate, self.sample_rate) if self.sample_rate != self.model_rate \
            else None
        self.frame_samples = round(self.hop * self.sample_rate / self.model_rate)  # one frame at the card's rate
        self.block = 0  # samples the card took at its last callback
        self.took: float | None = None  # time.monotonic() of that callback (see _input_waits)
        self.lead_in = 0
        self._steering_preempted = -math.inf  # `_card_time` of the last steering onset that pre-empted
        self.margin = Margin(buffer_ms / 1000, self.model_rate / self.player.chunk)
        self.ring = RingBuffer(self.frame_samples * 64 + round(buffer_ms / 1000 * self.sample_rate))
        self.card_queue = CardQueue(self.ring, self.sample_rate, self.registry.params[GAIN].smooth,
                                  self.registry.get("gain"))
        self._looked = time.perf_counter()  # the end of the generator's last pass: it found nothing to do, or a chunk
        self.splice = round(SPLICE * self.sample_rate)  # samples of the crossfade where a trigger cuts in
        self.telemetry = Telemetry(self.hop / self.model_rate)
        self._last_chunk = np.zeros(0, np.float32)  # the last chunk made, for the meters (`level`)
        self.output_latency = 0.0  # seconds the sound card adds after the callback (set when the card opens)
        self.changes = Changes()  # (engine time, address, args) applied, for every surface that listens
        self.errors: queue.SimpleQueue = queue.SimpleQueue()  # one-line sentences for /distill/error
        self.presets = presets  # None: /distill/preset/save and recall are refused
        self.take = None  # a Take (take.py) recording what the engine plays, and the controls it applied
        self.models_dir = Path(models_dir).resolve() if models_dir else None
        self._ramps: dict[str, Ramp] = {}  # preset crossfades under way, by address
        # what the surfaces show: the last second of output and the codes of recent frames (written by
        # the generator, read by anyone: a reader may see a chunk half written, which a meter never shows)
        self._recent = np.zeros(self.model_rate, np.float32)
        self._recent_written = 0
        self._codes = np.full((CODE_HISTORY, c.levels), -1, np.int16)
        self._codes_written = 0
        stats = model.meta.get("descriptor_stats")
        self.descriptor_stats = DescriptorStats.from_dict(stats) if stats else None  # the training ranges
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()  # work for the helper thread: loads, preset files
        self._loaded: queue.SimpleQueue = queue.SimpleQueue()  # loaded models (None: a load that failed)
        self._loading = 0  # loads asked for and not back yet
        self._presets_saved = self._presets_written = 0  # saves taken, and how many of them the file holds
        self._presets_wrote_at = -math.inf  # (time.monotonic) of the last write
        self._running = False
        self._thread: threading.Thread | None = None
        self._loader: threading.Thread | None = None
        self._last_fault = 0.0
        self._least_queued, self._window_frames = math.inf, 0  # see _input_allows
        self._frame_time = 0.0  # seconds spent on the current frame's chunks so far
        self.realtime = realtime  # ask for real-time priority for the generator thread

    # -- any thread: the engine's public face, what the control surfaces see ------------------------

    @property
    def time(self) -> float:
        """Engine time in seconds: how much the player has made (what `ParamRegistry.submit(at=...)` takes)."""
        return self.player.time

    @property
    def level(self) -> float:
        """The peak of the last chunk made, for the meters (read a few dozen times a second, so reckoned
        here, in the reader's thread, not at each of the generator's 800 chunks a second)."""
        chunk = self._last_chunk
        return float(np.abs(chunk).max()) if len(chunk) else 0.0

    @property
    def last_codes(self) -> torch.Tensor:
        """The codes of the frame playing, coarse to fine (-1: a level not decoded)."""
        return self.player.last_codes

    def recent(self, n: int) -> np.ndarray:
        """The last `n` samples the engine made (at most a second), at the model's rate."""
        return self.recent_since(self._recent_written - n)[1]

    def recent_since(self, position: int | None) -> tuple[int, np.ndarray]:
        """(how many samples the engine has made, at the model's rate, counted from its start; the samples
        made since `position`, at most the last second); None: none, just the count to ask from."""
        end = self._recent_written
        if position is None:
            return end, self._recent[:0]
        return end, take(self._recent, max(position, end - len(self._recent)), end)

    def codes_since(self, frame: int | None) -> tuple[int, np.ndarray]:
        """(the next frame number, the codes [frames, levels] of every frame from `frame` on, -1 where a
        level was not decoded or the engine was stopped); None: none yet, just the frame number to ask from."""
        end = self._codes_written
        if frame is None:
            return end, self._codes[:0]
        start = max(frame, end - CODE_HISTORY + 1)
        return end, self._codes[np.arange(start, end) % CODE_HISTORY]

    def stats(self) -> dict:
        """The telemetry summary (frames, underruns, faults, frame_ms_p50/p99, rtf), the buffer depth, the
        latency estimate and what the generator keeps ready beyond a block (`kept`, as "margin") with what
        its margin was made of (chunk cost p99 and worst), in ms."""
        m = self.margin
        return {**self.telemetry.summary(), "buffer_ms": 1000.0 * self.queued_seconds(),
                "latency_ms": self.latency_ms(), "margin_ms": 1000.0 * self.kept / self.sample_rate,
                "cost_ms_p99": 1000.0 * m.p99, "cost_ms_worst": 1000.0 * m.worst}

    def queued_seconds(self) -> float:
        return self.ring.available() / self.sample_rate

    def time_of(self, wall: float) -> float:
        """Engine time (what `ParamRegistry.submit(at=...)` takes) of the frame heard at wall-clock `wall`
        (time.time() seconds), so a timed bundle lands on the frame that plays at its timetag.

        The ring's next sample goes to the card at its next callback, a block after the last one, and is
        heard `output_latency` later. A card held up (the machine stopped its thread) still plays it on
        its clock's schedule, catching up when it runs again, so a late next callback counts from when it
        was due; before the first callback, or from a card gone (`CARD_GONE`), it counts from now. (Read
        again if a callback came while it was read: any thread may ask.)"""
        while True:
            took = self.took
            now, head = time.monotonic(), self.time - self.queued_seconds()  # the ring's next sample, engine time
            due = self._card_due(now)
            if took == self.took:
                break
        heard = (now if due is None else due) + self.output_latency  # when it is heard (time.monotonic())
        return head + (wall - time.time()) - (heard - now)

    def _card_due(self, now: float) -> float | None:
        """When (time.monotonic()) the card's next block is due, a block after its last callback, as seen at
        `now`; None before its first callback, or from a card `CARD_GONE` late (not held up but stopped)."""
        took = self.took
        if took is None or not self.block:
            return None
        due = took + self.block / self.sample_rate
        return due if now - due < CARD_GONE else None

    def latency_ms(self) -> float:
        """Control-to-sound estimate for stop: a message waits for the next chunk, then everything queued in
        the ring and the card plays first (what steers the prior too: it remakes the frame playing, player.py);
        triggers (play, cue, reset) replace what is queued and the gain reaches into it (cardqueue.py): they
        wait only for the block the card is playing."""
        return 1000.0 * (self.player.chunk / self.model_rate + self.queued_seconds() + self.output_latency)

    def input_latency_ms(self) -> float:
        """Audio input to sound estimate: the card delivers it, it waits to be encoded, then everything
        queued for the card plays first."""
        return 1000.0 * (self.input.latency + self._input_waits() + self.output_latency)

    def _input_waits(self) -> float:
        """Seconds an input sample waits between the input card delivering it and the output card taking
        it: what waits to be encoded, what is left of the frame playing and what waits in the ring, as it
        stands once both cards have had their callback for the same period.

        The two callbacks do not come at the same instant, and between them what waits looks a card block
        longer or shorter than it is. Counting the time between them as the block that part of a period
        stands for takes that out: each callback moves what waits by a block and the time between them by
        as much the other way, so the sum stays put while both cards keep time, whenever it is looked at.
        (Read again if a callback came while it was read: any thread may ask.)"""
        feed = self.input
        while True:
            took, arrived = self.took, feed.arrived
            waits = feed.queued() + self.player.frame_left() / self.model_rate + self.queued_seconds()
            if took is not None and arrived is not None:
                waits += took - arrived
            if (took, arrived) == (self.took, feed.arrived):
                return waits

    def report(self, sentence: str) -> None:
        log.warning(sentence)
        self.errors.put(sentence)

    # -- generator thread ------------------------------------------------------------------------

    def _fault(self, sentence: str) -> None:
        """Count a frame the generator could not make as it should; say so at most every 5 s."""
        self.telemetry.faults += 1
        if time.monotonic() - self._last_fault > 5.0:
            self._last_fault = time.monotonic()
            self.report(sentence)

    def generate_one(self) -> None:
        """Make one chunk and queue it for the card."""
        self.card_queue.write(self._make_chunk())

    def _preempt(self, first: np.ndarray, steering: bool = False) -> None:
        """A trigger that must not wait (a cue, a reset, play), or a steering gesture's onset that the chunk
        `first` plays from its first sample (`Player.heard_at_once`): make its first chunks at once and put them in
        place of what the card has queued, heard from its next block, crossfading from what they replace
        over `SPLICE` (CardQueue.trigger). Only as many as the crossfade and the card's next block need are
        made before the card is told to skip to them, so the trigger waits for nothing else; the rest of
        what the generator keeps ready (`kept`) is queued behind them at once, and up to the target (20 ms
        while voices crossfade, see `target`) while it comes from the frame the first chunk made (the
        rest of it costs next to nothing; another frame, two voices' work, would wait its turn). The
        dropped audio was made and is in a take, so the card skips those few milliseconds of the take's
        timeline (at most one block + what is kept)."""
        fresh = [first]
        while sum(map(len, fresh)) < max(self.splice, self.block):
            fresh.append(self._make_chunk())
        self.card_queue.trigger(np.concatenate(fresh), self.splice)
        made, least, enough = sum(map(len, fresh)), self.block + self.kept, self.block + self.target
        while made < least or (made < enough and not self.player.frame_due()):
            chunk = self._make_chunk()
            self.card_queue.write(chunk)
            made += len(chunk)
        if steering:
            self._steering_preempted = self._card_time()

    def _card_time(self) -> float:
        """Where the card is in the Player's timeline, in seconds: what the Player made, less what is queued.
        A steering onset pre-empts at most once in `GESTURE` of it: with much queued (serve --output keeps 100
        ms), a moving fader's steps come more than `GESTURE` apart in the Player's time, as each lands a queue
        later than the last, and each would skip what is queued."""
        return self.player.time - self.ring.available() / self.sample_rate

    def _make_chunk(self) -> np.ndarray:
        """The next chunk at the card's rate before the gain (applied as it is queued: cardqueue.py), with
        everything that goes with it (changes, take, meters)."""
        self._swap_if_loaded()
        frames_before = self.player.frames
        at = self.player.time
        t0 = time.perf_counter()
        try:
            chunk = self.player.next_chunk()
        except Exception as e:  # never let a bad frame stop the music: play silence and say so
            chunk = self.player.silent_chunk()
            self._fault(f"the generator failed and plays silence until it recovers: {type(e).__name__}: {e}")
        for address, args in self.player.applied:
            self.changes.put(at, address, args)
            if self._ramps:
                self._end_ramps(address, args)
            if address == MODEL:  # loaded by the helper thread, swapped in by this one
                self._loading += 1
                self._jobs.put(functools.partial(self._load, args[0]))
            elif address in (SAVE, RECALL):
                self._preset(address, args)
            elif address == GAIN:  # in its turn (a timed one at its time): the card eases to it from here on
                self.card_queue.ease_to(args[0])
        if self.take is not None:
            self.take.put(chunk)  # what the score renders again: the card heard its gain changes a little sooner
        self._remember(chunk)
        self._last_chunk = chunk
        chunk = self.player.ungained
        if self._resampler is not None:
            chunk = self._resampler.process(chunk)
        spent = time.perf_counter() - t0
        if self.player.frames != frames_before:  # this chunk began a frame: the last one is complete
            if self._frame_time:
                self.telemetry.compute.append(self._frame_time)
            self._frame_time = 0.0
            self.telemetry.frames += 1
            self._codes[self._codes_written % CODE_HISTORY] = -1 if self.player.raw_silent else self.player.last_codes
            self._codes_written += 1
            if self._ramps:
                self._step_ramps()
        elif self.player.remade:  # a steering control made the frame playing again: its codes changed
            self._codes[(self._codes_written - 1) % CODE_HISTORY] = self.player.last_codes
        self._frame_time += spent
        return chunk

    def _remember(self, chunk: np.ndarray) -> None:
        put(self._recent, self._recent_written, chunk)
        self._recent_written += len(chunk)

    # -- presets (generator thread) --------------------------------------------------------------

    def _preset(self, address: str, args: tuple) -> None:
        if self.presets is None:
            self.report(f"{address} refused: this engine has no presets file")
        elif address == SAVE:
            n = args[0]
            self.presets.store(n, take_snapshot(self.registry))
            self._presets_saved += 1  # the helper thread writes the file (_write_presets)
        else:
            self._recall(*args)

    def _recall(self, n: int, seconds: float) -> None:
        """Set a preset's controls: the continuous ones ("f") crossfade for `seconds`, a step each frame,
        the others are set at once. A recall ends any crossfade under way; moving a control that is
        crossfading ends its crossfade."""
        snapshot = self.presets.get(n)
        if snapshot is None:
            saved = ", ".join(map(str, self.presets.numbers())) or "none yet"
            self.report(f"{RECALL} {n} refused: there is no preset {n} (saved: {saved})")
            return
        registry, now = self.registry, self.player.time
        self._ramps = {}
        at_once = []
        for name, value in snapshot.items():
            address = f"{PREFIX}/{name}"
            p = registry.params.get(address)
            if p is None:  # an audio input's control, and serve has no input
                continue
            if value == FREE:
                at_once.append((f"{address}/free", ()))
            elif p.types == "f" and seconds > 0 and registry.values.get(address) != value:
                self._ramps[address] = Ramp(float(registry.values[address]), float(value), now, now + seconds)
            else:
                at_once.append((address, (value,)))
        registry.submit_validated(at_once)
        self._step_ramps()

    def _step_ramps(self) -> None:
        """Submit the next step of every crossfade (at each frame boundary), applied at the next chunk."""
        now, steps = self.player.time, []
        for address, r in list(self._ramps.items()):
            x = min(1.0, max(0.0, (now - r.t0) / (r.t1 - r.t0)))
            r.sent = r.start + (r.target - r.start) * x if x < 1.0 else r.target
            steps.append((address, (r.sent,)))
            if x >= 1.0:
                del self._ramps[address]
        self.registry.submit_validated(steps)

    def _end_ramps(self, address: str, args: tuple) -> None:
        for changed, value in self.registry.expand(address, args):
            r = self._ramps.get(changed)
            if r is not None and r.sent is not None and value != (r.sent,):
                del self._ramps[changed]  # someone moved it: the crossfade lets go

    def _write_presets(self) -> None:
        """Write the presets file if a save is not in it yet (helper thread, and at stop)."""
        saved = self._presets_saved
        if saved == self._presets_written:
            return
        self._presets_written = saved  # (first: a save taken during the write is written next time)
        self._presets_wrote_at = time.monotonic()
        try:
            self.presets.write()
        except OSError as e:
            self.report(f"cannot write presets '{self.presets.path}' ({e.strerror or e}); "
                        "they are kept until serve stops")

    def _run(self) -> None:
        self.warm_up()  # in this thread: torch's first calls in a new thread are slow too
        if self.realtime:  # (after the warm-up: torch's worker threads, made there, keep normal priority)
            log.info("generator thread: %s", realtime_priority())
        self._looked = time.perf_counter()
        self._ready.set()
        while self._running:
            if not self.poll() and self.registry.arrived.wait(IDLE):  # a message wakes it at once
                self.registry.arrived.clear()

    def poll(self) -> bool:
        """One pass of the generator loop: make a chunk if the card needs one (or a trigger came) and the
        input allows it. False when there was nothing to do (the loop waits a moment before the next pass)."""
        # (with an audio input, triggers wait for the next frame like everything else: input comes a whole
        # frame at a time, and what the ring holds is the input's latency, which must not jump)
        if self.block and self.took is not None:  # the card plays: after a stop it asks for all it missed at once
            look, now = time.perf_counter(), time.monotonic()
            due = self._card_due(now)
            late = 0.0 if due is None else now - due  # the card's next block is this late
            self.margin.stopped(max(look - self._looked, late), look)
        self.card_queue.tend()  # a skip set for the card's next block
        reached = self.registry.at_card(self.player.time)
        if GAIN in reached:  # a fader: the card hears it at its next block (cardqueue.py)
            self.card_queue.reach(reached[GAIN])
        now = self.player.time
        trigger = self.input is None and self.registry.urgent(now)
        may_steer = self._card_time() - self._steering_preempted >= GESTURE
        urgent = trigger or (may_steer and (self.player.onset_waits or (
            self.input is None and self.registry.steering_waits(now) and self.player.at_onset())))
        if (urgent or self.ring.available() < self.block + self.target) and self._input_allows():
            chunk = self._make_chunk()
            # (before the card's first callback, the start's cushion stays: append)
            if self.block and self.input is None and (trigger or (may_steer and self.player.heard_at_once)):
                self._preempt(chunk, steering=not trigger)
            else:
                self.card_queue.write(chunk)
            if urgent:
                self.registry.preempted()
            done = time.perf_counter()
            self.margin.add(done - self._looked)
            self._looked = done  # the next chunk, made at once, costs only itself
            return True
        self._looked = time.perf_counter()
        return False

    @property
    def kept(self) -> int:
        """Samples the generator keeps ready beyond one card block: the measured margin at the card's rate,
        and never less than two card blocks. A card can ask for two blocks back to back right after taking
        one the generator has not yet made up for: JACK runs a cycle that a stall of the machine made late
        and the next one at once (its dummy driver does, measured on a virtual machine whose every core
        stops for up to 14 ms once or twice a minute), and a card with two periods catches up the same way."""
        return max(round(self.margin.seconds * self.sample_rate), 2 * self.block)

    @property
    def target(self) -> int:
        """Samples kept ready beyond one card block: `kept`. While two voices play (a cue jump's, a reset's
        or a hot-swap's crossfade: two models' work a frame) or a model loads beside the generator, a frame
        costs more than the margin has seen: then at least `HEAVY`."""
        if self._loading or self.player.fading is not None:
            return max(self.kept, round(HEAVY * self.sample_rate))
        return self.kept

    def _input_allows(self) -> bool:
        """With an audio input, a new frame waits until a whole frame of input has arrived.

        Input and output run on the same clock, so what waits between the two cards (`_input_waits`)
        stays constant: that is the latency. The longer of the two cards' blocks + one frame + `target`
        is enough, so when the input starts the engine puts just enough silence in front of it (or skips
        what is too much), and if more than that waits for half a second (the two clocks drifted, or
        the machine stalled) it skips the oldest input. The least over half a second, because callbacks
        come a little late now and then. Half a second of frames taken, not of calls: a frame waiting
        for its input is polled again every idle pass of the loop, and counting those would shrink the
        window to a frame or two.
        """
        if self.input is None:
            return True
        feed = self.input
        feed.pull()
        if not self.player.frame_due():
            return True
        ratio = self.sample_rate / self.model_rate
        queued = self._input_waits() * self.sample_rate  # at the card's rate
        enough = max(self.block, feed.block * self.sample_rate / feed.rate) + self.frame_samples + self.target
        if feed.resumed:  # (the ring may hold more than enough already, made while no input came: skip that)
            feed.resumed = False
            feed.delay(int((enough - queued) / ratio))
            feed.skip(int((queued - enough) / ratio))
            self._least_queued, self._window_frames = math.inf, 0
        self._least_queued = min(self._least_queued, queued)
        if not feed.ready():
            return False
        self._window_frames += 1
        if self._window_frames >= self.player.frame_rate / 2:
            if self._least_queued > enough + self.frame_samples / 4:  # a chunk of slack for rounding
                feed.skip(int((self._least_queued - enough) / ratio))
            self._least_queued, self._window_frames = math.inf, 0
        return True

    def _swap_if_loaded(self) -> None:
        if self._loaded.empty():  # (each chunk: a look, not an exception)
            return
        model = self._loaded.get_nowait()  # (only this thread takes from it)
        self._loading -= 1
        if model is not None:
            self.player.swap_model(model)

    # -- helper thread: what must not happen on the generator thread ----------------------------

    def _help(self) -> None:
        """Run what the generator thread hands over (loading a model), and write the presets file after a
        save: within 0.1 s, but at most every PRESET_WRITES, so a flood of saves (a surface that saves on
        every touch) costs a write twice a second, not one each (the file is written whole and synced)."""
        while self._running:
            try:
                self._jobs.get(timeout=0.1)()
            except queue.Empty:
                pass
            if time.monotonic() - self._presets_wrote_at >= PRESET_WRITES:
                self._write_presets()
        self._write_presets()  # stopping: the saves since the last write

    def _load(self, name: str) -> None:
        model = None  # (the generator counts the loads it asked for and what came back: always something)
        try:
            model = self.load_compatible(name)
            log.info("swapped to model %s", name)
        except (ModelFileError, ValueError) as e:
            self.report(str(e))
        finally:
            self._loaded.put(model)

    def load_compatible(self, name: str) -> DistillModel:
        """Load `name` from the models folder for a hot-swap; one-sentence ValueError if it cannot be."""
        if self.models_dir is None:
            raise ValueError(f"/distill/model {name} refused: start serve with --models-dir to allow hot-swaps")
        path = (self.models_dir / name).resolve()
        if not path.is_relative_to(self.models_dir):
            raise ValueError(f"/distill/model {name} refused: only files inside {self.models_dir} can be loaded")
        model = load_model(path)
        model.prepare_streaming()
        old = self.player.model
        if model.prior is None:
            raise ValueError(f"/distill/model {name} refused: it has only a codec")
        oc, nc = old.config.codec, model.config.codec
        if (model.worlds, nc.levels, nc.codebook_size, len(model.cues), nc.sample_rate) != \
                (old.worlds, oc.levels, oc.codebook_size, len(old.cues), oc.sample_rate):
            raise ValueError(f"/distill/model {name} refused: its worlds, levels, cues or sample rate differ "
                             "from the playing model's (restart serve to play it)")
        model.corpus  # built here, in the loader thread, not at the first frame that plays it
        return model

    # -- life cycle ------------------------------------------------------------------------------

    def warm_up(self, frames: int = 5) -> None:
        """Run a few throwaway frames: torch's first calls are many times slower than the rest, and
        they must not happen while the sound card waits. So is numpy's first percentile (10 ms, where the
        margin's next take costs 0.1; Margin, Telemetry)."""
        np.percentile(np.zeros(2), [50, 99])
        listening = self.input is not None
        scratch = Voice.start(self.player.model, 0, listening)
        silence = torch.zeros(1, self.hop)
        both = Playback(0.5, 0.5)  # both decoders, and the corpus is built before the card starts
        with kernels.playing():
            for _ in range(frames):
                scratch.step(Controls(), both)
                if listening:
                    scratch.listen(Heard(silence, loud=False, leads=True))
                    scratch.step(Controls())
            self.player.decode_first_frames()

    def start(self) -> None:
        # 100 ms of silence first: the card's block size is known only at its first callback, some
        # cards call back in a burst at start, and this cushion drains away by itself (the
        # generator fills only below the target)
        self.lead_in = self.sample_rate // 10  # samples the card plays before the engine's time 0
        self.card_queue.settle(self.registry.at_card(self.player.time).get(GAIN, self.registry.get("gain")))
        self.card_queue.write(np.zeros(self.lead_in, np.float32))
        self._running = True
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="distill-generator", daemon=True)
        self._loader = threading.Thread(target=self._help, name="distill-helper", daemon=True)
        self._thread.start()
        self._loader.start()
        self._ready.wait(30)

    def stop(self) -> None:
        self._running = False
        for t in (self._thread, self._loader):
            if t is not None:
                t.join(timeout=2)
        if self._loader is None or not self._loader.is_alive():  # (else it writes them when its job is done)
            self._write_presets()  # a save the generator took after the helper's last write

    # -- audio callback side ---------------------------------------------------------------------

    def callback(self, outdata: np.ndarray, frames: int, time_info, status) -> None:
        """sounddevice output callback: copy from the ring and note the time, nothing else."""
        self.block = frames
        if self.ring.read_into(outdata) < frames:
            self.telemetry.underruns += 1
        self.took = time.monotonic()

"""The live audio input without a sound card: AudioInput's callback and the engine's generator loop
driven on a simulated clock by synthetic card blocks (well under a second of compute, no JACK).

The input plays a ramp, sample k holding k + 1 (0 is silence the engine filled in), so every frame
the engine takes says which input samples it holds, and the simulation knows when each of them
arrived and when the output card played it: the input-to-output latency, sample by sample.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from distill_live.control.params import ParamRegistry
from distill_live.live import audioinput, engine
from distill_live.live.audioinput import AudioInput
from distill_live.live.engine import Engine
from distill_live.live.player import Player
from models import random_model

TICK = 16  # samples at 16 kHz: the simulation's step, 1 ms (the generator loop waits 0.5 ms when idle)


class Clock:
    """Stands in for `time` in audioinput.py (what its callback stamps and `late()` reads) and engine.py
    (what the margin measures chunk costs with: on this clock they cost nothing, so the margin is the
    simulation's `buffer_ms`, however busy the machine running the test is)."""

    now = 0.0

    def monotonic(self) -> float:
        return self.now

    perf_counter = monotonic


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as serve does: at batch 1, more threads on busy cores are many times slower
    try:
        yield random_model()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(audioinput, "time", clock)
    monkeypatch.setattr(engine, "time", clock)
    return clock


class TakenInput(AudioInput):
    """An AudioInput that keeps every frame the engine takes."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.taken: list[np.ndarray] = []

    def next_frame(self) -> np.ndarray:
        frame = super().next_frame()
        self.taken.append(frame)
        return frame


class Simulation:
    """An engine (stopped: its frames are taken and encoded, nothing is decoded) between an input card
    delivering `in_block` samples a block and an output card taking `out_block`, on one clock.

    An input card whose clock runs fast delivers `fast` samples more a block. `late_ms`: each input
    block comes up to that much late (its thread was not scheduled at once), never out of order; and
    `after` samples later still (where the input card's callbacks fall between the output card's).
    `compute_ms`: the generator is busy that long after each frame it begins, while the cards go on.
    """

    def __init__(self, model, clock: Clock, in_block: int, out_block: int, fast: int = 0, buffer_ms: float = 10.0,
                 late_ms: float = 0.0, compute_ms: float = 0.0, after: int = 0):
        self.rate, self.hop = model.config.codec.sample_rate, model.config.codec.hop
        self.clock, self.in_block, self.out_block, self.fast = clock, in_block, out_block, fast
        self.feed = TakenInput(1, self.rate, self.rate, self.hop)
        registry = ParamRegistry.for_model(model, audio_input=True)
        self.engine = Engine(model, registry, buffer_ms=buffer_ms, audio_input=self.feed)
        self.late = after + np.random.default_rng(0).uniform(0, late_ms * self.rate / 1000, 10_000)  # per block
        self.compute = compute_ms * self.rate / 1000
        self.delivered_at: list[int] = []  # input sample k arrived at this time (samples)
        self.played_at: list[int] = []  # the engine's output sample s was played at this time
        self.t = 0
        self.blocks = 0  # input blocks delivered
        self.busy_until = 0.0

    def run(self, seconds: float) -> None:
        """Tick by tick: the cards call back when a block is due, then the generator polls until it has
        nothing to do."""
        out = np.zeros((self.out_block, 1), np.float32)
        for _ in range(round(seconds * self.rate / TICK)):
            self.t += TICK
            self.clock.now = self.t / self.rate
            while self.t >= (self.blocks + 1) * self.in_block + self.late[self.blocks]:  # captured, then delivered
                n, k = self.in_block + self.fast, len(self.delivered_at)
                self.feed.callback(np.arange(k + 1, k + n + 1, dtype=np.float32)[:, None], n, None, None)
                self.delivered_at += [self.t] * n
                self.blocks += 1
            if self.t % self.out_block == 0:
                read = self.engine.ring.read
                self.engine.callback(out, self.out_block, None, None)
                self.played_at += range(self.t, self.t + self.engine.ring.read - read)
            while self.t >= self.busy_until and self.engine.poll():
                if self.engine.player.pos == self.engine.player.chunk:  # that chunk began a frame
                    self.busy_until = self.t + self.compute

    def latencies_ms(self) -> np.ndarray:
        """Per frame played: the mean time from its input samples' arrival to their playing."""
        delivered, played, out = np.array(self.delivered_at), np.array(self.played_at), []
        for f, frame in enumerate(self.feed.taken[:len(played) // self.hop]):
            k = frame.astype(np.int64) - 1
            heard = k >= 0
            if heard.any():
                lag = played[f * self.hop:(f + 1) * self.hop][heard] - delivered[k[heard]]
                out.append(1000 * lag.mean() / self.rate)
        return np.array(out)

    def frames(self, seconds: float) -> int:
        return round(seconds * self.rate / self.hop)


def test_overflow_drops_the_oldest_input(clock):
    """More input than the waiting ring holds (a second) arrives while no frame is taken: the newest
    second is kept, and the cushion of silence in front of it stays as the engine set it."""
    rate, hop = 16000, 320
    feed = AudioInput(1, rate, rate, hop)
    feed.delay(2 * hop)
    total = int(1.5 * rate)
    for start in range(0, total, 400):
        feed.callback(np.arange(start + 1, start + 401, dtype=np.float32)[:, None], 400, None, None)
        feed.pull()
    taken = np.concatenate([feed.next_frame() for _ in range(feed.available() // hop)])
    cushion, kept = taken[:2 * hop], taken[2 * hop:]
    newest = np.arange(total - feed.waiting.capacity + 1, total + 1)
    assert np.array_equal(kept, newest), f"kept {kept[0]:.0f}-{kept[-1]:.0f} with gaps {np.sum(np.diff(kept) != 1)}"
    assert not np.any(cushion), "the cushion of silence went"


def test_small_input_blocks_are_not_late_when_frames_are_taken_whole(model, clock):
    """An output that takes a whole frame at a time (as `--output FILE` does) and input in 5 ms blocks:
    the engine looks at the input only every 20 ms or so, but the input is never late."""
    sim = Simulation(model, clock, in_block=80, out_block=320, buffer_ms=100, late_ms=2, compute_ms=5)
    sim.run(0.5)
    late = []
    for _ in range(2000):
        sim.run(TICK / sim.rate)
        late.append(sim.feed.late())
    assert not any(late), f"late at {sum(late)} of {len(late)} ms"


@pytest.mark.parametrize("in_block, out_block, buffer_ms", [(256, 64, 10), (80, 320, 100)])
def test_card_blocks_as_they_come_skip_nothing(model, clock, in_block, out_block, buffer_ms):
    """Input and output on one clock, in blocks of other sizes, input blocks up to 2 ms late and a frame
    costing 5 ms: what waits swings by a block as they come, frames wait several polls for their input,
    and yet no input is skipped, no frame is filled with silence and the latency holds."""
    sim = Simulation(model, clock, in_block, out_block, buffer_ms=buffer_ms, late_ms=2, compute_ms=5)
    sim.run(0.5)
    skipped, short, underruns = sim.feed.skipped, sim.feed.short, sim.engine.telemetry.underruns
    sim.run(2.0)
    assert (sim.feed.skipped, sim.feed.short, sim.engine.telemetry.underruns) == (skipped, short, underruns)
    latency = sim.latencies_ms()[sim.frames(0.5):]
    assert latency.max() - latency.min() < 10, (latency.min(), latency.max())


@pytest.mark.parametrize("in_block, out_block", [(320, 320), (256, 64)])
def test_the_latency_does_not_hang_on_where_the_input_callbacks_fall(model, clock, in_block, out_block):
    """Input blocks that come at the output's callback, or at any point between two of them: the input
    is heard equally late (what waits is counted as it stands once both cards have had their callback,
    not as the generator happens to see it between them), and whenever the output card calls the ring
    holds a block more than it takes."""
    medians, lowest = [], []
    for after in range(0, in_block, in_block // 8):
        sim = Simulation(model, clock, in_block, out_block, compute_ms=5, after=after)
        before_call = []
        callback = sim.engine.callback
        sim.engine.callback = lambda *a: (before_call.append(sim.engine.ring.available()), callback(*a))
        sim.run(0.5)
        # (at the start the engine makes silent frames until input comes, and may skip the first few ms of
        # input where they made more than enough wait: Engine._input_allows; the margin it starts with, ready
        # for a first stop of the machine, decides how many)
        skipped, short, underruns, start = sim.feed.skipped, sim.feed.short, sim.engine.telemetry.underruns, \
            len(before_call)
        sim.run(1.0)
        assert (sim.feed.skipped, sim.feed.short, sim.engine.telemetry.underruns) == (skipped, short, underruns)
        assert skipped <= sim.hop  # at most a frame's worth, at the start
        medians.append(np.median(sim.latencies_ms()[sim.frames(0.5):]))
        lowest.append(min(before_call[start:]))
    assert max(medians) - min(medians) < 2, medians  # ms (the simulation's tick is 1 ms)
    assert min(lowest) >= 2 * out_block, lowest


def test_drift_is_skipped_and_the_latency_stops_growing(model, clock):
    """An input card 2.5% fast (82 samples every 80) into an output taking whole frames: the latency
    would grow 25 ms a second. The engine skips what piles up: over the last second the latency is no
    higher than over the second before (it saws up and down within each half-second window)."""
    sim = Simulation(model, clock, in_block=80, out_block=320, fast=2, buffer_ms=100, late_ms=2, compute_ms=5)
    sim.run(3.5)
    latency = sim.latencies_ms()
    last, before = latency[-sim.frames(1.0):], latency[-sim.frames(2.0):-sim.frames(1.0)]
    assert last.max() < before.max() + 5, (before.max(), last.max())
    assert sim.feed.skipped > 0.03 * sim.rate, sim.feed.skipped


def test_play_starts_from_the_input_heard_while_stopped(model):
    """Stopped, the player still encodes the input (its frames go on), so the first frame it plays
    encodes the input as a player that played all along does, not the audio from before it stopped;
    and a reset carries the encoding on. In resynth mode the codes played are the input's."""
    signal = (0.3 * np.random.default_rng(0).standard_normal(model.config.codec.sample_rate)).astype(np.float32)
    along = resynthesised(model, signal, {})
    # the stop fades out over 50 ms (frames 10-12), then frames 13-19 are not computed
    stopped = resynthesised(model, signal, {10: ("/distill/play", [0]), 20: ("/distill/play", [1])})
    reset = resynthesised(model, signal, {25: ("/distill/reset", [])})
    assert stopped[20] == along[20]
    assert reset[25:] == along[25:]


def test_a_crossfade_within_one_model_encodes_each_input_frame_once(model, monkeypatch):
    """A reset or cue jump fades from the old voice to a fresh one that carries on the same encoding:
    the input is encoded once a frame for both (and both play what a single voice would)."""
    signal = (0.3 * np.random.default_rng(1).standard_normal(model.config.codec.sample_rate)).astype(np.float32)
    along = resynthesised(model, signal, {})
    encode_step, calls = model.codec.encode_step, []

    def counted(*args):
        calls.append(1)
        return encode_step(*args)

    monkeypatch.setattr(model.codec, "encode_step", counted)
    faded = resynthesised(model, signal, {5: ("/distill/reset", []), 15: ("/distill/cue", [0, 0.2])})
    assert len(calls) == 30  # one per frame; each fade kept two voices listening for several frames
    assert faded[5:15] == along[5:15] and faded[16:] == along[16:]  # resynth: the input's codes either way


def test_a_held_region_plays_over_the_input_and_the_input_leads_again_when_released(model):
    """In resynth mode the codes played are the input's; a region held in loop mode replays its frames (the
    input's codes as they were played) instead, like freeze; released, the input's codes play again."""
    signal = (0.3 * np.random.default_rng(2).standard_normal(model.config.codec.sample_rate)).astype(np.float32)
    along = resynthesised(model, signal, {})
    held = resynthesised(model, signal, {8: ("/distill/region/start", [2]), 9: ("/distill/region/length", [4]),
                                         10: ("/distill/region/mode", [2]), 20: ("/distill/region/mode", [0])})
    assert held[:10] == along[:10]
    assert held[10:20] == [along[2 + i % 4] for i in range(10)] != along[10:20]
    assert held[20:] == along[20:]


def resynthesised(model, signal: np.ndarray, messages: dict[int, tuple[str, list]]) -> list[list[int]]:
    """The codes played at each of 30 frames of `signal`, with a message sent before some frames."""
    rate, hop = model.config.codec.sample_rate, model.config.codec.hop
    feed = AudioInput(1, rate, rate, hop)
    feed.callback(signal[:, None], len(signal), None, None)
    feed.pull()
    registry = ParamRegistry.for_model(model, audio_input=True)
    registry.submit("/distill/play", [1])
    player = Player(model, registry, audio_input=feed)
    codes = []
    for f in range(30):
        if f in messages:
            registry.submit(*messages[f])
        player.next_frame()
        codes.append(player.last_codes.tolist())
    return codes


def test_triggers_with_an_input_wait_for_whole_input_frames(model, clock):
    """Cue jumps and resets while the input plays through (resynth): no frame of input is cut short and
    filled with silence, nothing skipped, no underrun. (A trigger cuts into the frame playing only
    without an input: with one, it begins at the frame's end, when a whole frame of input is there.)"""
    sim = Simulation(model, clock, in_block=64, out_block=64, buffer_ms=10)
    registry = sim.engine.registry
    registry.submit("/distill/input/mode", [1])
    registry.submit("/distill/play", [1])
    sim.run(0.5)
    skipped, short, underruns = sim.feed.skipped, sim.feed.short, sim.engine.telemetry.underruns
    for i in range(12):
        registry.submit("/distill/cue" if i % 2 else "/distill/reset", [i % 2, 0.05] if i % 2 else [])
        sim.run(0.0137 * (i + 1))  # into the middle of frames, at ever other places
    sim.run(0.5)
    assert (sim.feed.skipped, sim.feed.short, sim.engine.telemetry.underruns) == (skipped, short, underruns)

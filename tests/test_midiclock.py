"""MIDI clock: tempo from 24 ppqn ticks, transport and song position, and quantised cue jumps.

These feed messages with exact timestamps; tests/test_midi_jack.py checks the same through real
JACK MIDI against a running engine (tempo, and a quantised cue landing within one frame).
"""
from __future__ import annotations

import random

import mido
import numpy as np
import pytest

from distill_live.control.midi.clock import PPQN, MidiClock
from distill_live.control.midi.mapfile import parse_map
from distill_live.control.midi.mapper import Mapper
from distill_live.control.params import ParamRegistry

TICK = 60 / (120 * PPQN)  # seconds per tick at 120 BPM


def feed(clock: MidiClock, kind: str, t: float, **fields) -> None:
    clock.handle(mido.Message(kind, **fields), t)


def run_ticks(clock: MidiClock, first: int, count: int, period: float = TICK, jitter: float = 0.0, start: float = 0.0):
    rng = random.Random(1)
    for i in range(first, first + count):
        feed(clock, "clock", start + i * period + rng.uniform(-jitter, jitter))


def test_tempo_of_a_steady_clock():
    clock = MidiClock()
    assert clock.tempo() is None
    run_ticks(clock, 0, 100)
    assert clock.tempo() == pytest.approx(120.0, rel=1e-9)
    run_ticks(clock, 0, 100, period=60 / (97.5 * PPQN), start=10.0)  # after a pause, a new tempo
    assert clock.tempo() == pytest.approx(97.5, rel=1e-9)


def test_tempo_with_jittery_ticks_is_averaged_over_two_beats():
    clock = MidiClock()
    run_ticks(clock, 0, 200, jitter=0.002)  # +-2 ms per tick, like USB MIDI
    assert clock.tempo() == pytest.approx(120.0, abs=0.3)


def test_tempo_through_jack_periods_is_within_a_fraction_of_a_bpm():
    """JACK timestamps MIDI by process cycle (here 256 frames at 48 kHz, 5.3 ms): the fit sees through it."""
    clock = MidiClock()
    period = 256 / 48000
    for i in range(100):
        feed(clock, "clock", (0.0013 + i * TICK) // period * period)
    assert clock.tempo() == pytest.approx(120.0, abs=0.3)


def test_tempo_is_unknown_once_the_clock_goes_quiet():
    clock = MidiClock()
    run_ticks(clock, 0, 50)
    last = 49 * TICK
    assert clock.tempo(now=last + 1.0) == pytest.approx(120.0)
    assert clock.tempo(now=last + 2.5) is None


def test_start_stop_continue_and_song_position():
    clock = MidiClock()
    feed(clock, "start", 0.0)
    assert clock.running and clock.tick == -1  # the next tick is the downbeat
    run_ticks(clock, 0, 30)
    assert clock.tick == 29
    feed(clock, "stop", 29.5 * TICK)
    run_ticks(clock, 30, 10)  # ticks while stopped keep the tempo but not the position
    assert clock.tick == 29 and not clock.running
    assert clock.next_boundary(39.2 * TICK) is None  # stopped: nothing to quantise to
    feed(clock, "songpos", 39.5 * TICK, pos=8)  # 8 sixteenths = beat 3
    feed(clock, "continue", 39.5 * TICK)
    run_ticks(clock, 40, 1)
    assert clock.tick == 8 * 6 == 48
    assert clock.tempo() == pytest.approx(120.0, rel=1e-9)
    assert clock.next_boundary(40 * TICK) == pytest.approx(64 * TICK, abs=1e-9)


def test_next_beat_and_bar():
    clock = MidiClock()
    feed(clock, "start", 0.0)
    run_ticks(clock, 0, 35)  # tick 0 at t=0 ... tick 34 at 34 * TICK
    t = 34 * TICK + 0.001
    assert clock.next_boundary(t, "beat") == pytest.approx(48 * TICK, abs=1e-9)
    assert clock.next_boundary(t, "bar") == pytest.approx(4 * 24 * TICK, abs=1e-9)
    # asked exactly on a beat: the next beat, not this one
    assert clock.next_boundary(24 * TICK, "beat") == pytest.approx(48 * TICK, abs=1e-9)
    # after Start, before the first tick: the first tick is the beat
    clock2 = MidiClock()
    run_ticks(clock2, 0, 30)
    feed(clock2, "start", 29 * TICK + 0.002)
    assert clock2.next_boundary(29 * TICK + 0.003) == pytest.approx(30 * TICK, abs=1e-9)


def test_a_free_running_clock_without_start_counts_from_its_first_tick():
    clock = MidiClock()
    run_ticks(clock, 0, 10, start=5.0)
    assert clock.next_boundary(5.0 + 9 * TICK) == pytest.approx(5.0 + 24 * TICK, abs=1e-9)


def test_quantised_cue_jumps_and_freezes_land_on_the_next_beat():
    registry = ParamRegistry(["a"], levels=4, codebook_size=64, cues=4)
    midimap = parse_map('[keyboard]\nbase = 60\nrelease = "freeze"\n[[cc]]\ncc = 1\nparam = "gain"\n', registry)
    clock = MidiClock()
    mapper = Mapper(midimap, registry, clock, quantize="beat")
    mapper.handle(mido.Message("start"), 0.0)
    for i in range(30):
        mapper.handle(mido.Message("clock"), i * TICK)
    t = 29 * TICK + 0.004
    out = mapper.handle(mido.Message("note_on", note=62, velocity=100), t)
    assert [a for a, _, _ in out] == ["/distill/freeze", "/distill/cue", "/distill/play"]
    assert all(at == pytest.approx(48 * TICK, abs=1e-9) for _, _, at in out)  # beat 3 at 120 BPM: 1.0 s
    assert mapper.handle(mido.Message("control_change", control=1, value=64), t)[0][2] is None  # gain: now
    out = mapper.handle(mido.Message("note_off", note=62), 49 * TICK)
    assert out == [("/distill/freeze", (1,), pytest.approx(72 * TICK, abs=1e-9))]
    mapper.quantize = "bar"
    out = mapper.handle(mido.Message("note_on", note=61, velocity=100), 49 * TICK)
    assert out[-1][2] == pytest.approx(96 * TICK, abs=1e-9)  # next bar: 2.0 s
    mapper.handle(mido.Message("stop"), 1.2)
    assert mapper.handle(mido.Message("note_on", note=60, velocity=100), 1.3)[-1][2] is None  # stopped: at once


def test_time_of_a_tick_on_the_fitted_line():
    clock = MidiClock()
    feed(clock, "start", 0.0)
    run_ticks(clock, 0, 30, start=2.0)
    assert clock.time_of_tick(29) == pytest.approx(2.0 + 29 * TICK, abs=1e-9)
    assert clock.time_of_tick(96) == pytest.approx(2.0 + 96 * TICK, abs=1e-9)


def test_a_quantised_key_starts_playback_at_the_first_frame_after_the_beat():
    """Clock times here are engine seconds, as in a render: the key lands exactly on the first 1.25 ms chunk after the
    beat."""
    import math

    from distill_live.live.player import Player
    from models import random_model

    model = random_model(worlds=["a"], cues=(20, 20))
    registry = ParamRegistry.for_model(model)
    mapper = Mapper(parse_map("[keyboard]\nbase = 60\n", registry), registry, quantize="beat")
    offset = 0.013  # so the beat does not fall on a frame boundary
    mapper.handle(mido.Message("start"), offset - 0.001)
    for i in range(30):
        mapper.handle(mido.Message("clock"), offset + i * TICK)
    beat = offset + 48 * TICK  # beat 3: 1.013 s
    for address, args, at in mapper.handle(mido.Message("note_on", note=61, velocity=90), offset + 29.5 * TICK):
        assert at == pytest.approx(beat, abs=1e-9)
        registry.submit(address, args, at=at)
    player = Player(model, registry, seed=0)
    frames = [player.next_frame() for _ in range(53)]
    audio = np.concatenate(frames)
    first = int(np.flatnonzero(audio)[0])
    chunk = player.chunk / player.sample_rate  # controls apply every chunk (1.25 ms)
    start = round(math.ceil(beat / chunk - 1e-9) * chunk * player.sample_rate)
    assert start == 16220 and 0 <= first - start < 8  # 1.01375 s (the fade-in's very first samples may round to 0)

"""Latency, piece by piece: which messages pre-empt, how the card skips to what a trigger or a fader
queued, and how a trigger cuts into the frame playing. The whole path through a real JACK server is in test_serve.py;
the figures are bench/latency.py's."""
from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from distill_live.control.params import ParamRegistry
from distill_live.live.cardqueue import CardQueue
from distill_live.live.engine import FIRST_STOP, Engine
from distill_live.live.player import GESTURE, SPLICE, Player
from distill_live.live.ringbuffer import RingBuffer, take
from models import random_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import latency  # noqa: E402  (bench/latency.py)


@pytest.fixture(scope="module")
def model():
    return random_model()


def test_triggers_are_urgent_and_everything_else_waits_its_turn(model):
    registry = ParamRegistry.for_model(model)
    for address, args in (("/distill/cue", [1]), ("/distill/reset", []), ("/distill/play", [1])):
        registry.submit(address, args)
        assert registry.urgent(0.0), address
        registry.apply_due(0.0)
        # applied by a chunk the generator was making as it came: that chunk is queued behind the rest,
        # so the trigger stays urgent until the engine has replaced the queue
        assert registry.urgent(0.0), f"{address}: urgent until the engine answers it"
        registry.preempted()
        assert not registry.urgent(0.0), address
    # playing now: play 1 again changes nothing; the rest are not triggers; a timed cue has its own time
    for address, args, at in (("/distill/play", [1], None), ("/distill/gain", [0.5], None),
                              ("/distill/world/bells", [1.0], None), ("/distill/play", [0], None),
                              ("/distill/cue", [2], 5.0), ("/distill/reset", [0], None)):
        registry.submit(address, args, at=at)
        assert not registry.urgent(0.0), (address, args, at)
    registry.apply_due(0.0)  # stopped now
    registry.submit_validated([("/distill/gain", (0.2,)), ("/distill/play", (1,))])  # a bundle with play 1
    assert registry.urgent(0.0)


def test_steering_for_now_waits_to_be_taken_up_and_timed_steering_keeps_its_time(model):
    """A message that steers the prior, for now (untimed, or late), waits until a chunk applies it, which then
    says it applied steering for now; a timed one to come, and what does not steer, never wait so."""
    registry = ParamRegistry.for_model(model)
    for address, args, at in (("/distill/world/bells", [1.0], None), ("/distill/descriptor/loudness", [0.8], None),
                              ("/distill/levels", [1], 0.5)):  # (a late one: timed before now)
        registry.submit(address, args, at=at)
        assert registry.steering_waits(1.0) and not registry.urgent(1.0), address
        assert registry.apply_due(1.0) and registry.steered_now, address
        assert not registry.steering_waits(1.0), address
    for address, args, at in (("/distill/gain", [0.5], None), ("/distill/world/bells", [0.0], 5.0)):
        registry.submit(address, args, at=at)
        assert not registry.steering_waits(1.0), address
        registry.apply_due(1.0)
        assert not registry.steered_now, address
    assert registry.apply_due(5.0) == [("/distill/world/bells", (0.0,))] and not registry.steered_now
    registry.submit("/distill/world/bells", [1.0])
    assert registry.steering_waits(5.0)
    registry.preempted()  # answered by the engine
    assert not registry.steering_waits(5.0)


def test_a_steering_onset_is_heard_at_once_from_a_frame_boundary_or_partway(model):
    """`Player.heard_at_once`: the chunk that applies a gesture's onset plays it from its first sample, whether
    a frame begins there or the frame playing is made again; in the frame's last SPLICE, the next frame's first
    chunk does. Not a value sent again, a gesture going on, or a message timed to its chunk (it is where it was
    asked to be)."""
    player = Player(model, ParamRegistry.for_model(model), seed=0)
    registry = player.registry
    registry.submit("/distill/play", [1])

    def after_quiet(address: str, value, partway: bool, timed: bool = False) -> bool:
        for _ in range(math.ceil(GESTURE * player.frame_rate)):
            player.next_frame()
        while player.pos < player.hop:  # to a frame's end
            player.next_chunk()
        if partway:
            player.next_chunk()
        registry.submit(address, [value], at=player.time if timed else None)
        player.next_chunk()
        assert player.pos == (2 if partway else 1) * player.chunk
        return player.heard_at_once

    assert after_quiet("/distill/levels", 1, partway=False), "a frame begins under it"
    assert after_quiet("/distill/levels", 2, partway=True), "the frame playing is remade"
    assert not after_quiet("/distill/levels", 2, partway=False), "sent again: nothing changes"
    assert not after_quiet("/distill/levels", 2, partway=True), "sent again, partway"
    assert not after_quiet("/distill/levels", 1, partway=True, timed=True), "timed to this chunk"
    for _ in range(math.ceil(GESTURE * player.frame_rate)):
        player.next_frame()
    while player.hop - player.pos >= player.splice:  # into the frame's last SPLICE: no remake, its end comes as soon
        player.next_chunk()
    registry.submit("/distill/levels", [2])
    player.next_chunk()
    assert not player.heard_at_once and player.onset_waits
    while player.pos < player.hop:
        player.next_chunk()
        assert not player.heard_at_once
    player.next_chunk()
    assert player.heard_at_once and not player.onset_waits, "the next frame plays it from its first chunk"
    registry.submit("/distill/levels", [3])
    player.next_chunk()
    assert not player.heard_at_once, "a gesture going on"
    assert registry.controls().levels == 3


def test_a_trigger_is_heard_from_the_cards_next_block_crossfaded_from_what_it_replaces():
    ring = RingBuffer(1000)
    queue = CardQueue(ring, 1000, smooth=0.05)
    queue.write(np.full(300, 0.8, np.float32))
    ring.read_into(np.zeros(50, np.float32))  # the card took a block of 50: 250 queued
    queue.trigger(np.full(100, -0.5, np.float32), fade=20)
    assert ring.available() == 100  # what the card will play: the trigger's samples, nothing before them
    heard = np.zeros(100, np.float32)
    ring.read_into(heard)
    fade = heard[:20]
    assert np.all(np.diff(fade) < 0) and 0.8 > fade[0] > 0.7 and -0.5 < fade[-1] < -0.4, fade
    np.testing.assert_array_equal(heard[20:], np.float32(-0.5))
    queue.tend()
    assert queue.skip is None  # taken
    # nothing queued: the new samples are what there is
    queue.trigger(np.full(10, 0.5, np.float32), fade=20)
    assert ring.available() == 10


def test_a_skip_the_card_missed_is_set_again_from_where_it_plays():
    """The card was copying a block as the trigger looked at where it reads: it plays on, missing the skip.
    At the next look the trigger's samples (and what was queued after them) are queued again, crossfaded
    from where the card is now, and the card skips there at its next block: one block later, no step."""
    ring = RingBuffer(1000)
    queue = CardQueue(ring, 1000, smooth=0.05)
    queue.write(np.linspace(0.0, 0.5, 300, dtype=np.float32))
    queue.trigger(np.full(100, -0.5, np.float32), fade=20)
    queue.write(np.full(30, -0.25, np.float32))  # the generator queued more after the trigger's samples
    ring.discard(50)  # a copy that began before the skip was set: it moves on without skipping
    queue.tend()
    assert queue.skip is not None and queue.skip.at == 50  # set again, from where the card is
    heard = np.zeros(ring.available(), np.float32)
    ring.read_into(heard)
    assert len(heard) == 100 + 30
    fade = heard[:20]
    next_sample = np.linspace(0.0, 0.5, 300)[50]
    assert np.all(np.diff(fade) < 0) and next_sample > fade[0] > 0.0 and -0.5 < fade[-1] < -0.4, fade
    np.testing.assert_array_equal(heard[20:100], np.float32(-0.5))
    np.testing.assert_array_equal(heard[100:], np.float32(-0.25))
    queue.tend()
    assert queue.skip is None


def test_a_fader_is_heard_from_the_cards_next_block_and_stays_continuous():
    """An untimed gain is heard from the card's next block: what is queued is queued again, eased from the
    gain the card is at with the gain's smoothing (50 ms): no step, and what follows continues the easing."""
    rate = 1000
    ring = RingBuffer(1000)
    queue = CardQueue(ring, rate, smooth=0.05)
    queue.settle(0.0)
    queue.write(np.full(100, 0.5, np.float32))  # gain 0: digital silence queued
    ring.read_into(np.zeros(30, np.float32))  # a block of 30 played: 70 queued
    queue.reach(1.0)
    assert ring.available() == 70  # the same audio, queued again
    queue.write(np.full(100, 0.5, np.float32))
    heard = np.zeros(ring.available(), np.float32)
    ring.read_into(heard)
    expected = 0.5 * (1.0 - np.exp(-np.arange(1, 171) / (0.05 * rate)))
    np.testing.assert_allclose(heard, expected, rtol=1e-5)  # at once, eased, across the new chunk too
    assert heard[0] > 0 and np.abs(np.diff(heard)).max() < 0.5 / (0.05 * rate)
    queue.tend()
    assert queue.skip is None
    # gain 0 again arrives at digital silence
    queue.reach(0.0)
    queue.write(np.full(900, 0.5, np.float32))
    heard = np.zeros(ring.available(), np.float32)
    ring.read_into(heard)
    assert heard[0] > 0.4 and np.all(heard[-100:] == 0.0)


def test_a_fader_moved_as_the_card_copied_a_block_is_heard_from_the_block_after():
    """The card missed the fader's skip (it was copying): what it has played is left out of what is queued
    again, so nothing is heard twice."""
    ring = RingBuffer(1000)
    queue = CardQueue(ring, 1000, smooth=0.05)
    ramp = np.arange(300, dtype=np.float32) / 1000
    queue.write(ramp)
    queue.reach(0.5)
    ring.discard(50)  # a copy that began before the skip was set
    queue.tend()
    heard = np.zeros(ring.available(), np.float32)
    ring.read_into(heard)
    assert len(heard) == 250
    np.testing.assert_allclose(heard, ramp[50:] * (0.5 + 0.5 * np.exp(-np.arange(1, 251) / 50.0)), rtol=1e-5)


def test_a_fader_moved_while_a_trigger_waits_for_the_card_reaches_once_it_skipped():
    ring = RingBuffer(1000)
    queue = CardQueue(ring, 1000, smooth=0.05)
    queue.write(np.full(300, 0.5, np.float32))
    ring.read_into(np.zeros(50, np.float32))
    queue.trigger(np.full(200, 0.5, np.float32), fade=20)
    queue.reach(0.0)
    assert queue.skip.origin is None, "the trigger's skip waits for the card; the fader waits for it"
    heard = np.zeros(50, np.float32)
    ring.read_into(heard)  # the card skips, at the gain the trigger's samples got
    np.testing.assert_array_equal(heard, np.float32(0.5))
    queue.tend()  # then the fader reaches, from the card's next block
    heard = np.zeros(150, np.float32)
    ring.read_into(heard)
    np.testing.assert_allclose(heard, 0.5 * np.exp(-np.arange(1, 151) / 50.0), rtol=1e-5)


def test_only_gain_due_now_reaches_the_card_at_once(model):
    """The registry hands the engine untimed gain values (a fader) at once, the last of each, and once; a timed
    gain waits for its time (it is applied by the Player in its turn, like everything else), unless it comes
    late, for a time made already: then it is for now too, as a late trigger pre-empts."""
    registry = ParamRegistry.for_model(model)
    registry.submit("/distill/gain", [0.2])
    registry.submit("/distill/gain", [0.7])
    registry.submit("/distill/gain", [0.4], at=5.0)
    registry.submit("/distill/temperature", [0.5])
    assert registry.at_card(0.0) == {"/distill/gain": 0.7}
    assert registry.at_card(0.0) == {}
    registry.apply_due(0.0)
    assert registry.get("gain") == 0.7  # applied in its turn too, for the take and for render
    registry.apply_due(5.0)
    assert registry.get("gain") == 0.4
    registry.submit("/distill/gain", [0.9], at=4.0)  # late (the generator is at 5 s), and overtaken: the
    registry.submit("/distill/cue", [1], at=4.5)      # gain timed at 5 s has played; the late cue pre-empts
    assert registry.at_card(5.0) == {} and registry.urgent(5.0)
    registry.submit("/distill/gain", [0.3], at=5.5)
    assert registry.at_card(6.0) == {"/distill/gain": 0.3}
    assert [a for a, _ in registry.apply_due(6.0)] == ["/distill/cue", "/distill/gain"]
    assert registry.get("gain") == 0.3


def test_the_engine_applies_the_gain_at_the_card_and_the_take_keeps_the_players(model):
    """Driven by hand: after a fader moves, the card's next block on is the queued audio gained again, while
    the Player's chunks (the take, what render gives again) change only from the chunk the
    message is applied at, as before."""
    engine = Engine(model, buffer_ms=10.0)  # the ring at the model's rate: no resampler
    engine.registry.submit("/distill/play", [1])
    engine.card_queue.settle(1.0)
    for _ in range(40):
        engine.generate_one()
    engine.registry.preempted()  # (play was a trigger: answered, as the generator's loop would)
    engine.ring.read_into(np.zeros(64, np.float32))  # the card took a block
    engine.block = 64
    queued = engine.ring.available()
    made = engine.recent(queued)  # the Player's last chunks: at gain 1, the card plays them as they are
    assert np.abs(made).max() > 0.01
    engine.registry.submit("/distill/gain", [0.0])
    engine.poll()  # plenty queued: it makes no chunk, it reaches into the queue
    assert engine.ring.available() == queued
    heard = np.zeros(queued, np.float32)
    engine.ring.read_into(heard)  # the card's next block on
    eased = np.exp(-np.arange(1, queued + 1) / (0.05 * engine.sample_rate))
    plain = np.abs(made) < 0.9  # (peaks past 0.9 were bent by the output's safety, before and after)
    np.testing.assert_allclose(heard[plain], (made * eased)[plain], rtol=1e-4, atol=1e-7)
    engine.generate_one()  # the Player applies the gain now, at the next chunk it makes, as render does
    assert engine.player.applied == [("/distill/gain", (0.0,))]
    player_chunk = engine.recent(engine.player.chunk)
    assert np.abs(player_chunk).max() > 0.5 * np.abs(engine.player.ungained).max(), "the Player eases from here"


def test_a_steering_onset_is_put_in_place_of_what_the_card_has_queued(model):
    """With 100 ms queued, a steering message for now that begins a gesture (here the levels, which always sound
    different at once) is heard from the card's next block, as a trigger is: the chunks that play it replace the
    queue, crossfaded over SPLICE. A step within GESTURE of the card's time, a value sent again and a message timed
    to come wait their turn behind the queue."""
    engine = Engine(model, buffer_ms=100.0)  # the ring at the model's rate: no resampler
    engine.registry.submit("/distill/play", [1])
    engine.card_queue.settle(1.0)
    engine.block = block = 64
    out = np.zeros(block, np.float32)
    splice = round(SPLICE * engine.sample_rate)

    def play(seconds: float) -> None:
        """The card takes `seconds` a block at a time, the generator making up for each block, with no skip."""
        for _ in range(round(seconds * engine.sample_rate / block)):
            while engine.poll():
                assert engine.card_queue.skip is None
            engine.ring.read_into(out)
            engine.card_queue.tend()
        while engine.poll():
            assert engine.card_queue.skip is None

    def queued() -> np.ndarray:
        """What the card will play next, as the ring holds it."""
        return take(engine.ring.data, engine.ring.read, engine.ring.written).copy()

    play(0.5)
    before = queued()
    assert len(before) > 0.09 * engine.sample_rate
    engine.registry.submit("/distill/levels", [1])
    assert engine.poll()
    assert engine.card_queue.skip is not None, "the queue is replaced"
    made = engine.recent(engine.ring.available())  # the chunks made just now, which play the change
    heard = np.zeros(round(0.03 * engine.sample_rate), np.float32)  # the card's next 30 ms
    engine.ring.read_into(heard)
    made = made[:len(heard)]
    plain = (np.abs(made) < 0.9) & (np.abs(before[:len(heard)]) < 0.9)  # (the output's safety bends peaks)
    plain[:splice] = False
    np.testing.assert_allclose(heard[plain], made[plain], rtol=1e-4, atol=1e-6)
    assert not np.allclose(heard[plain], before[:len(heard)][plain], atol=1e-3), "not what was queued"
    assert abs(heard[0] - before[0]) < abs(heard[0] - made[0]) + 1e-6, "the crossfade starts from what was queued"
    engine.card_queue.tend()

    def waits(address: str, value, at: float | None = None) -> None:
        """No skip while the frame it came in and the next begin (a frame's worth of chunks, made at once)."""
        before = queued()
        engine.registry.submit(address, [value], at=at)
        for _ in range(engine.player.hop // engine.player.chunk + 1):
            engine.poll()
            assert engine.card_queue.skip is None, (address, value, at)
        engine.generate_one()
        np.testing.assert_array_equal(queued()[:len(before)], before, err_msg=f"{address} {value} {at}")

    waits("/distill/levels", 2)  # an onset in the Player's time (a queue later), but not 0.1 s of the card's
    play(0.2)
    waits("/distill/levels", 2)  # an onset again, but a value sent again
    play(0.2)
    waits("/distill/levels", 1, at=engine.player.time + 0.05)  # timed to come, and at its time
    play(0.2)
    assert engine.registry.controls().levels == 1
    player = engine.player
    while player.hop - player.pos >= player.splice:  # into a frame's last SPLICE: the next frame plays it
        engine.generate_one()
    engine.registry.submit("/distill/levels", [2])
    for _ in range(player.splice // player.chunk + 1):
        assert engine.poll()  # at once, however much is queued
        if engine.card_queue.skip is not None:
            break
    assert engine.card_queue.skip is not None, "put in place of the queue from the next frame's first chunk"
    play(0.2)
    assert engine.telemetry.underruns == 0


def test_a_cue_cuts_into_the_frame_and_fades_from_its_rest(model):
    """The cue does not wait for the frame to end: the chunk it is applied at begins a new frame, which
    starts from where the old one was and fades over SPLICE; render does exactly this, so takes replay."""
    registry = ParamRegistry.for_model(model)
    registry.submit("/distill/play", [1])
    player = Player(model, registry, seed=0)
    for _ in range(10):
        player.next_frame()
    for _ in range(5):  # into the middle of a frame
        player.next_chunk()
    frames, rest = player.frames, player.raw[player.pos:].copy()
    registry.submit("/distill/cue", [1, 0.1])
    first = player.next_chunk()
    assert player.frames == frames + 1 and player.pos == player.chunk, "the cue began a frame at once"
    gain_env = first / np.where(rest[:len(first)] == 0, 1, rest[:len(first)])
    assert abs(gain_env[0] - 1.0) < 0.1, "the first sample is still (almost) the old frame's next one"
    splice = round(SPLICE * player.sample_rate)
    assert not np.allclose(player.raw[splice:splice + 20], rest[splice:splice + 20]), "then the new frame"


def test_triggers_cut_in_at_most_once_a_frame_and_not_just_before_its_end(model):
    """A flood of triggers (a pad drummed, the soak's) makes at most one extra frame a frame; a trigger in the
    last SPLICE of a frame waits for its end, which comes as soon; both are applied either way."""
    registry = ParamRegistry.for_model(model)
    registry.submit("/distill/play", [1])
    player = Player(model, registry, seed=0)
    for _ in range(4):
        player.next_frame()
    player.next_chunk()  # a chunk into a frame
    frames = player.frames
    registry.submit("/distill/cue", [1, 0.1])
    player.next_chunk()
    assert player.frames == frames + 1, "the first trigger cuts in"
    for _ in range(3):  # more within the same frame: applied (a new crossfade each), no new frame
        registry.submit("/distill/reset", [])
        fading = player.fading
        player.next_chunk()
        assert player.fading is not fading and player.frames == frames + 1
    while player.pos < player.hop:  # the cut frame plays to its end
        player.next_chunk()
    player.next_chunk()
    assert player.frames == frames + 2
    while player.hop - player.pos >= player.splice:  # to the last SPLICE of this frame
        player.next_chunk()
    registry.submit("/distill/cue", [0, 0.1])
    player.next_chunk()
    assert player.frames == frames + 2 and player.pos > player.hop - player.splice, "it waits for the frame's end"
    while player.pos < player.hop:
        player.next_chunk()
    player.next_chunk()
    assert player.frames == frames + 3


def test_a_trigger_from_silence_plays_the_new_voice_alone(model):
    """A pad that starts a cue from silence has nothing to crossfade from: the cue's voice plays alone from
    its first frame (one voice's work, not two, before it is heard), faded in by play; a cue while it
    plays still crossfades from what plays, and so does one while a stop is still fading out."""
    registry = ParamRegistry.for_model(model)
    player = Player(model, registry, seed=0)
    player.next_frame()  # stopped: silent frames
    registry.submit_validated([("/distill/cue", (1, 0.1)), ("/distill/play", (1,))])
    first = player.next_chunk()
    assert player.fading is None, "nothing was heard: no old voice to fade from"
    assert np.abs(first).max() > 0, "the cue is heard from the first chunk"
    alone = Player(model, ParamRegistry.for_model(model), seed=0)
    alone.registry.submit_validated([("/distill/cue", (1, 0.1)), ("/distill/play", (1,))])
    alone.next_chunk()
    assert np.allclose(player.raw, alone.raw), "the frame is the cue's own, as from a fresh start"
    player.next_frame()
    registry.submit("/distill/cue", [0, 0.1])
    player.next_chunk()
    assert player.fading is not None, "playing: the cue crossfades from the voice playing"
    for _ in range(10):
        player.next_frame()
    registry.submit("/distill/play", [0])
    player.next_chunk()
    assert 0 < player.envelope < 1
    registry.submit("/distill/cue", [1, 0.1])
    player.next_chunk()
    assert player.fading is not None, "a stop still fading out is heard: the cue crossfades from it"


def test_realtime_priority_is_given_or_the_reason_said():
    """serve --realtime: the generator thread gets SCHED_FIFO where this user may have it (root, or an rtprio
    limit), and otherwise says so in a sentence that names the way to allow it; the thread plays on either way."""
    import os
    import threading

    from distill_live.live.engine import realtime_priority

    seen = {}

    def thread():
        seen["said"] = realtime_priority()
        seen["policy"], seen["priority"] = os.sched_getscheduler(0), os.sched_getparam(0).sched_priority

    t = threading.Thread(target=thread)
    t.start()
    t.join()
    if seen["said"].startswith("real-time priority"):
        assert seen["policy"] == os.SCHED_FIFO and seen["said"] == f"real-time priority {seen['priority']}", seen
    else:
        assert seen["policy"] == os.SCHED_OTHER and "audio group" in seen["said"], seen
    assert os.sched_getscheduler(0) == os.SCHED_OTHER, "only the thread that asked changes"


def test_the_margin_follows_the_measured_costs_within_its_bounds():
    """Just in time: the margin is the worst (or 1.5 x the p99) of the recent chunk costs, never below the floor
    (--buffer-ms) nor, past it, above MAX_MARGIN; a slow chunk raises it at once, and it comes down once the
    slow chunks are out of the window."""
    from distill_live.live.engine import MAX_MARGIN, Margin

    m = Margin(floor=0.002, chunks_per_second=100, window=2.0, first_stop=0.0)  # a window of 200 chunks
    for _ in range(200):
        m.add(0.001)
    assert m.seconds == pytest.approx(0.002)  # cheap chunks: the floor
    m.add(0.006)
    assert m.seconds == pytest.approx(0.006)  # one slow chunk: at once
    m.add(5.0)
    assert m.seconds == pytest.approx(MAX_MARGIN)  # a stall: no more than the most
    for _ in range(256):
        m.add(0.003)
    assert m.seconds == pytest.approx(0.0045)  # the stall has left the window: 1.5 x the p99
    assert Margin(floor=0.3, chunks_per_second=100).seconds == 0.3  # a floor asked for above the most


def test_the_margin_keeps_a_stop_of_the_machine_ready_for_minutes():
    """A machine that stopped the generator for 10 ms (and the card with it, which then asks for all it missed at
    once) can stop it again: the margin keeps 1.5 x that ready at once and for `memory` seconds however cheap the
    chunks are meanwhile, a longer stop raises it, and it comes down once the stops are older than that."""
    from distill_live.live.engine import MAX_MARGIN, Margin

    m = Margin(floor=0.002, chunks_per_second=100, window=2.0, memory=60.0, first_stop=0.0)

    def play(start: float, seconds: float) -> None:  # cheap chunks, the generator looking every 0.6 ms
        for i in range(round(seconds * 100)):
            m.add(0.001)
            m.stopped(0.0006, start + i / 100)

    play(1000.0, 3.0)
    assert m.seconds == pytest.approx(0.002)  # a quiet machine: the floor
    m.stopped(0.010, 1003.0)
    assert m.seconds == pytest.approx(0.015)  # a stop: 1.5 x it, at once
    play(1003.0, 50.0)
    assert m.seconds == pytest.approx(0.015)  # still there 50 s later (the chunk costs forgot it long ago)
    m.stopped(0.012, 1053.0)
    play(1053.0, 30.0)
    assert m.seconds == pytest.approx(0.018)  # the longer of the two
    play(1083.0, 40.0)
    assert m.seconds == pytest.approx(0.002)  # a minute after the last stop: tight again
    m.stopped(0.5, 1200.0)
    assert m.seconds == pytest.approx(MAX_MARGIN)  # no more than the most


def test_before_the_machine_stops_the_margin_is_ready_for_a_first_stop():
    """A machine's first stop ran the card dry where the margin had not yet seen one (9.5 ms, 34 s into a run,
    2 ms kept): the margin starts as if the machine had stopped for `first_stop` as it started, and keeps that
    ready for `memory` seconds; a longer real stop raises it, and a shorter one is what stays after."""
    from distill_live.live.engine import Margin

    def play(m: Margin, start: float, seconds: float) -> None:  # cheap chunks, the generator looking every 0.6 ms
        for i in range(round(seconds * 100)):
            m.add(0.001)
            m.stopped(0.0006, start + i / 100)

    m = Margin(floor=0.002, chunks_per_second=100, window=2.0, memory=60.0, now=1000.0)
    assert m.stop == FIRST_STOP and m.seconds == pytest.approx(1.5 * FIRST_STOP)  # from the start
    play(m, 1000.0, 20.0)
    m.stopped(0.006, 1020.0)  # a real stop, shorter
    play(m, 1020.0, 39.0)
    assert m.seconds == pytest.approx(1.5 * FIRST_STOP)  # 59 s in: still ready for the first stop
    play(m, 1059.0, 2.0)
    assert m.seconds == pytest.approx(0.009)  # a minute in: ready for the stop the machine showed
    play(m, 1061.0, 20.0)
    assert m.seconds == pytest.approx(0.002)  # a minute after it: tight
    m = Margin(floor=0.002, chunks_per_second=100, window=2.0, memory=60.0, now=1000.0)
    m.stopped(0.012, 1001.0)
    assert m.seconds == pytest.approx(0.018)  # a longer first stop: 1.5 x it


def test_the_engine_times_the_generators_gaps_and_the_cards_lateness_as_stops(model):
    """What the margin remembers as the machine's stops, as the engine measures them at each look at the ring: how
    long the generator went since its last look, and how far past its next block the card has not called back
    (a late JACK cycle is followed by the ones it missed, back to back); a card a second late is gone, not late."""
    import time

    engine = Engine(model, buffer_ms=0.5)
    engine.registry.submit("/distill/play", [1])
    out = np.zeros(64, np.float32)
    engine.callback(out, 64, None, None)  # the card plays, 64 samples a block (4 ms at 16 kHz)
    engine.poll()
    assert FIRST_STOP <= engine.margin.stop < 0.03  # ready for a first stop; none of 30 ms yet
    time.sleep(0.03)  # the generator stopped for 30 ms
    engine.callback(out, 64, None, None)
    engine.poll()
    assert engine.margin.stop >= 0.03
    assert engine.margin.seconds >= 0.045  # 1.5 x the stop

    engine = Engine(model, buffer_ms=0.5)
    engine.registry.submit("/distill/play", [1])
    engine.callback(out, 64, None, None)
    engine.poll()  # (its first frame: however long it takes, the card's lateness is taken as a pass starts)
    engine.took = time.monotonic() - 0.05  # the card's last callback was 50 ms ago: its next block is 46 ms late
    before = time.monotonic()
    engine.poll()
    after = time.monotonic()
    late = 0.05 - 64 / engine.sample_rate
    assert late - 1e-4 <= engine.margin.stop <= late + (after - before) + 1e-4, (engine.margin.stop, after - before)
    stop = engine.margin.stop
    engine.took = time.monotonic() - 2.0  # the card stopped (gone, reopening): not a stop of the machine
    engine.poll()
    assert engine.margin.stop == stop


def test_the_engine_keeps_two_card_blocks_ready_beyond_the_one_it_plays(model):
    """A card can ask for two blocks back to back right after one the generator has not yet made up for (JACK
    runs a cycle that a stall of the machine made late and the next at once): whatever the measured margin,
    three blocks in a row find the ring full, in steady play and right after a trigger."""
    from distill_live.live.engine import MAX_MARGIN

    engine = Engine(model, buffer_ms=0.5)  # a margin floor far below two blocks
    engine.registry.submit("/distill/play", [1])
    engine.block = block = 1024  # two blocks (128 ms at 16 kHz) are more than the measured margin can be
    assert 2 * block > MAX_MARGIN * engine.sample_rate
    out = np.zeros(block, np.float32)
    for _ in range(20):  # steady play: the generator answers each block
        while engine.poll():
            pass
        engine.ring.read_into(out)
    while engine.poll():
        pass
    assert engine.kept == 2 * block
    assert [engine.ring.read_into(out) for _ in range(3)] == [block] * 3, "the generator did not get a look in"
    while engine.poll():
        pass
    engine.registry.submit("/distill/cue", [1, 0.05])  # a trigger: its chunks replace what is queued
    assert engine.poll()
    assert [engine.ring.read_into(out) for _ in range(3)] == [block] * 3
    assert engine.telemetry.underruns == 0


def test_halfway_is_when_the_output_has_moved_halfway_to_stay():
    start, end = np.zeros(3), np.array([2.0, 0.0, 0.0])
    track = np.zeros((500, 3))
    track[100:, 0] = 2.0  # the other state's sound from 100 ms on
    track[30:34, 0] = 9.0  # a blip past halfway: it does not stay
    assert latency.halfway_ms(track, start, end) == pytest.approx(100, abs=10)
    assert latency.halfway_ms(np.zeros((500, 3)), start, end) is None
    assert latency.progress(track, start, end)[300] == pytest.approx(1.0)


def test_the_model_only_trials_time_a_world_change_on_the_demo():
    """bench/latency.py --model-only: a world change rendered offline moves the demo's output to the other
    world's sound within the half second looked at, in most trials (the figures are the bench's)."""
    from distill_live.commands.bundled import DEMO

    report = latency.model_only(str(DEMO), ["world"], trials=8, seed=0, settle=1.5)
    world = report["world"]
    assert set(report) == {"world"} and world["trials"] + world.get("missed", 0) == 8
    assert world["trials"] >= 2 and 5 <= world["p50"] <= 500, world  # (never moving: 0 of 8)
    assert world["overshoot"] > 0.5, world  # the output got at least halfway, in the median trial
    # the yardstick: the demo's own passages of the other world, judged the same way, from their first sample
    recorded = world["recorded"]
    assert recorded["trials"] + recorded.get("missed", 0) == 8 and recorded["trials"] >= 4, recorded
    assert 0 < recorded["p50"] <= 500, recorded


def test_the_model_only_steer_trials_find_the_first_sample_a_change_alters():
    """bench/latency.py --model-only --actions steer: the same start rendered with and without a change; the
    first sample that differs comes after the change, within the half second looked at."""
    from distill_live.commands.bundled import DEMO
    from distill_live.model.modelfile import load_model

    model = load_model(str(DEMO))
    for action in latency.CHANGES:
        heard = latency.first_heard_offline(model, action, trials=6, seed=0)
        assert heard["trials"] + heard.get("missed", 0) == 6 and heard["trials"] >= 4, (action, heard)
        assert 0 <= heard["p50"] <= heard["max"] < 200, (action, heard)
    # one level instead of all sounds different in the frame playing, remade (the engine's part alone)
    assert heard["trials"] == 6 and heard["max"] < 1000 / model.config.codec.frame_rate, heard


def test_a_steer_trial_is_void_when_serve_ran_dry():
    """bench/latency.py reads serve's underruns from its last `-v` lines: a trial they moved is not compared."""
    run = latency.Run.__new__(latency.Run)
    run.err = ["distill-live: rtf 8.4  frame 2.39/4.06 ms (p50/p99)  margin 5.3 ms (chunk cost p99 3.0, worst 4.9)"
               f"  buffer 6.2 ms  latency 10.1 ms  underruns {n}\n" for n in (0, 3)] + ["a line of something else\n"]
    assert run.underruns() == 3
    run.err = []
    assert run.underruns() == 0


def test_the_xruns_are_counted_by_the_client_jackd_blamed():
    """bench/latency.py reads which client each xrun was blamed on from jackd's own log (lines as jackd 1.9.21
    writes them), so a run tells serve's xruns from the bench's."""
    log = ("JACK server starting in realtime mode with priority 10\n"
           "JackEngine::XRun: client = latency-probe was not finished, state = Running\n"
           "JackAudioDriver::ProcessGraphAsyncMaster: Process error\n"
           "JackEngine::XRun: client = PortAudio was not finished, state = Triggered\n"
           "JackEngine::XRun: client = latency-probe was not finished, state = Triggered\n"
           "JackEngine::XRun: client PortAudio finished after current callback\n"
           "JackTimedDriver::Process XRun = 14 usec\n")
    assert latency.xruns_by_client(log) == {"latency-probe": 2, "PortAudio": 1}
    assert list(latency.xruns_by_client(log)) == ["latency-probe", "PortAudio"]  # the most blamed first
    assert latency.xruns_by_client("") == {}


def test_the_underruns_are_timed_by_the_v_line_that_first_showed_them():
    lines = [(100.0, "distill-live: playing x"), (101.2, "rtf 9.1  margin 5.3 ms  underruns 0\n"),
             (102.2, "rtf 9.0  margin 5.3 ms  underruns 2\n"), (103.2, "rtf 9.0  margin 15.0 ms  underruns 2\n"),
             (104.2, "rtf 9.0  margin 15.0 ms  underruns 3\n")]
    assert latency.underrun_times(lines, start=100.0) == [2.2, 4.2]


def test_a_skip_to_the_same_sound_further_on_is_not_the_change():
    """bench/latency.py's live steer trials: a change's onset skips what was queued, crossfading to the sound
    further on. Where that is the unchanged start moved ahead, the change is first heard where the take differs
    from it moved, not at the skip; where the chunks after the skip already differ, at the skip."""
    rng = np.random.default_rng(0)
    same = rng.standard_normal(20000).astype(np.float32) * 0.1
    skip, moved, fade = 3000, 517, latency.SKIP_FADE
    ramp = (np.arange(1, fade + 1) / fade).astype(np.float32)
    crossfade = same[skip:skip + fade] * (1 - ramp) + same[skip + moved:skip + moved + fade] * ramp
    kept = np.concatenate([same[:skip], crossfade, same[skip + moved + fade:]])
    assert latency.change_heard(kept, same) is None, "the skip alone"
    later = kept.copy()
    later[6000:] *= 0.5  # the prior moved two frames on
    assert latency.change_heard(later, same) == 6000
    at_once = kept.copy()
    at_once[skip + fade:] = rng.standard_normal(len(at_once) - skip - fade) * 0.1  # other codes from the skip on
    assert latency.change_heard(at_once, same) == skip
    assert latency.change_heard(same, same) is None


def test_first_change_and_lining_up_ignore_what_is_not_heard_and_find_the_shift():
    same = np.sin(np.arange(2000) / 10.0).astype(np.float32)
    moved = same.copy()
    moved[:50] += 5e-6  # a resampler's faint ringing, below HEARD
    moved[700:] *= 0.5
    assert latency.first_change(moved, same) == 700
    assert latency.first_change(same, same) is None
    quiet_start = np.concatenate([np.full(30, 2e-6, np.float32), same[:1000] * 0.01])
    assert latency.lined_up(quiet_start) == 30 + int(np.argmax(np.abs(same[:1000] * 0.01) > latency.LOUD))
    assert latency.lined_up(np.full(100, 2e-6, np.float32)) is None
    # a take recorded from SLACK samples before where it was lined up, sitting 3 samples late
    take = np.concatenate([np.zeros(latency.SLACK + 3, np.float32), same])
    assert latency.shift(take, same) == 3
    assert latency.first_change(take[latency.SLACK + 3:], same) is None


def test_a_world_and_a_held_descriptor_are_read_as_sent_at_the_next_frame(model):
    """A world pad switches at the next frame, and a held descriptor jumps to its new target: neither is eased
    (the prior reads them as they are; docs/benchmarks.md, "Steering latency")."""
    registry = ParamRegistry.for_model(model)
    player = Player(model, registry, 0)
    n = len(model.worlds)
    registry.submit("/distill/mix", [1.0] + [0.0] * (n - 1))
    registry.submit("/distill/descriptor/loudness", [0.2])
    registry.submit("/distill/play", [1])
    for _ in range(3):
        player.next_frame()
    registry.submit("/distill/mix", [0.0] * (n - 1) + [1.0])
    registry.submit("/distill/descriptor/loudness", [0.8])
    player.next_frame()  # the frame that read them
    controls = player.remake.controls  # what the prior was given for it
    assert controls.world_weights == [0.0] * (n - 1) + [1.0]
    assert controls.descriptors[0] == 0.8, controls.descriptors


def _played(model, changes: dict[int, list[tuple[str, list]]], chunks: int) -> tuple[np.ndarray, Player]:
    """`chunks` chunks from a fresh player, playing; `changes[k]`: messages applied at chunk k."""
    player = Player(model, ParamRegistry.for_model(model), seed=0)
    player.registry.submit("/distill/play", [1])
    out = []
    for k in range(chunks):
        for address, args in changes.get(k, []):
            player.registry.submit(address, args)
        out.append(player.next_chunk())
    return np.concatenate(out), player


def test_a_steering_change_remakes_the_frame_playing_from_the_next_chunk(model):
    """A control that steers the prior, arriving partway through a frame, is heard from the next chunk: the
    frame playing is made again under it, from the same memory and random numbers, and crossfaded to over
    SPLICE. So before the change the sound is what it was, and after the crossfade it is exactly what the
    frame would have been had the change come at its start: nothing skipped, and the frames after it
    the same too."""
    probe = Player(model, ParamRegistry.for_model(model), seed=0)
    per_frame, chunk, splice = probe.hop // probe.chunk, probe.chunk, probe.splice
    n = len(model.worlds)
    change = [("/distill/levels", [1]), ("/distill/mix", [0.0] * (n - 1) + [1.0]),
              ("/distill/descriptor/loudness", [0.9])]
    frame, into, chunks = 7, 5, 10 * per_frame
    at = frame * per_frame + into  # the chunk the change is applied at
    # loudness held from the start, then moved at the first frame: more than GESTURE before the change
    held = {0: [("/distill/descriptor/loudness", [0.2])], per_frame: [("/distill/descriptor/loudness", [0.5])]}
    plain, _ = _played(model, held, chunks)
    at_start, _ = _played(model, {**held, frame * per_frame: change}, chunks)
    partway, player = _played(model, {**held, at: change}, chunks)
    cut = at * chunk
    assert latency.first_change(at_start, plain) >= frame * per_frame * chunk
    np.testing.assert_array_equal(partway[:cut], plain[:cut])  # nothing changed before it came
    assert latency.first_change(partway[cut:], plain[cut:]) < chunk, "heard from the chunk it came at"
    np.testing.assert_array_equal(partway[cut + splice:], at_start[cut + splice:])
    _, started = _played(model, {**held, frame * per_frame: change}, chunks)
    np.testing.assert_array_equal(player.history[:10].numpy(), started.history[:10].numpy())


def test_only_a_gestures_onset_remakes_a_frame_and_only_where_it_can_be(model):
    """The first steering message after GESTURE without one remakes the frame playing; while messages keep
    coming (a fader moving) they are read frame by frame, however many frames on, so a flood costs no
    extra frames. No remake for a change in the frame's last SPLICE (its end comes as soon), after a new
    seed (the frame would be drawn again from the old generator), for a value sent again, nor for
    controls that do not steer the prior. A remake puts the frame's new codes in the history the code
    grid shows."""
    player = Player(model, ParamRegistry.for_model(model), seed=0)
    registry = player.registry
    registry.submit("/distill/play", [1])

    def quiet() -> None:  # GESTURE without a steering message, then to two chunks into a frame
        for _ in range(math.ceil(GESTURE * player.frame_rate)):
            player.next_frame()
        while player.pos != 2 * player.chunk:
            player.next_chunk()

    def sent(address: str, value) -> bool:
        registry.submit(address, [value])
        player.next_chunk()
        return player.remade

    quiet()
    before = player.last_codes.clone()
    assert sent("/distill/levels", 1), "an onset"
    assert player.last_codes[1:].tolist() == [-1] * (len(before) - 1)
    assert player.history[(player.frames - 1) % len(player.history)].tolist() == player.last_codes.tolist()
    for _ in range(2 * math.ceil(GESTURE * player.frame_rate)):  # a fader moving: a step every frame
        frames = player.frames
        assert not sent("/distill/temperature", 0.5 + 0.1 * (player.frames % 2)), "a gesture goes on"
        while player.frames == frames:
            player.next_chunk()
    assert registry.controls().temperature in (0.5, 0.6), "its steps are read at the frames"
    quiet()
    for address, value in (("/distill/gain", 0.5), ("/distill/region/length", 8), ("/distill/levels", 1)):
        assert not sent(address, value), f"{address} {value}: nothing to remake"
    quiet()
    registry.submit("/distill/seed", [5])
    player.next_chunk()
    assert not sent("/distill/levels", 2), "not after a new seed"
    quiet()
    while player.hop - player.pos >= player.splice:  # to the last SPLICE of this frame
        player.next_chunk()
    assert not sent("/distill/levels", 1), "not in the frame's last SPLICE"
    quiet()
    assert sent("/distill/levels", 2), "an onset again"


def test_a_gestures_onset_pulls_harder_for_the_frames_that_first_play_it(model, monkeypatch):
    """The frames that first play a gesture's onset (the one remade and the next, ONSET_FRAMES) are made with
    guidance's push ONSET_PULL times as far, up to ONSET_MOST; the rest at the guidance set. Not a value sent
    again, not the steps of a gesture going on, and nothing at guidance 1 (the plain prior asked for)."""
    from distill_live.live.player import ONSET_FRAMES, ONSET_MOST, ONSET_PULL, Voice

    made = []  # the guidance each step of the voice was given (the real step, watched)
    step = Voice.step
    monkeypatch.setattr(Voice, "step", lambda self, controls, *a, **k: made.append(controls.guidance)
                        or step(self, controls, *a, **k))
    player = Player(model, ParamRegistry.for_model(model), seed=0)
    registry = player.registry
    registry.submit_validated([("/distill/play", (1,)), ("/distill/guidance", (2.0,))])

    def guidance_after(address: str, value, frames: int = 4) -> list[float]:
        for _ in range(math.ceil(GESTURE * player.frame_rate)):
            player.next_frame()
        while player.pos != 3 * player.chunk:  # partway into a frame: the onset remakes it
            player.next_chunk()
        made.clear()
        registry.submit(address, [value])
        for _ in range(frames):
            player.next_frame()
        return made

    pulled = min(1.0 + ONSET_PULL * (2.0 - 1.0), ONSET_MOST)
    assert pulled > 2.0 and ONSET_FRAMES >= 1
    assert guidance_after("/distill/descriptor/loudness", 0.9) == [pulled] * ONSET_FRAMES + [2.0] * (5 - ONSET_FRAMES)
    assert guidance_after("/distill/descriptor/loudness", 0.9) == [2.0] * 4, "a value sent again"
    made.clear()
    registry.submit("/distill/descriptor/loudness", [0.2])  # a gesture going on: read at the frames
    player.next_frame()
    assert made == [2.0]
    registry.submit("/distill/guidance", [1.0])
    player.next_frame()
    assert guidance_after("/distill/descriptor/loudness", 0.5) == [1.0] * 5, "the plain prior asked for"


def test_the_code_grid_shows_a_remade_frames_codes(model):
    """The engine's code history (the surfaces' grid) holds what was played: a remade frame's new codes."""
    engine = Engine(model, buffer_ms=10.0)
    engine.registry.submit("/distill/play", [1])
    while engine.player.frames < 5 or engine.player.pos != 3 * engine.player.chunk:
        engine.generate_one()
    engine.registry.submit("/distill/levels", [1])
    engine.generate_one()
    assert engine.player.remade
    _, codes = engine.codes_since(engine.player.frames - 1)
    assert codes[-1].tolist() == engine.player.last_codes.tolist() and codes[-1, 1:].max() == -1


def test_the_steering_changes_are_made_at_the_guidance_asked_for():
    """bench/latency.py --guidance: the world and descriptor changes set it first, live and offline; by default
    the engine's own (so the figures are what a performer gets without touching it)."""
    from distill_live.model.prior import Controls

    worlds = ["a", "b", "c"]
    for guidance, states in ((Controls().guidance, latency.steering_states(worlds)),
                             (4.0, latency.steering_states(worlds, 4.0))):
        for action in ("world", "descriptor"):
            assert ("/distill/guidance", guidance) in states[action][1], (action, states[action][1])
    changes = latency.steer_changes(worlds, 4, guidance=3.0)
    assert ("/distill/guidance", 3.0) in changes["descriptor"][1] and ("/distill/guidance", 3.0) in changes["world"][1]


def test_a_cue_jumps_first_frame_is_decoded_once_and_plays_the_same(model):
    """A cue jump's first frame is decoded once and kept (`FirstFrames`, filled for every cue as the engine warms
    up): a key pressed again runs no decoder step before its sound, and what it plays, and so every take, is what
    a player that decodes it each time plays, sample for sample, from silence and cutting into a sound."""
    cues = [1, 2, 1, 1, 0, 2]

    def play(keep: bool) -> tuple[np.ndarray, Player, list[int]]:
        registry = ParamRegistry.for_model(model)
        for n, cue in enumerate(cues):
            at = 0.3 * n
            registry.submit("/distill/cue", [cue], at=at)  # a key: jump to a passage and play
            registry.submit("/distill/play", [1], at=at)
            if n % 2:
                registry.submit("/distill/play", [0], at=at + 0.15)  # then silence, faded out by the next key
        player = Player(model, registry, seed=0)
        if keep:
            player.decode_first_frames()
        else:
            player.first_frames = None
        decoded, decode_step = [], model.codec.decode_step  # (counts the decoder steps of each frame)
        model.codec.decode_step = lambda *a, **k: (decoded.append(player.frames), decode_step(*a, **k))[1]
        try:
            out = [player.next_frame() for _ in range(round(0.3 * len(cues) * player.frame_rate))]
        finally:
            del model.codec.decode_step
        return np.concatenate(out), player, decoded

    kept, player, decoded = play(True)
    each, _, decoded_each = play(False)
    np.testing.assert_array_equal(kept, each)
    assert len(player.first_frames.kept) == min(len(model.cues), player.first_frames.size)
    first = {round(0.3 * n * player.frame_rate) + 1 for n in range(len(cues))}  # each key's first frame
    fewer = Counter(decoded_each)
    fewer.subtract(decoded)  # (cutting into a sound, the key's first frame also fades the last voice out)
    assert {frame for frame, n in fewer.items() if n} == first and set(fewer.values()) == {0, 1}
    assert np.abs(kept).max() > 0
    engine = Engine(model)
    engine.warm_up(frames=1)  # (what the generator thread runs before the card starts)
    assert len(engine.player.first_frames.kept) == min(len(model.cues), engine.player.first_frames.size)


def test_the_latency_bench_leaves_out_only_the_trials_the_machine_stopped_during():
    """`machine_went_on`'s trials: a stop of the machine (tests/stalls.py) during a trial, or just before it, while
    JACK runs the cycles it missed, leaves the trial out; one that ended before the stop, or began well after
    it, stays."""
    stalls = [(10.0, 3.0)]  # the sleeper went to sleep at 10 s and woke 3 ms late: stopped until 10.0035
    assert latency.stopped_during(10.001, 5.0, stalls)  # sent during it
    assert latency.stopped_during(9.998, 5.0, stalls)  # sent before it, heard after it began
    assert latency.stopped_during(10.0035 + latency.STOPPED_BEFORE - 0.0005, 1.0, stalls)  # JACK catching up
    assert not latency.stopped_during(9.99, 5.0, stalls)  # heard before it
    assert not latency.stopped_during(10.0035 + latency.STOPPED_BEFORE + 0.0005, 20.0, stalls)
    assert not latency.stopped_during(10.001, 5.0, [])

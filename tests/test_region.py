"""A region of the code grid held by `/distill/region/...`: lock (its levels replay, the prior fills the
others), loop (whole frames replay), mutate (an evolving lock) and release, in the Player as `render`
runs it (so sample-reproducible), and over real OSC against a running engine (refusals in one sentence,
and the frame numbers the page selects by)."""
from __future__ import annotations

import numpy as np
import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from distill_live.control.osc.livefeed import MEASURES, LiveFeed
from distill_live.control.osc.server import OscServer
from distill_live.control.params import REGION_MODES, ParamError, ParamRegistry
from distill_live.live.player import Player, render
from cards import paced_engine
from models import random_model
from oscpeers import Listener, wait_for

P = "/distill"
R = f"{P}/region"
LOCK, LOOP, MUTATE = (REGION_MODES.index(m) for m in ("lock", "loop", "mutate"))


@pytest.fixture(scope="module")
def model():
    return random_model()


def play(model, frames: int, messages=(), seed: int = 3) -> np.ndarray:
    """The codes [frames, levels] of each frame a Player makes, with `messages` as (frame, address, args),
    applied at the start of that frame (as a score line at that time would be)."""
    registry = ParamRegistry.for_model(model)
    registry.submit(f"{P}/play", [1], at=0.0)
    player = Player(model, registry, seed)
    for frame, address, args in messages:
        registry.submit(address, args, at=frame / player.frame_rate)
    rows = []
    for _ in range(frames):
        player.next_frame()
        rows.append(player.last_codes.tolist())
    return np.array(rows)


def hold(frame: int, mode: int, start: int, length: int, top: int = 0, bottom: int = 0):
    return [(frame, f"{R}/start", [start]), (frame, f"{R}/length", [length]), (frame, f"{R}/top", [top]),
            (frame, f"{R}/bottom", [bottom]), (frame, f"{R}/mode", [mode])]


def test_lock_replays_the_regions_levels_in_a_loop_and_the_prior_fills_the_rest(model):
    free = play(model, 100)
    codes = play(model, 100, hold(60, LOCK, start=20, length=8, top=0, bottom=1))
    assert (codes[:60] == free[:60]).all()  # nothing changes before the hold
    region = codes[20:28, :2]
    for i in range(60, 100):  # frame by frame, in a loop, from the region's first frame
        assert (codes[i, :2] == region[(i - 60) % 8]).all(), i
    # the levels it does not hold are the prior's: not a copy of the region's frames
    assert (codes[60:100, 2:] != np.tile(codes[20:28, 2:], (5, 1))).any()


def test_loop_replays_whole_frames_and_release_returns_to_generation(model):
    codes = play(model, 140, hold(60, LOOP, start=-12, length=12, top=1, bottom=1) + [(100, f"{R}/mode", [0])])
    region = codes[48:60]  # -12: the last 12 frames before the hold
    assert all((codes[i] == region[(i - 60) % 12]).all() for i in range(60, 100))  # every level, levels ignored
    after = codes[100:140]
    assert not all(any((row == r).all() for r in region) for row in after)  # released: new frames again
    assert len({tuple(r) for r in after}) > 12


def test_mutate_is_an_evolving_lock(model):
    chance = 0.25
    codes = play(model, 160, [(0, f"{P}/mutate", [chance])] + hold(60, MUTATE, start=20, length=10, top=0, bottom=2))
    passes = codes[60:160, :3].reshape(10, 10, 3)  # ten times round the region
    kept = (passes[1:] == passes[:-1]).mean()
    # each time round, about 1 - chance of the held codes come back as they were; the rest changed and stay
    # changed (a fresh random code matches by chance 1 in the codebook size)
    assert 0.6 < kept < 0.9, kept
    assert (passes[-1] != codes[20:30, :3]).mean() > 0.5  # after ten passes most of the loop has moved on
    # with no mutate chance it is a lock
    locked = play(model, 100, hold(60, MUTATE, start=20, length=10, top=0, bottom=2))
    assert all((locked[i, :3] == locked[20 + (i - 60) % 10, :3]).all() for i in range(60, 100))


def test_switching_lock_to_loop_keeps_the_codes_a_new_span_takes_new_ones(model):
    codes = play(model, 120, hold(40, LOCK, start=10, length=5, top=0, bottom=0)
                 + [(60, f"{R}/mode", [LOOP]), (80, f"{R}/start", [30])])
    for i in range(40, 60):
        assert codes[i, 0] == codes[10 + (i - 40) % 5, 0]
    for i in range(60, 80):  # the same region, now whole frames, carrying on round the loop
        assert (codes[i] == codes[10 + (i - 40) % 5]).all()
    for i in range(80, 120):  # its start moved: frames 30..34, from their first
        assert (codes[i] == codes[30 + (i - 80) % 5]).all()


def test_a_region_renders_sample_for_sample_again(model):
    messages = [(t / 50, address, args) for t, address, args in
                hold(40, LOCK, start=-20, length=20, top=0, bottom=1) + [(70, f"{R}/mode", [LOOP]),
                                                                         (100, f"{R}/mode", [0])]]
    first, again = (render(model, 3.0, seed=5, messages=messages) for _ in range(2))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, render(model, 3.0, seed=5))  # and the region did change what plays


def test_a_span_beyond_the_history_is_clamped_to_what_was_played(model):
    codes = play(model, 60, hold(30, LOOP, start=10_000, length=256))  # not made yet: the newest frame
    assert all((codes[i] == codes[29]).all() for i in range(30, 60))
    # held before the first frame there is nothing to hold: it plays freely until the hold is sent again
    free = play(model, 60)
    early = play(model, 60, hold(0, LOOP, start=-16, length=8) + [(40, f"{R}/mode", [LOOP])])
    assert (early[:40] == free[:40]).all()
    assert all((early[i] == early[24 + (i - 40) % 8]).all() for i in range(40, 60))


def test_the_registry_refuses_or_clamps_in_one_sentence():
    registry = ParamRegistry(["a"], levels=4, codebook_size=64, cues=2)
    _, notes = registry.validate(f"{R}/length", [1000])
    assert notes == [f"{R}/length: 1000 is out of range 1..256, clamped to 256"]
    _, notes = registry.validate(f"{R}/bottom", [9])
    assert notes == [f"{R}/bottom: 9 is out of range 0..3, clamped to 3"]
    with pytest.raises(ParamError, match=f"^{R}/mode takes one number, got 'lock'$"):
        registry.validate(f"{R}/mode", ["lock"])


def test_over_osc_a_hold_by_frame_number_plays_the_frames_the_feed_numbered(model):
    """What the page does: read /distill/codes and /distill/frame from the feed, pick frames by number,
    hold them with one bundle; and an out-of-range value comes back as one /distill/error line."""
    card = paced_engine(model, buffer_ms=80)
    listener = Listener()
    server = OscServer(card.engine, port=0, reply=("127.0.0.1", listener.port))
    feed = LiveFeed(card.engine)
    try:
        client = SimpleUDPClient("127.0.0.1", server.port)
        client.send_message(f"{P}/play", 1)
        client.send_message(f"{R}/length", 300)
        wait_for(lambda: any("region/length" in e[0] for e in listener.of(f"{P}/error")), 10, "an error line")
        error = next(e[0] for e in listener.of(f"{P}/error") if "region/length" in e[0])
        assert error == f"{R}/length: 300 is out of range 1..256, clamped to 256"
        rows, numbered = [], {}
        while len(numbered) < 40:
            for address, data in feed.poll(MEASURES):
                if address == f"{P}/codes":
                    rows.append(OscMessage(data).params)
                elif address == f"{P}/frame":
                    newest = OscMessage(data).params[0]
                    numbered.update({newest - i: r for i, r in enumerate(reversed(rows))})
                    rows = []
            card.wait_frames(1)
        newest = max(numbered)
        first = newest - 9
        region = [numbered[first + i] for i in range(6)]
        assert all(min(r) >= 0 for r in region)  # playing
        bundle = OscBundleBuilder(IMMEDIATELY)
        for name, value in (("start", first), ("length", 6), ("top", 1), ("bottom", 2), ("mode", LOCK)):
            m = OscMessageBuilder(f"{R}/{name}")
            m.add_arg(value)
            bundle.add_content(m.build())
        client.send(bundle.build())
        seen = []
        while len(seen) < 30:
            for address, data in feed.poll(MEASURES):
                if address == f"{P}/codes" and card.engine.registry.values[f"{R}/mode"] == LOCK:
                    seen.append(OscMessage(data).params)
            card.wait_frames(1)
        held = [r[1:3] for r in region]
        tail = seen[-24:]  # well after the hold: levels 1-2 run round the region's, in order
        assert any(all(row[1:3] == held[(at + i) % 6] for i, row in enumerate(tail)) for at in range(6)), (held, tail)
    finally:
        feed.close()
        server.close()
        listener.close()
        card.stop()


def test_release_does_not_click():
    """Letting go of a held region, on the demo: the render departs from the one where the region is
    never let go at the frame the release arrives, and departs smoothly: over its first half
    millisecond the two differ by less than the render's median step between samples, as a decoder
    that carries on fades the new codes in. A release that reset or cut the decoder would jump there
    by the signal's size at once. (The size of the steps after that is not the test: the free codes
    may start a hit in the next frame, as they may anywhere; the last version of this test compared
    the window's largest step with the render's 99.9th percentile, and failed or passed by the seed.)"""
    from distill_live.commands.bundled import DEMO
    from distill_live.model.modelfile import load_model

    demo = load_model(DEMO)
    hop, rate = demo.config.codec.hop, demo.config.codec.sample_rate
    for mode in (LOCK, LOOP, MUTATE):
        held = [(1.0, f"{R}/{name}", [value]) for name, value in
                (("start", -16), ("length", 16), ("bottom", 1), ("mode", mode))]
        messages = [(0.0, f"{P}/mutate", [0.1 if mode == MUTATE else 0.0])] + held
        for seed in range(3):
            audio = render(demo, 3.0, seed=seed, messages=messages + [(2.0, f"{R}/mode", [0])])
            held_on = render(demo, 3.0, seed=seed, messages=messages)
            apart = np.flatnonzero(audio != held_on)
            assert len(apart), (mode, seed, "the release changed nothing")
            parted = apart[0]
            assert 2 * rate <= parted < 2 * rate + hop, (mode, seed, parted)
            first = np.abs(audio - held_on)[parted:parted + rate // 2000]
            assert first.max() <= np.median(np.abs(np.diff(audio))), (mode, seed, first)

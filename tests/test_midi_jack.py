"""Real MIDI through JACK MIDI into a running engine.

A private JACK server on the dummy driver (the `jack_server` fixture) carries the MIDI. The test
plays a controller: a JACK MIDI output port ("tester:out", python-rtmidi's JACK API through mido)
connected to the engine's virtual input "distill:distill". The engine runs in this process with its
real generator thread; a sound-card stand-in drains its ring at real-time pace in 2 ms blocks
(through `Engine.callback`) and records what it "hears". The audio path itself is tested elsewhere.

python-rtmidi opens its JACK client on the server named by JACK_DEFAULT_SERVER *when the port
opens*, so setting it in os.environ for this module is enough (measured; no subprocess needed).
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import textwrap
import time
import tomllib

import jack
import mido
import numpy as np
import pytest
import torch

from distill_live.control.midi import add_arguments, start_midi
from distill_live.control.midi.mapfile import load_map
from distill_live.control.midi.ports import list_ports
from distill_live.control.osc.server import OscServer
from distill_live.live.engine import Engine
from distill_live.live.player import render
from cards import PacedCard
from models import random_model

pytestmark = pytest.mark.slow  # plays in real time through JACK MIDI

MAP = """
name = "jack test"
[keyboard]
base = 60
velocity = [0.5, 1.5]
release = "stop"
[[cc]]
cc = 1
param = "temperature"
range = [0.5, 1.5]
[[cc]]
cc = 7
param = "gain"
mode = "14bit"
[[cc]]
cc = 20
param = "guidance"
mode = "relative"
encoding = "binary-offset"
step = 0.05
[[cc]]
cc = 21
param = "descriptor/brightness"
takeover = "pickup"
"""


@pytest.fixture(scope="module")
def jack_env(jack_server):
    saved = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
    os.environ.update(JACK_DEFAULT_SERVER=jack_server.name, JACK_NO_START_SERVER="1")
    yield jack_server
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def patchbay(jack_env):
    client = jack.Client("midi-test-patchbay", servername=jack_env.name, no_start_server=True)
    yield client
    client.close()


@pytest.fixture(scope="module")
def tester(jack_env):
    """A MIDI controller, as far as JACK can tell: the output port tester:out."""
    port = mido.Backend("mido.backends.rtmidi/UNIX_JACK").open_output("out", client_name="tester")
    yield port
    port.close()


@pytest.fixture(scope="module")
def model():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batch 1 is fastest on one thread, and the JACK server needs the other core
    model = random_model()
    render(model, 0.3, messages=[(0.0, "/distill/cue", (1, 0.05))])  # warm torch up: first frames are slow
    yield model
    torch.set_num_threads(threads)


@pytest.fixture()
def engine(model):
    # 120 ms of slack: the test machine is shared; 2 ms card blocks, so its samples' times are exact enough
    card = PacedCard(Engine(model, seed=0, buffer_ms=120), block=32).start()
    card.engine.card = card
    yield card.engine
    card.stop()


def midi_args(*argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--midi-api", "jack", *argv])


def wait_for(check, timeout: float = 3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.005)
    return check()


def connect(patchbay, source: str = "tester:out", sink: str = "distill:distill") -> None:
    assert wait_for(lambda: sink in [p.name for p in patchbay.get_ports(is_midi=True, is_input=True)])
    patchbay.connect(source, sink)


@pytest.fixture()
def map_file(tmp_path):
    path = tmp_path / "map.toml"
    path.write_text(MAP)
    return path


def test_ccs_and_notes_steer_the_engine(engine, tester, patchbay, map_file):
    logs = []
    control = start_midi(engine, midi_args("--midi-map", str(map_file)), log=logs.append)
    try:
        assert logs[-1] == "MIDI (jack): listening to distill (virtual) with map 'jack test'"
        connect(patchbay)
        values = engine.registry.values
        send = tester.send

        send(mido.Message("control_change", control=1, value=127))
        assert wait_for(lambda: values["/distill/temperature"] == 1.5)

        # 14-bit: MSB then LSB, exactly (MSB + LSB) / 16383 of the gain range 0..2
        send(mido.Message("control_change", control=7, value=100))
        send(mido.Message("control_change", control=39, value=77))
        assert wait_for(lambda: values["/distill/gain"] == 2 * (100 * 128 + 77) / 16383)

        # relative, binary offset: +3 then -1 ticks of 0.05 from guidance 2.0 (position 0.4 of 0..5)
        send(mido.Message("control_change", control=20, value=67))
        send(mido.Message("control_change", control=20, value=63))
        assert wait_for(lambda: values["/distill/guidance"] == pytest.approx(5 * (0.4 + 0.1), abs=1e-12))

        # soft takeover: brightness 0.5 waits until the knob passes 63.5
        for v in (0, 20, 40):
            send(mido.Message("control_change", control=21, value=v))
        send(mido.Message("control_change", control=1, value=0))  # a marker: everything before it has arrived
        assert wait_for(lambda: values["/distill/temperature"] == 0.5)
        assert values["/distill/descriptor/brightness"] == 0.5 and not engine.registry.held["brightness"]
        send(mido.Message("control_change", control=21, value=90))
        assert wait_for(lambda: values["/distill/descriptor/brightness"] == 90 / 127)
        assert engine.registry.held["brightness"]

        # a key plays passage 2 at velocity gain; the engine starts making sound
        card = engine.card
        assert not card.heard[:card.consumed].any(), "silent until played"
        send(mido.Message("note_on", note=62, velocity=127))
        assert wait_for(lambda: values["/distill/play"] == 1 and values["/distill/gain"] == 1.5)
        time.sleep(0.3)
        start = card.consumed
        time.sleep(0.3)
        loud = np.abs(card.heard[start:card.consumed]).max()
        assert loud > 1e-3

        # the 14-bit fader to the bottom: the output fades away (gain is smoothed, not cut)
        send(mido.Message("control_change", control=7, value=0))
        send(mido.Message("control_change", control=39, value=0))
        assert wait_for(lambda: values["/distill/gain"] == 0.0)
        time.sleep(1.0)  # 20 time constants of the gain's 50 ms smoothing (loud is at most 1: the soft clip)
        start = card.consumed
        time.sleep(0.2)
        assert np.abs(card.heard[start:card.consumed]).max() < loud * 1e-3

        # letting go of the key stops playback: exact silence after the fade
        send(mido.Message("note_off", note=62))
        assert wait_for(lambda: values["/distill/play"] == 0)
        time.sleep(0.2)
        start = card.consumed
        time.sleep(0.1)
        assert not card.heard[start:card.consumed].any()
    finally:
        control.close()


def test_midi_in_by_name_prefix_and_channel_filter(engine, tester, patchbay, map_file):
    assert "tester:out" in list_ports("jack")
    logs = []
    control = start_midi(engine, midi_args("--midi-in", "test", "--midi-channel", "2", "--midi-map", str(map_file)),
                         log=logs.append)
    try:
        assert "listening to tester:out" in logs[-1]
        values = engine.registry.values
        assert wait_for(lambda: patchbay.get_all_connections("tester:out"))  # --midi-in connected itself
        tester.send(mido.Message("control_change", channel=1, control=1, value=127))
        assert wait_for(lambda: values["/distill/temperature"] == 1.5)
        tester.send(mido.Message("control_change", channel=0, control=1, value=0))  # channel 1: filtered out
        tester.send(mido.Message("control_change", channel=1, control=7, value=64))
        assert wait_for(lambda: values["/distill/gain"] == 2 * 64 * 128 / 16383)
        assert values["/distill/temperature"] == 1.5
    finally:
        control.close()
    with pytest.raises(Exception, match="no MIDI input starts with 'nanoKONTROL' \\(inputs: .*tester:out"):
        start_midi(engine, midi_args("--midi-in", "nanoKONTROL"), log=logs.append)


def test_midi_learn_round_trips_through_a_saved_map(engine, tester, patchbay, tmp_path):
    control = start_midi(engine, midi_args(), log=lambda line: None)  # the generic map
    try:
        connect(patchbay)
        control.learn("mutate")
        tester.send(mido.Message("control_change", channel=4, control=30, value=5))  # binds CC 30, channel 5
        assert wait_for(lambda: control.mapper.learning == [])
        tester.send(mido.Message("control_change", channel=4, control=30, value=0))  # meets mutate 0.0: picked up
        tester.send(mido.Message("control_change", channel=4, control=30, value=127))
        assert wait_for(lambda: engine.registry.values["/distill/mutate"] == 1.0)
        saved = tmp_path / "learned.toml"
        control.save(saved)
    finally:
        control.close()
    assert {"cc": 30, "channel": 5, "param": "mutate", "takeover": "pickup"} in tomllib.loads(saved.read_text())["cc"]
    again = load_map(saved, engine.registry)
    learned = [b for b in again.bindings if b.source == "cc" and b.number == 30]
    assert [(b.channel, b.target.address, b.takeover) for b in learned] == [(4, "/distill/mutate", "pickup")]
    assert again.keyboard is not None  # the rest of the generic map came along


def test_learn_and_save_over_osc(engine, tester, patchbay, tmp_path):
    from pythonosc.udp_client import SimpleUDPClient

    from distill_live.control.midi import osc_handlers
    from distill_live.control.osc.server import OscServer

    control = start_midi(engine, midi_args(), log=lambda line: None)
    server = OscServer(engine, port=0, meters=False, handlers=osc_handlers(control))  # as serve starts it
    try:
        connect(patchbay)
        osc = SimpleUDPClient("127.0.0.1", server.port)
        osc.send_message("/distill/midi/learn", "topp")
        assert wait_for(lambda: control.mapper.learning == ["topp"])
        tester.send(mido.Message("control_change", channel=2, control=40, value=9))
        assert wait_for(lambda: control.mapper.learning == [])
        saved = tmp_path / "over-osc.toml"
        osc.send_message("/distill/midi/save", str(saved))
        assert wait_for(lambda: saved.exists())
        osc.send_message("/distill/midi/learn", "no-such-param")
        assert wait_for(lambda: server.counters.refused == 1)
    finally:
        server.close()
        control.close()
    assert {"cc": 40, "channel": 3, "param": "topp", "takeover": "pickup"} in tomllib.loads(saved.read_text())["cc"]


def test_learn_mode_from_the_command_line_writes_the_map(engine, tester, patchbay, tmp_path):
    new = tmp_path / "mine.toml"
    logs = []
    control = start_midi(engine, midi_args("--midi-in", "tester", "--midi-map", str(new),
                                           "--learn", "topp", "--learn", "world/#2"), log=logs.append)
    try:
        assert wait_for(lambda: patchbay.get_all_connections("tester:out"))  # --midi-in connected itself
        for v in range(0, 40, 4):  # one fader movement is many messages: all of them belong to topp
            tester.send(mido.Message("control_change", control=40, value=v))
        assert wait_for(lambda: control.mapper.learning == ["world/noise"])
        time.sleep(0.05)
        assert control.mapper.learning == ["world/noise"]
        tester.send(mido.Message("control_change", control=41, value=1))
        assert wait_for(lambda: new.exists() and "world/noise" in new.read_text())
    finally:
        control.close()
    cc = tomllib.loads(new.read_text())["cc"]
    assert [(c["cc"], c["param"]) for c in cc] == [(40, "topp"), (41, "world/noise")]
    assert f"MIDI map saved to {new}" in logs


# A drum machine in its own process (so its timing does not wait for this process's threads):
# Start, 73 ticks at 120 BPM (tick 72 is the downbeat of beat 4), and a key between beats 3 and 4.
DRUM_MACHINE = textwrap.dedent("""
    import sys, time
    import mido
    out = mido.Backend("mido.backends.rtmidi/UNIX_JACK").open_output("out", client_name="drummachine")
    print("ready", flush=True)
    sys.stdin.readline()
    tick = 60 / (120 * 24)
    out.send(mido.Message("start"))
    t0 = time.monotonic() + 0.01
    for i in range(73):
        time.sleep(max(0.0, t0 + i * tick - time.monotonic()))
        out.send(mido.Message("clock"))
        if i == 58:
            out.send(mido.Message("note_on", note=61, velocity=100))
    time.sleep(0.1)
    out.close()
""")


def test_clock_tempo_and_a_quantised_cue_within_one_frame(engine, patchbay, map_file, jack_env):
    control = start_midi(engine, midi_args("--midi-map", str(map_file), "--midi-quantize", "beat"),
                         log=lambda line: None)
    drums = subprocess.Popen([sys.executable, "-c", DRUM_MACHINE], env=jack_env.env, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert drums.stdout.readline() == "ready\n", drums.stderr.read()
        connect(patchbay, "drummachine:out")
        drums.stdin.write("go\n")
        drums.stdin.flush()
        card, frame = engine.card, engine.hop / engine.sample_rate
        clock = control.mapper.clock
        assert wait_for(lambda: clock.tick == 72, timeout=5), (clock.tick, drums.stderr.read())
        # The dummy driver runs without real-time priority here, on a shared 2-core machine: under load
        # it delivers MIDI up to ~20 ms late in drifting bursts (measured), so the live estimate gets a
        # looser bound (2.5 %) than the exact ones in test_midiclock.py.
        assert control.tempo() == pytest.approx(120.0, abs=3.0)
        server = OscServer(engine, port=0, meters=False, tempo=control.tempo)  # as serve starts it
        try:
            assert server.stats()[4] == pytest.approx(120.0, abs=3.0)
        finally:
            server.close()
        beat = card.engine_time(card.sample_at(clock.time_of_tick(72)))  # engine time of beat 4
        scheduled, addresses = control.last_scheduled
        assert addresses == ["/distill/gain", "/distill/cue", "/distill/play"]
        # The quantiser predicted beat 4 from the ticks before the key (14 ticks earlier).
        assert abs(scheduled - beat) < frame, (scheduled, beat)
        # The engine starts playing exactly at the first chunk (a sixteenth of a frame) at or after that time.
        assert wait_for(lambda: card.heard[:card.consumed].any())
        start = card.engine_time(np.flatnonzero(card.heard[:card.consumed])[0])
        chunk = engine.player.chunk / engine.sample_rate
        assert round(start / chunk) == math.ceil(scheduled / chunk - 1e-9), (start, scheduled)
    finally:
        drums.wait(timeout=10)
        control.close()


def test_without_a_midi_system_serve_plays_on(engine, capfd, monkeypatch):
    monkeypatch.setenv("JACK_DEFAULT_SERVER", "no-such-server")
    logs = []
    assert start_midi(engine, midi_args(), log=logs.append) is None
    assert logs == ["MIDI is off: --midi-api jack needs a running JACK server; playing on without MIDI."]
    if not os.path.exists("/dev/snd/seq"):
        logs.clear()
        assert start_midi(engine, midi_args("--midi-api", "auto"), log=logs.append) is None
        assert logs == ["MIDI is off: this machine has no MIDI system (no ALSA sequencer at /dev/snd/seq and no "
                        "JACK server running); playing on without MIDI."]
        assert list_ports() == []
    assert capfd.readouterr().err == ""  # libjack's complaints stay off the console


def test_where_no_virtual_input_can_be_made_serve_listens_to_every_input(engine, tester, patchbay, monkeypatch):
    """Windows' own MIDI API cannot make virtual ports; serve with no MIDI options then listens to every
    input there is, in one line, instead of failing. Windows cannot run here, so rtmidi's MidiIn is
    given Windows' answer to open_virtual_port (the exception python-rtmidi raises there); the inputs
    and the MIDI are real JACK MIDI."""
    import rtmidi

    class WindowsMidiIn(rtmidi.MidiIn):
        def open_virtual_port(self, name=None):
            raise rtmidi.UnsupportedOperationError("Virtual ports are not supported by the Windows MultiMedia API.")

    monkeypatch.setattr(rtmidi, "MidiIn", WindowsMidiIn)
    logs = []
    control = start_midi(engine, midi_args(), log=logs.append)
    try:
        assert ("MIDI (jack): cannot create the MIDI input 'distill' on jack: Virtual ports are not "
                           "supported by the Windows MultiMedia API; listening to every MIDI input instead "
                           "(tester:out); --midi-in NAME picks an input.") in logs, logs
        assert wait_for(lambda: patchbay.get_all_connections("tester:out"))
        assert engine.registry.values["/distill/freeze"] == 0
        tester.send(mido.Message("control_change", channel=0, control=64, value=127))  # generic map: the pedal
        assert wait_for(lambda: engine.registry.values["/distill/freeze"] == 1)
    finally:
        control.close()
    with pytest.raises(Exception, match="cannot create the MIDI input 'distill'"):
        start_midi(engine, midi_args("--midi-virtual"), log=logs.append)  # asked for by name: refused

"""`distill-live render --midi-file FILE.mid --midi-map MAP.toml`: a MIDI file (written here with mido)
is the control score. Its events become exactly the timed messages a score would hold, and the
render is the same, sample for sample, for the same seed.
"""
from __future__ import annotations

import subprocess
import sys

import mido
import numpy as np
import pytest
import soundfile as sf

from distill_live.cli import main
from distill_live.control.midi.mapfile import load_map
from distill_live.control.midi.mapper import midi_file_messages
from distill_live.control.params import ParamRegistry
from models import random_model_file

SR = 16000  # the tiny preset's rate: rendering at it keeps sample positions exact
MAP = """
name = "render test"
[keyboard]
base = 60
velocity = [0.5, 1.5]
release = "stop"
crossfade = 0.1
[program]
first = 0
[bend]
param = "guidance"
range = [0.0, 2.0]
[[cc]]
cc = 1
param = "temperature"
range = [0.5, 1.5]
[[cc]]
cc = 20
param = "play"
value = 0
"""


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return random_model_file(tmp_path_factory.mktemp("model") / "m.distill")


def write_midi(path, events, ticks_per_beat=480) -> None:
    """events: (tick, mido message) in order; one track, starting at 120 BPM."""
    midi = mido.MidiFile(ticks_per_beat=ticks_per_beat)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    now = 0
    for tick, msg in events:
        track.append(msg.copy(time=tick - now))
        now = tick
    midi.save(path)


PERFORMANCE = [
    (0, mido.MetaMessage("set_tempo", tempo=500000)),  # 120 BPM: 480 ticks = 0.5 s
    (0, mido.Message("control_change", control=20, value=127)),  # a stop button: silence until the note
    (0, mido.Message("program_change", program=1)),
    (240, mido.Message("note_on", note=61, velocity=127)),  # 0.25 s
    (480, mido.Message("control_change", control=1, value=127)),  # 0.5 s
    (960, mido.MetaMessage("set_tempo", tempo=250000)),  # 1.0 s: 240 BPM from here, 480 ticks = 0.25 s
    (960, mido.Message("pitchwheel", pitch=8191)),  # 1.0 s
    (1440, mido.Message("note_off", note=61)),  # 1.25 s
]


@pytest.fixture()
def files(tmp_path):
    write_midi(tmp_path / "perf.mid", PERFORMANCE)
    (tmp_path / "map.toml").write_text(MAP)
    return tmp_path / "perf.mid", tmp_path / "map.toml"


def test_a_midi_file_becomes_timed_control_messages(files):
    mid, map_path = files
    registry = ParamRegistry(["bells", "noise"], levels=4, codebook_size=64, cues=3)
    messages = midi_file_messages(mid, load_map(map_path, registry), registry)
    assert messages == [
        (0.0, "/distill/play", (0,)),
        (0.0, "/distill/mix", (0.0, 1.0)),
        (0.25, "/distill/gain", (1.5,)),
        (0.25, "/distill/cue", (1, 0.1)),
        (0.25, "/distill/play", (1,)),
        (0.5, "/distill/temperature", (1.5,)),
        (1.0, "/distill/guidance", (2.0,)),
        (1.25, "/distill/play", (0,)),
    ]


def test_score_values_are_seen_by_soft_takeover(files, tmp_path):
    """A --set moves gain to 0.2 first, so a pickup fader at 0 (gain 0) takes over only when it gets there."""
    registry = ParamRegistry(["bells", "noise"], levels=4, codebook_size=64, cues=3)
    (tmp_path / "pickup.toml").write_text('[[cc]]\ncc = 7\nparam = "gain"\ntakeover = "pickup"\n')
    write_midi(tmp_path / "fader.mid", [(0, mido.Message("control_change", control=7, value=v)) for v in (0, 10, 14)])
    earlier = [(0.0, "/distill/gain", (0.2,))]
    messages = midi_file_messages(tmp_path / "fader.mid", load_map(tmp_path / "pickup.toml", registry), registry, earlier)
    assert messages == [(0.0, "/distill/gain", (2 * 14 / 127,))]  # 0 and 10 are below 0.2 (position 12.7)


def render(model_path, out, seed, *extra):
    assert main(["render", str(model_path), "-o", str(out), "--seconds", "1.5", "--seed", str(seed),
                 "--sample-rate", str(SR), *map(str, extra)]) == 0
    return sf.read(out, dtype="int32")[0]


def test_render_with_a_midi_file_is_deterministic_and_follows_it(model_path, files, tmp_path):
    mid, map_path = files
    a = render(model_path, tmp_path / "a.wav", 3, "--midi-file", mid, "--midi-map", map_path)
    b = render(model_path, tmp_path / "b.wav", 3, "--midi-file", mid, "--midi-map", map_path)
    c = render(model_path, tmp_path / "c.wav", 4, "--midi-file", mid, "--midi-map", map_path)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # The stop button at 0 s holds render's automatic start; the note at 0.25 s starts playback at that moment (controls
    # apply every 1.25 ms chunk), and its note off at 1.25 s stops it with the 50 ms fade.
    hop = 320
    start, stop = 4000, 20000  # 0.25 s and 1.25 s at 16 kHz
    assert not a[:start].any()
    assert np.abs(a[start:start + hop]).max() > 0
    assert np.abs(a[start:stop]).max() > 0
    assert not a[stop + 3 * hop:].any()


def test_the_generic_map_is_the_default(model_path, tmp_path):
    mid = tmp_path / "key.mid"
    write_midi(mid, [(240, mido.Message("note_on", note=37, velocity=127))])  # generic: key 37 = cue 1
    default = render(model_path, tmp_path / "d.wav", 3, "--midi-file", mid)
    generic = render(model_path, tmp_path / "g.wav", 3, "--midi-file", mid, "--midi-map", "generic")
    plain = render(model_path, tmp_path / "p.wav", 3)
    assert np.array_equal(default, generic)
    assert np.array_equal(default[:4000], plain[:4000])  # the same until the note (0.25 s)
    assert not np.array_equal(default, plain)


def live(*args):
    return subprocess.run([sys.executable, "-m", "distill_live", *map(str, args)], capture_output=True, text=True)


def test_a_bad_map_stops_render_with_one_line(model_path, files, tmp_path):
    mid, _ = files
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "oops"\n\n[[cc]]\ncc = 1\nparam = "temprature"\n')
    r = live("render", model_path, "-o", tmp_path / "x.wav", "--midi-file", mid, "--midi-map", bad)
    assert r.returncode == 2
    assert r.stderr == (f"distill-live: midi map '{bad}' line 5: unknown parameter 'temprature' "
                        "(did you mean 'temperature'?)\n")
    assert not (tmp_path / "x.wav").exists()


def test_a_broken_midi_file_or_a_lone_map_is_one_line(model_path, tmp_path, capsys):
    junk = tmp_path / "junk.mid"
    junk.write_bytes(b"MThd\x00\x00\x00\x06\x00")
    assert main(["render", str(model_path), "-o", str(tmp_path / "x.wav"), "--midi-file", str(junk)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"distill-live: cannot read MIDI file '{junk}'") and err.count("\n") == 1
    assert main(["render", str(model_path), "-o", str(tmp_path / "x.wav"), "--midi-map", "generic"]) == 2
    assert "--midi-map is used with --midi-file" in capsys.readouterr().err

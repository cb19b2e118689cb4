"""MIDI maps: every kind of binding gives exactly the value it should, bad files are refused naming
the line, and the shipped controller maps fit the registry.

Messages go through the real registry (`submit`, then `apply_due` as the generator would), so the
values asserted are the values the engine would play.
"""
from __future__ import annotations

import tomllib

import mido
import pytest

from distill_live.control.midi.mapfile import MidiMapError, load_map, parse_map, shipped_maps
from distill_live.control.midi.mapper import Mapper
from distill_live.control.params import ParamRegistry

WORLDS = ["bells", "noise"]
CUES = 3


def registry(worlds=WORLDS) -> ParamRegistry:
    return ParamRegistry(worlds, levels=4, codebook_size=64, cues=CUES)


class Rig:
    """A map played into a registry: `send` returns what the map produced, already applied."""

    def __init__(self, text: str, worlds=WORLDS, **mapper_options):
        self.registry = registry(worlds)
        self.map = parse_map(text, self.registry, source="test.toml")
        self.mapper = Mapper(self.map, self.registry, **mapper_options)
        self.t = 0.0

    def send(self, kind: str, **fields) -> list:
        self.t += 0.01
        out = self.mapper.handle(mido.Message(kind, **fields), self.t)
        for address, args, at in out:
            self.registry.submit(address, args, at=at)
        self.registry.apply_due(1e9)
        return [(a, args) for a, args, _ in out]

    def cc(self, control: int, value: int, channel: int = 0) -> list:
        return self.send("control_change", control=control, value=value, channel=channel)

    def value(self, name: str):
        return self.registry.get(name)

    def osc(self, name: str, value) -> None:
        """Another control surface (OSC) changes a parameter."""
        self.registry.submit(f"/distill/{name}", [value])
        self.registry.apply_due(1e9)


# -- continuous controls ---------------------------------------------------------------------------


def test_absolute_cc_with_range_and_each_curve():
    rig = Rig("""
        [[cc]]
        cc = 1
        param = "gain"
        [[cc]]
        cc = 2
        param = "temperature"
        range = [0.5, 1.5]
        curve = "inverted"
        [[cc]]
        cc = 3
        param = "/distill/guidance"
        range = [0.1, 1.6]
        curve = "exponential"
        [[cc]]
        cc = 4
        param = "loop"
        range = [1, 64]
    """)
    rig.cc(1, 127)
    assert rig.value("gain") == 2.0
    rig.cc(1, 0)
    assert rig.value("gain") == 0.0
    rig.cc(1, 100)
    assert rig.value("gain") == pytest.approx(2.0 * 100 / 127, abs=1e-12)
    rig.cc(2, 0)
    assert rig.value("temperature") == 1.5
    rig.cc(2, 127)
    assert rig.value("temperature") == 0.5
    rig.cc(3, 64)
    assert rig.value("guidance") == pytest.approx(0.1 * 16 ** (64 / 127), abs=1e-12)
    rig.cc(3, 127)
    assert rig.value("guidance") == pytest.approx(1.6, abs=1e-12)
    rig.cc(4, 64)  # an integer parameter is rounded
    assert rig.value("loop") == round(1 + 63 * 64 / 127) == 33


def test_14bit_cc_follows_the_midi_spec_for_msb_and_lsb():
    rig = Rig("""
        [[cc]]
        cc = 7
        param = "gain"
        mode = "14bit"
    """)
    rig.cc(7, 64)  # MSB: the LSB counts as 0
    assert rig.value("gain") == pytest.approx(2 * (64 * 128) / 16383, abs=1e-12)
    rig.cc(39, 1)  # LSB on CC 7 + 32
    assert rig.value("gain") == pytest.approx(2 * 8193 / 16383, abs=1e-12)
    rig.cc(39, 127)  # a fine move alone
    assert rig.value("gain") == pytest.approx(2 * 8319 / 16383, abs=1e-12)
    rig.cc(7, 10)  # a new MSB resets the LSB
    assert rig.value("gain") == pytest.approx(2 * 1280 / 16383, abs=1e-12)
    rig.cc(7, 127)
    rig.cc(39, 127)
    assert rig.value("gain") == 2.0
    assert rig.cc(40, 5) == []  # another CC's fine half: nothing bound


def test_14bit_lsb_before_any_msb_is_ignored():
    rig = Rig('[[cc]]\ncc = 7\nparam = "gain"\nmode = "14bit"\n')
    assert rig.cc(39, 100) == []
    assert rig.value("gain") == 1.0


@pytest.mark.parametrize("encoding, up3, down2", [
    ("twos-complement", 3, 126),  # 127 = -1, 126 = -2
    ("signed-bit", 3, 0x42),  # bit 6 = minus
    ("binary-offset", 67, 62),  # 64 = no move
])
def test_relative_encoders(encoding, up3, down2):
    rig = Rig(f"""
        [[cc]]
        cc = 20
        param = "temperature"
        mode = "relative"
        encoding = "{encoding}"
        step = 0.01
    """)
    rig.osc("temperature", 1.0)  # position 0.5 of 0..2
    rig.cc(20, up3)
    assert rig.value("temperature") == pytest.approx(2 * (0.5 + 0.03), abs=1e-12)
    rig.cc(20, down2)
    assert rig.value("temperature") == pytest.approx(2 * (0.5 + 0.01), abs=1e-12)
    rig.osc("temperature", 0.4)  # someone else moved it: the encoder continues from there
    rig.cc(20, up3)
    assert rig.value("temperature") == pytest.approx(2 * (0.2 + 0.03), abs=1e-12)
    for _ in range(40):  # stops at the end of the range
        rig.cc(20, up3)
    assert rig.value("temperature") == 2.0


def test_relative_ticks_faster_than_the_engine_applies_them_add_up():
    """Between two frames the registry still shows the old value; the encoder must not lose ticks."""
    reg = registry()
    mapper = Mapper(parse_map('[[cc]]\ncc = 20\nparam = "mutate"\nmode = "relative"\nstep = 0.1\n', reg), reg)
    for i in range(3):
        for address, args, at in mapper.handle(mido.Message("control_change", control=20, value=1), i * 0.001):
            reg.submit(address, args, at=at)
    reg.apply_due(1.0)  # one frame later, all three ticks
    assert reg.get("mutate") == pytest.approx(0.3, abs=1e-12)


def test_soft_takeover_waits_for_the_fader_to_meet_the_value():
    rig = Rig("""
        [[cc]]
        cc = 7
        param = "gain"
        takeover = "pickup"
    """)
    assert rig.value("gain") == 1.0  # fader position 63.5 of 127
    for v in (10, 30, 50):
        assert rig.cc(7, v) == []
    assert rig.value("gain") == 1.0
    rig.cc(7, 70)  # passed through 63.5: now in control
    assert rig.value("gain") == pytest.approx(2 * 70 / 127, abs=1e-12)
    rig.cc(7, 20)
    assert rig.value("gain") == pytest.approx(2 * 20 / 127, abs=1e-12)
    rig.osc("gain", 1.5)  # OSC moves gain: the fader has to catch up again (1.5 = position 95.25)
    for v in (25, 60, 90):
        assert rig.cc(7, v) == []
    assert rig.value("gain") == 1.5
    rig.cc(7, 96)
    assert rig.value("gain") == pytest.approx(2 * 96 / 127, abs=1e-12)
    rig.osc("gain", 0.0)
    rig.cc(7, 0)  # already there (within one step): picks up at once
    assert rig.value("gain") == 0.0


def test_jump_takeover_applies_at_once():
    rig = Rig('[[cc]]\ncc = 7\nparam = "gain"\n')
    rig.cc(7, 10)
    assert rig.value("gain") == pytest.approx(2 * 10 / 127, abs=1e-12)


def test_nrpn_7_and_14_bit_data_entry():
    rig = Rig("""
        [[nrpn]]
        nrpn = 904
        param = "gain"
        bits = 14
        [[nrpn]]
        nrpn = 5
        param = "mutate"
        [[cc]]
        cc = 20
        param = "temperature"
    """)
    rig.cc(99, 7), rig.cc(98, 8)  # select 7 * 128 + 8 = 904
    rig.cc(6, 64)
    assert rig.value("gain") == pytest.approx(2 * 8192 / 16383, abs=1e-12)
    rig.cc(38, 5)
    assert rig.value("gain") == pytest.approx(2 * 8197 / 16383, abs=1e-12)
    rig.cc(96, 0)  # data increment: one step of 14 bits
    assert rig.value("gain") == pytest.approx(2 * 8198 / 16383, abs=1e-9)
    rig.cc(99, 0), rig.cc(98, 5)
    rig.cc(6, 100)
    assert rig.value("mutate") == pytest.approx(100 / 127, abs=1e-12)
    rig.cc(38, 50)  # 7-bit: the fine half is ignored
    assert rig.value("mutate") == pytest.approx(100 / 127, abs=1e-12)
    rig.cc(101, 0), rig.cc(100, 0)  # an RPN (pitch bend range) is selected: its data is not ours
    assert rig.cc(6, 2) == []
    assert rig.value("mutate") == pytest.approx(100 / 127, abs=1e-12)
    rig.cc(20, 0)  # ordinary CCs still work beside NRPN
    assert rig.value("temperature") == 0.0


def test_pitch_bend_and_channel_pressure():
    rig = Rig("""
        [bend]
        param = "guidance"
        range = [0.0, 2.0]
        [pressure]
        param = "mutate"
        range = [0.0, 0.3]
    """)
    rig.send("pitchwheel", pitch=-8192)
    assert rig.value("guidance") == 0.0
    rig.send("pitchwheel", pitch=8191)
    assert rig.value("guidance") == 2.0
    rig.send("pitchwheel", pitch=0)
    assert rig.value("guidance") == pytest.approx(2 * 8192 / 16383, abs=1e-12)
    rig.send("aftertouch", value=127)
    assert rig.value("mutate") == pytest.approx(0.3, abs=1e-12)
    rig.send("aftertouch", value=0)
    assert rig.value("mutate") == 0.0


# -- buttons, notes, programs ----------------------------------------------------------------------


def test_buttons_toggle_momentary_value_and_trigger():
    rig = Rig("""
        [[cc]]
        cc = 46
        param = "freeze"
        [[cc]]
        cc = 64
        param = "play"
        button = "momentary"
        [[cc]]
        cc = 33
        param = "cue"
        value = 2
        crossfade = 0.2
        [[cc]]
        cc = 60
        param = "reset"
        [[note]]
        note = 1
        param = "temperature"
        value = 0.5
        [[note]]
        note = 3
        param = "descriptor/brightness/free"
    """)
    rig.cc(46, 127)
    assert rig.value("freeze") == 1
    assert rig.cc(46, 0) == []  # release does nothing on a toggle
    rig.cc(46, 127)
    assert rig.value("freeze") == 0
    rig.cc(64, 127)
    assert rig.value("play") == 1
    rig.cc(64, 0)
    assert rig.value("play") == 0
    assert rig.cc(33, 127) == [("/distill/cue", (2, 0.2))]
    assert rig.cc(33, 127) == []  # still held: no second jump
    assert rig.cc(60, 127) == [("/distill/reset", ())]
    rig.send("note_on", note=1, velocity=90)
    assert rig.value("temperature") == 0.5
    assert rig.send("note_on", note=3, velocity=90) == [("/distill/descriptor/brightness/free", ())]


def test_knob_choosing_a_passage_jumps_only_when_the_choice_changes():
    rig = Rig('[[cc]]\ncc = 21\nparam = "cue"\n')  # 3 cues: 0..2 across the knob
    assert rig.cc(21, 0) == [("/distill/cue", (0, 0.05))]
    assert rig.cc(21, 10) == []
    assert rig.cc(21, 64) == [("/distill/cue", (1, 0.05))]
    assert rig.cc(21, 127) == [("/distill/cue", (2, 0.05))]


@pytest.mark.parametrize("release, after_release", [
    ("stop", [("/distill/play", (0,))]),
    ("freeze", [("/distill/freeze", (1,))]),
    ("keep", []),
])
def test_keyboard_plays_cues_with_velocity_gain_and_release(release, after_release):
    rig = Rig(f"""
        [keyboard]
        base = 48
        velocity = [0.2, 1.8]
        release = "{release}"
        crossfade = 0.1
    """)
    on = rig.send("note_on", note=49, velocity=127)
    unfreeze = [("/distill/freeze", (0,))] if release == "freeze" else []
    assert on == [("/distill/gain", (1.8,))] + unfreeze + [("/distill/cue", (1, 0.1)), ("/distill/play", (1,))]
    rig.send("note_on", note=50, velocity=64)
    assert rig.value("gain") == pytest.approx(0.2 + 1.6 * 63 / 126, abs=1e-12) == pytest.approx(1.0)
    assert rig.send("note_off", note=49) == []  # another key is still down
    assert rig.send("note_on", note=50, velocity=0) == after_release  # velocity 0 is a note off
    assert rig.send("note_on", note=47, velocity=100) == []  # below the base note
    assert rig.send("note_on", note=51, velocity=100) == []  # past the last cue (3 cues: keys 48..50)


def test_note_bindings_take_their_notes_from_the_keyboard():
    rig = Rig("""
        [keyboard]
        base = 36
        [[note]]
        note = 37
        param = "freeze"
        button = "momentary"
    """)
    assert rig.send("note_on", note=37, velocity=100) == [("/distill/freeze", (1,))]
    assert rig.send("note_off", note=37) == [("/distill/freeze", (0,))]
    assert rig.send("note_on", note=36, velocity=100)[0] == ("/distill/cue", (0, 0.05))


def test_program_change_selects_one_world():
    rig = Rig("[program]\nfirst = 1\n", worlds=["a", "b", "c"])
    rig.send("program_change", program=3)
    assert [rig.value(f"world/{w}") for w in "abc"] == [0.0, 0.0, 1.0]
    rig.send("program_change", program=1)
    assert [rig.value(f"world/{w}") for w in "abc"] == [1.0, 0.0, 0.0]
    assert rig.send("program_change", program=0) == []
    assert rig.send("program_change", program=9) == []


def test_program_change_recalls_a_preset_by_map():
    rig = Rig('[program]\nfirst = 1\nparam = "preset/recall"\ncrossfade = 2.0\n', worlds=["a", "b", "c"])
    assert rig.send("program_change", program=4) == [("/distill/preset/recall", (3, 2.0))]
    assert rig.send("program_change", program=0) == []  # below `first`: nothing
    assert [rig.value(f"world/{w}") for w in "abc"] == [0.0, 0.0, 0.0]  # the worlds are left alone
    assert Rig('[program]\nparam = "/distill/preset/recall"\n').send("program_change", program=0) == \
        [("/distill/preset/recall", (0, 0.05))]  # the full address works too, with the default crossfade


@pytest.mark.parametrize("table, words", [
    ('param = "gain"', ['[program] param must be "world"', "not 'gain'"]),
    ('param = "preset/recall"\ncrossfade = 20.0', ["crossfade 20.0 is outside 0..10 seconds"]),
])
def test_a_bad_program_table_is_one_sentence(table, words):
    with pytest.raises(MidiMapError) as e:
        Rig(f"[program]\n{table}\n")
    assert all(w in str(e.value) for w in words) and "\n" not in str(e.value), str(e.value)


def test_channels_in_the_file_count_from_1():
    rig = Rig("""
        channel = 2
        [[cc]]
        cc = 7
        param = "gain"
        [[cc]]
        cc = 8
        param = "mutate"
        channel = 10
    """)
    assert rig.cc(7, 127, channel=0) == []
    rig.cc(7, 127, channel=1)  # MIDI channel 2
    assert rig.value("gain") == 2.0
    assert rig.cc(8, 127, channel=1) == []
    rig.cc(8, 127, channel=9)
    assert rig.value("mutate") == 1.0


def test_world_by_number_follows_the_model():
    rig = Rig('[[cc]]\ncc = 1\nparam = "world/#2"\n[[cc]]\ncc = 2\nparam = "world/#3"\n')
    rig.cc(1, 127)
    assert rig.value("world/noise") == 1.0
    assert rig.cc(2, 127) == []
    assert rig.map.idle == ["world/#3 (this model has 2 worlds)"]


# -- learn and save --------------------------------------------------------------------------------


def test_learn_binds_the_next_cc_and_survives_save_and_load(tmp_path):
    rig = Rig('name = "mine"\n[[cc]]\ncc = 21\nparam = "mutate"\n')
    rig.osc("temperature", 1.0)
    rig.mapper.learn("temperature")
    assert rig.mapper.learning == ["temperature"]
    assert rig.cc(21, 30, channel=3) == []  # this move binds CC 21 on channel 4 (and is not applied)
    assert rig.mapper.learning == []
    assert rig.cc(21, 64, channel=3) == [("/distill/temperature", (2 * 64 / 127,))]  # picked up at 1.0
    assert rig.cc(21, 127, channel=0) == []  # the control now steers temperature alone: mutate is unbound

    text = rig.mapper.save_text()
    saved = tomllib.loads(text)
    assert saved["name"] == "mine"
    assert saved["cc"] == [{"cc": 21, "channel": 4, "param": "temperature", "takeover": "pickup"}]
    again = Rig(text)
    again.osc("temperature", 1.0)
    again.cc(21, 64, channel=3)
    assert again.value("temperature") == pytest.approx(2 * 64 / 127, abs=1e-12)


def test_learning_an_unknown_parameter_is_refused():
    rig = Rig("")
    with pytest.raises(MidiMapError, match="unknown parameter 'tempreature' \\(did you mean 'temperature'\\?\\)"):
        rig.mapper.learn("tempreature")


# -- bad files -------------------------------------------------------------------------------------


BAD = [
    ('[[cc]]\ncc = 7\nparam = "gian"\n', 3, "unknown parameter 'gian' (did you mean 'gain'?)"),
    ('name = "x"\n\n[[cc]]\ncc = 7\nparam = "gain"\nrange = [0, 5]\n', 6,
     "impossible range [0, 5] for 'gain', which goes from 0 to 2"),
    ('[[cc]]\ncc = 7\nparam = "gain"\nrange = [1, 1]\n', 4, "impossible range [1, 1]: the first number must be below"),
    ('[[cc]]\ncc = 7\nparam = "gain"\ncurve = "exponential"\n', 4, "curve = \"exponential\" needs a range above 0"),
    ('[[cc]]\ncc = 7\nparam = "gain"\nrnage = [0, 1]\n', 4, "unknown key 'rnage' in [cc] (did you mean 'range'?)"),
    ('[[cc]]\ncc = 7\nparam = "gain"\n\n[[cc]]\ncc = 200\nparam = "gain"\n', 6, "cc 200 is outside 0..127"),
    ('[[cc]]\ncc = 7\nparam = "gain"\nmode = "relativ"\n', 4, "mode must be one of absolute, relative, 14bit"),
    ('[[cc]]\ncc = 40\nparam = "gain"\nmode = "14bit"\n', 2, "CC 40 cannot be one"),
    ('[[cc]]\ncc = 7\nparam = "gain"\nmode = "14bit"\n[[cc]]\ncc = 39\nparam = "mutate"\n', 6,
     "CC 39 is the fine half of the 14-bit CC 7"),
    ('[[note]]\nnote = 3\nparam = "gain"\n', 3, "a note can only press a button"),
    ('[[cc]]\ncc = 7\nparam = "freeze"\nrange = [0, 1]\n', 4, "range does not apply to a button"),
    ('[[cc]]\ncc = 7\nparam = "mix"\n', 3, "'mix' takes one number per world"),
    ('[[cc]]\ncc = 7\nparam = "gain"\nchannel = 0\n', 4, "channel 0 is outside 1..16"),
    ('[keyboard]\nbase = 36\nvelocity = [1.5, 0.2]\n', 3, "impossible velocity range [1.5, 0.2]"),
    ('[[cc]]\ncc = 7\nparam = "gain"\nstep = 0.1\n', 4, "step applies only to mode = \"relative\""),
    ('[[cc]]\ncc = "seven"\nparam = "gain"\n', 2, "cc must be a whole number, not 'seven'"),
    ('[[cc]]\ncc = 7\nparam = "gain"\nvalue = 3\n', 4, "value 3 is outside the range of 'gain'"),
    ('[[cc]]\ncc = 7\nparam = gain\n', 3, "invalid value"),
    ('chanel = 2\n', 1, "unknown key 'chanel' (did you mean 'channel'?)"),
]


@pytest.mark.parametrize("text, line, message", BAD)
def test_a_bad_map_is_refused_in_one_sentence_naming_file_and_line(text, line, message):
    with pytest.raises(MidiMapError) as e:
        parse_map(text, registry(), source="live.toml")
    said = str(e.value)
    assert said.startswith(f"midi map 'live.toml' line {line}: "), said
    assert message in said, said
    assert "\n" not in said


def test_a_missing_map_names_the_shipped_ones():
    with pytest.raises(MidiMapError, match="midi map 'nope.toml' not found \\(shipped maps: .*nanokontrol2"):
        load_map("nope.toml", registry())


# -- shipped maps ----------------------------------------------------------------------------------


def test_the_shipped_maps_are_there():
    assert {"generic", "nanokontrol2", "midimix", "launchcontrolxl"} <= set(shipped_maps())


@pytest.mark.parametrize("name", sorted(shipped_maps()))
def test_each_shipped_map_fits_the_registry(name):
    eight = registry([f"w{i}" for i in range(8)])
    big = ParamRegistry(eight.worlds, levels=4, codebook_size=64, cues=8)
    midimap = load_map(name, big)  # raises if any parameter or range does not fit
    assert midimap.idle == []  # with 8 worlds and 8 cues every control does something
    assert midimap.name and len(midimap.bindings) >= 8
    sources = [(b.source, b.number, b.channel) for b in midimap.bindings]
    assert len(sources) == len(set(sources)), "two bindings on the same control"
    for b in midimap.bindings:
        assert b.target.address in big.params
    assert parse_map(midimap.to_toml(), big).to_toml() == midimap.to_toml()  # saving keeps it whole
    small = load_map(name, registry())  # a 2-world, 3-cue model: extra controls just idle
    assert all("worlds" in why or "cues" in why for why in small.idle)
    assert "factory" in shipped_maps()[name].read_text() or name == "generic"


def test_nanokontrol2_factory_layout():
    m = load_map("nanokontrol2", registry())
    by_cc = {b.number: b for b in m.bindings if b.source == "cc"}
    assert by_cc[7].target.address == "/distill/gain"  # fader 8
    assert by_cc[0].target.address == "/distill/world/bells"  # fader 1
    assert by_cc[17].target.address == "/distill/descriptor/brightness"  # knob 2
    assert (by_cc[32].target.address, by_cc[32].value) == ("/distill/cue", 0)  # S1
    assert (by_cc[41].value, by_cc[42].value) == (1, 0)  # play, stop


def test_a_saved_map_is_valid_toml_even_with_odd_text(tmp_path):
    rig = Rig('name = "quote \\" and \\\\ backslash \u00e9"\n[[cc]]\ncc = 1\nparam = "gain"\nrange = [0.0, 1e-3]\n')
    text = rig.mapper.save_text()
    assert tomllib.loads(text)["name"] == 'quote " and \\ backslash \u00e9'
    assert parse_map(text, registry()).bindings[0].target.hi == 1e-3


def test_an_encoder_on_a_whole_number_parameter_moves_one_unit_per_tick():
    rig = Rig('[[cc]]\ncc = 20\nparam = "loop"\nmode = "relative"\n[[cc]]\ncc = 21\nparam = "levels"\nmode = "relative"\n')
    rig.cc(20, 1)
    assert rig.value("loop") == 9
    rig.cc(20, 125)  # -3
    assert rig.value("loop") == 6
    rig.cc(21, 127)
    assert rig.value("levels") == 3


def test_learning_several_takes_a_new_control_for_each():
    """One fader movement is many messages: they all belong to the first parameter learned."""
    rig = Rig("")
    rig.mapper.learn("gain")
    rig.mapper.learn("mutate")
    for v in range(0, 60, 5):  # 0.01 s apart
        rig.cc(7, v)
    assert rig.mapper.learning == ["mutate"]
    rig.t += 0.6  # the fader rested: now it may be learned again
    rig.cc(7, 3)
    assert rig.mapper.learning == []
    assert [(b.number, b.target.address) for b in rig.map.bindings] == [(7, "/distill/mutate")]

"""MIDI mapping files: which knob, fader, key or pedal steers which parameter, and how.

A map is a TOML file. Every target is a parameter of the registry (the same names OSC uses),
written without the `/distill/` prefix (the full address is accepted too). `world/#1` means
"the first world of whatever model is loaded", so a map works with any model.

    name = "my controller"
    channel = 1                       # default MIDI channel of every binding (1-16); omit = any

    [[cc]]                            # a fader or knob sending control change 7
    cc = 7
    param = "gain"
    range = [0.0, 1.5]                # default: the parameter's whole range
    curve = "linear"                  # linear | exponential | inverted
    takeover = "pickup"               # jump (default) | pickup: wait until the fader meets the value

    [[cc]]                            # an endless encoder
    cc = 16
    param = "temperature"
    mode = "relative"                 # absolute (default) | relative | 14bit (CC n with n+32)
    encoding = "twos-complement"      # relative only: twos-complement | signed-bit | binary-offset
    step = 0.01                       # relative only: fraction of the range per encoder tick
                                      # (default 0.01; whole-number parameters: one unit per tick)

    [[cc]]                            # a button: press jumps to passage 3
    cc = 41
    param = "cue"
    value = 3

    [[nrpn]]                          # NRPN parameter 1000 (CC 99/98 select, CC 6/38 data)
    nrpn = 1000
    param = "descriptor/brightness"
    bits = 14                         # 7 (data entry MSB only) or 14 (MSB + LSB)

    [[note]]                          # a pad: toggles freeze
    note = 36
    param = "freeze"
    button = "toggle"                 # toggle (default) | momentary (on while held)

    [keyboard]                        # keys play passages of the training audio (cues)
    base = 48                         # this key plays cue 0, the next key cue 1, ...
    velocity = [0.3, 1.5]             # velocity 1..127 -> gain (omit: velocity is ignored)
    release = "stop"                  # when the last key is let go: stop | keep | freeze
    crossfade = 0.05                  # seconds

    [program]                         # program change n selects world n - first, alone
    first = 0
    param = "preset/recall"           # ... or recalls preset n - first instead
    crossfade = 0.5                   # seconds (presets only; default 0.05)

    [bend]                            # pitch bend: centre is the middle of the range
    param = "guidance"
    range = [0.0, 2.0]

    [pressure]                        # channel pressure (aftertouch)
    param = "mutate"
    range = [0.0, 0.3]

Anything wrong (an unknown parameter, a range outside the parameter's, a typo in a key) stops
the program at start with one sentence naming the file and line.

This file reads and checks a map; mapper.py plays one.
"""
from __future__ import annotations

import difflib
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill_live import UserError
from distill_live.control import toml_value
from distill_live.control.params import PREFIX, ParamError, ParamRegistry

SHIPPED = Path(__file__).with_name("maps")

CURVES = ("linear", "exponential", "inverted")
MODES = ("absolute", "relative", "14bit")
ENCODINGS = ("twos-complement", "signed-bit", "binary-offset")
TAKEOVERS = ("jump", "pickup")
BUTTONS = ("toggle", "momentary")
RELEASES = ("stop", "keep", "freeze")


class MidiMapError(UserError):
    """A mapping file that cannot be used; the message names the file and line."""


# -- targets: where a control goes, and how 0..1 becomes a value ----------------------------------


@dataclass
class Target:
    address: str  # full registry address
    types: str  # the registry's type signature: "f", "i", "b", "" (trigger) or "i,f?" (cue)
    lo: float = 0.0
    hi: float = 1.0
    curve: str = "linear"

    @property
    def continuous(self) -> bool:
        return self.types in ("f", "i")

    def value(self, x: float) -> float:
        """The parameter value for control position x (0..1)."""
        if self.curve == "inverted":
            return self.hi - (self.hi - self.lo) * x
        if self.curve == "exponential":
            return self.lo * (self.hi / self.lo) ** x
        return self.lo + (self.hi - self.lo) * x

    def position(self, value: float) -> float:
        """The control position (0..1) that gives `value` (clamped to the range)."""
        if self.hi == self.lo:
            return 0.0
        v = min(self.hi, max(self.lo, float(value)))
        if self.curve == "inverted":
            return (self.hi - v) / (self.hi - self.lo)
        if self.curve == "exponential":
            return math.log(v / self.lo) / math.log(self.hi / self.lo)
        return (v - self.lo) / (self.hi - self.lo)


@dataclass
class Binding:
    """One physical control (a CC, an NRPN, a note, pitch bend or pressure) bound to one parameter."""

    source: str  # "cc", "nrpn", "note", "bend" or "pressure"
    number: int | None  # CC, NRPN or note number; None for bend and pressure
    channel: int | None  # 0-15 as mido counts; None = any channel
    target: Target
    spec: dict  # the table as written in the file, for saving
    mode: str = "absolute"
    encoding: str = "twos-complement"
    step: float = 0.01
    bits: int = 7  # NRPN data resolution
    takeover: str = "jump"
    button: str = "toggle"
    value: Any = None  # a button that sets this value when pressed
    crossfade: float = 0.05
    # live state, touched only by the MIDI thread
    last_sent: Any = None
    last_x: float | None = None
    down: bool = False

    def hears(self, channel: int) -> bool:
        return self.channel is None or self.channel == channel

    @property
    def resolution(self) -> int:
        fine = self.mode == "14bit" or (self.source == "nrpn" and self.bits == 14) or self.source == "bend"
        return 16383 if fine else 127

    @property
    def is_button(self) -> bool:
        return self.value is not None or self.target.types in ("b", "")


@dataclass
class Keyboard:
    base: int
    channel: int | None
    velocity: tuple[float, float] | None
    release: str
    crossfade: float
    cues: int  # how many keys (one per cue of the model)
    held: set = field(default_factory=set)

    def cue_of(self, note: int) -> int | None:
        i = note - self.base
        return i if 0 <= i < self.cues else None


@dataclass
class Program:
    """Program changes: program n selects world n - first alone, or recalls preset n - first."""

    first: int
    channel: int | None
    presets: bool = False
    crossfade: float = 0.05


# -- reading a map ---------------------------------------------------------------------------------


class _Lines:
    """Line numbers of tables and keys in TOML text, so errors can name the line.

    tomllib reports lines only for syntax errors; this small scan finds `[table]`, `[[array]]`
    headers and `key =` lines, which is all a mapping file uses.
    """

    def __init__(self, text: str):
        self.headers: dict[tuple, int] = {}
        self.keys: dict[tuple, int] = {}
        counts: dict[str, int] = {}
        where: tuple = (None, 0)
        for number, line in enumerate(text.splitlines(), start=1):
            s = line.strip()
            if m := re.match(r"\[\[\s*([^\]]+?)\s*\]\]", s):
                name = m.group(1)
                where = (name, counts.get(name, 0))
                counts[name] = where[1] + 1
                self.headers[where] = number
            elif m := re.match(r"\[\s*([^\]]+?)\s*\]", s):
                where = (m.group(1), 0)
                self.headers[where] = number
            elif m := re.match(r"([A-Za-z0-9_-]+)\s*=", s):
                self.keys.setdefault((*where, m.group(1)), number)

    def line(self, table: str | None, index: int = 0, key: str | None = None) -> int | None:
        if key is not None and (table, index, key) in self.keys:
            return self.keys[(table, index, key)]
        return self.headers.get((table, index), self.keys.get((None, 0, table)))


class _Table:
    """One table of the file being read: typed access to its keys, and errors naming their line."""

    KEYS = {
        "cc": {"cc", "param", "channel", "range", "curve", "mode", "encoding", "step", "takeover", "button",
               "value", "crossfade"},
        "nrpn": {"nrpn", "param", "channel", "range", "curve", "bits", "takeover", "button", "value", "crossfade"},
        "note": {"note", "param", "channel", "button", "value", "crossfade"},
        "bend": {"param", "channel", "range", "curve", "takeover"},
        "pressure": {"param", "channel", "range", "curve", "takeover"},
        "keyboard": {"base", "channel", "velocity", "release", "crossfade"},
        "program": {"first", "channel", "param", "crossfade"},
        None: {"name", "channel", "description", "cc", "nrpn", "note", "keyboard", "program", "bend", "pressure"},
    }

    def __init__(self, source: str, lines: _Lines | None, name: str, index: int, spec: Any):
        self.source, self.lines, self.name, self.index = source, lines, name, index
        if not isinstance(spec, dict):
            self.fail(f"'{name}' must be a table")
        self.spec = spec
        for key in spec:
            if key not in self.KEYS[name]:
                hint = difflib.get_close_matches(key, self.KEYS[name], n=1)
                self.fail(f"unknown key '{key}'" + (f" in [{name}]" if name else "")
                          + (f" (did you mean '{hint[0]}'?)" if hint else ""), key)

    def fail(self, message: str, key: str | None = None):
        line = self.lines.line(self.name, self.index, key) if self.lines else None
        where = f"midi map '{self.source}'" + (f" line {line}" if line else "")
        raise MidiMapError(f"{where}: {message}")

    def get(self, key: str, default: Any = None, kind: type | tuple = None) -> Any:
        if key not in self.spec:
            return default
        value = self.spec[key]
        if kind is not None:
            ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
            if kind is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok:
                name = {int: "a whole number", float: "a number", str: "text", bool: "true or false"}[kind]
                self.fail(f"{key} must be {name}, not {value!r}", key)
        return value

    def number(self, key: str, lo: int, hi: int, default: Any = None) -> int | None:
        value = self.get(key, default, int)
        if value is not None and not lo <= value <= hi:
            self.fail(f"{key} {value} is outside {lo}..{hi}", key)
        return value

    def choice(self, key: str, choices: tuple, default: str) -> str:
        value = self.get(key, default, str)
        if value not in choices:
            self.fail(f"{key} must be one of {', '.join(choices)}, not '{value}'", key)
        return value

    def channel(self, default: int | None) -> int | None:
        """MIDI channel as mido counts (0-15); files count 1-16 like the devices do."""
        value = self.number("channel", 1, 16)
        return default if value is None else value - 1


def short_name(address: str) -> str:
    return address[len(PREFIX) + 1:] if address.startswith(PREFIX + "/") else address


def resolve(name: Any, registry: ParamRegistry) -> str | None:
    """The registry address for a parameter name in a map. None for `world/#n` beyond this model's
    worlds. Raises ValueError (one sentence) for anything unknown."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"param must be a parameter name like \"gain\", not {name!r}")
    short = short_name(name).lstrip("/")
    if m := re.fullmatch(r"world/#(\d+)", short):
        n = int(m.group(1))
        if n < 1:
            raise ValueError(f"'{name}': worlds are counted from #1")
        return f"{PREFIX}/world/{registry.worlds[n - 1]}" if n <= len(registry.worlds) else None
    address = f"{PREFIX}/{short}"
    if address not in registry.params:
        names = [short_name(a) for a in registry.params]
        hint = difflib.get_close_matches(short, names, n=1)
        raise ValueError(f"unknown parameter '{name}'" + (f" (did you mean '{hint[0]}'?)" if hint else
                                                          "; `python -m distill_live.control.osc` lists them all"))
    types = registry.params[address].types
    if types == "f*":
        raise ValueError(f"'{short}' takes one number per world and cannot follow one control; "
                         "map each world/<name> instead")
    if types == "s":
        raise ValueError(f"'{short}' takes a file name and cannot be played from MIDI")
    return address


@dataclass
class MidiMap:
    """A mapping file, read and checked against one model's registry."""

    source: str
    name: str = ""
    description: str = ""
    channel: int | None = None  # default channel (0-15), None = any
    bindings: list[Binding] = field(default_factory=list)
    keyboard: Keyboard | None = None
    program: Program | None = None
    specs: dict = field(default_factory=dict)  # the tables as written, in file order, for saving
    idle: list[str] = field(default_factory=list)  # why some bindings do nothing with this model

    def to_toml(self) -> str:
        out = ["# distill MIDI map (its format: midi.md, in the folder `distill-live patches` names)"]
        if self.name:
            out.append(f"name = {toml_value(self.name)}")
        if self.description:
            out.append(f"description = {toml_value(self.description)}")
        if self.channel is not None:
            out.append(f"channel = {self.channel + 1}")
        for section in ("keyboard", "program", "bend", "pressure"):
            if section in self.specs:
                out += ["", f"[{section}]"] + [f"{k} = {toml_value(v)}" for k, v in self.specs[section].items()]
        for section in ("cc", "nrpn", "note"):
            for spec in self.specs.get(section, []):
                out += ["", f"[[{section}]]"] + [f"{k} = {toml_value(v)}" for k, v in spec.items()]
        return "\n".join(out) + "\n"


def shipped_maps() -> dict[str, Path]:
    """The maps that come with distill, by name (the file name without .toml)."""
    return {p.stem: p for p in sorted(SHIPPED.glob("*.toml"))}


def find_map(name: str | Path) -> Path:
    """A map file path, or the name of a shipped map (`nanokontrol2`, `generic`, ...)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    shipped = shipped_maps()
    if str(name) in shipped:
        return shipped[str(name)]
    raise MidiMapError(f"midi map '{name}' not found (shipped maps: {', '.join(shipped) or 'none'})")


def load_map(name: str | Path, registry: ParamRegistry) -> MidiMap:
    path = find_map(name)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MidiMapError(f"cannot read midi map '{path}': {e.strerror if isinstance(e, OSError) else 'not text'}")
    return parse_map(text, registry, source=str(path))


def parse_map(text: str, registry: ParamRegistry, source: str = "map") -> MidiMap:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        m = re.search(r"\(at line (\d+), column \d+\)", message)
        message = message[: m.start()].strip() if m else message
        where = f" line {m.group(1)}" if m else ""
        raise MidiMapError(f"midi map '{source}'{where}: {message[:1].lower() + message[1:]}")
    lines = _Lines(text)
    top = _Table(source, lines, None, 0, data)
    midimap = MidiMap(source=source, name=top.get("name", "", str), description=top.get("description", "", str),
                      channel=top.channel(None))
    for section in ("cc", "nrpn", "note"):
        specs = data.get(section, [])
        if not isinstance(specs, list):
            top.fail(f"'{section}' must be written as [[{section}]] tables", section)
        for index, spec in enumerate(specs):
            add_binding(midimap, registry, section, spec, lines, index)
    for section in ("keyboard", "program", "bend", "pressure"):
        if section in data:
            table = _Table(source, lines, section, 0, data[section])
            midimap.specs[section] = table.spec
            if section == "keyboard":
                midimap.keyboard = _keyboard(table, midimap, registry)
            elif section == "program":
                midimap.program = _program(table, midimap)
            else:
                binding = _binding(table, section, midimap, registry)
                if binding is not None:
                    midimap.bindings.append(binding)
    _check_pairs(midimap, lines)
    return midimap


def _program(t: _Table, midimap: MidiMap) -> Program:
    param = t.get("param", "world", str)
    if short_name(param) not in ("world", "preset/recall"):
        t.fail(f"[program] param must be \"world\" (program n plays world n - first alone) or "
               f"\"preset/recall\" (it recalls preset n - first), not {param!r}", "param")
    crossfade = t.get("crossfade", 0.05, float)
    if not 0 <= crossfade <= 10:
        t.fail(f"crossfade {crossfade} is outside 0..10 seconds", "crossfade")
    return Program(t.number("first", 0, 127, 0), t.channel(midimap.channel), short_name(param) != "world", crossfade)


def add_binding(midimap: MidiMap, registry: ParamRegistry, section: str, spec: dict,
                lines: _Lines | None = None, index: int | None = None) -> Binding | None:
    """Check one [[cc]], [[nrpn]] or [[note]] table and add it to the map (MIDI learn uses this too)."""
    specs = midimap.specs.setdefault(section, [])
    if index is None:
        index = len(specs)
    table = _Table(midimap.source, lines, section, index, spec)
    binding = _binding(table, section, midimap, registry)
    specs.append(table.spec)
    if binding is not None:
        midimap.bindings.append(binding)
    return binding


def _binding(t: _Table, source: str, midimap: MidiMap, registry: ParamRegistry) -> Binding | None:
    number = {"cc": ("cc", 127), "nrpn": ("nrpn", 16383), "note": ("note", 127)}.get(source)
    if number is not None and number[0] not in t.spec:
        t.fail(f"[[{source}]] needs '{number[0]} = <0..{number[1]}>'")
    if "param" not in t.spec:
        header = f"[[{source}]]" if number else f"[{source}]"
        t.fail(f"{header} needs 'param = \"<parameter>\"', for example param = \"gain\"")
    try:
        address = resolve(t.spec["param"], registry)
    except ValueError as e:
        t.fail(str(e), "param")
    if address is None:
        midimap.idle.append(f"{t.spec['param']} (this model has {len(registry.worlds)} worlds)")
        return None
    p = registry.params[address]
    short = short_name(address)
    b = Binding(source, t.number(number[0], 0, number[1]) if number else None, t.channel(midimap.channel),
                Target(address, p.types), t.spec)

    b.mode = t.choice("mode", MODES, "absolute") if source == "cc" else "absolute"
    if b.mode != "relative":
        for key in ("encoding", "step"):
            if key in t.spec:
                t.fail(f"{key} applies only to mode = \"relative\"", key)
    b.encoding = t.choice("encoding", ENCODINGS, "twos-complement")
    b.step = t.get("step", 0.01, float)
    if not 0 < b.step <= 1:
        t.fail(f"step {b.step} must be above 0 and at most 1 (a fraction of the range)", "step")
    if b.mode == "14bit" and b.number > 31:
        t.fail(f"a 14-bit control is CC 0..31 with its fine half on CC n+32, so CC {b.number} cannot be one", "cc")
    b.bits = t.get("bits", 7, int)
    if b.bits not in (7, 14):
        t.fail(f"bits must be 7 or 14, not {b.bits}", "bits")
    b.takeover = t.choice("takeover", TAKEOVERS, "jump")
    b.button = t.choice("button", BUTTONS, "toggle")
    b.crossfade = t.get("crossfade", 0.05, float)
    if not 0 <= b.crossfade <= 10:
        t.fail(f"crossfade {b.crossfade} must be 0..10 seconds", "crossfade")

    if "value" in t.spec:
        b.value = t.get("value", kind=float)
        if p.types == "":
            t.fail(f"'{short}' is a trigger and takes no value", "value")
        if p.types == "i,f?":
            if b.value != int(b.value) or b.value < 0:
                t.fail(f"value {b.value} is not a passage number (0, 1, 2, ...)", "value")
            if b.value > (p.hi or 0):
                midimap.idle.append(f"cue {int(b.value)} (this model has {int(p.hi or 0) + 1} cues)")
                return None
        else:
            try:
                _, notes = registry.validate(address, [b.value])
            except ParamError as e:
                t.fail(str(e), "value")
            if notes:
                t.fail(f"value {b.value:g} is outside the range of '{short}' ({p.lo:g}..{p.hi:g})", "value")
    elif source == "note" and p.types not in ("b", ""):
        t.fail(f"a note can only press a button: give 'value = ...' for '{short}'", "param")

    if p.types in ("b", "") or b.value is not None:
        for key in ("range", "curve", "takeover"):
            if key in t.spec:
                t.fail(f"{key} does not apply to a button ('{short}' {'with a value' if b.value is not None else 'is on/off'})", key)
        if b.mode != "absolute":
            t.fail(f"a button cannot be mode = \"{b.mode}\"", "mode")
        return b

    # a continuous control: range and curve
    lo, hi = (p.lo, p.hi) if p.lo is not None else (0.0, 1.0)
    if "range" in t.spec:
        r = t.spec["range"]
        if not (isinstance(r, list) and len(r) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                            and math.isfinite(v) for v in r)):
            t.fail(f"range must be two numbers like [0.0, 1.0], not {r!r}", "range")
        lo, hi = float(r[0]), float(r[1])
        if not lo < hi:
            t.fail(f"impossible range [{lo:g}, {hi:g}]: the first number must be below the second "
                   "(curve = \"inverted\" turns a control around)", "range")
        if p.lo is not None and (lo < p.lo or hi > p.hi):
            t.fail(f"impossible range [{lo:g}, {hi:g}] for '{short}', which goes from {p.lo:g} to {p.hi:g}", "range")
    b.target.lo, b.target.hi = float(lo), float(hi)
    b.target.curve = t.choice("curve", CURVES, "linear")
    if p.types == "i" and "step" not in t.spec:
        b.step = 1 / max(1.0, hi - lo)  # a whole-number parameter: one unit per encoder tick
    if b.target.curve == "exponential" and not b.target.lo > 0:
        t.fail(f"curve = \"exponential\" needs a range above 0 (for example [0.01, {hi:g}]), not [{lo:g}, {hi:g}]",
               "range" if "range" in t.spec else "curve")
    if b.mode == "relative" and p.types == "i,f?":
        t.fail("a passage (cue) is chosen by position or by a button, not by an encoder", "mode")
    if b.mode == "relative" and b.takeover == "pickup":
        t.fail("takeover = \"pickup\" is for faders and knobs with a position; an encoder never jumps", "takeover")
    return b


def _keyboard(t: _Table, midimap: MidiMap, registry: ParamRegistry) -> Keyboard:
    cue = registry.params[f"{PREFIX}/cue"]
    velocity = t.get("velocity")
    if velocity is not None:
        gain = registry.params[f"{PREFIX}/gain"]
        if not (isinstance(velocity, list) and len(velocity) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in velocity)):
            t.fail(f"velocity must be a gain range like [0.3, 1.5], not {velocity!r}", "velocity")
        lo, hi = float(velocity[0]), float(velocity[1])
        if not (gain.lo <= lo <= hi <= gain.hi):
            t.fail(f"impossible velocity range [{lo:g}, {hi:g}]: gain goes from {gain.lo:g} to {gain.hi:g}, "
                   "low first", "velocity")
        velocity = (lo, hi)
    crossfade = t.get("crossfade", 0.05, float)
    if not 0 <= crossfade <= 10:
        t.fail(f"crossfade {crossfade} must be 0..10 seconds", "crossfade")
    return Keyboard(base=t.number("base", 0, 127, 36), channel=t.channel(midimap.channel), velocity=velocity,
                    release=t.choice("release", RELEASES, "stop"), crossfade=crossfade, cues=int(cue.hi or 0) + 1)


def _check_pairs(midimap: MidiMap, lines: _Lines) -> None:
    """A 14-bit CC n owns CC n+32 as its fine half: refuse a second binding on that CC."""
    for fine in midimap.bindings:
        if fine.mode != "14bit":
            continue
        for other in midimap.bindings:
            if other.source == "cc" and other.number == fine.number + 32 and (
                    other.channel is None or fine.channel is None or other.channel == fine.channel):
                index = midimap.specs["cc"].index(other.spec)
                _Table(midimap.source, lines, "cc", index, other.spec).fail(
                    f"CC {other.number} is the fine half of the 14-bit CC {fine.number}", "cc")

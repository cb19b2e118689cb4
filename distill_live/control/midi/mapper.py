"""The mapper: incoming MIDI, through a map (mapfile.py), becomes registry messages.

`Mapper.handle` turns one mido message into `(address, args, at)` messages. It only translates:
the caller submits them (live, ports.py) or collects them (`midi_file_messages`, for an offline
render). Soft takeover and relative encoders read the current values; a quantised cue or freeze
comes back with `at` on the next beat or bar of the MIDI clock (clock.py).
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from distill_live.control.params import PREFIX, ParamRegistry

from .clock import MidiClock
from .mapfile import Binding, MidiMap, MidiMapError, add_binding, resolve, short_name

QUANTIZED = (f"{PREFIX}/cue", f"{PREFIX}/freeze")  # what --midi-quantize moves onto the beat

# NRPN and RPN use these control numbers; they are only treated as NRPN when the map has [[nrpn]].
NRPN_MSB, NRPN_LSB, RPN_MSB, RPN_LSB = 99, 98, 101, 100
DATA_MSB, DATA_LSB, DATA_INC, DATA_DEC = 6, 38, 96, 97

LEARN_SETTLE = 0.5  # seconds: a control just learned must rest this long before it can be learned again
Out = tuple[str, tuple, "float | None"]  # (address, args, at): at is None for "now"


@dataclass
class _Sent:
    """What this controller last sent to one address, to tell its own changes from others' (OSC)."""

    before: Any  # the value the engine had when we started sending
    values: deque = field(default_factory=lambda: deque(maxlen=64))


class Mapper:
    """Translates mido messages into registry messages, following one map.

    `values` is where current parameter values are read (the registry's `values` live; a dict the
    caller keeps up to date offline). Soft takeover and relative encoders need them. `t` passed to
    `handle` is the caller's clock in seconds; quantised messages come back with `at` on that clock.
    """

    def __init__(self, midimap: MidiMap, registry: ParamRegistry, clock: MidiClock | None = None,
                 quantize: str = "off", values: Mapping[str, Any] | None = None,
                 on_learn: Callable[[str], None] | None = None):
        if quantize not in ("off", "beat", "bar"):
            raise ValueError(f"quantize must be off, beat or bar, not {quantize!r}")
        self.map = midimap
        self.registry = registry
        self.clock = clock or MidiClock()
        self.quantize = quantize
        self.values = registry.values if values is None else values
        self.on_learn = on_learn
        self.lock = threading.RLock()  # MIDI thread vs learn/save from an OSC thread
        self._learning: deque[str] = deque()
        self._just_learned: tuple = (None, None, -1e9)  # (channel, cc, last time it moved)
        self._sent: dict[str, _Sent] = {}
        self._msb: dict[tuple, int] = {}  # (channel, cc) -> last MSB of a 14-bit control
        self._nrpn: dict[int, dict] = {}  # channel -> {"msb", "lsb", "data_msb", "data_lsb"}

    # -- learn -----------------------------------------------------------------------------------

    def learn(self, param: str) -> str:
        """Bind the next CC moved to `param`. Returns the address; raises MidiMapError if unknown."""
        try:
            address = resolve(param, self.registry)
        except ValueError as e:
            raise MidiMapError(f"cannot learn: {e}")
        if address is None:
            raise MidiMapError(f"cannot learn '{param}': this model has {len(self.registry.worlds)} worlds")
        with self.lock:
            self._learning.append(short_name(address))
        return address

    @property
    def learning(self) -> list[str]:
        return list(self._learning)

    def _learn(self, msg) -> None:
        param = self._learning.popleft()
        spec = {"cc": msg.control, "channel": msg.channel + 1, "param": param}
        if self.registry.params[f"{PREFIX}/{param}"].types in ("f", "i"):
            spec["takeover"] = "pickup"  # the learning move itself is not applied; the next one picks up
        self.map.bindings = [b for b in self.map.bindings
                             if not (b.source == "cc" and b.number == msg.control and b.hears(msg.channel))]
        self.map.specs["cc"] = [s for s in self.map.specs.get("cc", []) if not (
            s.get("cc") == msg.control and s.get("channel", msg.channel + 1) == msg.channel + 1)]
        add_binding(self.map, self.registry, "cc", spec)
        if self.on_learn:
            self.on_learn(f"learned CC {msg.control} on channel {msg.channel + 1} -> {param}")

    def save_text(self) -> str:
        with self.lock:
            return self.map.to_toml()

    # -- current values --------------------------------------------------------------------------

    def current(self, address: str) -> Any:
        """The value as this controller knows it: what it last sent, unless something else has
        changed the parameter since (then the engine's value)."""
        engine = self.values.get(address)
        sent = self._sent.get(address)
        if sent is not None and (engine in sent.values or engine == sent.before):
            return sent.values[-1]
        self._sent.pop(address, None)
        return engine

    def _emit(self, address: str, args: list, at: float | None, out: list) -> Any:
        args, _ = self.registry.validate(address, args)
        if self.registry.params[address].types in ("f", "i", "b"):
            engine = self.values.get(address)
            sent = self._sent.get(address)
            if sent is None or not (engine in sent.values or engine == sent.before):
                sent = self._sent[address] = _Sent(before=engine)
            sent.values.append(args[0])
        out.append((address, args, at))
        return args[0] if args else None

    def _when(self, t: float, addresses) -> float | None:
        if self.quantize == "off" or not any(a in QUANTIZED for a in addresses):
            return None
        return self.clock.next_boundary(t, self.quantize)

    # -- messages --------------------------------------------------------------------------------

    def handle(self, msg, t: float) -> list[Out]:
        """Translate one mido message heard at time `t` into (address, args, at) messages."""
        with self.lock:
            if self.clock.handle(msg, t):
                return []
            out: list[Out] = []
            kind = msg.type
            if kind == "control_change":
                self._control_change(msg, t, out)
            elif kind in ("note_on", "note_off"):
                self._note(msg, msg.type == "note_on" and msg.velocity > 0, t, out)
            elif kind == "program_change":
                self._program(msg, out)
            elif kind == "pitchwheel":
                for b in self._bound("bend", None, msg.channel):
                    self._position(b, (msg.pitch + 8192) / 16383, t, out)
            elif kind == "aftertouch":
                for b in self._bound("pressure", None, msg.channel):
                    self._position(b, msg.value / 127, t, out)
            return out

    def _bound(self, source: str, number: int | None, channel: int) -> list[Binding]:
        return [b for b in self.map.bindings if b.source == source and b.number == number and b.hears(channel)]

    def _control_change(self, msg, t: float, out: list) -> None:
        ch, cc, v = msg.channel, msg.control, msg.value
        still_moving = self._just_learned[:2] == (ch, cc) and t - self._just_learned[2] < LEARN_SETTLE
        if still_moving:
            self._just_learned = (ch, cc, t)
        if self._learning and not still_moving and cc not in (NRPN_MSB, NRPN_LSB, RPN_MSB, RPN_LSB):
            self._learn(msg)
            self._just_learned = (ch, cc, t)
            return
        if any(b.source == "nrpn" for b in self.map.bindings) and cc in (
                NRPN_MSB, NRPN_LSB, RPN_MSB, RPN_LSB, DATA_MSB, DATA_LSB, DATA_INC, DATA_DEC):
            self._nrpn_cc(ch, cc, v, t, out)
            return
        if 32 <= cc < 64:  # maybe the fine half of a 14-bit control
            for b in self._bound("cc", cc - 32, ch):
                if b.mode == "14bit" and (ch, cc - 32) in self._msb:
                    self._position(b, (self._msb[(ch, cc - 32)] * 128 + v) / 16383, t, out)
        for b in self._bound("cc", cc, ch):
            if b.mode == "14bit":
                self._msb[(ch, cc)] = v  # the MIDI spec: a new MSB resets the LSB to 0
                self._position(b, v * 128 / 16383, t, out)
            elif b.mode == "relative":
                self._relative(b, _delta(v, b.encoding), t, out)
            else:
                self._position(b, v / 127, t, out)

    def _nrpn_cc(self, ch: int, cc: int, v: int, t: float, out: list) -> None:
        s = self._nrpn.setdefault(ch, {"msb": None, "lsb": None, "data_msb": 0, "data_lsb": 0, "rpn": False})
        if cc in (NRPN_MSB, NRPN_LSB):
            s["msb" if cc == NRPN_MSB else "lsb"] = v
            s["rpn"] = False
            return
        if cc in (RPN_MSB, RPN_LSB):
            s["rpn"] = True  # an RPN (pitch bend range...) is selected: data entry is not ours
            return
        if s["rpn"] or s["msb"] is None or s["lsb"] is None or (s["msb"], s["lsb"]) == (127, 127):
            return
        for b in self._bound("nrpn", s["msb"] * 128 + s["lsb"], ch):
            if cc == DATA_MSB:
                s["data_msb"], s["data_lsb"] = v, 0
                self._position(b, v / 127 if b.bits == 7 else v * 128 / 16383, t, out)
            elif cc == DATA_LSB and b.bits == 14:
                s["data_lsb"] = v
                self._position(b, (s["data_msb"] * 128 + v) / 16383, t, out)
            elif cc in (DATA_INC, DATA_DEC) and not b.is_button:
                self._relative(b, 1 if cc == DATA_INC else -1, t, out, step=1 / b.resolution)

    def _position(self, b: Binding, x: float, t: float, out: list) -> None:
        """A control with a position (fader, knob, bend, pressure) moved to x (0..1)."""
        target = b.target
        if b.is_button:
            self._button(b, x >= 0.5, t, out)
            return
        if target.types == "i,f?":  # a knob choosing a passage: jump when the choice changes
            index = round(target.value(x))
            if index != b.last_sent:
                b.last_sent = index
                self._emit(target.address, [index, b.crossfade], self._when(t, [target.address]), out)
            return
        if b.takeover == "pickup":
            current = self.current(target.address)
            if current != b.last_sent:  # not (or no longer) in control: wait until the fader meets the value
                here = target.position(current)
                crossed = b.last_x is not None and (b.last_x - here) * (x - here) <= 0
                b.last_x = x
                if not (crossed or abs(x - here) <= 1 / b.resolution):
                    return
        b.last_x = x
        b.last_sent = self._emit(target.address, [target.value(x)], self._when(t, [target.address]), out)

    def _relative(self, b: Binding, delta: int, t: float, out: list, step: float | None = None) -> None:
        if delta == 0:
            return
        target = b.target
        x = min(1.0, max(0.0, target.position(self.current(target.address)) + delta * (step or b.step)))
        b.last_sent = self._emit(target.address, [target.value(x)], None, out)

    def _button(self, b: Binding, pressed: bool, t: float, out: list) -> None:
        was_down, b.down = b.down, pressed
        address, types = b.target.address, b.target.types
        at = self._when(t, [address])
        if pressed and not was_down:
            if b.value is not None:
                args = [int(b.value), b.crossfade] if types == "i,f?" else [b.value]
                self._emit(address, args, at, out)
            elif types == "":
                self._emit(address, [], None, out)
            elif b.button == "momentary":
                self._emit(address, [1], at, out)
            else:
                self._emit(address, [0 if self.current(address) else 1], at, out)
        elif was_down and not pressed and types == "b" and b.value is None and b.button == "momentary":
            self._emit(address, [0], at, out)

    def _note(self, msg, on: bool, t: float, out: list) -> None:
        pads = self._bound("note", msg.note, msg.channel)
        for b in pads:
            self._button(b, on, t, out)
        k = self.map.keyboard
        if pads or k is None or (k.channel is not None and k.channel != msg.channel):
            return
        cue = k.cue_of(msg.note)
        if cue is None:
            return
        at = self._when(t, [f"{PREFIX}/cue"])
        if on:
            k.held.add(msg.note)
            if k.velocity is not None:
                lo, hi = k.velocity
                self._emit(f"{PREFIX}/gain", [lo + (hi - lo) * (msg.velocity - 1) / 126], at, out)
            if k.release == "freeze":
                self._emit(f"{PREFIX}/freeze", [0], at, out)
            self._emit(f"{PREFIX}/cue", [cue, k.crossfade], at, out)
            self._emit(f"{PREFIX}/play", [1], at, out)
        elif msg.note in k.held:
            k.held.discard(msg.note)
            if k.held or k.release == "keep":
                return
            if k.release == "stop":
                self._emit(f"{PREFIX}/play", [0], at, out)
            else:
                self._emit(f"{PREFIX}/freeze", [1], self._when(t, [f"{PREFIX}/freeze"]), out)

    def _program(self, msg, out: list) -> None:
        p = self.map.program
        if p is None or (p.channel is not None and p.channel != msg.channel):
            return
        n = msg.program - p.first
        if p.presets:
            if n >= 0:
                self._emit(f"{PREFIX}/preset/recall", [n, p.crossfade], None, out)
            return
        world = n
        worlds = self.registry.worlds
        if 0 <= world < len(worlds):
            self._emit(f"{PREFIX}/mix", [1.0 if i == world else 0.0 for i in range(len(worlds))], None, out)


def _delta(value: int, encoding: str) -> int:
    """Encoder ticks from one relative CC value (the three encodings controllers use)."""
    if encoding == "binary-offset":  # 64 = no move, 65 = +1, 63 = -1
        return value - 64
    if encoding == "signed-bit":  # bit 6 is the sign: 1 = +1, 65 = -1
        return -(value & 0x3F) if value & 0x40 else value
    return value - 128 if value >= 64 else value  # two's complement: 1 = +1, 127 = -1


# -- MIDI files ------------------------------------------------------------------------------------


def midi_file_messages(path: str | Path, midimap: MidiMap, registry: ParamRegistry,
                       earlier: list[tuple[float, str, tuple]] = ()) -> list[tuple[float, str, tuple]]:
    """A standard MIDI file played through a map, as the (time, address, args) list `render` takes.

    `earlier` are messages from a score or --set: they are applied to the values the map reads
    (soft takeover, encoders) at their times, so MIDI and score agree about where a control is.
    """
    import mido

    try:
        events = list(mido.MidiFile(str(path)))  # merged tracks, msg.time = seconds since the previous one
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as e:
        raise MidiMapError(f"cannot read MIDI file '{path}': {getattr(e, 'strerror', None) or e}")
    values = dict(registry.values)
    mapper = Mapper(midimap, registry, values=values)
    pending = sorted(earlier, key=lambda m: m[0])
    messages: list[tuple[float, str, tuple]] = []
    t = 0.0
    for msg in events:
        t += msg.time
        if msg.is_meta:
            continue
        while pending and pending[0][0] <= t:
            _, address, args = pending.pop(0)
            _store(values, registry, address, args)
        for address, args, at in mapper.handle(msg, t):
            _store(values, registry, address, args)
            messages.append((t if at is None else at, address, args))
    return messages


def _store(values: dict, registry: ParamRegistry, address: str, args: tuple) -> None:
    for address, args in registry.expand(address, args):
        if address in values and args:
            values[address] = args[0]

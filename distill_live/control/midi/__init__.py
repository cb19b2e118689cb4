"""MIDI for `distill-live serve`: the command-line options, starting MIDI, and its two OSC addresses.

    ports.py    the MIDI system (ALSA or JACK), its ports, and the thread that reads them
    clock.py    an incoming MIDI clock: tempo, transport, the next beat or bar
    mapfile.py  map files: reading and checking them against the registry (and the shipped maps/)
    mapper.py   MIDI messages through a map into registry messages, live or from a MIDI file
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from distill_live import UserError
from distill_live.control.osc.namespace import MIDI_LEARN, MIDI_SAVE

from .clock import MidiClock
from .mapfile import MidiMap, MidiMapError, load_map, shipped_maps
from .mapper import Mapper
from .ports import LEARN_FILE, VIRTUAL_NAME, MidiControl, choose_api


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("MIDI")
    g.add_argument("--midi-in", action="append", default=[], metavar="NAME",
                   help="open the MIDI input whose name starts with NAME (repeat for several inputs)")
    g.add_argument("--midi-virtual", action="store_true",
                   help=f"also create an input named '{VIRTUAL_NAME}' that other programs connect to "
                        "(done anyway when no --midi-in is given)")
    g.add_argument("--midi-api", choices=["auto", "alsa", "jack", "off"], default="auto",
                   help="MIDI system: the ALSA sequencer, JACK MIDI, or off (default: ALSA if present, else JACK)")
    g.add_argument("--midi-channel", type=int, action="append", default=[], metavar="N",
                   help="listen only to MIDI channel N, 1-16 (repeat for several)")
    g.add_argument("--midi-map", metavar="FILE",
                   help="MIDI mapping file (TOML), or a shipped map: " + ", ".join(shipped_maps()) +
                        " (default: generic)")
    g.add_argument("--learn", action="append", default=[], metavar="PARAM",
                   help="bind the next CC moved to PARAM (repeat to learn several, in order); the map is "
                        f"saved to the --midi-map file, or ./{LEARN_FILE}")
    g.add_argument("--midi-quantize", choices=["off", "beat", "bar"], default="off",
                   help="with an incoming MIDI clock, hold cue jumps and freezes until the next beat or bar")


def start_midi(engine, args: argparse.Namespace, log: Callable[[str], None] = print) -> MidiControl | None:
    """Open MIDI as the command line asks. Returns None (after one log line) when there is no MIDI
    system; raises MidiMapError / UserError (one sentence) for a bad map, channel or port name."""
    channels = tuple(getattr(args, "midi_channel", None) or ())
    for c in channels:
        if not 1 <= c <= 16:
            raise UserError(f"--midi-channel {c}: MIDI channels are 1 to 16")
    learn = list(getattr(args, "learn", None) or ())
    map_name = getattr(args, "midi_map", None)
    learn_path = None
    if learn:
        learn_path = Path(map_name) if map_name and map_name not in shipped_maps() else Path(LEARN_FILE)
    try:
        midimap = load_map(map_name or "generic", engine.registry)
    except MidiMapError:
        if not (learn and map_name and not Path(map_name).exists() and map_name not in shipped_maps()):
            raise
        midimap = MidiMap(source=map_name)  # --learn into a new file: start from an empty map

    api, reason = choose_api(getattr(args, "midi_api", "auto"))
    if api is None:
        log(reason)
        return None
    if midimap.idle:
        log(f"midi map '{midimap.name or midimap.source}': {len(midimap.idle)} controls do nothing with this "
            f"model, e.g. {midimap.idle[0]}")

    mapper = Mapper(midimap, engine.registry, MidiClock(), getattr(args, "midi_quantize", "off") or "off")
    control = MidiControl(engine, mapper, api, log, tuple(c - 1 for c in channels), learn_path)
    inputs = list(getattr(args, "midi_in", None) or ())
    try:
        if getattr(args, "midi_virtual", False):
            control.open_virtual()
        elif not inputs and not _open_default(control, log):
            control.close()
            return None
        for prefix in inputs:
            control.open(prefix)
        for param in learn:
            control.learn(param)
    except BaseException:
        control.close()
        raise
    control.start()
    log(f"MIDI ({api}): listening to {', '.join(name for name, _ in control.ports)} "
        f"with map '{midimap.name or midimap.source}'")
    return control


def _open_default(control: MidiControl, log: Callable[[str], None]) -> bool:
    """With no MIDI options: a virtual input other programs connect to. Where the MIDI system cannot
    make one (Windows' own MIDI API cannot), every input there is instead, said in one line. False
    (MIDI off) when there is neither."""
    try:
        control.open_virtual()
        return True
    except UserError as e:
        opened = control.open_all()
        instead = (f"listening to every MIDI input instead ({', '.join(opened)})" if opened
                   else "no MIDI input is connected either, so MIDI is off")
        log(f"MIDI ({control.api}): {str(e).rstrip('.')}; {instead}; --midi-in NAME picks an input.")
        return bool(opened)


def osc_handlers(control: MidiControl | None) -> dict[str, Callable[[list], None]]:
    """`/distill/midi/learn <param>` and `/distill/midi/save <file>` for the OSC server (each raises
    ValueError with one sentence to refuse)."""
    def handler(address: str, takes: str, act: str) -> Callable[[list], None]:
        def handle(args: list) -> None:
            if control is None:
                raise ValueError(f"{address} refused: MIDI is off")
            if len(args) != 1 or not isinstance(args[0], str):
                raise ValueError(f"{address} takes {takes}")
            try:
                getattr(control, act)(args[0])
            except MidiMapError as e:
                raise ValueError(str(e)) from None
        return handle

    return {MIDI_LEARN: handler(MIDI_LEARN, "one parameter name, e.g. gain", "learn"),
            MIDI_SAVE: handler(MIDI_SAVE, "one file name", "save")}

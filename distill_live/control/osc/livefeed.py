"""What the OSCQuery WebSocket streams: each change as a binary OSC message on its own address, and
what the engine measures, for the clients that LISTEN (ossia score, Chataigne, VDMX, the web page).

    engine.changes ─► /distill/gain 0.5, /distill/play T ... (the latest of each stored control per
                      poll, every command)
    engine.level ─► /distill/meter f;  engine.codes_since ─► /distill/codes i…, one message per frame,
                      then /distill/frame i: the number of the last of them (what /distill/region/start takes)
    engine.stats() ─► /distill/stats f f i f f (as OSC's /distill/stats);  engine.recent_since ─►
    /distill/measured f f f: loudness, brightness and noisiness of the output, 0..1 of the training range
                      (each frame measured once, as it is made: a poll measures one or two frames)
    a preset saved ─► {"COMMAND": "PATH_CHANGED", "DATA": "/distill/preset/recall"} (its VALS changed)

Values are typed as the OSCQuery tree says (on/off as T/F). Only the WebSocket's thread calls `poll`,
FEED_RATE times a second; each thing the engine measures is only computed while someone listens to it
(a surface that follows a few controls costs no measuring; the page stops listening to the measures
while it is hidden).
"""
from __future__ import annotations

import json
import queue
import struct
import time
from typing import Collection

import numpy as np
from pythonosc.osc_message_builder import OscMessageBuilder

from distill_live.control.params import PREFIX, ParamRegistry
from distill_live.model.descriptors import DESCRIPTORS, DescriptorStream

FEED_RATE = 30.0  # polls a second
STATS_PERIOD = 0.5  # seconds between /distill/stats
METER, CODES, FRAME, STATS, MEASURED = (f"{PREFIX}/{n}" for n in ("meter", "codes", "frame", "stats", "measured"))
MEASURES = (METER, CODES, FRAME, STATS, MEASURED)  # what the engine measures: read-only, LISTEN only
RECALL, SAVE = f"{PREFIX}/preset/recall", f"{PREFIX}/preset/save"


def telemetry_nodes(registry: ParamRegistry) -> list[dict]:
    """The read-only OSCQuery nodes of what the engine measures."""
    levels = registry.params[f"{PREFIX}/levels"].hi
    return [
        {"FULL_PATH": METER, "TYPE": "f", "ACCESS": 1, "RANGE": [{"MIN": 0.0, "MAX": 1.0}],
         "DESCRIPTION": "output peak (LISTEN: about 30 a second)"},
        {"FULL_PATH": CODES, "TYPE": "i" * int(levels), "ACCESS": 1,
         "DESCRIPTION": "each frame's codes, coarse to fine, -1 where a level is not decoded (LISTEN: every frame)"},
        {"FULL_PATH": FRAME, "TYPE": "i", "ACCESS": 1,
         "DESCRIPTION": "the number of the last frame sent on /distill/codes, counted from 0 at the first frame, "
                        "as /distill/region/start takes it (LISTEN: after the codes)"},
        {"FULL_PATH": STATS, "TYPE": "ffiff", "ACCESS": 1,
         "DESCRIPTION": "real-time factor, buffer ms, underruns, latency ms, MIDI clock bpm (LISTEN: twice a second)"},
        {"FULL_PATH": MEASURED, "TYPE": "fff", "ACCESS": 1, "RANGE": [{"MIN": 0.0, "MAX": 1.0}] * 3,
         "DESCRIPTION": "the output's " + ", ".join(DESCRIPTORS) + ", 0..1 of the training range "
                        "(LISTEN: about 30 a second; none without the model's descriptor ranges)"},
    ]


def osc_message(address: str, args) -> bytes:
    """An OSC message typed as OSCQuery says: bools as T/F, ints as i, floats as f."""
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a) if isinstance(a, bool) else b.add_arg(a, "i" if isinstance(a, int) else "f")
    return b.build().dgram


def osc_bundle(messages: list[bytes]) -> bytes:
    """OSC messages as one bundle, time tag 1 (at once): one WebSocket message instead of many."""
    return b"#bundle\0" + struct.pack(">Q", 1) + b"".join(struct.pack(">i", len(m)) + m for m in messages)


class LiveFeed:
    def __init__(self, engine):
        self.engine = engine
        self.registry: ParamRegistry = engine.registry
        self._changes = engine.changes.listen()
        self._frame = None  # the next frame of codes to send
        self._descriptors: DescriptorStream | None = None  # the output's measure (None: nobody listens)
        self._heard = 0  # ...taken up to here, in samples the engine made
        self._next_stats = 0.0
        self.hop, self.rate = engine.hop, engine.model_rate

    def close(self) -> None:
        self.engine.changes.unlisten(self._changes)

    def typed(self, address: str, args: tuple) -> tuple:
        p = self.registry.params.get(address)
        if p is not None and p.types == "b":
            return tuple(bool(a) for a in args)
        return args

    def current(self, address: str) -> bytes | None:
        """The message a client that starts to LISTEN to `address` is sent first: its value now."""
        values, _ = self.registry.snapshot()
        if address in values:
            return osc_message(address, self.typed(address, (values[address],)))
        if address == f"{PREFIX}/mix":
            return osc_message(address, tuple(float(values.get(f"{PREFIX}/world/{w}", 0.0))
                                              for w in self.registry.worlds))
        return None

    def poll(self, listened: Collection[str] = ()) -> list:
        """What happened since the last poll: (address, OSC bytes), and PATH_CHANGED text; of what the
        engine measures (MEASURES), only the addresses in `listened` (those some client LISTENs to)."""
        out: list = []
        latest: dict[str, tuple] = {}
        while True:
            try:
                _, address, args = self._changes.get_nowait()
            except queue.Empty:
                break
            p = self.registry.params.get(address)
            if p is None or not p.stored:  # a command: every one
                out.append((address, osc_message(address, args)))
                if address == SAVE:
                    out.append(json.dumps({"COMMAND": "PATH_CHANGED", "DATA": RECALL}))
                continue
            for changed, value in self.registry.expand(address, args) + [(address, args)]:
                latest.pop(changed, None)
                latest[changed] = value
        out += [(address, osc_message(address, self.typed(address, args))) for address, args in latest.items()]
        return out + self._measures(listened)

    def _measure(self, window: int) -> np.ndarray:
        """The raw descriptors of the output's newest `window` frames (fewer at first): what the engine
        made since the last poll, measured on the engine's own frame boundaries."""
        if self._descriptors is None or self._descriptors.keep != window:  # (another model: another window)
            made, _ = self.engine.recent_since(None)
            self._heard = made - made % self.hop - self.hop  # a frame boundary, and the hop before it
            self._descriptors = DescriptorStream(self.hop, self.rate, keep=window)
        self._heard, audio = self.engine.recent_since(self._heard)
        self._descriptors.feed(audio)
        return self._descriptors.newest()

    def _measures(self, listened: Collection[str]) -> list:
        """What the engine measures, for the addresses in `listened`; one nobody listens to is not measured,
        and when someone listens again it starts from then (no backlog of codes, no stale descriptors)."""
        engine, out = self.engine, []
        if METER in listened:
            out.append((METER, osc_message(METER, (float(engine.level),))))
        if CODES in listened or FRAME in listened:
            self._frame, frames = engine.codes_since(self._frame)
            out += [(CODES, osc_message(CODES, tuple(int(c) for c in row))) for row in frames]
            if len(frames):
                out.append((FRAME, osc_message(FRAME, (self._frame - 1,))))
        else:
            self._frame = None
        stats = engine.descriptor_stats
        if MEASURED in listened and stats is not None:
            raw = self._measure(stats.window)
            if len(raw):
                out.append((MEASURED, osc_message(MEASURED, tuple(float(v) for v in stats.measure(raw)))))
        else:
            self._descriptors = None
        now = time.monotonic()
        if STATS in listened and now >= self._next_stats:
            self._next_stats = now + STATS_PERIOD
            s = engine.stats()
            out.append((STATS, osc_message(STATS, (float(s["rtf"]), float(s["buffer_ms"]), int(s["underruns"]),
                                                   float(s["latency_ms"]), 0.0))))
        return out

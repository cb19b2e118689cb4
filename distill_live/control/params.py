"""The parameter registry: the one list of everything a performer can steer.

OSC addresses, the OSCQuery tree, MIDI map targets, score files, the README table, the patches and
the prior's `Controls` all come from `build_params`: adding a control is one entry there. A control
named like a field of `Controls` (model/prior.py) reaches the prior by that name, with no mapping
code in between; the player and the engine read the others with `get`.

Control threads only *validate and submit* messages (`submit` is thread-safe and never blocks); the
generator thread drains them at each chunk boundary (`apply_due`), so the generator owns the values
and never waits for a lock a control thread holds.
"""
from __future__ import annotations

import dataclasses
import heapq
import math
import queue
import threading
from dataclasses import dataclass
from typing import Any, Sequence

from distill_live.model.corpus import FADE, MAX_FADE, STICK
from distill_live.model.descriptors import DESCRIPTORS
from distill_live.model.prior import HISTORY, Controls

PREFIX = "/distill"


class ParamError(ValueError):
    """A control message that cannot be applied; the message is one readable sentence."""


@dataclass(frozen=True)
class Param:
    """One address. `types` is the OSC type signature the address takes:

    "f" float, "i" int, "b" on/off (int 0/1), "s" string, "f*" any number of floats,
    "i,f?" an int and an optional float, "" a trigger: no argument, or a number that fires it when it
    is not 0 (a button sends 1 when pressed and 0 when let go; see `ParamRegistry.released`).
    """

    name: str  # the address below /distill, e.g. "gain", "world/bells"
    types: str
    default: Any
    description: str
    lo: float | None = None
    hi: float | None = None
    smooth: float = 0.0  # seconds of smoothing the generator applies to a continuous value
    stored: bool = True  # False for commands (cue, reset, ...) that happen once and hold no value
    preset: bool = True  # a stored value a preset keeps (not play or seed: when, not what it sounds like)
    unit: str = ""  # what the number counts, for surfaces that show it (OSCQuery UNIT, the web page)
    preempts: bool = False  # a trigger that does not wait for what is queued (a switch: when it turns on)
    at_card: bool = False  # applied by the card as it plays: for now, it reaches into what is queued (the gain)

    @property
    def address(self) -> str:
        return f"{PREFIX}/{self.name}"

    @property
    def group(self) -> str:
        """Where a surface lays this control out (the web page's sections, OSCQuery's TAGS)."""
        return next((g for prefix, g in GROUPS if self.name == prefix or self.name.startswith(prefix + "/")),
                    "sampling")

    @property
    def range(self) -> tuple[float, float]:
        """(lo, hi), including the implicit ones: on/off and each world weight of `mix` are 0..1; a
        trigger or a string has 0..0."""
        if self.types in ("b", "f*"):
            return 0.0, 1.0
        if self.lo is None or self.hi is None:
            return 0.0, 0.0
        return float(self.lo), float(self.hi)


# the group of each control (by name or the first part of it); the rest is "sampling"
GROUPS = (("play", "output"), ("gain", "output"), ("model", "output"), ("mix", "worlds"), ("world", "worlds"),
          ("descriptor", "descriptors"), ("cue", "cues"), ("freeze", "cues"), ("loop", "cues"),
          ("levels", "levels"), ("lock", "levels"), ("region", "region"), ("corpus", "corpus"), ("preset", "presets"),
          ("input", "input"))
INPUT_MODES = ("off", "resynth", "continue")  # /distill/input/mode 0, 1, 2
REGION_MODES = ("free", "lock", "loop", "mutate")  # /distill/region/mode 0, 1, 2, 3
PRESETS = 128  # preset numbers 0..127, as MIDI program changes count


def build_params(worlds: Sequence[str], levels: int, codebook_size: int, cues: int,
                 audio_input: bool = False) -> list[Param]:
    """Every control of a model with these worlds, levels, codebook size and cue count; the audio input's
    controls only when there is one (serve --input). The corpus controls are always listed (a hot-swap
    may bring the recordings); the registry refuses them for a model saved without its recordings."""
    last_cue = max(0, cues - 1)
    params = [
        Param("play", "b", 0, "start (1) or stop (0) with a short fade", preset=False, preempts=True),
        Param("gain", "f", 1.0, "output gain; peaks past 0.9 bend softly towards ±1, never past it", 0.0, 2.0,
              smooth=0.05, at_card=True),
        Param("temperature", "f", Controls.temperature, "sampling temperature: lower is safer, higher is wilder",
              0.0, 2.0),
        Param("topk", "i", 0, "sample only among the k likeliest codes (0 = off)", 0, codebook_size),
        Param("topp", "f", 1.0, "sample only among the likeliest codes covering this probability (1 = off)", 0.01, 1.0),
        Param("guidance", "f", Controls.guidance, "how strongly world and descriptors steer (1 = plain, >1 = stronger)",
              0.0, 5.0),
        Param("mix", "f*", None, "all world weights at once, in manifest order"),
    ]
    # worlds and held descriptors are read as they are sent: a world pad switches at once (the frame playing is
    # made again under it, live/player.py), and a fader's steps are the fader's own. Eased over 0.1 s, a world
    # change on the demo was first heard 39-43 ms later at the median and 139-172 at p99; as sent, 12-13 and
    # 63-73 ms, with no larger step in the sound. A held loudness was first heard 13-16 ms later at the median
    # and 67-116 at p99 eased, 2-3 and 47-67 as sent, and swung about as far past its target (docs/benchmarks.md,
    # "Steering latency" and "Held descriptors read as sent")
    params += [Param(f"world/{w}", "f", 0.0, f"weight of world '{w}' (weights are normalised; all 0 = no world)",
                     0.0, 1.0) for w in worlds]
    for d in DESCRIPTORS:
        params.append(Param(f"descriptor/{d}", "f", 0.5, f"hold {d} at this target (0..1 of the training range)",
                            0.0, 1.0))
        params.append(Param(f"descriptor/{d}/free", "", None, f"release {d}: the model chooses it", stored=False))
    params += [
        Param("cue", "i,f?", None, "jump to training passage i, with an optional crossfade in seconds",
              0, last_cue, stored=False, preempts=True),
        Param("freeze", "b", 0, "hold: loop the last frames (1) or continue (0)"),
        Param("loop", "i", 8, "loop length in frames while frozen", 1, 256, unit="frames"),
        Param("levels", "i", levels, "decode only this many coarse levels", 1, levels),
        Param("lock", "i", 0, "take this many coarse levels from the current cue; the prior fills the rest", 0, levels),
        Param("mutate", "f", 0.0, "chance of replacing a sampled code at random", 0.0, 1.0),
        Param("region/start", "i", -16, "first frame of the code grid's region: negative counts back from now "
              "(-16: the last 16 frames), 0 and up is a frame number (as the page and OSCQuery's /distill/frame "
              "count them)", -HISTORY, 2**31 - 1, unit="frames", preset=False),
        Param("region/length", "i", 16, "frames in the region", 1, HISTORY, unit="frames"),
        Param("region/top", "i", 0, "the region's coarsest level (0: the coarsest of all)", 0, levels - 1),
        Param("region/bottom", "i", levels - 1, "the region's finest level", 0, levels - 1),
        Param("region/mode", "i", 0, "hold the region: 0 free, generation as usual; 1 lock, its levels replay its "
              "codes in a loop and the prior fills the other levels around them; 2 loop, whole frames of its span "
              "replay; 3 mutate, as lock, and each held code is replaced at random at the /distill/mutate chance "
              "as it comes round (an evolving loop)", 0, len(REGION_MODES) - 1),
        Param("seed", "i", 0, "reseed the random generator", 0, 2**31 - 1, preset=False),
        Param("reset", "", None, "clear the prior's memory and start fresh", stored=False, preempts=True),
        Param("model", "s", None, "hot-swap to another model file (in the models folder)", stored=False),
        Param("corpus/mix", "f", 0.0, "from the neural decoder (0) to playing the training recordings the "
              "codes point at (1)", 0.0, 1.0, smooth=0.05),
        Param("corpus/stick", "f", STICK, "how strongly corpus playback keeps to the recording playing: it "
              "leaves it once this share of the corpus matches the codes better (over the last few frames); "
              "0 always plays the nearest frame, 1 plays each recording to its end", 0.0, 1.0),
        Param("corpus/fade", "f", FADE, "crossfade in seconds where corpus playback jumps to another "
              "recording", 0.001, MAX_FADE),
        Param("preset/save", "i", None, "save every control (but play and seed) as preset n, in the presets "
              "file beside the model", 0, PRESETS - 1, stored=False),
        Param("preset/recall", "i,f?", None, "recall preset n, with an optional crossfade in seconds for the "
              "continuous controls", 0, PRESETS - 1, stored=False),
    ]
    if audio_input:
        params += [
            Param("input/mode", "i", 1, "what the audio input does (serve --input): 0 off, the prior plays alone; "
                  "1 resynth, the model plays what the input plays; 2 continue, the same while the input "
                  "plays, and when it falls quiet the prior carries on from it", 0, 2),
            Param("input/gain", "f", 1.0, "audio input gain, before encoding", 0.0, 4.0, smooth=0.05),
            Param("input/gate", "f", -45.0, "input level (dBFS, RMS of a frame) above which the input counts "
                  "as playing", -90.0, 0.0, unit="dBFS"),
            Param("input/hold", "f", 0.3, "seconds the input must stay below the gate before the prior takes "
                  "over (continue mode)", 0.0, 10.0, unit="s"),
        ]
    return params


class ParamRegistry:
    def __init__(self, worlds: Sequence[str], levels: int, codebook_size: int, cues: int, audio_input: bool = False,
                 corpus: bool = True):
        self.worlds = list(worlds)
        self.corpus = corpus  # the model holds its recordings: the corpus/ controls apply
        self.params = {p.address: p for p in build_params(worlds, levels, codebook_size, cues, audio_input)}
        self.values: dict[str, Any] = {a: p.default for a, p in self.params.items() if p.stored and p.default is not None}
        self.held = {d: False for d in DESCRIPTORS}
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        # the generator's heap of messages: (when, order of arrival, address, args, timed, for now)
        self._pending: list[tuple[float, int, str, tuple, bool, bool]] = []
        self._order = 0
        self._timed_at: dict[str, float] = {}  # the time of the timed message that set each control last
        self._urgent = False  # a trigger that pre-empts came in for now and the engine has not answered it yet
        self._steering_waits = False  # a message for now that steers the prior waits to be applied
        self.steered_now = False  # the last `apply_due` applied a message for now that steers the prior
        self._at_card: dict[str, Any] = {}  # values for now for the card to apply at once (see `at_card`)
        self.arrived = threading.Event()  # set at every submit: the generator wakes for a trigger at once
        # what `controls` reads: the fields of Controls that have a control of their name (as they are, or as
        # on/off), the worlds and the descriptors
        named = [(f.name, self.params[f"{PREFIX}/{f.name}"]) for f in dataclasses.fields(Controls)
                 if f"{PREFIX}/{f.name}" in self.params]
        self._plain = [(name, p.address) for name, p in named if p.types != "b"]
        self._switches = [(name, p.address) for name, p in named if p.types == "b"]
        self._worlds = [f"{PREFIX}/world/{w}" for w in self.worlds]
        self._descriptors = [(d, f"{PREFIX}/descriptor/{d}") for d in DESCRIPTORS]
        self._steering = ({a for _, a in self._plain + self._switches} | set(self._worlds)
                          | {f"{PREFIX}/mix"} | {a for _, a in self._descriptors}
                          | {f"{a}/free" for _, a in self._descriptors})

    @classmethod
    def for_model(cls, model, audio_input: bool = False) -> "ParamRegistry":
        """The controls of a DistillModel: its worlds, levels, codebook size and cues (and the audio
        input's controls with `audio_input`, serve --input)."""
        c = model.config.codec
        return cls(model.worlds, c.levels, c.codebook_size, len(model.cues), audio_input, bool(model.recordings))

    def __contains__(self, address: str) -> bool:
        return address in self.params

    def steers(self, address: str) -> bool:
        """Whether a message to `address` changes what the prior reads (`controls`)."""
        return address in self._steering

    def playable(self, p: Param) -> bool:
        """Whether this model can take the control: the corpus ones only with its recordings."""
        return self.corpus or not p.name.startswith("corpus/")

    # -- any thread ------------------------------------------------------------------------------

    def validate(self, address: str, args: Sequence[Any]) -> tuple[tuple, list[str]]:
        """Check and coerce one message. Returns (args, notes about clamping); raises ParamError."""
        p = self.params.get(address)
        if p is None:
            raise ParamError(f"unknown address {address}")
        if not self.playable(p):
            raise ParamError(f"{address} refused: this model holds no recordings to play (distill-train keeps "
                             "them unless given --no-corpus; model files from before corpus playback have none)")
        notes: list[str] = []
        args = list(args)
        for a in args:
            if isinstance(a, float) and not math.isfinite(a):
                raise ParamError(f"{address} refused: {a} is not a finite number")
        if p.types == "":
            return (), notes
        if p.types == "s":
            if len(args) != 1 or not isinstance(args[0], str):
                raise ParamError(f"{address} takes one string, got {_show(args)}")
            return (args[0],), notes
        if p.types == "f*":
            if len(args) != len(self.worlds) or not all(_is_number(a) for a in args):
                raise ParamError(f"{address} takes {len(self.worlds)} numbers (one per world), got {_show(args)}")
            out = []
            for a in args:
                v = min(1.0, max(0.0, float(a)))
                if v != float(a):
                    notes.append(f"{address}: {a} clamped to {v}")
                out.append(v)
            return tuple(out), notes
        if p.types == "i,f?":
            if not 1 <= len(args) <= 2 or not all(_is_number(a) for a in args):
                raise ParamError(f"{address} takes a passage number and an optional crossfade, got {_show(args)}")
            i = self._clamp(p, int(round(float(args[0]))), notes)
            fade = min(10.0, max(0.0, float(args[1]))) if len(args) == 2 else 0.05
            return (i, fade), notes
        if len(args) != 1 or not _is_number(args[0]):
            raise ParamError(f"{address} takes one number, got {_show(args)}")
        v = float(args[0])
        if p.types == "b":
            return (1 if v >= 0.5 else 0,), notes
        if p.types == "i":
            return (int(self._clamp(p, int(round(v)), notes)),), notes
        return (float(self._clamp(p, v, notes)),), notes

    @staticmethod
    def _clamp(p: Param, v, notes: list[str]):
        lo = p.lo if p.lo is not None else v
        hi = p.hi if p.hi is not None else v
        c = min(hi, max(lo, v))
        if abs(c - v) > 1e-6 * max(1.0, abs(c)):  # OSC floats are 32-bit: a fader at 0.01 sends 0.00999999977
            notes.append(f"{p.address}: {v} is out of range {p.lo:g}..{p.hi:g}, clamped to {c:g}")
        return c

    def released(self, address: str, args: Sequence[Any]) -> bool:
        """A trigger's release: `/distill/reset 0`. A trigger fires with no argument or a non-zero one, so a
        surface's button, which sends 1 when pressed and 0 when let go, fires once; the 0 does nothing."""
        p = self.params.get(address)
        return p is not None and p.types == "" and len(args) > 0 and isinstance(args[0], (int, float)) \
            and float(args[0]) == 0

    def submit(self, address: str, args: Sequence[Any] = (), at: float | None = None) -> list[str]:
        """Validate and queue a message for the generator; `at` is engine time in seconds (None = now; a
        time already made is late: see `apply_due`). A trigger's release (`released`) is dropped."""
        if self.released(address, args):
            return []
        args, notes = self.validate(address, args)
        self._inbox.put((at, address, args))
        self.arrived.set()
        return notes

    def submit_validated(self, messages: Sequence[tuple[str, tuple]], at: float | None = None) -> None:
        """Queue messages that `validate` already accepted, as one unit: the generator applies them all at
        the same frame (an OSC bundle is atomic). Pass only what `validate` returned."""
        if messages:
            self._inbox.put((at, None, tuple(messages)))
            self.arrived.set()

    # -- the generator thread --------------------------------------------------------------------

    def apply_due(self, now: float) -> list[tuple[str, tuple]]:
        """Apply every message due by engine time `now`. Returns the applied (address, args) in order,
        so the caller can act on commands and report changes.

        A timed message that comes late (for a time the generator has made already: a bundle whose
        timetag has passed, or falls in the audio queued for the card) is applied at once, as a message
        for now, but timed messages keep their order: it leaves alone the controls that a message timed
        after it has set already, so a sequencer's steps end where its last one says however late one
        of them arrives. (Messages for now apply as they come, as OSC has it.)"""
        self._take_inbox(now)
        applied = []
        self.steered_now = self._steering_waits = False
        while self._pending and self._pending[0][0] <= now:
            when, _, address, args, timed, for_now = heapq.heappop(self._pending)
            for address, args in (self._not_overtaken(when, address, args) if timed else [(address, args)]):
                self._store(address, args)
                applied.append((address, args))
                self.steered_now |= for_now and self.steers(address)
        return applied

    def _not_overtaken(self, when: float, address: str, args: tuple) -> list[tuple[str, tuple]]:
        """A timed message, less what a message timed after `when` has set already (see `apply_due`)."""
        parts = self.expand(address, args)
        kept = []
        for part, values in parts:
            control = self._control(part)
            if control is not None:
                if self._timed_at.get(control, -math.inf) > when:
                    continue
                self._timed_at[control] = when
            kept.append((part, values))
        return [(address, args)] if len(kept) == len(parts) else kept

    def _control(self, address: str) -> str | None:
        """The stored control a message sets (a descriptor's hold and free are one), or None for a command."""
        name = address[len(PREFIX) + 1:]
        if name.startswith("descriptor/"):
            return f"{PREFIX}/descriptor/{name.split('/')[1]}"
        return address if self.params[address].stored else None

    def urgent(self, now: float) -> bool:
        """Whether a trigger that pre-empts (`Param.preempts`: a cue, a reset, play turning on) came in to be
        applied now (untimed, or late: see `apply_due`), not at a time still to come, and the engine has
        not answered it yet (`preempted`): the engine then makes the next chunks at once and puts them in
        place of what the card has queued, instead of waiting for the queue to drain (see live/engine.py).
        It stays true until then, also when the chunk the generator was making as it came applied it: that
        chunk is queued behind the rest, so the engine must still replace the queue."""
        self._take_inbox(now)
        return self._urgent

    def steering_waits(self, now: float) -> bool:
        """Whether a message that steers the prior came in to be applied now (untimed, or late) and no chunk has
        applied it yet: at a gesture's onset the engine makes that chunk at once and, where the Player takes the
        message up from it (`Player.heard_at_once`), puts it in place of what the card has queued, as a trigger's.
        A steering message at its time to come waits for its time, as every timed message does."""
        self._take_inbox(now)
        return self._steering_waits

    def preempted(self) -> None:
        """The engine has answered the triggers and the steering that came (see `urgent`, `steering_waits`)."""
        self._urgent = self._steering_waits = False

    def at_card(self, now: float) -> dict[str, Any]:
        """The last value of each control the card applies itself (`Param.at_card`: the gain) that came in to be
        applied now (untimed, or late and not overtaken: see `apply_due`), since the last call: the engine
        reaches into what is queued with it (live/cardqueue.py). The message is also applied in its turn,
        as every other, for the take and for render."""
        self._take_inbox(now)
        values, self._at_card = self._at_card, {}
        return values

    def _take_inbox(self, now: float) -> None:
        """Move what the control threads submitted into the timed queue; untimed messages are due `now`,
        and late ones (timed before `now`) are messages for now too."""
        if self._inbox.empty():  # the usual case, each chunk and each look of the generator: no exception raised
            return
        while True:
            try:
                at, address, args = self._inbox.get_nowait()
            except queue.Empty:
                return
            for address, args in (args if address is None else ((address, args),)):  # None: a batch
                self._order += 1
                when = now if at is None else at
                for_now = at is None or at < now  # (a timed message due at this very chunk is in its place)
                heapq.heappush(self._pending, (when, self._order, address, args, at is not None, for_now))
                if when > now:
                    continue
                if self._preempts(address, args):
                    self._urgent = True
                if for_now and self.steers(address):
                    self._steering_waits = True
                if self.params[address].at_card and self._timed_at.get(address, -math.inf) <= when:
                    self._at_card[address] = args[0]

    def _preempts(self, address: str, args: tuple) -> bool:
        p = self.params[address]
        return p.preempts and (p.types != "b" or (bool(args[0]) and not self.values.get(address)))

    def _store(self, address: str, args: tuple) -> None:
        for address, args in self.expand(address, args):
            control = self._control(address)
            if control is None:  # a command: it holds no value
                continue
            if control.startswith(f"{PREFIX}/descriptor/"):  # held at a value, or free
                d = control.rsplit("/", 1)[1]
                self.held[d] = not address.endswith("/free")
                if self.held[d]:
                    self.values[address] = args[0]
            else:
                self.values[address] = args[0]

    def expand(self, address: str, args: tuple) -> list[tuple[str, tuple]]:
        """The messages one message stands for: `mix` for one `world/<name>` per world, in manifest
        order; anything else for itself."""
        if address == f"{PREFIX}/mix":
            return [(f"{PREFIX}/world/{w}", (v,)) for w, v in zip(self.worlds, args)]
        return [(address, args)]

    def get(self, name: str) -> Any:
        return self.values[f"{PREFIX}/{name}"]

    def world_weights(self) -> list[float]:
        return [self.values[a] for a in self._worlds]

    def controls(self) -> Controls:
        """What the prior reads, as the controls stand: each field of `Controls` from the control of the same
        name (on/off as a bool), `world_weights` from the world/ controls (None when all are 0) and
        `descriptors` from the descriptor/ controls (None where free). Call from the generator thread."""
        values = self.values
        fields = {name: values[a] for name, a in self._plain}
        fields.update((name, bool(values[a])) for name, a in self._switches)
        weights = self.world_weights()
        return Controls(world_weights=weights if sum(weights) > 1e-6 else None,
                        descriptors=[values[a] if self.held[d] else None for d, a in self._descriptors], **fields)

    def snapshot(self) -> tuple[dict[str, Any], dict[str, bool]]:
        """Copies of `values` and `held`, from any thread. The generator thread may be writing: a copy is
        retried, never locked (an empty dict after ten tries)."""
        def copy(d: dict) -> dict:
            for _ in range(10):
                try:
                    return dict(d)
                except RuntimeError:
                    continue
            return {}

        return copy(self.values), copy(self.held)


def _is_number(a: Any) -> bool:
    return isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(float(a))


def _show(args: Sequence[Any]) -> str:
    return "nothing" if not args else " ".join(repr(a) for a in args)

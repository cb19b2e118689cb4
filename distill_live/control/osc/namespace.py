"""Every address distill speaks over OSC, and what it answers: the namespace and dump replies, and the
README's OSC tables (`python -m distill_live.control.osc` prints them).

The controls themselves come from the parameter registry (control/params.py); this file adds the
addresses the OSC server answers itself (dump, namespace, reply), the MIDI ones (learn, save) and the
replies, and says once how each registry type signature is written.
"""
from __future__ import annotations

from distill_live.control.params import PREFIX, ParamRegistry

# answered by the OSC server itself, not the registry
DUMP, NAMESPACE, REPLY = f"{PREFIX}/dump", f"{PREFIX}/namespace", f"{PREFIX}/reply"
SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBED = f"{PREFIX}/subscribe", f"{PREFIX}/unsubscribe", f"{PREFIX}/subscribed"
MIDI_LEARN, MIDI_SAVE = f"{PREFIX}/midi/learn", f"{PREFIX}/midi/save"  # answered by MIDI (serve passes them on)
# replies
STATE, METER, CODES, STATS, ERROR = (f"{PREFIX}/{name}" for name in ("state", "meter", "codes", "stats", "error"))
METER_RATE = 30.0  # /distill/meter and /distill/codes per second
LEASE = 300.0  # seconds a UDP subscription lasts without a packet from its host
ERRORS_PER_SECOND = 50  # /distill/error messages sent at most; the rest are counted and summarised

# Each registry type signature (see params.Param) as the README's table writes it, and as OSCQuery's TYPE
# (mix: one "f" per world). /distill/namespace sends the signature itself ("-" for none).
TYPES = {"f": ("f", "f"), "i": ("i", "i"), "b": ("i 0/1", "T"), "s": ("s (path)", "s"), "f*": ("f × worlds", "f"),
         "i,f?": ("i [f]", "if"), "": ("— or i", "N")}


def namespace_messages(registry: ParamRegistry) -> list[tuple[str, tuple]]:
    """`/distill/namespace <address> <types> <lo> <hi> <default> <description>`, one per parameter, then
    `/distill/namespace/end <count>`. Always 6 arguments of the same OSC types (s s f f f s) so a Max
    or Pd patch can `route`/`unpack` them; a non-numeric default is sent as 0."""
    out = []
    for p in registry.params.values():
        lo, hi = p.range
        default = float(p.default) if isinstance(p.default, (int, float)) else 0.0
        out.append((NAMESPACE, (p.address, p.types or "-", lo, hi, default, p.description)))
    out.append((f"{NAMESPACE}/end", (len(registry.params),)))
    return out


def dump_messages(registry: ParamRegistry) -> list[tuple[str, tuple]]:
    """`/distill/state <address> <value>` for every stored value (a free descriptor reports its `/free`
    address instead of a value: replaying a dump restores the state), then `/distill/dump/end <count>`."""
    values, held = registry.snapshot()
    out = []
    for address, p in registry.params.items():
        if p.name.startswith("descriptor/") and not p.name.endswith("/free"):
            d = p.name.split("/")[1]
            if not held.get(d, False):
                out.append((STATE, (f"{address}/free",)))
                continue
        if address in values:
            out.append((STATE, (address, values[address])))
    out.append((f"{DUMP}/end", (len(out),)))
    return out


MODEL_DEPENDENT = {  # ranges the README shows in words: they depend on the model
    "topk": "0..codebook size",
    "cue": "0..cues − 1",
    "levels": "1..levels",
    "lock": "0..levels",
    "region/top": "0..levels − 1",
    "region/bottom": "0..levels − 1",
}

LAYER_ROWS = [
    (DUMP, "—", "", "", "reply every current value as `/distill/state <address> <value>`, "
                        "then `/distill/dump/end <count>`"),
    (NAMESPACE, "—", "", "", "reply `/distill/namespace <address> <types> <lo> <hi> <default> <description>` "
                             "per parameter, then `/distill/namespace/end <count>`"),
    (REPLY, "[i]", "1..65535", "", "send replies to this port on the sender's host (no argument: back to "
                                   "`--reply`, else the last sender)"),
    (SUBSCRIBE, "[i]", "1..65535", "", "this client hears every reply too, at this port of its host (no argument: "
                                       "the port it sends from; over TCP, its connection), until it is silent "
                                       f"for {LEASE / 60:g} minutes; it is sent every value at once"),
    (UNSUBSCRIBE, "[i]", "1..65535", "", "end the subscription `/distill/subscribe` made"),
    (MIDI_LEARN, "s", "", "", "bind the next MIDI control moved to this parameter (e.g. `gain`)"),
    (MIDI_SAVE, "s", "", "", "write the MIDI map, with what was learned, to this file"),
]

REPLY_ROWS = [
    (STATE, "s, any…", "a change was applied: address and value(s); several changes of one address "
                                  "within 10 ms are sent as the latest"),
    ("`<address>`", "any…", "the same change on the control's own address (`/distill/gain 0.5`), so a "
                            "surface's fader follows; commands only on `/distill/state` (`serve --feedback`)"),
    (SUBSCRIBED, "i f", "answers `/distill/subscribe`: the port replies go to, and the lease in seconds"),
    (METER, "f", f"output peak, about {METER_RATE:g} per second"),
    (CODES, "i…", "the current frame's codes, coarse to fine, at the meter rate (-1: a level not decoded)"),
    (STATS, "f f i f f", "real-time factor (0 before the first frame), buffer depth ms, underruns, "
                                    "latency ms, MIDI clock tempo in bpm (0: no clock); once a second"),
    (ERROR, "s", f"one line for anything refused or clamped (at most {ERRORS_PER_SECOND} per second)"),
]


def _num(x) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def doc_registry() -> ParamRegistry:
    """The registry the README documents: one world called `<name>`, ranges that depend on the model
    shown in words (see MODEL_DEPENDENT), and the audio input's controls (serve --input)."""
    return ParamRegistry(["<name>"], levels=8, codebook_size=1024, cues=1, audio_input=True)


def markdown_table(registry: ParamRegistry | None = None) -> str:
    """The README's OSC tables (control addresses, then replies), generated from a registry.
    With no registry: the documentation registry, model-dependent ranges in words."""
    symbolic = registry is None
    registry = registry or doc_registry()
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| address | args | range | default | meaning |", "|---|---|---|---|---|"]
    for p in registry.params.values():
        if symbolic and p.name in MODEL_DEPENDENT:
            rng = MODEL_DEPENDENT[p.name]
        elif p.types in ("b", "f*") or (p.lo is not None and p.hi is not None):
            lo, hi = p.range
            rng = f"{_num(lo)}..{_num(hi)}"
        else:
            rng = ""
        default = "" if p.default is None else _num(p.default)
        if symbolic and p.name == "levels":
            default = "levels"
        if symbolic and p.name == "region/bottom":
            default = "levels − 1"
        smooth = f" (smoothed {p.smooth * 1000:g} ms)" if p.smooth else ""
        lines.append(f"| `{p.address}` | {TYPES[p.types][0]} | {rng} | {default} | "
                     f"{esc(p.description)}{smooth} |")
    for address, args, rng, default, meaning in LAYER_ROWS:
        lines.append(f"| `{address}` | {args} | {rng} | {default} | {esc(meaning)} |")
    lines += ["", "| reply | args | meaning |", "|---|---|---|"]
    for address, args, meaning in REPLY_ROWS:
        shown = address if address.startswith("`") else f"`{address}`"
        lines.append(f"| {shown} | {args} | {esc(meaning)} |")
    return "\n".join(lines) + "\n"

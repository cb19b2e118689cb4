"""Write the Max package distill_live/patches/max/distill/ (Max 8/9): package-info.json, patchers/distill.maxpat
(the control surface, also an abstraction: [bpatcher distill.maxpat]), patchers/distill-audio-and-metro.maxpat
and help/distill.maxhelp.

The files are committed; this script is how they were made (`.venv/bin/python patches/tools/make_max.py`,
after changing the layout or the registry: control names and ranges come from the parameter registry,
registry.py).
tests/test_patches.py checks the committed files: JSON structure, inlet/outlet counts, and that every
OSC address they send is in the parameter registry.
"""
from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path

from registry import DESCRIPTORS, PATCHES, REGION, names, span, write

PACKAGE = "max/distill"  # the Max package, inside the patches folder
WORLD_SLOTS = 8
REPLY_PORT = 9001


def iolets(text: str) -> tuple[int, int, list[str]]:
    """(inlets, outlets, outlettype) of a newobj box in Max 8/9."""
    words = text.split()
    name, args = words[0], [w for w in words[1:] if not w.startswith("@")]
    n = len(args)
    fixed = {
        "loadbang": (1, 1, ["bang"]), "udpsend": (1, 0, []), "udpreceive": (1, 1, [""]),
        "prepend": (1, 1, [""]), "print": (1, 0, []), "s": (1, 0, []), "r": (0, 1, [""]),
        "gate": (2, 1, [""]), "i": (2, 1, ["int"]), "f": (2, 1, ["float"]), "+": (2, 1, ["int"]),
        "%": (2, 1, ["int"]), "metro": (2, 1, ["bang"]), "fromsymbol": (1, 1, [""]),
        "deferlow": (1, 1, [""]), "adc~": (1, max(n, 1), ["signal"] * max(n, 1)), "ezdac~": (2, 0, []),
        "meter~": (1, 1, ["float"]), "*~": (2, 1, ["signal"]), "sfrecord~": (max(n, 1), 1, ["signal"]),
    }
    if name in fixed:
        return fixed[name]
    if name in ("route", "sel", "select"):
        return n + 1, n + 1, (["bang"] * n if name != "route" else [""] * n) + [""]
    if name in ("t", "trigger"):
        kinds = {"b": "bang", "f": "float", "i": "int", "s": "", "l": "", "a": ""}
        return 1, n, [kinds.get(a, "") for a in args]
    if name == "pack":
        return n, 1, [""]
    if name == "unpack":
        return 1, n, [""] * n
    if name == "zl":
        return 2, 2, ["", ""]
    if name == "sprintf":
        return max(1, sum(1 for w in words if "%" in w)), 1, [""]
    raise KeyError(f"no inlet/outlet counts for {name}")


class Patcher:
    def __init__(self, rect=(40.0, 80.0, 1280.0, 1000.0)):
        self.boxes: list[dict] = []
        self.lines: list[dict] = []
        self.rect = list(rect)

    def _box(self, maxclass, x, y, w, h, ins, outs, types, **extra) -> str:
        oid = f"obj-{len(self.boxes) + 1}"
        box = {"id": oid, "maxclass": maxclass, "numinlets": ins, "numoutlets": outs}
        if outs:
            box["outlettype"] = types
        box["patching_rect"] = [float(x), float(y), float(w), float(h)]
        box.update(extra)
        self.boxes.append({"box": box})
        return oid

    def obj(self, x, y, text, w=None):
        ins, outs, types = iolets(text)
        return self._box("newobj", x, y, w or max(40, 7 * len(text) + 14), 22, ins, outs, types, text=text)

    def msg(self, x, y, text, w=None):
        return self._box("message", x, y, w or max(40, 7 * len(text) + 14), 22, 2, 1, [""], text=text)

    def comment(self, x, y, text, w=300, lines=1):
        extra = {"linecount": lines} if lines > 1 else {}
        return self._box("comment", x, y, w, 20 * lines, 1, 0, [], text=text, **extra)

    def slider(self, x, y, lo, hi, w=140):
        return self._box("slider", x, y, w, 22, 1, 1, [""], floatoutput=1, min=float(lo), size=float(hi - lo),
                         parameter_enable=0)

    def number(self, x, y, lo=0, hi=None):
        top = {} if hi is None else {"maximum": hi}
        return self._box("number", x, y, 50, 22, 1, 2, ["", "bang"], minimum=lo, **top, parameter_enable=0)

    def flonum(self, x, y, lo=0.0):
        return self._box("flonum", x, y, 50, 22, 1, 2, ["", "bang"], format=6, minimum=lo, parameter_enable=0)

    def bpatcher(self, x, y, w, h, name):
        return self._box("bpatcher", x, y, w, h, 0, 0, [], name=name, embed=0, offset=[0.0, 0.0],
                         enablehscroll=1, enablevscroll=1, lockeddragscroll=0, viewvisibility=1)

    def toggle(self, x, y):
        return self._box("toggle", x, y, 24, 24, 1, 1, ["int"], parameter_enable=0)

    def button(self, x, y):
        return self._box("button", x, y, 24, 24, 1, 1, ["bang"], parameter_enable=0)

    def wire(self, a, b, outlet=0, inlet=0):
        self.lines.append({"patchline": {"source": [a, outlet], "destination": [b, inlet]}})

    def chain(self, *ids):
        for a, b in zip(ids, ids[1:]):
            self.wire(a, b)

    def json(self) -> str:
        patcher = {
            "fileversion": 1,
            "appversion": {"major": 8, "minor": 6, "revision": 0, "architecture": "x64", "modernui": 1},
            "classnamespace": "box", "rect": self.rect, "bglocked": 0, "openinpresentation": 0,
            "default_fontsize": 12.0, "default_fontface": 0, "default_fontname": "Arial", "gridonopen": 1,
            "gridsize": [15.0, 15.0], "gridsnaponopen": 1, "objectsnaponopen": 1, "statusbarvisible": 2,
            "toolbarvisible": 1, "lefttoolbarpinned": 0, "toptoolbarpinned": 0, "righttoolbarpinned": 0,
            "bottomtoolbarpinned": 0, "toolbars_unpinned_last_save": 0, "tallnewobj": 0, "boxanimatetime": 200,
            "enablehscroll": 1, "enablevscroll": 1, "devicewidth": 0.0, "description": "", "digest": "",
            "tags": "", "style": "", "subpatcher_template": "", "assistshowspatchername": 0,
            "boxes": self.boxes, "lines": self.lines, "dependency_cache": [], "autosave": 0,
        }
        return json.dumps({"patcher": patcher}, indent=1) + "\n"


def control_patch() -> str:
    p = Patcher()
    p.comment(15, 10, "distill: 1) distill-live serve my.distill  2) open this patch (it sends to udp 127.0.0.1:9000 "
                      f"and asks for replies on port {REPLY_PORT})  3) click play, move the sliders. Sliders follow "
                      "/distill/state, so MIDI or another patch moving a control shows here. World slots are named "
                      "from the model's /distill/namespace reply; click 'hello' to ask again.", w=900, lines=2)
    # -- network ---------------------------------------------------------------------------------
    x0 = 900
    lb = p.obj(x0, 70, "loadbang")
    hello = p.msg(x0, 100, f"/distill/reply {REPLY_PORT}, /distill/namespace, /distill/dump")
    p.comment(x0 + 10, 125, "hello: replies here, world names, current values", w=330)
    rosc = p.obj(x0, 160, "r distill.osc")
    send = p.obj(x0, 190, "udpsend 127.0.0.1 9000")
    s_hello = p.obj(x0 + 200, 160, "s distill.osc")
    p.chain(lb, hello, s_hello)
    p.chain(rosc, send)
    recv = p.obj(x0, 240, f"udpreceive {REPLY_PORT}")
    kinds = p.obj(x0, 270, "route /distill/state /distill/meter /distill/namespace /distill/namespace/end "
                           "/distill/error", w=360)
    p.chain(recv, kinds)
    perr = p.obj(x0 + 250, 310, "print distill.error")
    p.wire(kinds, perr, 4)
    meter_set = p.obj(x0 + 120, 310, "prepend set")
    p.wire(kinds, meter_set, 1)
    s_state = p.obj(x0, 310, "s distill.state")
    p.wire(kinds, s_state, 0)

    # -- controls: GUI -> prepend /distill/NAME -> [s distill.osc]; state -> prepend set -> GUI ------
    views: dict[str, str] = {}

    def send_from(view, x, y, address):
        pre = p.obj(x, y, f"prepend {address}")
        s = p.obj(x, y + 28, "s distill.osc")
        p.chain(view, pre, s)
        return pre

    x, y = 15, 70
    p.comment(x, y, "play")
    views["play"] = t = p.toggle(x, y + 22)
    send_from(t, x, y + 52, "/distill/play")
    p.comment(x + 130, y, "freeze")
    views["freeze"] = t = p.toggle(x + 130, y + 22)
    send_from(t, x + 130, y + 52, "/distill/freeze")
    p.comment(x + 260, y, "reset")
    b = p.button(x + 260, y + 22)
    m = p.msg(x + 260, y + 52, "/distill/reset")
    p.chain(b, m, p.obj(x + 260, y + 80, "s distill.osc"))
    p.comment(x + 390, y, "meter")
    meter = p.slider(x + 390, y + 22, 0, 1)
    p.chain(meter_set, meter)

    y = 190
    for i, (name, (lo, hi)) in enumerate((n, span(n)) for n in names("gain", "temperature", "topp", "guidance",
                                                                        "mutate")):
        xx = x + 175 * i
        p.comment(xx, y, f"{name} {lo:g}..{hi:g}", w=160)
        views[name] = sl = p.slider(xx, y + 22, lo, hi)
        send_from(sl, xx, y + 52, f"/distill/{name}")
    y = 310
    for i, name in enumerate(names("topk", "loop", "levels", "lock", "seed")):
        xx = x + 110 * i
        p.comment(xx, y, name, w=100)
        views[name] = n = p.number(xx, y + 22, 1 if name in ("loop", "levels") else 0)
        send_from(n, xx, y + 52, f"/distill/{name}")
    # cue with a crossfade (seconds)
    xx = x + 560
    p.comment(xx, y, "cue  / fade s", w=120)
    views["cue"] = cue = p.number(xx, y + 22)
    fade = p.flonum(xx + 60, y + 22)
    pk = p.obj(xx, y + 52, "pack 0 0.1")
    p.chain(cue, pk)
    p.wire(fade, pk, 0, 1)
    send_from(pk, xx, y + 80, "/distill/cue")

    # corpus playback: from the neural decoder to the training recordings the codes point at
    y = 660
    for i, (name, (lo, hi)) in enumerate((n, span(n)) for n in names("corpus/mix", "corpus/stick", "corpus/fade")):
        xx = x + 175 * i
        p.comment(xx, y, f"{name} {lo:g}..{hi:g}", w=160)
        views[name] = sl = p.slider(xx, y + 22, lo, hi)
        send_from(sl, xx, y + 52, f"/distill/{name}")
    # presets: choose a number, then save the controls there or recall them (with a crossfade, seconds)
    xx = x + 560
    lo, hi = span("preset/recall")
    p.comment(xx, y, f"preset {lo}..{hi} / fade s", w=160)
    number = p.number(xx, y + 22, lo, hi)
    fade = p.flonum(xx + 60, y + 22)
    p.comment(xx + 30, y + 52, "save", w=40)
    p.comment(xx + 120, y + 52, "recall", w=50)
    save, recall = p.button(xx, y + 52), p.button(xx + 90, y + 52)
    save_n, recall_n = p.obj(xx, y + 82, "i"), p.obj(xx + 90, y + 82, "i")
    p.wire(number, save_n, 0, 1)
    p.wire(number, recall_n, 0, 1)
    p.chain(save, save_n)
    send_from(save_n, xx, y + 194, "/distill/preset/save")
    pk = p.obj(xx + 90, y + 110, "pack 0 0.1")
    p.wire(fade, pk, 0, 1)
    p.chain(recall, recall_n, pk)
    send_from(pk, xx + 90, y + 138, "/distill/preset/recall")

    # the code grid's region: its span (start < 0 counts back from now), its levels, and the mode that holds it
    y = 880
    for i, (name, (lo, hi)) in enumerate((n, span(n)) for n in names(*REGION)):
        xx = x + 110 * i
        p.comment(xx, y, name.replace("/", " "), w=100)
        views[name] = n = p.number(xx, y + 22, lo, hi)
        send_from(n, xx, y + 52, f"/distill/{name}")
    p.comment(x + 560, y + 22, "mode: 0 free, 1 lock, 2 loop, 3 mutate", w=240)

    # descriptors: the slider holds a target, the toggle holds (on) or frees (off)
    y = 430
    for i, d in enumerate(DESCRIPTORS):
        xx = x + 250 * i
        p.comment(xx, y, f"{d} (toggle: hold / free)", w=230)
        views[f"descriptor/{d}"] = sl = p.slider(xx, y + 22, 0, 1)
        views[f"descriptor/{d}#hold"] = hold = p.toggle(xx + 150, y + 22)
        t = p.obj(xx, y + 52, "t f b")
        one = p.msg(xx + 60, y + 80, "set 1")
        store = p.obj(xx + 20, y + 140, "f 0.5")
        sel = p.obj(xx + 150, y + 52, "sel 0")
        tb = p.obj(xx + 190, y + 80, "t b")
        free = p.msg(xx + 150, y + 110, f"/distill/descriptor/{d}/free")
        pre = p.obj(xx, y + 170, f"prepend /distill/descriptor/{d}")
        s1 = p.obj(xx, y + 198, "s distill.osc")
        s2 = p.obj(xx + 150, y + 140, "s distill.osc")
        p.chain(sl, t)
        p.wire(t, one, 1)
        p.chain(one, hold)
        p.wire(t, store, 0, 1)
        p.wire(t, pre, 0)
        p.chain(hold, sel)
        p.wire(sel, free, 0)
        p.wire(sel, tb, 1)
        p.chain(tb, store, pre, s1)
        p.chain(free, s2)

    # state -> GUI ("set" never sends back)
    rs = p.obj(x0, 380, "r distill.state")
    routed = names("play", "freeze", "gain", "temperature", "topp", "guidance", "mutate", "topk", "loop", "levels",
                   "lock", "seed", "cue", "corpus/mix", "corpus/stick", "corpus/fade", *REGION)
    routed += [f"descriptor/{d}" for d in DESCRIPTORS] + [f"descriptor/{d}/free" for d in DESCRIPTORS]
    # states with no view (a recalled preset's controls come one by one), kept from the world slots
    ignored = names("preset/save", "preset/recall")
    route = p.obj(x0, 410, "route " + " ".join(f"/distill/{n}" for n in routed + ignored), w=360)
    p.chain(rs, route)
    for i, n in enumerate(routed):
        if n.endswith("/free"):
            target, text = views[f"descriptor/{n.split('/')[1]}#hold"], "set 0"
            box = p.msg(x0 + (i % 6) * 60, 450 + (i // 6) * 30, text)
            p.wire(route, box, i)
            p.chain(box, target)
            continue
        setter = p.obj(x0 + (i % 6) * 60, 450 + (i // 6) * 30, "prepend set")
        p.wire(route, setter, i)
        p.wire(setter, views[n])
        if n.startswith("descriptor/"):
            one = p.msg(x0 + (i % 6) * 60 + 30, 450 + (i // 6) * 30, "set 1")
            p.wire(route, one, i)
            p.chain(one, views[f"{n}#hold"])
    s_world_state = p.obj(x0, 610, "s distill.worldstate")
    p.wire(route, s_world_state, len(routed) + len(ignored))

    # world mixer: 8 slots named from /distill/namespace rows, in manifest order
    y = 1020
    p.comment(x, y - 30, "worlds: slots are named from /distill/namespace (a slot sends nothing until named)", w=600)
    rows = p.obj(x0, 640, "zl slice 1")
    p.wire(kinds, rows, 2)
    split = p.obj(x0, 670, "fromsymbol @separator /")
    p.chain(rows, split)
    rd = p.obj(x0, 700, "route distill")
    rw = p.obj(x0, 730, "route world")
    p.chain(split, rd, rw)
    tname = p.obj(x0, 760, "t b s")
    counter = p.obj(x0, 790, "i")
    plus = p.obj(x0 + 40, 790, "+ 1")
    pk = p.obj(x0, 820, "pack 0 s")
    slots = p.obj(x0, 850, "route " + " ".join(str(i) for i in range(WORLD_SLOTS)), w=200)
    zero = p.msg(x0 + 120, 790, "0")
    p.wire(kinds, zero, 3)  # /distill/namespace/end: the next namespace starts again at slot 0
    p.wire(zero, counter, 0, 1)
    p.chain(rw, tname)
    p.wire(tname, pk, 1, 1)
    p.wire(tname, counter, 0)
    p.chain(counter, plus)
    p.wire(plus, counter, 0, 1)
    p.chain(counter, pk, slots)
    for i in range(WORLD_SLOTS):
        xx, yy = x + 200 * (i % 4), y + 230 * (i // 4)
        t = p.obj(xx, yy, "t s s s b")
        label = p.obj(xx + 100, yy + 28, "prepend set")
        name_box = p.comment(xx, yy + 28, f"world {i + 1}", w=95)
        one = p.msg(xx + 150, yy + 56, "1")
        sl = p.slider(xx, yy + 56, 0, 1)
        gate = p.obj(xx, yy + 84, "gate 1 0")
        pre = p.obj(xx, yy + 112, "prepend /distill/world/unnamed")
        fmt = p.obj(xx + 60, yy + 140, "sprintf set /distill/world/%s")
        s = p.obj(xx, yy + 140, "s distill.osc")
        address = p.obj(xx + 60, yy + 168, "sprintf symout /distill/world/%s")
        rs = p.obj(xx + 100, yy - 28, "r distill.worldstate")
        sl1 = p.obj(xx + 100, yy + 196, "zl slice 1")
        match = p.obj(xx + 60, yy + 196, "sel unnamed")
        val = p.obj(xx + 60, yy + 224, "f")
        setv = p.obj(xx + 60, yy + 252, "prepend set")
        p.wire(slots, t, i)
        p.wire(t, one, 3)
        p.wire(one, gate)
        p.wire(t, label, 2)
        p.chain(label, name_box)
        p.wire(t, fmt, 1)
        p.wire(fmt, pre)
        p.wire(t, address, 0)
        p.wire(address, match, 0, 1)
        p.chain(sl, gate)
        p.wire(gate, pre, 0, 0)
        p.chain(pre, s)
        p.chain(rs, sl1)
        p.wire(sl1, val, 1, 1)
        p.wire(sl1, match, 0)
        p.chain(match, val, setv, sl)
    return p.json()


def audio_and_metro_patch() -> str:
    p = Patcher((60.0, 100.0, 900.0, 640.0))
    p.comment(15, 10, "Route the engine's audio into Max, and sequence cues from a metro.", w=600)
    p.comment(15, 40, "AUDIO. distill-live plays on a sound card; to get it into Max, make that card a virtual one. "
                      "Linux / macOS with JACK: start JACK, run `distill-live serve my.distill` (it plays into JACK "
                      "when a JACK server runs), choose JackRouter / JACK as Max's input in Options > Audio Status, "
                      "and connect PortAudio:out_0/out_1 to Max's inputs. macOS without JACK: install a loopback "
                      "device (BlackHole, Loopback), run `distill-live serve my.distill --device BlackHole` and pick "
                      "BlackHole as Max's input device. Windows: a virtual cable (VB-Cable) the same way. "
                      "`distill-live devices` lists the names.", w=860, lines=5)
    dsp = p.msg(15, 150, "; dsp open")
    p.comment(100, 150, "<- Audio Status (choose the input device)", w=300)
    adc = p.obj(15, 190, "adc~ 1 2")
    m1 = p.obj(15, 230, "meter~")
    m2 = p.obj(90, 230, "meter~")
    gain = p.slider(200, 190, 0, 1)
    g1 = p.obj(15, 270, "*~ 1.")
    g2 = p.obj(90, 270, "*~ 1.")
    dac = p.obj(15, 310, "ezdac~")
    p.comment(200, 220, "level of the engine in Max (then process it as you like)", w=330)
    p.wire(adc, m1, 0)
    p.wire(adc, m2, 1)
    p.wire(adc, g1, 0)
    p.wire(adc, g2, 1)
    p.wire(gain, g1, 0, 1)
    p.wire(gain, g2, 0, 1)
    p.wire(g1, dac, 0, 0)
    p.wire(g2, dac, 0, 1)
    _ = dsp

    x, y = 15, 370
    p.comment(x, y, "CUES FROM A METRO: every period, jump to the next of N training passages with a crossfade. "
                    "Start the engine and the control patch (or send /distill/play 1 below) first.", w=860, lines=2)
    play = p.msg(x, y + 50, "/distill/play 1")
    stop = p.msg(x + 120, y + 50, "/distill/play 0")
    tog = p.toggle(x, y + 90)
    period = p.number(x + 60, y + 90, 50)
    p.comment(x + 115, y + 90, "ms per cue", w=80)
    metro = p.obj(x, y + 125, "metro 2000")
    count = p.obj(x, y + 155, "i")
    plus = p.obj(x + 40, y + 155, "+ 1")
    n = p.number(x + 200, y + 125, 1)
    p.comment(x + 255, y + 125, "cues (N)", w=80)
    mod = p.obj(x + 40, y + 185, "% 4")
    cue = p.msg(x, y + 215, "/distill/cue $1 0.25")
    freeze_on = p.msg(x + 200, y + 215, "/distill/freeze 1")
    freeze_off = p.msg(x + 330, y + 215, "/distill/freeze 0")
    sel = p.obj(x + 200, y + 185, "sel 3")
    send = p.obj(x, y + 255, "udpsend 127.0.0.1 9000")
    p.chain(tog, metro, count, cue, send)
    p.wire(period, metro, 0, 1)
    p.chain(count, plus, mod)
    p.wire(mod, count, 0, 1)
    p.wire(n, mod, 0, 1)
    p.wire(count, sel)
    p.wire(sel, freeze_on, 0)  # the last cue of the cycle holds (freezes) until the next step
    p.wire(metro, freeze_off)
    p.chain(freeze_on, send)
    p.chain(freeze_off, send)
    p.chain(play, send)
    p.chain(stop, send)
    return p.json()


def help_patch() -> str:
    """help/distill.maxhelp: what Max opens on alt-click of a distill box; the control surface itself, and
    how to send and receive anything else through it."""
    p = Patcher((60.0, 80.0, 1340.0, 900.0))
    p.comment(15, 10, "distill: play a running `distill-live serve` from Max. Start the engine (distill-live serve, "
                      "or distill-live serve my.distill); the panel below connects on load (it sends to udp "
                      f"127.0.0.1:9000 and asks for replies on port {REPLY_PORT}). Put it in your own patch as "
                      "[bpatcher distill.maxpat], or open distill.maxpat on its own.", w=1000, lines=2)
    p.bpatcher(15, 60, 1300, 560, "distill.maxpat")
    x, y = 15, 640
    p.comment(x, y, "Send anything else through it: any /distill address into [s distill.osc] (the OSC table: "
                    "python -m distill_live.control.osc). Replies come out of [r distill.state].", w=900)
    examples = ["/distill/play 1", "/distill/cue 2 0.5", "/distill/world/bells 1", "/distill/descriptor/brightness 0.8",
                "/distill/descriptor/brightness/free", "/distill/freeze 1", "/distill/freeze 0"]
    send = p.obj(x, y + 100, "s distill.osc")
    for i, text in enumerate(examples):
        p.wire(p.msg(x + 190 * (i % 4), y + 30 + 30 * (i // 4), text, w=180), send)
    p.comment(x + 500, y + 100, "every change, also from MIDI or another patch:", w=300)
    p.chain(p.obj(x + 800, y + 100, "r distill.state"), p.obj(x + 800, y + 130, "print distill.state"))
    return p.json()


def package_info() -> str:
    """package-info.json: what the Package Manager and the Packages folder read."""
    info = {
        "name": "distill", "displayname": "distill", "version": version("distill"), "author": "distill",
        "description": "Play distill, a real-time neural instrument (distill-live serve), from Max over OSC: "
                       "a control surface whose sliders follow the engine, and a patch for its audio.",
        "tags": ["osc", "instrument", "neural", "sampler"], "website": "", "max_version_min": "8.0",
        "os": {"macintosh": {"platform": ["ia32", "x64", "aarch64"], "min_version": "none"},
               "windows": {"platform": ["ia32", "x64"], "min_version": "none"}},
        "homepatcher": "", "package_extra": {}, "filelist": {},
    }
    return json.dumps(info, indent=1) + "\n"


def files() -> dict[str, str]:
    return {f"{PACKAGE}/package-info.json": package_info(),
            f"{PACKAGE}/patchers/distill.maxpat": control_patch(),
            f"{PACKAGE}/patchers/distill-audio-and-metro.maxpat": audio_and_metro_patch(),
            f"{PACKAGE}/help/distill.maxhelp": help_patch()}


if __name__ == "__main__":
    write(PATCHES if len(sys.argv) < 2 else Path(sys.argv[1]), files())

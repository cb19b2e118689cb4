"""Write the Pd abstraction distill_live/patches/puredata/distill/: distill.pd (a control surface, and the
abstraction [distill PORT REPLYPORT]), its help patch distill-help.pd, and test-driver.pd (vanilla Pd 0.51+).

The .pd files are committed; this script is how they were made (run it after changing the layout or
the registry: `.venv/bin/python patches/tools/make_pd.py`). Control names and ranges come from the
parameter registry (registry.py). tests/test_patches.py checks the committed files, not this script.
"""
from __future__ import annotations

import sys
from pathlib import Path

from registry import DESCRIPTORS, PATCHES, REGION, names, span, write

FOLDER = "puredata/distill"  # the abstraction's folder, inside the patches folder
WORLD_SLOTS = 8
BG, FG, LBL = -262144, -1, -1  # iemgui colours in the numeric form every Pd version reads


def esc(text: str) -> str:
    return text.replace("$", "\\$").replace(";", " \\;").replace(",", " \\,")


class Patch:
    def __init__(self, w=1100, h=900):
        self.lines = [f"#N canvas 40 40 {w} {h} 12;"]
        self.n = 0
        self.wires: list[str] = []

    def _add(self, line: str) -> int:
        self.lines.append(line)
        self.n += 1
        return self.n - 1

    def obj(self, x, y, text):
        return self._add(f"#X obj {x} {y} {esc(text)};")

    def msg(self, x, y, text):
        return self._add(f"#X msg {x} {y} {esc(text)};")

    def text(self, x, y, text):
        return self._add(f"#X text {x} {y} {esc(text)};")

    def atom(self, x, y, width=5, label="-", lo=0, hi=0):
        """A number box; lo..hi clips it (0 0: no limits)."""
        return self._add(f"#X floatatom {x} {y} {width} {lo} {hi} 0 {label} - -;")

    def hsl(self, x, y, lo, hi, label):
        return self.obj(x, y, f"hsl 128 15 {lo} {hi} 0 0 empty empty {label} 132 8 0 10 {BG} {FG} {LBL} 0 1")

    def tgl(self, x, y, label):
        return self.obj(x, y, f"tgl 15 0 empty empty {label} 17 7 0 10 {BG} {FG} {LBL} 0 1")

    def bng(self, x, y, label):
        return self.obj(x, y, f"bng 15 250 50 0 empty empty {label} 17 7 0 10 {BG} {FG} {LBL}")

    def wire(self, a, b, outlet=0, inlet=0):
        self.wires.append(f"#X connect {a} {outlet} {b} {inlet};")

    def chain(self, *ids):
        for a, b in zip(ids, ids[1:]):
            self.wire(a, b)

    def text_out(self) -> str:
        return "\n".join(self.lines + self.wires) + "\n"


def control_patch() -> str:
    p = Patch()
    p.text(10, 5, "distill: a vanilla Pd remote for distill-live serve. 1) distill-live serve my.distill "
                  "2) open this patch (it connects to 127.0.0.1:9000 and asks for replies on port 9002) "
                  "3) click play and move the sliders. As an abstraction: [distill PORT REPLYPORT] "
                  "(-1 -1: do not connect at load) and drive it with [s distill-gain] etc.")

    # -- network -----------------------------------------------------------------------------
    x0, y0 = 700, 60
    p.text(x0, y0, "network: sends go through [s distill-osc]")
    lb = p.obj(x0, y0 + 30, "loadbang")
    tb = p.obj(x0, y0 + 55, "t b b")
    port = p.obj(x0 + 80, y0 + 85, "f $1")
    pmoses = p.obj(x0 + 80, y0 + 110, "moses 0")
    psel = p.obj(x0 + 130, y0 + 135, "sel 0")
    pdef = p.msg(x0 + 130, y0 + 160, "9000")
    pcon = p.msg(x0 + 130, y0 + 190, "list 127.0.0.1 $1")
    rcon = p.obj(x0 + 250, y0 + 160, "r distill-connect")
    conmsg = p.msg(x0 + 130, y0 + 220, "connect $1 $2")
    rport = p.obj(x0, y0 + 85, "f $2")
    rmoses = p.obj(x0, y0 + 110, "moses 0")
    rsel = p.obj(x0, y0 + 135, "sel 0")
    rdef = p.msg(x0, y0 + 160, "9002")
    rlisten = p.obj(x0 + 250, y0 + 220, "r distill-listen")
    rtrig = p.obj(x0, y0 + 250, "t b b f f")
    listen = p.msg(x0 + 200, y0 + 280, "listen $1")
    reply = p.obj(x0 + 100, y0 + 280, "oscformat -f i distill reply")
    ns = p.obj(x0 + 50, y0 + 310, "oscformat distill namespace")
    dump = p.obj(x0, y0 + 340, "oscformat distill dump")
    osc_r = p.obj(x0, y0 + 380, "r distill-osc")
    prep = p.obj(x0, y0 + 405, "list prepend send")
    trim = p.obj(x0, y0 + 430, "list trim")
    netsend = p.obj(x0, y0 + 455, "netsend -u -b")
    netrecv = p.obj(x0 + 200, y0 + 455, "netreceive -u -b")
    sends = [p.obj(x0 + 100 + 60 * i, y0 + 370 - 30 * i, "s distill-osc") for i in range(3)]
    p.chain(lb, tb)
    p.wire(tb, port, 1)
    p.chain(port, pmoses)
    p.wire(pmoses, psel, 1)
    p.wire(psel, pdef, 0)
    p.wire(psel, pcon, 1)
    p.chain(pdef, pcon)
    p.chain(pcon, conmsg)
    p.chain(rcon, p.obj(x0 + 250, y0 + 190 - 5, "list"), conmsg)
    p.chain(conmsg, netsend)
    p.wire(tb, rport, 0)
    p.chain(rport, rmoses)
    p.wire(rmoses, rsel, 1)
    p.wire(rsel, rdef, 0)
    p.wire(rsel, rtrig, 1)
    p.chain(rdef, rtrig)
    p.chain(rlisten, rtrig)
    # right to left: listen on the port, tell the engine to reply there, ask for namespace and values
    p.wire(rtrig, listen, 3)
    p.chain(listen, netrecv)
    p.wire(rtrig, reply, 2)
    p.wire(rtrig, ns, 1)
    p.wire(rtrig, dump, 0)
    for src, s in zip((reply, ns, dump), sends):
        p.chain(src, s)
    p.chain(osc_r, prep, trim, netsend)

    # -- replies -------------------------------------------------------------------------------
    y1 = y0 + 500
    parse = p.obj(x0 + 200, y1, "oscparse")
    ptrim = p.obj(x0 + 200, y1 + 25, "list trim")
    rdist = p.obj(x0 + 200, y1 + 50, "route distill")
    rkind = p.obj(x0 + 200, y1 + 75, "route state meter error namespace dump")
    p.chain(netrecv, parse, ptrim, rdist, rkind)
    pstate = p.obj(x0, y1 + 110, "print distill-state")
    perr = p.obj(x0 + 250, y1 + 110, "print distill-error")
    sstate = p.obj(x0 + 100, y1 + 140, "s distill-state")
    smeter = p.msg(x0 + 130, y1 + 110, "; distill-meter set $1")
    p.wire(rkind, pstate, 0)
    p.wire(rkind, sstate, 0)
    p.wire(rkind, smeter, 1)
    p.wire(rkind, perr, 2)
    nsroute = p.obj(x0 + 300, y1 + 140, "route end")
    pns = p.obj(x0 + 300, y1 + 170, "print distill-namespace-end")
    snsrow = p.obj(x0 + 380, y1 + 170, "s distill-ns-row")
    snsend = p.obj(x0 + 300, y1 + 200, "s distill-ns-end")
    p.wire(rkind, nsroute, 3)
    p.wire(nsroute, pns, 0)
    p.wire(nsroute, snsend, 0)
    p.wire(nsroute, snsrow, 1)
    droute = p.obj(x0 + 420, y1 + 110, "route end")
    pdump = p.obj(x0 + 420, y1 + 140, "print distill-dump-end")
    p.wire(rkind, droute, 4)
    p.wire(droute, pdump, 0)

    # state -> GUI, with "set" so nothing is sent back
    y2 = y1 + 240
    fixed = names("play", "gain", "temperature", "topk", "topp", "guidance", "cue", "freeze", "loop", "levels", "lock",
                  "mutate", "seed", "corpus/mix", "corpus/stick", "corpus/fade", *REGION)
    rstate = p.obj(x0 - 690, y2, "r distill-state")
    routed = fixed + [f"descriptor/{d}" for d in DESCRIPTORS] + [f"descriptor/{d}/free" for d in DESCRIPTORS]
    # states with no slider (the worlds of /mix come as world states; a preset's controls come one by one)
    ignored = names("reset", "model", "mix", "preset/save", "preset/recall")
    route = p.obj(x0 - 690, y2 + 25, "route " + " ".join(f"/distill/{n}" for n in routed + ignored))
    p.chain(rstate, route)
    for i, n in enumerate(routed):
        x, y = x0 - 690 + (i % 8) * 170, y2 + 60 + (i // 8) * 30
        if n.endswith("/free"):
            m = p.msg(x, y, f"; distill-{n.split('/')[1]}-hold set 0")
        elif n.startswith("descriptor/"):
            d = n.split("/")[1]
            m = p.msg(x, y, f"; distill-{d} set $1; distill-{d}-hold set 1")
        else:
            m = p.msg(x, y, f"; distill-{n.replace('/', '-')} set $1")
        p.wire(route, m, i)
    sworld = p.obj(x0 - 690, y2 + 160, "s distill-world-state")  # the rest: worlds
    p.wire(route, sworld, len(routed) + len(ignored))

    # -- controls ------------------------------------------------------------------------------
    def control(x, y, name, gui, fmt="", address=None, recv=True):
        """GUI -> oscformat -> [s distill-osc], and [r distill-NAME] -> GUI."""
        if recv:
            r = p.obj(x, y, f"r distill-{name}")
            p.chain(r, gui)
        f = p.obj(x + 10, y + 55, f"oscformat {fmt + ' ' if fmt else ''}distill {address or name}")
        s = p.obj(x + 10, y + 80, "s distill-osc")
        p.chain(gui, f, s)
        return f

    cx, cy = 10, 60
    p.text(cx, cy, "controls (each also listens on [r distill-NAME])")
    cy += 25
    play = p.tgl(cx, cy + 25, "play")
    control(cx, cy, "play", play, "-f i")
    freeze = p.tgl(cx + 110, cy + 25, "freeze")
    control(cx + 110, cy, "freeze", freeze, "-f i")
    reset = p.bng(cx + 220, cy + 25, "reset")
    control(cx + 220, cy, "reset", reset)
    dumpb = p.bng(cx + 330, cy + 25, "dump")
    control(cx + 330, cy, "dump", dumpb)
    meter = p.hsl(cx + 440, cy + 25, 0, 1, "meter")
    p.chain(p.obj(cx + 440, cy, "r distill-meter"), meter)

    cy += 120
    for i, (name, (lo, hi)) in enumerate((n, span(n)) for n in names("gain", "temperature", "topp", "guidance",
                                                                        "mutate")):
        x = cx + 170 * (i % 4)
        y = cy + 120 * (i // 4)
        control(x, y, name, p.hsl(x, y + 25, lo, hi, name))
    cy += 240
    for i, name in enumerate(names("topk", "loop", "levels", "lock", "seed")):
        x = cx + 110 * i
        control(x, cy, name, p.atom(x, cy + 25, 6, name), "-f i")
    # cue with a crossfade: [pack f 0.1], the fade atom sets the right inlet
    x = cx + 560
    fade = p.atom(x + 80, cy + 25, 4, "fade")
    p.chain(p.obj(x + 80, cy, "r distill-fade"), fade)
    cue = p.atom(x, cy + 25, 4, "cue")
    p.chain(p.obj(x, cy, "r distill-cue"), cue)
    pk = p.obj(x, cy + 55, "pack f 0.1")
    p.chain(cue, pk)
    p.wire(fade, pk, 0, 1)
    f = p.obj(x, cy + 80, "oscformat -f if distill cue")
    p.chain(pk, f, p.obj(x, cy + 105, "s distill-osc"))

    # the code grid's region: its span (start < 0 counts back from now), its levels, and the mode that holds it
    cy += 140
    for i, (name, (lo, hi)) in enumerate((n, span(n)) for n in names(*REGION)):
        x, label = cx + 110 * i, name.replace("/", "-")
        control(x, cy, label, p.atom(x, cy + 25, 6, label, lo, hi), "-f i", address=name.replace("/", " "))
    p.text(cx + 560, cy + 25, "mode: 0 free, 1 lock, 2 loop, 3 mutate")

    # descriptors: a slider holds the target; the toggle holds (1) or frees (0)
    cy += 140
    for i, d in enumerate(DESCRIPTORS):
        x = cx + 220 * i
        r = p.obj(x, cy, f"r distill-{d}")
        sl = p.hsl(x, cy + 25, 0, 1, d)
        rh = p.obj(x + 150, cy + 50, f"r distill-{d}-hold")
        hold = p.tgl(x + 150, cy + 75, "hold")
        t = p.obj(x, cy + 50, "t f f")
        sethold = p.msg(x + 50, cy + 75, "set 1")
        store = p.obj(x + 20, cy + 130, "f 0.5")
        sel = p.obj(x + 150, cy + 100, "sel 0")
        tbang = p.obj(x + 190, cy + 125, "t b")
        fmt = p.obj(x, cy + 160, f"oscformat distill descriptor {d}")
        free = p.obj(x + 120, cy + 160, f"oscformat distill descriptor {d} free")
        s1 = p.obj(x, cy + 185, "s distill-osc")
        s2 = p.obj(x + 120, cy + 185, "s distill-osc")
        p.chain(r, sl, t)
        p.wire(t, sethold, 1)
        p.chain(sethold, hold)
        p.wire(t, store, 0, 1)
        p.wire(t, fmt, 0)
        p.chain(rh, hold, sel)
        p.wire(sel, free, 0)
        p.wire(sel, tbang, 1)
        p.chain(tbang, store, fmt, s1)
        p.chain(free, s2)

    # corpus playback: from the neural decoder (0) to the training recordings the codes point at (1)
    cy += 230
    for i, (name, (lo, hi)) in enumerate((n, span(n)) for n in names("corpus/mix", "corpus/stick", "corpus/fade")):
        x, label = cx + 170 * i, name.replace("/", "-")
        control(x, cy, label, p.hsl(x, cy + 25, lo, hi, label), address=name.replace("/", " "))
    # presets: a number, then save the controls there or recall them (crossfading for "fade" seconds)
    x = cx + 560
    lo, hi = span("preset/recall")
    number = p.atom(x, cy + 25, 4, "preset", lo, hi)
    p.chain(p.obj(x, cy, "r distill-preset"), number)
    fade = p.atom(x + 100, cy + 25, 4, "fade")
    p.chain(p.obj(x + 100, cy, "r distill-preset-fade"), fade)
    save, recall = p.bng(x, cy + 55, "save"), p.bng(x + 100, cy + 55, "recall")
    p.chain(p.obj(x + 200, cy, "r distill-preset-save"), save)
    p.chain(p.obj(x + 200, cy + 25, "r distill-preset-recall"), recall)
    save_n, recall_n = p.obj(x, cy + 85, "f"), p.obj(x + 100, cy + 85, "f")
    p.wire(number, save_n, 0, 1)
    p.wire(number, recall_n, 0, 1)
    pk = p.obj(x + 100, cy + 110, "pack f 0.1")
    p.wire(fade, pk, 0, 1)
    p.chain(save, save_n, p.obj(x, cy + 135, "oscformat -f i distill preset save"), p.obj(x, cy + 160, "s distill-osc"))
    p.chain(recall, recall_n, pk, p.obj(x + 100, cy + 185, "oscformat -f if distill preset recall"),
            p.obj(x + 100, cy + 210, "s distill-osc"))

    # world mixer: 8 sliders, named from the /distill/namespace rows in manifest order
    cy += 250
    p.text(cx, cy, "worlds: slots are named from /distill/namespace (a slot stays silent until named)")
    cy += 25
    rrow = p.obj(cx, cy, "r distill-ns-row")
    split1 = p.obj(cx, cy + 25, "list split 1")
    fromsym = p.obj(cx, cy + 50, "list fromsymbol")
    split15 = p.obj(cx, cy + 75, "list split 15")
    head = p.obj(cx, cy + 100, "list tosymbol")
    isworld = p.obj(cx, cy + 125, "sel /distill/world/")
    rest = p.obj(cx + 130, cy + 100, "list tosymbol")
    name = p.obj(cx + 130, cy + 150, "symbol")
    tname = p.obj(cx + 130, cy + 175, "t b s")
    counter = p.obj(cx, cy + 200, "f 0")
    plus = p.obj(cx + 50, cy + 200, "+ 1")
    pk = p.obj(cx, cy + 225, "pack f s")
    rend = p.obj(cx + 240, cy + 150, "r distill-ns-end")
    zero = p.msg(cx + 240, cy + 175, "0")
    slots = p.obj(cx, cy + 250, "route " + " ".join(str(i) for i in range(WORLD_SLOTS)))
    p.chain(rrow, split1, fromsym, split15, head, isworld, name)
    p.wire(split15, rest, 1)
    p.wire(rest, name, 0, 1)
    p.chain(name, tname)
    p.wire(tname, pk, 1, 1)
    p.wire(tname, counter, 0)
    p.chain(counter, plus)
    p.wire(plus, counter, 0, 1)
    p.chain(counter, pk, slots)
    p.chain(rend, zero)
    p.wire(zero, counter, 0, 1)
    for i in range(WORLD_SLOTS):
        x, y = cx + 170 * (i % 4), cy + 290 + 210 * (i // 4)
        sym = p.obj(x, y - 25, "symbol")  # [route] hands on "bells" as a selector; make it a symbol
        t = p.obj(x, y, "t s s s")
        label = p.msg(x + 90, y + 25, "label $1")
        setaddr = p.msg(x, y + 150, "set distill world $1")
        mk = p.obj(x + 30, y + 175, "makefilename /distill/world/%s")
        one = p.msg(x + 60, y + 50, "1")
        r = p.obj(x, y + 50, f"r distill-world-{i}")
        sl = p.hsl(x, y + 75, 0, 1, f"world-{i}")
        gate = p.obj(x, y + 100, "spigot")
        f = p.obj(x, y + 125, "oscformat distill world unnamed")
        s = p.obj(x + 100, y + 125, "s distill-osc")
        rs = p.obj(x + 60, y - 50, "r distill-world-state")
        sp = p.obj(x + 60, y + 200, "list split 1")
        match = p.obj(x + 30, y + 225, "sel none")
        val = p.obj(x + 30, y + 250, "f")
        setv = p.msg(x + 30, y + 275, "set $1")
        p.wire(slots, sym, i)
        p.chain(sym, t)
        p.wire(t, one, 2)
        p.wire(one, gate, 0, 1)
        p.wire(t, label, 1)
        p.wire(label, sl)
        p.wire(t, setaddr, 0)
        p.wire(setaddr, f)
        p.wire(t, mk, 0)
        p.wire(mk, match, 0, 1)
        p.chain(r, sl, gate, f, s)
        p.chain(rs, sp)
        p.wire(sp, val_in := p.obj(x + 120, y + 225, "list trim"), 1)
        p.wire(val_in, val, 0, 1)
        p.wire(sp, match, 0)
        p.chain(match, val, setv, sl)
    return p.text_out()


def driver_patch() -> str:
    """Headless test: pd -nogui -noaudio -send "distill-test PORT REPLYPORT" -open test-driver.pd"""
    p = Patch(700, 560)
    p.text(10, 5, "test driver: pd -nogui -noaudio -nomidi -send \"distill-test PORT REPLYPORT\" -open "
                  "test-driver.pd. It loads [distill -1 -1] (no connection at load) and on distill-test "
                  "connects to 127.0.0.1:PORT and listens on REPLYPORT, moves every control, saves and recalls "
                  "a preset, asks for a dump and quits. A watchdog quits after 20 s.")
    p.obj(10, 80, "distill -1 -1")
    r = p.obj(10, 110, "r distill-test")
    t = p.obj(10, 135, "t b l")
    con = p.msg(60, 165, "; distill-connect 127.0.0.1 $1; distill-listen $2")
    p.chain(r, t)
    p.wire(t, con, 1)
    d1 = p.obj(10, 220, "delay 500")
    step1 = p.msg(10, 250, "; distill-play 1; distill-gain 0.625; distill-temperature 0.75; distill-topk 9; "
                           "distill-topp 0.6875; distill-guidance 2.5; distill-world-0 0.5; distill-world-1 0.25; "
                           "distill-brightness 0.25; distill-noisiness 0.5; distill-noisiness-hold 0; "
                           "distill-fade 0.2; distill-cue 2; distill-freeze 1; distill-loop 24; distill-levels 2; "
                           "distill-lock 1; distill-mutate 0.125; distill-seed 99; distill-reset bang")
    d2 = p.obj(10, 330, "delay 500")
    step2 = p.msg(10, 355, "; distill-freeze 0; distill-preset 5; distill-preset-save bang")
    d3 = p.obj(10, 385, "delay 300")
    # recall what step 2 saved, at once: every control stays where it is (nothing follows the recall, as
    # the engine sets a preset's controls a chunk later than the messages beside it)
    step3 = p.msg(10, 410, "; distill-preset-fade 0; distill-preset-recall bang")
    d4 = p.obj(10, 435, "delay 300")
    step4 = p.msg(10, 460, "; distill-dump bang")
    d5 = p.obj(10, 485, "delay 700")
    quit_ = p.msg(10, 510, "; pd quit")
    p.chain(t, d1, step1)
    p.chain(d1, d2, step2)
    p.chain(d2, d3, step3)
    p.chain(d3, d4, step4)
    p.chain(d4, d5, quit_)
    lb = p.obj(400, 330, "loadbang")
    dog = p.obj(400, 355, "delay 20000")
    pdog = p.msg(400, 385, "; pd quit")
    warn = p.obj(500, 385, "print distill-test-watchdog")
    p.chain(lb, dog, pdog)
    p.wire(dog, warn)
    return p.text_out()


def help_patch() -> str:
    """distill-help.pd: what Pd opens on right-click > Help of a [distill] box."""
    p = Patch(760, 600)
    p.text(10, 5, "[distill PORT REPLYPORT]: play a running `distill-live serve` from Pd. It sends OSC to "
                  "127.0.0.1:PORT (default 9000) and listens for replies on REPLYPORT (default 9002). "
                  "-1 -1 (as here) connects only when told to: click the message below once the engine runs. "
                  "Open the box to see its sliders; they follow every change, also from MIDI or another patch.")
    p.obj(10, 90, "distill -1 -1")
    p.msg(10, 130, "; distill-connect 127.0.0.1 9000; distill-listen 9002")
    p.text(420, 130, "<- connect (the engine's OSC port, the port for its replies)")
    p.text(10, 190, "Every control listens on [r distill-NAME]: send to it from anywhere")
    for i, text in enumerate(["; distill-play 1", "; distill-play 0", "; distill-gain 0.5", "; distill-cue 2",
                              "; distill-world-0 1", "; distill-brightness 0.8", "; distill-brightness-hold 0",
                              "; distill-freeze 1", "; distill-freeze 0", "; distill-reset bang"]):
        p.msg(10 + 180 * (i % 4), 220 + 35 * (i // 4), text)
    p.msg(10, 325, "; distill-preset 3; distill-preset-save bang")
    p.msg(370, 325, "; distill-preset 3; distill-preset-fade 2; distill-preset-recall bang")
    p.text(10, 380, "Replies: [r distill-state] gives each change as /distill/NAME VALUE")
    p.chain(p.obj(10, 410, "r distill-state"), p.obj(10, 440, "print distill-state"))
    p.text(10, 490, "The world slots (distill-world-0 ...) take the model's world names, in its order, from "
                    "/distill/namespace. The OSC table: python -m distill_live.control.osc")
    return p.text_out()


def files() -> dict[str, str]:
    return {f"{FOLDER}/distill.pd": control_patch(), f"{FOLDER}/distill-help.pd": help_patch(),
            f"{FOLDER}/test-driver.pd": driver_patch()}


if __name__ == "__main__":
    write(PATCHES if len(sys.argv) < 2 else Path(sys.argv[1]), files())

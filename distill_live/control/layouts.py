"""Control-surface layouts from the parameter registry: an Open Stage Control session and a TouchOSC
layout, a widget per control with the registry's address, type and range.

    on/off (play, freeze)        a toggle: 1 on, 0 off
    trigger (reset, .../free)    a button that sends 1 when pressed (nothing on release)
    number (gain, topk, cue...)  a fader over the registry's range (whole numbers for int controls)
    region/start                 a fader over its negative part: frames back from now (a frame number
                                 cannot be set by hand)

Controls a fader cannot play are left out: a file name (model), all worlds at once (mix: each world
has its own fader), ranges too wide to set by hand (seed) and saving a preset (a fader dragged
across would overwrite every preset it passed; save from the web page, OSC or a MIDI map). World faders are named after the
model's worlds, so a layout belongs to a model: `distill-live patches DIR --model my.distill` writes
them for yours. Both programs move a fader when its own address comes back, so the layouts follow
the engine once it echoes changes on their addresses.
"""
from __future__ import annotations

import json
import uuid
import zlib
from xml.sax.saxutils import escape

from .params import PREFIX, Param, ParamRegistry

SAVE = f"{PREFIX}/preset/save"
WIDEST = 65536  # a fader wider than this many steps cannot be set by hand
COLUMNS = 12


def widgets(registry: ParamRegistry) -> list[tuple[str, Param]]:
    """(kind, param) for each control on a layout, in the registry's order: kind is toggle, button or fader.
    The corpus controls only for a model that holds its recordings (the engine refuses them otherwise)."""
    out = []
    for p in registry.params.values():
        if not registry.playable(p):
            continue
        if p.types == "b":
            out.append(("toggle", p))
        elif p.types == "":
            out.append(("button", p))
        elif p.types in ("f", "i", "i,f?") and fader_range(p)[1] - fader_range(p)[0] <= WIDEST and p.address != SAVE:
            out.append(("fader", p))
    return out


def fader_range(p: Param) -> tuple[float, float]:
    """What a fader spans: the registry's range, but only the negative part of a whole number that counts
    back from now below 0 and is a far too wide frame number above (region/start)."""
    lo, hi = p.range
    return (lo, -1.0) if integer(p) and lo < 0 and hi - lo > WIDEST else (lo, hi)


def integer(p: Param) -> bool:
    return p.types.startswith("i")


def grid(i: int, cell_w: int, cell_h: int) -> tuple[int, int]:
    return 10 + (i % COLUMNS) * cell_w, 10 + (i // COLUMNS) * cell_h


# -- Open Stage Control ----------------------------------------------------------------------------


def open_stage_control(registry: ParamRegistry) -> str:
    """A session file (File > Open in Open Stage Control, or --load FILE)."""
    items = []
    for i, (kind, p) in enumerate(widgets(registry)):
        left, top = grid(i, 90, 330)
        w = {"type": "fader" if kind == "fader" else "button", "id": p.name.replace("/", "_"),
             "label": p.name.replace("descriptor/", ""),
             "left": left, "top": top, "width": 80, "height": 80 if kind != "fader" else 300,
             "address": p.address, "preArgs": [], "target": [], "comments": p.description}
        if kind == "fader":
            lo, hi = fader_range(p)
            w.update(range={"min": lo, "max": hi}, default=p.default if p.default is not None else lo,
                     typeTags="i" if integer(p) else "f", decimals=0 if integer(p) else 2,
                     steps=int(hi - lo) + 1 if integer(p) else "", doubleTap=True)
        else:  # a toggle sends 1 and 0; a button (tap) sends 1 when pressed, nothing on release
            w.update(mode="toggle" if kind == "toggle" else "tap", on=1, off=0, typeTags="i")
        items.append(w)
    session = {"createdWith": "Open Stage Control", "version": "1.26.2", "type": "session",
               "content": {"type": "root", "id": "root", "label": "distill", "widgets": items, "tabs": []}}
    return json.dumps(session, indent=1) + "\n"


# -- TouchOSC (.tosc: zlib-compressed XML) ---------------------------------------------------------


def _prop(kind: str, key: str, value: str) -> str:
    return f"<property type='{kind}'><key><![CDATA[{key}]]></key><value>{value}</value></property>"


def _frame(x: int, y: int, w: int, h: int) -> str:
    return _prop("r", "frame", f"<x>{x}</x><y>{y}</y><w>{w}</w><h>{h}</h>")


def _value(key: str, default: str) -> str:
    return (f"<value><key><![CDATA[{key}]]></key><locked>0</locked><lockedDefaultCurrent>0</lockedDefaultCurrent>"
            f"<default><![CDATA[{default}]]></default><defaultPull>0</defaultPull></value>")


def _node(kind: str, name: str, props: list[str], values: str = "", messages: str = "", children: str = "") -> str:
    props = [_prop("s", "name", f"<![CDATA[{escape(name)}]]>")] + props
    return (f"<node ID='{uuid.uuid5(uuid.NAMESPACE_URL, 'distill/' + kind + '/' + name)}' type='{kind}'>"
            f"<properties>{''.join(props)}</properties><values>{values}</values>"
            f"<messages>{messages}</messages><children>{children}</children></node>")


def _osc(address: str, conversion: str, lo: float, hi: float, condition: str) -> str:
    """Send `address` with the control's x scaled to lo..hi, when x changes (ANY) or rises (RISE)."""
    return ("<osc><enabled>1</enabled><send>1</send><receive>1</receive><feedback>0</feedback>"
            "<connections>1111111111</connections>"
            f"<triggers><trigger><var><![CDATA[x]]></var><condition>{condition}</condition></trigger></triggers>"
            "<path><partial><type>CONSTANT</type><conversion>STRING</conversion>"
            f"<value><![CDATA[{address}]]></value><scaleMin>0</scaleMin><scaleMax>1</scaleMax></partial></path>"
            f"<arguments><partial><type>VALUE</type><conversion>{conversion}</conversion><value><![CDATA[x]]></value>"
            f"<scaleMin>{lo:g}</scaleMin><scaleMax>{hi:g}</scaleMax></partial></arguments></osc>")


def touchosc_xml(registry: ParamRegistry) -> str:
    colour = _prop("c", "color", "<r>0.25</r><g>0.75</g><b>1</b><a>1</a>")
    children = []
    for i, (kind, p) in enumerate(widgets(registry)):
        x, y = grid(i, 84, 370)
        label = p.name.replace("descriptor/", "")
        children.append(_node("LABEL", f"{label} label", [_frame(x, y, 80, 30), colour, _prop("i", "textSize", "12"),
                                                          _prop("s", "text", f"<![CDATA[{escape(label)}]]>")]))
        if kind == "fader":
            lo, hi = fader_range(p)
            default = ((p.default if p.default is not None else lo) - lo) / ((hi - lo) or 1)
            children.append(_node("FADER", p.name, [_frame(x, y + 35, 80, 300), colour,
                                                   _prop("b", "centered", "0"), _prop("i", "cursorDisplay", "1")],
                                  _value("x", f"{default:g}") + _value("touch", "false"),
                                  _osc(p.address, "INTEGER" if integer(p) else "FLOAT", lo, hi, "ANY")))
        else:  # buttonType 1: toggle on release; 0: momentary, sending 1 as it rises
            toggle = kind == "toggle"
            children.append(_node("BUTTON", p.name, [_frame(x, y + 35, 80, 80), colour,
                                                    _prop("i", "buttonType", "1" if toggle else "0")],
                                  _value("x", "0") + _value("touch", "false"),
                                  _osc(p.address, "INTEGER", 0, 1, "ANY" if toggle else "RISE")))
    rows = (len(widgets(registry)) + COLUMNS - 1) // COLUMNS
    root = _node("GROUP", "distill", [_frame(0, 0, 20 + 84 * COLUMNS, 20 + 370 * rows),
                                      _prop("b", "background", "1")],
                 _value("touch", "false"), "", "".join(children))
    return f"<?xml version='1.0' encoding='UTF-8'?><lexml version='3'>{root}</lexml>"


def touchosc(registry: ParamRegistry) -> bytes:
    """A .tosc file (open it in the TouchOSC editor)."""
    return zlib.compress(touchosc_xml(registry).encode("utf-8"), 9)

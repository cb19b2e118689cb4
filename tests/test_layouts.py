"""The TouchOSC and Open Stage Control layouts (distill_live/control/layouts.py, shipped for the demo in
distill_live/patches/layouts/): every widget sends an address of the parameter registry, with the
registry's range and type, every control a fader can play has a widget, and what each widget sends
plays on a running `distill-live serve` without an error.

Neither program runs here (TouchOSC is a desktop and phone app; Open Stage Control ships as an
Electron app from its own site, not from the npm registry), so the engine test plays each widget's
messages as the program would send them, from python-osc over UDP.
"""
from __future__ import annotations

import dataclasses
import json
import struct
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest

from distill_live.commands.bundled import DEMO
from distill_live.control.layouts import fader_range, open_stage_control, touchosc, widgets
from distill_live.control.params import ParamRegistry
from distill_live.model.modelfile import load_model
from models import WORLDS, random_model_file
from oscpeers import Serve

LAYOUTS = Path(__file__).resolve().parent.parent / "distill_live" / "patches" / "layouts"


def open_stage_control_sends(path: Path) -> list[dict]:
    """What each widget of an Open Stage Control session sends: address, type, lo, hi, kind."""
    out = []
    for w in json.loads(path.read_text())["content"]["widgets"]:
        if w["type"] == "fader":
            out.append({"address": w["address"], "type": w["typeTags"], "lo": w["range"]["min"],
                        "hi": w["range"]["max"], "kind": "fader"})
        else:
            assert w["type"] == "button" and w["on"] == 1 and w["off"] == 0, w
            out.append({"address": w["address"], "type": w["typeTags"], "lo": 0, "hi": 1, "kind": w["mode"]})
    return out


def touchosc_sends(path: Path) -> list[dict]:
    """The same for a .tosc file (zlib-compressed XML): each node's OSC message, its scale and trigger."""
    root = ET.fromstring(zlib.decompress(path.read_bytes()))
    assert root.tag == "lexml" and root.get("version") == "3"
    out = []
    for node in root.iter("node"):
        osc = node.find("messages/osc")
        if osc is None:
            continue
        address = osc.findtext("path/partial/value")
        arg = osc.find("arguments/partial")
        kinds = {("FADER", "ANY"): "fader", ("BUTTON", "ANY"): "toggle", ("BUTTON", "RISE"): "tap"}
        kind = kinds[node.get("type"), osc.findtext("triggers/trigger/condition")]
        out.append({"address": address, "type": {"FLOAT": "f", "INTEGER": "i"}[arg.findtext("conversion")],
                    "lo": float(arg.findtext("scaleMin")), "hi": float(arg.findtext("scaleMax")), "kind": kind})
    return out


def check_against(registry: ParamRegistry, sends: list[dict], name: str) -> None:
    for s in sends:
        p = registry.params.get(s["address"])
        assert p is not None, f"{name}: {s['address']} is not in the parameter registry"
        if s["kind"] == "fader":
            assert (s["lo"], s["hi"]) == fader_range(p), \
                f"{name}: {s['address']} spans {s['lo']}..{s['hi']}, not {fader_range(p)}"
            assert s["type"] == ("i" if p.types.startswith("i") else "f"), (name, s, p.types)
        else:
            assert p.types == ("b" if s["kind"] == "toggle" else ""), (name, s, p.types)
    wanted = {p.address for _, p in widgets(registry)}
    assert {s["address"] for s in sends} == wanted, (name, wanted ^ {s["address"] for s in sends})
    # all a fader cannot play: a file name, all worlds at once, the seed, saving a preset (a fader dragged
    # across would overwrite each preset it passed); and the recordings a model lacks
    lacking = set() if registry.corpus else {a for a in registry.params if a.startswith("/distill/corpus/")}
    assert set(registry.params) - wanted == {"/distill/model", "/distill/mix", "/distill/seed",
                                             "/distill/preset/save"} | lacking, name


@pytest.mark.parametrize("name, read", [("distill-open-stage-control.json", open_stage_control_sends),
                                        ("distill.tosc", touchosc_sends)])
def test_the_shipped_layouts_send_the_demos_registry_addresses_with_its_ranges(name, read):
    registry = ParamRegistry.for_model(load_model(DEMO))
    check_against(registry, read(LAYOUTS / name), name)
    assert {s["address"] for s in read(LAYOUTS / name)} >= {f"/distill/world/{w}" for w in registry.worlds}
    # the region's start by hand: frames back from now, not the frame numbers above them
    assert [(s["lo"], s["hi"]) for s in read(LAYOUTS / name) if s["address"] == "/distill/region/start"] == [(-256, -1)]


def test_a_control_given_another_range_changes_the_layouts_too():
    registry = ParamRegistry(WORLDS, levels=4, codebook_size=64, cues=3)
    registry.params["/distill/gain"] = dataclasses.replace(registry.params["/distill/gain"], hi=3.0)
    gain = [s for s in json.loads(open_stage_control(registry))["content"]["widgets"] if s["id"] == "gain"]
    assert gain[0]["range"] == {"min": 0.0, "max": 3.0}
    assert b"<scaleMin>0</scaleMin><scaleMax>3</scaleMax>" in zlib.decompress(touchosc(registry))


@pytest.mark.slow  # runs distill-live patches and serve
def test_every_widget_of_the_layouts_made_for_a_model_plays_on_serve(tmp_path):
    """`distill-live patches DIR --model M` makes the layouts for M's worlds; a running serve of M takes
    everything their widgets send (each fader at both ends, each button as it is pressed and released)."""
    model = random_model_file(tmp_path / "m.distill")
    r = subprocess.run([sys.executable, "-m", "distill_live", "patches", str(tmp_path / "mine"), "--model", str(model)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    registry = ParamRegistry.for_model(load_model(model))
    sends = {"Open Stage Control": open_stage_control_sends(tmp_path / "mine/layouts/distill-open-stage-control.json"),
             "TouchOSC": touchosc_sends(tmp_path / "mine/layouts/distill.tosc")}
    for name, messages in sends.items():
        check_against(registry, messages, name)
    engine = Serve(model, tmp_path / "take.wav")
    try:
        for name, messages in sends.items():
            # buttons first (a descriptor's free button would free the fader's hold), then faders and toggles
            for s in sorted(messages, key=lambda s: s["kind"] != "tap"):
                if s["address"] == "/distill/preset/recall":
                    # the presets its ends reach, saved from what the widgets so far set, as a performer would
                    # (saving has no widget: a dragged fader would overwrite every preset it passed)
                    for n in (s["lo"], s["hi"]):
                        engine.client.send_message("/distill/preset/save", int(n))
                values = [s["lo"], s["hi"]] if s["kind"] in ("fader", "toggle") else [1]
                for v in values:
                    engine.client.send_message(s["address"], int(v) if s["type"] == "i" else float(v))
            time.sleep(0.5)
            state = engine.state()
            assert engine.errors() == [], (name, engine.errors())
            for s in messages:  # each fader and toggle ends at its top, as the registry holds it
                if s["kind"] in ("fader", "toggle") and registry.params[s["address"]].stored:
                    assert state[s["address"]] == [pytest.approx(s["hi"])], (name, s, state.get(s["address"]))
    finally:
        engine.close()


def test_a_fader_at_the_end_of_its_range_sent_as_a_32_bit_float_plays_without_a_note():
    """OSC floats are 32-bit: a fader at topp's bottom, 0.01, arrives as 0.0099999998. That is the end of
    the range, not a value past it, so the engine takes it without an 'out of range' error."""
    registry = ParamRegistry(WORLDS, levels=4, codebook_size=64, cues=3)
    bottom = struct.unpack("f", struct.pack("f", 0.01))[0]
    assert bottom < 0.01
    assert registry.validate("/distill/topp", [bottom]) == ((0.01,), [])
    assert registry.validate("/distill/topp", [0.009])[1], "a value truly past the end still gets its note"

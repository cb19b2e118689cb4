"""Adding a control is one entry in the parameter registry (`params.build_params`). This test adds one
there, and nowhere else, and finds it on every surface: reachable over OSC, listed by OSCQuery and
/distill/namespace, accepted by the MIDI map checker and played by the mapper, in the README's table,
and seen by what reads it, the player through the registry and the prior through `Controls`.

A control the prior reads needs one thing more, the field of `Controls` the prior reads it from
(model/prior.py): the registry fills every field from the control of the same name, with no mapping
in between. The test adds that field by subclassing."""
from __future__ import annotations

import dataclasses

import mido
import pytest
from pythonosc.udp_client import SimpleUDPClient

from distill_live.control import params
from distill_live.control.midi.mapfile import parse_map
from distill_live.control.midi.mapper import Mapper
from distill_live.control.osc.namespace import NAMESPACE, markdown_table, namespace_messages
from distill_live.control.osc.oscquery import find, tree
from distill_live.control.osc.server import OscServer
from distill_live.live.engine import Engine
from distill_live.model.prior import Controls
from models import random_model
from oscpeers import wait_for

DRIVE = params.Param("drive", "f", 0.25, "how hard the prior is pushed (a control this test adds)", 0.0, 1.0)


@dataclasses.dataclass
class DriveControls(Controls):
    drive: float = 0.0  # what the prior would read


@pytest.fixture
def drive(monkeypatch) -> None:
    build = params.build_params
    monkeypatch.setattr(params, "build_params", lambda *args, **kw: build(*args, **kw) + [DRIVE])
    monkeypatch.setattr(params, "Controls", DriveControls)


def test_a_control_added_to_the_registry_reaches_every_surface(drive):
    model = random_model()
    engine = Engine(model)
    registry = engine.registry
    address = "/distill/drive"

    assert f"| `{address}` | f | 0..1 | 0.25 | {DRIVE.description} |" in markdown_table()
    assert (NAMESPACE, (address, "f", 0.0, 1.0, 0.25, DRIVE.description)) in namespace_messages(registry)
    node = find(tree(registry), address)
    assert node["TYPE"] == "f" and node["RANGE"] == [{"MIN": 0.0, "MAX": 1.0}] and node["VALUE"] == [0.25]

    midimap = parse_map('[[cc]]\ncc = 7\nparam = "drive"\n', registry)
    assert Mapper(midimap, registry).handle(mido.Message("control_change", control=7, value=127), 0.0) == \
        [(address, (1.0,), None)]

    seen = []  # what the prior is given at each step
    step = model.prior.step
    model.prior.step = lambda state, controls, *given: (seen.append(controls), step(state, controls, *given))[1]
    server = OscServer(engine, port=0, meters=False)
    try:
        client = SimpleUDPClient("127.0.0.1", server.port)
        client.send_message("/distill/play", 1)
        client.send_message(address, 0.75)

        def applied() -> bool:
            engine.generate_one()  # the generator's work, without its thread
            return registry.get("drive") == 0.75 and seen and seen[-1].drive == 0.75

        wait_for(applied, 10, "the player and the prior to see /distill/drive 0.75")
    finally:
        server.close()

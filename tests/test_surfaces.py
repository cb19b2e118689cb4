"""Two-way control surfaces against a running engine: feedback on each control's own address (what
TouchOSC and Open Stage Control move faders with), buttons that fire on press only, any number of
subscribed clients with a lease, OSCQuery's LISTEN over a real WebSocket client (the `websockets`
package), and presets saved, recalled with a crossfade and refused when damaged. Real UDP from
python-osc and liblo (oscsend, oscdump); the engine plays into the paced stand-in card (cards.py)."""
from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import threading
import time
import tomllib
import urllib.error
import urllib.request

import pytest
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from distill_live.cli import main
from distill_live.control.osc.oscquery import OscQueryServer
from distill_live.control.osc.server import MAX_SUBSCRIBERS, OscServer
from distill_live.control.params import ParamRegistry
from distill_live.control.presets import PresetFileError, Presets, presets_path, take_snapshot
from distill_live.control.score import parse_score
from distill_live.live.engine import PRESET_WRITES, Engine
from cards import PacedCard, paced_engine
from models import random_model, random_model_file
from oscpeers import Listener, wait_for

P = "/distill"


def message(address: str, *args) -> bytes:
    b = OscMessageBuilder(address)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


class Client(Listener):
    """A surface (a phone, a laptop): one UDP socket that sends to distill and hears what comes back."""

    def __init__(self, server: OscServer):
        super().__init__()
        self.to = ("127.0.0.1", server.port)

    def send(self, address: str, *args) -> None:
        self.sock.sendto(message(address, *args), self.to)


@pytest.fixture(scope="module")
def model():
    return random_model()


@pytest.fixture
def rig(model, tmp_path):
    """An engine playing, with presets beside a model file, an OSC server whose --reply is `listener`,
    and the OSCQuery server (HTTP and WebSocket) on its own port."""
    presets = Presets(presets_path(tmp_path / "my.distill"))
    card = paced_engine(model, buffer_ms=80, presets=presets)
    listener = Listener()
    server = OscServer(card.engine, port=0, reply=("127.0.0.1", listener.port))
    query = OscQueryServer(card.engine, port=0, osc_port=server.port, advertise=False, osc=server)
    client = SimpleUDPClient("127.0.0.1", server.port)
    client.send_message(f"{P}/play", 1)
    rig = type("Rig", (), dict(card=card, engine=card.engine, server=server, query=query, listener=listener,
                               client=client, values=card.engine.registry.values, presets=presets,
                               tmp_path=tmp_path))
    yield rig
    query.close()
    server.close()
    listener.close()
    card.stop()


def heard(listener: Listener, address: str, value, what: str = "") -> None:
    wait_for(lambda: any(m == [pytest.approx(value)] for m in listener.of(address)), 10,
             what or f"{address} {value} (heard {listener.of(address)[-5:]})")


# -- feedback on the same address ------------------------------------------------------------------


def test_a_change_comes_back_on_its_own_address_and_on_state(rig):
    rig.client.send_message(f"{P}/gain", 0.5)
    heard(rig.listener, f"{P}/gain", 0.5)
    wait_for(lambda: [f"{P}/gain", 0.5] in rig.listener.of(f"{P}/state"), what="/distill/state for gain")
    rig.client.send_message(f"{P}/mix", [0.25, 0.75])  # each world moves its own fader
    heard(rig.listener, f"{P}/world/bells", 0.25)
    heard(rig.listener, f"{P}/world/noise", 0.75)
    rig.client.send_message(f"{P}/cue", [1, 0.05])  # a command comes back on /distill/state only
    wait_for(lambda: [f"{P}/cue", 1, pytest.approx(0.05)] in rig.listener.of(f"{P}/state"), what="cue state")
    assert rig.listener.of(f"{P}/cue") == []  # a surface that echoes it back must not jump again
    # /distill/dump sends every value on its own address too, so a surface that starts late is in step
    rig.client.send_message(f"{P}/dump", [])
    wait_for(lambda: rig.listener.of(f"{P}/dump/end"), what="/distill/dump/end")
    assert rig.listener.of(f"{P}/temperature")[-1] == [pytest.approx(rig.values[f"{P}/temperature"])]


@pytest.mark.parametrize("feedback, own", [("state", False), ("address", True)])
def test_feedback_flag_chooses_the_address(model, feedback, own):
    card = paced_engine(model, buffer_ms=80)
    listener = Listener()
    server = OscServer(card.engine, port=0, reply=("127.0.0.1", listener.port), meters=False, feedback=feedback)
    try:
        client = SimpleUDPClient("127.0.0.1", server.port)
        client.send_message(f"{P}/topk", 7)
        client.send_message(f"{P}/reset", [])
        wait_for(lambda: [f"{P}/reset"] in listener.of(f"{P}/state"), what="the reset on /distill/state")
        # one pass of the reply thread sends a change on /distill/state, then on its address: wait for the
        # one this flag keeps, and the other would have come by then
        if own:
            wait_for(lambda: listener.of(f"{P}/topk"), what="topk on its own address")
            assert listener.of(f"{P}/topk") == [[7]] and [f"{P}/topk", 7] not in listener.of(f"{P}/state")
        else:
            wait_for(lambda: [f"{P}/topk", 7] in listener.of(f"{P}/state"), what="topk on /distill/state")
            time.sleep(0.1)
            assert listener.of(f"{P}/topk") == []
    finally:
        server.close()
        listener.close()
        card.stop()


def test_buttons_fire_on_press_only(rig):
    """A button sends 1 when pressed and 0 when let go: a trigger fires once, from python-osc and liblo."""
    def resets():
        return rig.listener.of(f"{P}/state").count([f"{P}/reset"])

    for press in ([1], [0], [1.0], [0.0], []):
        rig.client.send_message(f"{P}/reset", press)
    if shutil.which("oscsend"):
        for value in ("0", "1"):
            subprocess.run(["oscsend", "localhost", str(rig.server.port), f"{P}/reset", "i", value], check=True,
                           timeout=10)
    fired = 4 if shutil.which("oscsend") else 3
    rig.client.send_message(f"{P}/topk", 9)  # a marker after every press: its state comes after theirs
    wait_for(lambda: [f"{P}/topk", 9] in rig.listener.of(f"{P}/state"), what="the marker")
    wait_for(lambda: resets() >= fired, what=f"{fired} resets (heard {resets()})")
    time.sleep(0.1)
    assert resets() == fired
    assert rig.server.counters.refused == 0  # a release is not an error either
    # a score line with a release does nothing too
    assert parse_score(f"0.5 {P}/reset 0\n1.0 {P}/reset 1\n", rig.engine.registry) == [(1.0, f"{P}/reset", ())]


# -- more than one listener ------------------------------------------------------------------------


def test_any_number_of_clients_subscribe_and_unsubscribe(rig):
    phone, laptop = Client(rig.server), Client(rig.server)
    try:
        for c in (phone, laptop):
            c.send(f"{P}/subscribe")
            wait_for(lambda: c.of(f"{P}/subscribed"), what="/distill/subscribed")
            assert c.of(f"{P}/subscribed") == [[c.port, 300.0]]  # where replies go, and the lease (5 minutes)
            wait_for(lambda: c.of(f"{P}/dump/end"), what="every value at once")
            assert c.of(f"{P}/gain") == [[1.0]]
        rig.client.send_message(f"{P}/temperature", 0.5)  # from a third surface
        for c in (phone, laptop, rig.listener):  # the --reply target keeps hearing everything
            heard(c, f"{P}/temperature", 0.5)
        laptop.send(f"{P}/unsubscribe")
        rig.client.send_message(f"{P}/temperature", 1.25)
        heard(phone, f"{P}/temperature", 1.25)
        heard(rig.listener, f"{P}/temperature", 1.25)
        time.sleep(0.2)
        assert [1.25] not in laptop.of(f"{P}/temperature")
    finally:
        phone.close()
        laptop.close()


def test_a_subscription_ends_when_its_client_goes_silent(rig):
    listener = Listener()
    server = OscServer(rig.engine, port=0, reply=("127.0.0.1", listener.port), meters=False, lease=1.0)
    phone = Client(server)
    try:
        phone.send(f"{P}/subscribe")
        assert wait_for(lambda: phone.of(f"{P}/subscribed"), what="/distill/subscribed") == [[phone.port, 1.0]]
        rig.engine.registry.submit(f"{P}/temperature", [0.875])  # as a MIDI fader does: no packet
        heard(phone, f"{P}/temperature", 0.875)
        time.sleep(1.5)  # nothing has come from this host since: the lease (1 s here) has run out
        rig.engine.registry.submit(f"{P}/temperature", [0.75])
        heard(listener, f"{P}/temperature", 0.75)  # --reply still hears it
        time.sleep(0.2)
        assert [0.75] not in phone.of(f"{P}/temperature")
        phone.send(f"{P}/subscribe")  # subscribing again renews it
        wait_for(lambda: len(phone.of(f"{P}/subscribed")) == 2, what="the second /distill/subscribed")
        rig.engine.registry.submit(f"{P}/temperature", [0.625])
        heard(phone, f"{P}/temperature", 0.625)
    finally:
        phone.close()
        server.close()
        listener.close()


def test_subscriptions_have_a_limit_and_oscdump_can_subscribe(rig):
    port = Listener()  # a port to give oscdump
    free = port.port
    port.close()
    dump = subprocess.Popen(["oscdump", "-L", str(free)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    clients = [Client(rig.server) for _ in range(MAX_SUBSCRIBERS)]
    try:
        time.sleep(0.3)  # let oscdump bind
        clients[0].send(f"{P}/subscribe", free)  # replies to oscdump's port on this host
        for c in clients[1:]:
            c.send(f"{P}/subscribe")
        wait_for(lambda: len(rig.server.subscribers) == MAX_SUBSCRIBERS, what="every subscription")
        late = Client(rig.server)
        late.send(f"{P}/subscribe")
        error = wait_for(lambda: late.of(f"{P}/error"), what="the refusal, to the client that asked")
        assert f"{MAX_SUBSCRIBERS} clients are already subscribed" in error[0][0], error
        assert late.of(f"{P}/subscribed") == []
        late.close()
        rig.client.send_message(f"{P}/temperature", 0.625)
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(iter(dump.stdout.readline, "")), daemon=True).start()
        wait_for(lambda: f"{P}/temperature f 0.625" in "".join(lines), what=f"oscdump to hear it ({lines[-5:]})")
        for c in clients[1:]:
            heard(c, f"{P}/temperature", 0.625)
    finally:
        dump.terminate()
        dump.wait(5)
        for c in clients:
            c.close()


# -- OSCQuery with live values ---------------------------------------------------------------------


def ws_url(rig) -> str:
    return f"ws://127.0.0.1:{rig.query.port}/"


def next_osc(ws, address: str, timeout: float = 10.0) -> list:
    """The arguments of the next binary message on `address` (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        data = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(data, bytes):
            msg = OscMessage(data)
            if msg.address == address:
                return msg.params


def test_listen_over_a_websocket_follows_every_change(rig):
    with connect(ws_url(rig)) as ws, connect(ws_url(rig)) as other:
        ws.send(json.dumps({"COMMAND": "LISTEN", "DATA": f"{P}/gain"}))
        assert next_osc(ws, f"{P}/gain") == [1.0]  # its value now, first
        ws.send(json.dumps({"COMMAND": "LISTEN", "DATA": f"{P}/freeze"}))
        assert next_osc(ws, f"{P}/freeze") == [False]  # on/off as T/F, as the tree's TYPE says
        rig.client.send_message(f"{P}/gain", 0.5)  # from OSC
        assert next_osc(ws, f"{P}/gain") == [0.5]
        rig.engine.registry.submit(f"{P}/freeze", [1])  # from MIDI
        assert next_osc(ws, f"{P}/freeze") == [True]
        # binary OSC from the WebSocket client steers the engine as if sent to the OSC port
        other.send(message(f"{P}/gain", 0.25))
        assert next_osc(ws, f"{P}/gain") == [0.25]
        wait_for(lambda: rig.values[f"{P}/gain"] == 0.25, what="gain from the WebSocket")
        ws.send(json.dumps({"COMMAND": "IGNORE", "DATA": f"{P}/gain"}))
        ws.send(json.dumps({"COMMAND": "LISTEN", "DATA": f"{P}/topk"}))
        next_osc(ws, f"{P}/topk")
        rig.client.send_message(f"{P}/gain", 0.75)
        rig.client.send_message(f"{P}/topk", 4)
        data = ws.recv(timeout=10)
        assert OscMessage(data).address == f"{P}/topk" and OscMessage(data).params == [4]  # not gain: ignored
        # what the engine measures, on read-only nodes
        ws.send(json.dumps({"COMMAND": "LISTEN", "DATA": f"{P}/meter"}))
        ws.send(json.dumps({"COMMAND": "LISTEN", "DATA": f"{P}/codes"}))
        assert 0.0 <= next_osc(ws, f"{P}/meter")[0] <= 1.0
        codes = next_osc(ws, f"{P}/codes")
        assert len(codes) == rig.engine.registry.params[f"{P}/levels"].hi and all(isinstance(c, int) for c in codes)
        # a preset saved changes what /distill/preset/recall offers: every client is told
        rig.client.send_message(f"{P}/preset/save", 5)
        while True:
            data = other.recv(timeout=10)
            if isinstance(data, str):
                break
        assert json.loads(data) == {"COMMAND": "PATH_CHANGED", "DATA": f"{P}/preset/recall"}


def test_a_client_that_asks_for_bundles_gets_each_tick_as_one_bundle(rig):
    """The web page sends BUNDLE: what a feed tick has for it comes as one OSC bundle, one WebSocket
    message instead of one per frame's codes, meter and change."""
    listened = {f"{P}/gain", f"{P}/meter", f"{P}/codes", f"{P}/frame"}
    with connect(ws_url(rig)) as ws:
        ws.send(json.dumps({"COMMAND": "BUNDLE", "DATA": True}))
        for address in sorted(listened):
            ws.send(json.dumps({"COMMAND": "LISTEN", "DATA": address}))
        assert next_osc(ws, f"{P}/gain") == [1.0]  # its value now, as a message: the server has read all four
        rig.client.send_message(f"{P}/topk", 3)  # not listened to: never in a bundle
        rig.client.send_message(f"{P}/gain", 0.5)
        bundles, gains, deadline = [], [], time.monotonic() + 10
        while not (gains and len(bundles) >= 10) and time.monotonic() < deadline:
            data = ws.recv(timeout=10)
            assert OscBundle.dgram_is_bundle(data), OscMessage(data).address
            inside = [(m.address, m.params) for m in OscBundle(data)]
            assert inside and {a for a, _ in inside} <= listened, inside
            bundles.append([a for a, _ in inside])
            gains += [params for a, params in inside if a == f"{P}/gain"]
        assert gains == [[0.5]]  # the change, once
        with_codes = [b for b in bundles if f"{P}/codes" in b]
        assert with_codes and all(b[-1] == f"{P}/frame" and f"{P}/meter" in b for b in with_codes), bundles


def test_websocket_and_http_refuse_what_allow_does_not_cover(rig):
    query = OscQueryServer(rig.engine, port=0, allow=["10.0.0.0/8"], advertise=False, osc=rig.server)
    try:
        with pytest.raises(InvalidStatus) as e:
            connect(f"ws://127.0.0.1:{query.port}/").close()
        assert e.value.response.status_code == 403
        for path in ("/", "/ui/", "/ui/page.js"):  # the web page too
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"http://127.0.0.1:{query.port}{path}", timeout=10)
            assert e.value.code == 403
    finally:
        query.close()


# -- presets ---------------------------------------------------------------------------------------


def test_save_and_recall_a_preset_with_a_crossfade(rig):
    c, registry = rig.client, rig.engine.registry
    for address, value in ((f"{P}/gain", 0.5), (f"{P}/topk", 12), (f"{P}/descriptor/loudness", 0.3)):
        c.send_message(address, value)
    wait_for(lambda: rig.values[f"{P}/topk"] == 12 and registry.held["loudness"], what="the controls set")
    c.send_message(f"{P}/preset/save", 3)
    path = rig.tmp_path / "my.presets.toml"
    wait_for(path.exists, what="the presets file beside the model")
    saved = tomllib.loads(path.read_text())["3"]  # human-readable: the OSC names, without /distill/
    assert saved["gain"] == 0.5 and saved["topk"] == 12 and saved["descriptor/loudness"] == pytest.approx(0.3)
    assert saved["descriptor/brightness"] == "free" and "play" not in saved and "seed" not in saved
    # OSCQuery lists it
    node = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{rig.query.port}{P}/preset/recall").read())
    assert node["RANGE"][0]["VALS"] == [3]

    for address, value in ((f"{P}/gain", 1.5), (f"{P}/topk", 40), (f"{P}/descriptor/loudness/free", [])):
        c.send_message(address, value)
    wait_for(lambda: rig.values[f"{P}/gain"] == 1.5 and not registry.held["loudness"], what="the controls moved")
    applied = rig.engine.changes.listen()  # every control the engine applies, at the chunk it applies it
    c.send_message(f"{P}/preset/recall", [3, 0.5])
    wait_for(lambda: rig.values[f"{P}/gain"] == 0.5, what="the gain at the preset's value after the crossfade")
    rig.engine.changes.unlisten(applied)
    changes = []
    while not applied.empty():
        changes.append(applied.get())
    recalled = next(at for at, address, _ in changes if address == f"{P}/preset/recall")
    topk = next(at for at, address, args in changes if address == f"{P}/topk" and args == (12,))
    assert topk - recalled < 1 / rig.engine.frame_rate  # set at once: at the chunk after the recall's
    gains = [(at, args[0]) for at, address, args in changes if address == f"{P}/gain"]
    assert gains[-1][1] == 0.5 and gains[-1][0] - recalled == pytest.approx(0.5, abs=0.05), gains
    steps = [g for _, g in gains]
    assert len(steps) >= 0.5 * rig.engine.frame_rate - 1 and steps == sorted(steps, reverse=True), gains  # a ramp
    assert registry.held["loudness"] and rig.values[f"{P}/descriptor/loudness"] == pytest.approx(0.3)

    # a fader moved during a crossfade takes over
    c.send_message(f"{P}/gain", 1.5)
    wait_for(lambda: rig.values[f"{P}/gain"] == 1.5, what="gain back up")
    c.send_message(f"{P}/preset/recall", [3, 5.0])
    wait_for(lambda: rig.values[f"{P}/gain"] < 1.45, what="the crossfade to start")
    c.send_message(f"{P}/gain", 2.0)
    wait_for(lambda: rig.values[f"{P}/gain"] == 2.0, what="the fader")
    time.sleep(0.3)
    assert rig.values[f"{P}/gain"] == 2.0

    c.send_message(f"{P}/preset/recall", 9)
    error = wait_for(lambda: [e for e in rig.listener.of(f"{P}/error") if "preset 9" in e[0]], what="an error")
    assert "there is no preset 9 (saved: 3)" in error[0][0]


def test_a_flood_of_saves_writes_the_file_twice_a_second_with_the_last_save(rig):
    """A surface that saves on every touch must not cost a synced write each: the file is written at
    most every PRESET_WRITES, holds the last save a moment after the flood, and the saves that came
    since the last write are written when the engine stops."""
    path = rig.tmp_path / "my.presets.toml"
    sent = threading.Event()

    def flood():
        for n in range(60):
            rig.client.send_message(f"{P}/preset/save", n)
            time.sleep(0.025)
        sent.set()

    seen, start = set(), time.monotonic()  # every version of the file a reader finds, polled every 2 ms
    threading.Thread(target=flood, daemon=True).start()
    while not (sent.is_set() and path.exists() and "[59]" in path.read_text()):
        if path.exists():
            seen.add(path.read_text())
        assert time.monotonic() - start < 20, "the last save never reached the file"
        time.sleep(0.002)
    seen.add(path.read_text())
    writes_allowed = (time.monotonic() - start) / PRESET_WRITES + 1
    assert 2 <= len(seen) <= writes_allowed, f"{len(seen)} writes in {time.monotonic() - start:.2f} s"
    assert sorted(tomllib.loads(path.read_text()), key=int) == [str(n) for n in range(60)]

    # a save within PRESET_WRITES of the last write waits for the next one: stopping writes it
    rig.client.send_message(f"{P}/gain", 0.25)
    wait_for(lambda: rig.values[f"{P}/gain"] == 0.25, what="the gain set")
    rig.client.send_message(f"{P}/preset/save", 100)
    wait_for(lambda: rig.presets.get(100) is not None, what="the save taken")
    rig.engine.stop()
    assert tomllib.loads(path.read_text())["100"]["gain"] == 0.25


@pytest.mark.parametrize("text, words", [
    ("[1]\ngain = 0.5\n[2\n", ["line 3"]),
    ("[1]\ngain = 0.5\n\n[2]\nvolume = 1.0\n", ["line 4", "'volume'", "not a control a preset keeps"]),
    ("[1]\ngain = 9.0\n", ["line 1", "gain = 9.0 is outside 0..2"]),
    ("[1]\nplay = 1\n", ["'play'"]),
    ("[x]\ngain = 1.0\n", ["[x] is not a preset"]),
])
def test_a_damaged_presets_file_is_refused_in_one_sentence_and_kept(model, tmp_path, capsys, text, words):
    model_file = random_model_file(tmp_path / "my.distill")
    path = tmp_path / "my.presets.toml"
    path.write_text(text)
    assert main(["serve", str(model_file), "--output", str(tmp_path / "x.wav"), "--seconds", "1",
                 "--no-osc", "--no-oscquery", "--midi-api", "off"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and all(w in err for w in words), err
    assert path.read_text() == text and not (tmp_path / "x.wav").exists()
    with pytest.raises(PresetFileError):
        Presets.load(path, ParamRegistry.for_model(model))


def test_presets_round_trip_through_the_file(model, tmp_path):
    registry = ParamRegistry.for_model(model)
    presets = Presets(tmp_path / "p.toml")
    presets.store(0, {"gain": 0.5, "world/bells": 1.0, "descriptor/loudness": "free", "topk": 3})
    presets.store(127, {"temperature": 0.25})
    presets.write()
    again = Presets.load(tmp_path / "p.toml", registry)
    assert again.snapshots == presets.snapshots and again.numbers() == [0, 127]
    assert math.isclose(tomllib.loads((tmp_path / "p.toml").read_text())["0"]["world/bells"], 1.0)


def test_a_preset_keeps_only_what_the_model_can_take():
    """A model saved without its recordings refuses the corpus controls, so its presets leave them out:
    a recall (and a take's score of it) would otherwise set what the model refuses."""
    with_recordings = take_snapshot(ParamRegistry(["a"], levels=4, codebook_size=64, cues=2))
    without = take_snapshot(ParamRegistry(["a"], levels=4, codebook_size=64, cues=2, corpus=False))
    assert {"corpus/mix", "corpus/stick", "corpus/fade"} <= set(with_recordings)
    assert set(with_recordings) - set(without) == {"corpus/mix", "corpus/stick", "corpus/fade"}


def test_the_web_page_is_served_from_the_package(rig):
    """Its three files, on the OSCQuery port; nothing else (a file name cannot climb out of the folder)."""
    base = f"http://127.0.0.1:{rig.query.port}"
    with urllib.request.urlopen(f"{base}/ui") as r:  # sent on to /ui/
        page = r.read().decode()
        assert r.url == f"{base}/ui/" and "page.js" in page and "page.css" in page
    for name, kind in (("page.js", "text/javascript"), ("page.css", "text/css")):
        with urllib.request.urlopen(f"{base}/ui/{name}") as r:
            assert r.headers["Content-Type"].startswith(kind) and len(r.read()) > 500
    for bad in ("/ui/nothing.js", "/ui/../oscquery.py", "/ui/%2e%2e/web/page.js"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{base}{bad}", timeout=10)
        assert e.value.code == 404, bad
    assert "http" not in page.replace("http-equiv", "")  # nothing loads from elsewhere


# -- the engine's helper thread --------------------------------------------------------------------


def test_two_model_loads_in_one_chunk_each_load_their_own_file(model, tmp_path, caplog):
    """The helper thread loads models and writes presets for the generator; two hot-swaps asked in one chunk
    (a patch sending two messages at once) are two jobs with their own file names."""
    from distill_live.model.modelfile import save_model

    save_model(tmp_path / "b.distill", model)
    card = PacedCard(Engine(model, models_dir=tmp_path)).start()
    try:
        with caplog.at_level("INFO", logger="distill.engine"):
            card.engine.registry.submit_validated([(f"{P}/model", ("b.distill",)), (f"{P}/model", ("../a.distill",))])
            wait_for(lambda: "swapped to model b.distill" in caplog.text, 30, f"the swap (log: {caplog.text})")
            refusal = wait_for(card.engine.errors.get, 10, "the refusal")
        assert "../a.distill refused" in refusal and card.engine.errors.empty()
    finally:
        card.stop()

"""OSCQuery over real HTTP on loopback: the namespace matches the registry, values are live."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import numpy as np
import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.udp_client import SimpleUDPClient

from distill_live.control.osc.livefeed import MEASURES, LiveFeed
from distill_live.control.osc.oscquery import OscQueryServer, find
from distill_live.control.osc.server import OscConfigError, OscServer
from distill_live.live.engine import Engine
from distill_live.model.descriptors import DescriptorStats, DescriptorStream, frame_descriptors
from cards import paced_engine
from models import WORLDS, random_model
from oscpeers import wait_for

P = "/distill"
NAME = f"distill-test-{os.getpid()}"  # unique: another instance on this machine must not rename ours


@pytest.fixture(scope="module")
def served():
    engine = Engine(random_model())
    osc = OscServer(engine, port=0, meters=False)
    query = OscQueryServer(engine, port=0, osc_port=osc.port, name=NAME)
    yield engine, osc, query
    query.close()
    osc.close()


def get(query, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{query.port}{path}", timeout=5) as r:
        return r.status, (json.loads(r.read()) if r.status == 200 else None)


def test_every_parameter_appears_with_its_type_range_access_and_value(served):
    engine, _, query = served
    registry = engine.registry
    status, root = get(query, "/")
    assert status == 200 and root["FULL_PATH"] == "/" and "distill" in root["CONTENTS"]
    for address, p in registry.params.items():
        node = find(root, address)
        assert node is not None, f"{address} is missing from the OSCQuery tree"
        assert node["FULL_PATH"] == address and node["DESCRIPTION"] == p.description
        expected_type = {"f": "f", "i": "i", "b": "T", "s": "s", "": "N", "i,f?": "if",
                         "f*": "f" * len(registry.worlds)}[p.types]
        assert node["TYPE"] == expected_type, address
        if p.types in ("f", "i"):
            assert node["RANGE"] == [{"MIN": p.lo, "MAX": p.hi}] and node["CLIPMODE"] == ["both"]
            if p.stored:
                assert node["VALUE"] == [registry.values[address]] and node["ACCESS"] == 3
            else:  # a command with a number (/distill/preset/save): no value to show
                assert "VALUE" not in node and node["ACCESS"] == 2
        elif p.types == "b":
            assert node["VALUE"] == [bool(registry.values[address])] and node["ACCESS"] == 3
        elif p.types == "f*":
            assert node["RANGE"] == [{"MIN": 0.0, "MAX": 1.0}] * len(WORLDS)
            assert node["VALUE"] == registry.world_weights()
        elif p.types == "i,f?":
            assert node["RANGE"][0] == {"MIN": p.lo, "MAX": p.hi} and node["ACCESS"] == 2
        else:
            assert "VALUE" not in node and node["ACCESS"] == 2
        # each node is also served at its own path
        assert get(query, address) == (200, node)
    # nothing in the tree that the registry does not know (containers aside)
    def leaves(node):
        for child in node.get("CONTENTS", {}).values():
            if "TYPE" in child:
                yield child["FULL_PATH"]
            yield from leaves(child)
    measured = {f"/distill/{n}" for n in ("meter", "codes", "frame", "stats", "measured")}  # read-only: what the engine measures
    assert set(leaves(root)) == set(registry.params) | measured


def test_values_are_live(served):
    engine, osc, query = served
    SimpleUDPClient("127.0.0.1", osc.port).send_message(f"{P}/gain", 0.25)
    wait_for(lambda: osc.counters.messages >= 1, what="the message accepted")
    engine.generate_one()  # the generator applies it at the next frame
    assert get(query, f"{P}/gain?VALUE") == (200, {"VALUE": [0.25]})
    SimpleUDPClient("127.0.0.1", osc.port).send_message(f"{P}/world/noise", 0.5)
    wait_for(lambda: osc.counters.messages >= 2, what="the message accepted")
    engine.generate_one()
    assert get(query, f"{P}/mix?VALUE") == (200, {"VALUE": [0.0, 0.5]})


def test_host_info(served):
    _, osc, query = served
    status, info = get(query, "/?HOST_INFO")
    assert status == 200
    assert info["NAME"] == NAME and info["OSC_PORT"] == osc.port and info["OSC_TRANSPORT"] == "UDP"
    assert info["OSC_IP"] == "127.0.0.1"
    assert info["EXTENSIONS"]["VALUE"] and info["EXTENSIONS"]["RANGE"] and info["EXTENSIONS"]["LISTEN"]


def test_errors_follow_http(served):
    _, _, query = served
    with pytest.raises(urllib.error.HTTPError) as e:
        get(query, f"{P}/no/such/node")
    assert e.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as e:
        get(query, f"{P}/gain?GABBAGABBAHEY")
    assert e.value.code == 400
    assert get(query, f"{P}/reset?VALUE") == (204, None)  # a trigger has no value
    assert get(query, f"{P}/gain?TYPE") == (200, {"TYPE": "f"})
    assert get(query, f"{P}/world?CONTENTS")[1]["CONTENTS"].keys() == set(WORLDS)


def test_loopback_unless_bind_any_and_allow_is_obeyed(served):
    engine, _, _ = served
    with pytest.raises(OscConfigError, match="without --osc-bind-any"):
        OscQueryServer(engine, host="0.0.0.0", port=0, advertise=False)
    fenced = OscQueryServer(engine, port=0, allow=["10.0.0.0/8"], advertise=False)
    try:
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            get(fenced, "/")
    finally:
        fenced.close()


@pytest.mark.slow  # waits for the advert to register
def test_zeroconf_advert_on_loopback(served):
    pytest.importorskip("zeroconf", reason="zeroconf is an optional dependency and is not installed")
    from zeroconf import IPVersion, Zeroconf

    _, osc, query = served
    assert query.advert.registered.wait(15), f"the advert was not registered: {query.advert.failed}"
    browser = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        info = browser.get_service_info("_oscjson._tcp.local.", f"{NAME}._oscjson._tcp.local.", timeout=5000)
        assert info is not None and info.port == query.port and info.parsed_addresses() == ["127.0.0.1"]
        info = browser.get_service_info("_osc._udp.local.", f"{NAME}._osc._udp.local.", timeout=5000)
        assert info is not None and info.port == osc.port
    finally:
        browser.close()


def test_the_feed_measures_the_newest_frames_the_engine_made(monkeypatch):
    """/distill/measured, the page's descriptor bars: each frame of the output measured once, as the
    engine makes it, gives what measuring the newest frames all at once gives."""
    fed = []  # the samples each poll measured
    feed_stream = DescriptorStream.feed
    monkeypatch.setattr(DescriptorStream, "feed", lambda self, audio: (fed.append(len(audio)), feed_stream(self, audio)))
    model = random_model()
    stats = DescriptorStats(lo=(-60.0, 200.0, 0.0), hi=(0.0, 6000.0, 0.6), window=5)
    model.meta["descriptor_stats"] = stats.to_dict()
    card = paced_engine(model, buffer_ms=80)
    engine, feed = card.engine, LiveFeed(card.engine)
    measured = []

    def poll():
        measured.extend(OscMessage(data).params for address, data in feed.poll(MEASURES)
                        if address == f"{P}/measured")

    try:
        engine.registry.submit(f"{P}/play", [1])
        for _ in range(3 * stats.window):
            poll()
            card.wait_frames(1)
    finally:
        card.stop()
    poll()  # what was made since, up to the last whole frame
    made, _ = engine.recent_since(None)
    hop, whole = engine.hop, made - made % engine.hop
    audio = engine.recent(made - whole + (stats.window + 1) * hop)[:(stats.window + 1) * hop]
    assert np.abs(audio).max() > 0.01  # it played
    expected = stats.measure(frame_descriptors(audio, hop, engine.model_rate)[1:])
    assert len(measured) > 2 * stats.window and len({tuple(m) for m in measured}) > 1
    assert np.allclose(measured[-1], expected, atol=1e-5), (measured[-1], expected)
    assert sum(fed) <= made - made % hop + 2 * hop  # each sample measured once (from a frame boundary on)


def test_the_feed_measures_only_what_someone_listens_to(served, monkeypatch):
    """A surface that follows a few controls costs the engine no measuring, and so does the page while
    it is hidden (it stops listening to the measures): each is computed only for a listener."""
    engine = served[0]
    asked = []
    for name in ("codes_since", "stats", "recent_since"):
        method = getattr(engine, name)
        monkeypatch.setattr(engine, name, lambda *args, _method=method, _name=name: (asked.append(_name),
                                                                                   _method(*args))[1])
    feed = LiveFeed(engine)
    try:
        assert feed.poll({f"{P}/gain"}) == [] and asked == []
        assert {address for address, _ in feed.poll(MEASURES)} >= {f"{P}/meter", f"{P}/stats"}
        assert {"codes_since", "stats"} <= set(asked)
        asked.clear()
        assert [address for address, _ in feed.poll({f"{P}/meter", f"{P}/gain"})] == [f"{P}/meter"]
        assert asked == []
    finally:
        feed.close()

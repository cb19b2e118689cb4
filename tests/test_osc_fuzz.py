"""Property test: thousands of random, malformed and hostile packets over real UDP while the engine
plays. The engine keeps making frames, the server keeps obeying, and every parameter stays valid."""
from __future__ import annotations

import math
import socket
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from distill_live.control.osc.namespace import DUMP, NAMESPACE
from distill_live.control.osc.server import OscServer
from distill_live.control.osc.wire import unix_to_ntp
from distill_live.control.params import ParamRegistry
from cards import paced_engine
from models import random_model
from oscpeers import Listener, wait_for

P = "/distill"
MODEL = random_model()
ADDRESSES = sorted(ParamRegistry.for_model(MODEL).params)
PATTERNS = ["/distill/*", "/distill/world/*", "/distill/{gain,topk,mutate}", "/distill/descriptor/*",
            "/distill/descriptor/*/free", "//free", "/distill/[a-m]*", "/distill/[!g]ain", "/distill/?oop",
            "/distill/[", "/distill/{a,", "/*", "/distill/world/[z-a]"]


@pytest.fixture(scope="module")
def rig():
    card = paced_engine(MODEL, buffer_ms=80)
    listener = Listener()
    server = OscServer(card.engine, port=0, tcp_port=0, reply=("127.0.0.1", listener.port))
    SimpleUDPClient("127.0.0.1", server.port).send_message(f"{P}/play", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield card, server, sock
    sock.close()
    server.close()
    listener.close()
    card.stop()


texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=24)
address = st.one_of(
    st.sampled_from(ADDRESSES), st.sampled_from(PATTERNS), st.sampled_from([DUMP, NAMESPACE]),
    texts.map(lambda s: "/" + s),
    st.text(alphabet="abcdeglmnoprstuw*?[]{}!,/-", max_size=16).map(lambda s: "/distill/" + s),
).filter(lambda a: a != f"{P}/reply")  # never redirect replies to some random port of this machine
argument = st.one_of(
    st.tuples(st.just("i"), st.integers(-2**31, 2**31 - 1)),
    st.tuples(st.just("h"), st.integers(-2**63, 2**63 - 1)),
    st.tuples(st.just("f"), st.floats(width=32)),  # NaN and infinities included
    st.tuples(st.just("d"), st.floats()),
    st.tuples(st.just("f"), st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0, 1e9, float("nan"), float("inf")])),
    st.tuples(st.just("s"), texts),
    st.tuples(st.just("b"), st.binary(max_size=32)),
    st.tuples(st.just("T"), st.just(True)), st.tuples(st.just("F"), st.just(False)), st.tuples(st.just("N"), st.none()),
)


@st.composite
def message(draw) -> bytes:
    b = OscMessageBuilder(draw(address))
    for kind, value in draw(st.lists(argument, max_size=4)):
        b.add_arg(value, kind)
    try:
        return b.build().dgram
    except Exception:  # e.g. a string python-osc cannot encode: send some bytes instead
        return b"/distill/gain\x00\x00\x00,f\x00\x00" + draw(st.binary(min_size=4, max_size=4))


def timetag(draw) -> int:
    kind = draw(st.sampled_from(["immediate", "past", "soon", "far", "random"]))
    now = time.time()
    if kind == "immediate":
        return 1
    if kind == "past":
        return unix_to_ntp(now - draw(st.floats(0, 1e6)))
    if kind == "soon":
        return unix_to_ntp(now + draw(st.floats(0, 1.0)))
    if kind == "far":
        return unix_to_ntp(now + draw(st.floats(61, 1e7)))
    return draw(st.integers(0, 2**64 - 1))


@st.composite
def bundle(draw, depth=0) -> bytes:
    parts = [b"#bundle\x00", struct.pack(">Q", timetag(draw))]
    for _ in range(draw(st.integers(0, 4))):
        inner = draw(bundle(depth + 1)) if depth < 3 and draw(st.booleans()) else draw(message())
        size = len(inner) if draw(st.integers(0, 9)) else draw(st.integers(-8, 2000))  # sometimes a lie
        parts += [struct.pack(">i", size), inner]
    return b"".join(parts)


packets = st.one_of(message(), bundle(), st.binary(max_size=256),
                    st.binary(max_size=8).map(lambda b: b"#bundle\x00" + b))


def assert_all_valid(registry) -> None:
    for addr, v in list(registry.values.items()):
        p = registry.params[addr]
        assert isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), (addr, v)
        if p.types in ("i", "b"):
            assert isinstance(v, int), (addr, v)
        lo, hi = p.range
        assert lo <= v <= hi, (addr, v)


def assert_alive(card, server) -> None:
    assert card.engine._thread.is_alive(), "the generator thread died"
    assert server._rx.is_alive() and server._tx.is_alive(), "an OSC thread died"


def variants(packet: bytes, rnd, n: int) -> list[bytes]:
    """`packet` and `n` cheap mutations of it (cut, flip, append), from hypothesis' own random source."""
    out = [packet]
    for _ in range(n):
        data = bytearray(packet)
        op = rnd.randrange(3)
        if op == 0 and data:
            del data[rnd.randrange(len(data)):]
        elif op == 1 and data:
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        else:
            data += bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 9)))
        out.append(bytes(data))
    return out


EXAMPLES = 1000  # x 5 packets each: 5,000 packets per run


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(packet=packets, rnd=st.randoms(use_true_random=False))
def test_random_and_malformed_packets_never_break_anything(rig, packet, rnd):
    card, server, sock = rig
    for data in variants(packet[:65000], rnd, 4):
        sock.sendto(data, ("127.0.0.1", server.port))
    assert_all_valid(card.engine.registry)
    assert_alive(card, server)


def test_after_the_storm_the_engine_plays_and_obeys(rig):
    card, server, sock = rig
    frames = card.engine.player.frames
    # a flood: 20,000 packets as fast as this process can send them, half of them junk
    good = OscMessageBuilder(f"{P}/mutate")
    good.add_arg(0.25)
    good = good.build().dgram
    for i in range(20_000):
        sock.sendto(good if i % 2 else b"\xff" * (i % 64), ("127.0.0.1", server.port))
    wait_for(lambda: card.engine.player.frames > frames + 5, what="frames made during and after the flood")
    assert_alive(card, server)
    client = SimpleUDPClient("127.0.0.1", server.port)
    for value in (0.0, 0.5):
        # UDP: while the flood's backlog fills the socket buffer a packet can be dropped, so resend
        def obeyed():
            client.send_message(f"{P}/mutate", value)
            time.sleep(0.1)
            return card.engine.registry.values[f"{P}/mutate"] == value
        wait_for(obeyed, 20, f"mutate = {value} ({server.counters})")
    card.wait_frames(5)
    assert_all_valid(card.engine.registry)
    assert server.counters.packets > 5000 and server.counters.refused > 1000

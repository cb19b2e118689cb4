"""OSC control: steer a running engine from Max/MSP, SuperCollider, Pure Data, TouchOSC.

    UDP (and optional TCP) ──► receive thread ──parse, match, validate──► ParamRegistry inbox
                                      │                                         │ (generator thread
                                      ▼ outbox                                  ▼  applies per frame)
    reply target ◄── reply thread ◄── engine.changes, level, codes, telemetry

* One **receive thread** reads every socket (selectors), parses packets with python-osc's
  `OscMessage` (bundles are walked here, with a depth limit), matches address patterns against
  the registry and submits validated messages. It never sleeps and never sends: a bundle with a
  future timetag is submitted at once with `at=engine.time_of(timetag)`, and the generator
  applies it at the frame that plays at that time. python-osc's dispatcher (which sleeps in the
  receive path until a bundle is due) is not used.
* One **reply thread** sends everything that goes out: `/distill/state` for every applied change
  (drained from `engine.changes`), `/distill/meter` and `/distill/codes` about 30 times a second,
  `/distill/stats` once a second, and whatever the receive thread queued (errors, dump,
  namespace). A reply target that is unreachable or slow only drops replies.
* The audio callback is never touched: control code only reads the engine's counters.

Reply formats (all sent to the reply target: `/distill/reply`, else `--reply HOST:PORT`, else
the last sender):

    /distill/state <address> <value...>     a change was applied (also what /distill/dump sends)
    /distill/dump/end <count>               after a dump
    /distill/namespace <address> <types> <lo> <hi> <default> <description>   one per parameter
    /distill/namespace/end <count>          after the namespace
    /distill/meter <peak>                   output level, 0..1+, ~30/s
    /distill/codes <int...>                 the current frame's codes, coarse to fine, ~30/s
    /distill/stats <rtf> <buffer_ms> <underruns> <latency_ms> <tempo_bpm>   once a second
    /distill/error <one line>               anything refused or clamped
"""
from __future__ import annotations

import argparse
import heapq
import ipaddress
import logging
import math
import queue
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from distill_live.control.params import PREFIX, ParamError, ParamRegistry

log = logging.getLogger("distill.osc")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9000
DEFAULT_OSCQUERY_PORT = 9001
MAX_PACKET = 65536  # bytes: anything larger is refused
MAX_BUNDLE_DEPTH = 8  # nested bundles deeper than this are refused
MAX_AHEAD = 60.0  # seconds: a bundle further in the future than this is refused
MAX_SCHEDULED = 10_000  # future-timed messages waiting at once
MAX_TCP_CLIENTS = 16
METER_RATE = 30.0  # /distill/meter and /distill/codes per second
STATS_PERIOD = 1.0  # seconds between /distill/stats
ERRORS_PER_SECOND = 50  # /distill/error messages sent at most; the rest are counted and summarised
OUTBOX_SIZE = 8192  # replies waiting for the reply thread; more are dropped (counted)
TCP_BACKLOG_LIMIT = 1 << 20  # bytes of replies buffered for a slow TCP client before it is dropped
FLOOD_WINDOW = 0.02  # seconds: the receive thread accounts its work per window ...
FLOOD_SHARE = 0.4  # ... and rests for the rest of a window once it has worked this share of it, so a flood
#                   can take at most this share of the interpreter from the generator (the kernel drops the excess)

_NTP_DELTA = 2208988800  # seconds from 1900-01-01 (NTP epoch) to 1970-01-01 (Unix epoch)
_BUNDLE = b"#bundle\x00"
_SLIP_END, _SLIP_ESC, _SLIP_ESC_END, _SLIP_ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD

DUMP, NAMESPACE, REPLY = f"{PREFIX}/dump", f"{PREFIX}/namespace", f"{PREFIX}/reply"


class OscConfigError(ValueError):
    """A setting that cannot work (address not allowed, port taken); the message is one sentence."""


# -- command line ----------------------------------------------------------------------------------


def _cidr(text: str) -> ipaddress._BaseNetwork:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an address or network like 192.168.1.0/24") from None


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT, e.g. 127.0.0.1:9002")
    return host.strip("[]"), int(port)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0..65535)")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the OSC and OSCQuery options to `distill-live serve`'s parser."""
    g = parser.add_argument_group("OSC control")
    g.add_argument("--osc-host", default=DEFAULT_HOST,
                   help="address to listen on (default 127.0.0.1; anything but loopback needs --osc-bind-any)")
    g.add_argument("--osc-port", type=_port, default=DEFAULT_PORT, help="UDP port (default 9000; 0 = any free port)")
    g.add_argument("--osc-tcp", type=_port, default=None, metavar="PORT",
                   help="also listen on this TCP port (OSC 1.1 SLIP framing, or OSC 1.0 length prefixes)")
    g.add_argument("--osc-bind-any", action="store_true",
                   help="allow listening on a non-loopback address, reachable from the network")
    g.add_argument("--allow", type=_cidr, action="append", default=[], metavar="CIDR",
                   help="obey only senders in this network (repeatable), e.g. --allow 192.168.1.0/24")
    g.add_argument("--reply", type=_host_port, default=None, metavar="HOST:PORT",
                   help="send replies and meters here (default: to the last sender)")
    g.add_argument("--no-osc", action="store_true", help="no OSC server at all")
    g.add_argument("--oscquery-port", type=_port, default=DEFAULT_OSCQUERY_PORT,
                   help="HTTP port of the OSCQuery namespace (default 9001)")
    g.add_argument("--no-oscquery", action="store_true", help="no OSCQuery HTTP server or zeroconf advert")


def start_control(engine, args: argparse.Namespace) -> "Control":
    """Start OSC (and OSCQuery) for a running engine from parsed `serve` options; `.close()` stops it."""
    parts = []
    osc = None
    try:
        if not getattr(args, "no_osc", False):
            osc = OscServer(engine, host=args.osc_host, port=args.osc_port, tcp_port=args.osc_tcp,
                            bind_any=args.osc_bind_any, allow=args.allow, reply=args.reply)
            parts.append(osc)
            log.info("OSC on udp://%s:%d%s", args.osc_host, osc.port,
                     f" and tcp port {osc.tcp_port}" if osc.tcp_port else "")
        if not getattr(args, "no_oscquery", False):
            from .oscquery import OscQueryServer

            parts.append(OscQueryServer(engine, host=args.osc_host, port=args.oscquery_port,
                                        osc_port=osc.port if osc else None, bind_any=args.osc_bind_any,
                                        allow=args.allow))
    except Exception:
        for p in parts:
            p.close()
        raise
    return Control(parts, osc)


@dataclass
class Control:
    parts: list
    osc: "OscServer | None" = None

    def close(self) -> None:
        for p in reversed(self.parts):
            p.close()


def check_bind(host: str, bind_any: bool, what: str = "OSC") -> list[tuple]:
    """Resolve `host`; refuse anything but loopback unless `bind_any`. Returns getaddrinfo entries."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except socket.gaierror:
        raise OscConfigError(f"cannot listen for {what} on {host!r}: no such host or address") from None
    if not bind_any:
        for info in infos:
            if not ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback:
                raise OscConfigError(f"refusing to listen for {what} on {host} (reachable from the network) "
                                     f"without --osc-bind-any")
    return infos


# -- address patterns --------------------------------------------------------------------------------

_WILDCARDS = frozenset("?*[]{}")
MAX_PATTERN = 256  # characters: longer address patterns are refused


def has_wildcards(address: str) -> bool:
    return "//" in address or not _WILDCARDS.isdisjoint(address)


_DEEP = object()  # OSC 1.1 "//": any number of levels


class AddressPattern:
    """An OSC address pattern: `?` one character, `*` any run, `[abc]` `[a-z]` `[!a]` one of a set,
    `{foo,bar}` one of the strings (none of them cross a `/`), and OSC 1.1's `//` (any number of levels).

    Matching is linear per token (a set of reachable positions, no backtracking), so a hostile pattern
    such as `/**********x` costs microseconds, not minutes. Raises ValueError, a sentence, when malformed."""

    def __init__(self, pattern: str):
        if len(pattern) > MAX_PATTERN:
            raise ValueError(f"an address pattern over {MAX_PATTERN} characters refused")
        if not pattern.startswith("/"):
            raise ValueError(f"address pattern {pattern} does not start with /")
        self.pattern = pattern
        parts = pattern[1:].split("/")
        self.segments: list = []
        for i, part in enumerate(parts):
            if part == "" and 0 < i < len(parts) - 1 or (part == "" and i == 0 and len(parts) > 1):
                if not self.segments or self.segments[-1] is not _DEEP:
                    self.segments.append(_DEEP)
            else:
                self.segments.append(self._tokens(part))

    def _tokens(self, seg: str) -> list:
        out, i = [], 0
        while i < len(seg):
            c = seg[i]
            if c == "*":
                if not out or out[-1] != ("*",):
                    out.append(("*",))
            elif c == "?":
                out.append(("?",))
            elif c == "[":
                end = seg.find("]", i + 1)
                if end < 0:
                    raise ValueError(f"address pattern {self.pattern} has a '[' without ']'")
                body = seg[i + 1:end]
                negate = body.startswith("!")
                body = body[1:] if negate else body
                if not body:
                    raise ValueError(f"address pattern {self.pattern} has an empty [] set")
                ranges, j = [], 0
                while j < len(body):
                    if j + 2 < len(body) and body[j + 1] == "-":
                        if body[j] > body[j + 2]:
                            raise ValueError(f"address pattern {self.pattern} has a backwards range "
                                             f"{body[j]}-{body[j + 2]}")
                        ranges.append((body[j], body[j + 2]))
                        j += 3
                    else:
                        ranges.append((body[j], body[j]))
                        j += 1
                out.append(("[", tuple(ranges), negate))
                i = end
            elif c == "{":
                end = seg.find("}", i + 1)
                if end < 0:
                    raise ValueError(f"address pattern {self.pattern} has a '{{' without '}}'")
                alternatives = seg[i + 1:end].split(",")
                if any("{" in a for a in alternatives):
                    raise ValueError(f"address pattern {self.pattern} has a nested {{}} list")
                out.append(("{", tuple(alternatives)))
                i = end
            elif c in "]}":
                raise ValueError(f"address pattern {self.pattern} has a stray '{c}'")
            else:
                out.append(("=", c))
            i += 1
        return out

    @staticmethod
    def _segment_matches(tokens: list, s: str) -> bool:
        n = len(s)
        here = {0}
        for tok in tokens:
            kind = tok[0]
            if kind == "*":
                here = set(range(min(here), n + 1))
                continue
            nxt = set()
            for p in here:
                if kind == "=":
                    if p < n and s[p] == tok[1]:
                        nxt.add(p + 1)
                elif kind == "?":
                    if p < n:
                        nxt.add(p + 1)
                elif kind == "[":
                    if p < n and any(lo <= s[p] <= hi for lo, hi in tok[1]) != tok[2]:
                        nxt.add(p + 1)
                else:
                    for a in tok[1]:
                        if s.startswith(a, p):
                            nxt.add(p + len(a))
            here = nxt
            if not here:
                return False
        return n in here

    def match(self, address: str) -> bool:
        parts = address[1:].split("/") if address.startswith("/") else None
        if parts is None:
            return False
        memo: dict[tuple[int, int], bool] = {}

        def go(i: int, j: int) -> bool:
            key = (i, j)
            if key not in memo:
                if i == len(self.segments):
                    memo[key] = j == len(parts)
                elif self.segments[i] is _DEEP:
                    memo[key] = any(go(i + 1, k) for k in range(j, len(parts)))
                else:
                    memo[key] = j < len(parts) and self._segment_matches(self.segments[i], parts[j]) \
                        and go(i + 1, j + 1)
            return memo[key]

        return go(0, 0)


# -- packets -------------------------------------------------------------------------------------------


def ntp_to_unix(timetag: int) -> float | None:
    """Unix time of an OSC timetag; None for 'immediately' (timetag 1)."""
    if timetag == 1:
        return None
    return timetag / 4294967296.0 - _NTP_DELTA


def unix_to_ntp(seconds: float) -> int:
    return int(round((seconds + _NTP_DELTA) * 4294967296.0))


class PacketError(ValueError):
    pass


def parse_packet(data: bytes) -> list[tuple[float | None, OscMessage]]:
    """Every message of a packet with the Unix time it is due (None = now), in packet order.
    Raises PacketError (a sentence) when any part is malformed: then nothing in it is applied."""
    out: list[tuple[float | None, OscMessage]] = []
    _walk(data, None, 0, out)
    return out


def _walk(data: bytes, due: float | None, depth: int, out: list) -> None:
    if data.startswith(_BUNDLE):
        if depth >= MAX_BUNDLE_DEPTH:
            raise PacketError(f"bundles nested deeper than {MAX_BUNDLE_DEPTH}")
        if len(data) < 16:
            raise PacketError("a bundle without a complete timetag")
        when = ntp_to_unix(struct.unpack_from(">Q", data, 8)[0])
        if when is None or (due is not None and when < due):
            when = due  # an enclosed bundle is never due before its enclosing one
        i = 16
        while i < len(data):
            if i + 4 > len(data):
                raise PacketError("a bundle element size is cut short")
            size = struct.unpack_from(">i", data, i)[0]
            if size <= 0 or size % 4 or i + 4 + size > len(data):
                raise PacketError(f"a bundle element claims {size} bytes")
            _walk(data[i + 4:i + 4 + size], when, depth + 1, out)
            i += 4 + size
    elif data.startswith(b"/"):
        if len(data) % 4:
            raise PacketError(f"its length {len(data)} is not a multiple of 4")
        try:
            msg = OscMessage(data)
        except Exception as e:  # python-osc raises ParseError, but also IndexError/struct/unicode errors
            raise PacketError(f"cannot parse a message ({_first_line(e)})") from None
        out.append((due, msg))
    elif not data:
        raise PacketError("it is empty")
    else:
        raise PacketError("it is neither an OSC message nor a bundle")


def build_message(address: str, args: Iterable[Any]) -> bytes:
    b = OscMessageBuilder(address)
    for a in args:
        if isinstance(a, bool):
            b.add_arg(int(a), "i")
        elif isinstance(a, int):
            b.add_arg(a, "i" if -2**31 <= a < 2**31 else "h")
        elif isinstance(a, float):
            b.add_arg(a, "f")
        else:
            b.add_arg(str(a), "s")
    return b.build().dgram


def slip_encode(data: bytes) -> bytes:
    return b"\xc0" + data.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"


def slip_decode(frame: bytes) -> bytes:
    return frame.replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xdd", b"\xdb")


def _first_line(x: Any, limit: int = 240) -> str:
    """One printable line, at most `limit` characters."""
    text = " ".join(str(x).split())
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


# -- namespace and tables --------------------------------------------------------------------------------


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
                out.append((f"{PREFIX}/state", (f"{address}/free",)))
                continue
        if address in values:
            out.append((f"{PREFIX}/state", (address, values[address])))
    out.append((f"{PREFIX}/dump/end", (len(out),)))
    return out


MODEL_DEPENDENT = {  # ranges the README shows in words: they depend on the model
    "topk": "0..codebook size",
    "cue": "0..cues − 1",
    "levels": "1..levels",
    "lock": "0..levels",
}

_ARG_WORDS = {"f": "f", "i": "i", "b": "i 0/1", "s": "s (path)", "f*": "f × worlds", "i,f?": "i [f]", "": "—"}

LAYER_ROWS = [
    (DUMP, "—", "", "", "reply every current value as `/distill/state <address> <value>`, "
                        "then `/distill/dump/end <count>`"),
    (NAMESPACE, "—", "", "", "reply `/distill/namespace <address> <types> <lo> <hi> <default> <description>` "
                             "per parameter, then `/distill/namespace/end <count>`"),
    (REPLY, "[i]", "1..65535", "", "send replies to this port on the sender's host (no argument: back to "
                                   "`--reply`, else the last sender)"),
    (f"{PREFIX}/midi/learn", "s", "", "", "bind the next MIDI control moved to this parameter (e.g. `gain`)"),
    (f"{PREFIX}/midi/save", "s", "", "", "write the MIDI map, with what was learned, to this file"),
]

REPLY_ROWS = [
    (f"{PREFIX}/state", "s, any…", "a change was applied: address and value(s); several changes of one address "
                                  "within 10 ms are sent as the latest"),
    (f"{PREFIX}/meter", "f", f"output peak, about {METER_RATE:g} per second"),
    (f"{PREFIX}/codes", "i…", "the current frame's codes, coarse to fine, at the meter rate (-1: a level not decoded)"),
    (f"{PREFIX}/stats", "f f i f f", "real-time factor (0 before the first frame), buffer depth ms, underruns, "
                                    "latency ms, MIDI clock tempo in bpm (0: no clock); once a second"),
    (f"{PREFIX}/error", "s", f"one line for anything refused or clamped (at most {ERRORS_PER_SECOND} per second)"),
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
        smooth = f" (smoothed {p.smooth * 1000:g} ms)" if p.smooth else ""
        lines.append(f"| `{p.address}` | {_ARG_WORDS.get(p.types, p.types)} | {rng} | {default} | "
                     f"{esc(p.description)}{smooth} |")
    for address, args, rng, default, meaning in LAYER_ROWS:
        lines.append(f"| `{address}` | {args} | {rng} | {default} | {esc(meaning)} |")
    lines += ["", "| reply | args | meaning |", "|---|---|---|"]
    for address, args, meaning in REPLY_ROWS:
        lines.append(f"| `{address}` | {args} | {esc(meaning)} |")
    return "\n".join(lines) + "\n"


# -- the server ------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Tcp:
    sock: socket.socket
    peer: tuple
    slip: bool | None = None  # decided by the first byte: 0xC0 = SLIP (OSC 1.1), else length prefixes (1.0)
    buf: bytearray = field(default_factory=bytearray)
    discarding: bool = False  # SLIP: skipping an oversized frame until its END
    pending: bytes = b""  # replies not yet written (slow reader)
    lock: threading.Lock = field(default_factory=threading.Lock)
    dead: bool = False

    def frame(self, data: bytes) -> bytes:
        return struct.pack(">i", len(data)) + data if self.slip is False else slip_encode(data)


@dataclass
class Counters:
    packets: int = 0  # packets received (any sender)
    messages: int = 0  # messages submitted to the registry (each matched address counts)
    refused: int = 0  # messages or packets refused
    not_allowed: int = 0  # packets from senders outside --allow
    applied: int = 0  # changes the engine reported applied (drained from engine.changes)
    replies: int = 0  # messages sent
    replies_dropped: int = 0  # replies that could not be sent or queued
    errors_suppressed: int = 0  # /distill/error over the rate limit
    flood_pauses: int = 0  # times the receive thread rested to leave the generator its share


class OscServer:
    """OSC over UDP (and TCP) for one engine. Thread-safe to `close()` from anywhere."""

    def __init__(self, engine, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, tcp_port: int | None = None,
                 bind_any: bool = False, allow: Sequence = (), reply: tuple[str, int] | None = None,
                 feedback: bool = True):
        self.engine = engine
        self.allow = [ipaddress.ip_network(a, strict=False) if isinstance(a, str) else a for a in allow]
        self.counters = Counters()
        self.feedback = feedback
        infos = check_bind(host, bind_any)
        family, _, _, _, sockaddr = infos[0]
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self.udp = self.tcp = None
        try:
            self.udp = socket.socket(family, socket.SOCK_DGRAM)
            self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self._bind(self.udp, sockaddr[0], port, "UDP")
            self.udp.setblocking(False)
            self.port = self.udp.getsockname()[1]
            self.tcp_port = None
            if tcp_port is not None:
                self.tcp = socket.socket(family, socket.SOCK_STREAM)
                self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self._bind(self.tcp, sockaddr[0], tcp_port, "TCP")
                self.tcp.listen(8)
                self.tcp.setblocking(False)
                self.tcp_port = self.tcp.getsockname()[1]
            self.reply_to = self._resolve_reply(reply) if reply else None
        except BaseException:
            self._close_sockets()
            raise
        self.handlers: dict[str, Callable[[list], None]] = {}  # extra addresses (e.g. /distill/midi/learn);
        #   a handler runs on the receive thread, must be quick, and raises ValueError(sentence) to refuse
        self._dumps: list[int] = []  # /distill/dump requests: the engine's sample count when each came
        self.runtime_reply: tuple | None = None  # set by /distill/reply
        self.last_sender: tuple | None = None  # ("udp", addr) or ("tcp", _Tcp)
        self._tcp_clients: dict[socket.socket, _Tcp] = {}
        self._allowed_cache: dict[str, bool] = {}
        self._pattern_cache: dict[str, tuple[str, ...]] = {}
        self._pattern_registry = None
        self._scheduled: list[float] = []  # engine times of future-timed messages not yet due
        self._error_window = (0.0, 0)  # (second, errors sent in it)
        self._warned: dict[str, float] = {}
        self._window_end, self._busy = 0.0, 0.0
        self.outbox: queue.Queue = queue.Queue(OUTBOX_SIZE)
        self._closing = threading.Event()
        self._sel.register(self.udp, selectors.EVENT_READ, "udp")
        if self.tcp is not None:
            self._sel.register(self.tcp, selectors.EVENT_READ, "listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._rx = threading.Thread(target=self._receive_loop, name="distill-osc-rx", daemon=True)
        self._tx = threading.Thread(target=self._reply_loop, name="distill-osc-tx", daemon=True)
        self._rx.start()
        self._tx.start()

    @staticmethod
    def _bind(sock: socket.socket, host: str, port: int, what: str) -> None:
        try:
            sock.bind((host, port))
        except OSError as e:
            raise OscConfigError(f"cannot listen for OSC on {what} {host}:{port} ({e.strerror or e}); "
                                 f"pick another port") from None

    def _resolve_reply(self, reply: tuple[str, int]) -> tuple:
        host, port = reply
        try:
            info = socket.getaddrinfo(host, port, self.udp.family, socket.SOCK_DGRAM)
        except socket.gaierror:
            raise OscConfigError(f"cannot send OSC replies to {host}:{port}: no such host") from None
        return ("udp", info[0][4])

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        for t in (self._rx, self._tx):
            if t is not threading.current_thread():
                t.join(timeout=2)
        self._close_sockets()

    def _close_sockets(self) -> None:
        for c in list(getattr(self, "_tcp_clients", {}).values()):
            c.dead = True
            c.sock.close()
        for s in (self.udp, self.tcp, self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        self._sel.close()

    @property
    def reply_target(self) -> tuple | None:
        return self.runtime_reply or self.reply_to or self.last_sender

    # -- receive thread --------------------------------------------------------------------------

    def _receive_loop(self) -> None:
        while not self._closing.is_set():
            try:
                events = self._sel.select(timeout=0.5)
            except (OSError, ValueError):
                if self._closing.is_set():
                    return
                raise
            for key, _ in events:
                try:
                    if key.data == "udp":
                        self._read_udp()
                    elif key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        return
                    else:
                        self._read_tcp(key.data)
                except Exception as e:  # never let one packet or peer stop the server
                    self._warn("rx", f"OSC receive problem: {_first_line(e)}")

    def _spend(self, since: float) -> float:
        """Account receive-thread work since `since`; past FLOOD_SHARE of the window, rest until it ends.
        Python threads share one interpreter lock: without this a flood would starve the generator."""
        now = time.perf_counter()
        if now >= self._window_end:
            self._window_end, self._busy = now + FLOOD_WINDOW, 0.0
        self._busy += now - since
        if self._busy > FLOOD_WINDOW * FLOOD_SHARE:
            self.counters.flood_pauses += 1
            time.sleep(max(0.0, self._window_end - now))
            now = time.perf_counter()
            self._window_end, self._busy = now + FLOOD_WINDOW, 0.0
        return now

    def _read_udp(self) -> None:
        t = time.perf_counter()
        for _ in range(512):  # then let TCP peers have a turn
            try:
                data, addr = self.udp.recvfrom(MAX_PACKET + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ECONNREFUSED reported late for a reply sent from this socket
                continue
            self.handle_packet(data, ("udp", addr), addr[0])
            t = self._spend(t)

    def _accept(self) -> None:
        try:
            sock, peer = self.tcp.accept()
        except OSError:
            return
        if len(self._tcp_clients) >= MAX_TCP_CLIENTS or not self._allowed(peer[0]):
            self._refuse_sender(peer[0]) if not self._allowed(peer[0]) else self._warn(
                "tcp-full", f"refused a TCP OSC client: already {MAX_TCP_CLIENTS} connected")
            sock.close()
            return
        sock.setblocking(False)
        client = _Tcp(sock, peer)
        self._tcp_clients[sock] = client
        self._sel.register(sock, selectors.EVENT_READ, client)

    def _drop_tcp(self, c: _Tcp) -> None:
        c.dead = True
        self._tcp_clients.pop(c.sock, None)
        try:
            self._sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        if self.last_sender and self.last_sender[1] is c:
            self.last_sender = None

    def _read_tcp(self, c: _Tcp) -> None:
        t = time.perf_counter()
        try:
            self._read_tcp_chunk(c)
        finally:
            self._spend(t)

    def _read_tcp_chunk(self, c: _Tcp) -> None:
        try:
            chunk = c.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk or c.dead:
            self._drop_tcp(c)
            return
        if c.slip is None:
            c.slip = chunk[0] == _SLIP_END
        c.buf += chunk
        if c.slip:
            while True:
                end = c.buf.find(b"\xc0")
                if end < 0:
                    if len(c.buf) > 2 * MAX_PACKET:  # escaped size bound
                        if not c.discarding:
                            self._error(("tcp", c), f"a packet of more than {2 * MAX_PACKET} bytes refused: "
                                                    f"the limit is {MAX_PACKET}")
                        c.discarding = True
                        c.buf.clear()
                    return
                frame, c.buf[:] = bytes(c.buf[:end]), c.buf[end + 1:]
                if c.discarding:
                    c.discarding = False
                    continue
                if frame:
                    self.handle_packet(slip_decode(frame), ("tcp", c), c.peer[0])
        else:
            while len(c.buf) >= 4:
                size = struct.unpack_from(">i", c.buf, 0)[0]
                if size <= 0 or size > MAX_PACKET:
                    self._error(("tcp", c), f"TCP packet size {size} refused (1..{MAX_PACKET} bytes); "
                                            f"closing the connection")
                    self._drop_tcp(c)
                    return
                if len(c.buf) < 4 + size:
                    return
                frame, c.buf[:] = bytes(c.buf[4:4 + size]), c.buf[4 + size:]
                self.handle_packet(frame, ("tcp", c), c.peer[0])

    def _allowed(self, ip: str) -> bool:
        if not self.allow:
            return True
        ok = self._allowed_cache.get(ip)
        if ok is None:
            try:
                addr = ipaddress.ip_address(ip.split("%")[0])
                if getattr(addr, "ipv4_mapped", None):
                    addr = addr.ipv4_mapped
                ok = any(addr in net for net in self.allow if net.version == addr.version)
            except ValueError:
                ok = False
            if len(self._allowed_cache) > 4096:
                self._allowed_cache.clear()
            self._allowed_cache[ip] = ok
        return ok

    def _refuse_sender(self, ip: str) -> None:
        self.counters.not_allowed += 1
        self.counters.refused += 1
        # told to the configured target only: never answer a sender we do not obey
        target = self.runtime_reply or self.reply_to
        if target is not None:
            self._error(target, f"ignored a packet from {ip}: that sender is not in --allow")
        self._warn(f"allow:{ip}", f"ignoring OSC from {ip}: not in --allow")

    def handle_packet(self, data: bytes, source: tuple, ip: str) -> None:
        """Parse and apply one packet from `source` (("udp", addr) or ("tcp", conn)). Never raises."""
        self.counters.packets += 1
        if not self._allowed(ip):
            self._refuse_sender(ip)
            return
        self.last_sender = source
        if len(data) > MAX_PACKET:
            self._refused(f"a packet of {len(data)} bytes refused: the limit is {MAX_PACKET}")
            return
        try:
            items = parse_packet(data)
        except PacketError as e:
            self._refused(f"a malformed packet of {len(data)} bytes refused: {e}")
            return
        except RecursionError:
            self._refused("a malformed packet refused: nested too deep")
            return
        batches: dict[float | None, list] = {}
        for due, msg in items:
            try:
                address, args = msg.address, msg.params
            except Exception:
                self._refused("a malformed message refused")
                continue
            self._dispatch(address, args, due, source, batches)
        for at, batch in batches.items():
            self.engine.registry.submit_validated(batch, at=at)
            self.counters.messages += len(batch)

    def _dispatch(self, address: str, args: list, due: float | None, source: tuple, batches: dict) -> None:
        if address == DUMP:  # answered once the generator has applied what came before it
            self._dumps.append(self.engine.player.samples)
            return
        if address == NAMESPACE:
            self._queue_many(namespace_messages(self.engine.registry), None)
            return
        if address == REPLY:
            self._set_reply(args, source)
            return
        handler = self.handlers.get(address)
        if handler is not None:
            try:
                handler(list(args))
            except ValueError as e:
                self._refused(str(e))
            return
        registry = self.engine.registry
        try:
            targets = self._match(address, registry)
        except ValueError as e:
            self._refused(str(e))
            return
        if not targets:
            self._refused(f"unknown address {_first_line(address, 120)}")
            return
        at = None
        if due is not None:
            ahead = due - time.time()
            if ahead > MAX_AHEAD:
                self._refused(f"a bundle for {_first_line(address, 80)} is {ahead:.0f} s ahead; "
                              f"the limit is {MAX_AHEAD:g} s")
                return
            if ahead > 0:
                # the frame it falls in: the start of the frame whose span holds the timetag (the same
                # division as Player.time, so the generator applies it exactly at that frame)
                rate = self.engine.player.frame_rate
                at = math.floor(self.engine.time_of(due) * rate) / rate
                if not self._schedule(at, len(targets)):
                    self._refused(f"{address} refused: {MAX_SCHEDULED} timed messages are already waiting")
                    return
        batch = batches.setdefault(at, [])
        for target in targets:
            p = registry.params[target]
            a = [int(x) for x in args] if p.types == "b" and args and all(isinstance(x, bool) for x in args) else args
            try:
                value, notes = registry.validate(target, a)
            except ParamError as e:
                self._refused(str(e))
                continue
            for note in notes:
                self._error(None, note)
            batch.append((target, value))

    def _match(self, address: str, registry: ParamRegistry) -> tuple[str, ...]:
        if not has_wildcards(address):
            return (address,) if address in registry.params else ()
        if registry is not self._pattern_registry:
            self._pattern_cache.clear()
            self._pattern_registry = registry
        hit = self._pattern_cache.get(address)
        if hit is None:
            pattern = AddressPattern(address)
            hit = tuple(a for a in registry.params if pattern.match(a))
            if len(self._pattern_cache) > 1024:
                self._pattern_cache.clear()
            self._pattern_cache[address] = hit
        return hit

    def _schedule(self, at: float, n: int) -> bool:
        now = self.engine.player.time
        while self._scheduled and self._scheduled[0] <= now:
            heapq.heappop(self._scheduled)
        if len(self._scheduled) + n > MAX_SCHEDULED:
            return False
        for _ in range(n):
            heapq.heappush(self._scheduled, at)
        return True

    def _set_reply(self, args: list, source: tuple) -> None:
        if not args:
            self.runtime_reply = None
            return
        port = args[0]
        if len(args) != 1 or isinstance(port, bool) or not isinstance(port, (int, float)) or not (
                math.isfinite(port) and 1 <= port <= 65535 and port == int(port)):
            self._refused(f"{REPLY} takes one port number (1..65535), got {_first_line(args, 80)}")
            return
        if source[0] == "tcp":
            host = source[1].peer[0]
        else:
            host = source[1][0]
        self.runtime_reply = ("udp", (host, int(port)) if self.udp.family == socket.AF_INET
                              else (host, int(port), 0, 0))

    # -- outgoing (queued; only the reply thread sends) ---------------------------------------------------

    def _refused(self, sentence: str) -> None:
        self.counters.refused += 1
        self._error(None, sentence)

    def _error(self, target: tuple | None, sentence: str) -> None:
        now = int(time.monotonic())
        second, sent = self._error_window
        if second != now:
            second, sent = now, 0
        if sent >= ERRORS_PER_SECOND:
            self.counters.errors_suppressed += 1
            return
        self._error_window = (second, sent + 1)
        log.debug("refused: %s", sentence)
        self._queue(f"{PREFIX}/error", (_first_line(sentence),), target)

    def _queue(self, address: str, args: tuple, target: tuple | None = None) -> None:
        try:
            self.outbox.put_nowait((target, address, args))
        except queue.Full:
            self.counters.replies_dropped += 1

    def _queue_many(self, messages: list[tuple[str, tuple]], target: tuple | None) -> None:
        for address, args in messages:
            self._queue(address, args, target)

    def _warn(self, key: str, text: str, every: float = 10.0) -> None:
        now = time.monotonic()
        if now - self._warned.get(key, -every) >= every:
            if len(self._warned) > 1024:
                self._warned.clear()
            self._warned[key] = now
            log.warning(text)

    # -- reply thread --------------------------------------------------------------------------------

    def _reply_loop(self) -> None:
        meter_period = 1.0 / METER_RATE
        next_meter = next_stats = time.monotonic()
        last_codes = None
        reported = 0
        while not self._closing.is_set():
            try:
                item = self.outbox.get(timeout=0.01)
                self._send_item(item)
                for _ in range(OUTBOX_SIZE):
                    self._send_item(self.outbox.get_nowait())
            except queue.Empty:
                pass
            except Exception as e:
                self._warn("tx", f"OSC reply problem: {_first_line(e)}")
            try:
                self._send_changes()
                while self._dumps and self.engine.player.samples > self._dumps[0]:
                    self._dumps.pop(0)
                    for address, args in dump_messages(self.engine.registry):
                        self._send(None, address, args)
                for _ in range(100):
                    try:
                        self._error(None, self.engine.errors.get_nowait())
                    except queue.Empty:
                        break
                now = time.monotonic()
                if self.feedback and now >= next_meter:
                    next_meter = max(next_meter + meter_period, now - meter_period)
                    self._send(None, f"{PREFIX}/meter", (float(self.engine.level),))
                    codes = getattr(self.engine.player, "last_codes", None)
                    if codes is not None and codes is not last_codes:
                        last_codes = codes
                        self._send(None, f"{PREFIX}/codes", tuple(int(c) for c in codes.tolist()))
                if now >= next_stats:
                    next_stats = max(next_stats + STATS_PERIOD, now)
                    if self.feedback:
                        self._send(None, f"{PREFIX}/stats", self.stats())
                    suppressed = self.counters.errors_suppressed - reported
                    if suppressed:
                        reported += suppressed
                        self._send(None, f"{PREFIX}/error", (f"{suppressed} more refused messages were not "
                                                             f"reported (at most {ERRORS_PER_SECOND} per second)",))
            except Exception as e:  # a reply problem must never stop feedback or anything else
                self._warn("tx", f"OSC reply problem: {_first_line(e)}")

    def stats(self) -> tuple[float, float, int, float, float]:
        """(rtf, buffer depth ms, underruns, latency ms, tempo bpm or 0) as /distill/stats sends them."""
        e = self.engine
        summary = {}
        for _ in range(5):
            try:
                summary = e.telemetry.summary()
                break
            except (RuntimeError, ValueError):  # the window was appended to while copying
                continue
        buffer_ms = e.queued_seconds() * 1000.0
        latency_ms = e.latency_ms()
        bpm = (e.tempo() if e.tempo is not None else None) or 0.0
        return (float(summary.get("rtf", 0.0)), float(buffer_ms), int(summary.get("underruns", 0)), float(latency_ms),
                float(bpm))

    def _send_changes(self) -> None:
        latest: dict[str, tuple] = {}
        registry, changes = self.engine.registry, self.engine.changes
        for _ in range(100_000):
            try:
                address, args = changes.get_nowait()
            except queue.Empty:
                break
            self.counters.applied += 1
            p = registry.params.get(address)
            if p is None or not p.stored:  # a command: every one is reported
                self._send(None, f"{PREFIX}/state", (address, *args))
                continue
            for changed, value in registry.expand(address, args) + [(address, args)]:  # mix: its worlds, then itself
                latest.pop(changed, None)  # re-insert: keep the order of the latest change
                latest[changed] = value
        for address, args in latest.items():
            self._send(None, f"{PREFIX}/state", (address, *args))

    def _send_item(self, item: tuple) -> None:
        target, address, args = item
        self._send(target, address, args)

    def _send(self, target: tuple | None, address: str, args: Iterable[Any]) -> None:
        target = target or self.reply_target
        if target is None:
            return
        try:
            data = build_message(address, args)
        except Exception as e:
            self.counters.replies_dropped += 1
            self._warn("build", f"cannot build OSC reply {address}: {_first_line(e)}")
            return
        kind, where = target
        if kind == "udp":
            try:
                self.udp.sendto(data, where)
                self.counters.replies += 1
            except OSError as e:  # unreachable, refused, buffer full: the reply is dropped, nothing else
                self.counters.replies_dropped += 1
                self._warn(f"reply:{where}", f"cannot send OSC replies to {where[0]}:{where[1]} ({e.strerror or e})")
        else:
            self._send_tcp(where, where.frame(data))

    def _send_tcp(self, c: _Tcp, frame: bytes) -> None:
        with c.lock:
            if c.dead:
                self.counters.replies_dropped += 1
                return
            data = c.pending + frame
            try:
                sent = c.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                c.dead = True
                self.counters.replies_dropped += 1
                try:
                    c.sock.shutdown(socket.SHUT_RDWR)  # the receive thread sees EOF and cleans up
                except OSError:
                    pass
                return
            c.pending = data[sent:]
            self.counters.replies += 1
            if len(c.pending) > TCP_BACKLOG_LIMIT:
                c.dead = True
                self._warn(f"tcp-slow:{c.peer}", f"dropping TCP OSC client {c.peer[0]}: it does not read replies")
                try:
                    c.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill_live.control.osc.server",
                                     description="Print the README's OSC table, generated from the registry.")
    parser.add_argument("--markdown", action="store_true", help="print the markdown tables (the default)")
    parser.parse_args(argv)
    print(markdown_table(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The OSC wire format: packets, bundles, timetags, TCP framing and address patterns.

Nothing here knows about distill: it turns bytes into (due time, message) pairs and back, and
matches OSC address patterns. Messages are parsed and built with python-osc; bundles are walked
here, with a depth limit, so a hostile packet is refused instead of recursing without bound.
"""
from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

MAX_PACKET = 65536  # bytes: anything larger is refused
MAX_BUNDLE_DEPTH = 8  # nested bundles deeper than this are refused
SLIP_END = 0xC0  # a SLIP frame's first and last byte (OSC 1.1 over TCP)

_NTP_DELTA = 2208988800  # seconds from 1900-01-01 (NTP epoch) to 1970-01-01 (Unix epoch)
_BUNDLE = b"#bundle\x00"


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
            raise PacketError(f"cannot parse a message ({one_line(e)})") from None
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


def one_line(x: Any, limit: int = 240) -> str:
    """One printable line, at most `limit` characters."""
    text = " ".join(str(x).split())
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


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


# -- TCP ----------------------------------------------------------------------------------------------


@dataclass(eq=False)
class TcpClient:
    """One TCP connection: its framing, what it sent that is not a whole packet yet, and replies not yet
    written to it (a slow reader). The receive side reads it, the reply side writes to it."""

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

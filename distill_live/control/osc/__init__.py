"""OSC and OSCQuery for `distill-live serve`: the command-line options, and starting both servers.

    wire.py       packets, bundles, timetags, SLIP and address patterns (no distill in it)
    namespace.py  every address distill speaks, the replies, and the README's OSC tables
    server.py     the OSC server's receive thread: one table from address to handler, the registry for the rest
    replies.py    its reply thread: state, meters, stats and errors, to the reply target and subscribers
    oscquery.py   the namespace as JSON over HTTP, its WebSocket (LISTEN), the web page, the zeroconf advert
    livefeed.py   what the WebSocket streams: changes on their own addresses, meters, codes, measures
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
from dataclasses import dataclass
from typing import Callable

from .oscquery import DEFAULT_OSCQUERY_PORT, OscQueryServer
from .replies import FEEDBACK
from .server import DEFAULT_HOST, DEFAULT_PORT, OscServer

log = logging.getLogger("distill.osc")


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
                   help="send replies and meters here (default: to the last sender); any number of clients "
                        "can also /distill/subscribe")
    g.add_argument("--feedback", choices=FEEDBACK, default="both",
                   help="send each change as /distill/state <address> <value> (state), on its own address so "
                        "surfaces' faders follow (address), or both")
    g.add_argument("--no-osc", action="store_true", help="no OSC server at all")
    g.add_argument("--oscquery-port", type=_port, default=DEFAULT_OSCQUERY_PORT,
                   help="HTTP port of the OSCQuery namespace (default 9001)")
    g.add_argument("--no-oscquery", action="store_true", help="no OSCQuery HTTP server or zeroconf advert")


def start_control(engine, args: argparse.Namespace, handlers: dict[str, Callable[[list], None]] | None = None,
                  tempo: Callable[[], float | None] | None = None) -> "Control":
    """Start OSC (and OSCQuery) for a running engine from parsed `serve` options; `.close()` stops it.
    `handlers`: more addresses for the OSC server to answer (MIDI learn and save); `tempo`: the bpm of
    the clock serve follows, for /distill/stats."""
    parts = []
    osc = None
    try:
        if not getattr(args, "no_osc", False):
            osc = OscServer(engine, host=args.osc_host, port=args.osc_port, tcp_port=args.osc_tcp,
                            bind_any=args.osc_bind_any, allow=args.allow, reply=args.reply, handlers=handlers,
                            tempo=tempo, feedback=getattr(args, "feedback", "both"))
            parts.append(osc)
            log.info("OSC on udp://%s:%d%s", args.osc_host, osc.port,
                     f" and tcp port {osc.tcp_port}" if osc.tcp_port else "")
        if not getattr(args, "no_oscquery", False):
            parts.append(OscQueryServer(engine, host=args.osc_host, port=args.oscquery_port,
                                        osc_port=osc.port if osc else None, bind_any=args.osc_bind_any,
                                        allow=args.allow, osc=osc))
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

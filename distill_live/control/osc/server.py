"""The OSC server: steer a running engine from Max/MSP, SuperCollider, Pure Data, TouchOSC.

    UDP (and optional TCP) ──► receive thread ──parse, match, validate──► ParamRegistry inbox
                                      │                                         │ (generator thread
                                      ▼ outbox                                  ▼  applies per chunk)
    reply target ◄── reply thread ◄── engine.changes, level, last codes, stats

One **receive thread** (this file) reads every socket (selectors), parses packets (wire.py), and
maps each address to a handler through one table, as python-osc's dispatcher does: the few
addresses answered here (dump, namespace, reply, and MIDI learn and save when serve passes them
on), and the registry for everything else (address patterns matched against it, arguments
validated). It never sleeps and never sends: a bundle with a timetag is submitted at once with
`at=engine.time_of(timetag)`, and the generator applies it at the frame that plays at that time, or
at once if that frame is made already, in timetag order (ParamRegistry.apply_due). (python-osc's
own dispatcher sleeps in the receive path until a bundle is due, so it is not used.) A flood takes
at most a share of the interpreter from the generator (`_spend`).

One **reply thread** (replies.py) sends everything that goes out, to every listener kept here: the
reply target (`/distill/reply`, else `--reply HOST:PORT`, else the last sender) and any number of
subscribers (`/distill/subscribe [PORT]`, at most MAX_SUBSCRIBERS). A subscription over UDP is a lease
of LEASE seconds, renewed by every packet from the subscriber's host (and by subscribing again), so
a phone that goes away stops costing anything; over TCP it lasts as long as the connection.

Packets can also come from the OSCQuery WebSocket (`feed`, another thread): they wait in a queue and
this thread handles them as it handles any packet.

The engine is seen only through its public face: `registry`, `time`, `frame_rate`, `time_of`,
`level`, `last_codes`, `stats()`, and the `changes` and `errors` queues. The audio callback is
never touched.
"""
from __future__ import annotations

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
from typing import Callable, Sequence

from distill_live.control.params import ParamError, ParamRegistry

from .namespace import DUMP, LEASE, NAMESPACE, REPLY, SUBSCRIBE, SUBSCRIBED, UNSUBSCRIBE, namespace_messages
from .replies import Counters, Replies, Subscriber
from .wire import (
    MAX_PACKET,
    SLIP_END,
    AddressPattern,
    PacketError,
    TcpClient,
    has_wildcards,
    one_line,
    parse_packet,
    slip_decode,
)

log = logging.getLogger("distill.osc")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9000
MAX_AHEAD = 60.0  # seconds: a bundle further in the future than this is refused
MAX_SCHEDULED = 10_000  # future-timed messages waiting at once
MAX_TCP_CLIENTS = 16
MAX_SUBSCRIBERS = 16  # clients subscribed at once
FLOOD_WINDOW = 0.02  # seconds: the receive thread accounts its work per window ...
FLOOD_SHARE = 0.4  # ... and rests for the rest of a window once it has worked this share of it, so a flood
#                   can take at most this share of the interpreter from the generator (the kernel drops the excess)


class OscConfigError(ValueError):
    """A setting that cannot work (address not allowed, port taken); the message is one sentence."""


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


class OscServer:
    """OSC over UDP (and TCP) for one engine. Thread-safe to `close()` from anywhere."""

    def __init__(self, engine, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, tcp_port: int | None = None,
                 bind_any: bool = False, allow: Sequence = (), reply: tuple[str, int] | None = None,
                 meters: bool = True, handlers: dict[str, Callable[[list], None]] | None = None,
                 tempo: Callable[[], float | None] | None = None, feedback: str = "both", lease: float = LEASE):
        self.engine = engine
        self.allow = [ipaddress.ip_network(a, strict=False) if isinstance(a, str) else a for a in allow]
        self.counters = Counters()
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
        # the addresses answered here rather than by the registry, as python-osc's dispatcher maps them: a
        # handler takes the message's arguments, runs on the receive thread, must be quick, and raises
        # ValueError(one sentence) to refuse
        self.handlers: dict[str, Callable[[list], None]] = {
            DUMP: self._dump, NAMESPACE: self._namespace, REPLY: self._reply, SUBSCRIBE: self._subscribe,
            UNSUBSCRIBE: self._unsubscribe, **(handlers or {})}
        self.runtime_reply: tuple | None = None  # set by /distill/reply
        self.last_sender: tuple | None = None  # ("udp", addr) or ("tcp", TcpClient)
        self._source: tuple = ("ws", None)  # the sender of the packet being handled (receive thread)
        self.lease = lease
        self.subscribers: tuple[Subscriber, ...] = ()  # replaced whole: the reply thread reads it
        self._fed: queue.SimpleQueue = queue.SimpleQueue()  # packets from the WebSocket (`feed`)
        self._tcp_clients: dict[socket.socket, TcpClient] = {}
        self._allowed_cache: dict[str, bool] = {}
        self._pattern_cache: dict[str, tuple[str, ...]] = {}
        self._pattern_registry = None
        self._scheduled: list[float] = []  # engine times of future-timed messages not yet due
        self._window_end, self._busy = 0.0, 0.0
        self._closing = threading.Event()
        self._sel.register(self.udp, selectors.EVENT_READ, "udp")
        if self.tcp is not None:
            self._sel.register(self.tcp, selectors.EVENT_READ, "listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self.replies = Replies(engine, self.udp, self.reply_targets, self.counters, meters, tempo, feedback)
        self._tx = self.replies.thread
        self._rx = threading.Thread(target=self._receive_loop, name="distill-osc-rx", daemon=True)
        self._rx.start()

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
        if self._rx is not threading.current_thread():
            self._rx.join(timeout=2)
        self.replies.close()
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

    def reply_targets(self) -> list[tuple]:
        """Everyone who hears replies now: the reply target and the subscribers whose lease runs (any thread)."""
        now = time.monotonic()
        out = [self.reply_target] if self.reply_target is not None else []
        out += [s.target for s in self.subscribers if s.until > now and not _gone(s.target) and s.target not in out]
        return out

    def feed(self, data: bytes, ip: str) -> None:
        """A packet that came another way (the OSCQuery WebSocket), from `ip`: this server's thread applies
        it as any other (thread-safe, never blocks)."""
        self._fed.put((data, ip))
        try:
            self._wake_w.send(b"f")
        except OSError:
            pass

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
                        if b"x" in self._wake_r.recv(4096):
                            return
                        self._read_fed()
                    else:
                        self._read_tcp(key.data)
                except Exception as e:  # never let one packet or peer stop the server
                    self.replies.warn("rx", f"OSC receive problem: {one_line(e)}")

    def _read_fed(self) -> None:
        t = time.perf_counter()
        while True:
            try:
                data, ip = self._fed.get_nowait()
            except queue.Empty:
                return
            self.handle_packet(data, ("ws", None), ip)
            t = self._spend(t)

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
            self._refuse_sender(peer[0]) if not self._allowed(peer[0]) else self.replies.warn(
                "tcp-full", f"refused a TCP OSC client: already {MAX_TCP_CLIENTS} connected")
            sock.close()
            return
        sock.setblocking(False)
        client = TcpClient(sock, peer)
        self._tcp_clients[sock] = client
        self._sel.register(sock, selectors.EVENT_READ, client)

    def _drop_tcp(self, c: TcpClient) -> None:
        c.dead = True
        self._tcp_clients.pop(c.sock, None)
        try:
            self._sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        if self.last_sender and self.last_sender[1] is c:
            self.last_sender = None

    def _read_tcp(self, c: TcpClient) -> None:
        t = time.perf_counter()
        try:
            self._read_tcp_chunk(c)
        finally:
            self._spend(t)

    def _read_tcp_chunk(self, c: TcpClient) -> None:
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
            c.slip = chunk[0] == SLIP_END
        c.buf += chunk
        if c.slip:
            while True:
                end = c.buf.find(b"\xc0")
                if end < 0:
                    if len(c.buf) > 2 * MAX_PACKET:  # escaped size bound
                        if not c.discarding:
                            self.replies.error(("tcp", c), f"a packet of more than {2 * MAX_PACKET} bytes refused: "
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
                    self.replies.error(("tcp", c), f"TCP packet size {size} refused (1..{MAX_PACKET} bytes); "
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
            self.replies.error(target, f"ignored a packet from {ip}: that sender is not in --allow")
        self.replies.warn(f"allow:{ip}", f"ignoring OSC from {ip}: not in --allow")

    def handle_packet(self, data: bytes, source: tuple, ip: str) -> None:
        """Parse and apply one packet from `source` (("udp", addr) or ("tcp", conn)). Never raises."""
        self.counters.packets += 1
        if not self._allowed(ip):
            self._refuse_sender(ip)
            return
        self._source = source  # of the packet being handled
        if source[0] != "ws":  # a WebSocket client hears what it LISTENs to, not replies
            self.last_sender = source
        if self.subscribers:
            self._renew(ip)
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
            self._dispatch(address, args, due, batches)
        for at, batch in batches.items():
            self.engine.registry.submit_validated(batch, at=at)
            self.counters.messages += len(batch)

    def _dispatch(self, address: str, args: list, due: float | None, batches: dict) -> None:
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
            self._refused(f"unknown address {one_line(address, 120)}")
            return
        at = None
        if due is not None:
            ahead = due - time.time()
            if ahead > MAX_AHEAD:
                self._refused(f"a bundle for {one_line(address, 80)} is {ahead:.0f} s ahead; "
                              f"the limit is {MAX_AHEAD:g} s")
                return
            # the frame it falls in: the start of the frame whose span holds the timetag (the same
            # division as Player.time, so the generator applies it exactly at that frame); a frame made
            # already (a timetag that has passed) makes it late: applied at once, in timetag order
            rate = self.engine.frame_rate
            at = math.floor(self.engine.time_of(due) * rate) / rate
            if ahead > 0 and not self._schedule(at, len(targets)):
                self._refused(f"{address} refused: {MAX_SCHEDULED} timed messages are already waiting")
                return
        batch = batches.setdefault(at, [])
        for target in targets:
            if registry.released(target, args):  # a button let go: a trigger fires on the press only
                continue
            p = registry.params[target]
            a = [int(x) for x in args] if p.types == "b" and args and all(isinstance(x, bool) for x in args) else args
            try:
                value, notes = registry.validate(target, a)
            except ParamError as e:
                self._refused(str(e))
                continue
            for note in notes:
                self.replies.error(None, note)
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
        now = self.engine.time
        while self._scheduled and self._scheduled[0] <= now:
            heapq.heappop(self._scheduled)
        if len(self._scheduled) + n > MAX_SCHEDULED:
            return False
        for _ in range(n):
            heapq.heappush(self._scheduled, at)
        return True

    def _dump(self, args: list) -> None:
        self.replies.dump()

    def _namespace(self, args: list) -> None:
        self.replies.put_many(namespace_messages(self.engine.registry), None)

    def _reply(self, args: list) -> None:
        """/distill/reply PORT: replies go to that port on the sender's host; no port: as before."""
        if not args:
            self.runtime_reply = None
            return
        port = self._port(REPLY, args)
        self.runtime_reply = self._sender_at(port)

    def _port(self, address: str, args: list) -> int:
        port = args[0]
        if len(args) != 1 or isinstance(port, bool) or not isinstance(port, (int, float)) or not (
                math.isfinite(port) and 1 <= port <= 65535 and port == int(port)):
            raise ValueError(f"{address} takes one port number (1..65535), got {one_line(args, 80)}")
        return int(port)

    def _sender_at(self, port: int | None) -> tuple:
        """The sender of the message being handled, at `port` of its host (None: where it sent from; a
        TCP connection stays itself)."""
        kind, where = self._source
        if kind == "ws":
            raise ValueError("replies go over UDP or TCP OSC; a WebSocket client LISTENs instead (OSCQuery)")
        if kind == "tcp":
            return ("tcp", where) if port is None else ("udp", self._udp_address(where.peer[0], port))
        return ("udp", where if port is None else self._udp_address(where[0], port))

    def _udp_address(self, host: str, port: int) -> tuple:
        return (host, port) if self.udp.family == socket.AF_INET else (host, port, 0, 0)

    # -- subscriptions (receive thread) ----------------------------------------------------------

    def _subscribe(self, args: list) -> None:
        """/distill/subscribe [PORT]: this sender hears every reply at PORT of its host (no port: the port
        it sent from, or its TCP connection), until its lease ends; it is sent every value at once."""
        target = self._sender_at(self._port(SUBSCRIBE, args) if args else None)
        until = math.inf if target[0] == "tcp" else time.monotonic() + self.lease
        now = time.monotonic()
        kept = tuple(s for s in self.subscribers if s.until > now and not _gone(s.target) and s.target != target)
        if len(kept) >= MAX_SUBSCRIBERS:  # said to the client that asked, which hears nothing else
            self.subscribers = kept
            self.counters.refused += 1
            self.replies.error(target, f"{SUBSCRIBE} refused: {MAX_SUBSCRIBERS} clients are already subscribed "
                                       f"(one unsubscribes, or stays silent for {self.lease:g} s, to make room)")
            return
        self.subscribers = kept + (Subscriber(target, until),)
        port = target[1][1] if target[0] == "udp" else 0
        self.replies.put(SUBSCRIBED, (port, float(self.lease) if target[0] == "udp" else 0.0), target)
        self.replies.dump(target)

    def _unsubscribe(self, args: list) -> None:
        """/distill/unsubscribe [PORT]: the subscription /distill/subscribe [PORT] made ends."""
        target = self._sender_at(self._port(UNSUBSCRIBE, args) if args else None)
        self.subscribers = tuple(s for s in self.subscribers if s.target != target)

    def _renew(self, ip: str) -> None:
        until = time.monotonic() + self.lease
        for s in self.subscribers:
            if s.target[0] == "udp" and s.target[1][0] == ip:
                s.until = until

    def _refused(self, sentence: str) -> None:
        self.counters.refused += 1
        self.replies.error(None, sentence)

    def stats(self) -> tuple[float, float, int, float, float]:
        """(rtf, buffer depth ms, underruns, latency ms, tempo bpm or 0) as /distill/stats sends them."""
        return self.replies.stats()


def _gone(target: tuple) -> bool:
    """A TCP subscriber whose connection closed."""
    return target[0] == "tcp" and target[1].dead

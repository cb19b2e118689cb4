"""The OSC server's reply thread: everything distill says over OSC goes out from here.

    engine.changes ─► /distill/state <address> <value> and <address> <value> (`feedback`: the latest
                      of each address), /distill/state for every command
    engine.level, last_codes ─► /distill/meter, /distill/codes, about 30 times a second
    engine.stats() + the MIDI clock's tempo ─► /distill/stats, once a second
    engine.errors, and what the receive thread refused ─► /distill/error, at most 50 a second
    the receive thread's outbox (dump, namespace, errors for one sender) ─► as queued

Replies go to every listener: the reply target the receive thread keeps (`/distill/reply`, else
`--reply`, else the last sender) and every client subscribed with `/distill/subscribe` whose lease has
not ended (`Subscriber`). A target that is unreachable or slow only drops replies: nothing here can
stop the server.

A change goes out on `/distill/state` (what Max, Pd and SuperCollider patches route), on its own
address (what TouchOSC, Open Stage Control and Lemur move a fader with), or both: `feedback` says
which. Commands (cue, reset, ...) only ever on `/distill/state`, so a surface that sends back what it
receives cannot fire them again.
"""
from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from .namespace import CODES, ERROR, ERRORS_PER_SECOND, METER, METER_RATE, STATE, STATS, dump_messages
from .wire import TcpClient, build_message, one_line

log = logging.getLogger("distill.osc")

STATS_PERIOD = 1.0  # seconds between /distill/stats
FEEDBACK = ("both", "state", "address")  # how a change is sent: on /distill/state, its own address, or both
OUTBOX_SIZE = 8192  # replies waiting for the reply thread; more are dropped (counted)
TCP_BACKLOG_LIMIT = 1 << 20  # bytes of replies buffered for a slow TCP client before it is dropped


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


@dataclass(eq=False)
class Subscriber:
    """A client that asked for replies (`/distill/subscribe`): where they go, and until when
    (time.monotonic(); every packet from its host renews it; a TCP connection's lasts until it closes)."""

    target: tuple  # ("udp", addr) or ("tcp", TcpClient)
    until: float


class Replies:
    """The reply thread of one OSC server. `targets()` says where replies go now; `udp` sends them."""

    def __init__(self, engine, udp: socket.socket, targets: Callable[[], Sequence[tuple]], counters: Counters,
                 meters: bool = True, tempo: Callable[[], float | None] | None = None, feedback: str = "both"):
        if feedback not in FEEDBACK:
            raise ValueError(f"feedback must be one of {', '.join(FEEDBACK)}, not {feedback!r}")
        self.engine, self.udp, self.targets, self.counters = engine, udp, targets, counters
        self.meters = meters  # /distill/meter, /distill/codes and /distill/stats
        self.feedback = feedback
        self.tempo = tempo  # the bpm of the clock serve follows (MIDI), for /distill/stats; None: no clock
        self.outbox: queue.Queue = queue.Queue(OUTBOX_SIZE)
        self._changes = engine.changes.listen()
        self._dumps: deque[tuple[float, tuple | None]] = deque()  # /distill/dump: (engine time it came, target)
        self._error_window = (0.0, 0)  # (second, errors sent in it)
        self._warned: dict[str, float] = {}
        self._closing = threading.Event()
        self.thread = threading.Thread(target=self._run, name="distill-osc-tx", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self._closing.set()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=2)
        self.engine.changes.unlisten(self._changes)

    # -- from the receive thread -----------------------------------------------------------------

    def dump(self, target: tuple | None = None) -> None:
        """Send every current value (to `target`, else every listener) once the generator has applied
        what came before."""
        self._dumps.append((self.engine.time, target))

    def error(self, target: tuple | None, sentence: str) -> None:
        """/distill/error `sentence` to `target` (None: the reply target), at most ERRORS_PER_SECOND a second."""
        now = int(time.monotonic())
        second, sent = self._error_window
        if second != now:
            second, sent = now, 0
        if sent >= ERRORS_PER_SECOND:
            self.counters.errors_suppressed += 1
            return
        self._error_window = (second, sent + 1)
        log.debug("refused: %s", sentence)
        self.put(ERROR, (one_line(sentence),), target)

    def put(self, address: str, args: tuple, target: tuple | None = None) -> None:
        """Queue one reply for the reply thread (dropped, and counted, when the outbox is full)."""
        try:
            self.outbox.put_nowait((target, address, args))
        except queue.Full:
            self.counters.replies_dropped += 1

    def put_many(self, messages: list[tuple[str, tuple]], target: tuple | None) -> None:
        for address, args in messages:
            self.put(address, args, target)

    def warn(self, key: str, text: str, every: float = 10.0) -> None:
        """Log `text`, at most once every `every` seconds for the same `key` (either thread)."""
        now = time.monotonic()
        if now - self._warned.get(key, -every) >= every:
            if len(self._warned) > 1024:
                self._warned.clear()
            self._warned[key] = now
            log.warning(text)

    # -- the reply thread ------------------------------------------------------------------------

    def _run(self) -> None:
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
                self.warn("tx", f"OSC reply problem: {one_line(e)}")
            try:
                self._send_changes()
                while self._dumps and self.engine.time > self._dumps[0][0]:
                    _, target = self._dumps.popleft()
                    for address, args in dump_messages(self.engine.registry):
                        if address == STATE and self.feedback != "state" and not args[0].endswith("/free"):
                            self._send(target, args[0], args[1:])  # on its own address too
                        self._send(target, address, args)
                for _ in range(100):
                    try:
                        self.error(None, self.engine.errors.get_nowait())
                    except queue.Empty:
                        break
                now = time.monotonic()
                if self.meters and now >= next_meter:
                    next_meter = max(next_meter + meter_period, now - meter_period)
                    self._send(None, METER, (float(self.engine.level),))
                    codes = self.engine.last_codes
                    if codes is not last_codes:
                        last_codes = codes
                        self._send(None, CODES, tuple(int(c) for c in codes.tolist()))
                if now >= next_stats:
                    next_stats = max(next_stats + STATS_PERIOD, now)
                    if self.meters:
                        self._send(None, STATS, self.stats())
                    suppressed = self.counters.errors_suppressed - reported
                    if suppressed:
                        reported += suppressed
                        self._send(None, ERROR, (f"{suppressed} more refused messages were not "
                                                             f"reported (at most {ERRORS_PER_SECOND} per second)",))
            except Exception as e:  # a reply problem must never stop feedback or anything else
                self.warn("tx", f"OSC reply problem: {one_line(e)}")

    def stats(self) -> tuple[float, float, int, float, float]:
        """(rtf, buffer depth ms, underruns, latency ms, tempo bpm or 0) as /distill/stats sends them."""
        s = self.engine.stats()
        bpm = (self.tempo() if self.tempo is not None else None) or 0.0
        return float(s["rtf"]), float(s["buffer_ms"]), int(s["underruns"]), float(s["latency_ms"]), float(bpm)

    def _send_changes(self) -> None:
        latest: dict[str, tuple] = {}
        registry = self.engine.registry
        for _ in range(100_000):
            try:
                _, address, args = self._changes.get_nowait()
            except queue.Empty:
                break
            self.counters.applied += 1
            p = registry.params.get(address)
            if p is None or not p.stored:  # a command: every one is reported, on /distill/state only
                self._send(None, STATE, (address, *args))
                continue
            for changed, value in registry.expand(address, args) + [(address, args)]:  # mix: its worlds, then itself
                latest.pop(changed, None)  # re-insert: keep the order of the latest change
                latest[changed] = value
        for address, args in latest.items():
            if self.feedback != "address":
                self._send(None, STATE, (address, *args))
            if self.feedback != "state":
                self._send(None, address, args)

    def _send_item(self, item: tuple) -> None:
        target, address, args = item
        self._send(target, address, args)

    def _send(self, target: tuple | None, address: str, args: Iterable[Any]) -> None:
        """Send one reply to `target`, or to every listener when None."""
        targets = (target,) if target is not None else self.targets()
        if not targets:
            return
        try:
            data = build_message(address, args)
        except Exception as e:
            self.counters.replies_dropped += 1
            self.warn("build", f"cannot build OSC reply {address}: {one_line(e)}")
            return
        for target in targets:
            self._send_to(target, data)

    def _send_to(self, target: tuple, data: bytes) -> None:
        kind, where = target
        if kind == "udp":
            try:
                self.udp.sendto(data, where)
                self.counters.replies += 1
            except OSError as e:  # unreachable, refused, buffer full: the reply is dropped, nothing else
                self.counters.replies_dropped += 1
                self.warn(f"reply:{where}", f"cannot send OSC replies to {where[0]}:{where[1]} ({e.strerror or e})")
        else:
            self._send_tcp(where, where.frame(data))

    def _send_tcp(self, c: TcpClient, frame: bytes) -> None:
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
                self.warn(f"tcp-slow:{c.peer}", f"dropping TCP OSC client {c.peer[0]}: it does not read replies")
                try:
                    c.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

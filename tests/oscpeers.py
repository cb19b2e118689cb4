"""Helpers for the OSC tests: a UDP listener that collects replies, waiting for a condition, and a
running `distill-live serve` to steer. (The random-weight model is models.py's, the stand-in sound card
cards.py's.)"""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pythonosc.osc_message import OscMessage
from pythonosc.udp_client import SimpleUDPClient

P = "/distill"


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    """Poll until `predicate()` is truthy (returns it); fails the test with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@dataclass
class Listener:
    """A UDP socket on loopback collecting every OSC message sent to it (parsed with python-osc)."""

    sock: socket.socket = field(default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    messages: list = field(default_factory=list)  # (address, params)

    def __post_init__(self):
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(65536)
            except (socket.timeout, OSError):
                continue
            msg = OscMessage(data)
            self.messages.append((msg.address, msg.params))

    def of(self, address: str) -> list:
        return [p for a, p in list(self.messages) if a == address]

    def close(self):
        self._stop.set()
        self._thread.join(timeout=1)
        self.sock.close()


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port nothing on 127.0.0.1 uses now: UDP by default, TCP with socket.SOCK_STREAM."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """`distill-live serve` recording to a file (no sound card), OSC on a free port, replies to `listener`."""

    def __init__(self, model: Path, out: Path):
        self.listener = Listener()
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "distill_live", "serve", str(model), "--output", str(out), "--seconds", "120",
             "--osc-port", str(self.port), "--no-oscquery", "--midi-api", "off",
             "--reply", f"127.0.0.1:{self.listener.port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.client = SimpleUDPClient("127.0.0.1", self.port)
        deadline = time.monotonic() + 90
        while not self.listener.of(f"{P}/dump/end"):  # the engine answers once it listens
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited ({self.proc.returncode}):\n{self.proc.stdout.read()}")
            assert time.monotonic() < deadline, "serve did not answer /distill/dump in 90 s"
            self.client.send_message(f"{P}/dump", [])
            time.sleep(0.3)

    def state(self) -> dict[str, list]:
        """Take the replies back (a patch may have sent /distill/reply) and return a fresh dump."""
        self.client.send_message(f"{P}/reply", self.listener.port)  # this socket's host, the listener's port
        time.sleep(0.2)
        start = len(self.listener.messages)
        self.client.send_message(f"{P}/dump", [])
        wait_for(lambda: any(a == f"{P}/dump/end" for a, _ in self.listener.messages[start:]), 10, "a dump")
        return {p[0]: p[1:] for a, p in self.listener.messages[start:] if a == f"{P}/state"}

    def errors(self) -> list[str]:
        return [e[0] for e in self.listener.of(f"{P}/error")]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.listener.close()

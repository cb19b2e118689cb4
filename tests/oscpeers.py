"""Helpers for the OSC tests: a UDP listener that collects replies, and waiting for a condition.
(The random-weight model is models.py's, the stand-in sound card cards.py's.)"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

from pythonosc.osc_message import OscMessage


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

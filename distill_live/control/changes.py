"""What the engine applied, told to every surface that listens.

The generator thread `put`s each message it applied, with the engine time of the chunk it applied it
at; each listener (the OSC replies, the OSCQuery and web page feed, a take's score) has its own queue
and takes from it at its own pace. `put` costs the generator one queue put per listener and never
waits: the listeners are a tuple that `listen` and `unlisten` replace whole, so it is read without a
lock.
"""
from __future__ import annotations

import queue
import threading

Change = tuple[float, str, tuple]  # (engine time the chunk began, address, args)


class Changes:
    def __init__(self):
        self._queues: tuple[queue.SimpleQueue, ...] = ()
        self._lock = threading.Lock()  # between listen and unlisten only

    def listen(self) -> queue.SimpleQueue:
        """A queue of every change from now on: (engine time, address, args)."""
        q: queue.SimpleQueue = queue.SimpleQueue()
        with self._lock:
            self._queues = self._queues + (q,)
        return q

    def unlisten(self, q: queue.SimpleQueue) -> None:
        with self._lock:
            self._queues = tuple(x for x in self._queues if x is not q)

    def put(self, at: float, address: str, args: tuple) -> None:
        """From the generator thread: one applied message, to every listener."""
        for q in self._queues:
            q.put((at, address, args))

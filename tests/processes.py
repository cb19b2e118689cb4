"""Processes and what they started, from /proc (Linux): for waiting for torchruns and killing one with its ranks."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable


def descendants(pid: int) -> list[int]:
    """`pid` and every process it started, and they started, parents first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL a process and everything it started: torchrun starts each rank in a session of its own,
    so killing torchrun's process group would leave the ranks running."""
    for p in descendants(pid):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_all(procs: list[subprocess.Popen], timeout: float,
             before_kill: Callable[[list[int]], None] | None = None) -> tuple[list[subprocess.CompletedProcess], bool]:
    """Wait for processes that work together (their output piped); if any is still running after
    `timeout` seconds, hand every process of theirs to `before_kill` (to dump their stacks, say), kill
    them all (one left waiting for its peer would hold its pipes open, and the others wait for it).
    Returns what each said and ended with, and whether they had to be killed."""
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        hung = False
    except subprocess.TimeoutExpired:
        if before_kill is not None:
            before_kill([pid for proc in procs for pid in descendants(proc.pid)])
        for proc in procs:
            kill_tree(proc.pid)
        hung = True
    said = [p.communicate() for p in procs]  # (before the exit statuses: it waits for each process)
    return [subprocess.CompletedProcess(p.args, p.returncode, out, err) for p, (out, err) in zip(procs, said)], hung

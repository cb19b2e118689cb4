"""How long the machine itself stops: a child process at real-time priority (where allowed) that does
nothing but sleep 0.5 ms at a time. How late it wakes is time no program on the machine got, which no
program can avoid: a virtual machine's host taking its cores, a driver. On this project's 2-core
virtual machine every core stops at the same instant for up to ~20 ms, once or twice a minute, and
JACK's dummy driver then runs the late cycle and the next back to back. The latency and soak
benchmarks run one beside serve and report its stalls next to serve's underruns."""
from __future__ import annotations

import json
import subprocess
import sys

SLEEPER = """
import json, os, signal, time
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
except (AttributeError, OSError):
    pass
done, late = [], []
wakeups = 0
worst = 0.0
signal.signal(signal.SIGTERM, lambda *_: done.append(1))
while not done:
    t0 = time.monotonic()
    time.sleep(0.0005)
    ms = 1000 * (time.monotonic() - t0) - 0.5
    wakeups, worst = wakeups + 1, max(worst, ms)
    if ms > 2:
        late.append((t0, round(ms, 2)))
stalls = [(t0, ms) for t0, ms in late if ms > 5]
print(json.dumps({"wakeups": wakeups, "over_2ms": len(late), "over_5ms": len(stalls), "worst_ms": round(worst, 2),
                  "stalls": stalls[:100], "stalls_over_2ms": late[:10000]}))
"""


class MachineStalls:
    """Start with the run, `stop()` at its end: {"wakeups", "over_2ms", "over_5ms", "worst_ms", "stalls":
    [(time.monotonic() when it began, ms), ...] for those over 5 ms (the first 100), "stalls_over_2ms": the same
    for every one over 2 ms (the first 10,000)}."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", SLEEPER], stdout=subprocess.PIPE, text=True)

    def stop(self) -> dict:
        self.proc.terminate()
        return json.loads(self.proc.communicate(timeout=30)[0])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

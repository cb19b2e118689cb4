"""Does a torchrun training always end? Run the two-machine training of tests/test_distributed.py again
and again, with the machine kept busy, and count the runs that hang.

Each run is the test fixture's: two torchrun commands as on two machines (one rank each, here both on
localhost, Gloo on the CPU), the `tiny` preset, 12 codec and 12 prior steps on synthetic sounds.
`--busy N` keeps N busy loops running meanwhile (a hang is a race, and load widens it). A run that
has not ended after `--timeout` seconds is a hang: its processes' stacks are dumped with py-spy
(`pip install py-spy`, when it is there) into `--out`, then every process of the run is killed
(tests/processes.py: torchrun starts each rank in a session of its own). The runs are launched as
the tests launch them (test_distributed.torchrun, one torch thread a rank).

    .venv/bin/python bench/distributed_exit.py                  # 20 runs, both cores busy
    .venv/bin/python bench/distributed_exit.py --runs 40 --busy 0

Prints JSON: runs, hangs, failures (a run that ended with a non-zero status), seconds per run
(median, max). Exit code 0 when every run ended with status 0, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from audiofiles import bells_and_hiss  # noqa: E402
from processes import wait_all  # noqa: E402
from test_distributed import FLAGS, torchrun, two_machines  # noqa: E402


def one_run(data: Path, where: Path, timeout: float) -> tuple[str, float]:
    """('ok' | 'failed' | 'hang', seconds) of one two-machine training; the machines' output in `where`."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))

    def dump_stacks(pids: list[int]) -> None:
        for pid in pids if Path(spy).exists() else []:
            dump = subprocess.run([spy, "dump", "--native", "--pid", str(pid)], capture_output=True, text=True)
            (where / f"stack-{pid}.txt").write_text(dump.stdout + dump.stderr)

    start = time.monotonic()
    nodes = [torchrun([data, "-o", where / "model.distill", *FLAGS], launch) for launch in two_machines()]
    done, hung = wait_all(nodes, timeout, dump_stacks)
    seconds = time.monotonic() - start
    for node, r in enumerate(done):
        (where / f"machine{node}.log").write_text(r.stdout + r.stderr)
    return ("hang" if hung else "ok" if all(r.returncode == 0 for r in done) else "failed"), seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--busy", type=int, default=2, help="busy loops kept running meanwhile (default 2)")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds before a run counts as a hang")
    p.add_argument("--out", type=Path, help="keep each run's folder (logs, stacks of hangs) here")
    args = p.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="distributed-exit-"))
    (out / "sounds").mkdir(parents=True, exist_ok=True)
    data = bells_and_hiss(out / "sounds", count=3, seconds=2.4, seed=0)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    results = []
    try:
        for i in range(args.runs):
            where = out / f"run{i}"
            where.mkdir(parents=True)
            results.append(one_run(data, where, args.timeout))
            print(f"run {i}: {results[-1][0]} in {results[-1][1]:.1f} s", file=sys.stderr)
    finally:
        for b in busy:
            b.send_signal(signal.SIGKILL)
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    seconds = [s for kind, s in results if kind == "ok"]
    report = {"runs": len(results), "busy_loops": args.busy, "hangs": sum(k == "hang" for k, _ in results),
              "failures": sum(k == "failed" for k, _ in results),
              "seconds_median": round(statistics.median(seconds), 1) if seconds else None,
              "seconds_max": round(max(seconds), 1) if seconds else None, "out": str(args.out) if args.out else None}
    print(json.dumps(report, indent=1))
    return 0 if report["hangs"] == report["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

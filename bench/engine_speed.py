"""How fast the live engine generates audio on this machine's CPU, for the shipped presets.

Runs `distill-live bench preset:NAME --threads N --json` (random weights of each preset's shape: speed
depends only on the shape) for the default (48 kHz) and small (24 kHz) presets on 1 and 2 threads,
plus the default preset steered (a world held and guidance 2, which runs the prior's unconditioned
row through the heads too: the slowest way to play). Each case runs `--runs` times in a fresh
process and the medians are reported, since a shared machine makes single runs noisy.

    .venv/bin/python bench/engine_speed.py [--seconds 10] [--runs 3]

A run stops early (fewer frames) if it takes more than 3x `--seconds` of wall time. Prints one JSON
object. Beside the presets, the stream resampler's cost per 20 ms frame (fed in the engine's 5 ms
chunks) for the rate pairs a card asks for: 16 -> 48, 24 -> 48 and 48 -> 44.1 kHz.
The goal is rtf >= 10 on one thread for the default preset (a 20 ms frame
in 2 ms, prior and decoder together) with p99 under a quarter of the frame period.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CASES = [
    ("default", 1, []),
    ("default", 2, []),
    ("small", 1, []),
    ("small", 2, []),
    ("default", 1, ["world/world0=1", "guidance=2"]),
]
FIGURES = ["frames", "rtf", "frame_ms_p50", "frame_ms_p99", "frame_ms_max", "frame_cpu_ms_p50", "prior_ms_p50",
           "decoder_ms_p50"]


def bench_once(preset: str, threads: int, settings: list[str], seconds: float) -> dict:
    cmd = [sys.executable, "-m", "distill_live", "bench", f"preset:{preset}", "--threads", str(threads),
           "--seconds", str(seconds), "--time-limit", str(max(20.0, 3 * seconds)), "--json"]
    for s in settings:
        cmd += ["--set", s]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
    return json.loads(r.stdout)


def resampler_ms_per_frame(src: int, dst: int, frames: int = 500) -> float:
    """Median time to resample one 20 ms frame, given in four 5 ms chunks as the engine gives it."""
    sys.path.insert(0, ROOT)
    from distill_live.live.resample import StreamResampler

    r = StreamResampler(src, dst)
    chunk = np.random.default_rng(0).uniform(-1, 1, src // 200).astype(np.float32)
    times = []
    for _ in range(frames):
        t0 = time.perf_counter()
        for _ in range(4):
            r.process(chunk)
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds of audio per run (default 10)")
    ap.add_argument("--runs", type=int, default=3, help="runs per case; medians are reported (default 3)")
    args = ap.parse_args()

    results = []
    for preset, threads, settings in CASES:
        runs = [bench_once(preset, threads, settings, args.seconds) for _ in range(args.runs)]
        first = runs[0]
        results.append({
            "preset": preset,
            "threads": threads,
            "controls": settings or "defaults",
            "sample_rate": first["sample_rate"],
            "frame_period_ms": first["frame_period_ms"],
            **{f: round(statistics.median(r[f] for r in runs), 3) for f in FIGURES},
            "rtf_runs": [r["rtf"] for r in runs],
        })
    default = results[0]
    print(json.dumps({
        "benchmark": "engine_speed",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_avg_1min": round(os.getloadavg()[0], 2), "torch": torch.__version__},
        "seconds_per_run": args.seconds,
        "runs_per_case": args.runs,
        "goal": {"rtf_1_thread_default": 10, "p99_fraction_of_period": 0.25},
        "goal_met": default["rtf"] >= 10 and default["frame_ms_p99"] < 0.25 * default["frame_period_ms"],
        "cases": results,
        "resampler_ms_per_frame": {f"{src // 1000}->{dst / 1000:g} kHz": resampler_ms_per_frame(src, dst)
                                   for src, dst in [(16000, 48000), (24000, 48000), (48000, 44100)]},
    }, indent=2))


if __name__ == "__main__":
    main()

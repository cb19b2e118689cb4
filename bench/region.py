"""What holding a region of the code grid costs a frame: the demo's frame time free, then with its last 16
frames held as lock (levels 0-1), loop and mutate (levels 0-1 at chance 0.1), in one process, each
case `--frames` frames after the same warm-up, cases interleaved `--runs` times (a shared machine drifts).

    .venv/bin/python bench/region.py [--frames 1000] [--runs 3]

Prints one JSON object: per case the median over runs of the p50 and p99 frame time in ms.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from distill_live.commands.bundled import DEMO
from distill_live.control.params import PREFIX, REGION_MODES, ParamRegistry
from distill_live.live.player import Player
from distill_live.model.modelfile import load_model

CASES = {"free": [], "lock": [("mode", REGION_MODES.index("lock"))],
         "loop": [("mode", REGION_MODES.index("loop"))],
         "mutate": [("mode", REGION_MODES.index("mutate"))]}


def measure(model, case: str, frames: int) -> tuple[float, float]:
    registry = ParamRegistry.for_model(model)
    registry.submit(f"{PREFIX}/play", [1])
    registry.submit(f"{PREFIX}/mutate", [0.1 if case == "mutate" else 0.0])
    player = Player(model, registry, seed=1)
    for _ in range(50):  # warm-up, and 50 frames of history to hold
        player.next_frame()
    for name, value in [("start", -16), ("length", 16), ("top", 0), ("bottom", 1)] + CASES[case]:
        registry.submit(f"{PREFIX}/region/{name}", [value])
    times = np.empty(frames)
    for i in range(frames):
        t0 = time.perf_counter()
        player.next_frame()
        times[i] = time.perf_counter() - t0
    return tuple(float(v) * 1000 for v in np.percentile(times, [50, 99]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(DEMO)
    results = {case: [] for case in CASES}
    for _ in range(args.runs):
        for case in CASES:
            results[case].append(measure(model, case, args.frames))
    print(json.dumps({"model": "demo", "frames": args.frames, "runs": args.runs, "load": os.getloadavg()[0],
                      **{case: {"frame_ms_p50": round(float(np.median([r[0] for r in rs])), 3),
                                "frame_ms_p99": round(float(np.median([r[1] for r in rs])), 3)}
                         for case, rs in results.items()}}))


if __name__ == "__main__":
    main()

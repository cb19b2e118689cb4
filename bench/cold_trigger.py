"""What a trigger from silence costs after the engine has been idle: the first chunk of a cue jump (its
prior step and first decoder chunk), made by the Player in one process, after the generator has had
nothing to do for `--gaps` seconds (stopped, as between a performer's notes).

A CPU that has run other code meanwhile has lost the trigger's code path from its caches and branch
predictors: the same chunk costs about twice as much after 150 ms of rest as right after another one.
`--idle spin` fills the gap with a Python busy loop instead of sleeping (a core kept busy: not the
clock slowing down), `--idle frames` with a throwaway voice's frame every 5 ms (the model's code kept
warm). One JSON object: per gap, the first chunk's p50 and p99 in ms, and the next three chunks'.

    .venv/bin/python bench/cold_trigger.py [MODEL] [--gaps 0 0.01 0.03 0.15] [--idle sleep|spin|frames]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from distill_live.control.params import ParamRegistry
from distill_live.live.player import Playback, Player, Voice
from distill_live.model import kernels
from distill_live.model.modelfile import load_model
from distill_live.model.prior import Controls


def rest(seconds: float, idle: str, scratch: Voice) -> None:
    end = time.perf_counter() + seconds
    if idle == "spin":
        while time.perf_counter() < end:
            pass
    elif idle == "frames":
        while time.perf_counter() < end:
            scratch.step(Controls(), Playback())
            time.sleep(0.005)
    else:
        time.sleep(seconds)


def first_chunks(model, gap: float, idle: str, triggers: int) -> dict:
    registry = ParamRegistry.for_model(model)
    player, scratch = Player(model, registry, seed=0), Voice.start(model, 1)
    first, rest_ms = [], []
    for i in range(triggers + 10):  # (the first 10 warm up)
        player.next_frame()
        registry.submit_validated([("/distill/play", (0,))])
        for _ in range(8):  # faded out: stopped
            player.next_frame()
        rest(gap, idle, scratch)
        registry.submit_validated([("/distill/cue", (i % len(model.cues), 0.05)), ("/distill/play", (1,))])
        t0 = time.perf_counter()
        player.next_chunk()
        t1 = time.perf_counter()
        for _ in range(3):
            player.next_chunk()
        t2 = time.perf_counter()
        if i >= 10:
            first.append(1000 * (t1 - t0))
            rest_ms.append(1000 * (t2 - t1) / 3)
    return {"gap_s": gap, "first_chunk_p50_ms": round(float(np.median(first)), 3),
            "first_chunk_p99_ms": round(float(np.percentile(first, 99)), 3),
            "next_chunks_p50_ms": round(float(np.median(rest_ms)), 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="a .distill file (default: the bundled demo model)")
    p.add_argument("--gaps", type=float, nargs="+", default=[0.0, 0.01, 0.03, 0.15], help="seconds of rest")
    p.add_argument("--idle", choices=["sleep", "spin", "frames"], default="sleep", help="what the rest is")
    p.add_argument("--triggers", type=int, default=100)
    args = p.parse_args()
    if args.model is None:
        from distill_live.commands.bundled import DEMO

        args.model = str(DEMO)
    torch.set_num_threads(1)
    model = load_model(args.model)
    with kernels.playing():
        runs = [first_chunks(model, gap, args.idle, args.triggers) for gap in args.gaps]
    print(json.dumps({"model": args.model, "idle": args.idle, "triggers": args.triggers, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()

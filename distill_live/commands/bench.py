"""`distill-live bench MODEL [--seconds S] [--threads N] [--set NAME=VALUE ...] [--json]`: how fast the engine runs.

Runs the same frame loop as `render` and `serve` (`Player.next_frame`, playing, so the prior and the
decoder really run) flat out, without a sound card, and reports the real-time factor and the frame
time percentiles. The audio callback needs each frame within one frame period, so p99 is the figure
that decides whether a machine can play a model without dropouts, not the mean. `--paced` makes the
chunks as `serve` makes them for a card that takes 256 samples at 48 kHz a block (JACK's usual
period): a block's worth back to back every 5.3 ms, and in between the core idles but for serve's
look every half millisecond. A frame's time is then the sum of its chunks', as `serve -v` counts it.
A core that has idled starts with cold caches, so a paced frame takes longer than one made flat out
(the demo on a busy host: 1.7 against 0.4 ms). Frame times are wall-clock (what the sound card
sees); `frame_cpu_ms_p50` is the thread's CPU time, which stays meaningful on a machine shared with
other work (waiting for a core counts in the first, not in it).

MODEL is a .distill file, or `preset:NAME` (tiny, small, default) for a model of that shape with
random weights: speed depends only on the shape, so no trained model is needed to benchmark one.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from distill_live import UserError
from distill_live.control.params import PREFIX, ParamRegistry
from distill_live.control.score import parse_set
from distill_live.live.engine import IDLE
from distill_live.live.player import Player
from distill_live.model.config import PRESETS
from distill_live.model.modelfile import DistillModel, load_model, random_model

WARMUP_FRAMES = 50  # first frames allocate and fill caches; the play fade-in also ends within them
CARD_BLOCK = 256 / 48000  # seconds of sound a card takes a block when paced (JACK's usual period at 48 kHz)


def register(sub) -> None:
    p = sub.add_parser("bench", help="measure how fast a model runs (real-time factor, frame time percentiles)")
    p.add_argument("model", help="a .distill file, or preset:NAME (tiny, small, default) for random weights")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of audio to generate (default 10)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default 1, as render and serve)")
    p.add_argument("--time-limit", type=float, default=60.0, metavar="S",
                   help="stop measuring after S seconds of wall time even if --seconds is not reached (default 60)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="set a control first, e.g. --set world/world0=1 --set guidance=2 (steering costs time)")
    p.add_argument("--paced", action="store_true",
                   help="make the chunks as serve does for a 48 kHz card with 256-sample blocks (what serve -v "
                        "shows), instead of flat out")
    p.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
    p.set_defaults(func=run)


def _timed(fn, times: list[float]):
    """Wrap `fn` so each call's duration lands in `times` (costs well under a microsecond)."""
    clock = time.perf_counter

    def wrapper(*args, **kwargs):
        t0 = clock()
        out = fn(*args, **kwargs)
        times.append(clock() - t0)
        return out

    return wrapper


def card_paced(player: Player, clock, cpu_clock, sleep=time.sleep):
    """A function that makes the next frame's chunks as serve makes them for a card (`CARD_BLOCK`): a block's
    worth at a time, back to back, then idle until the card would take the next block, looking every
    `IDLE` as serve's generator does (engine.py). It returns the frame's wall and CPU time: the sums over
    its chunks (what serve's telemetry counts), without the idling."""
    chunk = player.chunk / player.sample_rate
    owed, wake = 0.0, clock()  # sound the card will take before its next block; when that block comes

    def frame() -> tuple[float, float]:
        nonlocal owed, wake
        wall = busy = 0.0
        for _ in range(player.hop // player.chunk):
            if owed <= 0:  # a block's worth is made: wait for the card's next block, looking every IDLE as serve
                wake, owed = wake + CARD_BLOCK, owed + CARD_BLOCK
                while (left := wake - clock()) > 0:
                    sleep(min(IDLE, left))
            t0, c0 = clock(), cpu_clock()
            player.next_chunk()
            wall, busy = wall + clock() - t0, busy + cpu_clock() - c0
            owed -= chunk
        return wall, busy

    return frame


def bench(model: DistillModel, seconds: float, threads: int, seed: int = 0, settings: list[str] = (),
          time_limit: float = 60.0, paced: bool = False) -> dict:
    """Generate `seconds` of audio flat out (`paced`: as serve makes it for a card, `card_paced`) after a
    warm-up (or as much as `time_limit` seconds of wall time allow: a badly oversubscribed machine can take
    a second per frame); returns the figures."""
    torch.set_num_threads(threads)
    registry = ParamRegistry.for_model(model)
    for at, address, args in parse_set(list(settings), registry):
        registry.submit(address, args, at=at)
    registry.submit(f"{PREFIX}/play", [1], at=0.0)
    player = Player(model, registry, seed)
    period = model.config.codec.hop / model.config.codec.sample_rate
    clock, cpu_clock = time.perf_counter, time.thread_time
    start = clock()
    deadline = start + time_limit
    for _ in range(WARMUP_FRAMES):
        player.next_frame()
        if clock() - start > time_limit / 4:  # leave most of the time to the measurement
            break

    prior_times: list[float] = []
    decoder_times: list[float] = []
    corpus_times: list[float] = []
    model.prior.step = _timed(model.prior.step, prior_times)  # instance attributes shadow the methods
    model.codec.decode_step = _timed(model.codec.decode_step, decoder_times)
    if model.corpus is not None:
        model.corpus.play = _timed(model.corpus.play, corpus_times)
    frames = max(1, math.ceil(seconds * model.config.codec.frame_rate))
    times, cpu = np.empty(frames), np.empty(frames)
    measured = clock()
    paced_frame = card_paced(player, clock, cpu_clock)
    try:
        for i in range(frames):
            t0, c0 = clock(), cpu_clock()
            if paced:
                times[i], cpu[i] = paced_frame()
            else:
                player.next_frame()
                times[i], cpu[i] = clock() - t0, cpu_clock() - c0
            if t0 > deadline:
                frames = i + 1
                times, cpu = times[:frames], cpu[:frames]
                break
    finally:
        del model.prior.step, model.codec.decode_step
        if model.corpus is not None:
            del model.corpus.play
    wall = clock() - measured
    p50, p99 = np.percentile(times, [50, 99])
    ms = lambda s: round(float(s) * 1000, 3)  # noqa: E731
    median = lambda times: ms(np.median(times)) if times else None  # noqa: E731 (a decoder not run: None)
    return {
        "rtf": float(f"{period / p50:.4g}"),  # 4 significant digits: 0.01234 on an overloaded machine too
        "frame_ms_p50": ms(p50),
        "frame_ms_p99": ms(p99),
        "frame_ms_max": ms(times.max()),
        "frame_period_ms": ms(period),
        "frame_cpu_ms_p50": ms(np.median(cpu)),
        "prior_ms_p50": median(prior_times),
        "decoder_ms_p50": median(decoder_times),
        "corpus_ms_p50": median(corpus_times),
        "corpus_ms_p99": ms(np.percentile(corpus_times, 99)) if corpus_times else None,
        "paced": paced,
        "wall_s": round(wall, 3),  # the measured frames' wall time: about frames x period when paced
        "threads": torch.get_num_threads(),
        "frames": frames,
        "sample_rate": model.config.codec.sample_rate,
        "hop": model.config.codec.hop,
        "prior": model.config.prior.kind,
    }


def run(args: argparse.Namespace) -> int:
    if not args.seconds > 0:
        raise UserError("--seconds must be more than 0")
    if args.threads < 1:
        raise UserError("--threads must be 1 or more")
    if not args.time_limit > 0:
        raise UserError("--time-limit must be more than 0")
    if args.model.startswith("preset:"):
        name = args.model[len("preset:"):]
        if name not in PRESETS:
            raise UserError(f"unknown preset '{name}': use preset:{', preset:'.join(PRESETS)}")
        model = random_model(name, args.seed)
    else:
        model = load_model(args.model)
        if model.prior is None:
            raise UserError(f"'{args.model}' has only a codec; train a prior first (distill-train --stages prior)")
    result = {"model": args.model, **bench(model, args.seconds, args.threads, args.seed, args.set, args.time_limit,
                                                args.paced)}
    if args.json:
        print(json.dumps(result))
        return 0
    budget = result["frame_period_ms"]
    print(f"{args.model}: {result['sample_rate']} Hz, hop {result['hop']} ({budget:g} ms frames), "
          f"{result['prior']} prior, {result['threads']} thread{'s' if result['threads'] > 1 else ''}, "
          f"{result['frames']} frames{', paced' if result['paced'] else ''}")
    print(f"  rtf             {result['rtf']:8.2f}   frame period / median frame time (>= 1 plays in real time)")
    parts = [f"{name} {result[key]:.3f}" for name, key in (("prior", "prior_ms_p50"), ("decoder", "decoder_ms_p50"),
                                                            ("corpus", "corpus_ms_p50")) if result[key] is not None]
    print(f"  frame ms p50    {result['frame_ms_p50']:8.3f}   {' + '.join(parts)}")
    print(f"  frame ms p99    {result['frame_ms_p99']:8.3f}   {result['frame_ms_p99'] / budget:.0%} of the frame period")
    print(f"  frame ms max    {result['frame_ms_max']:8.3f}")
    print(f"  frame cpu ms    {result['frame_cpu_ms_p50']:8.3f}   median CPU time of the generating thread")
    return 0

"""How fast the live engine generates audio on this machine's CPU, and how far that is from what the
memory allows.

Runs `distill-live bench preset:NAME --threads N --json` (random weights of each preset's shape: speed
depends only on the shape) for the default (48 kHz) and small (24 kHz) presets on 1 and 2 threads,
plus the default preset steered (a world held and guidance 2, which runs the prior's unconditioned
row through the heads too: the slowest way to play) and two voices of it (a crossfade between
models or a cue jump's fade runs both for a moment). Each case runs `--runs` times in a fresh
process and the medians are reported, since a shared machine makes single runs noisy.

    .venv/bin/python bench/engine_speed.py [--seconds 10] [--runs 3] [--isa avx2]

The memory floor: at batch 1 a frame reads every weight of the decoder and of the prior's recurrent
layer and heads once (the embedding tables a row per code), so a frame cannot take less than those
bytes over the machine's bandwidth from its caches. The bandwidth is measured here, on one core, as
the fastest matrix-vector product over a float32 matrix of the same size (numpy's BLAS, torch's, and
the compiled loop the engine runs, `distill_live.model.compiled.linear`, each on one thread);
`floor_ms` is the bytes over it and `times_floor` the median frame over that.

`--isa avx2` runs the cases with torch, MKL, oneDNN and numba held to AVX2, as on a CPU without AVX-512
(the bandwidth figure stays the machine's). A run stops early (fewer frames) if it takes more than
3x `--seconds` of wall time. Prints one JSON object. Beside the presets, the stream resampler's
cost per 20 ms frame (fed in the engine's chunks) for the rate pairs a card asks for: 16 -> 48,
24 -> 48 and 48 -> 44.1 kHz.
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
sys.path.insert(0, ROOT)

CASES = [
    ("default", 1, []),
    ("default", 2, []),
    ("small", 1, []),
    ("small", 2, []),
    ("default", 1, ["world/world0=1", "guidance=2"]),
]
FIGURES = ["frames", "rtf", "frame_ms_p50", "frame_ms_p99", "frame_ms_max", "frame_cpu_ms_p50", "prior_ms_p50",
           "decoder_ms_p50"]
# torch, MKL, oneDNN and numba's compiled loops held to AVX2 (each reads its own variable; numba compiles
# for a Haswell, the first AVX2 CPU, and caches that beside the native build)
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
        "NUMBA_CPU_NAME": "haswell"}
GOALS = {"default_rtf": 15, "default_p99_ms": 2.0, "small_rtf": 30, "times_floor": 3}


def bench_once(preset: str, threads: int, settings: list[str], seconds: float, env: dict) -> dict:
    cmd = [sys.executable, "-m", "distill_live", "bench", f"preset:{preset}", "--threads", str(threads),
           "--seconds", str(seconds), "--time-limit", str(max(20.0, 3 * seconds)), "--json"]
    for s in settings:
        cmd += ["--set", s]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
    return json.loads(r.stdout)


def two_voices_rtf(preset: str, seconds: float, env: dict) -> float:
    """Real-time factor while two voices play (a crossfade held open), in a fresh process."""
    code = f"""
import time, torch
from distill_live.control.params import PREFIX, ParamRegistry
from distill_live.live.player import Player, Voice
from distill_live.model.modelfile import random_model
torch.set_num_threads(1)
model = random_model({preset!r})
registry = ParamRegistry.for_model(model)
registry.submit(PREFIX + "/play", [1], at=0.0)
player = Player(model, registry, 0)
frames = round({seconds} * player.frame_rate)
player.crossfade_to(Voice.start(model, 1), 10 * frames / player.frame_rate)  # never ends within the run
for _ in range(50):
    player.next_frame()
times = []
for _ in range(frames):
    t0 = time.perf_counter()
    player.next_frame()
    times.append(time.perf_counter() - t0)
times.sort()
print(1.0 / player.frame_rate / times[len(times) // 2])
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    if r.returncode != 0:
        raise SystemExit(f"two voices of {preset} failed: {r.stderr.strip()}")
    return round(float(r.stdout), 2)


def weight_bytes_per_frame(preset: str) -> int:
    """Bytes of weights one frame reads: every decoder parameter and every prior parameter except the
    tables read a row at a time (code, head and world embeddings; the GRU's first input weights, which
    the prepared step reads as a row per code, see `StepTables`) and the conditioning's projection
    (run when the controls change). The rows themselves are a few kB and left out."""
    from distill_live.model.modelfile import random_model

    model = random_model(preset)
    decoder = sum(p.numel() * p.element_size() for p in model.codec.decoder.parameters())
    per_row = ("code_embed", "head_embed", "world_embed", "descriptor_proj", "gru.weight_ih_l0")
    prior = sum(p.numel() * p.element_size() for name, p in model.prior.named_parameters()
                if not name.startswith(per_row))
    return decoder + prior


def bandwidth_gb_s(nbytes: int) -> dict:
    """One core's speed at reading `nbytes` of float32 weights in a matrix-vector product: numpy's BLAS
    in a child process held to one thread (the variable must be set before numpy loads), torch and the
    engine's compiled loop here."""
    from distill_live.model.compiled import linear

    cols = 1024
    rows = max(1, nbytes // 4 // cols)
    code = f"""
import time, numpy as np
m = np.random.default_rng(0).standard_normal(({rows}, {cols}), dtype=np.float32)
v = np.ones({cols}, np.float32)
times = []
for _ in range(200):
    t0 = time.perf_counter(); m @ v; times.append(time.perf_counter() - t0)
print(sorted(times)[len(times) // 2])
"""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    numpy_s = float(r.stdout)
    torch.set_num_threads(1)
    m, v = torch.randn(rows, cols), torch.ones(cols)
    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        torch.mv(m, v)
        times.append(time.perf_counter() - t0)
    torch_s = sorted(times)[len(times) // 2]
    weight, row = m.numpy(), np.ones((1, cols), np.float32)
    bias, out = np.zeros(rows, np.float32), np.empty((1, rows), np.float32)
    times = []
    for _ in range(201):  # (the first call loads or compiles the loop)
        t0 = time.perf_counter()
        linear(row, weight, bias, out)
        times.append(time.perf_counter() - t0)
    compiled_s = sorted(times[1:])[len(times) // 2]
    size = rows * cols * 4
    return {"numpy_blas": round(size / numpy_s / 1e9, 1), "torch": round(size / torch_s / 1e9, 1),
            "compiled": round(size / compiled_s / 1e9, 1)}


def resampler_ms_per_frame(src: int, dst: int, frames: int = 500) -> float:
    """Median time to resample one 20 ms frame, given in the engine's chunks (a sixteenth of a frame)."""
    from distill_live.live.player import CHUNKS
    from distill_live.live.resample import StreamResampler

    r = StreamResampler(src, dst)
    chunk = np.random.default_rng(0).uniform(-1, 1, src // 50 // CHUNKS).astype(np.float32)
    times = []
    for _ in range(frames):
        t0 = time.perf_counter()
        for _ in range(CHUNKS):
            r.process(chunk)
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 4)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds of audio per run (default 10)")
    ap.add_argument("--runs", type=int, default=3, help="runs per case; medians are reported (default 3)")
    ap.add_argument("--isa", choices=["native", "avx2"], default="native",
                    help="avx2: hold torch, MKL, oneDNN and numba to AVX2, as on a CPU without AVX-512")
    args = ap.parse_args()
    env = {**os.environ, **(AVX2 if args.isa == "avx2" else {})}
    isa = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                         capture_output=True, text=True, env=env, check=True).stdout.strip()

    floors = {}
    for preset in sorted({case[0] for case in CASES}):
        nbytes = weight_bytes_per_frame(preset)
        speed = bandwidth_gb_s(nbytes)
        floors[preset] = {"weight_mb_per_frame": round(nbytes / 1e6, 2), "bandwidth_gb_s": speed,
                          "floor_ms": round(nbytes / max(speed.values()) / 1e6, 3)}

    results = []
    for preset, threads, settings in CASES:
        runs = [bench_once(preset, threads, settings, args.seconds, env) for _ in range(args.runs)]
        first = runs[0]
        case = {
            "preset": preset,
            "threads": threads,
            "controls": settings or "defaults",
            "sample_rate": first["sample_rate"],
            "frame_period_ms": first["frame_period_ms"],
            **{f: round(statistics.median(r[f] for r in runs), 3) for f in FIGURES},
            "rtf_runs": [r["rtf"] for r in runs],
        }
        case["times_floor"] = round(case["frame_ms_p50"] / floors[preset]["floor_ms"], 1)
        results.append(case)
    two_voices = {preset: statistics.median(two_voices_rtf(preset, args.seconds, env) for _ in range(args.runs))
                  for preset in ("default", "small")}

    def one_thread(preset):
        return next(c for c in results if c["preset"] == preset and c["threads"] == 1 and c["controls"] == "defaults")

    default, small = one_thread("default"), one_thread("small")
    print(json.dumps({
        "benchmark": "engine_speed",
        "machine": {"cpu": cpu_model(), "isa": isa, "cores": os.cpu_count(),
                    "load_avg_1min": round(os.getloadavg()[0], 2), "torch": torch.__version__},
        "seconds_per_run": args.seconds,
        "runs_per_case": args.runs,
        "memory_floor": floors,
        "goal": GOALS,
        "goal_met": {
            "default": default["rtf"] >= GOALS["default_rtf"] and default["frame_ms_p99"] <= GOALS["default_p99_ms"],
            "small": small["rtf"] >= GOALS["small_rtf"],
            "within_floor": all(c["times_floor"] <= GOALS["times_floor"] for c in (default, small)),
            "two_voices": all(rtf >= 5 for rtf in two_voices.values()),
        },
        "cases": results,
        "two_voices_rtf": two_voices,
        "resampler_ms_per_frame": {f"{src // 1000}->{dst / 1000:g} kHz": resampler_ms_per_frame(src, dst)
                                   for src, dst in [(16000, 48000), (24000, 48000), (48000, 44100)]},
    }, indent=2))


if __name__ == "__main__":
    main()

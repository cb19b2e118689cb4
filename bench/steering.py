"""How reliably the controls steer: the steering tests' model, trained with ten seeds.

tests/test_controls.py checks each control on one tiny model trained with seed 0. Whether a control
works should not depend on that seed, nor on the CPU's kernels (a model trained on another CPU has
slightly different weights). This script trains the same model (tests/worlds.py: bells and
rumble, the same steps) with each seed, measures every control as the tests do, and prints one JSON
line per seed, then a summary with the minimum and the spread of each effect:

    brightness  centroid at target 0.95 / at 0.05 (guidance 2)    the test asks > 1.2
    loudness    amplitude at 0.95 / at 0.05, from the mean frame loudness in dB (guidance 2)   > 1.2
    noisiness   spectral flatness at 0.95 / at 0.05 (guidance 2)  > 1.2
    world/W     distance to the nearest other world / to W's own, at weight 1   > 1 (W's own is nearest)

each pooled over the tests' three render seeds. Beside them, how the codec gives back each world's
training files (level against the recordings', dB): no control can steer towards a sound the codec
cannot make.

    .venv/bin/python bench/steering.py                  # seeds 0-9, about 15 min on 2 cores
    .venv/bin/python bench/steering.py --seeds 0 1 --out steering.json
    ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 \
        .venv/bin/python bench/steering.py              # torch's AVX2 kernels on an AVX-512 CPU

Two side by side (both kinds of kernels at once) want OMP_NUM_THREADS=1 each: with two threads each,
four spinning OpenMP threads on two cores took about 1000 s a seed instead of 64.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from distill_live.model.modelfile import load_model  # noqa: E402
from worlds import (TARGETS, descriptors_of, loudness_db, play, train, world_distances,  # noqa: E402
                    world_references, write_worlds)

PASS = {"brightness": 1.2, "loudness": 1.2, "noisiness": 1.2, "world": 1.0}


def codec_fidelity(model, data: Path) -> dict[str, float]:
    """How the codec gives back each world's training files: level (dB, energy) against the recordings'."""
    import soundfile as sf
    import torch

    out = {}
    for world in model.worlds:
        diffs = []
        for f in sorted((data / world).glob("*.wav")):
            audio = torch.from_numpy(sf.read(f, dtype="float32")[0])[None]
            with torch.no_grad():
                back = model.codec.decode(model.codec.encode(audio))[0, :audio.shape[1]].numpy()
            diffs.append(10 * np.log10(np.mean(back ** 2) / np.mean(audio[0].numpy() ** 2)))
        out[f"codec_level_db/{world}"] = round(float(np.mean(diffs)), 1)
    return out


def effects(model, data: Path) -> dict[str, float]:
    out = {}
    for name in ("loudness", "brightness", "noisiness"):
        heard = {t: play(model, [(0, f"/distill/descriptor/{name}", (t,)), (0, "/distill/guidance", (2.0,))])
                 for t in TARGETS}
        if name == "loudness":
            low, high = (10 ** (loudness_db(heard[t], model) / 20) for t in TARGETS)
        else:
            low, high = (descriptors_of(heard[t], model)[1 if name == "brightness" else 2] for t in TARGETS)
        out[name] = round(float(high / max(low, 1e-12)), 3)
    references = world_references(model, data)
    for world in model.worlds:
        d = world_distances(descriptors_of(play(model, [(0, f"/distill/world/{world}", (1.0,))]), model), references)
        out[f"world/{world}"] = round(min(v for w, v in d.items() if w != world) / max(d[world], 1e-12), 3)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(10)), help="training seeds (default 0-9)")
    p.add_argument("--out", type=Path, help="also write the JSON summary here")
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep the data, models and run directories here "
                   "(default: a temporary folder): a prior change can then be tried on the same codecs with "
                   "`distill-train --resume`, seconds instead of minutes a seed")
    args = p.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="distill-steering-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        data = write_worlds(folder / "data")
        for seed in args.seeds:
            started = time.time()
            model_path = folder / f"seed{seed}.distill"
            shutil.rmtree(f"{model_path}.run", ignore_errors=True)  # a fresh training, whatever --keep holds
            r = train(data, model_path, seed=seed, env={**os.environ, "PYTHONPATH": str(ROOT)})
            if r.returncode != 0:
                print(f"training seed {seed} failed:\n{r.stderr[-2000:]}", file=sys.stderr)
                return 1
            model = load_model(model_path)
            row = {"seed": seed, **effects(model, data), **codec_fidelity(model, data),
                   "wall_s": round(time.time() - started, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)

    controls = [k for k in rows[0] if k not in ("seed", "wall_s") and not k.startswith("codec_")]
    summary = {}
    for name in controls:
        values = np.array([r[name] for r in rows])
        need = PASS["world" if name.startswith("world/") else name]
        summary[name] = {"min": round(float(values.min()), 3), "median": round(float(np.median(values)), 3),
                         "max": round(float(values.max()), 3), "pass": f"{int((values > need).sum())}/{len(rows)}",
                         "needs": f"> {need}"}
    result = {"seeds": args.seeds, "cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY", "native"),
              "load_average": round(os.getloadavg()[0], 2), "effects": summary}
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps({"per_seed": rows, **result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

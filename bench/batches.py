"""What drawing a training batch costs: is it worth data-loader worker processes?

The trainer decodes every sound into memory once; a batch is then slices of arrays. This times
`CropSampler.batch` (the codec's crops, as the codec and adversarial stages draw them) and
`PriorStage.batch` (the prior's code sequences) on a real collection, the sonic-pi-samples Debian
package, and prints JSON: median and p99 milliseconds per batch. Compare with a training step
(the README's GPU table: 60-70 ms for a codec step on an H100).

    .venv/bin/python bench/batches.py [--samples DIR]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from distill_live.model.config import preset
from distill_live.model.modelfile import load_model
from distill_train.codec_stage import CROP_FRAMES, extract_codes
from distill_train.data import CropSampler, load_dataset
from distill_train.prior_stage import PriorStage, heard_descriptors

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = Path("/usr/share/sonic-pi/samples")


def timed(draw, repeats: int) -> dict:
    times, batch = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        batch = draw()  # kept until the next draw, as training keeps it through its step
        times.append(1000 * (time.perf_counter() - start))
    del batch
    return {"median_ms": round(float(np.median(times)), 3), "p99_ms": round(float(np.percentile(times, 99)), 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", default=str(SAMPLES), help="a folder of sounds (default: sonic-pi-samples)")
    p.add_argument("--repeats", type=int, default=200)
    args = p.parse_args()
    torch.set_num_threads(2)
    figures: dict = {"samples": args.samples}

    codec = preset("small").codec
    dataset = load_dataset(args.samples, codec.sample_rate, codec.hop, crop_frames=CROP_FRAMES, seed=0,
                           log=lambda *_: None)
    sampler = CropSampler(dataset.train(), CROP_FRAMES, codec.hop, 0, augment=True, descriptors=False)
    for batch in (8, 32):
        figures[f"codec_crops_{batch}"] = timed(lambda: sampler.batch(batch), args.repeats)

    # the prior's batches: codes of the same sounds through the demo model's codec
    model = load_model(ROOT / "distill_live" / "demo" / "demo.distill")
    c = model.config.codec
    dataset = load_dataset(args.samples, c.sample_rate, c.hop, crop_frames=CROP_FRAMES, seed=0, log=lambda *_: None)
    model.config.prior.worlds = len(dataset.worlds)
    cues = extract_codes(model.codec, dataset.clips, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as run_dir:
        _, descriptors = heard_descriptors(model.codec, cues, dataset.clips)
        stage = PriorStage(model.config, model.codec, cues, descriptors, dataset, 64, 128, 0, torch.device("cpu"),
                           Path(run_dir))
        figures["prior_sequences_64x128"] = timed(stage.batch, args.repeats)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

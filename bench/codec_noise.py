"""Where a codec's noise comes from: each world's training recordings through the codec alone.

For each model given (a codec alone, `distill-train --stages codec`, or a whole model) and each world
of Sonic Pi's samples (as bench/quality.py sorts them), prints JSON with:

- `flatness_ratio`: spectral flatness of the recordings through the codec over the recordings'
  own (bench/quality.py's `flatness_codec_ratio`: the noise no prior can take away; the goal is
  within 25% of 1);
- `blur`: how the codec changes their spectrum in their loud frames (bench/measures.py's `blur`):
  the partials' peaks and the floor far under them, in dB, and the share of deep bins.

Then per model the median ratio, how many worlds are within 25%, and the codec's training steps.
It compares codecs trained different ways (docs/benchmarks.md, "Where the codec's noise comes
from"); ViSQOL and the spectral distances of the same codecs come from `bench/quality.py --model`.

`--levels 1,2,4,latent` measures the same with only the coarse levels decoded (the decoder is trained
with quantizer dropout, so it plays any number), and with the encoder's output decoded as it is,
unquantized (`latent`): what the codes' bits add to the noise or take from it.

    python bench/codec_noise.py --out runs/noise        # links the collection into runs/noise/sonic-pi
    python bench/codec_noise.py --out runs/noise runs/noise/a/model.distill runs/noise/b/model.distill
    python bench/codec_noise.py --out runs/noise --levels 1,4,8,latent runs/noise/a/model.distill
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from distill_live.model.modelfile import load_model  # noqa: E402
from distill_train.data import load_dataset  # noqa: E402
from measures import blur, flatness, near  # noqa: E402
from quality import LATENT, SAMPLES, collection, rounded, through_codec  # noqa: E402


@torch.inference_mode()
def codec_noise(model_path: Path, data: Path, levels: int | str | None = None) -> dict:
    model = load_model(model_path)
    c = model.config.codec
    dataset = load_dataset(data, c.sample_rate, c.hop, log=lambda *_: None)
    worlds = {}
    for i, world in enumerate(dataset.worlds):
        recordings = np.concatenate([clip.audio for clip in dataset.train() if clip.world == i])
        through = through_codec(model, recordings, levels)
        if not len(through):  # less than a frame of training audio
            worlds[world] = {"flatness_ratio": None, "blur": {}}
            continue
        recordings = recordings[: len(through)]
        real, coded = flatness(recordings, c.sample_rate), flatness(through, c.sample_rate)
        changes = blur(recordings, through) or {}
        worlds[world] = {"flatness_ratio": rounded(coded / real if real and coded is not None else None),
                         "blur": {k: rounded(v, 2) for k, v in changes.items()}}
    ratios = sorted(w["flatness_ratio"] for w in worlds.values() if w["flatness_ratio"] is not None)
    return {"model": str(model_path), "levels": model.config.codec.levels if levels is None else levels,
            "codec_steps": model.meta.get("history", {}).get("codec", {}).get("steps"),
            "median_flatness_ratio": ratios[len(ratios) // 2] if ratios else None,
            "worlds_within_25_percent": sum(near(r) for r in ratios), "worlds": worlds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", type=Path, help="model files (.distill); none: only link the collection")
    p.add_argument("--out", default="runs/bench", help="where the collection links go (as bench/quality.py)")
    p.add_argument("--samples", default=str(SAMPLES), help="the folder of Sonic Pi's .flac samples")
    p.add_argument("--levels", type=levels_list, default=[None], metavar="N,N,...",
                   help=f"decode only the coarse N levels, for each N given; '{LATENT}': the encoder's output "
                        "unquantized (default: all levels)")
    args = p.parse_args()
    data = collection(Path(args.out) / "sonic-pi", Path(args.samples))
    print(json.dumps([codec_noise(m, data, n) for m in args.models for n in args.levels], indent=2))


def levels_list(text: str) -> list[int | str]:
    try:
        return [n if n == LATENT else int(n) for n in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--levels {text}: give numbers of levels or '{LATENT}', "
                                         "separated by commas") from None


if __name__ == "__main__":
    main()

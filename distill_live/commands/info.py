"""`distill-live info [MODEL] [--json]`: what is inside a model file (no MODEL: the bundled demo)."""
from __future__ import annotations

import argparse
import json

from distill_live.model.modelfile import load_model

from .bundled import model_argument


def register(sub) -> None:
    p = sub.add_parser("info", help="show what is inside a .distill model file")
    model_argument(p, "describe")
    p.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    info = load_model(args.model).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{args.model}: distill model, format {info['format_version']}")
    print(f"  audio     {info['sample_rate']} Hz, hop {info['hop']} ({info['frame_rate']:g} frames/s), "
          f"{info['levels']} levels x {info['codebook_size']} codes = {info['bitrate'] / 1000:.1f} kbit/s")
    print(f"  prior     {info['prior'] or 'none (codec only)'}")
    print(f"  worlds    {', '.join(info['worlds']) or '-'}")
    print(f"  cues      {info['cues']} passages from {info['files']} files")
    corpus = info["corpus"]
    print(f"  corpus    {corpus['seconds']:g} s of recordings, {corpus['bytes'] / 2 ** 20:.1f} MiB: it can play them "
          f"(/distill/corpus/mix)" if corpus else "  corpus    none: saved without its recordings, it plays only "
          "through its neural decoder")
    memo = info["memorisation"]
    if memo:
        copy = memo["whole_frames"]["longest_copy_frames"]
        print(f"  copying   a {memo['generated_frames']}-frame generation copies at most {copy} frame"
              f"{'s' if copy != 1 else ''} of the training codes in a row (level 0: "
              f"{memo['level0']['longest_copy_frames']})")
    for h in info["health"] or []:
        print(f"  level {h['level']}   utilisation {h['utilization']:.0%}  perplexity {h['perplexity']:.1f}  "
              f"dead {h['dead']}")
    return 0

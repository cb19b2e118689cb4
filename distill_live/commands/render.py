"""`distill-live render [MODEL] -o OUT.wav --seconds S [--seed N] [--score FILE] [--set NAME=VALUE ...]
[--midi-file FILE.mid [--midi-map MAP.toml]]`.

With no MODEL it renders the bundled demo, and with neither a score nor a MIDI file, the demo's tour."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import soundfile as sf
import soxr
import torch

from distill_live import UserError, atomic_write
from distill_live.control.params import ParamRegistry
from distill_live.control.score import load_score, parse_set
from distill_live.live.player import render
from distill_live.model.modelfile import load_model

from .bundled import DEMO, DEMO_TOUR, model_argument


def register(sub) -> None:
    p = sub.add_parser("render", help="render a model to a sound file, optionally following a score")
    model_argument(p, "render (with no score either: the demo's tour)")
    p.add_argument("-o", "--output", required=True, help="output file: .wav (24-bit) or .flac")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--score", help="text file of timed control messages: '<seconds> <address> <args...>' per line")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="set a control from the start, e.g. --set temperature=0.8 --set world/bells=1")
    p.add_argument("--midi-file", metavar="FILE.mid",
                   help="play a standard MIDI file as the control score, through --midi-map")
    p.add_argument("--midi-map", metavar="MAP.toml",
                   help="MIDI mapping file, or a shipped map name (default: generic); "
                        "its format: midi.md in `distill-live patches`")
    p.add_argument("--sample-rate", type=int, default=48000,
                   help="file sample rate (default 48000; the model's rate is resampled with soxr if different)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (1 is fastest at batch 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.suffix.lower() not in (".wav", ".flac"):
        raise UserError(f"cannot write '{out}': use a .wav or .flac file name")
    if args.seconds <= 0:
        raise UserError("--seconds must be more than 0")
    if args.model == str(DEMO) and not (args.score or args.midi_file):
        args.score = str(DEMO_TOUR)
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    if model.prior is None:
        raise UserError(f"'{args.model}' has only a codec; train a prior first (distill-train --stages prior)")
    registry = ParamRegistry.for_model(model)
    messages = parse_set(args.set, registry)
    if args.score:
        messages += load_score(args.score, registry)
    if args.midi_file:
        from distill_live.control.midi.mapfile import load_map
        from distill_live.control.midi.mapper import midi_file_messages

        midimap = load_map(args.midi_map or "generic", registry)
        messages += midi_file_messages(args.midi_file, midimap, registry, earlier=messages)
    elif args.midi_map:
        raise UserError("--midi-map is used with --midi-file FILE.mid (live, give it to serve)")
    audio = render(model, args.seconds, seed=args.seed, messages=messages, registry=registry)
    rate = model.config.codec.sample_rate
    if args.sample_rate != rate:
        audio = soxr.resample(audio, rate, args.sample_rate, quality="HQ")
    fmt = "FLAC" if out.suffix.lower() == ".flac" else "WAV"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: sf.write(tmp, audio, args.sample_rate, format=fmt, subtype="PCM_24"))
    print(f"wrote {out} ({args.seconds:g} s, {args.sample_rate} Hz, 24-bit)")
    peak = float(abs(audio).max()) if len(audio) else 0.0
    if peak > 1.0:
        print(f"warning: the render clips (peak {20 * math.log10(peak):+.1f} dBFS); lower /distill/gain "
              f"(e.g. --set gain={1 / peak:.2f})")
    return 0

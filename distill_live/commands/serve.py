"""`distill-live serve MODEL`: play a model live on the sound card, steered by OSC and MIDI.

The main thread only starts things, prints where to connect, watches the sound card and, at
--verbose, logs the engine's telemetry once a second. Ctrl-C (or SIGTERM) fades out and stops.
"""
from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from pathlib import Path

import torch

from distill_live import UserError
from distill_live.control import midi, osc
from distill_live.control.osc.server import OscConfigError
from distill_live.control.params import INPUT_MODES, PREFIX, ParamRegistry
from distill_live.control.presets import Presets, presets_path
from distill_live.control.score import parse_set
from distill_live.live.audioinput import AudioInput
from distill_live.live.engine import Engine, freeze_what_is_loaded
from distill_live.live.player import PLAY_FADE
from distill_live.live.take import Take
from distill_live.live.soundcard import FileOutput, InputCard, NoSoundCard, SoundCard, choose_device, device_rate
from distill_live.model.modelfile import load_model

from .bundled import PATCHES, model_argument

log = logging.getLogger("distill.serve")


def _latency(text: str) -> str | float:
    if text in ("low", "high"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'low', 'high' or a number of seconds") from None
    if not 0 < value < 2:
        raise argparse.ArgumentTypeError(f"--latency {text}: give seconds between 0 and 2, e.g. 0.01")
    return value


def register(sub) -> None:
    p = sub.add_parser("serve", help="play a model live on the sound card, steered over OSC and MIDI",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    model_argument(p)
    g = p.add_argument_group("audio")
    g.add_argument("--device", help="output device: index or name (see `distill-live devices`); "
                                    "default: JACK if a JACK server runs, else the system default")
    g.add_argument("--output", metavar="FILE.wav", help="no sound card: record to this file in real time")
    g.add_argument("--channels", type=int, choices=[1, 2], default=2, help="the mono model on 1 or 2 channels")
    g.add_argument("--blocksize", type=int, default=0,
                   help="frames per audio callback (0 = whatever the device prefers, usually lowest latency)")
    g.add_argument("--latency", type=_latency, default="low", help="PortAudio latency: low, high or seconds")
    g.add_argument("--sample-rate", type=int, help="ask the device for this rate (default: the model's, "
                                                   "else the device's; resampled in the generator thread)")
    g.add_argument("--buffer-ms", type=float, default=None,
                   help="the least audio kept ready beyond one sound card block; the engine keeps more when "
                        "the chunk times it measures need it (see -v): more = safer on a busy machine, "
                        "less = lower latency, e.g. 2 on a quiet machine (default 10; 100 with --output)")
    g.add_argument("--threads", type=int, default=1, help="CPU threads for torch (1 is fastest for one voice)")
    g.add_argument("--realtime", action="store_true",
                   help="ask for real-time priority for the generator thread (Linux: allowed without root when "
                        "`ulimit -r` is above 0, e.g. in the audio group; the log says whether it got it)")
    g = p.add_argument_group("audio input")
    g.add_argument("--input", nargs="?", const="", metavar="DEVICE",
                   help="also listen to an audio input and encode it live (no DEVICE: JACK if a JACK server runs, "
                        "else the system default); /distill/input/mode chooses what it does")
    g.add_argument("--input-mode", choices=INPUT_MODES, default="resynth",
                   help="resynth: the model plays what the input plays; continue: the same, and when the input "
                        "falls quiet the prior carries on from it; off: the prior alone")
    g.add_argument("--input-channels", type=int, choices=[1, 2], default=2,
                   help="input channels, mixed to mono (1: the first only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stopped", action="store_true", help="start silent; /distill/play 1 starts")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="set a control at start, e.g. --set world/bells=1 --set temperature=0.8")
    p.add_argument("--models-dir", help="folder /distill/model may load models from (default: the model's folder)")
    p.add_argument("--presets", metavar="FILE.toml",
                   help="presets file for /distill/preset/save and recall (default: beside the model, "
                        "MODEL.presets.toml)")
    g = p.add_argument_group("takes")
    g.add_argument("--record", metavar="FILE.wav", help="also record what the engine plays to this file (at the "
                                                        "model's rate), alongside the card")
    g.add_argument("--record-score", metavar="FILE.score",
                   help="write every control the engine applied, at the chunk it applied it: `distill-live render` "
                        "with the same seed plays the take again, sample for sample")
    p.add_argument("--seconds", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("-v", "--verbose", action="store_true", help="log telemetry once a second")
    osc.add_arguments(p)
    midi.add_arguments(p)
    p.set_defaults(func=run)


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum, frame):
        stop.set()
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="distill-live: %(message)s")
    if args.buffer_ms is None:
        args.buffer_ms = 100.0 if args.output else 10.0
    if not 0 <= args.buffer_ms <= 1000:
        raise UserError("--buffer-ms must be between 0 and 1000")
    if args.blocksize < 0:
        raise UserError("--blocksize must be 0 (automatic) or more")
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    if model.prior is None:
        raise UserError(f"'{args.model}' has only a codec; train a prior first (distill-train --stages prior)")
    listening = args.input is not None
    registry = ParamRegistry.for_model(model, audio_input=listening)
    if listening:
        registry.submit(f"{PREFIX}/input/mode", [INPUT_MODES.index(args.input_mode)])
    for _, address, values in parse_set(args.set, registry):
        registry.submit(address, values)
    if not args.stopped:
        registry.submit(f"{PREFIX}/play", [1])
    model_rate = model.config.codec.sample_rate

    for option, name in (("--output", args.output), ("--record", args.record)):
        if name and Path(name).suffix.lower() not in (".wav", ".flac"):
            raise UserError(f"{option} {name}: use a .wav or .flac file name")
    if args.record_score and listening:
        raise UserError("--record-score cannot be used with --input: a score cannot replay the audio input "
                        "(record the take with --record and the input on its own)")
    presets = Presets.load(args.presets or presets_path(args.model), registry)
    if args.output:
        device, rate = None, args.sample_rate or model_rate
    else:
        try:
            device = choose_device(args.device)
            rate = device_rate(device, model_rate, args.sample_rate)
        except NoSoundCard as e:
            raise UserError(str(e)) from None

    audio_input = in_device = None
    if listening:
        try:
            in_device = choose_device(args.input or None, "input")
            in_rate = device_rate(in_device, model_rate, rate, "input")
        except NoSoundCard as e:
            raise UserError(str(e)) from None
        audio_input = AudioInput(min(args.input_channels, in_device["channels"]), in_rate, model_rate,
                                 model.config.codec.hop)

    models_dir = Path(args.models_dir or Path(args.model).resolve().parent)
    engine = Engine(model, registry, seed=args.seed, buffer_ms=args.buffer_ms, device_rate=rate,
                    models_dir=models_dir, audio_input=audio_input, presets=presets, realtime=args.realtime)
    take = None
    if args.record or args.record_score:
        take = engine.take = Take(engine, args.model, args.seed, args.record, args.record_score)
        take.start()
    if args.output:
        sink = FileOutput(engine, args.output, args.channels, engine.frame_samples)
        where = f"recording to {args.output}"
    else:
        sink = SoundCard(engine, device, min(args.channels, device["channels"]), args.blocksize, args.latency)
        where = f"on '{device['name']}' ({device['hostapi']})"

    source = InputCard(engine, in_device, audio_input.channels, args.blocksize, args.latency) if listening else None
    control = midi_control = None
    stop = threading.Event()
    _stop_on_signals(stop)
    engine.start()
    try:
        # controls first: opening a JACK MIDI client takes a second or more and stalls the audio
        # callbacks meanwhile (two underruns at every start, measured), so it happens before the card
        midi_control = midi.start_midi(engine, args, log=lambda line: print(f"distill-live: {line}", flush=True))
        try:  # OSC also answers MIDI learn and save, and reports the MIDI clock's tempo
            control = osc.start_control(engine, args, handlers=midi.osc_handlers(midi_control),
                                        tempo=midi_control.tempo if midi_control is not None else None)
        except (OscConfigError, OSError) as e:
            raise UserError(str(e)) from None
        frozen = freeze_what_is_loaded()  # (before the card: this last full collection takes a while)
        if args.verbose:
            log.info("%d objects loaded, kept out of the cycle collector's way", frozen)
        try:
            sink.open()
        except Exception as e:
            raise UserError(f"cannot open the sound card '{device['name']}': {e}; try another --device, or "
                            "--output FILE.wav") from None
        resampled = f", resampled to {rate} Hz" if rate != model_rate else ""
        print(f"distill-live: playing {args.model} {where} at {model_rate} Hz{resampled}"
              f"{' (stopped: send /distill/play 1)' if args.stopped else ''}", flush=True)
        if source is not None:
            try:
                source.open()
            except Exception as e:
                raise UserError(f"cannot open the audio input '{in_device['name']}': {e}; try another "
                                "--input DEVICE") from None
            print(f"distill-live: listening to '{in_device['name']}' ({in_device['hostapi']}, "
                  f"{audio_input.channels} channel{'s' if audio_input.channels > 1 else ''}); input mode "
                  f"{args.input_mode} (/distill/input/mode)", flush=True)
        print(f"distill-live: steer it from the Max, SuperCollider, Pd, TouchOSC or Open Stage Control patches in "
              f"{PATCHES} (`distill-live patches DIR` copies them); Ctrl-C stops", flush=True)
        _main_loop(engine, [sink] + ([source] if source else []), stop, args, midi_control)
        # fade out: stop playing and let the fade reach the card before closing it
        engine.registry.submit(f"{PREFIX}/play", [0])
        time.sleep(PLAY_FADE + engine.queued_seconds() + engine.output_latency + 0.05)
    finally:
        for part in (sink, source, midi_control, control):  # the card first: closing MIDI stalls it too
            if part is not None:
                part.close()
        engine.stop()
        if take is not None:
            take.close()
            print(f"distill-live: the take is in {' and '.join(str(p) for p in (args.record, args.record_score) if p)}",
                  flush=True)
    stats = engine.stats()
    print(f"distill-live: stopped after {stats['frames']} frames, {stats['underruns']} underruns", flush=True)
    return 0


def _main_loop(engine: Engine, streams: list, stop: threading.Event, args, midi_control) -> None:
    end = time.monotonic() + args.seconds if args.seconds else None
    next_log = time.monotonic() + 1.0
    while not stop.is_set() and (end is None or time.monotonic() < end):
        stop.wait(0.1)
        for stream in streams:
            stream.check()
        if args.verbose and time.monotonic() >= next_log:
            next_log += 1.0
            s = engine.stats()
            tempo = midi_control.tempo() if midi_control is not None else None
            log.info("rtf %.1f  frame %.2f/%.2f ms (p50/p99)  margin %.1f ms (chunk cost p99 %.1f, worst %.1f)  "
                     "buffer %.1f ms  latency %.1f ms  underruns %d%s",
                     s["rtf"], s["frame_ms_p50"], s["frame_ms_p99"], s["margin_ms"], s["cost_ms_p99"],
                     s["cost_ms_worst"], s["buffer_ms"], s["latency_ms"], s["underruns"],
                     f"  tempo {tempo:.1f} bpm" if tempo else "")
            if engine.input is not None:
                i = engine.input
                log.info("input: latency %.0f ms  skipped %.0f ms  frames filled with silence %d  overruns %d",
                         engine.input_latency_ms(), 1000 * i.skipped / i.model_rate, i.short, i.overruns)

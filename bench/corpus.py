"""Corpus playback against the neural decoder, on a real collection (the sonic-pi-samples package).

Trains a model with its recordings (or takes one you trained: `--model`), then prints JSON with, for
generated audio through the neural decoder (`/distill/corpus/mix 0`) and through the corpus (`1`):

- `frechet`: Fréchet distance between log-mel frame statistics of a generated stretch (seed 1,
  default controls) and of the held-out real audio (single frames; lower is nearer).
- `worlds_by_colour`, `worlds_by_colour_and_motion`: half-second windows of each world played alone
  (weight 1) classified by the nearest world of the training recordings (bench/measures.py's
  `WorldEar`), by colour (mean log-mel spectrum, level removed) and by colour and motion (also each
  band's spread over time and its frame-to-frame change); the share heard as the world asked for,
  over all worlds. Held-out real audio classified the same way is the ceiling.
- `passages`: with the corpus, the mean and median length in seconds of a real passage played
  before a jump, at several `/distill/corpus/stick` values (the default among them).
- `frame_ms`: frame time p50/p99 on one thread (`distill-live bench`'s loop) with each decoder, for
  the trained model and for a random model of the 48 kHz `default` preset with a corpus as long as
  the collection (speed depends on the shape and the corpus size, not on the weights).

and writes a spectrogram of the generated stretch through both decoders above the held-out real
audio (`--image`, default docs/bench-corpus.png).

    python bench/corpus.py --preset tiny --codec-minutes 5 --prior-minutes 4 --out runs/corpus
    python bench/corpus.py --model runs/corpus/model.distill --seconds 60
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from distill_live.commands.bench import bench  # noqa: E402
from distill_live.control.params import PREFIX, ParamRegistry  # noqa: E402
from distill_live.live.player import Player  # noqa: E402
from distill_live.model.modelfile import load_model, random_model  # noqa: E402
from distill_train.data import load_dataset  # noqa: E402
from distill_train.report import generated_vs_real_report  # noqa: E402
from measures import WorldEar, frechet, mel_frames  # noqa: E402
from quality import model_arguments, model_to_measure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 0.5  # seconds: what the world classifier hears at once
STICKS = (0.5, 0.75, 0.9, 0.99)


def play(model, seconds: float, mix: float, messages=(), seed: int = 1) -> tuple[np.ndarray, list[int]]:
    """`seconds` of the model through the Player, and the frames at which the corpus jumped."""
    registry = ParamRegistry.for_model(model)
    for address, args in [("play", (1,)), ("corpus/mix", (mix,)), *messages]:
        registry.submit(f"{PREFIX}/{address}", args, at=0.0)
    player = Player(model, registry, seed)
    out, jumps, last = [], [], 0
    for frame in range(int(seconds * player.frame_rate)):
        out.append(player.next_frame())
        state = player.voice.corpus_state
        if state is not None and state.jumps != last:
            jumps.append(frame)
            last = state.jumps
    return np.concatenate(out), jumps


def tally(counts: list[int], heard: dict[str, np.ndarray], world: int) -> None:
    """Add the windows heard as `world` by colour, by colour and motion, and the windows, to `counts`."""
    counts[0] += int((heard["colour"] == world).sum())
    counts[1] += int((heard["colour_and_motion"] == world).sum())
    counts[2] += len(heard["colour"])


def passages(jumps: list[int], frames: int, frame_rate: float) -> dict:
    bounds = [0, *jumps, frames]
    lengths = np.diff(bounds) / frame_rate
    return {"mean_s": round(float(lengths.mean()), 3), "median_s": round(float(np.median(lengths)), 3),
            "jumps": len(jumps)}


def frame_times(model, seconds: float) -> dict:
    """The engine's frame loop with each decoder (wall clock, as the card sees it), and the corpus step
    alone in CPU time (what it costs, whatever else the machine runs) for codes that match nothing,
    so it jumps as often as it can."""
    out = {}
    for name, mix in (("neural", 0), ("corpus", 1)):
        r = bench(model, seconds, threads=1, settings=[f"corpus/mix={mix}"])
        out[name] = {k: r[k] for k in ("frame_ms_p50", "frame_ms_p99", "rtf", "prior_ms_p50", "decoder_ms_p50",
                                       "corpus_ms_p50", "corpus_ms_p99")}
    c = model.config.codec
    codes = torch.randint(c.codebook_size, (int(seconds * c.frame_rate), c.levels),
                          generator=torch.Generator().manual_seed(0))
    state, cpu = model.corpus.start(), []
    for frame in codes:
        t0 = time.thread_time()
        _, state = model.corpus.play(state, frame)
        cpu.append(time.thread_time() - t0)
    p50, p99 = np.percentile(cpu, [50, 99]) * 1000
    out["corpus_step_cpu_ms"] = {"p50": round(float(p50), 3), "p99": round(float(p99), 3),
                                 "max": round(max(cpu) * 1000, 3), "jumps_per_second": round(state.jumps / seconds, 1)}
    return out


@torch.inference_mode()
def measure(model_path: Path, data: Path, seconds: float, world_seconds: float, image: Path | None) -> dict:
    torch.set_num_threads(1)
    model = load_model(model_path)
    if model.corpus is None:
        sys.exit(f"{model_path} was saved without its recordings: train it without --no-corpus")
    c = model.config.codec
    dataset = load_dataset(data, c.sample_rate, c.hop, log=lambda *_: None)
    real = np.concatenate([clip.audio for clip in dataset.valid()])
    real_frames = mel_frames(real, c.sample_rate)
    half = len(real_frames) // 2
    result = {"collection": f"{len(dataset.clips)} files, {dataset.seconds():.0f} s, {len(dataset.worlds)} worlds "
                            f"({len(dataset.valid())} held out)",
              "model": {"sample_rate": c.sample_rate, "corpus": model.info()["corpus"],
                        "codec_steps": model.meta.get("history", {}).get("codec", {}).get("steps"),
                        "prior_steps": model.meta.get("history", {}).get("prior", {}).get("steps")},
              "frechet": {"real_half_vs_half": round(frechet(real_frames[:half], real_frames[half:]), 2)}}
    generated = {}
    for name, mix in (("neural", 0.0), ("corpus", 1.0)):
        generated[name], jumps = play(model, seconds, mix)
        result["frechet"][name] = round(frechet(mel_frames(generated[name], c.sample_rate), real_frames), 2)
        if name == "corpus":
            result["passages"] = {"stick 0.75 (default)": passages(jumps, int(seconds * c.frame_rate), c.frame_rate)}
    for stick in STICKS:
        if stick != 0.75:
            _, jumps = play(model, seconds / 2, 1.0, [("corpus/stick", (stick,))])
            result["passages"][f"stick {stick:g}"] = passages(jumps, int(seconds / 2 * c.frame_rate), c.frame_rate)
    if image is not None:
        generated_vs_real_report(image, {"through the neural decoder (seed 1, default controls)": generated["neural"],
                                         "through the corpus (the same codes, corpus/mix 1)": generated["corpus"]},
                                 real[: len(generated["neural"])], c.sample_rate)
        result["image"] = str(image)

    ear = WorldEar.of(dataset.train(), len(dataset.worlds), c.sample_rate, WINDOW)
    heard = {"real_held_out": [0, 0, 0]}
    for clip in dataset.valid():
        tally(heard["real_held_out"], ear.heard(clip.audio), clip.world)
    for name, mix in (("neural", 0.0), ("corpus", 1.0)):
        heard[name] = [0, 0, 0]
        for i, world in enumerate(dataset.worlds):
            audio, _ = play(model, world_seconds, mix, [(f"world/{world}", (1.0,))])
            tally(heard[name], ear.heard(audio), i)
    result["worlds_by_colour"] = {k: round(v[0] / max(1, v[2]), 3) for k, v in heard.items()}
    result["worlds_by_colour_and_motion"] = {k: round(v[1] / max(1, v[2]), 3) for k, v in heard.items()}
    result["worlds_windows"] = {k: v[2] for k, v in heard.items()}
    result["chance"] = round(1 / len(dataset.worlds), 3)

    result["frame_ms"] = {"trained": frame_times(model, 10.0)}
    per_file = max(1, round(dataset.seconds() * 50 / len(dataset.clips)))  # frames (the preset runs 50 a second)
    big = random_model("default", cues=[per_file] * len(dataset.clips), recordings=True)
    result["frame_ms"]["default_preset_48kHz"] = {"corpus_seconds": round(big.corpus.seconds, 1),
                                                  **frame_times(big, 10.0)}
    return result


def main() -> None:
    p = model_arguments(__doc__, "runs/corpus", "tiny", 5, 4)
    p.add_argument("--seconds", type=float, default=60, help="seconds generated through each decoder")
    p.add_argument("--world-seconds", type=float, default=10, help="seconds per world for world recognition")
    p.add_argument("--image", default=str(ROOT / "docs" / "bench-corpus.png"), help="the spectrogram (none: '')")
    args = p.parse_args()
    result = {"load_average_before": [round(x, 2) for x in os.getloadavg()]}
    data, model, trained = model_to_measure(args)
    result.update(trained)
    result.update(measure(model, data, args.seconds, args.world_seconds, Path(args.image) if args.image else None))
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

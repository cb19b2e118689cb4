"""Quality benchmark on a real collection: the sonic-pi-samples Debian package (recorded sounds).

Trains the `small` preset (or `--preset`) (codec, then prior) for a fixed wall-clock budget on this machine, or
takes a model you already trained, then prints JSON with:

- codec: held-out multi-resolution STFT distance and log-mel L1, bitrate, steps/s, codebook use;
  the same distances for the same held-out files through Opus (ffmpeg's libopus) at 6 and 12 kbit/s.
- prior: held-out loss per level, a Fréchet distance between log-mel frame statistics of generated
  audio and of held-out real audio, the same distance for two baselines (codes drawn from the
  unigram code frequencies; real held-out audio split in two), and the memorisation figure.

    python bench/quality.py --codec-minutes 20 --prior-minutes 10 --out runs/bench
    python bench/quality.py --model runs/bench/model.distill      # measure only
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from distill_live.live.player import render
from distill_live.model.codec import Codec
from distill_live.model.modelfile import load_model
from distill_train.data import load_dataset
from distill_train.loop import read_checkpoint
from distill_train.losses import log_mel, multi_resolution_stft_distance, multi_scale_mel_distance
from distill_train.report import generated_vs_real_report

SAMPLES = Path("/usr/share/sonic-pi/samples")


def collection(root: Path, samples: Path = SAMPLES) -> Path:
    """Sonic Pi's samples sorted into worlds by name prefix (ambi_, bass_, drum_, ...), as symlinks."""
    if not samples.is_dir():
        sys.exit("sonic-pi-samples is not installed: run DISTILL_BENCH_DATA=1 bash scripts/setup.sh")
    for f in sorted(samples.glob("*.flac")):
        world = root / f.name.split("_")[0]
        world.mkdir(parents=True, exist_ok=True)
        (world / f.name).unlink(missing_ok=True)
        (world / f.name).symlink_to(f.resolve())
    return root


def opus_roundtrip(audio: np.ndarray, rate: int, kbps: int) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        src, enc, dec = (os.path.join(tmp, n) for n in ("in.wav", "x.opus", "out.wav"))
        sf.write(src, soxr.resample(audio, rate, 48000), 48000, subtype="FLOAT")
        run = dict(check=True, capture_output=True)
        subprocess.run(["ffmpeg", "-y", "-i", src, "-c:a", "libopus", "-b:a", f"{kbps}k", enc], **run)
        subprocess.run(["ffmpeg", "-y", "-i", enc, "-ar", "48000", dec], **run)
        out, _ = sf.read(dec, dtype="float32")
    out = soxr.resample(out if out.ndim == 1 else out.mean(1), 48000, rate)
    return np.pad(out, (0, max(0, len(audio) - len(out))))[: len(audio)]


def distances(x: np.ndarray, y: np.ndarray, rate: int) -> tuple[float, float]:
    tx, ty = torch.from_numpy(x)[None], torch.from_numpy(y)[None]
    return float(multi_resolution_stft_distance(tx, ty, rate)), float(multi_scale_mel_distance(tx, ty, rate))


def mel_frames(audio: np.ndarray, rate: int) -> np.ndarray:
    return log_mel(torch.from_numpy(audio)[None], rate, 1024, 256, 64)[0].T.numpy()


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of log-mel frames."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    vals, vecs = np.linalg.eigh(ca)
    sqrt_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    cross = np.linalg.eigvalsh(sqrt_a @ cb @ sqrt_a)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.sqrt(np.clip(cross, 0, None)).sum())


def train(data: Path, out: Path, preset: str, codec_minutes: float, prior_minutes: float,
          adversarial_minutes: float, device: str) -> tuple[Path, float]:
    model = out / "model.distill"
    t0 = time.time()
    cmd = [sys.executable, "-m", "distill_train", str(data), "-o", str(model), "--preset", preset,
           "--codec-minutes", str(codec_minutes), "--prior-minutes", str(prior_minutes), "--steps", "1000000",
           "--prior-steps", "1000000", "--device", device]
    if adversarial_minutes:
        cmd += ["--adversarial", "--adversarial-minutes", str(adversarial_minutes), "--adversarial-steps", "1000000"]
    else:
        cmd += ["--no-adversarial"]
    print(" ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
    return model, time.time() - t0


@torch.inference_mode()
def measure(model_path: Path, data: Path, seconds: float, image: Path | None = None) -> dict:
    torch.set_num_threads(2)
    model = load_model(model_path)
    c = model.config.codec
    dataset = load_dataset(data, c.sample_rate, c.hop, log=lambda *_: None)
    valid = dataset.valid()
    history = model.meta.get("history", {})
    # with an adversarial stage, the codec stage's own decoder (from its checkpoint) is measured beside it
    before = None
    checkpoint = model_path.with_name(model_path.name + ".run") / "checkpoint-codec.safetensors"
    adversarial = history.get("codec", {}).get("adversarial")
    if adversarial and checkpoint.exists():
        _, tensors = read_checkpoint(checkpoint)
        before = Codec(c)
        before.load_state_dict({k[len("model.codec."):]: v for k, v in tensors.items() if k.startswith("model.codec.")})
        before.eval()
    opus = shutil.which("ffmpeg") is not None
    codec_d, before_d, opus6, opus12 = [], [], [], []
    for clip in valid:
        x = clip.audio[: (len(clip.audio) // c.hop) * c.hop]
        y = model.codec.decode(model.codec.encode(torch.from_numpy(x)[None]))[0].numpy()
        codec_d.append(distances(y, x, c.sample_rate))
        if before is not None:
            y = before.decode(before.encode(torch.from_numpy(x)[None]))[0].numpy()
            before_d.append(distances(y, x, c.sample_rate))
        if opus:
            opus6.append(distances(opus_roundtrip(x, c.sample_rate, 6), x, c.sample_rate))
            opus12.append(distances(opus_roundtrip(x, c.sample_rate, 12), x, c.sample_rate))
    mean = lambda rows: {"stft_distance": round(float(np.mean([r[0] for r in rows])), 4),
                         "mel_l1": round(float(np.mean([r[1] for r in rows])), 4)}
    info = model.info()
    result = {
        "collection": f"{len(dataset.clips)} files, {dataset.seconds():.0f} s, {len(dataset.worlds)} worlds "
                      f"({len(valid)} held out)",
        "codec": {**mean(codec_d), "bitrate_kbps": info["bitrate"] / 1000,
                  "steps_per_s": history.get("codec", {}).get("steps_per_s"),
                  "steps": history.get("codec", {}).get("steps"),
                  "utilization": [h["utilization"] for h in info["health"]]},
        "opus_6kbps": mean(opus6) if opus else "ffmpeg not installed",
        "opus_12kbps": mean(opus12) if opus else "ffmpeg not installed",
    }
    if before is not None:
        result["codec_before_adversarial"] = mean(before_d)
        result["codec"]["adversarial_steps"] = adversarial["steps"]
    if model.prior is None:
        return result
    real = np.concatenate([clip.audio for clip in valid])
    generated = render(model, seconds, seed=1)
    if image is not None:
        generated_vs_real_report(image, generated, real, c.sample_rate)
    # baseline 1: codes drawn independently from the per-level unigram frequencies of the training codes
    codes = torch.cat(model.cues)
    gen = torch.Generator().manual_seed(1)
    frames = int(seconds * c.frame_rate)
    unigram = torch.stack([torch.multinomial(torch.bincount(codes[:, l], minlength=c.codebook_size).float(),
                                             frames, replacement=True, generator=gen) for l in range(c.levels)], -1)
    unigram_audio = model.codec.decode(unigram[None])[0].numpy()
    real_frames = mel_frames(real, c.sample_rate)
    half = len(real_frames) // 2
    result["prior"] = {
        "valid_loss_per_level": history.get("prior", {}).get("valid_loss_per_level"),
        "frechet_generated": round(frechet(mel_frames(generated, c.sample_rate), real_frames), 2),
        "frechet_unigram_baseline": round(frechet(mel_frames(unigram_audio, c.sample_rate), real_frames), 2),
        "frechet_real_half_vs_half": round(frechet(real_frames[:half], real_frames[half:]), 2),
        "memorisation": history.get("prior", {}).get("memorisation"),
        "generated_seconds": seconds,
    }
    return result


def model_arguments(description: str, out: str, preset: str, codec_minutes: float,
                    prior_minutes: float) -> argparse.ArgumentParser:
    """The options of a benchmark that trains a model on the collection or measures a given one."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="measure this model instead of training one")
    p.add_argument("--out", default=out, help="where the collection links and the model go")
    p.add_argument("--preset", default=preset, choices=["tiny", "small", "default"])
    p.add_argument("--codec-minutes", type=float, default=codec_minutes)
    p.add_argument("--prior-minutes", type=float, default=prior_minutes)
    p.add_argument("--adversarial-minutes", type=float, default=0,
                   help="also run the adversarial stage this long (the figures then show the codec before and after it)")
    p.add_argument("--device", default="auto", help="training device (auto, cpu, cuda, mps)")
    p.add_argument("--samples", default=str(SAMPLES), help="the folder of Sonic Pi's .flac samples")
    return p


def model_to_measure(args: argparse.Namespace) -> tuple[Path, Path, dict]:
    """The collection, the model (--model, or one trained now) and the training's wall time, if any."""
    out = Path(args.out)
    data = collection(out / "sonic-pi", Path(args.samples))
    if args.model:
        return data, Path(args.model), {}
    model, wall = train(data, out, args.preset, args.codec_minutes, args.prior_minutes, args.adversarial_minutes,
                        args.device)
    return data, model, {"train_wall_minutes": round(wall / 60, 1)}


def main() -> None:
    p = model_arguments(__doc__, "runs/bench", "small", 20, 10)
    p.add_argument("--seconds", type=float, default=60, help="seconds of generated audio to compare")
    args = p.parse_args()
    data, model, result = model_to_measure(args)
    result.update(measure(model, data, args.seconds, Path(args.out) / "generated-vs-real.png"))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

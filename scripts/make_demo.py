#!/usr/bin/env python3
"""Build the bundled demo model: synthesise four worlds of sounds, train on them, draw the pictures.

    .venv/bin/python scripts/make_demo.py                 # the shipped demo (15-40 min on 2 CPU cores)
    .venv/bin/python scripts/make_demo.py --quick --out /tmp/demo-smoke   # a few steps: checks the script

Steps:

1. **Sounds.** Everything the model learns from is synthesised here with a seeded numpy generator,
   so the demo's license is the project's and nothing is downloaded. Four clearly different worlds,
   eight files of four to six seconds each (16 kHz mono WAV), written to `<work>/sounds/<world>/`:

   - `bells`   FM bells (inharmonic carrier:modulator ratios, decaying modulation index), bright,
               tonal, struck and decaying;
   - `strings` Karplus-Strong plucked strings (a comb filter with a loss filter), mid-register
               phrases, tonal and percussive;
   - `breath`  breathy noise textures (band-passed noise with slowly moving bands and swells),
               noisy and airy;
   - `drones`  slow detuned drones (beating low partials under a slowly opening filter), dark,
               steady and tonal.

2. **Training.** The real CLI, with a fixed step budget (steps, not minutes, so a rerun reproduces
   the same model on the same machine and torch build):

       python -m distill_train <work>/sounds -o <out>/demo.distill --preset tiny --seed 0 \\
           --run-dir <work>/run --no-corpus --stages codec --steps 8000
       python -m distill_train <work>/sounds -o <out>/demo.distill --preset tiny --seed 0 \\
           --run-dir <work>/run --no-corpus --stages prior --prior-steps 2000

   (the two stages of one `codec,prior` run, as two commands so either can be redone; without the
   recordings, which would make the file 6 MB instead of 0.8).

   The `tiny` preset (16 kHz, 4 levels): `small` runs at about 0.3 codec steps/s on a shared 2-core
   machine and makes a 10 MB file, too slow to train usefully in the demo's time budget and too big
   to ship; `tiny` makes a 0.8 MB file. Measured for the shipped model (2026-12-05) on 2 CPU
   cores, the machine otherwise idle: codec 8000 steps at 16-19 steps/s (held-out loss 8.32 ->
   3.02) and prior 2000 steps at about 50 steps/s (its whole budget; held-out loss 4.92 -> 3.89,
   longest copied run 4 frames), 7.8 min in all. The demo shipped before it (trained before the
   prior's heads were conditioned) is kept in tests/data as a model file of that older kind.
   The run directory `<work>/run/` holds checkpoints, previews and report images; the codec's and
   the prior's reports are stacked into `<pictures>/demo-report.png`.

3. **Tour.** `<out>/tour.score` (written by this script; the score format of `distill-live render
   --score`) visits every world, blends two of them, holds descriptors, jumps to a training cue and
   freezes. It is rendered with `distill-live render` to `<out>/tour.wav` (not committed) and drawn
   as a spectrogram with the world names on the timeline, `<pictures>/demo-tour.png`.

Everything is seeded: the sounds are bit-identical on every run; training is deterministic for the
same steps, seed, torch build and machine. `--quick` trains a handful of steps to smoke-test the
script (the model is then noise, not a demo). The default `--out` is `distill_live/demo/`, which the
wheel carries, and `--pictures` is `docs/`, beside the README; `--work DIR` keeps the sounds and the
run directory, which otherwise live in a temporary folder.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SR = 16000  # the tiny preset's rate: files are used as they are, no resampling
WORLDS = ("bells", "strings", "breath", "drones")
FILES_PER_WORLD = 8
SEED = 0
PRESET = "tiny"
CODEC_STEPS = 8000
PRIOR_STEPS = 2000
QUICK_STEPS = (12, 12)
TOUR_SECONDS = 32.0


# -- synthesis ---------------------------------------------------------------------------------------

def _env(n: int, attack: float, decay: float) -> np.ndarray:
    t = np.arange(n) / SR
    return np.minimum(1.0, t / max(attack, 1e-4)) * np.exp(-t / decay)


def _fade(x: np.ndarray, seconds: float = 0.02) -> np.ndarray:
    k = min(len(x) // 2, int(seconds * SR))
    ramp = np.linspace(0.0, 1.0, k)
    x = x.copy()
    x[:k] *= ramp
    x[-k:] *= ramp[::-1]
    return x


def _normalise(x: np.ndarray, peak: float = 0.8) -> np.ndarray:
    return (x * (peak / max(np.abs(x).max(), 1e-9))).astype(np.float32)


def fm_bell(freq: float, ratio: float, index: float, seconds: float, decay: float, rng) -> np.ndarray:
    n = int(seconds * SR)
    t = np.arange(n) / SR
    mod_env = np.exp(-t / (decay * 0.35))
    phase = rng.uniform(0, 2 * np.pi)
    modulator = index * mod_env * np.sin(2 * np.pi * freq * ratio * t + phase)
    tone = np.sin(2 * np.pi * freq * t + modulator)
    partial = 0.3 * np.sin(2 * np.pi * freq * 2.76 * t) * np.exp(-t / (decay * 0.3))
    return (tone + partial) * _env(n, 0.002, decay)


def bells(rng, seconds: float) -> np.ndarray:
    n = int(seconds * SR)
    out = np.zeros(n)
    at = 0.0
    base = rng.choice([392.0, 440.0, 523.25, 587.33, 659.26])
    while at < seconds - 0.3:
        freq = base * rng.choice([1.0, 1.25, 1.5, 2.0, 2.5, 3.0])
        ratio = rng.choice([1.4, 2.76, 3.5, 1.99])
        strike = fm_bell(freq, ratio, rng.uniform(2.0, 5.0), min(3.5, seconds - at), rng.uniform(0.6, 1.8), rng)
        i = int(at * SR)
        out[i:i + len(strike)] += strike[: n - i] * rng.uniform(0.5, 1.0)
        at += rng.uniform(0.35, 1.2)
    return out


def karplus_strong(freq: float, seconds: float, loss: float, rng) -> np.ndarray:
    """y[n] = x[n] + loss * (y[n-N] + y[n-N-1]) / 2, computed one period at a time (vectorised)."""
    period = max(2, int(round(SR / freq)))
    n = int(seconds * SR)
    blocks = n // period + 2
    y = np.zeros((blocks + 1) * period)
    y[:period] = rng.uniform(-1, 1, period)
    # a softer pluck: smooth the initial burst a little
    y[:period] = np.convolve(y[:period], np.ones(3) / 3, mode="same")
    for b in range(1, blocks):
        cur = slice(b * period, (b + 1) * period)
        prev = y[(b - 1) * period:b * period]
        before = np.concatenate([y[b * period - period - 1:b * period - period], prev[:-1]]) if b > 1 \
            else np.concatenate([[0.0], prev[:-1]])
        y[cur] = loss * 0.5 * (prev + before)
    return y[:n]


def strings(rng, seconds: float) -> np.ndarray:
    n = int(seconds * SR)
    out = np.zeros(n)
    scale = np.array([0, 2, 3, 5, 7, 8, 10, 12])
    root = rng.choice([98.0, 110.0, 130.81, 146.83])
    at = 0.0
    while at < seconds - 0.2:
        freq = root * 2 ** (rng.choice(scale) / 12) * rng.choice([1, 2])
        pluck = karplus_strong(freq, min(2.5, seconds - at), rng.uniform(0.990, 0.997), rng)
        i = int(at * SR)
        out[i:i + len(pluck)] += pluck[: n - i] * rng.uniform(0.6, 1.0)
        at += rng.choice([0.25, 0.375, 0.5, 0.75])
    return out


def _band_noise(rng, n: int, centre: float, width: float) -> np.ndarray:
    spectrum = np.fft.rfft(rng.normal(size=n))
    f = np.fft.rfftfreq(n, 1 / SR)
    shape = np.exp(-0.5 * ((np.log(np.maximum(f, 1.0)) - np.log(centre)) / width) ** 2)
    return np.fft.irfft(spectrum * shape, n)


def breath(rng, seconds: float) -> np.ndarray:
    n = int(seconds * SR)
    t = np.arange(n) / SR
    out = np.zeros(n)
    for _ in range(3):
        centre = rng.uniform(700, 4000)
        band = _band_noise(rng, n, centre, rng.uniform(0.3, 0.7))
        rate = rng.uniform(0.25, 0.7)  # breaths per second
        swell = 0.5 - 0.5 * np.cos(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
        out += band * swell ** 1.5
    hiss = _band_noise(rng, n, 5000, 0.4) * 0.3
    return out + hiss


def drones(rng, seconds: float) -> np.ndarray:
    n = int(seconds * SR)
    t = np.arange(n) / SR
    root = rng.choice([41.2, 49.0, 55.0, 65.41, 73.42])
    out = np.zeros(n)
    for ratio in (1.0, 1.5, 2.0, 3.0):
        for detune in (-0.35, 0.0, 0.35):
            f = root * ratio + detune * ratio
            # a few harmonics, the upper ones opening and closing slowly
            opening = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.05, 0.15) * t + rng.uniform(0, 2 * np.pi))
            for h in range(1, 6):
                if f * h > 2000:
                    break
                amp = (1.0 / h) * (opening if h > 1 else 1.0) / ratio
                out += amp * np.sin(2 * np.pi * f * h * t + rng.uniform(0, 2 * np.pi))
    swell = np.minimum(1.0, t / 0.8)
    return out * swell


SYNTHS = {"bells": bells, "strings": strings, "breath": breath, "drones": drones}


def synthesise(folder: Path, seed: int = SEED, files_per_world: int = FILES_PER_WORLD) -> list[Path]:
    """Write the demo's training sounds into folder/<world>/<world>-NN.wav; returns the paths."""
    import soundfile as sf

    written = []
    for w, world in enumerate(WORLDS):
        (folder / world).mkdir(parents=True, exist_ok=True)
        for i in range(files_per_world):
            rng = np.random.default_rng([seed, w, i])
            seconds = float(rng.uniform(4.0, 6.0))
            audio = _normalise(_fade(SYNTHS[world](rng, seconds)), peak=float(rng.uniform(0.5, 0.9)))
            path = folder / world / f"{world}-{i:02d}.wav"
            sf.write(path, audio, SR, subtype="PCM_16")
            written.append(path)
    return written


# -- the tour ----------------------------------------------------------------------------------------

def tour_score(worlds=WORLDS, cue: int = 0, cue_world: str = WORLDS[1]) -> tuple[str, list[tuple[float, float, str]]]:
    """The tour score and its sections (start, end, label) for the picture.

    Each world alone for five seconds, a blend of two, a descriptor hold, a jump to training
    passage `cue` (a file of `cue_world`), then a freeze of that passage's last half second.
    """
    lines = ["# The demo tour: every world, a blend, a descriptor hold, a cue jump, a freeze.",
             f"# distill-live render -o tour.wav --seconds {TOUR_SECONDS:g}   (no model, no score: the demo plays this tour)",
             "0     /distill/temperature       0.9"]
    sections = []

    def only(at: float, *chosen: str) -> None:
        for other in worlds:
            lines.append(f"{at:<5g} /distill/world/{other:<14} {1 if other in chosen else 0}")

    at = 0.0
    for world in worlds:
        lines.append(f"# {world}")
        only(at, world)
        sections.append((at, at + 5.0, world))
        at += 5.0
    first, last = worlds[0], worlds[-1]
    lines.append(f"# a blend: {first} and {last} at once")
    only(at, first, last)
    sections.append((at, at + 4.0, f"{first}\n+ {last}"))
    at += 4.0
    lines.append(f"# {last} with brightness held high, then released")
    only(at, last)
    lines.append(f"{at:<5g} /distill/descriptor/brightness 0.9")
    sections.append((at, at + 4.0, f"{last}\nbright held"))
    at += 4.0
    lines.append(f"{at:<5g} /distill/descriptor/brightness/free")
    lines.append(f"# jump to training passage {cue} ({cue_world}) with a 0.1 s crossfade")
    only(at, cue_world)
    lines.append(f"{at:<5g} /distill/cue                {cue} 0.1")
    sections.append((at, at + 2.0, f"cue {cue}\n({cue_world})"))
    at += 2.0
    lines.append("# freeze: loop the last 25 frames (half a second)")
    lines.append(f"{at:<5g} /distill/loop               25")
    lines.append(f"{at:<5g} /distill/freeze             1")
    sections.append((at, TOUR_SECONDS, "freeze"))
    return "\n".join(lines) + "\n", sections


def draw_tour(wav: Path, png: Path, sections) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile as sf

    audio, sr = sf.read(wav, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    fig, ax = plt.subplots(figsize=(12, 4.2), dpi=80)
    ax.specgram(audio, NFFT=1024, Fs=sr, noverlap=768, cmap="magma", vmin=-130, vmax=-20)
    top = sr / 2
    ax.set_ylim(0, top)
    ax.set_xlim(0, len(audio) / sr)
    ax.set_xlabel("seconds")
    ax.set_ylabel("Hz")
    ax.set_title("the demo model playing its tour score")
    for start, end, label in sections:
        ax.axvline(start, color="white", lw=0.8, alpha=0.8)
        ax.text((start + min(end, len(audio) / sr)) / 2, 0.97 * top, label, color="white", ha="center", va="top",
                fontsize=9, bbox=dict(facecolor="black", alpha=0.5, lw=0))
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def stack_reports(run_dir: Path, png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    images = [mpimg.imread(run_dir / name) for name in ("report-codec.png", "report-prior.png")
              if (run_dir / name).exists()]
    if not images:
        raise SystemExit(f"no report images in {run_dir}")
    heights = [im.shape[0] for im in images]
    width = max(im.shape[1] for im in images)
    fig = plt.figure(figsize=(width / 100, sum(heights) / 100), dpi=100)
    top = 1.0
    for im in images:
        h = im.shape[0] / sum(heights)
        ax = fig.add_axes([0, top - h, im.shape[1] / width, h])
        ax.imshow(im)
        ax.axis("off")
        top -= h
    fig.savefig(png, dpi=60)
    plt.close(fig)


# -- main --------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make_demo.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "distill_live" / "demo"),
                   help="folder of the model and its tour score (default: distill_live/demo/, the bundled demo)")
    p.add_argument("--pictures", default=str(ROOT / "docs"),
                   help="folder of the README's pictures, demo-report.png and demo-tour.png (default: docs/)")
    p.add_argument("--work", help="keep the synthesised sounds (<work>/sounds) and the training run directory "
                                  "(<work>/run: checkpoints, previews, reports) here (default: a temporary folder, "
                                  "removed at the end)")
    p.add_argument("--quick", action="store_true",
                   help=f"train only {QUICK_STEPS[0]} + {QUICK_STEPS[1]} steps: a smoke test of the script")
    p.add_argument("--steps", type=int, default=CODEC_STEPS, help=f"codec steps (default {CODEC_STEPS})")
    p.add_argument("--prior-steps", type=int, default=PRIOR_STEPS, help=f"prior steps (default {PRIOR_STEPS})")
    p.add_argument("--skip-training", action="store_true",
                   help="reuse <out>/demo.distill: only write, render and draw the tour")
    args = p.parse_args(argv)

    import shutil
    import tempfile

    out, pictures = Path(args.out), Path(args.pictures)
    for folder in (out, pictures):
        folder.mkdir(parents=True, exist_ok=True)
    model = out / "demo.distill"
    steps, prior_steps = QUICK_STEPS if args.quick else (args.steps, args.prior_steps)

    if not args.skip_training:
        work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="distill-demo-"))
        data, run_dir = work / "sounds", work / "run"
        try:
            if data.exists():
                shutil.rmtree(data)
            paths = synthesise(data)
            print(f"synthesised {len(paths)} files in {data}: {', '.join(WORLDS)}", file=sys.stderr)
            # without its recordings (--no-corpus): the demo stays 0.8 MB instead of 6
            common = [str(data), "-o", str(model), "--preset", PRESET, "--seed", str(SEED), "--run-dir", str(run_dir),
                      "--restart", "--eval-every", str(min(200, steps, prior_steps)), "--no-corpus"]
            if args.quick:
                common.append("--quiet")
            started = time.time()
            # the two stages one after the other (the same as one codec,prior run), so either can be redone
            for stage, n in (("codec", steps), ("prior", prior_steps)):
                cmd = [sys.executable, "-m", "distill_train", *common, "--stages", stage,
                       "--steps" if stage == "codec" else "--prior-steps", str(n), "--checkpoint-every", str(min(500, n))]
                print(" ".join(cmd), file=sys.stderr)
                subprocess.run(cmd, check=True, cwd=ROOT)
            minutes = (time.time() - started) / 60
            stack_reports(run_dir, pictures / "demo-report.png")
        finally:
            if not args.work:
                shutil.rmtree(work, ignore_errors=True)
        print(f"training took {minutes:.1f} min; {model} is {model.stat().st_size / 1e6:.2f} MB", file=sys.stderr)

    from distill_live.model.modelfile import load_model

    files = load_model(model).meta["manifest"]["files"]
    cue_world = WORLDS[1]
    cue = next(i for i, f in enumerate(files) if f["world"] == cue_world and f.get("split") == "train")
    text, sections = tour_score(WORLDS, cue, cue_world)
    (out / "tour.score").write_text(text)
    wav = out / "tour.wav"  # .gitignore keeps it out of git, pyproject out of the wheel
    subprocess.run([sys.executable, "-m", "distill_live", "render", str(model), "-o", str(wav),
                    "--seconds", f"{TOUR_SECONDS:g}", "--seed", "0", "--sample-rate", str(SR),
                    "--score", str(out / "tour.score")], check=True, cwd=ROOT)
    draw_tour(wav, pictures / "demo-tour.png", sections)
    print(f"wrote {model}, {out / 'tour.score'}, {wav}, {pictures / 'demo-report.png'}, {pictures / 'demo-tour.png'}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Quality benchmark on a real collection: the sonic-pi-samples Debian package (recorded sounds).

Trains the `small` preset (or `--preset`) (codec, then prior) for a fixed wall-clock budget on this machine, or
takes a model you already trained, then prints JSON in three groups, each with the figures the
issue's "done when" asks for and whether they hold (`pass`):

- codec: ViSQOL MOS-LQO (audio mode, 48 kHz) of the held-out files through the codec (its output
  resampled to 48 kHz: what reaches the speaker) and through Opus at 6, 12 and 24 kbit/s at
  48 kHz, against each file at 48 kHz; beside it the spectral distances (multi-resolution STFT,
  log-mel L1) at the model's rate; bitrate, steps, codebook use.
- structure: a Fréchet distance on one-second windows (per band: mean log-mel, its spread and its
  frame-to-frame change) between a generated stretch and held-out audio, with three references:
  real training audio (the floor), codes drawn from the training codes' unigram frequencies, and
  the training codes shuffled in time (both decoded by the model's codec); how long a sound lasts
  (log-mel self-similarity 0.5 s and 2 s later) in generated audio and within the real files (and,
  for comparison, in each world's files played one after another); the prior's held-out loss per
  level and its memorisation figure.
- worlds: each world played alone at weight 1, heard as that world by a nearest-world-centroid
  classifier on one-second windows, by colour and by colour and motion, beside the same kind of
  classifier on real audio it never heard (the ceiling: every file of the collection, cross-validated
  in four folds; the held-out files alone are shown too, but a few files give too few windows to be
  steady); per world, spectral flatness of generated vs real audio at the model's rate, and of the
  recordings through the codec (the noise no prior can take away); and how often random stretches of
  the world's own recordings, as long as each world's generated stretch, land within 25% of the world's
  flatness (what a stretch holds decides its flatness: `worlds_flatness_within_25pct` puts the count of
  generated worlds within 25% beside the count the recordings' own stretches reach).

Generation plays with the engine's default controls, or with `--set CONTROL=VALUE` (e.g. `--set
temperature=0.8`), with random seed `--seed`. The measures themselves are in bench/measures.py.

    python bench/quality.py --codec-minutes 20 --prior-minutes 10 --out runs/bench
    python bench/quality.py --model runs/bench/model.distill      # measure only
    python bench/quality.py --model runs/bench/model.distill --no-codec --set temperature=0.8 --seed 2
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
from typing import Sequence

import numpy as np
import soundfile as sf
import soxr
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from distill_live.control.params import PREFIX, ParamError, ParamRegistry  # noqa: E402
from distill_live.live.player import render  # noqa: E402
from distill_live.model.codec import Codec  # noqa: E402
from distill_live.model.modelfile import load_model  # noqa: E402
from distill_train.data import load_dataset, prepare  # noqa: E402
from distill_train.loop import read_checkpoint  # noqa: E402
from distill_train.losses import multi_resolution_stft_distance, multi_scale_mel_distance  # noqa: E402
from distill_train.report import generated_vs_real_report  # noqa: E402
from measures import WorldEar, excerpt_flatness, flatness, frechet, near, self_similarity, window_stats  # noqa: E402

SAMPLES = Path("/usr/share/sonic-pi/samples")
OPUS_KBPS = (6, 12, 24)
WINDOW = 1.0  # seconds: the windows of the structure and world measures
LAGS = (0.5, 2.0)  # seconds: how long a sound lasts is measured this much later
Message = tuple[float, str, tuple]  # (seconds, address, arguments), as render takes them


def collection(root: Path, samples: Path = SAMPLES) -> Path:
    """Sonic Pi's samples sorted into worlds by name prefix (ambi_, bass_, drum_, ...), as symlinks."""
    if not samples.is_dir():
        sys.exit("sonic-pi-samples is not installed: run DISTILL_BENCH_DATA=1 bash scripts/setup.sh")
    for f in sorted(samples.glob("*.flac")):
        world = root / f.name.split("_")[0]
        link = world / f.name
        if link.is_symlink() and link.resolve() == f.resolve():
            continue  # linked already (a run beside this one may be reading it)
        world.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(f.resolve())
    return root


def opus(audio48: np.ndarray, kbps: int) -> np.ndarray:
    """48 kHz audio through Opus (ffmpeg's libopus) at `kbps` and back, the same length."""
    with tempfile.TemporaryDirectory() as tmp:
        src, enc, dec = (os.path.join(tmp, n) for n in ("in.wav", "x.opus", "out.wav"))
        sf.write(src, audio48, 48000, subtype="FLOAT")
        run = dict(check=True, capture_output=True)
        subprocess.run(["ffmpeg", "-y", "-i", src, "-c:a", "libopus", "-b:a", f"{kbps}k", enc], **run)
        subprocess.run(["ffmpeg", "-y", "-i", enc, "-ar", "48000", dec], **run)
        out, _ = sf.read(dec, dtype="float32")
    return fit(out if out.ndim == 1 else out.mean(1), len(audio48))


def fit(audio: np.ndarray, n: int) -> np.ndarray:
    """`audio` cut or zero-padded to `n` samples."""
    return np.pad(audio, (0, max(0, n - len(audio))))[:n]


def distances(x: np.ndarray, y: np.ndarray, rate: int) -> tuple[float, float]:
    tx, ty = torch.from_numpy(x)[None], torch.from_numpy(y)[None]
    return float(multi_resolution_stft_distance(tx, ty, rate)), float(multi_scale_mel_distance(tx, ty, rate))


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
    subprocess.run(cmd, check=True, stdout=sys.stderr)  # stdout is for the JSON alone
    return model, time.time() - t0


@torch.inference_mode()
def measure(model_path: Path, data: Path, seconds: float, world_seconds: float, image: Path | None = None,
            settings: Sequence[Message] = (), codec: bool = True, seed: int = 1) -> dict:
    """The three groups of figures (`codec`: False leaves out the codec's, which no control changes);
    `settings`: control messages every render starts with, e.g. (0.0, "/distill/temperature", (0.8,));
    `seed`: the renders' random seed."""
    torch.set_num_threads(2)
    model = load_model(model_path)
    c = model.config.codec
    dataset = load_dataset(data, c.sample_rate, c.hop, log=lambda *_: None)
    result = {"collection": f"{len(dataset.clips)} files, {dataset.seconds():.0f} s, {len(dataset.worlds)} worlds "
                            f"({len(dataset.valid())} held out)",
              "seed": seed, "controls": {address: args for _, address, args in settings}}
    if codec:
        result["codec"] = codec_quality(model, model_path, dataset)
    if model.prior is not None:
        result["structure"] = structure(model, dataset, seconds, image, settings, seed)
        result["worlds"] = worlds(model, dataset, world_seconds, settings, seed)
    return result


def codec_quality(model, model_path: Path, dataset) -> dict:
    """ViSQOL at 48 kHz and spectral distances at the model's rate, for the codec and for Opus."""
    c = model.config.codec
    history = model.meta.get("history", {})
    # with an adversarial stage, the codec stage's own decoder (from its checkpoint) is measured beside it
    codecs = {"codec": model.codec}
    checkpoint = model_path.with_name(model_path.name + ".run") / "checkpoint-codec.safetensors"
    adversarial = history.get("codec", {}).get("adversarial")
    if adversarial and checkpoint.exists():
        _, tensors = read_checkpoint(checkpoint)
        before = Codec(c)
        before.load_state_dict({k[len("model.codec."):]: v for k, v in tensors.items() if k.startswith("model.codec.")})
        codecs["codec_before_adversarial"] = before.eval()
    bitrates = OPUS_KBPS if shutil.which("ffmpeg") else ()
    names = [*codecs, *(f"opus_{kbps}kbps" for kbps in bitrates)]
    spectral, heard_all, refs = {n: [] for n in names}, {n: [] for n in names}, []
    whole = whole_files(dataset)
    for clip in dataset.valid():
        x = clip.audio[: (len(clip.audio) // c.hop) * c.hop]
        # the reference at 48 kHz: the file itself (so the codec pays for what its rate leaves out)
        ref = prepare(Path(dataset.root) / clip.path, 48000) if clip.path in whole else None
        if not isinstance(ref, np.ndarray):
            ref = soxr.resample(x, c.sample_rate, 48000)
        outputs = {n: codec.decode(codec.encode(torch.from_numpy(x)[None]))[0].numpy() for n, codec in codecs.items()}
        heard = {n: fit(soxr.resample(y, c.sample_rate, 48000), len(ref)) for n, y in outputs.items()}
        for kbps in bitrates:
            heard[f"opus_{kbps}kbps"] = opus(ref, kbps)
            outputs[f"opus_{kbps}kbps"] = fit(soxr.resample(heard[f"opus_{kbps}kbps"], 48000, c.sample_rate), len(x))
        refs.append(ref)
        for n in names:
            spectral[n].append(distances(fit(outputs[n], len(x)), x, c.sample_rate))
            heard_all[n].append(heard[n])
    # ViSQOL needs about a second of audio and many held-out one-shots are shorter: it hears the
    # held-out files one after another, each system's output lined up with its reference
    ear = visqol()
    ref = np.concatenate(refs).astype(np.float64)
    mos = {n: ear.measure_from_arrays(ref, np.concatenate(heard_all[n]).astype(np.float64), sample_rate=48000).moslqo
           for n in names} if ear is not None else {}
    info = model.info()
    out = {"bitrate_kbps": info["bitrate"] / 1000, "held_out_files": len(dataset.valid()),
           "steps": history.get("codec", {}).get("steps"), "steps_per_s": history.get("codec", {}).get("steps_per_s"),
           "utilization": [h["utilization"] for h in info["health"]]}
    if adversarial:
        out["adversarial_steps"] = adversarial["steps"]
    if ear is None:
        out["visqol_mos_lqo_48khz"] = "visqol-python is not installed: run DISTILL_BENCH_DATA=1 bash scripts/setup.sh"
    else:
        out["visqol_mos_lqo_48khz"] = {n: round(float(v), 3) for n, v in mos.items()}
    out["spectral"] = {n: {"stft_distance": round(float(np.mean([r[0] for r in rows])), 4),
                           "mel_l1": round(float(np.mean([r[1] for r in rows])), 4)} for n, rows in spectral.items()}
    if not bitrates:
        out["opus"] = "ffmpeg is not installed"
    if ear is not None and bitrates:
        scores = out["visqol_mos_lqo_48khz"]
        out["done_when"] = {"codec_minus_opus_12kbps": round(scores["codec"] - scores["opus_12kbps"], 3),
                            "pass": scores["codec"] >= scores["opus_12kbps"]}
    return out


def whole_files(dataset) -> set[str]:
    """Paths of the held-out clips that are whole files (not the held-out tail of a training file)."""
    trained = {clip.path for clip in dataset.train()}
    return {clip.path for clip in dataset.valid() if clip.path not in trained}


def visqol():
    """ViSQOL v3 in audio mode (visqol-python), or None where it is not installed."""
    try:
        from visqol import VisqolApi
    except ImportError:
        return None
    api = VisqolApi()
    api.create(mode="audio")
    return api


def structure(model, dataset, seconds: float, image: Path | None, settings: Sequence[Message] = (),
              seed: int = 1) -> dict:
    """Does generated audio move like the collection? One-second statistics against held-out audio and
    three references, and how long its sounds last. `settings`: control messages sent at the start."""
    c = model.config.codec
    history = model.meta.get("history", {})
    valid, train = dataset.valid(), dataset.train()
    real = np.concatenate([clip.audio for clip in valid])
    generated = render(model, seconds, seed=seed, messages=list(settings))
    if image is not None:
        generated_vs_real_report(image, generated, real, c.sample_rate)
    # the training files' codes (all files' codes when the model was trained on other data)
    cues = model.cues
    if len(cues) == len(dataset.clips):
        cues = [cue for cue, clip in zip(cues, dataset.clips) if clip.split == "train"]
    codes = torch.cat(cues).long()
    frames = int(seconds * c.frame_rate)
    gen = torch.Generator().manual_seed(1)
    unigram = torch.stack([torch.multinomial(torch.bincount(codes[:, level], minlength=c.codebook_size).float(),
                                             frames, replacement=True, generator=gen) for level in range(c.levels)], -1)
    shuffled = codes[torch.randperm(len(codes), generator=gen)[:frames]]
    windows = lambda audio: window_stats(audio, c.sample_rate, WINDOW, WINDOW / 2)
    held_out = windows(real).statistics()
    ours = windows(generated)
    training = windows(np.concatenate([clip.audio for clip in train]))
    references = {"floor_training_audio": training.sample(max(2, len(ours))),  # as many windows: the same bias
                  "unigram_codes": windows(model.codec.decode(unigram[None])[0].numpy()),
                  "shuffled_training_codes": windows(model.codec.decode(shuffled[None])[0].numpy())}
    # a Gaussian needs two windows: nothing audible (a silent generation) gives no distance
    distance = {n: rounded(frechet(s.statistics(), held_out), 2) if len(s) > 1 and len(held_out) > 1 else None
                for n, s in {"generated": ours, **references}.items()}
    baselines = [d for n, d in distance.items() if n in ("unigram_codes", "shuffled_training_codes") and d is not None]
    floor, best = distance["floor_training_audio"], min(baselines, default=None)
    position = (distance["generated"] - floor) / (best - floor) if None not in (distance["generated"], floor, best) \
        and best > floor else None
    lasting, lasting_pass = {}, True
    # beside the files themselves: each world's files one after another in random order, as the prior
    # is trained (a sound shorter than a training sequence is followed by others of its world) and as
    # it plays, so that a new sound after the last one counts as it does in generated audio
    order, in_sequence = np.random.default_rng(0), []
    for w in range(len(dataset.worlds)):
        clips = [clip.audio for clip in dataset.clips if clip.world == w]
        if clips:
            in_sequence.append(np.concatenate([clips[i] for i in order.permutation(len(clips))]))
    for lag in LAGS:
        g, _ = self_similarity([generated], c.sample_rate, lag)
        r, pairs = self_similarity([clip.audio for clip in dataset.clips], c.sample_rate, lag)
        ratio = g / r if g is not None and r else None
        lasting[f"{lag:g}s"] = {"generated": rounded(g), "real": rounded(r), "real_pairs": pairs,
                                "ratio": rounded(ratio),
                                "real_files_in_sequence": rounded(self_similarity(in_sequence, c.sample_rate, lag)[0])}
        lasting_pass = lasting_pass and near(ratio)
    return {
        "generated_seconds": seconds,
        "frechet_1s_windows": distance,
        "windows": {"generated": len(ours), "held_out": len(held_out)},
        "self_similarity": lasting,
        "prior_valid_loss_per_level": history.get("prior", {}).get("valid_loss_per_level"),
        "memorisation": history.get("prior", {}).get("memorisation"),
        "done_when": {"frechet_generated_minus_floor_over_best_baseline_minus_floor": rounded(position),
                      "frechet_pass": position is not None and position <= 0.5,
                      "self_similarity_pass": lasting_pass},
    }


def worlds(model, dataset, world_seconds: float, settings: Sequence[Message] = (), seed: int = 1) -> dict:
    """Each world at weight 1: heard as itself (by colour, by colour and motion) and as noisy as its recordings?
    `settings`: control messages sent at the start of each world's render."""
    c = model.config.codec
    train, valid = dataset.train(), dataset.valid()
    per_world = lambda clips, i: [clip.audio for clip in clips if clip.world == i]
    ear = WorldEar.of(train, len(dataset.worlds), c.sample_rate, WINDOW)
    rows, counts = {}, {kind: {"generated": [0, 0], "real_held_out": [0, 0]} for kind in WorldEar.KINDS}
    for i, world in enumerate(dataset.worlds):
        generated = render(model, world_seconds, seed=seed,
                           messages=[*settings, (0.0, f"{PREFIX}/world/{world}", (1.0,))])
        real = per_world(valid, i)
        heard = {"generated": ear.heard(generated), "real_held_out": ear.heard(np.concatenate(real)) if real else None}
        row = {}
        for kind in WorldEar.KINDS:
            for source, h in heard.items():
                if h is not None and len(h[kind]):
                    counts[kind][source][0] += int((h[kind] == i).sum())
                    counts[kind][source][1] += len(h[kind])
                row[f"{kind}_{source}"] = rounded(float(np.mean(h[kind] == i)) if h is not None and len(h[kind])
                                                  else None)
        files = per_world(train, i)
        recordings = np.concatenate(files)
        g, r = flatness(generated, c.sample_rate), flatness(recordings, c.sample_rate)
        # the recordings through the codec: how much of the generated noise is the codec's, which no prior undoes
        coded = through_codec(model, recordings)
        through = flatness(coded, c.sample_rate) if len(coded) else None
        # how near the world's own stretches of the same length land (what a stretch holds decides its flatness)
        own = excerpt_flatness(files, c.sample_rate, world_seconds)
        # flatness spans decades (a low rumble ~1e-5, noise ~0.5): significant figures, not decimals
        row.update(flatness_generated=significant(g), flatness_real=significant(r),
                   flatness_ratio=rounded(g / r if g is not None and r else None),
                   flatness_own_stretches_within=rounded(float(np.mean([near(x) for x in own])) if own else None),
                   flatness_codec_ratio=rounded(through / r if through is not None and r else None))
        rows[world] = row
    # the ceiling: real audio heard by an ear that never heard it, over every file of the collection
    # (cross-validated), since a few held-out files give too few windows to be steady
    files = {}
    for clip in dataset.clips:  # a file's held-out tail stays with the rest of the file
        files.setdefault((clip.world, clip.path), []).append(clip.audio)
    per_file = [[np.concatenate(parts) for (w, _), parts in files.items() if w == i] for i in range(len(dataset.worlds))]
    for kind, count in WorldEar.cross_validated(per_file, c.sample_rate, WINDOW).items():
        counts[kind]["real_cross_validated"] = list(count)
    out = {"chance": round(1 / len(dataset.worlds), 3), "seconds_per_world": world_seconds}
    done = {}
    for kind, need in zip(WorldEar.KINDS, (0.9, 0.8)):
        rate = {source: hits / n if n else None for source, (hits, n) in counts[kind].items()}
        ceiling = rate["real_cross_validated"]
        ratio = rate["generated"] / ceiling if rate["generated"] is not None and ceiling else None
        out[f"by_{kind}"] = {**{s: rounded(v) for s, v in rate.items()},
                             "windows": {s: n for s, (_, n) in counts[kind].items()}, "ratio": rounded(ratio)}
        done[f"by_{kind}_pass"] = ratio is not None and ratio >= need
    ratios = [row["flatness_ratio"] for row in rows.values()]
    done["flatness_pass"] = all(near(r) for r in ratios)
    out["worlds_flatness_within_25pct"] = {
        "generated": sum(near(r) for r in ratios),
        # as many as the worlds' own stretches of `world_seconds` reach, on average: about the most a stretch can
        "recordings_own_stretches": rounded(sum(row["flatness_own_stretches_within"] or 0 for row in rows.values())),
    }
    out["per_world"] = rows
    out["done_when"] = done
    return out


def setting(text: str) -> Message:
    """`temperature=0.8` as the message a render starts with: (0.0, "/distill/temperature", (0.8,)).
    Checked at once (before a training of half an hour) against the controls every model has."""
    name, _, value = text.partition("=")
    try:
        message = 0.0, f"{PREFIX}/{name.strip()}", (float(value),)
        ParamRegistry([], levels=8, codebook_size=256, cues=1).validate(*message[1:])
    except (ValueError, ParamError) as e:
        reason = e if isinstance(e, ParamError) else "give a control and a number, e.g. --set temperature=0.8"
        sys.exit(f"--set {text}: {reason}")
    return message


def rounded(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(float(x), digits)


def significant(x: float | None, figures: int = 4) -> float | None:
    return None if x is None else float(f"{float(x):.{figures}g}")


LATENT = "latent"  # the encoder's output decoded unquantized


def through_codec(model, audio: np.ndarray, levels: int | str | None = None) -> np.ndarray:
    """`audio`, cut to whole frames, through the model's codec with its coarse `levels` (None: all;
    `LATENT`: not quantized at all); empty when shorter than a frame."""
    codec = model.codec
    hop = model.config.codec.hop
    x = torch.from_numpy(np.ascontiguousarray(audio[: len(audio) // hop * hop], np.float32))[None]
    if not x.shape[1]:
        return np.zeros(0, np.float32)
    if levels == LATENT:
        latent, _ = codec.encoder(x, codec.encoder.start(1))
        return codec.decoder(latent, codec.decoder.start(1))[0][0].numpy()
    return codec.decode(codec.encode(x), levels)[0].numpy()


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
    p.add_argument("--world-seconds", type=float, default=30,
                   help="seconds generated per world for world identity and flatness (default 30)")
    p.add_argument("--set", action="append", default=[], metavar="CONTROL=VALUE",
                   help="play every render with this control set, e.g. --set temperature=0.8 (repeatable)")
    p.add_argument("--no-codec", action="store_true", help="leave out the codec's figures (no control changes them)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the generated audio (default 1)")
    args = p.parse_args()
    settings = [setting(s) for s in args.set]
    result = {"load_average_before": [round(x, 2) for x in os.getloadavg()]}
    data, model, trained = model_to_measure(args)
    result.update(trained)
    result.update(measure(model, data, args.seconds, args.world_seconds, Path(args.out) / "generated-vs-real.png",
                          settings, codec=not args.no_codec, seed=args.seed))
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""`distill-train`: fit a codec and a steerable prior to a folder of sounds, write one .distill file.

A user error (missing folder, unusable data, bad flag, unreadable model) ends with one line on
stderr and exit code 2; Ctrl-C or SIGTERM saves a checkpoint and ends with exit code 130.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import signal
import sys
import time
import traceback
from pathlib import Path

PROG = "distill-train"

# (codec steps, prior steps) when --steps / --prior-steps are not given
DEFAULT_STEPS = {"tiny": (400, 300), "small": (20000, 6000), "default": (60000, 20000)}
# adversarial stage steps when --adversarial-steps is not given
ADVERSARIAL_STEPS = {"tiny": 200, "small": 5000, "default": 15000}
# batch size per process (codec crops, prior sequences) when --batch-size is not given
BATCH = {"cpu": (8, 16), "mps": (8, 16), "cuda": (32, 64)}
# codec learning rate per preset: held-out loss after 3000 tiny steps on sonic-pi-samples was 5.33 at
# 5e-4, 3.96 at 1e-3, 3.36 at 2e-3, 3.27 at 4e-3; small, 1200 steps: 4.91 at 5e-4, 3.99 at 2e-3. The
# tiny codec of the steering tests (bells and rumble, 1000 steps, seeds 0-9) gave the bells back
# 10-36 dB too quiet at 2e-3 (the decoder had not yet found phases that add up for partials) and
# 2-7 dB at 3e-3 (bench/steering.py, docs/benchmarks.md)
CODEC_LR = {"tiny": 3e-3, "small": 2e-3, "default": 2e-3}
PRIOR_LR = 1e-3
ADVERSARIAL_LR = 2e-4  # decoder and discriminators, as in HiFi-GAN

EPILOG = """\
forms:
  distill-train DATA_DIR -o MODEL.distill
      train the codec, then the prior (--stages codec,prior, the default); a codec-only model is
      written to MODEL.distill as soon as the codec is done, then replaced by codec + prior.
  distill-train DATA_DIR -o MODEL.distill --stages codec
      the codec only.
  distill-train --stages prior DATA_DIR -o NEW.distill --codec MODEL.distill
      a new prior on the codec of an existing model (the data may differ: new worlds, new cues).
      Without --codec, the codec of -o itself is reused when that file exists.
  distill-train DATA_DIR -o MODEL.distill --resume
      continue after Ctrl-C from the checkpoints in the run directory; with the same flags the
      result equals an uninterrupted run. An unfinished checkpoint is never overwritten silently:
      without --resume, a run stops and asks for --resume or --restart.

DATA_DIR: audio files (wav flac aif aiff ogg mp3), searched recursively; each subfolder is a world
(no subfolders: each file is its own world).

dataset-adaptive defaults (when the flags are not given): codebook size 64 / 128 / 256 and EMA decay
0.8 / 0.9 / 0.95 for up to 20 / up to 100 / more than 100 usable files.

run directory (default MODEL.distill.run/): checkpoint-codec.safetensors, checkpoint-prior.safetensors,
report-codec.png, report-prior.png, previews/*.wav; with --adversarial also checkpoint-adversarial.safetensors,
report-adversarial.png and previews/*-adversarial.wav.
"""


class ArgumentError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise ArgumentError(f"{message} (see {PROG} --help)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' must be at least 1")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be more than 0")
    return value


def decay(text: str) -> float:
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"'{text}' must be between 0 and 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Train a distill model (codec + steerable prior) on a folder of sounds.",
               epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", metavar="DATA_DIR", help="folder of sounds (subfolders are worlds)")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.distill", help="model file to write")
    p.add_argument("--preset", choices=["tiny", "small", "default"], default=None,
                   help="model size: tiny (16 kHz, tests), small (24 kHz, laptops), default (48 kHz); "
                        "default: default")
    p.add_argument("--stages", default="codec,prior", help="codec, prior or codec,prior (default)")
    p.add_argument("--codec", metavar="MODEL.distill", help="with --stages prior: the model whose codec to reuse")
    p.add_argument("--steps", type=positive_int, help="codec training steps (default per preset: "
                   + ", ".join(f"{k} {v[0]}" for k, v in DEFAULT_STEPS.items()) + ")")
    p.add_argument("--prior-steps", type=positive_int, help="prior training steps, at most (early stopping may "
                   "end sooner; default per preset: " + ", ".join(f"{k} {v[1]}" for k, v in DEFAULT_STEPS.items())
                   + ")")
    p.add_argument("--codec-minutes", type=positive_float, help="stop the codec stage after this much training "
                   "time (the learning-rate schedule follows the budget; resume is then not bit-exact)")
    p.add_argument("--prior-minutes", type=positive_float, help="the same for the prior stage")
    p.add_argument("--adversarial", action=argparse.BooleanOptionalAction, default=None,
                   help="after the codec, fine-tune its decoder against discriminators (default: on with a CUDA "
                        "GPU, off otherwise: on a CPU it costs hours for a small gain)")
    p.add_argument("--adversarial-steps", type=positive_int, help="adversarial stage steps (default per preset: "
                   + ", ".join(f"{k} {v}" for k, v in ADVERSARIAL_STEPS.items()) + ")")
    p.add_argument("--adversarial-minutes", type=positive_float, help="the same time budget for the adversarial "
                   "stage")
    p.add_argument("--sample-rate", type=positive_int, help="model sample rate (default: the preset's); the "
                   "frame rate stays the preset's")
    p.add_argument("--levels", type=positive_int, help="residual quantizer levels (default: the preset's)")
    p.add_argument("--codebook-size", type=positive_int, help="codes per level (default: dataset-adaptive)")
    p.add_argument("--ema-decay", type=decay, help="codebook EMA decay (default: dataset-adaptive)")
    p.add_argument("--corpus", action=argparse.BooleanOptionalAction, default=True,
                   help="store the training recordings in the model (16-bit, at the model rate), so it can play "
                        "them as its corpus (/distill/corpus/mix); --no-corpus leaves them out (default: stored)")
    p.add_argument("--prior-kind", choices=["gru", "transformer"], default="gru", help="temporal model of the "
                   "prior (default gru)")
    p.add_argument("--batch-size", type=positive_int, help="batch size of both stages, per process under torchrun "
                   "(default: " + "; ".join(f"{k} codec {v[0]} crops, prior {v[1]} sequences" for k, v in BATCH.items())
                   + ")")
    p.add_argument("--lr", type=positive_float, help="peak learning rate of both stages (default: codec "
                   + ", ".join(f"{k} {v:g}" for k, v in CODEC_LR.items()) + f"; prior {PRIOR_LR:g})")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="default auto")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in the run directory")
    p.add_argument("--restart", action="store_true", help="start over even though the run directory holds an "
                   "unfinished checkpoint")
    p.add_argument("--run-dir", metavar="DIR", help="checkpoints, reports and previews (default MODEL.distill.run)")
    p.add_argument("--checkpoint-every", type=positive_int, default=200, help="steps between checkpoints "
                   "(default 200)")
    p.add_argument("--eval-every", type=positive_int, default=200, help="steps between held-out evaluations and "
                   "codebook health checks (default 200)")
    p.add_argument("--early-stopping", action=argparse.BooleanOptionalAction, default=False,
                   help="prior: stop when the held-out loss stops improving and keep the weights of its best "
                        "evaluation (default off: the prior trains its whole budget, since on a collection of "
                        "one-off sounds the held-out loss is lowest long before the prior has learnt how they move)")
    p.add_argument("--patience", type=positive_int, default=6, help="with --early-stopping: evaluations without "
                   "improvement before stopping (default 6)")
    p.add_argument("--quiet", action="store_true", help="no progress bar; only warnings and the result")
    return p


def adaptive(files: int) -> tuple[int, float]:
    """Codebook size and EMA decay for a collection of `files` usable files."""
    if files <= 20:
        return 64, 0.8
    if files <= 100:
        return 128, 0.9
    return 256, 0.95


def fingerprint(config, dataset, seed: int, batch_size: int, lr: float) -> str:
    """What must not change between a run and its resumption."""
    blob = json.dumps({"config": config.to_dict(), "files": [(c.path, c.split, len(c.audio)) for c in dataset.clips],
                       "seed": seed, "batch_size": batch_size, "lr": lr}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def weights_digest(module) -> str:
    """A short digest of a module's weights: a checkpoint made on top of other weights is not resumed."""
    return hashlib.sha256(b"".join(v.detach().cpu().numpy().tobytes()
                                   for v in module.state_dict().values())).hexdigest()[:16]


def on_codec_fingerprint(checkpoint: Path, settings: str, codec, resume: bool, log) -> str:
    """The fingerprint of a stage trained on top of `codec`: `settings` (the digest of its settings and
    data) + the digest of the codec's weights. On --resume, a checkpoint of the stage made on another
    codec (e.g. after more codec --steps) is removed first, so the stage starts over on the codec it now
    gets; other mismatches stay errors (the loop refuses them)."""
    from . import distributed

    fp = settings + weights_digest(codec)

    def start_over_if_codec_changed() -> None:
        meta = checkpoint_summary(checkpoint) if checkpoint.exists() else None
        made_on = (meta or {}).get("fingerprint", "")
        if made_on.startswith(settings) and made_on != fp:
            log(f"{meta.get('stage', 'stage')}: the codec changed since {checkpoint.name} was written; "
                f"starting it over")
            checkpoint.unlink()

    if resume:
        distributed.on_main(start_over_if_codec_changed)
    return fp


def _downsample(rows: list, key: str, n: int = 40) -> list:
    points = [[r["step"], round(r[key], 5)] for r in rows if key in r]
    if len(points) <= n:
        return points
    idx = sorted({round(i * (len(points) - 1) / (n - 1)) for i in range(n)})
    return [points[i] for i in idx]


def prior_history(stage, result, planned_steps: int, lr: float) -> dict:
    """What the model file says about the prior's training (the held-out figures of the step it keeps)."""
    valid = result.history["valid"]
    best = next((r for r in valid if r["step"] == stage.best_step), valid[-1] if valid else None)
    kept = best if stage.early_stopping and best else (valid[-1] if valid else None)
    return {
        "kind": stage.config.prior.kind, "steps": result.step, "planned_steps": planned_steps,
        "steps_per_s": round(result.steps_per_s, 3), "wall_s": round(result.wall_s, 1),
        "batch_size": stage.batch_size, "lr": lr, "sequence_frames": stage.seq_frames,
        "train_loss_end": round(result.history["train"][-1]["loss"], 5) if result.history["train"] else None,
        "valid_loss_start": round(valid[0]["valid"], 5) if valid else None,
        "valid_loss_end": round(kept["valid"], 5) if kept else None,
        "valid_loss_per_level": [round(kept[f"level{i}"], 5) for i in range(stage.config.codec.levels)]
        if kept else None,
        "best_step": kept["step"] if kept else None, "early_stopping": stage.early_stopping,
        "stopped_early": result.stopped_early,
        "valid_source": stage.valid_source, "valid_curve": _downsample(valid, "valid"),
        "memorisation": stage.memorisation(),
    }


def check(args) -> list[str]:
    """The checks of the flags alone: a typo is answered at once, before torch is imported. Returns the stages."""
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    if not stages or any(s not in ("codec", "prior") for s in stages) or len(set(stages)) != len(stages):
        raise ArgumentError(f"--stages takes codec, prior or codec,prior, not '{args.stages}'")
    if args.resume and args.restart:
        raise ArgumentError("--resume continues a run and --restart starts it over: give one of them")
    if args.codec and "codec" in stages:
        raise ArgumentError("--codec reuses an existing codec: use it with --stages prior")
    return stages


def check_paths(args, stages: list[str]) -> None:
    """The checks of this machine's files. Under torchrun every rank makes them once all have started, so
    that a folder missing on one machine stops the others too (instead of leaving them waiting)."""
    data = Path(args.data)
    if not data.exists():
        raise ArgumentError(f"data folder '{data}' does not exist")
    if not data.is_dir():
        raise ArgumentError(f"'{data}' is not a folder (give the folder that holds your sounds)")
    output = Path(args.output)
    if output.is_dir():
        raise ArgumentError(f"output '{output}' is a folder; give a file name such as model.distill")
    above = next(p for p in output.absolute().parents if p.exists())
    if not above.is_dir():
        raise ArgumentError(f"output '{output}' cannot be made: '{above}' is a file, not a folder")
    if "codec" not in stages:
        source = Path(args.codec) if args.codec else output
        if not source.exists():
            raise ArgumentError(f"codec model '{source}' does not exist" if args.codec else
                                "--stages prior needs a codec: add --codec MODEL.distill (an existing model), or "
                                "point -o at an existing model to give it a new prior")


def checkpoint_summary(path: Path) -> dict | None:
    """The JSON metadata of a checkpoint, or None when it cannot be read."""
    try:
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return json.loads((f.metadata() or {})["distill_checkpoint"])
    except Exception:
        return None


def remove_stale_temporaries(run_dir: Path, output: Path, log) -> None:
    """Temporary files a killed run left behind (every file is written to a temporary name, then renamed)."""
    stale = [*run_dir.glob(".*.tmp"), *run_dir.glob("previews/.*.tmp"), *output.parent.glob(f".{output.name}.*.tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log(f"removed {len(stale)} unfinished temporary file(s) left by a run that was killed")


def load_sounds(data: Path, codec_config, seed: int, warn):
    """The sounds, read on every rank from its machine's copy; under torchrun every copy must hold the
    same files, or the ranks would train on different collections without knowing it."""
    from . import distributed
    from .codec_stage import CROP_FRAMES
    from .data import load_dataset
    from .loop import TrainError

    c = codec_config
    dataset = distributed.on_every_rank(
        lambda: load_dataset(data, c.sample_rate, c.hop, crop_frames=CROP_FRAMES, seed=seed, log=warn))
    mine = [[f["path"], f["world"], f["seconds"]] for f in dataset.manifest()["files"]]
    ranks = [json.loads(b) for b in distributed.gather_bytes(json.dumps(mine).encode())]
    other = next((r for r, files in enumerate(ranks) if files != ranks[0]), None)
    if other is not None:
        first, theirs = {tuple(f) for f in ranks[0]}, {tuple(f) for f in ranks[other]}
        odd = sorted(first ^ theirs)[0]  # (path, world, seconds) of one file the two copies disagree on
        where, elsewhere = ("rank 0", f"rank {other}") if odd in first else (f"rank {other}", "rank 0")
        files = [len({f[0] for f in ranks[r]}) for r in (0, other)]  # a file may be split in two clips
        raise TrainError(f"the sounds in '{data}' differ between machines: rank 0 reads {files[0]} files, rank "
                         f"{other} {files[1]}, and {where}'s '{odd[0]}' ({odd[2]} s) is not in {elsewhere}'s "
                         f"copy; give every machine the same copy")
    return dataset


def make_folders(output: Path, run_dir: Path) -> None:
    from .loop import TrainError, write_error

    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrainError(f"cannot make the folder for '{output}' and its run folder '{run_dir}' ({write_error(e)}); "
                         f"give -o a place you can write to")


def clear_run_folder(run_dir: Path, output: Path, stages: list[str], args, log) -> None:
    """Clear what a fresh run must not reuse: the checkpoints of the stages it runs (and of those after
    them), refused if one is unfinished; and the temporary files of killed runs."""
    from .loop import TrainError

    if not args.resume:
        stale = [p for p in (run_dir / "checkpoint-codec.safetensors", run_dir / "checkpoint-adversarial.safetensors",
                             run_dir / "checkpoint-prior.safetensors")
                 if p.exists() and ("codec" in stages or p.name.endswith("prior.safetensors"))]
        for p in stale:
            meta = checkpoint_summary(p)
            if meta is not None and not meta.get("finished") and not args.restart:
                raise TrainError(f"{p} holds an unfinished {meta.get('stage', '')} run (step {meta.get('step')}): "
                                 f"add --resume to continue it, or --restart to start over")
        if stale:
            log(f"{run_dir}: starting over, removing {', '.join(p.name for p in stale)}")
            for p in stale:
                p.unlink()
    remove_stale_temporaries(run_dir, output, log)


def write_model(output: Path, model) -> None:
    """save_model, with a full or read-only disk said in one sentence."""
    from distill_live.model.modelfile import save_model

    from .loop import WRITE_ERRORS, TrainError, write_error

    existed = output.exists()
    try:
        save_model(output, model)
    except WRITE_ERRORS as e:
        raise TrainError(f"could not write the model '{output}' ({write_error(e)}); "
                         f"{'the previous file there is untouched' if existed else 'nothing was written'} and the "
                         f"checkpoints are kept, so free some space and run again with --resume")


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        stages = check(args)
        if "WORLD_SIZE" not in os.environ:  # a typo is answered before torch is imported
            check_paths(args, stages)
    except ArgumentError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:  # these import torch (seconds): a Ctrl-C or SIGTERM meanwhile is a stop, not a traceback
        from distill_live.model import modelfile  # noqa: F401 -- loaded here; train_and_report takes its names

        from . import data, loop  # noqa: F401
        from .distributed import end_process, joined
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted before training started; nothing was written", file=sys.stderr)
        signal.signal(signal.SIGTERM, previous)
        return 130

    try:
        code = train_and_report(args, argv)
    except BaseException:
        if not joined():
            raise
        traceback.print_exc()  # a bug: its traceback, and Python's status for it
        code = 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    end_process(code)  # under torchrun the process ends here (see distributed.end_process)
    return code


def train_and_report(args, argv: list[str]) -> int:
    """`train`, with the one sentence a user gets for each way it can stop; the exit status."""
    from distill_live.model.modelfile import ModelFileError

    from .data import DatasetError
    from .distributed import StoppedElsewhere, joined, lost_a_peer
    from .loop import Interrupted, TrainError

    rank = int(os.environ.get("RANK", "0"))  # under torchrun only rank 0 speaks, except about its own errors
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))  # and one rank per machine about another rank's
    who = f"{PROG} (rank {rank})" if rank else PROG
    try:
        return train(args)
    except Interrupted as e:
        again = argv + ([] if "--resume" in argv else ["--resume"])
        how = shlex.join([PROG, *again]) if "WORLD_SIZE" not in os.environ else "the same torchrun command + --resume"
        if rank == 0:
            print(f"{PROG}: stopped at step {e.step} of the {e.stage} stage; checkpoint saved in {e.checkpoint}. "
                  f"Resume with: {how}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        if rank == 0:
            print(f"{PROG}: interrupted; the checkpoints in the run directory are kept (run the same command with "
                  f"--resume to continue from the last one)", file=sys.stderr)
        return 130
    except (TrainError, DatasetError, ModelFileError, ArgumentError) as e:
        # under torchrun every rank of a machine meets the same error (the others get StoppedElsewhere
        # or a closed connection): its first rank says it, except before the ranks have joined
        if local_rank == 0 or not joined():
            print(f"{who}: {e}", file=sys.stderr)
        return 2
    except StoppedElsewhere as e:  # that rank said it on its machine; the first rank of every other machine repeats it
        if local_rank == 0:
            print(f"{who}: stopped because rank {e.rank} did: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if not lost_a_peer(e):
            raise
        if local_rank == 0:
            print(f"{who}: stopped because another training process ended or stopped answering (its own "
                  f"message says why)", file=sys.stderr)
        return 2


def train(args) -> int:
    from loguru import logger

    logger.disable("vector_quantize_pytorch")  # k-means warns about duplicate points on tiny data

    from distill_live.model.config import preset
    from distill_live.model.modelfile import DistillModel, load_model

    from . import distributed
    from .adversarial_stage import AdversarialStage
    from .codec_stage import CROP_FRAMES, CodecStage, extract_codes, recordings
    from .health import code_counts, codebook_health, collapse_warnings
    from .loop import Settings, TrainError, pick_device, run, seed_everything
    from .prior_stage import PriorStage, heard_descriptors

    stages = check(args)
    data, output = Path(args.data), Path(args.output)
    run_dir = Path(args.run_dir) if args.run_dir else output.with_name(output.name + ".run")
    distributed.start()  # before any codec is built: its quantizer syncs across ranks only if the group exists then

    def this_device():
        try:
            return distributed.rank_device(pick_device(args.device))
        except ValueError as e:
            raise TrainError(str(e))

    device = distributed.on_every_rank(this_device)
    if distributed.world_size() > 1:  # (without torchrun, main() checked them before importing torch)
        distributed.on_every_rank(lambda: check_paths(args, stages))
    main = distributed.is_main()  # rank 0 alone prints and writes files
    quiet = args.quiet or not main

    def log(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr)

    def warn(line: str) -> None:
        if main:
            print(line, file=sys.stderr)

    distributed.on_main(lambda: clear_run_folder(run_dir, output, stages, args, log))  # rank 0's machine has it
    started = time.time()
    preset_name = args.preset or "default"
    meta_training = {"preset": preset_name, "seed": args.seed, "device": str(device), "stages": stages,
                     "processes": distributed.world_size()}

    # -- the codec: trained here, or taken from an existing model ---------------------------------
    if "codec" in stages:
        config = preset(preset_name)
        c = config.codec
        if args.sample_rate:
            frame_rate = c.sample_rate / c.hop
            step = 4 * c.upsample  # the iSTFT head needs hop divisible by upsample, n_fft = 4 * head hop
            c.hop = max(step, round(args.sample_rate / frame_rate / step) * step)
            c.sample_rate = args.sample_rate
        if args.levels:
            c.levels = args.levels
        dataset = load_sounds(data, c, args.seed, warn)
        files = len({clip.path for clip in dataset.clips})
        size, ema = adaptive(files)
        c.codebook_size = args.codebook_size or size
        c.ema_decay = args.ema_decay or ema
        meta_training.update(files=files, codebook_size=c.codebook_size, ema_decay=c.ema_decay,
                             codebook_size_from="flag" if args.codebook_size else f"dataset-adaptive ({files} files)",
                             ema_decay_from="flag" if args.ema_decay else f"dataset-adaptive ({files} files)")
        log(f"{data}: {files} usable files at {c.sample_rate} Hz ({dataset.seconds():.1f} s, {len(dataset.clips)} clips, "
            f"{len(dataset.valid())} held out), {len(dataset.worlds)} worlds: {', '.join(dataset.worlds)}; "
            f"{c.levels} levels x {c.codebook_size} codes, EMA decay {c.ema_decay:g}")
        steps = args.steps or DEFAULT_STEPS[preset_name][0]
        batch, lr = args.batch_size or BATCH[device.type][0], args.lr or CODEC_LR[preset_name]
        settings = Settings(steps=steps, batch_size=batch, lr=lr, checkpoint_every=args.checkpoint_every,
                            eval_every=args.eval_every, quiet=quiet,
                            time_budget_s=args.codec_minutes * 60 if args.codec_minutes else None)
        distributed.on_main(lambda: make_folders(output, run_dir))
        seed_everything(args.seed)
        stage = CodecStage(c, dataset, batch, args.seed, device, run_dir)
        result = run(stage, settings, run_dir / "checkpoint-codec.safetensors", resume=args.resume, log=log,
                     fingerprint=fingerprint(config, dataset, args.seed, batch, lr))
        codec = stage.codec.eval()
        valid = result.history["valid"]
        codec_history = {
            "steps": result.step, "planned_steps": steps, "steps_per_s": round(result.steps_per_s, 3),
            "wall_s": round(result.wall_s, 1), "batch_size": batch, "lr": lr, "crop_frames": CROP_FRAMES,
            "train_loss_end": round(result.history["train"][-1]["loss"], 5) if result.history["train"] else None,
            "valid_loss_start": round(valid[0]["valid"], 5) if valid else None,
            "valid_loss_end": round(valid[-1]["valid"], 5) if valid else None,
            "valid_stft_end": round(valid[-1]["stft"], 5) if valid else None,
            "valid_mel_end": round(valid[-1]["mel"], 5) if valid else None,
            "valid_source": stage.valid_source, "valid_curve": _downsample(valid, "valid"),
            "stopped": "time budget" if result.stopped_early else "done",
        }
        adversarial = device.type == "cuda" if args.adversarial is None else args.adversarial
        if adversarial:
            steps = args.adversarial_steps or ADVERSARIAL_STEPS[preset_name]
            settings = Settings(steps=steps, batch_size=batch, lr=ADVERSARIAL_LR, checkpoint_every=args.checkpoint_every,
                                eval_every=args.eval_every, quiet=quiet,
                                time_budget_s=args.adversarial_minutes * 60 if args.adversarial_minutes else None)
            seed_everything(args.seed + 2)
            stage = AdversarialStage(codec, dataset, batch, args.seed + 2, device, run_dir, ADVERSARIAL_LR)
            checkpoint = run_dir / "checkpoint-adversarial.safetensors"
            fp = on_codec_fingerprint(checkpoint, fingerprint(config, dataset, args.seed, batch, ADVERSARIAL_LR),
                                      codec, args.resume, log)
            result = run(stage, settings, checkpoint, resume=args.resume, log=log, fingerprint=fp)
            codec = stage.codec.eval()
            valid = result.history["valid"]
            codec_history["adversarial"] = {
                "steps": result.step, "planned_steps": steps, "steps_per_s": round(result.steps_per_s, 3),
                "wall_s": round(result.wall_s, 1), "lr": ADVERSARIAL_LR,
                "valid_loss_end": round(valid[-1]["valid"], 5) if valid else None,
                "valid_stft_end": round(valid[-1]["stft"], 5) if valid else None,
                "valid_mel_end": round(valid[-1]["mel"], 5) if valid else None,
                "stopped": "time budget" if result.stopped_early else "done"}
        meta_training["adversarial"] = adversarial
        cues = extract_codes(codec, dataset.clips, device)
        health = codebook_health(code_counts(cues, c.levels, c.codebook_size))
        for line in collapse_warnings(health):
            warn(line)
        config.prior.kind = args.prior_kind
        config.prior.worlds = len(dataset.worlds)
        meta = {"manifest": dataset.manifest(), "descriptor_stats": dataset.stats.to_dict(), "health": health,
                "history": {"codec": codec_history, "wall_s": round(time.time() - started, 1)},
                "training": meta_training}
        kept = recordings(dataset.clips, cues, c.hop) if args.corpus else []
        distributed.on_main(lambda: write_model(output, DistillModel(config, codec, None, cues, meta, kept)))
        log(f"codec: held-out loss {codec_history['valid_loss_start']} -> {codec_history['valid_loss_end']}; "
            f"utilisation per level {' '.join(format(h['utilization'], '.0%') for h in health)}; "
            f"wrote {output} (codec only)")
    else:
        source = Path(args.codec) if args.codec else output
        model = distributed.on_every_rank(lambda: load_model(source, device=str(device)))
        config = model.config
        c = config.codec
        preset_name = args.preset or model.meta.get("training", {}).get("preset", "default")
        if preset_name not in DEFAULT_STEPS:
            preset_name = "default"
        if args.preset:  # the prior's size from the preset asked for; the codec stays as it is
            config.prior = preset(args.preset).prior
        config.prior.kind = args.prior_kind
        dataset = load_sounds(data, c, args.seed, warn)
        config.prior.worlds = len(dataset.worlds)
        codec = model.codec.eval()
        cues = extract_codes(codec, dataset.clips, device)
        health = codebook_health(code_counts(cues, c.levels, c.codebook_size))
        meta_training.update(model.meta.get("training", {}), codec_from=str(source), stages=stages,
                             seed=args.seed, device=str(device), preset=preset_name)
        meta = {"manifest": dataset.manifest(), "descriptor_stats": dataset.stats.to_dict(), "health": health,
                "history": {"codec": model.meta.get("history", {}).get("codec", {})}, "training": meta_training}
        log(f"reusing the codec of {source}; {data}: {len(dataset.clips)} clips at {c.sample_rate} Hz, "
            f"{len(dataset.worlds)} worlds: {', '.join(dataset.worlds)}")

    if "prior" not in stages:
        if main:
            print(f"wrote {output}: codec only, {len(cues)} cues, {len(dataset.worlds)} worlds (run dir {run_dir})")
        distributed.stop()
        return 0

    # -- the prior --------------------------------------------------------------------------------
    distributed.on_main(lambda: make_folders(output, run_dir))
    steps = args.prior_steps or DEFAULT_STEPS[preset_name][1]
    batch, lr = args.batch_size or BATCH[device.type][1], args.lr or PRIOR_LR
    seq_frames = 64 if preset_name == "tiny" else 128
    settings = Settings(steps=steps, batch_size=batch, lr=lr, checkpoint_every=args.checkpoint_every,
                        eval_every=args.eval_every, quiet=quiet,
                        time_budget_s=args.prior_minutes * 60 if args.prior_minutes else None)
    seed_everything(args.seed + 1)
    stats, descriptors = heard_descriptors(codec, cues, dataset.clips)
    meta["descriptor_stats"] = stats.to_dict()
    stage = PriorStage(config, codec, cues, descriptors, dataset, batch, seq_frames, args.seed + 1, device, run_dir,
                       patience=args.patience, early_stopping=args.early_stopping)
    checkpoint = run_dir / "checkpoint-prior.safetensors"
    fp = on_codec_fingerprint(checkpoint, fingerprint(config, dataset, args.seed, batch, lr), codec, args.resume, log)
    result = run(stage, settings, checkpoint, resume=args.resume, log=log, fingerprint=fp)
    prior = stage.prior.eval()

    def write_the_model() -> dict:
        meta["history"]["prior"] = history = prior_history(stage, result, steps, lr)
        meta["history"]["wall_s"] = round(time.time() - started, 1)
        write_model(output, DistillModel(config, codec, prior, cues, meta,
                                         recordings(dataset.clips, cues, c.hop) if args.corpus else []))
        return history

    history = distributed.on_main(write_the_model)
    if main:
        whole = history["memorisation"]["whole_frames"]
        log(f"prior: held-out loss {history['valid_loss_start']} -> {history['valid_loss_end']} "
            f"(step {history['best_step']}); memorisation: longest copied run {whole['longest_copy_frames']} "
            f"frames, {whole['ngram8_overlap']:.0%} of 8-frame n-grams found in training")
        print(f"wrote {output}: codec + {config.prior.kind} prior, {len(cues)} cues, {len(dataset.worlds)} worlds "
              f"(run dir {run_dir})")
    distributed.stop()
    return 0

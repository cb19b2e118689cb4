"""Training machinery shared by the codec and the prior stages.

One loop for both: AdamW with linear warm-up then cosine decay, gradient clipping, a tqdm
progress bar, periodic evaluation, checkpoints, Ctrl-C / SIGTERM handling and exact resume.

Checkpoints are safetensors files (never pickle): every tensor of the modules, the optimizer and
the random generators as tensors, everything else (step, sampler position, history, settings) as
JSON in the metadata. A resumed run therefore replays exactly what the uninterrupted run would
have done: the data order comes from the stage's seeded sampler, every random choice from seeded
generators, and all of their states are in the checkpoint.

For tests of distributed training, DISTILL_DEBUG_RANK_DUMP=DIR makes every rank write its final
weights to DIR/STAGE-rankR.safetensors, so a test can check that the ranks agree.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import random
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import torch
from safetensors import SafetensorError
from safetensors.torch import load as tensors_from_bytes
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from distill_live import atomic_write

from . import distributed

CHECKPOINT_VERSION = 1


class TrainError(Exception):
    """Something the user can fix; the CLI prints it as one line and exits with 2."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: the loop saved a checkpoint at `step` and stopped."""

    def __init__(self, stage: str, step: int, checkpoint: Path):
        super().__init__(f"{stage} stopped at step {step}")
        self.stage, self.step, self.checkpoint = stage, step, checkpoint


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda was asked for but PyTorch sees no CUDA GPU (is the CUDA build installed?)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise TrainError("--device mps was asked for but this PyTorch has no Apple-silicon GPU support here")
    if name not in ("cpu", "cuda", "mps"):
        raise TrainError(f"unknown device '{name}' (auto, cpu, cuda or mps)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed the global generators (used inside vector_quantize_pytorch and by dropout layers)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def learning_rate(base: float, progress: float, warmup: float) -> float:
    """Linear warm-up over the first `warmup` share of training, then cosine decay to 10% of `base`."""
    if progress < warmup:
        return base * (progress / warmup) if warmup > 0 else base
    t = min(1.0, (progress - warmup) / max(1e-9, 1.0 - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * t)))


@dataclass
class Settings:
    """How one stage trains (stored in its checkpoint and in the model's history)."""

    steps: int
    batch_size: int
    lr: float
    warmup: float = 0.05  # share of the steps
    grad_clip: float = 1.0
    weight_decay: float = 0.01
    betas: tuple = (0.8, 0.99)
    checkpoint_every: int = 200
    eval_every: int = 200
    log_every: int = 10
    time_budget_s: float | None = None  # stop after this much training time (resume is then not exact)
    quiet: bool = False


class Stage:
    """What a training stage provides to `run`. Override the methods; defaults do nothing."""

    name = "stage"

    def modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules().values() for p in m.parameters() if p.requires_grad]

    def train_step(self, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """One batch: returns the loss to minimise and named figures for the history."""
        raise NotImplementedError

    def evaluate(self, step: int) -> dict[str, float]:
        """Held-out figures, at least {"valid": loss}. Must not touch any random generator."""
        return {}

    def should_stop(self) -> bool:
        """Early stopping (checked after each evaluation)."""
        return False

    def state_dict(self) -> dict:
        """JSON-able state (sampler position, early-stopping counters...)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors beyond the modules (generator states, best weights...)."""
        return {}

    def load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def say(self, line: str) -> None:
        """Print a line without breaking the progress bar (the loop replaces this)."""
        print(line, file=sys.stderr)

    def on_checkpoint(self, step: int, history: dict, final: bool) -> None:
        """Previews and report images; must not touch any random generator."""

    def finish(self) -> None:
        """After the last step (early stopping may restore the best weights here)."""


class StopSignals:
    """Turns SIGINT and SIGTERM into a flag the loop checks after each step."""

    def __init__(self):
        self.requested: str | None = None
        self._old = {}

    def _handler(self, signum, frame):
        self.requested = signal.Signals(signum).name

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: signals cannot be caught here
                pass
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


# -- checkpoints ----------------------------------------------------------------------------------

def _rng_state() -> tuple[dict, dict]:
    py = random.getstate()
    np_state = np.random.get_state()
    meta = {"python": [py[0], list(py[1]), py[2]],
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    return meta, tensors


def _set_rng_state(meta: dict, tensors: dict) -> None:
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])


def _rng_text() -> str:
    """This rank's generator states as one JSON string (generator states are byte tensors)."""
    meta, tensors = _rng_state()
    return json.dumps({"meta": meta, "tensors": {k: base64.b64encode(v.numpy().tobytes()).decode()
                                                 for k, v in tensors.items()}})


def _set_rng_text(text: str) -> None:
    state = json.loads(text)
    _set_rng_state(state["meta"], {k: torch.frombuffer(bytearray(base64.b64decode(v)), dtype=torch.uint8)
                                   for k, v in state["tensors"].items()})


def save_checkpoint(path: Path, stage: Stage, optimizer: torch.optim.Optimizer, info: dict,
                    rank_rng: list[str] = ()) -> None:
    """Rank 0 writes; `rank_rng` holds the generator states of the other ranks (`_rng_text`), if any."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in stage.modules().items():
        for key, value in module.state_dict().items():
            tensors[f"model.{name}.{key}"] = value
    opt = optimizer.state_dict()
    scalars: dict = {}
    for index, entries in opt["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    rng_meta, rng_tensors = _rng_state()
    tensors.update(rng_tensors)
    tensors.update({f"extra.{k}": v for k, v in stage.extra_tensors().items()})
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta = dict(info, version=CHECKPOINT_VERSION, stage=stage.name, rng=rng_meta, rank_rng=list(rank_rng),
                world_size=1 + len(rank_rng), optim_groups=opt["param_groups"], optim_scalars=scalars,
                stage_state=stage.state_dict())
    blob = json.dumps(meta)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"distill_checkpoint": blob}))


def write_error(e: BaseException) -> str:
    """The reason a file could not be written, from an OSError or safetensors' wrapped I/O error."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    match = re.search(r"I/O error: (.+?)(?: \(os error \d+\))?$", str(e))
    return match.group(1) if match else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


WRITE_ERRORS = (OSError, SafetensorError, sf.SoundFileError)  # what writing a full or read-only disk raises


def read_checkpoint(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata, tensors) of a checkpoint, or TrainError saying it cannot be used. Every rank calls this."""
    try:
        data = distributed.read_on_main(path)  # rank 0's copy: only its machine needs the run folder
        if data is None:
            raise OSError(f"cannot read {path}")
        tensors = tensors_from_bytes(data)
        header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])  # safetensors: size, JSON, data
        meta = json.loads(header["__metadata__"]["distill_checkpoint"])
    except (OSError, SafetensorError, KeyError, ValueError, TypeError) as e:
        raise TrainError(f"checkpoint '{path}' cannot be read ({type(e).__name__}); run again without --resume "
                         f"to start over")
    if meta.get("version") != CHECKPOINT_VERSION:
        raise TrainError(f"checkpoint '{path}' was written by another version of distill-train; run again "
                         f"without --resume to start over")
    return meta, tensors


def load_checkpoint(path: Path, stage: Stage, optimizer: torch.optim.Optimizer | None) -> dict:
    meta, tensors = read_checkpoint(path)
    try:
        for name, module in stage.modules().items():
            prefix = f"model.{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        if optimizer is not None:
            state: dict = {}
            for key, value in tensors.items():
                if key.startswith("optim."):
                    _, index, name = key.split(".", 2)
                    state.setdefault(int(index), {})[name] = value
            for index, entries in meta["optim_scalars"].items():
                state.setdefault(int(index), {}).update(entries)
            optimizer.load_state_dict({"state": state, "param_groups": meta["optim_groups"]})
        stage.load_extra_tensors({k[6:]: v for k, v in tensors.items() if k.startswith("extra.")})
        stage.load_state_dict(meta["stage_state"])
        own = distributed.rank() - 1
        if 0 <= own < len(meta.get("rank_rng", [])):
            _set_rng_text(meta["rank_rng"][own])
        else:  # rank 0, or a rank the run that wrote the checkpoint did not have
            _set_rng_state(meta["rng"], tensors)
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise TrainError(f"checkpoint '{path}' does not match this run ({type(e).__name__}: {str(e).splitlines()[0]}); "
                         f"run again without --resume to start over")
    return meta


# -- the loop -------------------------------------------------------------------------------------

@dataclass
class Result:
    step: int
    history: dict
    wall_s: float
    steps_per_s: float
    stopped_early: bool = False


def _mean_window(window: dict[str, list]) -> dict[str, float]:
    return {k: sum(v) / len(v) for k, v in window.items() if v}


def _disagreements(stage: Stage) -> list[str]:
    """The tensors (weights, codebooks) whose values differ from rank 0's on some rank."""
    if distributed.world_size() == 1:
        return []
    digests = {f"{name}.{key}": hashlib.sha256(value.detach().cpu().reshape(-1).view(torch.uint8).numpy()).hexdigest()
               for name, module in stage.modules().items() for key, value in module.state_dict().items()}
    ranks = [json.loads(b) for b in distributed.gather_bytes(json.dumps(digests).encode())]
    return sorted({key for other in ranks[1:] for key, digest in other.items() if ranks[0].get(key) != digest})


def _debug_dump(stage: Stage) -> None:
    """With DISTILL_DEBUG_RANK_DUMP=DIR, every rank writes its final weights to DIR/STAGE-rankR.safetensors."""
    folder = os.environ.get("DISTILL_DEBUG_RANK_DUMP")
    if folder:
        tensors = {f"{name}.{key}": value.detach().cpu().contiguous()
                   for name, module in stage.modules().items() for key, value in module.state_dict().items()}
        save_file(tensors, Path(folder) / f"{stage.name}-rank{distributed.rank()}.safetensors")


def run(stage: Stage, settings: Settings, checkpoint: Path, *, resume: bool, log: Callable[[str], None],
        fingerprint: dict | None = None) -> Result:
    """Train `stage` for settings.steps steps (or until early stopping / the time budget).

    With `resume` and an existing checkpoint, continue from it. Raises Interrupted after saving a
    checkpoint when SIGINT or SIGTERM arrives.

    Under torchrun every rank runs this loop in step with the others: each step averages the
    figures and the clock over the ranks and asks whether any rank was signalled, so that all of
    them take every decision (the learning rate, stopping, checkpointing) together.
    """
    params = stage.parameters()
    optimizer = torch.optim.AdamW(params, lr=settings.lr, betas=tuple(settings.betas),
                                  weight_decay=settings.weight_decay)
    history: dict = {"train": [], "valid": [], "events": []}
    step, elapsed, window = 0, 0.0, {}
    finished = False
    if resume and distributed.main_says(checkpoint.exists()):
        meta = load_checkpoint(checkpoint, stage, optimizer)
        if fingerprint is not None and meta.get("fingerprint") not in (None, fingerprint):
            raise TrainError(f"checkpoint '{checkpoint}' was made with other data or settings; run again without "
                             f"--resume to start over")
        step, elapsed, history = meta["step"], meta["elapsed_s"], meta["history"]
        window = meta.get("window", {})
        # a finished stage is done unless it is asked for more steps than it ran (and did not stop early)
        finished = meta.get("finished", False) and (meta.get("stopped_early", False) or step >= settings.steps)
        log(f"{stage.name}: resuming from step {step} ({checkpoint})")
        if meta.get("world_size", 1) != distributed.world_size() and distributed.is_main():  # a warning: not quiet
            print(f"{stage.name}: the checkpoint was made by {meta.get('world_size', 1)} processes and this run has "
                  f"{distributed.world_size()}: it goes on from there, but not exactly as the first run would have",
                  file=sys.stderr)

    stopped_early = False

    def info(final: bool) -> dict:
        return {"step": step, "elapsed_s": elapsed, "history": history, "window": window, "finished": final,
                "stopped_early": stopped_early, "settings": asdict(settings), "fingerprint": fingerprint}

    def checkpoint_now(final: bool) -> None:
        differ = _disagreements(stage)
        if differ:
            raise TrainError(f"the {distributed.world_size()} training processes disagree about "
                             f"{', '.join(differ[:3])}{' and more' if len(differ) > 3 else ''} at step {step} "
                             f"(a bug: please report it); the last checkpoint is kept")
        rank_rng = [b.decode() for b in distributed.gather_bytes(_rng_text().encode())][1:]

        def write() -> None:  # rank 0 alone; if it fails, every rank stops with its sentence
            existed = checkpoint.exists()
            try:
                save_checkpoint(checkpoint, stage, optimizer, info(final), rank_rng)
            except WRITE_ERRORS as e:  # the temporary file is gone and the previous checkpoint untouched
                after = ("the previous checkpoint there is intact, so free some space and run again with --resume"
                         if existed else "no checkpoint was saved yet, so free some space and run again")
                raise TrainError(f"could not write checkpoint '{checkpoint}' at step {step} ({write_error(e)}); "
                                 f"{after}")
            try:
                stage.on_checkpoint(step, history, final)
            except WRITE_ERRORS as e:
                raise TrainError(f"could not write the previews and report of step {step} in '{checkpoint.parent}' "
                                 f"({write_error(e)}); the checkpoint was saved, so free some space and run again "
                                 f"with --resume")

        distributed.on_main(write)

    total = settings.steps
    evaluated_at = history["valid"][-1]["step"] if history["valid"] else -1
    if finished:
        stage.finish()
        _debug_dump(stage)
        return Result(step, history, elapsed, step / elapsed if elapsed else 0.0, meta.get("stopped_early", False))

    interactive = sys.stderr.isatty()
    quiet = settings.quiet or not distributed.is_main()
    bar = tqdm(total=total, initial=step, desc=stage.name, unit="step", disable=quiet, file=sys.stderr,
               dynamic_ncols=True, mininterval=0.25 if interactive else 10.0, leave=True,
               smoothing=0.1)
    say = (lambda line: bar.write(line, file=sys.stderr)) if not settings.quiet else \
        (lambda line: print(line, file=sys.stderr))
    if not distributed.is_main():
        say = lambda line: None  # noqa: E731

    def evaluate() -> None:
        nonlocal evaluated_at
        figures = stage.evaluate(step)
        if figures:
            history["valid"].append({"step": step, **{k: float(v) for k, v in figures.items()}})
        evaluated_at = step

    stage.say = say
    shown, lr = None, 0.0
    start = time.perf_counter() - elapsed
    with StopSignals() as signals:
        while step < total:
            progress = step / total
            if settings.time_budget_s:
                progress = max(progress, elapsed / settings.time_budget_s)
            lr = learning_rate(settings.lr, min(1.0, progress), settings.warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, figures = stage.train_step(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
            optimizer.step()
            step += 1
            # every rank gets the same figures, clock and stop request
            shared = distributed.average([float(loss.detach()), *figures.values(), time.perf_counter() - start,
                                          1.0 if signals.requested else 0.0])
            value, figures, elapsed = shared[0], dict(zip(figures, shared[1:-2])), shared[-2]
            stop_requested = shared[-1] > 0
            if not math.isfinite(value):
                raise TrainError(f"{stage.name} training diverged at step {step} (loss is {value}); try a lower --lr")
            for k, v in {"loss": value, **figures}.items():
                window.setdefault(k, []).append(float(v))
            shown = value if shown is None else 0.9 * shown + 0.1 * value
            bar.set_postfix_str(f"loss {shown:.3f} lr {lr:.1e}", refresh=False)
            bar.update(1)
            if step % settings.log_every == 0 or step == total:
                history["train"].append({"step": step, "lr": lr, **_mean_window(window)})
                window = {}
            if step == 1 or step % settings.eval_every == 0 or step == total:
                evaluate()
                if distributed.main_says(stage.should_stop()):
                    stopped_early = True
                    say(f"{stage.name}: held-out loss stopped improving; stopping early at step {step}")
                    break
            if stop_requested:
                bar.close()
                checkpoint_now(final=False)
                raise Interrupted(stage.name, step, checkpoint)
            if step % settings.checkpoint_every == 0 and step < total:
                checkpoint_now(final=False)
            if settings.time_budget_s and elapsed >= settings.time_budget_s:
                say(f"{stage.name}: time budget reached at step {step}")
                stopped_early = True
                break
        bar.close()
        if window:
            history["train"].append({"step": step, "lr": lr, **_mean_window(window)})
            window = {}
        if evaluated_at != step:
            evaluate()
        history["events"].append({"step": step, "event": "stopped early" if stopped_early else "done"})
        stage.finish()
        checkpoint_now(final=True)
        _debug_dump(stage)
    # a signal during the final evaluation or checkpoint: the stage is saved, stop here
    if distributed.average([1.0 if signals.requested else 0.0])[0] > 0:
        raise Interrupted(stage.name, step, checkpoint)
    return Result(step, history, elapsed, step / elapsed if elapsed > 0 else 0.0, stopped_early)

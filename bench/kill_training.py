"""Kill a real training run many times and check that nothing is ever lost.

Trains the `tiny` preset (codec, then prior) on synthetic sounds through the real CLI
(`python -m distill_train`), and sends SIGINT, SIGTERM or SIGKILL at a random moment of each
attempt; every attempt after a kill is `--resume`. After each kill it checks what a performer would
find on disk: every checkpoint there reads back whole, the .distill there (if any) loads, a
SIGINT/SIGTERM ended with exit code 130 and no traceback. When an attempt finishes before its kill,
its model must load and the next attempt starts over (--restart). After the last kill, one more
--resume must finish and its model load. Prints JSON:

    kills: by signal, by stage (codec or prior, from the checkpoints at the moment of the kill), and
    how many landed while a checkpoint or model was being written (a temporary file existed);
    resumes_completed, models_loaded, checks (files verified after kills), failures (each one line).

    python bench/kill_training.py                 # 10 kills
    python bench/kill_training.py --kills 50 --seed 3

Exit code 0 when there is no failure, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill_live.model.modelfile import ModelFileError, load_model  # noqa: E402
from distill_train.loop import TrainError, read_checkpoint  # noqa: E402

SR = 16000
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]


def make_data(root: Path, seed: int) -> None:
    """Two worlds of synthetic sounds: decaying partials and filtered noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(2.0 * SR)) / SR
    for i in range(2):
        (root / "tones").mkdir(parents=True, exist_ok=True)
        (root / "noise").mkdir(parents=True, exist_ok=True)
        f = 220 * 2 ** (i / 3)
        tone = sum(np.sin(2 * np.pi * f * k * t) * np.exp(-(2 + k) * (t % 0.5)) / k for k in (1, 2, 3))
        sf.write(root / "tones" / f"tone{i}.wav", (0.3 * tone).astype(np.float32), SR)
        spectrum = np.fft.rfft(rng.standard_normal(len(t)))
        spectrum /= 1 + (np.fft.rfftfreq(len(t), 1 / SR) / (600 * 2 ** i)) ** 4
        hiss = np.fft.irfft(spectrum, len(t))
        sf.write(root / "noise" / f"hiss{i}.wav", (0.3 * hiss / np.abs(hiss).max()).astype(np.float32), SR)


def stage_now(run: Path) -> str:
    """Which stage a kill lands in, from the checkpoints on disk."""
    try:
        if read_checkpoint(run / "checkpoint-codec.safetensors")[0].get("finished"):
            return "prior"
    except TrainError:
        pass
    return "codec"


def check_files(out: Path, run: Path) -> list[str]:
    """Every checkpoint and model on disk must be whole. Returns failures."""
    failures = []
    for ckpt in sorted(run.glob("checkpoint-*.safetensors")):
        try:
            read_checkpoint(ckpt)
        except TrainError as e:
            failures.append(f"checkpoint unreadable after a kill: {e}")
    if out.exists():
        try:
            load_model(out)
        except ModelFileError as e:
            failures.append(f"model unreadable after a kill: {e}")
    return failures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=16, help="codec steps of each run")
    p.add_argument("--prior-steps", type=int, default=16)
    p.add_argument("--checkpoint-every", type=int, default=3, help="often, so kills land during writes too")
    p.add_argument("--workdir", help="keep the runs here (default: a temporary folder, removed)")
    args = p.parse_args()

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="distill-kill-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data, out = work / "data", work / "model.distill"
        run = work / "model.distill.run"
        make_data(data, args.seed)
        cmd = [sys.executable, "-m", "distill_train", str(data), "-o", str(out), "--preset", "tiny",
               "--steps", str(args.steps), "--prior-steps", str(args.prior_steps), "--batch-size", "2",
               "--eval-every", str(args.checkpoint_every * 2), "--checkpoint-every", str(args.checkpoint_every),
               "--seed", str(args.seed), "--quiet"]

        # one run without kills: how long a whole run takes, so kills can land anywhere in one
        started = time.monotonic()
        r = subprocess.run([*cmd, "--restart"], capture_output=True, text=True, cwd=ROOT)
        whole = time.monotonic() - started
        if r.returncode != 0:
            print(json.dumps({"error": "the calibration run failed", "stderr": r.stderr[-2000:]}))
            return 1

        kills = {"SIGINT": 0, "SIGTERM": 0, "SIGKILL": 0}
        stages = {"codec": 0, "prior": 0}
        during_write, completed, loaded, checks, attempts = 0, 0, 0, 0, 0
        failures: list[str] = []
        fresh = True
        while sum(kills.values()) < args.kills:
            attempts += 1
            proc = subprocess.Popen([*cmd, "--restart" if fresh else "--resume"], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, cwd=ROOT)
            try:
                proc.wait(timeout=rng.uniform(0.3, whole))
            except subprocess.TimeoutExpired:
                pass
            if proc.poll() is not None:  # finished before its kill
                _, err = proc.communicate()
                if proc.returncode != 0:
                    failures.append(f"attempt {attempts} failed with exit code {proc.returncode}: "
                                    f"{err.strip().splitlines()[-1] if err.strip() else ''}")
                else:
                    completed += 0 if fresh else 1
                    try:
                        load_model(out)
                        loaded += 1
                    except ModelFileError as e:
                        failures.append(f"finished model does not load: {e}")
                fresh = True
                continue
            sig = rng.choice(SIGNALS)
            writing = bool(list(run.rglob(".*.tmp")) or list(work.glob(".model.distill.*.tmp")))
            stage = stage_now(run)
            proc.send_signal(sig)
            _, err = proc.communicate()
            kills[sig.name] += 1
            stages[stage] += 1
            during_write += writing
            if sig != signal.SIGKILL:
                if "Traceback" in err:
                    failures.append(f"{sig.name} in the {stage} stage ended with a traceback: "
                                    f"{err.strip().splitlines()[-1]}")
                elif proc.returncode not in (130, -sig):  # -sig: it came before Python set its handlers
                    failures.append(f"{sig.name} in the {stage} stage ended with exit code {proc.returncode}")
            checks += 1
            found = check_files(out, run)
            failures += found
            fresh = False
            print(f"kill {sum(kills.values())}: {sig.name} in the {stage} stage{' during a write' if writing else ''}, "
                  f"exit {proc.returncode}, files {'DAMAGED' if found else 'whole'}", file=sys.stderr, flush=True)

        r = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, cwd=ROOT)
        if r.returncode != 0:
            failures.append(f"the last --resume failed: {r.stderr.strip().splitlines()[-1] if r.stderr else r.returncode}")
        else:
            completed += 1
            try:
                load_model(out)
                loaded += 1
            except ModelFileError as e:
                failures.append(f"the final model does not load: {e}")

        print(json.dumps({
            "kills": sum(kills.values()), "by_signal": kills, "by_stage": stages,
            "during_a_write": during_write, "attempts": attempts, "resumes_completed": completed,
            "models_loaded": loaded, "checks_after_kills": checks, "failures": failures,
            "whole_run_s": round(whole, 1),
            "settings": {"preset": "tiny", "steps": args.steps, "prior_steps": args.prior_steps,
                         "checkpoint_every": args.checkpoint_every, "seed": args.seed},
        }, indent=2))
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

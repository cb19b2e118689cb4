"""A trainer that dies must not lose what it did: SIGKILL, SIGTERM and SIGINT during both stages of a
real `tiny` run, each followed by --resume; a kill in the middle of writing a file; a full disk during a
checkpoint write. bench/kill_training.py does the same with many random kills.
"""
from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from distill_live.model.modelfile import load_model
from distill_train import loop
from audiofiles import bells_and_hiss

pytestmark = pytest.mark.slow  # trains, kills and resumes

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--preset", "tiny", "--steps", "12", "--prior-steps", "12", "--batch-size", "2", "--eval-every", "6",
         "--checkpoint-every", "3", "--seed", "5", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return bells_and_hiss(tmp_path_factory.mktemp("sounds"), count=2, seconds=2.0, seed=1, worlds=False,
                          pitch_step=1 / 3, cutoff=800.0, hiss="wav")


def start(args: list, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "distill_train", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, **kw)


def signal_when(proc: subprocess.Popen, ready, sig: int) -> subprocess.CompletedProcess:
    """Send `sig` once ready() is true (polling), then wait for the process to end."""
    deadline = time.monotonic() + 240
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be signalled:\n{proc.communicate()[1]}"
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def readable(checkpoint: Path) -> int:
    """The step of a checkpoint that must be whole."""
    return loop.read_checkpoint(checkpoint)[0]["step"]


def stopped_cleanly(r: subprocess.CompletedProcess, stage: str) -> None:
    assert r.returncode == 130, r.stderr
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("distill-train: stopped at step") and stage in last and "--resume" in last, last


# -- kills during both stages ----------------------------------------------------------------------

def test_killed_in_both_stages_then_resumed_to_a_model_that_loads(data, tmp_path):
    out = tmp_path / "model.distill"
    run = tmp_path / "model.distill.run"
    codec_ckpt, prior_ckpt = run / "checkpoint-codec.safetensors", run / "checkpoint-prior.safetensors"
    args = [data, "-o", out, *FLAGS]

    # SIGKILL in the codec stage, once a checkpoint exists: no handler runs, only the files on disk count
    r = signal_when(start(args), codec_ckpt.exists, signal.SIGKILL)
    assert r.returncode == -signal.SIGKILL
    assert readable(codec_ckpt) >= 3 and not out.exists()
    # what a kill in the middle of a write leaves: a temporary file, which the next run clears away
    stale = run / ".checkpoint-codec.safetensors.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")

    # SIGTERM in the prior stage: saved and stopped like Ctrl-C
    r = signal_when(start([*args, "--resume"]), prior_ckpt.exists, signal.SIGTERM)
    stopped_cleanly(r, "prior")
    assert not stale.exists()
    assert load_model(out).prior is None  # the codec-only model, written between the stages
    step = readable(prior_ckpt)

    # SIGINT once the prior has checkpointed again
    seen = mtime(prior_ckpt)
    r = signal_when(start([*args, "--resume"]), lambda: mtime(prior_ckpt) != seen, signal.SIGINT)
    stopped_cleanly(r, "prior")
    assert readable(prior_ckpt) > step

    r = subprocess.run([sys.executable, "-m", "distill_train", *map(str, args), "--resume"], capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    model = load_model(out)
    assert model.prior is not None
    assert model.meta["history"]["codec"]["steps"] == 12 and model.meta["history"]["prior"]["steps"] == 12
    assert not [p for p in run.rglob("*.tmp")] and not list(tmp_path.glob(".*.tmp"))


# -- a kill in the middle of a write ----------------------------------------------------------------

WRITER = textwrap.dedent("""
    import signal, sys, time
    from distill_live import atomic_write

    # Ctrl-C as in a terminal: a process started in the background by a shell without job control
    # (CI's runner may be one) inherits SIGINT ignored, and Python then leaves it ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def slow(tmp):
        with open(tmp, "wb") as f:
            f.write(b"new" * 1000)
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
            f.write(b"end")

    atomic_write(sys.argv[1], slow)
""")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_a_kill_in_the_middle_of_a_write_leaves_the_previous_file(tmp_path, sig):
    """Checkpoints, previews and models are all written through atomic_write: killed half-way through
    writing, the file that was there is still there, whole."""
    path = tmp_path / "checkpoint-codec.safetensors"
    path.write_bytes(b"the good checkpoint")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "writing"
    assert len(list(tmp_path.glob(".*.tmp"))) == 1  # the new content is half-written beside it
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert path.read_bytes() == b"the good checkpoint"
    if sig == signal.SIGINT:  # Python unwinds: the temporary file is removed on the way out
        assert not list(tmp_path.glob(".*.tmp"))


class Tiny(loop.Stage):
    name = "tiny"

    def __init__(self, on_checkpoint=None):
        self.net = nn.Linear(3, 2)
        self.hook = on_checkpoint

    def modules(self):
        return {"net": self.net}

    def train_step(self, step):
        return self.net(torch.ones(4, 3)).pow(2).mean(), {}

    def on_checkpoint(self, step, history, final):
        if self.hook:
            self.hook(step, final)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_checkpoint_write_lets_it_finish_then_stops(tmp_path, monkeypatch, sig):
    """The loop holds signals off while it writes: the checkpoint is completed, then the run stops."""
    path = tmp_path / "checkpoint-tiny.safetensors"
    real = loop.save_file

    def signalled_mid_write(tensors, filename, metadata=None):
        os.kill(os.getpid(), sig)  # handled at once by the loop's handler, which only raises a flag
        real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(loop, "save_file", signalled_mid_write)
    settings = loop.Settings(steps=10, batch_size=4, lr=1e-2, checkpoint_every=4, quiet=True)
    with pytest.raises(loop.Interrupted) as e:
        loop.run(Tiny(), settings, path, resume=False, log=lambda _: None)
    assert e.value.step == 5 and readable(path) == 5  # asked at the step-4 write, stopped after step 5


def test_a_signal_during_the_final_checkpoint_still_stops_the_run(tmp_path):
    """Between stages nothing must swallow a stop request: the next stage must not start."""
    def signal_at_the_end(step, final):
        if final:
            os.kill(os.getpid(), signal.SIGTERM)

    path = tmp_path / "checkpoint-tiny.safetensors"
    settings = loop.Settings(steps=3, batch_size=4, lr=1e-2, checkpoint_every=100, quiet=True)
    with pytest.raises(loop.Interrupted):
        loop.run(Tiny(signal_at_the_end), settings, path, resume=False, log=lambda _: None)
    meta = loop.read_checkpoint(path)[0]
    assert meta["finished"] and meta["step"] == 3
    result = loop.run(Tiny(), settings, path, resume=True, log=lambda _: None)  # done: nothing left to train
    assert result.step == 3


# -- a full disk --------------------------------------------------------------------------------------

def can_mount_tmpfs(where: Path) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True)
    if r.returncode == 0:
        subprocess.run(["umount", str(where)], check=True)
    return r.returncode == 0


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("how", ["file-size-limit", "tmpfs"])
def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_one(data, tmp_path, how):
    """file-size-limit: RLIMIT_FSIZE makes writes past it fail (EFBIG), for anyone. tmpfs (root only): a
    small real filesystem filled up, so the write fails with ENOSPC as on a full disk."""
    runs = tmp_path / "runs"
    if how == "tmpfs":
        if not can_mount_tmpfs(runs):
            pytest.skip("mounting a tmpfs needs root")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(runs)], check=True)
    try:
        out, run = tmp_path / "model.distill", runs / "model.run"
        ckpt = run / "checkpoint-codec.safetensors"
        args = [data, "-o", out, "--run-dir", run, *FLAGS, "--stages", "codec"]
        r = signal_when(start(args), ckpt.exists, signal.SIGINT)
        stopped_cleanly(r, "codec")
        step, before = readable(ckpt), digest(ckpt)

        limit = None
        if how == "tmpfs":  # leave room for less than one more checkpoint
            free = os.statvfs(runs).f_bavail * os.statvfs(runs).f_frsize
            (runs / "filler").write_bytes(bytes(max(0, free - ckpt.stat().st_size // 2)))
        else:
            limit = ckpt.stat().st_size // 2

        def small_files():
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

        r = start([*args, "--resume"], preexec_fn=small_files if limit else None)
        out_text, err = r.communicate(timeout=300)
        assert r.returncode == 2, err
        # one sentence (codebook-health warnings of the earlier steps may come before it)
        lines = [line for line in err.strip().splitlines() if line.startswith("distill-train:")]
        assert len(lines) == 1 and "Traceback" not in err, err
        reason = "No space left on device" if how == "tmpfs" else "File too large"
        assert lines[0].startswith(f"distill-train: could not write checkpoint '{ckpt}'") and reason in lines[0]
        assert "previous checkpoint there is intact" in lines[0] and "--resume" in lines[0]
        assert digest(ckpt) == before and readable(ckpt) == step
        assert not list(run.rglob("*.tmp"))

        if how == "tmpfs":
            (runs / "filler").unlink()
        r = subprocess.run([sys.executable, "-m", "distill_train", *map(str, args), "--resume"], capture_output=True,
                           text=True, cwd=ROOT, timeout=300)
        assert r.returncode == 0, r.stderr
        assert load_model(out).meta["history"]["codec"]["steps"] == 12
    finally:
        if how == "tmpfs":
            subprocess.run(["umount", str(runs)], check=False)

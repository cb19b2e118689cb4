"""Training with torchrun: two processes (Gloo on CPU) train one `tiny` model together.

The reference run is launched as on two machines (two torchrun commands, --nnodes 2 --node-rank
0/1 --rdzv-endpoint, one rank each, here both on localhost); the interrupted run as on one
(--nproc-per-node 2). Each rank writes its final weights when DISTILL_DEBUG_RANK_DUMP names a
folder, so the tests compare what the ranks ended with (codebooks included) with each other and
with the model file rank 0 wrote. A run interrupted by Ctrl-C (SIGINT to torchrun, which passes it
on to the ranks) and resumed with torchrun must end with the same weights as the uninterrupted
run; a plain single-process --resume of the same checkpoint must finish too.
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from distill_live.live.player import render
from distill_live.model.modelfile import load_model
from audiofiles import bells_and_hiss
from oscpeers import free_port
from processes import wait_all

pytestmark = pytest.mark.slow  # trains under torchrun

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--preset", "tiny", "--steps", "12", "--prior-steps", "12", "--batch-size", "2", "--eval-every", "6",
         "--checkpoint-every", "6", "--seed", "3", "--quiet", "--device", "cpu"]  # the GPU tests add --device cuda
TIMEOUT = 240


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The same bells and hiss as the single-process tests (test_train.py)."""
    return bells_and_hiss(tmp_path_factory.mktemp("sounds"), count=3, seconds=2.4, seed=0)


def one_machine() -> list[str]:
    return ["--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port(socket.SOCK_STREAM))]


def two_machines() -> list[list[str]]:
    """torchrun's options for each of two machines with one rank each (here both on localhost)."""
    endpoint = f"127.0.0.1:{free_port(socket.SOCK_STREAM)}"
    return [["--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(node), "--rdzv-endpoint", endpoint]
            for node in (0, 1)]


def torchrun(args: list, launch: list[str], dump: Path | None = None,
             file_limit: int | None = None) -> subprocess.Popen:
    """`torchrun LAUNCH -m distill_train ARGS`, one torch thread per rank; no file may grow past `file_limit`
    bytes (RLIMIT_FSIZE: writing more fails with EFBIG, as a full disk fails with ENOSPC)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if dump is not None:
        dump.mkdir(parents=True, exist_ok=True)
        env["DISTILL_DEBUG_RANK_DUMP"] = str(dump)

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    command = [sys.executable, "-m", "torch.distributed.run", *launch, "-m", "distill_train", *map(str, args)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=small_files if file_limit else None, start_new_session=True)


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    return finish_all([proc])[0]


def finish_all(procs: list[subprocess.Popen]) -> list[subprocess.CompletedProcess]:
    """Wait for torchruns that train together (one per "machine"); if any takes longer than TIMEOUT,
    kill them all, ranks included, and fail with what they said."""
    done, hung = wait_all(procs, TIMEOUT)
    if hung:
        said = "\n".join(f"-- torchrun {i}:\n{r.stderr[-3000:]}" for i, r in enumerate(done))
        pytest.fail(f"torchrun did not finish in {TIMEOUT} s (a hang?):\n{said}")
    return done


def dumps(folder: Path, stage: str) -> list[dict[str, torch.Tensor]]:
    return [load_file(folder / f"{stage}-rank{r}.safetensors") for r in range(2)]


def checkpoint_meta(path: Path) -> dict:
    with safe_open(path, framework="pt") as f:
        return json.loads(f.metadata()["distill_checkpoint"])


@pytest.fixture(scope="module")
def distributed_run(data, tmp_path_factory) -> tuple[Path, Path, list[subprocess.CompletedProcess]]:
    """(model, folder of the ranks' final weights, the two finished torchruns), as on two machines."""
    where = tmp_path_factory.mktemp("distributed")
    out = where / "model.distill"
    nodes = [torchrun([data, "-o", out, *FLAGS], launch, dump=where / "dump") for launch in two_machines()]
    done = finish_all(nodes)
    for r in done:
        assert r.returncode == 0, r.stderr[-3000:]
    return out, where / "dump", done


def test_two_ranks_train_one_model_that_plays(distributed_run):
    out, dump, (first, second) = distributed_run
    assert first.stdout.count("wrote") == 1 and not second.stdout  # rank 0 alone reports
    assert "rank 1" not in first.stderr + second.stderr

    # the ranks ended with identical weights and codebooks ...
    for stage in ("codec", "prior"):
        rank0, rank1 = dumps(dump, stage)
        assert rank0.keys() == rank1.keys()
        for key in rank0:
            assert torch.equal(rank0[key], rank1[key]), f"{stage}: ranks differ on {key}"
    codec0, _ = dumps(dump, "codec")
    levels = sorted(k for k in codec0 if k.endswith("._codebook.embed"))
    assert len(levels) == 4 and all(codec0[k].abs().sum() > 0 for k in levels)  # k-means filled them

    # ... and the model file holds what they agreed on
    model = load_model(out)
    assert torch.equal(model.codec.codebooks(), torch.cat([codec0[k] for k in levels]))
    prior0, _ = dumps(dump, "prior")
    for key, value in model.prior.state_dict().items():
        assert torch.equal(value, prior0[f"prior.{key}"]), key
    assert model.meta["training"]["processes"] == 2

    audio = render(model, 1.5, seed=1)
    assert len(audio) == int(1.5 * model.config.codec.sample_rate)
    assert np.isfinite(audio).all() and np.sqrt(np.mean(audio ** 2)) > 1e-4

    run = out.with_name(out.name + ".run")
    meta = checkpoint_meta(run / "checkpoint-codec.safetensors")
    assert meta["world_size"] == 2 and len(meta["rank_rng"]) == 1 and meta["finished"]
    assert (run / "report-codec.png").exists() and (run / "previews" / "prior-generated.wav").exists()


def test_an_interrupted_distributed_run_resumes_exactly(data, distributed_run, tmp_path):
    _, reference, _ = distributed_run
    out = tmp_path / "model.distill"
    run = tmp_path / "model.distill.run"
    proc = torchrun([data, "-o", out, *FLAGS], one_machine())
    deadline = time.monotonic() + TIMEOUT
    while not (run / "checkpoint-codec.safetensors").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # Ctrl-C: torchrun passes it on to both ranks
    r = finish(proc)
    assert r.returncode != 0 and "stopped at step" in r.stderr, r.stderr[-3000:]
    assert r.stderr.count("stopped at step") == 1  # said once, by rank 0
    stopped = [checkpoint_meta(p) for p in sorted(run.glob("checkpoint-*.safetensors"))]
    assert stopped and not stopped[-1]["finished"]

    single = tmp_path / "single"
    shutil.copytree(run, single / "model.distill.run")

    # the same command without --resume: rank 0 refuses to start over, and the other machine stops with it
    stopped_together(finish_all([torchrun([data, "-o", out, *FLAGS], m) for m in two_machines()]),
                     f"{run / 'checkpoint-codec.safetensors'} holds an unfinished codec run")

    r = finish(torchrun([data, "-o", out, *FLAGS, "--resume"], one_machine(), dump=tmp_path / "dump"))
    assert r.returncode == 0, r.stderr[-3000:]
    for stage in ("codec", "prior"):
        for want, got in zip(dumps(reference, stage), dumps(tmp_path / "dump", stage)):
            for key in want:
                assert torch.equal(want[key], got[key]), f"{stage}: {key} differs after resuming"

    # one process may take over a checkpoint of two (it goes on, though not bit for bit as two would)
    r = subprocess.run([sys.executable, "-m", "distill_train", data, "-o", single / "model.distill", *FLAGS,
                        "--resume"], cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                       text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "made by 2 processes and this run has 1" in r.stderr
    assert load_model(single / "model.distill").prior is not None


def stopped_together(machines: list[subprocess.CompletedProcess], sentence: str, failing: int = 0) -> None:
    """The rank of machine `failing` said `sentence...` once, the other machine's rank said that it stopped
    because that rank did, both ended with an error status, and none printed a traceback from our code."""
    name = ["distill-train", "distill-train (rank 1)"]
    said = [[line for line in r.stderr.splitlines() if line.startswith("distill-train")] for r in machines]
    own, other = said[failing], said[1 - failing]
    assert len(own) == 1 and own[0].startswith(f"{name[failing]}: {sentence}"), machines[failing].stderr[-3000:]
    reason = own[0][len(name[failing]) + 2:]
    assert other == [f"{name[1 - failing]}: stopped because rank {failing} did: {reason}"], \
        machines[1 - failing].stderr[-3000:]
    for r in machines:
        assert r.returncode != 0
        assert "[rank" not in r.stderr and f'File "{ROOT / "distill_train"}' not in r.stderr, r.stderr[-3000:]


def test_sounds_missing_on_one_machine_stop_both(data, tmp_path):
    """Every machine reads its own copy of the sounds: a folder missing on the second one stops the first too."""
    folders = [data, tmp_path / "nowhere"]
    machines = finish_all([torchrun([folder, "-o", tmp_path / "model.distill", *FLAGS], m)
                           for folder, m in zip(folders, two_machines())])
    stopped_together(machines, f"data folder '{folders[1]}' does not exist", failing=1)


def test_different_sounds_on_two_machines_are_refused(data, tmp_path):
    """Same path, different copies (a file missing on the second machine): both stop, naming the file."""
    copy = tmp_path / "sounds"
    shutil.copytree(data, copy)
    missing = sorted(copy.rglob("*.wav"))[0]
    missing.unlink()
    machines = finish_all([torchrun([folder, "-o", tmp_path / "model.distill", *FLAGS], m)
                           for folder, m in zip([data, copy], two_machines())])
    for r, name in zip(machines, ["distill-train", "distill-train (rank 1)"]):
        assert r.returncode != 0
        said = [line for line in r.stderr.splitlines() if line.startswith("distill-train")]
        assert len(said) == 1 and said[0].startswith(f"{name}: the sounds in "), r.stderr[-3000:]
        assert "rank 0 reads 6 files, rank 1 5" in said[0] and f"'{missing.relative_to(copy)}'" in said[0], said
    assert not (tmp_path / "model.distill").exists()


def test_a_machine_without_the_asked_for_gpu_stops_the_others(data, tmp_path):
    """`--device cuda` on a machine whose PyTorch sees no GPU: that machine says so, and the other one,
    which could train, stops with its sentence instead of waiting for it."""
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    args = [[*FLAGS], [*FLAGS, "--device", "cuda"]]  # (argparse: the last --device wins)
    machines = finish_all([torchrun([data, "-o", tmp_path / "model.distill", *a], m)
                           for a, m in zip(args, two_machines())])
    stopped_together(machines, "--device cuda was asked for but PyTorch sees no CUDA GPU", failing=1)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("writing", ["checkpoint", "model"])
def test_a_full_disk_on_rank_0_stops_every_rank(data, distributed_run, tmp_path, writing):
    """Only rank 0 writes; when its disk is full, the ranks on other machines stop with its sentence
    instead of waiting for it (or failing on a closed connection)."""
    out = tmp_path / "model.distill"
    if writing == "checkpoint":  # a fresh run: its first checkpoint (about 1 MB) cannot be written
        args, sentence = [data, "-o", out, *FLAGS], f"could not write checkpoint '{out}.run/checkpoint-codec"
    else:  # a finished run given a new prior: nothing left to train, the model file (over 500 kB) is next
        trained, _, _ = distributed_run
        shutil.copy(trained, out)
        shutil.copytree(trained.with_name(trained.name + ".run"), tmp_path / "model.distill.run")
        args = [data, "-o", out, *FLAGS, "--stages", "prior", "--resume"]
        sentence = f"could not write the model '{out}'"
        before = digest(out)
    machines = finish_all([torchrun(args, m, file_limit=300_000) for m in two_machines()])
    stopped_together(machines, sentence)
    assert "(File too large)" in machines[0].stderr and "free some space and run again" in machines[0].stderr
    assert not list(tmp_path.rglob("*.tmp"))
    if writing == "checkpoint":
        assert not (tmp_path / "model.distill.run" / "checkpoint-codec.safetensors").exists()
    else:
        assert digest(out) == before


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs (NCCL)")
def test_two_gpus_train_one_model(data, tmp_path):
    out = tmp_path / "model.distill"
    r = finish(torchrun([data, "-o", out, *FLAGS, "--device", "cuda"], one_machine(), dump=tmp_path / "dump"))
    assert r.returncode == 0, r.stderr[-3000:]
    codec0, codec1 = dumps(tmp_path / "dump", "codec")
    for key in codec0:
        assert torch.equal(codec0[key], codec1[key]), key
    assert load_model(out).meta["training"]["device"] == "cuda:0"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_one_gpu_trains_a_model_that_loads(data, tmp_path):
    out = tmp_path / "model.distill"
    r = subprocess.run([sys.executable, "-m", "distill_train", data, "-o", out, *FLAGS, "--device", "cuda"],
                       cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr[-3000:]
    model = load_model(out)
    assert model.meta["training"]["device"] == "cuda" and model.prior is not None

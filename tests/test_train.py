"""Training through the real CLI (`python -m distill_train`) on synthetic sounds written to disk.

One uninterrupted `tiny` run of both stages is the reference; a second run with the same flags is
interrupted by real signals (SIGINT in the codec stage, SIGTERM in the prior stage) and resumed
each time, and must end with the same weights.
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from distill_live.model.modelfile import load_model
from distill_train.health import code_counts, codebook_health, collapse_warnings, memorisation
from audiofiles import SR, bells, bells_and_hiss

pytestmark = pytest.mark.slow  # trains

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--preset", "tiny", "--steps", "40", "--prior-steps", "40", "--batch-size", "4", "--eval-every", "20",
         "--checkpoint-every", "20", "--seed", "3", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return bells_and_hiss(tmp_path_factory.mktemp("sounds"), count=3, seconds=2.4, seed=0)


def train(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill_train", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=kw.get("timeout", 300))


def interrupt_when(path: Path, args: list, sig: int) -> subprocess.CompletedProcess:
    """Start a training run, send `sig` once `path` (a checkpoint) exists, and wait for the exit."""
    proc = subprocess.Popen([sys.executable, "-m", "distill_train", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 240
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "model.distill"
    r = train(data, "-o", out, *FLAGS)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout
    return out


# -- a whole run ------------------------------------------------------------------------------------

def test_tiny_run_learns_and_writes_a_complete_model(reference):
    model = load_model(reference)
    history = model.meta["history"]
    codec, prior = history["codec"], history["prior"]
    assert codec["steps"] == 40
    assert codec["valid_loss_end"] < codec["valid_loss_start"], codec
    # The prior learns: its training loss ends well below chance (ln K, what the untrained prior scores).
    # Its held-out loss is reported but cannot be asked to fall here: the one held-out clip is a bell at
    # a pitch no training clip has, so its codes are ones the training clips hardly use (even the best
    # smoothed unigram or bigram of the training codes scores no better than chance on it), and the
    # held-out loss rises from the first step on. What matters then is that the model keeps trained
    # weights, never the untrained step-1 prior that scored "best" (see test_prior_keeps_...).
    assert prior["train_loss_end"] < math.log(model.config.codec.codebook_size) - 0.2, prior
    assert prior["valid_loss_start"] is not None and math.isfinite(prior["valid_loss_end"]), prior
    # by default the prior trains its whole budget and keeps its final weights (--early-stopping: the best)
    assert prior["early_stopping"] is False, prior
    assert prior["best_step"] == prior["steps"] == 40 and not prior["stopped_early"], prior
    assert len(prior["valid_loss_per_level"]) == model.config.codec.levels
    health = model.meta["health"]
    assert len(health) == model.config.codec.levels
    assert all(h["utilization"] > 0 for h in health), health
    # the model can be played: prior, worlds and one cue per manifest entry
    assert model.prior is not None and model.config.prior.kind == "gru"
    assert model.worlds == ["bells", "noise"] and model.config.prior.worlds == 2
    files = model.meta["manifest"]["files"]
    assert len(model.cues) == len(files) == 6
    hop = model.config.codec.hop
    for cue, entry in zip(model.cues, files):
        assert cue.shape[1] == model.config.codec.levels
        assert abs(cue.shape[0] - entry["seconds"] * SR / hop) <= 1  # whole frames of the clip
    # the recordings of the cues travel with it (16-bit), and the cue's own codes play them back
    assert len(model.recordings) == len(model.cues)
    for cue, audio in zip(model.cues, model.recordings):
        assert audio.dtype == torch.int16 and len(audio) == len(cue) * hop and audio.abs().max() > 1000
    state, played = model.corpus.start(), []
    for codes in model.cues[0]:
        frame, state = model.corpus.play(state, codes, stick=1.0)
        played.append(frame)
    whole = model.recordings[0].numpy() / 32768.0
    np.testing.assert_allclose(np.concatenate(played)[hop:-hop], whole[hop:-hop], atol=1e-6)
    assert {"lo", "hi"} <= set(model.meta["descriptor_stats"]["brightness"])
    memo = prior["memorisation"]
    assert memo["whole_frames"]["longest_copy_frames"] >= 0
    assert 0.0 <= memo["whole_frames"]["ngram8_overlap"] <= 1.0
    assert "level0" in memo
    # the run directory
    run = reference.with_name(reference.name + ".run")
    for name in ("checkpoint-codec.safetensors", "checkpoint-prior.safetensors", "report-codec.png",
                 "report-prior.png"):
        assert (run / name).stat().st_size > 0, name
    previews = sorted(p.name for p in (run / "previews").iterdir())
    assert any(p.endswith("-original.wav") for p in previews)
    assert any(p.endswith("-reconstruction.wav") for p in previews)
    audio, rate = sf.read(run / "previews" / next(p for p in previews if p.endswith("-reconstruction.wav")))
    assert rate == SR and np.abs(audio).max() > 0
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))


def test_checkpoints_hold_no_pickle(reference):
    run = reference.with_name(reference.name + ".run")
    for name in ("checkpoint-codec.safetensors", "checkpoint-prior.safetensors"):
        tensors = load_file(run / name)  # safetensors: plain tensors, nothing executable
        assert any(k.startswith("model.") for k in tensors)
        assert any(k.startswith("optim.") for k in tensors)
        assert tensors["rng.torch"].dtype == torch.uint8


# -- interrupt and resume ---------------------------------------------------------------------------

def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(data, reference, tmp_path, capsys):
    out = tmp_path / "model.distill"
    run = tmp_path / "model.distill.run"
    args = [data, "-o", out, *FLAGS]

    r = interrupt_when(run / "checkpoint-codec.safetensors", args, signal.SIGINT)
    assert r.returncode == 130, r.stderr
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr
    assert "--resume" in lines[-1] and "codec" in lines[-1]
    assert not out.exists()  # stopped inside the codec stage

    # an unfinished checkpoint is not overwritten by a run that forgot --resume
    from distill_train.cli import main

    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0] and "--restart" in err[0]

    r = interrupt_when(run / "checkpoint-prior.safetensors", args + ["--resume"], signal.SIGTERM)
    assert r.returncode == 130, r.stderr
    assert "Traceback" not in r.stderr and "prior" in r.stderr.strip().splitlines()[-1]
    assert load_model(out).prior is None  # the codec-only model was written on the way

    r = train(*args, "--resume")
    assert r.returncode == 0, r.stderr

    want, got = load_file(reference), load_file(out)
    assert want.keys() == got.keys()
    for key in want:
        assert torch.allclose(want[key].double(), got[key].double(), atol=1e-6, rtol=0), key


# -- the prior alone, on an existing codec ----------------------------------------------------------

def test_new_prior_on_an_existing_codec(data, reference, tmp_path):
    out = tmp_path / "new.distill"
    r = train("--stages", "prior", data, "-o", out, "--codec", reference, "--prior-kind", "transformer",
              "--preset", "tiny", "--prior-steps", "20", "--eval-every", "10", "--checkpoint-every", "100",
              "--batch-size", "4", "--quiet", "--no-corpus", "--early-stopping")
    assert r.returncode == 0, r.stderr
    old, new = load_model(reference), load_model(out)
    assert old.recordings and new.recordings == [] and new.info()["corpus"] is None  # --no-corpus
    assert new.config.prior.kind == "transformer"
    for key, value in old.codec.state_dict().items():
        assert torch.equal(value, new.codec.state_dict()[key]), key
    assert len(new.cues) == len(old.cues)
    for a, b in zip(old.cues, new.cues):
        assert torch.equal(a, b)
    assert new.meta["history"]["codec"] == old.meta["history"]["codec"]
    assert new.meta["history"]["prior"]["steps"] <= 20
    assert new.meta["history"]["prior"]["early_stopping"] is True


# -- user errors: one line, exit 2 ------------------------------------------------------------------

BAD_CASES = ["missing", "empty", "not-a-folder", "bad-flag", "bad-stages", "no-codec", "bad-codec", "silent",
             "output-in-a-file", "output-unwritable"]


def bad_args(case: str, tmp_path: Path) -> list:
    out = tmp_path / "m.distill"
    if case == "missing":
        return [tmp_path / "nowhere", "-o", out]
    if case == "empty":
        (tmp_path / "empty").mkdir()
        return [tmp_path / "empty", "-o", out]
    if case == "not-a-folder":
        (tmp_path / "file.wav").write_bytes(b"RIFF")
        return [tmp_path / "file.wav", "-o", out]
    if case == "bad-flag":
        return [tmp_path, "-o", out, "--steps", "zero"]
    if case == "bad-stages":
        return [tmp_path, "-o", out, "--stages", "codec,decoder"]
    if case == "no-codec":
        return ["--stages", "prior", tmp_path, "-o", out]
    if case == "output-in-a-file":
        (tmp_path / "notes.txt").write_text("a file")
        return [tmp_path, "-o", tmp_path / "notes.txt" / "m.distill"]
    if case == "output-unwritable":  # good sounds; /proc takes no new folders, even from root
        (tmp_path / "sounds").mkdir()
        sf.write(tmp_path / "sounds" / "bell.wav", bells(3.0, 440, np.random.default_rng(0)).astype(np.float32), SR)
        return [tmp_path / "sounds", "-o", "/proc/distill-test/m.distill", "--preset", "tiny", "--quiet"]
    if case == "bad-codec":
        (tmp_path / "junk.distill").write_bytes(b"\x00" * 64)
        return ["--stages", "prior", tmp_path, "-o", out, "--codec", tmp_path / "junk.distill"]
    (tmp_path / "quiet").mkdir()
    sf.write(tmp_path / "quiet" / "a.wav", np.zeros(SR, np.float32), SR)
    return [tmp_path / "quiet", "-o", out, "--preset", "tiny"]


def check_one_line(code: int, stderr: str, case: str, out: Path) -> None:
    assert code == 2, stderr
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert lines and lines[-1].startswith("distill-train: "), stderr
    assert "Traceback" not in stderr
    if case == "silent":  # the silent file is named on its own "skipped" line first
        assert len(lines) == 2 and lines[0].startswith("skipped"), stderr
    else:
        assert len(lines) == 1, stderr
    assert not out.exists()


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_ends_with_one_line_and_exit_2(case, tmp_path, capsys):
    from distill_train.cli import main

    code = main([str(a) for a in bad_args(case, tmp_path)])
    err = capsys.readouterr().err
    check_one_line(code, err, case, tmp_path / "m.distill")
    if case == "output-in-a-file":
        assert f"'{tmp_path / 'notes.txt'}' is a file, not a folder" in err
    if case == "output-unwritable":
        assert "cannot make the folder for '/proc/distill-test/m.distill'" in err


@pytest.mark.parametrize("case", ["missing", "bad-codec"])
def test_bad_input_through_the_console_entry(case, tmp_path):
    r = train(*bad_args(case, tmp_path))
    check_one_line(r.returncode, r.stderr, case, tmp_path / "m.distill")


def test_help_documents_the_forms():
    r = train("--help")
    assert r.returncode == 0
    for text in ("--stages prior", "--codec", "--resume", "--preset", "checkpoint-codec.safetensors"):
        assert text in r.stdout


# -- the figures, directly --------------------------------------------------------------------------

def test_memorisation_finds_the_longest_copied_run():
    gen = torch.Generator().manual_seed(0)
    train_a = torch.randint(50, (200, 3), generator=gen)
    train_b = torch.randint(50, (100, 3), generator=gen)
    fresh = torch.randint(50, (300, 3), generator=gen) + 100  # codes never seen in training
    generated = torch.cat([fresh[:40], train_a[10:35], fresh[40:80], train_b[5:17], fresh[80:]])
    m = memorisation(generated, [train_a, train_b])
    assert m["longest_copy_frames"] == 25
    # 8-grams fully inside the copied runs: (25 - 7) + (12 - 7)
    assert m["ngram8_overlap"] == pytest.approx((18 + 5) / (len(generated) - 7), abs=1e-4)
    level0 = memorisation(generated, [train_a, train_b], level0_only=True)
    assert level0["longest_copy_frames"] >= 25


def test_codebook_health_and_collapse_warning():
    codes = torch.zeros(100, 2, dtype=torch.long)
    codes[:, 1] = torch.arange(100) % 32  # level 1 uses every code evenly
    health = codebook_health(code_counts([codes], 2, 32))
    assert health[0] == {"level": 0, "utilization": round(1 / 32, 4), "perplexity": 1.0, "dead": 31}
    assert health[1]["utilization"] == 1.0 and health[1]["dead"] == 0
    assert health[1]["perplexity"] == pytest.approx(32, rel=0.01)
    warnings = collapse_warnings(health)
    assert len(warnings) == 1 and "level 0" in warnings[0]


def _scripted_prior_stage(losses, early_stopping: bool = True):
    """A PriorStage whose held-out loss at each evaluation is the next of `losses`."""
    from distill_train.prior_stage import PriorStage

    stage = PriorStage.__new__(PriorStage)
    stage.prior, stage.levels, stage.worlds, stage.early_stopping = torch.nn.Linear(1, 1), 1, 1, early_stopping
    stage.valid_items = [(torch.zeros(4, 1, dtype=torch.long), np.zeros((4, 3), np.float32), 0, "valid")]
    stage.best_loss, stage.best_step, stage.bad_evals, stage.best, stage.last_valid = float("inf"), 0, 0, None, {}
    stage.baseline_loss, stage.said, stage.patience = None, [], 6
    stage.say = stage.said.append
    script = iter(losses)

    def loss(*args, **kw):
        with torch.no_grad():
            stage.prior.weight.fill_(stage.step)  # the weights record the step they were "trained" to
        value = next(script)
        return torch.tensor(value), torch.tensor([value])

    stage._loss = loss
    return stage


@pytest.mark.parametrize("losses, kept", [
    ((4.0, 3.0, 2.5, 2.9, 3.1), 300),  # held-out loss improves, then rises: the best weights (step 300)
    ((4.0, 4.2, 4.5, 4.9, 5.1), 500),  # never below the untrained prior's: the final weights, not step 1
])
def test_prior_keeps_the_best_trained_weights_never_the_untrained_ones(losses, kept):
    stage = _scripted_prior_stage(losses)
    for step in (1, 100, 300, 400, 500):
        stage.step = step
        stage.evaluate(step)
        assert not stage.should_stop() or step == 500
    stage.finish()
    assert stage.prior.weight.item() == kept
    assert stage.best_step == (kept if kept != 500 else 0)
    assert bool(stage.said) == (kept == 500)  # a warning when the held-out loss said nothing


def test_prior_without_early_stopping_trains_on_and_keeps_its_final_weights():
    stage = _scripted_prior_stage((4.0, 3.0, 2.5, 2.9, 3.1, 3.3, 3.5, 3.7, 3.9, 4.1), early_stopping=False)
    for step in range(1, 11):
        stage.step = step
        stage.evaluate(step)
        assert not stage.should_stop()  # seven evaluations without improvement, more than the patience
    stage.finish()
    assert stage.prior.weight.item() == 10 and not stage.said


"""The adversarial stage: discriminators that learn, a decoder fine-tuned with codes left alone, exact resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from distill_live.live.player import render
from distill_live.model.codec import Codec
from distill_live.model.config import preset
from distill_live.model.modelfile import load_model
from distill_train.adversarial_stage import AdversarialStage
from distill_train.codec_stage import CROP_FRAMES
from distill_train.data import load_dataset
from distill_train.discriminators import Discriminator, discriminator_loss
from distill_train.loop import Interrupted, Settings, run, seed_everything
from audiofiles import sine, write

pytestmark = pytest.mark.slow  # trains

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
FLAGS = ["--preset", "tiny", "--steps", "30", "--prior-steps", "10", "--batch-size", "4", "--eval-every", "3",
         "--checkpoint-every", "3", "--seed", "5", "--quiet"]


def test_the_discriminators_learn_to_tell_real_from_decoded():
    torch.manual_seed(0)
    cfg = preset("tiny").codec
    codec = Codec(cfg).eval()
    t = torch.arange(8 * cfg.hop) / SR
    real = torch.stack([0.3 * torch.sin(2 * torch.pi * f * t) for f in (220, 330, 440, 550)])
    with torch.no_grad():
        fake = codec.decode(codec.encode(real))  # an untrained codec: noise
    disc = Discriminator(SR, 8)
    opt = torch.optim.AdamW(disc.parameters(), lr=1e-3, betas=(0.8, 0.99))
    losses = []
    for _ in range(30):
        loss = discriminator_loss(disc(real), disc(fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sounds")
    for world, freq in (("low", 180.0), ("high", 1900.0)):
        for i in range(3):
            write(root / world / f"{i}.wav", sine(freq * (1 + 0.07 * i), 1.5, SR, 0.3), SR)
    return root


def train(data: Path, out: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill_train", str(data), "-o", str(out), *FLAGS, *extra],
                          cwd=ROOT, capture_output=True, text=True, check=check, timeout=600)


def test_cpu_training_leaves_the_adversarial_stage_off_unless_asked(data, tmp_path):
    out = tmp_path / "plain.distill"
    train(data, out, "--stages", "codec", "--steps", "3")
    model = load_model(out)
    assert model.meta["training"]["adversarial"] is False
    assert "adversarial" not in model.meta["history"]["codec"]
    assert not (tmp_path / "plain.distill.run" / "checkpoint-adversarial.safetensors").exists()


def test_adversarial_stage_tunes_the_decoder_and_keeps_the_codes(data, tmp_path):
    whole = tmp_path / "whole.distill"
    train(data, whole, "--adversarial", "--adversarial-steps", "6")
    run = tmp_path / "whole.distill.run"
    codec_only = load_file(run / "checkpoint-codec.safetensors")
    tuned = load_file(run / "checkpoint-adversarial.safetensors")
    decoder = [k for k in tuned if k.startswith("model.codec.decoder.")]
    frozen = [k for k in tuned if k.startswith(("model.codec.encoder.", "model.codec.quantizer."))]
    assert decoder and frozen
    assert any(not torch.equal(tuned[k], codec_only[k]) for k in decoder), "the decoder did not change"
    assert all(torch.equal(tuned[k], codec_only[k]) for k in frozen), "the encoder or codebooks changed"
    assert (run / "report-adversarial.png").stat().st_size > 10_000
    assert list((run / "previews").glob("*-adversarial.wav"))

    model = load_model(whole)
    assert model.meta["history"]["codec"]["adversarial"]["steps"] == 6
    for k in decoder:  # the model file carries the tuned decoder
        assert torch.equal(model.codec.state_dict()[k[len("model.codec."):]], tuned[k])
    audio = render(model, 1.0, seed=1)
    assert np.isfinite(audio).all() and np.abs(audio).max() > 1e-3

    # more codec steps on --resume: the finished adversarial stage was made on the old codec, so it runs again
    train(data, whole, "--adversarial", "--adversarial-steps", "6", "--resume", "--steps", "33")
    codec_only, tuned = (load_file(run / f"checkpoint-{s}.safetensors") for s in ("codec", "adversarial"))
    assert all(torch.equal(tuned[k], codec_only[k]) for k in frozen), "tuned on top of the old codec"
    history = load_model(whole).meta["history"]["codec"]
    assert history["steps"] == 33 and history["adversarial"]["steps"] == 6



class StopAtStep3(AdversarialStage):
    """The real stage, sent a real SIGINT during its fourth step (as Ctrl-C would)."""

    def train_step(self, step: int):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return super().train_step(step)


def test_an_interrupted_adversarial_stage_resumes_exactly(data, tmp_path):
    codec = Codec(preset("tiny").codec)
    dataset = load_dataset(data, SR, codec.cfg.hop, crop_frames=CROP_FRAMES, seed=0, log=lambda *_: None)
    with torch.no_grad():  # k-means initialisation of the codebooks, as the codec stage's first batch does
        codec.train()(torch.from_numpy(np.concatenate([c.audio[:SR] for c in dataset.clips]))[None])
    settings = Settings(steps=6, batch_size=2, lr=2e-4, checkpoint_every=100, eval_every=100, quiet=True)

    def stage(kind, folder: Path):
        seed_everything(1)
        return kind(codec, dataset, 2, 1, torch.device("cpu"), folder, 2e-4)

    whole = stage(AdversarialStage, tmp_path / "whole")
    run(whole, settings, tmp_path / "whole.safetensors", resume=False, log=lambda *_: None)
    with pytest.raises(Interrupted):
        run(stage(StopAtStep3, tmp_path / "part"), settings, tmp_path / "part.safetensors", resume=False,
            log=lambda *_: None)
    resumed = stage(AdversarialStage, tmp_path / "part")
    run(resumed, settings, tmp_path / "part.safetensors", resume=True, log=lambda *_: None)
    for name in ("codec", "discriminator"):
        a, b = whole.modules()[name].state_dict(), resumed.modules()[name].state_dict()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}.{k}"

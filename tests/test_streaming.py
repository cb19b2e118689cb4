"""Streaming equals batch: the live engine decodes and samples one frame at a time, training and
offline tools work on whole sequences; both paths must give the same numbers (to float tolerance)."""
from __future__ import annotations

import pytest
import torch

from distill_live.model.config import PRESETS, preset
from distill_live.model.prior import Controls, Prior
from models import random_codec


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("levels", [None, 1])
def test_frame_by_frame_decoding_equals_whole_sequence(name, levels):
    codec = random_codec(name)
    cfg = codec.cfg
    frames = 24  # more than every causal receptive field in the presets
    gen = torch.Generator().manual_seed(1)
    codes = torch.randint(cfg.codebook_size, (2, frames, cfg.levels), generator=gen)
    with torch.no_grad():
        whole = codec.decode(codes, levels)
        state = codec.start(batch=2)
        parts = []
        for t in range(frames):
            audio, state = codec.decode_step(codes[:, t], state, levels)
            assert audio.shape == (2, cfg.hop)
            parts.append(audio)
        stepped = torch.cat(parts, dim=1)
    assert whole.shape == stepped.shape == (2, frames * cfg.hop)
    scale = whole.abs().max().item()
    assert scale > 0
    assert torch.allclose(stepped, whole, atol=1e-5 * max(1.0, scale), rtol=1e-4), \
        f"max difference {(stepped - whole).abs().max().item():.3g} at scale {scale:.3g}"


def test_a_stream_started_beside_another_decodes_as_a_fresh_one():
    """A cue jump's fresh decoder shares the latent table of the stream playing (`Codec.start(sharing=)`)
    instead of making it again: it decodes what a stream of its own decodes."""
    codec = random_codec("tiny")
    codes = torch.randint(codec.cfg.codebook_size, (6, 1, codec.cfg.levels), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        playing = codec.start(1)
        shared, own = codec.start(1, sharing=playing), codec.start(1)
        assert shared.table is playing.table  # not made again
        for frame in codes:
            a, shared = codec.decode_step(frame, shared)
            b, own = codec.decode_step(frame, own)
            assert torch.equal(a, b)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_frame_by_frame_encoding_equals_whole_sequence(name):
    """The live audio input encodes one frame at a time (`Codec.encode_step`)."""
    codec = random_codec(name)
    cfg = codec.cfg
    frames = 32  # more than the encoder's receptive field (24 frames of block past + its window in `default`)
    gen = torch.Generator().manual_seed(3)
    t = torch.arange(frames * cfg.hop) / cfg.sample_rate
    audio = 0.3 * torch.randn(2, frames * cfg.hop, generator=gen) * torch.sin(2 * torch.pi * 3 * t) ** 2
    with torch.no_grad():
        whole_latent, _ = codec.encoder(audio, codec.encoder.start(2))
        whole = codec.encode(audio)  # first, so its k-means init has settled the codebooks the streams copy
        state = codec.start_encoding(batch=2)
        latents, codes = [], []
        for frame in audio.split(cfg.hop, dim=1):
            latent, _ = codec.encoder(frame, state)
            frame_codes, state = codec.encode_step(frame, state)
            assert frame_codes.shape == (2, cfg.levels)
            latents.append(latent[:, 0])
            codes.append(frame_codes)
    latents, codes = torch.stack(latents, dim=1), torch.stack(codes, dim=1)
    assert torch.allclose(latents, whole_latent, atol=1e-5, rtol=1e-4), \
        f"max difference {(latents - whole_latent).abs().max().item():.3g}"
    assert torch.equal(codes, whole)
    assert len(whole.unique()) > cfg.levels  # the signal changes, and so do the codes


@pytest.mark.parametrize("kind", ["gru", "transformer"])
@pytest.mark.parametrize("name", ["tiny", "small"])
@pytest.mark.parametrize("condition_heads", [True, False], ids=["heads", "input-only"])
def test_prior_step_logprobs_equal_full_forward(kind, name, condition_heads):
    cfg = preset(name)
    cfg.prior.kind, cfg.prior.condition_heads = kind, condition_heads
    cfg.prior.worlds = 3
    levels, size = cfg.codec.levels, cfg.codec.codebook_size
    torch.manual_seed(0)
    prior = Prior(cfg.prior, levels, size).eval()
    frames = cfg.prior.context + 20 if kind == "transformer" else 40  # run past the rolling cache
    gen = torch.Generator().manual_seed(2)
    codes = torch.randint(size, (1, frames, levels), generator=gen)
    controls = Controls(world_weights=[0.2, 0.0, 0.6], descriptors=(0.25, None, 0.9))
    weights = torch.tensor([[0.25, 0.0, 0.75, 0.0]])  # normalised, last column = no world
    desc = torch.tensor([0.25, 0.0, 0.9]).expand(1, frames, 3)
    held = torch.tensor([1.0, 0.0, 1.0]).expand(1, frames, 3)
    with torch.no_grad():
        full = torch.log_softmax(prior(codes, weights, desc, held), dim=-1)[0]
    state = prior.start(seed=0)
    for t in range(frames):
        step, state = prior.step_logprobs(state, codes[0, t], controls)
        assert torch.allclose(step, full[t], atol=2e-4, rtol=1e-4), \
            f"frame {t}: max difference {(step - full[t]).abs().max().item():.3g}"


@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_prior_state_does_not_grow(kind):
    cfg = preset("tiny")
    cfg.prior.kind = kind
    prior = Prior(cfg.prior, cfg.codec.levels, cfg.codec.codebook_size).eval()
    state = prior.start(seed=3)
    sizes = []
    for t in range(3 * cfg.prior.context + 5):
        codes, state = prior.step(state, Controls(temperature=0.9, topk=8))
        assert codes.shape == (cfg.codec.levels,)
        assert ((codes >= 0) & (codes < cfg.codec.codebook_size)).all()
        sizes.append(sum(m.numel() for m in state.memory) + state.history.numel())
    assert len(set(sizes)) == 1

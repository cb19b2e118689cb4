"""The live paths are rearranged for speed at batch 1 (the codec blocks' fast paths in distill_live/model/codec.py,
the loops compiled by numba in distill_live/model/compiled.py, `Prior.step`, its `StepTables` and `sample` in
distill_live/model/prior.py, and the kernels frames run on, distill_live/model/kernels.py); these tests hold them
to the plain definitions.

tests/test_streaming.py already checks decode_step against whole-sequence decoding and the prior's
teacher-forced step against its training forward pass; here: absent levels in the decoder, the compiled
decoder against the plain one, and the prior's sampling (incremental head sums, reused conditioning,
the tables) against a straightforward reference that draws from the same generator, and the
sampler's Gumbel-max race against the frequencies softmax gives.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from distill_live.live.player import Player
from distill_live.model import codec as codec_module
from distill_live.model import compiled, kernels
from distill_live.model.codec import Codec
from distill_live.model.config import preset
from distill_live.model.modelfile import load_model, save_model
from distill_live.model.prior import Controls, Prior, draws, sample
from models import random_codec, random_model


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_decode_step_with_absent_levels_equals_whole_sequence(name):
    """Codes of -1 (levels the prior did not sample) contribute nothing, as in `Codec.latent`."""
    codec = random_codec(name)
    cfg = codec.cfg
    frames = 30
    gen = torch.Generator().manual_seed(5)
    codes = torch.randint(cfg.codebook_size, (1, frames, cfg.levels), generator=gen)
    coarse = torch.randint(1, cfg.levels + 1, (frames,), generator=gen)  # levels present per frame
    codes[0, torch.arange(cfg.levels)[None, :] >= coarse[:, None]] = -1
    with torch.inference_mode():
        whole = codec.decode(codes)
        stepped = _steps(codec, codes)
    scale = whole.abs().max().item()
    assert torch.allclose(stepped, whole, atol=1e-5 * max(1.0, scale), rtol=1e-4)


def _steps(codec: Codec, codes: torch.Tensor) -> torch.Tensor:
    state, parts = codec.start(codes.shape[0]), []
    for t in range(codes.shape[1]):
        audio, state = codec.decode_step(codes[:, t], state)
        parts.append(audio)
    return torch.cat(parts, dim=1)


def test_decode_step_table_follows_new_codebooks():
    """The codebook table is copied per stream, so a stream started after training sees the new codebooks."""
    codec = random_codec("tiny")
    codes = torch.zeros(1, 4, codec.cfg.levels, dtype=torch.long)
    with torch.no_grad():
        before = _steps(codec, codes)
        for layer in codec.quantizer.layers:
            layer._codebook.embed.data.mul_(2.0)  # how the quantizer's EMA writes them: no version bump
        after = _steps(codec, codes)
        assert torch.allclose(after, codec.decode(codes), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(before, after)


def test_the_compiled_gelu_is_torchs_and_a_product_of_two_rows_is_two_of_one():
    """The decoder blocks' and the prior heads' GELU, erf as a rational function, against torch's in double
    precision over every value a model makes (within 1.1e-6, torch's own float32 GELU: 1.2e-6); `linear`
    taking two rows at a time gives each row exactly what it gives that row alone."""
    values = np.linspace(-12, 12, 200_001, dtype=np.float32)[None]
    gelu = np.empty_like(values)
    compiled._gelu_rows(values, gelu)
    exact = torch.nn.functional.gelu(torch.from_numpy(values.astype(np.float64))).numpy()
    assert np.abs(gelu - exact).max() < 1.5e-6
    assert np.abs(gelu - exact).max() > 0  # (not torch's own float32 function: the test would prove nothing)
    gen = np.random.default_rng(0)
    weight, bias = gen.standard_normal((96, 64), np.float32), gen.standard_normal(96, np.float32)
    rows = gen.standard_normal((5, 64), np.float32)
    together, alone = np.empty((5, 96), np.float32), np.empty((1, 96), np.float32)
    compiled.linear(rows, weight, bias, together)
    for t in range(5):
        compiled.linear(rows[t:t + 1], weight, bias, alone)
        np.testing.assert_array_equal(together[t], alone[0])
    np.testing.assert_allclose(together, rows @ weight.T + bias, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["tiny", "small", "default"])
def test_the_compiled_frame_step_plays_what_the_decoder_plays(name):
    """`prepare_streaming` compiles the decoder's frame step: the same samples as the plain step within
    1e-5 of the signal's largest sample (the sums run in another order), over 40 frames of carried state,
    with absent levels too, on the kernels frames are played on."""
    codec = random_codec(name).eval()
    compiled, plain = codec.start(1), codec.start(1)
    codec.prepare_streaming()
    assert codec.decoder._compiled, "the decoder was not compiled"
    gen = torch.Generator().manual_seed(1)
    ours, theirs = [], []
    with kernels.playing():
        for t in range(40):
            codes = torch.randint(codec.cfg.codebook_size, (1, codec.cfg.levels), generator=gen)
            levels = codec.cfg.levels if t % 4 else 1 + t % 3
            audio, compiled = codec.decode_step(codes, compiled, levels)
            ours.append(audio)
            rows = codes[:, :levels] + codec._level_offsets[:levels]
            latent = torch.nn.functional.embedding_bag(rows, plain.table, mode="sum")
            audio, plain = codec.decoder.forward(latent[:, None], plain)
            theirs.append(audio)
    ours, theirs = torch.cat(ours, 1), torch.cat(theirs, 1)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    scale = theirs.abs().max().item()
    assert scale > 0.01, "the random decoder plays silence: nothing is compared"
    assert (ours - theirs).abs().max().item() <= 1e-5 * scale
    assert torch.allclose(compiled.tail, plain.tail, atol=1e-5 * scale, rtol=0)
    assert compiled.head_step == plain.head_step


def test_the_compiled_decoder_follows_its_weights_and_stays_out_of_the_model_file(tmp_path):
    """The compiled step reads the decoder's own parameters (training or a reload changes what it plays),
    and a prepared model saves and loads as any other: it adds no tensors to the file."""
    model = random_model(kind="tiny")
    model.codec.eval()
    model.prepare_streaming()
    codes = torch.zeros(1, model.codec.cfg.levels, dtype=torch.long)
    with torch.no_grad():
        before, _ = model.codec.decode_step(codes, model.codec.start(1))
        model.codec.decoder.head.out.bias.add_(0.5)
        after, _ = model.codec.decode_step(codes, model.codec.start(1))
        plain, _ = model.codec.decoder.forward(model.codec.latent(codes)[:, None], model.codec.start(1))
    assert not torch.allclose(before, after, atol=1e-3)
    assert torch.allclose(after, plain, atol=1e-5 * plain.abs().max().item(), rtol=0)
    save_model(tmp_path / "prepared.distill", model)
    assert load_model(tmp_path / "prepared.distill").codec.state_dict().keys() == model.codec.state_dict().keys()


def test_a_decoder_that_cannot_be_compiled_plays_uncompiled_and_is_not_compiled_again(monkeypatch):
    """Where the frame step cannot be compiled (numba failing on this machine), it is the plain one, and a
    voice's start (a reset, in the generator thread) does not try the compile again."""
    calls = []

    def no_compiler(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("no numba here")

    monkeypatch.setattr(codec_module, "CompiledFrameStep", no_compiler)
    codec = random_codec("tiny").eval()
    codec.prepare_streaming()
    codec.prepare_streaming()
    assert len(calls) == 1 and not codec.decoder._compiled
    codes = torch.zeros(1, codec.cfg.levels, dtype=torch.long)
    with kernels.playing():
        audio, _ = codec.decode_step(codes, codec.start(1))
        plain, _ = codec.decoder.forward(codec.latent(codes)[:, None], codec.start(1))
    assert torch.equal(audio, plain)


def test_no_frame_compiles_anything_once_the_model_is_prepared():
    """Every compile happens where a model is prepared (seconds, once). A frame whose arrays came in a
    layout or a type not met there would compile in the generator thread, seconds of silence mid-set.
    Frames of every kind, the prior going on from a cue whose rows are views into a wider array among
    them, use only what preparing compiled."""
    model = random_model(kind="tiny")
    levels = model.codec.cfg.levels
    wide = torch.zeros(model.cues[1].shape[0], 2 * levels, dtype=torch.long)
    wide[:, ::2] = model.cues[1]
    model.cues[1] = wide[:, ::2]  # (as a cue sliced out of something else would be)
    model.prepare_streaming()
    dispatchers = [f for f in vars(compiled).values() if hasattr(f, "signatures")]
    before = {f.__name__: list(f.signatures) for f in dispatchers}
    player = Player(model, seed=1)
    steps = [("/distill/play", [1]), ("/distill/cue", [1, 0.0]), ("/distill/world/bells", [1.0]),
             ("/distill/guidance", [3.0]), ("/distill/topk", [5]), ("/distill/topp", [0.8]), ("/distill/mutate", [0.2]),
             ("/distill/levels", [2]), ("/distill/lock", [1]), ("/distill/cue", [2, 0.5]), ("/distill/freeze", [1]),
             ("/distill/freeze", [0]), ("/distill/temperature", [0]), ("/distill/reset", [])]
    for address, args in steps:
        player.registry.submit(address, args)
        for _ in range(3):
            player.next_frame()
    assert {f.__name__: list(f.signatures) for f in dispatchers} == before


def test_frames_play_without_onednn_and_put_it_back():
    was = torch.backends.mkldnn.enabled
    with kernels.playing():
        assert not torch.backends.mkldnn.enabled and torch.is_inference_mode_enabled()
    assert torch.backends.mkldnn.enabled == was


def _frequencies(logits: torch.Tensor, controls: Controls, n: int = 40000) -> np.ndarray:
    noise = draws(n, logits.shape[-1], torch.Generator().manual_seed(3))
    codes = [sample(logits.numpy(), controls, row) for row in noise]
    return np.bincount(codes, minlength=logits.shape[-1]) / n


def test_sample_draws_each_code_as_often_as_softmax_says():
    """The Gumbel-max race draws code i with probability softmax(logits / temperature)[i], as
    `torch.multinomial` does: over 40,000 draws each frequency is within 0.01 of it (about four
    standard deviations; the draws are seeded)."""
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    for temperature in (0.8, 1.0, 1.5):
        expected = torch.softmax(logits / temperature, -1).numpy()
        assert np.abs(_frequencies(logits, Controls(temperature=temperature)) - expected).max() < 0.01


def test_sample_keeps_to_top_k_and_top_p_and_mutates_as_often_as_asked():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    probs = torch.softmax(logits, -1).numpy()  # 0.57, 0.21, 0.13, 0.08, 0.03, 0.004
    top2 = _frequencies(logits, Controls(temperature=1.0, topk=2))
    assert top2[2:].sum() == 0 and abs(top2[0] - probs[0] / probs[:2].sum()) < 0.01
    nucleus = _frequencies(logits, Controls(temperature=1.0, topp=0.85))  # the smallest set reaching 0.85: 3 codes
    assert nucleus[3:].sum() == 0 and abs(nucleus[2] - probs[2] / probs[:3].sum()) < 0.01
    assert np.array_equal(_frequencies(logits, Controls(temperature=0.0), n=100), [1, 0, 0, 0, 0, 0])
    mutated = _frequencies(logits, Controls(temperature=0.0, mutate=0.3))  # argmax, or any code 30% of the time
    assert abs(mutated[0] - (0.7 + 0.3 / 6)) < 0.01 and all(abs(f - 0.05) < 0.01 for f in mutated[1:])


def reference_step(prior: Prior, state, controls: Controls) -> torch.Tensor:
    """`Prior.step` written the plain way: full conditioning every frame, `level_logits` per level, the
    frame's draws taken as the step takes them."""
    h = prior._advance(state, prior._controls_condition(controls))
    levels = prior.levels if controls.levels is None else max(1, min(prior.levels, int(controls.levels)))
    lock = min(int(controls.lock), levels) if state.cue is not None else 0
    codes = torch.full((prior.levels,), -1, dtype=torch.long)
    if lock:
        codes[:lock] = state.cue[state.cue_pos % state.cue.shape[0], :lock]
        state.cue_pos += 1
    guided = controls.guidance != 1.0
    noise = draws(levels - lock, prior.codebook_size, state.generator)
    for level in range(lock, levels):
        rows = h if guided else h[:1]
        logits = prior.level_logits(rows, codes.expand(rows.shape[0], -1), level)
        logits = logits[1] + controls.guidance * (logits[0] - logits[1]) if guided else logits[0]
        codes[level] = sample(logits.numpy(), controls, noise[level - lock])
    prior._remember(state, codes)
    return codes


CONTROLS = [
    Controls(),  # guidance 2 with nothing held: the step skips the unconditioned row, the reference does not
    Controls(temperature=0.7, world_weights=[0.0, 1.0], descriptors=(0.3, None, 0.8)),
    Controls(guidance=2.5, world_weights=[1.0, 0.5]),
    Controls(topk=5, topp=0.9, temperature=1.3, descriptors=(None, 0.1, None)),
    Controls(levels=2, mutate=0.2),
    Controls(temperature=0.0, lock=2),
]


def tiny_prior(kind: str, prepared: bool, **config) -> tuple[Prior, torch.Tensor]:
    """A `tiny` prior of this kind with two worlds (and these PriorConfig fields), prepared for streaming or
    plain, and a random passage of 12 frames to jump into."""
    cfg = preset("tiny")
    cfg.prior.kind, cfg.prior.worlds = kind, 2
    for name, value in config.items():
        setattr(cfg.prior, name, value)
    torch.manual_seed(0)
    prior = Prior(cfg.prior, cfg.codec.levels, cfg.codec.codebook_size).eval()
    if prepared:
        prior.prepare_streaming()
    cue = torch.randint(cfg.codec.codebook_size, (12, cfg.codec.levels), generator=torch.Generator().manual_seed(1))
    return prior, cue


@pytest.mark.parametrize("prepared", [False, True], ids=["plain", "prepared"])
@pytest.mark.parametrize("kind", ["gru", "transformer"])
@pytest.mark.parametrize("controls", CONTROLS, ids=range(len(CONTROLS)))
def test_prior_step_samples_what_the_plain_definition_samples(kind, controls, prepared):
    """Prepared (`StepTables`), the step's sums are taken in another order: the same codes still, frame
    after frame (the reference's sums are the plain ones, since it passes no condition gates)."""
    prior, cue = tiny_prior(kind, prepared)
    with kernels.playing():
        fast, plain = prior.jump(prior.start(seed=7), cue, 3), prior.jump(prior.start(seed=7), cue, 3)
        for t in range(30):
            ours, fast = prior.step(fast, controls)
            theirs = reference_step(prior, plain, controls)
            assert torch.equal(ours, theirs), f"frame {t}: {ours.tolist()} != {theirs.tolist()}"


def test_prior_step_follows_changing_controls():
    """The conditioning is reused only while the controls stay the same."""
    cfg = preset("tiny")
    cfg.prior.worlds = 2
    torch.manual_seed(0)
    prior = Prior(cfg.prior, cfg.codec.levels, cfg.codec.codebook_size).eval()
    fast, plain = prior.start(seed=2), prior.start(seed=2)
    with torch.inference_mode():
        for t in range(40):
            controls = Controls(world_weights=[t / 40, 1 - t / 40] if t % 10 < 7 else None,
                                descriptors=(None if t < 20 else 0.5, None, t / 40))
            ours, fast = prior.step(fast, controls)
            assert torch.equal(ours, reference_step(prior, plain, controls)), f"frame {t}"


@pytest.mark.parametrize("prepared", [False, True], ids=["plain", "prepared"])
@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_a_rewound_prior_steps_as_if_the_step_was_never_taken(kind, prepared):
    """`Prior.rewind` (a steering control remakes the frame playing: live/player.py): a step taken back and
    taken again under other controls gives the codes, and leaves the memory, of a prior that only ever took
    the second. Past the transformer's context, so its rolling cache has wrapped; a held step (freeze) too."""
    prior, cue = tiny_prior(kind, prepared, context=8)
    with kernels.playing():
        ours, theirs = prior.jump(prior.start(seed=3), cue, 3), prior.jump(prior.start(seed=3), cue, 3)
        for t in range(30):
            taken_back = Controls(world_weights=[1.0, 0.0], freeze=t % 7 == 3)
            kept = Controls(world_weights=[0.0, 1.0], descriptors=(0.9, None, None), temperature=1.3)
            checkpoint = prior.checkpoint(ours)
            _, ours = prior.step(ours, taken_back)
            ours = prior.rewind(checkpoint)
            codes, ours = prior.step(ours, kept)
            expected, theirs = prior.step(theirs, kept)
            assert torch.equal(codes, expected), f"frame {t}: {codes.tolist()} != {expected.tolist()}"
    for mine, other in zip(ours.memory, theirs.memory):
        assert torch.equal(mine, other)
    assert torch.equal(ours.history, theirs.history) and ours.written == theirs.written


@pytest.mark.parametrize("name", ["small", "default"])
def test_a_prepared_prior_samples_what_the_plain_one_samples_at_full_size(name):
    """The presets' own sizes, where float rounding has more terms to differ in: 300 frames steered
    three ways, the same codes from prepared and plain priors of the same weights, and the GRU memory
    within 1e-5 (the prepared one is a float's rounding away, and does not drift)."""
    plain = random_model(kind=name).prior.eval()
    prepared = Prior(plain.cfg, plain.levels, plain.codebook_size).eval()
    prepared.load_state_dict(plain.state_dict())
    prepared.prepare_streaming()
    for controls in (Controls(), Controls(guidance=2.0, world_weights=[1.0, 0.0], temperature=0.8),
                     Controls(levels=3, descriptors=(0.2, None, 0.9))):
        ours, theirs = prepared.start(seed=4), plain.start(seed=4)
        with kernels.playing():
            for t in range(300):
                a, ours = prepared.step(ours, controls)
                b, theirs = plain.step(theirs, controls)
                assert torch.equal(a, b), f"frame {t}"
        assert (ours.memory[0] - theirs.memory[0]).abs().max() < 1e-5


def test_training_drops_the_step_tables():
    """The tables copy the weights as they were: `train()` drops them (`eval()` keeps them), so a model
    trained further never plays stale ones."""
    prior = random_model(kind="tiny").prior.eval()
    prior.prepare_streaming()
    prior.eval()
    assert prior._tables is not None
    prior.train()
    prior.eval()
    assert prior._tables is None


@pytest.mark.parametrize("same", [True, False], ids=["same controls", "other controls"])
def test_a_cue_jump_reuses_the_conditioning_only_for_the_same_controls(same):
    """A jump keeps the playing state's conditioning (not made again at a trigger) while the controls are
    the ones it was made for: the jumped state then plays what a jump from a fresh state plays."""
    cfg = preset("tiny")
    cfg.prior.worlds = 2
    torch.manual_seed(0)
    prior = Prior(cfg.prior, cfg.codec.levels, cfg.codec.codebook_size).eval()
    prior.prepare_streaming()
    cue = torch.randint(cfg.codec.codebook_size, (12, cfg.codec.levels), generator=torch.Generator().manual_seed(1))
    before = Controls(world_weights=[1.0, 0.0], descriptors=(0.2, None, None))
    after = before if same else Controls(world_weights=[0.0, 1.0], descriptors=(None, 0.9, None))
    with kernels.playing():
        playing = prior.start(seed=3)
        for _ in range(5):
            _, playing = prior.step(playing, before)
        jumped = prior.jump(playing, cue, 3, after)
        fresh = prior.jump(prior.start(seed=3), cue, 3, after)
        for state in (jumped, fresh):  # (the playing one's generator moved on)
            state.generator = torch.Generator().manual_seed(4)
        for t in range(20):
            ours, jumped = prior.step(jumped, after)
            theirs, fresh = prior.step(fresh, after)
            assert torch.equal(ours, theirs), f"frame {t}"

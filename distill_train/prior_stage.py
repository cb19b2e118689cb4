"""Prior stage: fit the steerable autoregressive prior to the code sequences of the training audio.

Training examples are random crops of the code sequences (extracted once, in eval mode); a clip
shorter than a crop is followed by other clips of its world, drawn at random, as if the sample pack
were played one sound after another (a world of a single clip borrows from every world, and that
example is seen unconditioned). Ended there, every one-shot (a drum hit, a pluck; the data
pipeline pads it with silence to one codec crop) ended in silence that nothing ever followed, so
the prior learnt silence as a state it never leaves: generated audio fell silent after a hit or
two. Each example has its clip's world (dropped to "no world" with probability world_dropout), its
per-frame descriptors (each dropped independently with descriptor_dropout; held ones get a little
jitter so the prior tolerates targets a performer sets by hand) and, on about a fifth of the
batches, fine input levels hidden as when fewer levels are sampled live. A share of the examples
(`unconditioned`) is given nothing at all: that is the prediction classifier-free guidance subtracts
(Prior.step with guidance != 1), and from the dropouts alone it came out of 0.2 x 0.3^3 = 0.5% of
the examples, too few to learn it: guidance pushed away from a prediction the prior had hardly been
taught (docs/benchmarks.md, "Steering").

The descriptors are those of the codec's rendering of the codes, not of the recordings (see
`heard_descriptors`). Of the examples given a condition, 40% move to another world midway, the
condition with them, as a performer moves a world fader: without them the prior only ever saw a
condition that agreed with the sound so far, and learnt to follow the sound, not the condition. In
two of five of these moves no world is named at all, and at least one descriptor is held: the held
descriptors alone say where the sound goes, as when a performer turns the loudness knob with no
world fader up. With only named moves, on one of twenty trainings of the steering tests' model (seed
8, torch's AVX-512 kernels) holding loudness low or high played the same loud rumble (x1.00):
whatever the first frames had drawn, the descriptors never pulled the prior away from it
(docs/benchmarks.md, "Steering").

Loss: cross-entropy per level. Held-out loss is measured on whole held-out sequences with world and
descriptors given, and reported. By default the prior trains its whole budget and keeps its final
weights. The held-out loss is a poor guide for an instrument: on a collection of one-off sounds a
held-out file is unlike every training file, so the loss is lowest after a few hundred steps and
rises from then on, while the prior goes on learning how the collection's own sounds move. On Sonic
Pi's 165 samples (`small`, 10 minutes of prior training on 2 cores) early stopping kept step 200 of
1400, and a minute generated from it was as far from the collection in one-second statistics as the
collection's own codes shuffled in time (Fréchet 397-435 against 417, three seeds); the final
weights of the whole budget (4400 steps) brought it five times closer to the floor (91-158, floor
33; docs/benchmarks.md, "Prior quality").

With `early_stopping` (distill-train --early-stopping), training stops when the held-out loss has not
improved for `patience` evaluations, and the best weights are kept. The first evaluation (step 1,
before the warm-up has moved anything) is the untrained prior's: it is the baseline, never a
candidate. Only held-out losses below it count as improvements. On a small
collection the held-out clips may share too little with the training clips for any learning to
lower their loss (a bell at a pitch the training set lacks has codes the training set lacks): the
loss then rises from the first step on, and keeping the "best" weights would ship the untrained
prior, which plays noise and ignores every control. In that case nothing stops early and the final
weights are kept, with a warning.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from distill_live.model.config import ModelConfig
from distill_live.model.descriptors import DescriptorStats, frame_descriptors, smoothed
from distill_live.model.prior import Controls, Prior

from . import distributed
from .health import memorisation
from .loop import Stage
from .report import prior_report, write_wav

INPUT_LEVELS_SHARE = 0.2  # batches trained with fine input levels hidden
DESCRIPTOR_JITTER = 0.02
SWITCH_SHARE = 0.4  # sequences that move to another world midway, with the condition
UNNAMED_SWITCH_SHARE = 0.4  # of those, the ones where no world is named, only descriptors (see the top)
DESCRIPTOR_SECONDS = 0.5  # a held descriptor means the sound's character over this long (see heard_descriptors)
VALID_MAX_FRAMES = 512
PREVIEW_SECONDS = 10.0
MEMORISATION_FRAMES = 1000
MEMORISATION_SEED = 1


def heard_descriptors(codec, codes: list[torch.Tensor], clips) -> tuple[DescriptorStats, list[np.ndarray]]:
    """What the prior is conditioned on: the descriptors of the codec's own rendering of each clip's
    codes, normalised to the range of the training clips' (returned with that range).

    The prior chooses codes and the codec turns them into the sound a listener hears, so a held target
    means "codes that sound this loud / bright / noisy through this codec". Measured on the recordings
    instead, a sound the codec renders unlike the recording steers the wrong way: on a three-world
    variant of the steering tests' sounds (bells, rumble, white-noise hiss) the tiny codec gave the
    bells back 37 dB too quiet, the prior learnt that loud targets want bell codes (their strikes are
    the loudest frames of the recordings), and holding loudness high made the output quieter.

    Each descriptor is averaged over DESCRIPTOR_SECONDS centred on its frame: a performer holds a
    target for seconds, so it should mean "sound this noisy over the next moments", which the training
    audio shows often, not "this frame is this noisy". Frame by frame, the noisiest twentieth of the
    steering tests' bells (the top of the range a target spans) were the strikes alone, about two
    frames in every 25, always followed by tonal decay: no stretch of training audio was ever noisy
    throughout, a held high target asked for
    something the prior had never seen, and on one training seed in ten it answered with the tonal
    rumble (flatness x0.38 at target 0.95 against 0.05). Averaged, bells struck every half second
    are the noisiest stretches, and the same seed holds noisiness at x4.2 (docs/benchmarks.md).
    """
    hop, rate = codec.cfg.hop, codec.cfg.sample_rate
    window = max(1, round(DESCRIPTOR_SECONDS * rate / hop))
    device = next(codec.parameters()).device
    codec.eval()
    raw = []
    with torch.no_grad():
        for code in codes:
            audio = codec.decode(code[None].to(device))[0].cpu().numpy()
            raw.append(smoothed(frame_descriptors(audio, hop, rate), window))
    stats = DescriptorStats.fit([r for r, clip in zip(raw, clips) if clip.split == "train"], window)
    return stats, [stats.normalise(r) for r in raw]


def align(descriptors: np.ndarray, frames: int) -> np.ndarray:
    """Descriptor frames [n, 3] -> exactly `frames` rows (cut, or the last row repeated)."""
    d = np.asarray(descriptors, dtype=np.float32)[:frames]
    if len(d) < frames:
        last = d[-1:] if len(d) else np.full((1, 3), 0.5, np.float32)
        d = np.concatenate([d, np.repeat(last, frames - len(d), axis=0)])
    return d


class PriorStage(Stage):
    name = "prior"

    def __init__(self, config: ModelConfig, codec, codes: list[torch.Tensor], descriptors: list[np.ndarray], dataset,
                 batch_size: int, seq_frames: int, seed: int, device: torch.device, run_dir: Path, patience: int = 6,
                 early_stopping: bool = False):
        self.config, self.codec, self.device, self.run_dir = config, codec, device, run_dir
        self.cfg = config.prior
        self.levels, self.size = config.codec.levels, config.codec.codebook_size
        self.frame_rate = config.codec.frame_rate
        self.batch_size, self.seq_frames, self.patience = batch_size, seq_frames, patience
        self.prior = Prior(self.cfg, self.levels, self.size).to(device)
        self.model = distributed.wrap(self.prior, device)  # what train_step calls (DDP under torchrun)
        self.worlds = len(dataset.worlds)
        items = [(code, align(d, len(code)), clip.world, clip.split)
                 for code, d, clip in zip(codes, descriptors, dataset.clips)]
        self.train_items = [i for i in items if i[3] == "train"]
        valid = [i for i in items if i[3] == "valid"]
        self.valid_source = "held-out clips" if valid else "training clips (nothing could be held out)"
        self.early_stopping = early_stopping and bool(valid)
        self.valid_items = valid or self.train_items
        self.all_items = list(range(len(self.train_items)))
        self.by_world: dict[int, list[int]] = {}
        for index, item in enumerate(self.train_items):
            self.by_world.setdefault(item[2], []).append(index)
        # worlds a sequence may move between: those of more than one clip (a clip then never needs
        # followers from other worlds)
        self.switchable = sorted(w for w, items in self.by_world.items() if len(items) > 1)
        frames = np.array([len(i[0]) for i in self.train_items], dtype=np.float64)
        self.weights = frames / frames.sum()
        self.rng = np.random.default_rng(seed)
        self.best_loss, self.best_step, self.bad_evals = float("inf"), 0, 0
        self.baseline_loss: float | None = None  # held-out loss of the untrained prior (first evaluation)
        self.best: dict[str, torch.Tensor] | None = None
        self.last_valid: dict = {}

    def modules(self):
        return {"prior": self.prior}

    # -- batches ----------------------------------------------------------------------------------

    def batch(self):
        """codes [B, T, L], world weights [B, T, W+1], descriptors [B, T, 3], held [B, T, 3], input_levels.

        Under torchrun the batch of all ranks is drawn and each rank keeps its own part, so every
        rank's generator stays in the same state.
        """
        b, t, rng = self.batch_size * distributed.world_size(), self.seq_frames, self.rng
        # numpy while filling row by row: a torch indexing op costs ten times more (it showed on a GPU)
        codes = np.zeros((b, t, self.levels), dtype=np.int64)
        desc = np.zeros((b, t, 3), dtype=np.float32)
        held = np.zeros((b, t, 3), dtype=np.float32)
        weights = np.zeros((b, t, self.worlds + 1), dtype=np.float32)
        which = rng.choice(len(self.train_items), size=b, p=self.weights)
        for row, i in enumerate(which):
            world = self.train_items[i][2]
            if rng.random() < self.cfg.unconditioned:  # the row guidance subtracts: nothing given
                self._fill(row, 0, t, i, codes, desc)
                weights[row, :, self.worlds] = 1.0
            elif world in self.switchable and len(self.switchable) > 1 and rng.random() < SWITCH_SHARE:
                # the performer moves to another world: the condition changes at `at`, and the sound with it
                at = int(rng.integers(t // 4, 3 * t // 4 + 1))
                other = rng.choice([w for w in self.switchable if w != world])
                self._fill(row, 0, at, i, codes, desc)
                self._fill(row, at, t, self.by_world[other][rng.choice(len(self.by_world[other]))], codes, desc)
                held[row] = rng.random(3) >= self.cfg.descriptor_dropout
                if rng.random() < UNNAMED_SWITCH_SHARE:  # no world named: the held descriptors alone say it
                    held[row, :, rng.integers(3)] = 1.0
                    weights[row, :, self.worlds] = 1.0
                else:
                    weights[row, :at, world] = weights[row, at:, other] = 1.0
            else:
                mixed = self._fill(row, 0, t, i, codes, desc)
                held[row] = rng.random(3) >= self.cfg.descriptor_dropout
                no_world = mixed or rng.random() < self.cfg.world_dropout
                weights[row, :, self.worlds if no_world else world] = 1.0
        desc = np.clip(desc + rng.normal(0.0, DESCRIPTOR_JITTER, size=(b, t, 3)).astype(np.float32), 0.0, 1.0)
        input_levels = None
        if self.levels > 1 and rng.random() < INPUT_LEVELS_SHARE:
            input_levels = torch.from_numpy(rng.integers(1, self.levels, size=b)).long()
        mine = slice(distributed.rank() * self.batch_size, (distributed.rank() + 1) * self.batch_size)
        return (torch.from_numpy(codes[mine]), torch.from_numpy(weights[mine]), torch.from_numpy(desc[mine]),
                torch.from_numpy(held[mine]),
                None if input_levels is None else input_levels[mine])

    def _fill(self, row: int, lo: int, hi: int, i: int, codes: np.ndarray, desc: np.ndarray) -> bool:
        """Fill frames lo..hi of a batch row from training clip i, from a random start; a clip that ends
        too soon is followed by others of its world (a world of one clip borrows followers from every
        world: then the row mixes worlds, and the caller trains it unconditioned; returns True)."""
        code, d, world, _ = self.train_items[i]
        rng, t = self.rng, hi - lo
        start = int(rng.integers(0, max(1, len(code) - t + 1)))
        followers = self.by_world[world] if len(self.by_world[world]) > 1 else self.all_items
        mixed = followers is self.all_items and len(code) - start < t
        filled = lo
        while True:
            n = min(hi - filled, len(code) - start)
            codes[row, filled:filled + n] = code.numpy()[start:start + n]
            desc[row, filled:filled + n] = d[start:start + n]
            filled += n
            if filled == hi:
                return mixed
            code, d, _, _ = self.train_items[rng.choice(followers)]
            start = 0

    def _loss(self, codes: torch.Tensor, weights: torch.Tensor, desc: torch.Tensor, held: torch.Tensor,
              input_levels: torch.Tensor | None = None, model: torch.nn.Module | None = None):
        d = self.device
        logits = (model or self.prior)(codes.to(d), weights.to(d), desc.to(d), held.to(d),
                                       None if input_levels is None else input_levels.to(d))
        ce = F.cross_entropy(logits.reshape(-1, self.size), codes.to(d).reshape(-1), reduction="none")
        per_level = ce.view(*codes.shape).mean(dim=(0, 1))  # [B, T, L] -> [L]
        return per_level.mean(), per_level

    def train_step(self, step: int):
        self.prior.train()
        loss, per_level = self._loss(*self.batch(), model=self.model)
        return loss, {f"level{i}": v for i, v in enumerate(per_level.tolist())}

    # -- evaluation, early stopping ---------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, step: int) -> dict:
        self.prior.eval()
        totals = torch.zeros(self.levels)
        count = 0.0
        for code, d, world, _ in self.valid_items:
            n = min(len(code), VALID_MAX_FRAMES)
            weights = torch.zeros(1, n, self.worlds + 1)
            weights[0, :, world] = 1.0
            _, per_level = self._loss(code[None, :n], weights, torch.from_numpy(d[None, :n]),
                                      torch.ones(1, n, 3))
            totals += per_level.cpu() * n
            count += n
        self.prior.train()
        per_level = totals / max(count, 1.0)
        valid = float(per_level.mean())
        if self.baseline_loss is None:  # the untrained prior: the yardstick, never kept
            self.baseline_loss = valid
        elif valid < min(self.best_loss, self.baseline_loss) - 1e-4:
            self.best_loss, self.best_step, self.bad_evals = valid, step, 0
            self.best = {k: v.detach().clone() for k, v in self.prior.state_dict().items()}
        elif self.best is not None:  # patience runs only once the held-out loss has said something
            self.bad_evals += 1
        self.last_valid = {"valid": valid, **{f"level{i}": float(v) for i, v in enumerate(per_level)}}
        return dict(self.last_valid)

    def should_stop(self) -> bool:
        return self.early_stopping and self.bad_evals >= self.patience

    def finish(self) -> None:
        """Keep the weights with the best held-out loss, or the final ones when it never improved."""
        if self.best is not None and self.early_stopping:
            self.prior.load_state_dict(self.best)
        elif self.early_stopping and self.baseline_loss is not None and self.last_valid:
            self.say(f"prior: the held-out loss never went below the untrained prior's ({self.baseline_loss:.3f}); "
                     f"the held-out clips share too little with the training clips to judge, so the final weights "
                     f"are kept (more or more varied sounds help the prior generalise)")

    # -- generation, previews, report -------------------------------------------------------------

    @torch.no_grad()
    def generate(self, frames: int, seed: int = 1, controls: Controls | None = None) -> torch.Tensor:
        was_training = self.prior.training
        self.prior.eval()
        state = self.prior.start(seed=seed)
        out = []
        for _ in range(frames):
            codes, state = self.prior.step(state, controls or Controls())
            out.append(codes.cpu().clone())
        self.prior.train(was_training)
        return torch.stack(out)

    @torch.no_grad()
    def on_checkpoint(self, step: int, history: dict, final: bool) -> None:
        preview = int(PREVIEW_SECONDS * self.frame_rate)
        if final:  # the long generation for the memorisation figure also gives the preview
            self.final_generation = self.generate(max(preview, MEMORISATION_FRAMES), seed=MEMORISATION_SEED)
            generated = self.final_generation[:preview]
        else:
            generated = self.generate(preview, seed=MEMORISATION_SEED)
        previews = self.run_dir / "previews"
        previews.mkdir(parents=True, exist_ok=True)
        self.codec.eval()
        audio = self.codec.decode(generated[None].to(self.device))[0].cpu().numpy()
        write_wav(previews / "prior-generated.wav", audio, self.config.codec.sample_rate)
        prior_report(self.run_dir / "report-prior.png", history, self.levels, generated, self.size, self.frame_rate,
                     f"prior ({self.cfg.kind}), step {step}{' (final)' if final else ''}: "
                     f"{self.worlds} worlds, {self.levels} levels x {self.size} codes")

    def memorisation(self) -> dict:
        """How much of a long generation copies the training sequences verbatim."""
        training = [i[0] for i in self.train_items]
        generated = getattr(self, "final_generation", None)
        if generated is None:
            generated = self.generate(MEMORISATION_FRAMES, seed=MEMORISATION_SEED)
        generated = generated[:MEMORISATION_FRAMES]
        out = {"generated_frames": MEMORISATION_FRAMES, "training_frames": int(sum(len(t) for t in training)),
               "whole_frames": memorisation(generated, training),
               "level0": memorisation(generated, training, level0_only=True)}
        held_out = [i[0] for i in self.valid_items if i[3] == "valid"]
        if held_out:  # yardstick: how much real but unseen audio of this collection "copies" the training set
            real = torch.cat(held_out)[:MEMORISATION_FRAMES]
            out["held_out_reference"] = {"whole_frames": memorisation(real, training),
                                         "level0": memorisation(real, training, level0_only=True)}
        return out

    # -- checkpoint state -------------------------------------------------------------------------

    def state_dict(self) -> dict:
        best = self.best_loss if np.isfinite(self.best_loss) else None
        return {"rng": self.rng.bit_generator.state, "best_loss": best, "best_step": self.best_step,
                "bad_evals": self.bad_evals, "has_best": self.best is not None, "last_valid": self.last_valid,
                "baseline_loss": self.baseline_loss}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        best = state["best_loss"]
        self.best_loss = float("inf") if best is None else best
        self.best_step, self.bad_evals = state["best_step"], state["bad_evals"]
        self.last_valid = state.get("last_valid", {})
        self.baseline_loss = state.get("baseline_loss")
        if not state["has_best"]:
            self.best = None

    def extra_tensors(self) -> dict:
        if self.best is None:
            return {}
        return {f"best.{k}": v for k, v in self.best.items()}

    def load_extra_tensors(self, tensors: dict) -> None:
        best = {k[5:]: v.to(self.device) for k, v in tensors.items() if k.startswith("best.")}
        self.best = best or None

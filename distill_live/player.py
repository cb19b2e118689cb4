"""The Player turns parameters into audio, one frame at a time.

It is the heart of both `render` (offline, as fast as possible) and `serve` (the generator thread
feeding the ring buffer): apply the control messages due at this frame, smooth continuous values,
run one prior step and one decoder step, then apply the play/stop fade, gain and any crossfade.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .modelfile import DistillModel
from .params import PREFIX, ParamRegistry
from .prior import Controls, PriorState

PLAY_FADE = 0.05  # seconds: start/stop fade


def registry_for(model: DistillModel) -> ParamRegistry:
    c = model.config.codec
    return ParamRegistry(model.worlds, c.levels, c.codebook_size, len(model.cues))


@dataclass
class Voice:
    """One model and the memory of its prior and decoder."""

    model: DistillModel
    prior_state: PriorState
    decoder_state: object

    @classmethod
    def start(cls, model: DistillModel, seed: int) -> "Voice":
        return cls(model, model.prior.start(seed), model.codec.start(1))

    def step(self, controls: Controls) -> tuple[np.ndarray, torch.Tensor]:
        codes, self.prior_state = self.model.prior.step(self.prior_state, controls)
        audio, self.decoder_state = self.model.codec.decode_step(codes[None], self.decoder_state)
        return audio[0].numpy(), codes


class Player:
    def __init__(self, model: DistillModel, registry: ParamRegistry | None = None, seed: int = 0):
        if model.prior is None:
            raise ValueError("this model has only a codec; train a prior (distill-train --stages prior) to play it")
        self.registry = registry or registry_for(model)
        self.hop = model.config.codec.hop
        self.frame_rate = model.config.codec.frame_rate
        self.frames = 0
        self.voice = Voice.start(model, seed)
        self.fading: tuple[Voice, int, int] | None = None  # old voice, frames left, fade length
        self.smoothed: dict[str, float] = {}
        self.envelope = 0.0  # play/stop fade level
        self.gain = float(self.registry.get("gain"))
        self.last_codes = torch.full((model.config.codec.levels,), -1, dtype=torch.long)
        self.model_requests: list[str] = []  # /model paths for the engine to load off this thread
        self.applied: list[tuple[str, tuple]] = []  # messages applied at the last frame
        self._ramp = np.linspace(0.0, 1.0, self.hop, endpoint=False, dtype=np.float32) + 1.0 / self.hop

    @property
    def model(self) -> DistillModel:
        return self.voice.model

    @property
    def time(self) -> float:
        return self.frames / self.frame_rate

    def _smooth(self, address: str, target: float) -> float:
        tau = self.registry.params[address].smooth
        current = self.smoothed.get(address, target)
        if tau > 0:
            current += (target - current) * (1.0 - math.exp(-1.0 / (tau * self.frame_rate)))
        self.smoothed[address] = current
        return current

    def controls(self) -> Controls:
        r = self.registry
        weights = [self._smooth(f"{PREFIX}/world/{w}", v) for w, v in zip(r.worlds, r.world_weights())]
        targets = r.descriptor_targets()
        descriptors = [None if t is None else self._smooth(f"{PREFIX}/descriptor/{d}", t)
                       for d, t in zip(self.registry.held, targets)]
        return Controls(
            temperature=r.get("temperature"), top_k=r.get("topk"), top_p=r.get("topp"), guidance=r.get("guidance"),
            world_weights=weights if sum(weights) > 1e-6 else None, descriptors=descriptors, levels=r.get("levels"),
            mutate=r.get("mutate"), freeze=bool(r.get("freeze")), loop=r.get("loop"), lock=r.get("lock"),
        )

    def crossfade_to(self, voice: Voice, seconds: float) -> None:
        frames = max(1, round(seconds * self.frame_rate))
        self.fading = (self.voice, frames, frames)
        self.voice = voice

    def _command(self, address: str, args: tuple, controls: Controls) -> None:
        name = address[len(PREFIX) + 1:]
        model = self.voice.model
        if name == "cue":
            index, fade = args
            fresh = Voice(model, model.prior.jump(self.voice.prior_state, model.cues[index], 0, controls),
                          model.codec.start(1))
            self.crossfade_to(fresh, fade)
        elif name == "reset":
            self.crossfade_to(Voice.start(model, self.registry.get("seed")), PLAY_FADE)
        elif name == "seed":
            self.voice.prior_state.generator.manual_seed(int(args[0]))
        elif name == "model":
            self.model_requests.append(args[0])

    @torch.inference_mode()
    def next_frame(self) -> np.ndarray:
        """Produce the next `hop` samples (float32 mono)."""
        self.applied = applied = self.registry.apply_due(self.time)
        controls = self.controls()
        for address, args in applied:
            self._command(address, args, controls)
        self.frames += 1

        start_env = self.envelope
        target = 1.0 if self.registry.get("play") else 0.0
        step = 1.0 / max(1.0, PLAY_FADE * self.frame_rate)
        self.envelope = min(target, start_env + step) if target > start_env else max(target, start_env - step)
        start_gain, self.gain = self.gain, self._smooth(f"{PREFIX}/gain", self.registry.get("gain"))
        if start_env == 0.0 and self.envelope == 0.0:
            return np.zeros(self.hop, dtype=np.float32)  # stopped: no compute at all

        audio, self.last_codes = self.voice.step(controls)
        if self.fading is not None:
            old, left, total = self.fading
            old_audio, _ = old.step(controls)
            mix = (total - left + self._ramp) / total  # 0 -> 1 across the fade
            audio = old_audio * (1.0 - mix) + audio * mix
            self.fading = (old, left - 1, total) if left > 1 else None
        env = start_env + (self.envelope - start_env) * self._ramp
        gain = start_gain + (self.gain - start_gain) * self._ramp
        return (audio * env * gain).astype(np.float32, copy=False)

    def swap_model(self, model: DistillModel, seconds: float = 0.1) -> None:
        """Hot-swap to an already loaded model with a crossfade (call from the generator thread)."""
        if model.prior is None:
            raise ValueError("the new model has no prior")
        self.crossfade_to(Voice.start(model, self.registry.get("seed")), seconds)


def render(model: DistillModel, seconds: float, seed: int = 0,
           messages: list[tuple[float, str, tuple]] = (), registry: ParamRegistry | None = None) -> np.ndarray:
    """Render `seconds` of audio offline. `messages` are (time, address, args), e.g. from a score."""
    registry = registry or registry_for(model)
    registry.submit(f"{PREFIX}/play", [1], at=0.0)
    for at, address, args in messages:
        registry.submit(address, args, at=at)
    player = Player(model, registry, seed)
    frames = math.ceil(seconds * player.frame_rate)
    out = np.concatenate([player.next_frame() for _ in range(frames)]) if frames else np.zeros(0, np.float32)
    return out[: round(seconds * model.config.codec.sample_rate)]

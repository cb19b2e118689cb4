"""What the prior trains on: clips shorter than a sequence are followed by other clips of their world,
and some sequences move to another world midway, with the condition (the world, or only the held
descriptors).

Padded with silence instead, a collection of one-shots taught the prior that silence is never
followed by anything: measured on five sonic-pi-samples folders of drum hits (tiny preset, 1000 codec
+ 600 prior steps), 61-97% of the frames it generated were silent, against 3-12% with this batching.
"""
from __future__ import annotations

import numpy as np
import torch

from distill_live.model.config import preset
from distill_live.model.descriptors import DescriptorStats
from distill_train.data import AudioClip, Dataset
from distill_train.prior_stage import SWITCH_SHARE, PriorStage

LEVELS = 4


def clip_codes(world: int, clip: int, frames: int) -> torch.Tensor:
    """Codes that say where they come from: level 0 = world, level 1 = clip, level 2 = frame index."""
    codes = torch.zeros(frames, LEVELS, dtype=torch.long)
    codes[:, 0], codes[:, 1], codes[:, 2] = world, clip, torch.arange(frames)
    return codes


def test_short_clips_are_followed_by_clips_of_their_own_world_or_any_when_alone(tmp_path):
    config = preset("tiny")
    config.prior.worlds = 3
    # (world, clip) -> frames; world 2 has a single clip, as each file is its own world in a flat folder
    lengths = {(0, 0): 5, (0, 1): 7, (0, 2): 6, (1, 3): 4, (1, 4): 9, (2, 5): 6}
    # each world's clips have their own descriptors, so a row shows which world its descriptors say
    clips = [AudioClip(f"{w}/{c}.wav", w, np.zeros(1, np.float32), np.full((n, 3), 0.2 + 0.3 * w, np.float32), "train")
             for (w, c), n in lengths.items()]
    dataset = Dataset(str(tmp_path), 16000, 320, ["a", "b", "c"], clips, [], DescriptorStats.fit([np.zeros((4, 3))]))
    codes = [clip_codes(w, c, n) for (w, c), n in lengths.items()]
    stage = PriorStage(config, None, codes, [c.descriptors for c in clips], dataset, batch_size=16, seq_frames=24, seed=0,
                       device=torch.device("cpu"), run_dir=tmp_path)

    followed, lonely, switched, unnamed = set(), 0, 0, 0
    for _ in range(8):
        rows, weights, descriptors, helds, _ = stage.batch()
        for row, weight, desc, held in zip(rows, weights, descriptors, helds):
            label = weight.argmax(-1)  # the world asked for at each frame (3 = none)
            assert (weight.sum(-1) == 1).all() and (weight.max(-1).values == 1).all()
            moves = [t for t in range(1, len(row)) if label[t] != label[t - 1]]
            assert len(moves) <= 1, label.tolist()
            if moves:  # the performer moved to another world: the sound moves with the condition, there
                switched += 1
                at = moves[0]
                assert int(row[at, 0]) != int(row[at - 1, 0]), (row.tolist(), label.tolist())
                for lo, hi in ((0, at), (at, len(row))):
                    if label[lo] != 3:
                        assert (row[lo:hi, 0] == label[lo]).all(), (row.tolist(), label.tolist())
                continue
            world = int(row[0, 0])
            sound_moves = [t for t in range(1, len(row)) if row[t, 0] != row[t - 1, 0]]
            if world != 2 and sound_moves:  # a move with no world named: held descriptors say where to
                unnamed += 1
                at = sound_moves[0]
                assert len(sound_moves) == 1 and (label == 3).all(), (row.tolist(), label.tolist())
                assert (held == 1).all(0).any() and (held == held[0]).all(), held.tolist()
                for lo, hi in ((0, at), (at, len(row))):  # the descriptors are those of the sound, frame by frame
                    assert (abs(desc[lo:hi] - (0.2 + 0.3 * int(row[lo, 0]))) < 0.15).all(), desc.tolist()
                continue
            if world == 2:  # the lonely clip is followed by any clip, and the example is unconditioned
                lonely += 1
                assert (label == 3).all() and (row[6:, 0] != 2).any(), (row.tolist(), weight)
            else:
                assert (row[:, 0] == world).all(), "a clip of another world followed"
            for t in range(1, len(row)):
                clip, frame = int(row[t, 1]), int(row[t, 2])
                previous_clip, previous_frame = int(row[t - 1, 1]), int(row[t - 1, 2])
                if frame == previous_frame + 1 and clip == previous_clip:
                    continue  # the same clip goes on
                # a new clip starts only where the last one ended, and from its first frame
                previous_world = int(row[t - 1, 0])
                assert frame == 0 and previous_frame == lengths[(previous_world, previous_clip)] - 1, row.tolist()
                followed.add((previous_clip, clip))
    assert len(followed) >= 5 and lonely and switched and unnamed  # several different successions, not one clip looped


def test_a_share_of_examples_is_given_nothing_for_guidance_to_subtract(tmp_path):
    """Classifier-free guidance subtracts the prior's prediction given no world and no descriptor;
    from the independent dropouts alone that case was 0.5% of the examples, too rare to learn."""
    config = preset("tiny")
    config.prior.worlds = 2
    lengths = {(0, 0): 30, (0, 1): 30, (1, 2): 30, (1, 3): 30}
    clips = [AudioClip(f"{w}/{c}.wav", w, np.zeros(1, np.float32), np.full((n, 3), 0.5, np.float32), "train")
             for (w, c), n in lengths.items()]
    dataset = Dataset(str(tmp_path), 16000, 320, ["a", "b"], clips, [], DescriptorStats.fit([np.zeros((4, 3))]))
    codes = [clip_codes(w, c, n) for (w, c), n in lengths.items()]
    stage = PriorStage(config, None, codes, [c.descriptors for c in clips], dataset, batch_size=64, seq_frames=16, seed=0,
                       device=torch.device("cpu"), run_dir=tmp_path)
    rows = nothing = 0
    for _ in range(40):
        _, weights, _, held, _ = stage.batch()
        rows += len(weights)
        nothing += int(((weights[:, :, -1] == 1).all(1) & (held == 0).all(2).all(1)).sum())
    share = nothing / rows
    p = config.prior
    expected = p.unconditioned + (1 - p.unconditioned) * (1 - SWITCH_SHARE) * p.world_dropout * p.descriptor_dropout ** 3
    assert expected > 0.1
    assert abs(share - expected) < 0.03, (share, expected)

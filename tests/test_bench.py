"""`distill-live bench` through the real CLI: the figures it prints are present, positive and consistent."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from distill_live.model.modelfile import random_model, save_model

pytestmark = pytest.mark.slow  # runs distill-live bench

KEYS = {"rtf", "paced", "wall_s", "frame_ms_p50", "frame_ms_p99", "frame_ms_max", "frame_period_ms", "frame_cpu_ms_p50", "prior_ms_p50", "decoder_ms_p50",
        "threads", "frames", "sample_rate", "hop", "model", "prior"}


def live(*args):
    return subprocess.run([sys.executable, "-m", "distill_live", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def check_figures(out: dict, threads: int, frames: int = 50) -> None:
    assert KEYS <= set(out)
    assert out["threads"] == threads
    assert out["frame_period_ms"] == pytest.approx(20.0)  # every preset runs 20 ms frames
    assert out["frames"] == frames  # 50 frames/s
    for key in ("rtf", "frame_ms_p50", "frame_ms_p99", "frame_ms_max", "frame_cpu_ms_p50", "prior_ms_p50",
                "decoder_ms_p50"):
        assert out[key] > 0, key
    assert out["frame_ms_p50"] <= out["frame_ms_p99"] <= out["frame_ms_max"]
    assert out["rtf"] == pytest.approx(out["frame_period_ms"] / out["frame_ms_p50"], rel=0.01)
    # the frame is the prior step plus the decoder step plus a little bookkeeping
    assert out["prior_ms_p50"] + out["decoder_ms_p50"] <= 1.5 * out["frame_ms_p50"]


def test_bench_preset_json():
    r = live("bench", "preset:tiny", "--seconds", 1, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == "preset:tiny" and out["sample_rate"] == 16000
    check_figures(out, threads=1)


def test_bench_paced_makes_its_frames_in_real_time():
    """`--paced` plays as serve does: its second of frames takes at least a second of wall time (flat
    out, the tiny model makes it in a small part of one), and it says so."""
    r = live("bench", "preset:tiny", "--seconds", 1, "--paced", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["paced"] is True
    check_figures(out, threads=1)
    assert out["wall_s"] >= 0.99  # 50 frames, each waiting out its 20 ms


def test_bench_model_file_table_and_json(tmp_path):
    path = tmp_path / "m.distill"
    save_model(path, random_model("tiny"))
    # two threads on a busy two-core machine can take 100 ms a frame (every op waits for both threads)
    r = live("bench", path, "--seconds", 0.2, "--threads", 2, "--set", "world/world0=1", "--set", "guidance=2",
             "--json")
    assert r.returncode == 0, r.stderr
    check_figures(json.loads(r.stdout), threads=2, frames=10)
    r = live("bench", path, "--seconds", 1)
    assert r.returncode == 0, r.stderr
    assert "rtf" in r.stdout and "p99" in r.stdout


def test_bench_times_the_corpus_decoder_in_place_of_the_neural_one(tmp_path):
    path = tmp_path / "corpus.distill"
    save_model(path, random_model("tiny", cues=[200, 300], recordings=True))
    r = live("bench", path, "--seconds", 0.5, "--set", "corpus/mix=1", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["decoder_ms_p50"] is None  # at mix 1 the neural decoder does not run
    assert 0 < out["corpus_ms_p50"] <= out["corpus_ms_p99"]
    assert out["prior_ms_p50"] + out["corpus_ms_p50"] <= 1.5 * out["frame_ms_p50"]


@pytest.mark.parametrize("args, words", [
    (["preset:huge"], "unknown preset"),
    (["preset:tiny", "--seconds", "0"], "--seconds"),
    (["missing.distill"], "does not exist"),
])
def test_bench_errors_are_one_sentence(args, words, tmp_path):
    r = subprocess.run([sys.executable, "-m", "distill_live", "bench", *args], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_paced_chunks_come_a_card_block_at_a_time(monkeypatch):
    """`--paced` makes the chunks as serve does for a 48 kHz card taking 256-sample blocks: a block's worth
    back to back, then a wait for the next block (in looks of at most serve's IDLE), and a frame's time
    is the sum of its chunks' (what serve -v counts), not the wait."""
    from distill_live.commands import bench
    from distill_live.control.params import PREFIX, ParamRegistry
    from distill_live.live.engine import IDLE
    from distill_live.live.player import Player

    model = random_model("tiny")
    registry = ParamRegistry.for_model(model)
    registry.submit(f"{PREFIX}/play", [1], at=0.0)
    player = Player(model, registry, 0)
    now = 0.0  # a clock that moves only when something waits (as it asks) or a chunk is made (0.1 ms)
    waits, made = [], []  # (chunks made before it, seconds) per wait; the time each chunk began
    real_chunk = player.next_chunk

    def sleep(seconds):
        nonlocal now
        waits.append((len(made), seconds))
        now += seconds

    def next_chunk():
        nonlocal now
        made.append(now)
        now += 1e-4
        return real_chunk()

    monkeypatch.setattr(player, "next_chunk", next_chunk)
    frame = bench.card_paced(player, lambda: now, lambda: now, sleep)
    spent = [frame() for _ in range(15)]  # 0.3 s: 56 card blocks of 5.33 ms
    chunks = player.hop // player.chunk
    assert len(made) == 15 * chunks and spent == [pytest.approx((chunks * 1e-4, chunks * 1e-4))] * 15
    assert all(0 < s <= IDLE for _, s in waits)
    woke = sorted({n for n, _ in waits})  # the chunks made before each wait for a block
    per_block = 256 / 48000 * player.sample_rate / player.chunk  # 4.27 chunks of 20 samples at 16 kHz
    assert len(woke) == pytest.approx(15 * chunks / per_block, abs=1)
    assert {b - a for a, b in zip(woke, woke[1:])} == {4, 5}
    blocks = [made[n] for n in woke]  # each block's first chunk, made when the card's block came
    assert [round(b - a, 6) for a, b in zip(blocks, blocks[1:])] == pytest.approx([256 / 48000] * (len(blocks) - 1),
                                                                                  abs=2e-4)

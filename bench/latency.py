"""Action-to-sound latency of `distill-live serve`, end to end through a real JACK server, by kind of action.

For each JACK period asked (default 64, 128 and 256 frames at 48 kHz) and each load (idle, and busy: a
second process keeping one core busy, as a laptop on stage is never idle), it starts a private jackd
(dummy driver), runs `distill-live serve MODEL --stopped --buffer-ms 2 -v` into it with JACK MIDI, and
records serve's output with a JACK client of its own, sample for sample with JACK frame times. Each trial
sends one action at a known JACK frame time and finds when the output answered:

* trigger: an OSC bundle `/distill/cue i` + `/distill/play 1` to a stopped engine (what a pad sends):
  the first sample that is not silence. A cue jump while playing takes the same path (it replaces
  what is queued, tests/test_serve.py); from silence its onset can be seen to the sample.
* note: a MIDI note-on from a JACK MIDI port into serve's MIDI input (the generic map: a key jumps to
  a cue and plays): the first sample that is not silence. The note-off stops it.
* gain: `/distill/gain 1` to an engine playing at gain 0: the first sample that is not silence.
* world: `/distill/mix` from the model's first world alone to its last alone, and back, the engine
  playing: the time until the output's log spectrum (10 ms windows, smoothed over 20 ms) has moved
  halfway from the one world's towards the other's, to stay for 40 ms (each measured over seconds of
  steady playing first). The prior reads world weights as they are, from the next chunk it makes (a
  control that steers the prior remakes the frame playing: live/player.py).
* steer: when a world change, a loudness change, and a change of the levels decoded (all of them to one) is
  first heard: the same sound played from silence (a reset with one of five seeds) with and without the
  change, and the first sample the change alters by more than -80 dB (`missed`: not within 0.1 s). The
  halfway times above are mostly how the sound itself moves; this is when it starts to. The prior may
  sample the same codes for a frame or more after a world or loudness change; one level instead of all
  always sounds different at once, so `levels` is the engine's part alone. Live, a change's onset skips
  what was queued for the card (as a trigger does), crossfading to the same sound further on: where the
  sound after that crossfade is the unchanged start moved ahead, the skip is not counted as the change,
  which is first heard where the sound differs from the unchanged start moved as far (`change_heard`).
  A trial with a JACK xrun or an underrun is void and made again (`void_by` says which); a change whose
  start cannot be played twice without one (a machine that stops too often) is `not_measured`.
* descriptor: `/distill/descriptor/loudness` held at 0.1, then at 0.9, and back: the time until the level
  (dB, the same windows) has moved halfway. The prior reads a held descriptor as it is sent, as it reads
  the worlds. World and descriptor changes are made at the engine's default guidance (2), or `--guidance`.

Per action: p50, p90, p99, max and jitter (p99 - p50) in ms, as the JACK graph sees it (add the card's
own playback latency, one period on the dummy driver, for the speaker); per run the underruns serve
counted, the xruns JACK reported and which client jackd blamed for each (`xruns_by_client`: serve's card is
`PortAudio`, its MIDI input `distill`, the bench's own recorder `latency-probe`), serve's margin (`-v`) at
the end, and how often the machine itself stopped meanwhile (`machine_stalls`, tests/stalls.py: a real-time
thread that only sleeps 0.5 ms at a time, woken over 2 and over 5 ms late, and its worst), with the seconds
into the run of each underrun (`underrun_times_s`, to the second serve's `-v` line gives) and of each stop over
5 ms (`machine_stall_times_s`, with its ms). Trigger, note and gain also give their figures over the trials the
machine did not stop during, nor in the 5 ms before (`machine_went_on`, with how many were `left_out`): what no
program on the machine could have avoided, told apart from what serve does. One JSON object on stdout.
A send is timed by JACK's estimate of the current frame: a run with xruns (a machine too busy for
non-real-time jackd at that period) gives figures that mean nothing, down to negative ones.
`--realtime` runs jackd with -R and serve with --realtime, as a performer would (see the README).
`--model-only` times the world, steer and descriptor changes without JACK or serve: the same trials rendered
offline (each change read at the next chunk, as serve reads it), so what is the model's own motion and
what is the engine's is told apart; it also gives how far past the other state the output swings
(`overshoot`: 1 is exactly the other state's sound, the median over trials of each trial's furthest), and
the world action's yardstick (`recorded`): the collection's own passages of the other world, as the codec
plays them, judged the same way from their first sample, as if an instrument switched to them at once.

    .venv/bin/python bench/latency.py [MODEL] [--periods 64 128 256] [--loads idle busy] [--trials 200] [--realtime]
                                      [--actions trigger note gain world steer descriptor]
                                      [--changes world descriptor levels]
    .venv/bin/python bench/latency.py --quick     # 5 trials of each at 128 frames, idle: does it work?
    .venv/bin/python bench/latency.py --model-only [--trials 200] [--seeds 0 1 2] [--guidance 2]

The whole matrix at 200 trials takes about 45 minutes, and the steer action 25 more a run (each trial waits
1.6 s for serve's `-v` to count it); run it on a machine doing nothing else.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from jackaudio import jack_env, start_jackd, stop_process  # noqa: E402  (the tests' private jackd)
from oscpeers import free_port  # noqa: E402
from stalls import MachineStalls  # noqa: E402

from distill_live.live.player import SPLICE  # noqa: E402
from distill_live.model.prior import Controls  # noqa: E402

RATE = 48000
WINDOW = 480  # samples: the 10 ms windows the world and descriptor actions are judged by
HOLD = 40  # ms a world or descriptor change must stay past halfway to count
ACTIONS = ("trigger", "note", "gain", "world", "steer", "descriptor")
CHANGES = ("world", "descriptor", "levels")  # what the steer action changes (`steer_changes`)
STOPPED_BEFORE = 0.005  # s: a stop this long before a trial still counts as during it (`stopped_during`)
SILENCE = 1e-6  # below this a sample counts as silence (gain 0 and a stopped engine are exactly 0)
HEARD = 1e-4  # a difference smaller than this (-80 dB below full scale) is not heard
LOUD = 1e-4  # where a sound from silence is lined up with another take of it (the steer action)
SLACK = 32  # samples either way a take may sit from where LOUD lined it up
SWITCH_INTERVAL = 0.0002  # s a thread holding Python's lock keeps it while another waits (Python's default: 5 ms)
TAKES = 10  # tries at playing a steer trial's start twice without a JACK xrun or an underrun of serve's
GUIDANCE = Controls.guidance  # the world and descriptor changes are made at the engine's own, unless --guidance
SETTLE = 1.6  # s of playing after a steer trial, before silence: serve's once-a-second `-v` line has counted it
SKIP_FADE = round(SPLICE * RATE)  # the card's crossfade where a steering onset skips what was queued (engine.py)
MOST_SKIPPED = RATE // 20  # more than a skip can drop: one card block and what is kept


class NotMeasured(Exception):
    """A steer change could not be timed on this machine now (it stops too often): its figures are left out."""


class Probe:
    """A JACK client recording its input into a circular buffer, with the JACK frame time of every
    sample, and noting the first loud sample once armed (in its process callback: to the sample)."""

    def __init__(self, server: str, seconds: float = 30.0):
        import jack

        self.client = jack.Client("latency-probe", servername=server, no_start_server=True)
        self.port = self.client.inports.register("in")
        self.buffer = np.zeros(int(seconds * RATE), np.float32)
        self.recorded = 0  # samples recorded so far
        self.first_frame: int | None = None  # JACK frame time of sample 0
        self.armed = False
        self.onset: int | None = None  # JACK frame time of the first loud sample since `arm`
        self.quiet = 0  # samples of silence up to now
        self.xruns = 0
        self.client.set_process_callback(self._process)
        self.client.set_xrun_callback(self._xrun)
        self.client.activate()

    def _process(self, frames: int) -> None:
        x = self.port.get_array()
        # the JACK frame time of sample 0, anchored at every block: a cycle JACK skipped (an xrun) would
        # otherwise leave the recording behind the clock for good, and every later trial waiting on it
        self.first_frame = self.client.last_frame_time - self.recorded
        at = self.recorded % len(self.buffer)
        first = min(frames, len(self.buffer) - at)
        self.buffer[at:at + first] = x[:first]
        self.buffer[:frames - first] = x[first:]
        self.recorded += frames
        hits = np.flatnonzero(np.abs(x) > SILENCE)
        self.quiet = frames - 1 - int(hits[-1]) if hits.size else self.quiet + frames
        if self.armed and self.onset is None and hits.size:
            self.onset = self.client.last_frame_time + int(hits[0])

    def _xrun(self, delayed_usecs: float) -> None:
        self.xruns += 1

    def state(self) -> str:
        """What the probe heard over the last 0.1 s, to tell a stuck sound from a probe JACK stopped calling."""
        before = self.recorded
        time.sleep(0.1)
        n = min(self.recorded - before, len(self.buffer))
        last = self.buffer[(self.recorded - n + np.arange(n)) % len(self.buffer)]
        return (f" (in the last 0.1 s JACK gave the probe {n} samples, peak {np.abs(last).max(initial=0.0):.2g}; "
                f"{self.xruns} xruns so far)")

    def arm(self) -> None:
        self.onset = None
        self.armed = True

    def since(self, frame_time: int, n: int, timeout: float = 10.0) -> np.ndarray:
        """The `n` samples recorded from JACK frame time `frame_time` on (waits until they are)."""
        start = frame_time - self.first_frame
        wait(lambda: self.recorded >= start + n, timeout + n / RATE, "the recording")
        if self.recorded - start > len(self.buffer):
            raise SystemExit("latency: the recording ring overflowed (the bench fell behind)")
        return self.buffer[(start + np.arange(n)) % len(self.buffer)]

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


def wait(predicate, timeout: float, what: str, why=lambda: ""):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"latency: timed out waiting for {what}{why()}")
        time.sleep(0.001)


def windows(x: np.ndarray) -> np.ndarray:
    """10 ms windows every 1 ms: [windows, WINDOW] (times are their centres)."""
    hop = RATE // 1000
    starts = np.arange(0, len(x) - WINDOW + 1, hop)
    return x[starts[:, None] + np.arange(WINDOW)]


def log_spectrum(x: np.ndarray) -> np.ndarray:
    return np.log(np.abs(np.fft.rfft(windows(x) * np.hanning(WINDOW), axis=1)) + 1e-6)


def level_db(x: np.ndarray) -> np.ndarray:
    return 10 * np.log10(np.mean(windows(x) ** 2, axis=1) + 1e-12)[:, None]


def progress(feature: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """How far a feature track [windows, dims] has gone from `start` towards `end` (0: there, 1: at `end`,
    projected on the line between them), smoothed over 20 ms."""
    d = end - start
    return np.convolve((feature - start) @ d / (d @ d), np.ones(20) / 20, mode="same")


def halfway_ms(feature: np.ndarray, start: np.ndarray, end: np.ndarray) -> float | None:
    """When a feature track [windows, dims] (one window per ms, the first centred 5 ms after the send)
    has moved halfway from `start` towards `end` to stay: smoothed over 20 ms, the first time from
    which it stays past halfway for `HOLD` ms (generated sound wanders: one window can pass halfway
    by chance). None if it never does."""
    x = progress(feature, start, end)
    past = np.lib.stride_tricks.sliding_window_view(x >= 0.5, HOLD).all(axis=1)
    hits = np.flatnonzero(past)
    return None if hits.size == 0 else float(hits[0] + WINDOW / 2 * 1000 / RATE)


def first_change(x: np.ndarray, same: np.ndarray) -> int | None:
    """The first sample where `x` differs from `same` (what it would have been) by more than `HEARD`, or None."""
    n = min(len(x), len(same))
    hits = np.flatnonzero(np.abs(x[:n] - same[:n]) > HEARD)
    return int(hits[0]) if hits.size else None


def change_heard(x: np.ndarray, same: np.ndarray) -> int | None:
    """The first sample where `x`, a take with a steering change, differs from `same`, the take without it, because
    of the change. Live, a change's onset has the card skip what was queued and crossfade over `SKIP_FADE` to the
    chunks that play it (engine.py, `_preempt`); where the prior kept its codes, those are the unchanged sound
    further on, and `x` after the crossfade is `same` moved ahead: then the change is first heard where `x`
    differs from `same` moved as far (None: not within what `same` holds), not at the skip."""
    k = first_change(x, same)
    if k is None:
        return None
    after, n = k + SKIP_FADE, RATE // 500  # 2 ms after the crossfade tell whether it is the same sound moved
    window = x[after:after + n]
    for moved in range(1, MOST_SKIPPED):
        ahead = same[after + moved:after + moved + n]
        if len(window) < n or len(ahead) < n:
            break
        if np.abs(window - ahead).max() <= HEARD:
            later = first_change(x[after:], same[after + moved:])
            return None if later is None else after + later
    return k


def lined_up(x: np.ndarray) -> int | None:
    """Where a sound recorded from silence first reaches `LOUD` (None: never), roughly lining up two takes of it.
    (Its first few samples above `SILENCE` are a resampler's faint ringing, ten times fainter than `LOUD`, and
    where the first of them falls can move from one take to the next.)"""
    hits = np.flatnonzero(np.abs(x) > LOUD)
    return int(hits[0]) if hits.size else None


def xruns_by_client(jackd_log: str) -> dict[str, int]:
    """The xruns jackd blamed on each client, most first (its log: "client = NAME was not finished"): serve's are
    `PortAudio` (its card) and `distill` (its MIDI input), the bench's own `latency-probe` and `latency-keys`."""
    names = re.findall(r"XRun: client = (\S+) was not finished", jackd_log)
    return dict(collections.Counter(names).most_common())


def underrun_times(lines: list[tuple[float, str]], start: float) -> list[float]:
    """Seconds after `start` at which serve's `-v` lines (time.monotonic() read, line), once a second, first
    showed more underruns than before (the first 20): to set beside the machine's stops."""
    out, last = [], 0
    for t, line in lines:
        m = re.search(r"underruns (\d+)", line)
        if m and int(m.group(1)) > last:
            out.append(round(t - start, 1))
            last = int(m.group(1))
    return out[:20]


def shift(x: np.ndarray, same: np.ndarray) -> int:
    """How many samples (within ±`SLACK`) take `x`, recorded from `SLACK` samples before its `lined_up` point,
    sits from `same`, lined up at its own: the shift that makes them agree best 5-25 ms in, before any switch.
    (`lined_up` can be a sample or more off where a sound creeps past `LOUD`.)"""
    window = slice(RATE // 200, RATE // 40)
    errors = [np.abs(x[SLACK + d:][window] - same[window]).max() for d in range(-SLACK, SLACK + 1)]
    return int(np.argmin(errors)) - SLACK


def judged(trials: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict:
    """`summary` of `halfway_ms` over trials of (feature track, start, end), with `overshoot`: how far past `end`
    the output swings (1 is exactly `end`), the median over trials of each trial's furthest."""
    times = [halfway_ms(*trial) for trial in trials]
    found = [ms for ms in times if ms is not None]
    swings = [float(np.abs(progress(*trial)).max()) for trial in trials]
    return {**summary(found, len(times) - len(found)), "overshoot": round(float(np.median(swings)), 2)}


def stopped_during(at: float, ms: float, stalls: list[tuple[float, float]]) -> bool:
    """Whether the machine stopped (tests/stalls.py: a real-time thread woken over 2 ms late, `stalls` as
    (time.monotonic() it went to sleep, ms late)) during a trial sent at `at` (time.monotonic()) and heard `ms`
    later, or in the `STOPPED_BEFORE` before it (JACK then runs the cycles it missed back to back)."""
    end = at + ms / 1000.0
    return any(t0 < end and t0 + (0.5 + late) / 1000.0 > at - STOPPED_BEFORE for t0, late in stalls)


def timed(at: float, messages: list[tuple[str, object]]) -> list[tuple[float, str, list]]:
    """(address, value) messages as `render` takes them: (time, address, args)."""
    return [(at, address, value if isinstance(value, list) else [value]) for address, value in messages]


def summary(values: list[float], missed: int = 0) -> dict:
    v = np.array(values) if values else np.array([np.nan])
    p50, p90, p99 = (float(p) for p in np.percentile(v, [50, 90, 99]))
    out = {"trials": len(values), "p50": round(p50, 2), "p90": round(p90, 2), "p99": round(p99, 2),
           "max": round(float(v.max()), 2), "jitter": round(p99 - p50, 2)}
    if missed:
        out["missed"] = missed  # trials where the output never moved halfway in the time looked at
    return out


def steering_states(worlds: list[str], guidance: float = GUIDANCE) -> dict[str, tuple[list, list, object]]:
    """What the world and descriptor actions switch between, the controls set first (`guidance` among them),
    and how each is judged."""
    one = [[1.0 if k == j else 0.0 for k in range(len(worlds))] for j in (0, len(worlds) - 1)]
    guided = ("/distill/guidance", guidance)
    return {"world": ([[("/distill/mix", one[0])], [("/distill/mix", one[1])]], [guided], log_spectrum),
            "descriptor": ([[("/distill/descriptor/loudness", 0.1)], [("/distill/descriptor/loudness", 0.9)]],
                           [("/distill/mix", [0.0] * len(worlds)), guided], level_db)}


def steer_changes(worlds: list[str], levels: int, guidance: float = GUIDANCE) -> dict[str, tuple[list, list]]:
    """What the steer action switches between, by name, and the controls set first: the world and the
    descriptor of `steering_states`, and the levels decoded, from all of them to one. The prior may sample
    the same codes for a frame or more after a world or a loudness change, but one level instead of all of
    them always sounds different from the frame that reads it: its figure is the engine's part alone."""
    out = {action: (states, first) for action, (states, first, _) in steering_states(worlds, guidance).items()}
    out["levels"] = ([[("/distill/levels", levels)], [("/distill/levels", 1)]], [])
    return out


def recorded_world(model, trials: int, seed: int) -> dict | None:
    """The world action's yardstick: `halfway_ms` on the collection's own passages of the two worlds (its cues as
    the codec plays them), as if an instrument switched to the other world's recordings at the very sample of the
    change. Each trial is 0.5 s from a random point of a random passage, judged against each world's mean over all
    its passages. How long the recordings themselves take is the part of the figure no engine can remove.
    None when the model does not say which world each passage is from."""
    import soxr
    import torch

    ends = (0, len(model.worlds) - 1)
    sounds = {}
    for w in ends:
        with torch.no_grad():
            sounds[w] = [soxr.resample(model.codec.decode(cue.long()[None])[0].numpy(), model.config.codec.sample_rate,
                                       RATE) for cue, world in zip(model.cues, model.cue_worlds) if world == w]
        sounds[w] = [x for x in sounds[w] if len(x) > RATE // 2]
    if len(model.worlds) < 2 or not all(sounds.values()):
        return None
    refs = {w: np.concatenate([log_spectrum(x) for x in sounds[w]]).mean(axis=0) for w in ends}
    rng, tracks = np.random.default_rng(seed), []
    for i in range(trials):
        before, after = ends[i % 2], ends[(i + 1) % 2]
        x = sounds[after][rng.integers(len(sounds[after]))]
        at = rng.integers(len(x) - RATE // 2)
        tracks.append((log_spectrum(x[at:at + RATE // 2]), refs[before], refs[after]))
    return judged(tracks)


def first_heard_offline(model, action: str, trials: int, seed: int, guidance: float = GUIDANCE) -> dict:
    """The steer action rendered offline: each trial renders the same 0.3 s twice from one seed, in the action's
    first state, the second time switching to its other state 0.1-0.2 s in; the first sample that differs is when
    the change is first heard. What it waits for here is the chunk that reads it and the frame that takes it up,
    and then the frames the prior samples the same codes all the same."""
    from distill_live.live.player import render

    states, first = steer_changes(model.worlds, model.config.codec.levels, guidance)[action]
    rate, rng, found, missed = model.config.codec.sample_rate, np.random.default_rng(seed), [], 0
    for i in range(trials):
        at = 0.1 + rng.uniform(0, 0.1)
        before = timed(0.0, first + states[0])
        same = render(model, at + 0.2, seed + i, before)
        k = first_change(render(model, at + 0.2, seed + i, before + timed(at, states[1])), same)
        if k is None:
            missed += 1
        else:
            found.append(1000.0 * (k / rate - at))
    return summary(found, missed)


def model_only(model_path: str, actions, trials: int, seed: int, settle: float = 3.0, changes=CHANGES,
               guidance: float = GUIDANCE) -> dict:
    """The world and descriptor trials of `Run.halfway`, rendered offline: `settle` seconds in each state for its
    reference, then `trials` switches 0.8-0.82 s apart (as a live run sends them), each judged over the 0.5 s
    after it with `halfway_ms` on the output resampled to 48 kHz. No card, no margin, no JACK: what is left
    is the frame the change waits for and the model's own motion."""
    import soxr

    from distill_live.live.player import render
    from distill_live.model.modelfile import load_model

    model = load_model(model_path)
    rng, out = np.random.default_rng(seed), {}
    for action, (states, first, feature) in steering_states(model.worlds, guidance).items():
        if action not in actions:
            continue
        times = [0.0, settle] + list(2 * settle + np.cumsum(0.8 + rng.uniform(0, 0.02, trials)) - 0.8)
        messages = timed(0.0, first) + [m for i, t in enumerate(times) for m in timed(t, states[i % 2])]
        x = soxr.resample(render(model, times[-1] + 0.6, seed, messages), model.config.codec.sample_rate, RATE)
        refs = [feature(x[int((t + 1.0) * RATE):int((t + settle) * RATE)]).mean(axis=0) for t in times[:2]]
        out[action] = judged([(feature(x[int(t * RATE):int((t + 0.5) * RATE)]), refs[(i + 1) % 2], refs[i % 2])
                              for i, t in enumerate(times[2:])])
        if action == "world":
            out["world"]["recorded"] = recorded_world(model, trials, seed)
    if "steer" in actions:
        out["steer"] = {action: first_heard_offline(model, action, trials, seed, guidance)
                        for action in CHANGES if action in changes}
    return out


class Run:
    """One jackd at one period, one serve, the probe and a MIDI keyboard: the trials of every action."""

    def __init__(self, model: str, period: int, busy: bool, trials: int, settle: float, buffer_ms: float, log,
                 realtime: bool = False, guidance: float = GUIDANCE):
        from distill_live.model.modelfile import load_model

        meta = load_model(model)
        self.worlds, self.cues, self.levels = meta.worlds, len(meta.cues), meta.config.codec.levels
        self.model, self.period, self.busy, self.trials = model, period, busy, trials
        self.settle, self.buffer_ms, self.log, self.realtime = settle, buffer_ms, log, realtime
        self.guidance = guidance
        self.trials_at: dict[str, list[tuple[float, float]]] = {}  # action: (time.monotonic() sent, ms) a trial

    def __enter__(self) -> "Run":
        import mido
        from pythonosc.udp_client import SimpleUDPClient

        self.name = f"distill-latency-{os.getpid()}-{self.period}"
        self.env = jack_env(self.name)
        os.environ.update(JACK_DEFAULT_SERVER=self.name, JACK_NO_START_SERVER="1")  # rtmidi reads it at open
        self.jackd_log = Path(tempfile.mkdtemp(prefix="distill-latency-")) / "jackd.log"
        self.jackd = start_jackd(self.name, self.period, RATE, log=self.jackd_log, realtime=self.realtime)
        self.burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if self.busy else None
        self.stalls = MachineStalls()
        port = free_port()
        cmd = [sys.executable, "-m", "distill_live", "serve", self.model, "--stopped", "--osc-port", str(port),
               "--no-oscquery", "--midi-api", "jack", "--channels", "1", "--buffer-ms", str(self.buffer_ms), "-v"]
        cmd += ["--realtime"] if self.realtime else []
        self.serve = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
        self.started = time.monotonic()
        self.err: list[str] = []
        self.err_at: list[float] = []  # when each line of `err` was read (time.monotonic())
        threading.Thread(target=self._read_err, daemon=True).start()
        # the keyboard before the probe: rtmidi opens its JACK client holding Python's lock, and with jackd -R
        # the server then waits for the probe's process callback, which waits for that lock (it hung for good)
        self.keys = mido.Backend("mido.backends.rtmidi/UNIX_JACK").open_output("out", client_name="latency-keys")
        self.probe = Probe(self.name)
        c = self.probe.client
        wait(lambda: c.get_ports("PortAudio.*", is_output=True, is_audio=True), 120, "serve's JACK port")
        c.connect(c.get_ports("PortAudio.*", is_output=True, is_audio=True)[0].name, self.probe.port.name)
        wait(lambda: c.get_ports("distill.*", is_input=True, is_midi=True), 30, "serve's MIDI input")
        c.connect("latency-keys:out", c.get_ports("distill.*", is_input=True, is_midi=True)[0].name)
        self.osc = SimpleUDPClient("127.0.0.1", port)
        time.sleep(1.0)
        return self

    def __exit__(self, *exc) -> None:
        for close in (self.probe.close, lambda: self.keys.close()):  # the probe first (see __enter__)
            try:
                close()
            except Exception:
                pass
        if self.serve.poll() is None:
            self.serve.kill()
        if self.burner is not None:
            self.burner.kill()
        self.stalls.kill()
        stop_process(self.jackd)
        shutil.rmtree(self.jackd_log.parent, ignore_errors=True)

    def send(self, *messages: tuple[str, object]) -> None:
        from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
        from pythonosc.osc_message_builder import OscMessageBuilder

        if len(messages) == 1:
            self.osc.send_message(*messages[0])
            return
        bundle = OscBundleBuilder(IMMEDIATELY)
        for address, value in messages:
            m = OscMessageBuilder(address)
            for v in (value if isinstance(value, list) else [value]):
                m.add_arg(v)
            bundle.add_content(m.build())
        self.osc.send(bundle.build())

    # -- the actions ---------------------------------------------------------------------------

    def onsets(self, action: str, start, stop) -> list[float]:
        """ms from `start(i)` to the first sound, from silence, `trials` times; `stop(i)` silences again. Each
        trial is kept in `trials_at[action]` with when it was sent, to tell afterwards which the machine stopped
        during."""
        out, sent_at, rng = [], [], np.random.default_rng(self.period)
        for i in range(self.trials):
            wait(lambda: self.probe.quiet > 0.15 * RATE, 10, "silence", self.probe.state)
            time.sleep(rng.uniform(0, 0.02))  # land anywhere in a frame and a period
            self.probe.arm()
            sent = self.probe.client.frame_time
            sent_at.append(time.monotonic())
            start(i)
            wait(lambda: self.probe.onset is not None, 5, "the sound")
            out.append(1000.0 * (self.probe.onset - sent) / RATE)
            stop(i)
        # the last stop arrived (MIDI's comes late)
        wait(lambda: self.probe.quiet > 0.15 * RATE, 10, "silence", self.probe.state)
        if self.trials <= 10:
            self.log(f"  each: {[round(x, 2) for x in out]}")
        self.trials_at[action] = list(zip(sent_at, out))
        return out

    def halfway(self, states: list[list[tuple[str, object]]], feature) -> tuple[list[float], int]:
        """ms from switching between two states to the output moving halfway, `trials` times (alternating)."""
        refs = []
        for state in states:  # each state's own sound, over `settle` seconds of steady playing
            self.send(*state)
            time.sleep(1.0)
            sent = self.probe.client.frame_time
            refs.append(feature(self.probe.since(sent, int(self.settle * RATE))).mean(axis=0))
        out, missed, rng = [], 0, np.random.default_rng(self.period)
        for i in range(self.trials):
            time.sleep(0.3 + rng.uniform(0, 0.02))  # the state before has settled
            sent = self.probe.client.frame_time
            self.send(*states[i % 2])
            t = halfway_ms(feature(self.probe.since(sent, int(0.5 * RATE))), refs[(i + 1) % 2], refs[i % 2])
            if t is None:
                missed += 1
            else:
                out.append(t)
        return out, missed

    def _read_err(self) -> None:
        for line in self.serve.stderr:
            self.err_at.append(time.monotonic())
            self.err.append(line)

    def underruns(self) -> int:
        """The underruns serve has counted, as its last `-v` line (once a second) says."""
        counts = [re.search(r"underruns (\d+)", line) for line in self.err[-5:]]
        return max([int(m.group(1)) for m in counts if m] or [0])

    def first_heard(self, states: list[list[tuple[str, object]]], starts: int = 5) -> dict:
        """ms from switching between two states to the first sample the switch changes, `trials` times. Each trial
        plays one of `starts` sounds from silence (a reset with seed 1, 2, ..., in the first state) and switches to
        the second state 90-190 ms in (anywhere in a frame); what the sound would have been is that start played
        without the switch, twice first (they must agree to the sample, or nothing here means anything). A trial
        with a JACK xrun or an underrun of serve's is void and made again: either moves what follows it in time,
        which would read as a change (serve's count is read after the trial's `back`, over a second later, so its
        once-a-second `-v` line has counted the trial). `differed_before`: trials that differed before the switch."""
        start, change = states
        rng, n = np.random.default_rng(self.period), int(0.4 * RATE)

        def from_silence(seed: int) -> int:
            """Play a start from silence; the JACK frame time it is lined up at (`lined_up`)."""
            wait(lambda: self.probe.quiet > 0.15 * RATE, 10, "silence", self.probe.state)
            self.probe.arm()
            self.send(("/distill/seed", seed), ("/distill/reset", []), ("/distill/play", 1))
            wait(lambda: self.probe.onset is not None, 5, "the sound")
            at = lined_up(self.probe.since(self.probe.onset, int(0.05 * RATE)))
            if at is None:
                raise SystemExit(f"latency: the start with seed {seed} stays below {LOUD} for 50 ms: it cannot be "
                                 "lined up with another take of it")
            return self.probe.onset + at

        def back() -> None:  # the first state again, played until serve's `-v` has counted the take, then silence
            self.send(("/distill/play", 1), *start)
            time.sleep(SETTLE)
            self.send(("/distill/play", 0))

        def unchanged(seed: int) -> np.ndarray:
            """The start as it sounds without the switch: the first of two takes that agree to the sample (one with
            an xrun or an underrun is void; a take that agrees with no other was moved by a hitch JACK or serve
            did not report, and another is taken)."""
            takes: list[np.ndarray] = []
            clean, differ = 0, None
            for _ in range(TAKES):
                xruns, under = self.probe.xruns, self.underruns()
                take = self.probe.since(from_silence(seed) - SLACK, n + 2 * SLACK)
                slipped = self.probe.xruns != xruns
                back()
                if slipped or self.underruns() != under:
                    continue
                clean += 1
                take = take[SLACK:SLACK + n] if not takes else take[SLACK + shift(take, takes[0]):][:n]
                for other in takes:
                    differ = first_change(take, other)
                    if differ is None:
                        return other
                takes.append(take)
            if clean < 2:
                raise NotMeasured(f"JACK kept reporting xruns ({self.probe.xruns}) or serve underruns "
                                  f"({self.underruns()}): in {TAKES} takes, a start did not play twice without one")
            raise SystemExit(f"latency: serve did not play the same start alike in any two of {clean} takes, so a "
                             f"change cannot be told apart from it (the last two differ from sample {differ} on)")

        back()
        same = {seed: unchanged(seed) for seed in range(1, starts + 1)}
        out, missed, early, void, voided = [], 0, 0, 0, {"xrun": 0, "underrun": 0}
        while len(out) + missed + early < self.trials and void < self.trials:
            seed, xruns, under = 1 + (len(out) + missed + early) % starts, self.probe.xruns, self.underruns()
            begun = from_silence(seed)
            time.sleep(0.04 + rng.uniform(0, 0.1))
            sent = self.probe.client.frame_time
            self.send(*change)
            take = self.probe.since(begun - SLACK, sent - begun + SLACK + int(0.1 * RATE))
            xrun = self.probe.xruns != xruns
            back()
            underrun = self.underruns() != under
            d = shift(take, same[seed])
            k = change_heard(take[SLACK + d:], same[seed])
            if xrun or underrun:  # JACK skipped a cycle or serve ran dry meanwhile: what followed moved in time
                void += 1
                voided["xrun" if xrun else "underrun"] += 1
            elif k is None:
                missed += 1
            elif begun + d + k < sent:
                early += 1  # it differed before the change: not the same start
            else:
                out.append(1000.0 * (begun + d + k - sent) / RATE)
        return {**summary(out, missed), "differed_before": early, "void": void, "void_by": voided}

    def steer(self, report: dict, action: str, states: list, first: list) -> None:
        """The steer action for one change (`steer_changes`): its first controls set, its trials, playing again."""
        if first:
            self.send(*first)
        steer = report.setdefault("steer", {})
        try:
            steer[action] = self.first_heard(states)
        except NotMeasured as e:  # the other actions' figures are kept
            steer[action] = {"not_measured": str(e)}
        self.log(f"steer, {action}: {steer[action]}")
        self.send(("/distill/play", 1))

    def measure(self, actions=ACTIONS, changes=CHANGES) -> dict:
        import mido

        report: dict = {}
        w = self.worlds
        if "trigger" in actions:
            report["trigger"] = summary(self.onsets("trigger",
                lambda i: self.send(("/distill/cue", [i % self.cues, 0.05]), ("/distill/play", 1)),
                lambda i: self.send(("/distill/play", 0))))
            self.log(f"trigger {report['trigger']}")
        if "note" in actions:
            report["note"] = summary(self.onsets("note",
                lambda i: self.keys.send(mido.Message("note_on", note=36 + i % self.cues, velocity=100)),
                lambda i: self.keys.send(mido.Message("note_off", note=36 + i % self.cues))))
            self.log(f"note {report['note']}")
        if "gain" in actions:
            self.send(("/distill/gain", 0.0), ("/distill/play", 1))
            report["gain"] = summary(self.onsets("gain", lambda i: self.send(("/distill/gain", 1.0)),
                                                 lambda i: self.send(("/distill/gain", 0.0))))
            self.log(f"gain {report['gain']}")
        self.send(("/distill/gain", 1.0), ("/distill/play", 1))
        steered = steer_changes(w, self.levels, self.guidance)
        for action, (states, first, feature) in steering_states(w, self.guidance).items():
            if action in actions:
                if first:
                    self.send(*first)
                report[action] = summary(*self.halfway(states, feature))
                self.log(f"{action} {report[action]}")
            if "steer" in actions and action in changes:
                self.steer(report, action, *steered[action])
        if "steer" in actions and "levels" in changes:
            self.steer(report, "levels", *steered["levels"])
        if "world" in report:
            report["world"]["worlds"] = [w[0], w[-1]]
        self.serve.send_signal(2)
        out, _ = self.serve.communicate(timeout=60)
        under = re.search(r"(\d+) underruns", out)
        margins = [line for line in self.err if " margin " in line]
        report["underruns"] = int(under.group(1)) if under else None
        report["xruns"] = self.probe.xruns
        report["xruns_by_client"] = xruns_by_client(self.jackd_log.read_text(errors="replace"))
        report["underrun_times_s"] = underrun_times(list(zip(self.err_at, self.err)), self.started)
        stalls = self.stalls.stop()
        for action, trials in self.trials_at.items():
            went_on = [ms for at, ms in trials if not stopped_during(at, ms, stalls["stalls_over_2ms"])]
            report[action]["machine_went_on"] = {**summary(went_on), "left_out": len(trials) - len(went_on)}
        report["machine_stalls"] = {k: v for k, v in stalls.items() if k not in ("stalls", "stalls_over_2ms")}
        report["machine_stall_times_s"] = [(round(t - self.started, 1), ms) for t, ms in stalls["stalls"][:20]]
        report["serve_v"] = margins[-1].strip() if margins else None  # the margin, its chunk costs, the buffer
        return report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="a .distill file (default: the bundled demo model)")
    p.add_argument("--periods", type=int, nargs="+", default=[64, 128, 256], help="JACK frames per period")
    p.add_argument("--loads", nargs="+", choices=["idle", "busy"], default=["idle", "busy"],
                   help="busy: a second process keeps one core busy meanwhile")
    p.add_argument("--trials", type=int, default=200, help="trials of each action in each run")
    p.add_argument("--buffer-ms", type=float, default=2.0, help="serve --buffer-ms (default 2: the README's "
                                                                 "low-latency way to run it)")
    p.add_argument("--realtime", action="store_true", help="jackd -R and serve --realtime, as the README's "
                   "low-latency paragraph has a performer run them (needs root or an rtprio limit, `ulimit -r`)")
    p.add_argument("--actions", nargs="+", choices=ACTIONS, default=list(ACTIONS), help="which actions to time")
    p.add_argument("--changes", nargs="+", choices=CHANGES, default=list(CHANGES),
                   help="what the steer action changes (default: all three)")
    p.add_argument("--quick", action="store_true", help="5 trials of each at 128 frames, idle: to check it works")
    p.add_argument("--model-only", action="store_true", help="the world and descriptor actions rendered offline, "
                   "without JACK or serve: the model's own part of their latency")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="with --model-only: one render per seed")
    p.add_argument("--guidance", type=float, default=GUIDANCE,
                   help=f"the guidance the world and descriptor changes are made at (default {GUIDANCE:g}, the engine's)")
    args = p.parse_args()
    if args.quick:
        args.periods, args.loads, args.trials = [128], ["idle"], 5
    if args.model is None:
        from distill_live.commands.bundled import DEMO

        args.model = str(DEMO)

    def log(line: str) -> None:
        print(f"latency: {line}", file=sys.stderr, flush=True)

    if args.model_only:
        import torch

        torch.set_num_threads(1)
        steering = ("world", "steer", "descriptor")
        actions = [a for a in args.actions if a in steering] or list(steering)
        runs = [{"seed": seed, **model_only(args.model, actions, args.trials, seed, changes=args.changes,
                                            guidance=args.guidance)} for seed in args.seeds]
        print(json.dumps({"model": args.model, "model_only": True, "rate": RATE, "trials": args.trials,
                          "guidance": args.guidance, "runs": runs}, indent=2))
        return 0

    # The probe's process callback runs Python in this process: it waits for Python's lock while the main thread
    # holds it, by default up to 5 ms, which at 128 frames (2.7 ms) made the probe itself the client JACK
    # blamed for most xruns (jackd's log: 56 of 82 in a steer run), voiding most trials
    sys.setswitchinterval(SWITCH_INTERVAL)
    runs, loadavg = [], os.getloadavg()
    for load in args.loads:
        for period in args.periods:
            log(f"period {period}, {load}")
            try:
                with Run(args.model, period, load == "busy", args.trials, 1.0 if args.quick else 3.0, args.buffer_ms,
                         log, args.realtime, args.guidance) as run:
                    result = run.measure(args.actions, args.changes)
            except RuntimeError as e:  # jackd did not start
                raise SystemExit(f"latency: {e}")
            runs.append({"jack_period": period, "jack_period_ms": round(1000 * period / RATE, 2), "load": load,
                         **result})
    print(json.dumps({"model": args.model, "rate": RATE, "trials": args.trials, "buffer_ms": args.buffer_ms,
                      "realtime": args.realtime, "guidance": args.guidance,
                      "cpus": os.cpu_count(),
                      "loadavg_at_start": loadavg, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

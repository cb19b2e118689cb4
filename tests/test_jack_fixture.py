"""The JACK chain the engine tests rely on: a subprocess plays through sounddevice ->
PortAudio's JACK host API -> private jackd (dummy driver) -> our capture client."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jackaudio import JackCapture, dominant_frequency

pytestmark = pytest.mark.slow  # plays through JACK

# Played in a subprocess with jack_server.env. Prints one JSON line when done.
PLAYER = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import sounddevice as sd

    freq, amp, seconds, channels = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    apis = [i for i, h in enumerate(sd.query_hostapis()) if h["name"] == "JACK Audio Connection Kit"]
    if not apis:
        sys.exit("no JACK host API in PortAudio: " + repr(sd.query_hostapis()))
    dev = next(i for i, d in enumerate(sd.query_devices())
               if d["hostapi"] == apis[0] and d["max_output_channels"] >= channels)
    sr = int(sd.query_devices(dev)["default_samplerate"])
    total = int(seconds * sr)
    state = {"pos": 0, "callbacks": 0, "flags": [], "blocks": set()}

    def callback(out, frames, time_info, status):
        state["callbacks"] += 1
        state["blocks"].add(frames)
        if status:
            state["flags"].append((state["callbacks"], str(status)))
        n = np.arange(state["pos"], state["pos"] + frames)
        x = amp * np.sin(2 * np.pi * freq * n / sr)
        x[n >= total] = 0.0
        out[:] = x[:, None].astype(np.float32)
        state["pos"] += frames
        if state["pos"] >= total:
            raise sd.CallbackStop

    with sd.OutputStream(device=dev, channels=channels, samplerate=sr, dtype="float32",
                         callback=callback) as stream:
        while stream.active:
            time.sleep(0.01)
    print(json.dumps({"device": sd.query_devices(dev)["name"], "samplerate": sr,
                      "callbacks": state["callbacks"], "blocks": sorted(state["blocks"]),
                      "flags": state["flags"], "frames": state["pos"]}))
    """
)


def play(jack_server, freq=440.0, amp=0.5, seconds=2.0, channels=2):
    return subprocess.Popen(
        [sys.executable, "-c", PLAYER, str(freq), str(amp), str(seconds), str(channels)],
        env=jack_server.env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(proc, timeout=20):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"player did not finish in {timeout}s\n{out}\n{err}")
    assert proc.returncode == 0, f"player failed ({proc.returncode}):\n{out}\n{err}"
    return json.loads(out.strip().splitlines()[-1])


def test_server_is_up(jack_server):
    import jack

    assert jack_server.env["JACK_DEFAULT_SERVER"] == jack_server.name
    with jack.Client("distill-check", servername=jack_server.name, no_start_server=True) as c:
        assert c.samplerate == jack_server.sample_rate
        assert c.blocksize == jack_server.period
        names = {p.name for p in c.get_ports(is_audio=True)}
    assert {"system:playback_1", "system:playback_2", "system:capture_1"} <= names


def test_sine_through_portaudio_jack(jack_server):
    amp, freq = 0.5, 440.0
    with JackCapture(jack_server.name, channels=2, seconds=1.0, trigger_level=0.01) as cap:
        proc = play(jack_server, freq=freq, amp=amp, seconds=2.0, channels=2)
        try:
            ports = cap.connect("PortAudio", min_ports=2, timeout=15)
            audio = cap.wait(timeout=15)
        finally:
            report = finish(proc)
        xruns = cap.xruns

    assert ports == ["PortAudio:out_0", "PortAudio:out_1"]
    assert report["device"] == "system"
    assert report["samplerate"] == jack_server.sample_rate
    assert report["blocks"] == [jack_server.period]
    assert report["flags"] == [], f"sounddevice callback reported xruns: {report['flags']}"
    assert xruns == 0, f"JACK reported {xruns} xruns during capture"

    assert audio.shape == (jack_server.sample_rate, 2)
    for ch in range(2):
        x = audio[:, ch]
        f = dominant_frequency(x, jack_server.sample_rate)
        assert abs(f - freq) < 2.0, f"channel {ch}: dominant frequency {f:.2f} Hz"
        rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
        assert abs(rms - amp / np.sqrt(2)) < 0.01, f"channel {ch}: rms {rms:.4f}"
    # the capture is the played sine itself, sample for sample, not just something at 440 Hz
    np.testing.assert_allclose(audio[:, 0], audio[:, 1], atol=1e-6)

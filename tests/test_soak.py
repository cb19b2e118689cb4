"""The 60-second soak (issue 8; bench/soak.py is the long one): serve plays the demo into the session's
JACK server under a flood of random valid OSC controls (300/s here, to keep the shared CI machine sane)
and MIDI CC sweeps and notes through its virtual JACK MIDI input. Underruns are reported, not asserted
(a shared 2-core machine); survival, leaks, obedience and sound are asserted."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from jackaudio import JackCapture

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from soak import DEMO, Soak, proc_figures  # noqa: E402

pytestmark = pytest.mark.slow  # a minute of flood


def test_serve_survives_a_minute_of_osc_and_midi_flood_without_leaking(jack_server, monkeypatch):
    import time

    monkeypatch.setenv("JACK_DEFAULT_SERVER", jack_server.name)  # MidiFlood's rtmidi client; restored after
    soak = Soak(DEMO, jack_server.name, rate=300, midi_rate=100)
    try:
        soak.start()
        soak.warm()
        while time.monotonic() < soak.started + 60 and soak.alive():
            time.sleep(1.0)
        assert soak.alive(), "\n".join(soak.lines[-40:])
        soak.end_figures()
        soak.stop_flood()
        assert soak.obeys(0.777), "serve no longer applies controls after the flood"
        soak.sounding()  # the controls as serve starts: the flood's last ones may rightly be quiet
        with JackCapture(jack_server.name, channels=1, seconds=2.0, client_name="soak-capture") as cap:
            cap.connect("PortAudio", timeout=10)
            audio = cap.wait(timeout=15)[:, 0]
        rc = soak.finish()
        report = soak.report(rc)
    finally:
        soak.close()
    print(report)
    assert rc == 0, "\n".join(soak.lines[-40:])
    assert report["tracebacks"] == 0
    assert report["messages_sent"] > 10_000 and report["midi_events_sent"] > 3_000, report
    assert report["rss_mib_end"] - report["rss_mib_start"] < 16, report  # ~3% of ~540 MiB
    assert report["fds_end"] <= report["fds_start"], report
    assert report["threads_end"] <= report["threads_start"], report
    assert np.sqrt(np.mean(audio ** 2)) > 1e-3, "audio stopped flowing"

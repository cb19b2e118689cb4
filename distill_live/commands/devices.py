"""`distill-live devices [--json]`: the sound cards and MIDI ports serve can use."""
from __future__ import annotations

import argparse
import json

from distill_live.live.soundcard import NoSoundCard, input_devices, output_devices


def register(sub) -> None:
    p = sub.add_parser("devices", help="list the audio outputs and inputs and the MIDI inputs serve can use")
    p.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    p.set_defaults(func=run)


def _print_devices(title: str, devices: list[dict], problem: str) -> None:
    print(title)
    for d in devices:
        print(f"  {d['index']:>3}  {d['name']}  [{d['hostapi']}]  {d['channels']} ch, {d['rate']} Hz, "
              f"{d['latency_ms']} ms")
    if not devices:
        print(f"  none: {problem}")


def run(args: argparse.Namespace) -> int:
    try:
        audio, inputs, audio_problem = output_devices(), input_devices(), None
    except NoSoundCard as e:
        audio, inputs, audio_problem = [], [], str(e)
    from distill_live.control.midi.ports import choose_api, list_ports

    api, midi_problem = choose_api("auto")
    ports = list_ports(api) if api else []
    if args.json:
        print(json.dumps({"audio": audio, "audio_inputs": inputs, "audio_problem": audio_problem, "midi_api": api,
                          "midi_inputs": ports,
                          "midi_problem": None if api else midi_problem}, indent=2))
        return 0
    _print_devices("audio outputs (serve --device INDEX or NAME):", audio, audio_problem or "no sound card found")
    _print_devices("audio inputs (serve --input INDEX or NAME):", inputs, audio_problem or "no audio input found")
    print(f"MIDI inputs (serve --midi-in NAME){f' via {api}' if api else ''}:")
    for name in ports:
        print(f"  {name}")
    if not ports:
        print(f"  none{': ' + midi_problem if not api else ''}")
    return 0

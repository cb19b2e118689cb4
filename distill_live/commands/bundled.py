"""What the package carries for a performer beside its code: the demo model and its tour score
(distill_live/demo/), and the patches, host packages and layouts (distill_live/patches/).

They live inside the package so that `pip install` brings them along: every path a command
prints exists in a clone and in an installed wheel alike. patches/tools/ writes the patches.
"""
from __future__ import annotations

import argparse
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent
DEMO = PACKAGE / "demo" / "demo.distill"
DEMO_TOUR = PACKAGE / "demo" / "tour.score"
PATCHES = PACKAGE / "patches"

# What a performer opens, by program: (program, path in PATCHES, how to install or open it).
CONTENTS = [
    ("Max 8/9 package", "max/distill", "copy the folder into Documents/Max 9/Packages (or Max 8), "
                                       "restart Max, then make a [distill] object"),
    ("SuperCollider Quark", "supercollider/Distill", 'Quarks.install("<path>"), recompile, then Distill.new'),
    ("Pure Data abstraction", "puredata/distill", "add the folder to Pd's path, then make a [distill] object"),
    ("Open Stage Control layout", "layouts/distill-open-stage-control.json", "load it as a session"),
    ("TouchOSC layout", "layouts/distill.tosc", "open it in the TouchOSC editor, then sync it to the device"),
    ("MIDI: map format and learn", "midi.md", "a text file"),
]


def model_argument(parser: argparse.ArgumentParser, what: str = "play") -> None:
    """The optional MODEL of serve, render and info: without one, the bundled demo."""
    parser.add_argument("model", nargs="?", default=str(DEMO),
                        help=f"a .distill file to {what} (default: the bundled demo model)")

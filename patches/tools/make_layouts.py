"""Write the control-surface layouts for the bundled demo model: distill_live/patches/layouts/
distill-open-stage-control.json (an Open Stage Control session) and distill.tosc (TouchOSC).

distill_live/control/layouts.py makes them from the parameter registry (an address, type and range per
widget); `distill-live patches DIR --model my.distill` writes them for another model's worlds. Rerun this
(`.venv/bin/python patches/tools/make_layouts.py`) after changing the registry, and commit the files.
"""
from __future__ import annotations

import sys
from pathlib import Path

from registry import PATCHES, write

from distill_live.commands.bundled import DEMO
from distill_live.control.layouts import open_stage_control, touchosc
from distill_live.control.params import ParamRegistry
from distill_live.model.modelfile import load_model


def files() -> dict[str, str | bytes]:
    registry = ParamRegistry.for_model(load_model(DEMO))
    return {"layouts/distill-open-stage-control.json": open_stage_control(registry),
            "layouts/distill.tosc": touchosc(registry)}


if __name__ == "__main__":
    write(PATCHES if len(sys.argv) < 2 else Path(sys.argv[1]), files())

"""Control: everything a performer can steer, and the surfaces that steer it.

params.py is the parameter registry, the one list of controls; changes.py tells the surfaces what
the engine applied; score.py reads timed control files; presets.py keeps snapshots of every control;
osc/ and midi/ are the surfaces. A surface talks to a running engine through the engine's public face
(an object passed in), never by importing the live engine.

The files a performer edits by hand, MIDI maps and presets, are TOML; `toml_value` writes their values.
"""
from __future__ import annotations

import json
from typing import Any


def toml_value(value: Any) -> str:
    """A value as TOML writes it (numbers, text, true/false and lists of them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")

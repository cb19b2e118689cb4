"""Score files: timed control messages for offline render, one per line.

    # seconds  address                 args
    0.0        /distill/world/bells     1.0
    2.5        /distill/cue             3 0.2

The addresses and ranges are exactly those the live engine accepts (the parameter registry), so a
score is a recording of what a patch would send. Anything wrong stops before rendering, naming the line.
"""
from __future__ import annotations

import math
import shlex
from pathlib import Path

from .params import ParamError, ParamRegistry


class ScoreError(ValueError):
    """A score line that cannot be used; the message names the file and line."""


def _arg(token: str):
    for kind in (int, float):
        try:
            return kind(token)
        except ValueError:
            pass
    return token


def parse_score(text: str, registry: ParamRegistry, source: str = "score") -> list[tuple[float, str, tuple]]:
    messages = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as e:
            raise ScoreError(f"{source} line {number}: {e}")
        if not tokens:
            continue
        where = f"{source} line {number}"
        try:
            at = float(tokens[0])
        except ValueError:
            raise ScoreError(f"{where}: '{tokens[0]}' is not a time in seconds")
        if not math.isfinite(at) or at < 0:
            raise ScoreError(f"{where}: time {tokens[0]} must be zero or more seconds")
        if len(tokens) < 2:
            raise ScoreError(f"{where}: an address is missing after the time")
        address, args = tokens[1], [_arg(t) for t in tokens[2:]]
        if registry.released(address, args):  # a trigger with 0 does nothing, as over OSC
            continue
        try:
            args, notes = registry.validate(address, args)
        except ParamError as e:
            raise ScoreError(f"{where}: {e}")
        if notes:
            raise ScoreError(f"{where}: {notes[0]}")
        messages.append((at, address, args))
    return messages


def load_score(path: str | Path, registry: ParamRegistry) -> list[tuple[float, str, tuple]]:
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ScoreError(f"cannot read score '{path}': {e.strerror if isinstance(e, OSError) else 'not text'}")
    return parse_score(text, registry, source=f"score '{path}'")


def parse_set(items: list[str], registry: ParamRegistry) -> list[tuple[float, str, tuple]]:
    """`--set NAME=VALUE` options: shorthand for score lines at time 0 (NAME is the address below /distill)."""
    lines = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ScoreError(f"--set {item}: expected NAME=VALUE, for example --set temperature=0.8")
        address = name if name.startswith("/") else f"/distill/{name}"
        lines.append(f"0 {address} {value.replace(',', ' ')}")
    return parse_score("\n".join(lines), registry, source="--set")

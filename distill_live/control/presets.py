"""Presets: a snapshot of every control, saved and recalled by number.

They live in a TOML file beside the model (`my.distill` -> `my.presets.toml`), one table per preset,
the same control names as OSC without `/distill/`; a descriptor the model chooses is "free":

    [3]
    gain = 0.8
    temperature = 0.7
    "world/bells" = 1.0
    "descriptor/loudness" = "free"

`/distill/preset/save 3` takes the snapshot in the generator thread (it owns the values, so a preset
is exactly what played at that chunk) and the engine writes the file off that thread, at most
twice a second and once more when it stops;
`/distill/preset/recall 3 2.0` crossfades the continuous controls for 2 s and sets the others at
once (live/engine.py). A preset keeps every stored control but `play` and `seed` (`Param.preset`).

A file that cannot be read, or names a control this model does not have, or holds a value out of
range, is refused at start in one sentence naming the file and line, and is never written over.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from distill_live import UserError, atomic_write
from distill_live.control import toml_value
from distill_live.control.params import PREFIX, PRESETS, ParamError, ParamRegistry

FREE = "free"  # a descriptor the model chooses
Snapshot = dict[str, Any]  # control name (without /distill/) -> value, or FREE for a descriptor


class PresetFileError(UserError):
    """A presets file that cannot be used; the message names the file (and line)."""


def presets_path(model: str | Path) -> Path:
    """Where a model's presets live: beside it, `my.distill` -> `my.presets.toml`."""
    model = Path(model)
    return model.with_name(f"{model.stem}.presets.toml")


class Presets:
    """The presets of one model: read at start, kept in memory, written whole after each save.

    `snapshots` is replaced whole by `store` (from the generator thread), so any thread reads a
    complete one without a lock. Controls that only exist with an audio input (serve --input) are kept
    in the file when serve runs without one, and not recalled."""

    def __init__(self, path: str | Path, snapshots: dict[int, Snapshot] | None = None):
        self.path = Path(path)
        self.snapshots: dict[int, Snapshot] = dict(snapshots or {})

    @classmethod
    def load(cls, path: str | Path, registry: ParamRegistry) -> "Presets":
        """The presets in `path` (none when it does not exist yet); PresetFileError when it cannot be used."""
        path = Path(path)
        if not path.exists():
            return cls(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise PresetFileError(f"cannot read presets '{path}': "
                                  f"{e.strerror if isinstance(e, OSError) else 'not text'}") from None
        return cls(path, parse_presets(text, registry, str(path)))

    def numbers(self) -> list[int]:
        return sorted(self.snapshots)

    def get(self, n: int) -> Snapshot | None:
        return self.snapshots.get(n)

    def store(self, n: int, snapshot: Snapshot) -> None:
        self.snapshots = {**self.snapshots, n: snapshot}

    def text(self) -> str:
        out = ["# distill presets: /distill/preset/recall N recalls [N]. Edit freely while distill is not",
               "# running; it rewrites this file (without comments) when a preset is saved."]
        for n, snapshot in sorted(self.snapshots.items()):
            out += ["", f"[{n}]"] + [f"{_key(name)} = {toml_value(v)}" for name, v in snapshot.items()]
        return "\n".join(out) + "\n"

    def write(self) -> None:
        """Write every preset to the file, atomically (a full disk leaves the old file as it was)."""
        text = self.text()
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def take_snapshot(registry: ParamRegistry) -> Snapshot:
    """Every control a preset keeps, as it is now (call from the generator thread, which owns the values)."""
    out: Snapshot = {}
    for address, value in registry.values.items():
        p = registry.params[address]
        if not p.preset or not registry.playable(p):  # (a recall would set what the model refuses)
            continue
        if p.name.startswith("descriptor/") and not registry.held[p.name.split("/")[1]]:
            value = FREE
        out[p.name] = value
    return out


def parse_presets(text: str, registry: ParamRegistry, source: str = "presets") -> dict[int, Snapshot]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PresetFileError(f"presets '{source}': {e}") from None
    lines = _table_lines(text)
    input_only = {p.name for p in ParamRegistry(registry.worlds, 1, 1, 1, audio_input=True).params.values()
                  if p.name.startswith("input/")}
    out: dict[int, Snapshot] = {}
    for key, table in data.items():
        where = f"presets '{source}'" + (f" line {lines[key]}" if key in lines else "")
        if not (key.isdigit() and int(key) < PRESETS) or not isinstance(table, dict):
            raise PresetFileError(f"{where}: [{key}] is not a preset; presets are tables [0] to [{PRESETS - 1}]")
        snapshot: Snapshot = {}
        for name, value in table.items():
            p = registry.params.get(f"{PREFIX}/{name}")
            if p is None and name in input_only:
                snapshot[name] = value  # kept for a serve with --input
                continue
            if p is None or not p.stored or not p.preset:
                raise PresetFileError(f"{where}: preset {key} sets '{name}', which is not a control a preset "
                                      f"keeps (see the OSC table in the README)")
            if value == FREE and name.startswith("descriptor/"):
                snapshot[name] = FREE
                continue
            try:
                args, notes = registry.validate(p.address, [value])
            except ParamError as e:
                raise PresetFileError(f"{where}: preset {key}: {e}") from None
            if notes:
                raise PresetFileError(f"{where}: preset {key}: {name} = {value} is outside {p.lo:g}..{p.hi:g}")
            snapshot[name] = args[0]
        out[int(key)] = snapshot
    return out


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else toml_value(name)


def _table_lines(text: str) -> dict[str, int]:
    """The line of each `[n]` header, so an error can name it."""
    return {m.group(1): number for number, line in enumerate(text.splitlines(), start=1)
            if (m := re.match(r"\s*\[\s*\"?([^\]\"]+)\"?\s*\]", line))}

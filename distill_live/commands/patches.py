"""`distill-live patches [DIR]`: where the patches, host packages and layouts are, or a copy of them.

With no DIR it prints where they are inside the installed package (open them from there, or copy
them). With DIR it writes them there, with the shipped MIDI maps in DIR/midi-maps/ to start your
own from; with --model, the TouchOSC and Open Stage Control layouts are made for that model's worlds
and ranges instead of the demo's. A file already in DIR that differs (your own edits, perhaps) is
never replaced without --force: the command names it and writes nothing.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from distill_live import UserError, atomic_write
from distill_live.control.layouts import open_stage_control, touchosc
from distill_live.control.midi.mapfile import SHIPPED as MIDI_MAPS
from distill_live.control.params import ParamRegistry
from distill_live.model.modelfile import load_model

from .bundled import CONTENTS, PATCHES


def register(sub) -> None:
    p = sub.add_parser("patches", help="show where the Max, SuperCollider, Pd, TouchOSC and Open Stage Control "
                                       "patches are, or copy them into DIR")
    p.add_argument("dir", nargs="?", metavar="DIR", help="copy everything into this folder (made if missing)")
    p.add_argument("--model", metavar="FILE", help="make the TouchOSC and Open Stage Control layouts for this model's "
                                                   "worlds (default: the bundled demo's)")
    p.add_argument("--force", action="store_true", help="replace files in DIR that differ from the shipped ones")
    p.set_defaults(func=run)


def contents(model: str | None) -> dict[Path, bytes]:
    """{path inside DIR: its bytes} for everything `patches DIR` writes."""
    files = {f.relative_to(PATCHES): f.read_bytes() for f in sorted(PATCHES.rglob("*"))
             if f.is_file() and "__pycache__" not in f.parts}
    files.update({Path("midi-maps") / f.name: f.read_bytes() for f in sorted(MIDI_MAPS.glob("*.toml"))})
    if model is not None:
        registry = ParamRegistry.for_model(load_model(model))
        files[Path("layouts/distill-open-stage-control.json")] = open_stage_control(registry).encode("utf-8")
        files[Path("layouts/distill.tosc")] = touchosc(registry)
    return files


def run(args: argparse.Namespace) -> int:
    if args.dir is None:
        print(f"distill-live: the patches are in {PATCHES} (see README.md there):")
        for program, where, how in CONTENTS:
            print(f"  {program:<27} {PATCHES / where}")
        print(f"  {'MIDI maps':<27} {MIDI_MAPS}")
        print("copy them into a folder of your own with: distill-live patches DIR")
        return 0
    out = Path(args.dir).expanduser()
    files = contents(args.model)
    if out.exists() and not out.is_dir():
        raise UserError(f"cannot copy the patches into '{out}': it is a file, not a folder")
    differ = [rel for rel, data in files.items()
              if (out / rel).exists() and (not (out / rel).is_file() or (out / rel).read_bytes() != data)]
    if differ and not args.force:
        raise UserError(f"'{out / differ[0]}' already exists and differs from the shipped file"
                        f"{f' (and {len(differ) - 1} more)' if len(differ) > 1 else ''}: choose another folder, "
                        "or add --force to replace them; nothing was written")
    try:
        for rel, data in files.items():
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir():
                shutil.rmtree(target)  # --force: a folder where a file goes
            atomic_write(target, lambda tmp, data=data: Path(tmp).write_bytes(data))
    except OSError as e:
        raise UserError(f"cannot write the patches into '{out}': {e.strerror or e}") from None
    print(f"distill-live: wrote {len(files)} files into {out} (see {out / 'README.md'}):")
    for program, where, how in CONTENTS:
        print(f"  {program:<27} {out / where}: {how.replace('<path>', str(out / where))}")
    print(f"  {'MIDI maps':<27} {out / 'midi-maps'}: serve --midi-map {out / 'midi-maps' / 'nanokontrol2.toml'}")
    return 0

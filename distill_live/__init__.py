"""distill's runtime, in three rooms (docs/design.md has the whole map):

    model/    what a .distill file holds and how it runs      (imports nothing else from here)
    control/  the parameter registry, scores, OSC and MIDI     (imports model/)
    live/     the player, the engine and the sound card        (imports model/ and control/)
    commands/ and cli.py: `distill-live` and its subcommands   (imports anything)

This file holds the two things every room uses.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


class UserError(Exception):
    """Something the user can fix; `distill-live` prints it as one line, no traceback."""


def atomic_write(path: str | Path, write) -> None:
    """Call write(tmp_path) on a temp file beside `path`, then rename it over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files only their owner can read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""`distill-live`: inspect, render and play models.

Each subcommand lives in its own module with `register(subparsers)`; this file only routes.
A user error (bad file, bad score, no device) ends with one sentence on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from distill_live import UserError

COMMANDS = ["distill_live.commands.info", "distill_live.commands.render", "distill_live.commands.serve",
            "distill_live.commands.devices", "distill_live.commands.bench", "distill_live.commands.patches"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="distill-live", description="Play distill models live, or render them.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    args = parser.parse_args(argv)
    from distill_live.control.params import ParamError
    from distill_live.control.score import ScoreError
    from distill_live.model.modelfile import ModelFileError

    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except (UserError, ModelFileError, ParamError, ScoreError) as e:
        print(f"distill-live: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

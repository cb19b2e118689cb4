"""`python -m distill_live.control.osc`: print the README's OSC tables, generated from the registry."""
from __future__ import annotations

import argparse

from .namespace import markdown_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill_live.control.osc",
                                     description="Print the README's OSC table, generated from the registry.")
    parser.add_argument("--markdown", action="store_true", help="print the markdown tables (the default)")
    parser.parse_args(argv)
    print(markdown_table(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

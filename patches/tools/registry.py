"""What the patch generators take from distill's parameter registry: the controls' names and ranges.

A control renamed or given another range in the registry (distill_live/control/params.py) changes the
generated patches, or stops the generator with a KeyError naming it, instead of breaking a concert.
"""
from __future__ import annotations

from pathlib import Path

from distill_live.control.osc.namespace import doc_registry
from distill_live.model.descriptors import DESCRIPTORS  # noqa: F401  (the generators' descriptor names)

REGISTRY = doc_registry()
REGION = ("region/start", "region/length", "region/top", "region/bottom", "region/mode")  # the code grid's region
# the patches live inside the package, so that the wheel carries them (`distill-live patches` copies them out)
PATCHES = Path(__file__).resolve().parents[2] / "distill_live" / "patches"


def write(root: Path, files: dict[str, str | bytes]) -> None:
    """Write {path inside the patches folder: text or bytes} under root (the package's patches folder)."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        print("wrote", path)


def span(name: str) -> tuple[float, float]:
    """(lo, hi) of /distill/NAME; whole numbers as ints, as the patches write them."""
    lo, hi = REGISTRY.params[f"/distill/{name}"].range
    return tuple(int(v) if float(v).is_integer() else v for v in (lo, hi))


def names(*wanted: str) -> list[str]:
    """The controls, checked: each must be in the registry."""
    for name in wanted:
        REGISTRY.params[f"/distill/{name}"]  # noqa: B018  (a KeyError names a control the registry lost)
    return list(wanted)

"""The README's OSC table is generated from the parameter registry; this fails when they disagree.

Regenerate with `python -m distill_live.control.osc` and paste it between the markers."""
from __future__ import annotations

import difflib
from pathlib import Path

from distill_live.control.osc.namespace import markdown_table

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- osc-table -->", "<!-- /osc-table -->"


def test_readme_osc_table_is_the_generated_one():
    text = README.read_text(encoding="utf-8")
    assert START in text and END in text, (
        f"README.md has no {START} ... {END} markers: put them in its OSC section with the output of "
        f"`python -m distill_live.control.osc` between them")
    assert text.index(START) < text.index(END), f"README.md has {END} before {START}"
    pasted = text.split(START, 1)[1].split(END, 1)[0].strip()
    generated = markdown_table().strip()
    if pasted != generated:
        diff = "\n".join(difflib.unified_diff(pasted.splitlines(), generated.splitlines(), "README.md",
                                              "registry", lineterm=""))
        raise AssertionError("README.md's OSC table differs from the registry; regenerate it with "
                             f"`python -m distill_live.control.osc`:\n{diff}")


def test_generated_table_lists_every_address():
    from distill_live.control.osc.namespace import doc_registry

    table = markdown_table()
    for address in doc_registry().params:
        assert f"| `{address}` |" in table, address
    for extra in ("/distill/dump", "/distill/namespace", "/distill/reply", "/distill/state", "/distill/error"):
        assert f"| `{extra}` |" in table

"""The README: its OSC table is the one generated from the parameter registry (regenerate with
`python -m distill_live.control.osc` and paste it between the markers), and every relative link in it
and in docs/ resolves inside the repository."""
from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest

from distill_live.control.osc.namespace import markdown_table

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
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


# -- links -----------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("page", [README, *sorted((ROOT / "docs").glob("*.md")),
                                  *sorted((ROOT / "distill_live" / "patches").glob("*.md"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    links = LINK.findall(text)
    assert links or page != README, "found no links in README.md: is the pattern still right?"
    wrong = []
    for link in links:
        if re.match(r"[a-z]+:", link):  # http(s), mailto: not ours to check, but never an issue tracker
            if re.search(r"/issues\b|/pulls?\b", link):
                wrong.append(f"{link}: a link to an issue tracker")
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.is_relative_to(ROOT) or not path.exists():
            wrong.append(f"{link}: no such file in the repository")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            wrong.append(f"{link}: {path.name} has no heading #{anchor}")
    assert not wrong, f"{page.relative_to(ROOT)}: " + "; ".join(wrong)


def test_the_readme_points_at_nothing_a_user_does_not_have():
    text = README.read_text(encoding="utf-8")
    for outside in ("../shared", "DESIGN.md", "issue tracker"):
        assert outside not in text, outside

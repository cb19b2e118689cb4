"""The code's layout holds: the runtime's rooms import only downwards (model < control < live <
commands), distill_live never imports distill_train, no module imports a private name from another,
there are no import circles, and docs/design.md's module map names every module there is."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("distill_live", "distill_train")
# a room may import from its own and the ones before it; the package root (UserError, atomic_write) is below all
ROOMS = ["distill_live", "distill_live.model", "distill_live.control", "distill_live.live", "distill_live.commands"]


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = modules()


def imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import of our packages, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] in PACKAGES]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.split(".")[0] not in PACKAGES:
                continue
            names = [a.name for a in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            out += [(m, [], node.lineno) for m in submodules]
            rest = [n for n in names if f"{target}.{n}" not in MODULES]
            if rest:
                out.append((target, rest, node.lineno))
    return out


def room(name: str) -> int:
    if name == "distill_live.cli" or name == "distill_live.__main__":
        return len(ROOMS) - 1
    return max(i for i, r in enumerate(ROOMS) if name == r or name.startswith(r + "."))


def test_the_runtime_imports_only_downwards_and_never_the_trainer():
    wrong = []
    for name, path in MODULES.items():
        for target, _, line in imports(name, path):
            where = f"{path.relative_to(ROOT)}:{line} imports {target}"
            if name.startswith("distill_live") and target.startswith("distill_train"):
                wrong.append(where)
            elif name.startswith("distill_live") and room(target) > room(name):
                wrong.append(f"{where} (a room above)")
    assert not wrong, "\n".join(wrong)


def test_no_private_name_is_imported_from_another_module():
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {n} from {target}"
             for name, path in MODULES.items() for target, names, line in imports(name, path)
             for n in names if n.startswith("_") and target != name]
    assert not wrong, "\n".join(wrong)


def test_there_are_no_import_circles():
    graph = {name: {t for t, _, _ in imports(name, path) if t in MODULES and t != name}
             for name, path in MODULES.items()}
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            raise AssertionError("import circle: " + " -> ".join(trail[trail.index(node):] + [node]))
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, trail + [node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])


def test_the_design_page_maps_every_module():
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    missing = [str(path.relative_to(ROOT / "distill_live")) for name, path in MODULES.items()
               if name.startswith("distill_live") and path.name != "__init__.py"
               and str(path.relative_to(ROOT / "distill_live")) not in text]
    assert not missing, f"docs/design.md's module map does not name: {', '.join(missing)}"

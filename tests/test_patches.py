"""The patches in distill_live/patches/ (written by patches/tools/): real sclang and pd -nogui against a running `distill-live serve`, and static checks
of every patch (Max patcher JSON structure, and every OSC address a patch sends exists in the parameter
registry with arguments of the right type, so a renamed parameter breaks the build, not the concert)."""
from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from distill_live.control.osc import namespace
from distill_live.control.params import ParamRegistry
from distill_live.model.descriptors import DESCRIPTORS
from models import WORLDS, random_model_file
from oscpeers import Serve, free_port

pytestmark = pytest.mark.slow  # runs serve, sclang and pd

ROOT = Path(__file__).resolve().parent.parent
PATCHES = ROOT / "distill_live" / "patches"
SC_DIR = PATCHES / "supercollider" / "Distill"  # the Quark
PD_DIR = PATCHES / "puredata" / "distill"  # the abstraction and its help
MAX_DIR = PATCHES / "max" / "distill"  # the Max package
TOOLS = ROOT / "patches" / "tools"
P = "/distill"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    d = tmp_path_factory.mktemp("patches")
    serve = Serve(random_model_file(d / "m.distill"), d / "take.wav")
    yield serve
    serve.close()


def assert_values(state: dict, expected: dict) -> None:
    for name, value in expected.items():
        address = f"{P}/{name}"
        if value is None:  # a free descriptor
            assert address + "/free" in state, (address, state.get(address))
        else:
            assert address in state and state[address] == [pytest.approx(value)], (address, state.get(address))


# -- SuperCollider -----------------------------------------------------------------------------------


def sclang_env() -> dict:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    env["QTWEBENGINE_DISABLE_SANDBOX"] = "1"  # its Chromium refuses to start as root otherwise
    return env


def test_sclang_runs_the_supercollider_test_entry_point_against_serve(engine):
    sclang = shutil.which("sclang")
    if sclang is None:
        pytest.skip("sclang cannot run: not installed (Debian supercollider-language; scripts/setup.sh installs it)")
    reply_port = free_port()
    r = subprocess.run([sclang, "-D", str(SC_DIR / "test_distill.scd"), str(engine.port), str(reply_port), "gui"],
                       capture_output=True, text=True, timeout=90, env=sclang_env(), stdin=subprocess.DEVNULL,
                       cwd=ROOT)
    out = r.stdout + r.stderr
    ok = re.search(r"DISTILL-TEST OK states=(\d+) namespace=(\d+) worlds=(\d+) meter=\S+ errors=(\d+) gui=(\w+)", out)
    assert ok and r.returncode == 0, f"sclang failed ({r.returncode}):\n{out[-3000:]}"
    states, namespace, worlds, errors, gui = ok.groups()
    registry = ParamRegistry(WORLDS, levels=4, codebook_size=64, cues=3)
    # sclang received the engine's replies: the whole namespace, a dump, and the window followed them
    assert int(namespace) == len(registry.params) and int(worlds) == len(WORLDS)
    assert int(states) >= len(registry.values) and int(errors) == 0 and gui == "ok"
    # ... and the engine received sclang's messages, including the timetagged bundles
    state = engine.state()
    levels = registry.params[f"{P}/levels"].hi
    assert_values(state, {"play": 1, "gain": 0.75, "temperature": 0.9375, "topk": 7, "topp": 0.8125,
                          "guidance": 1.25, f"world/{WORLDS[0]}": 0.875, f"world/{WORLDS[1]}": 0.0,
                          "descriptor/brightness": 0.375, "descriptor/noisiness": None, "freeze": 0, "loop": 12,
                          "levels": levels, "lock": 1, "mutate": 0.0625, "seed": 1234})


def test_the_quark_installs_into_a_user_directory_and_its_class_drives_serve(engine, tmp_path):
    """Quarks.install(path), as a SuperCollider user installs it, into a scratch user directory; then a
    fresh sclang (its class library recompiled with the Quark) plays the engine through Distill.new and
    finds the class's help file."""
    sclang = shutil.which("sclang")
    if sclang is None:
        pytest.skip("sclang cannot run: not installed (Debian supercollider-language; scripts/setup.sh installs it)")
    env = sclang_env()
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"))
    install = tmp_path / "install.scd"
    install.write_text(f'Quarks.install("{SC_DIR}"); ("INSTALLED " ++ Quarks.installed.collect(_.name)).postln; 0.exit;')
    r = subprocess.run([sclang, "-D", str(install)], capture_output=True, text=True, timeout=90, env=env,
                       stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert "INSTALLED [ Distill ]" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    assert str(SC_DIR) in (tmp_path / "config" / "SuperCollider" / "sclang_conf.yaml").read_text()
    r = subprocess.run([sclang, "-D", str(SC_DIR / "test_distill.scd"), str(engine.port), str(free_port()),
                        "quark"], capture_output=True, text=True, timeout=90, env=env, stdin=subprocess.DEVNULL,
                       cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and re.search(r"DISTILL-TEST OK .* errors=0 gui=off help=ok", out), out[-3000:]
    assert engine.state()[f"{P}/seed"] == [1234]  # the engine heard the class's object


# -- Pure Data ---------------------------------------------------------------------------------------


def test_pd_nogui_runs_the_control_patch_with_the_test_driver(engine):
    pd = shutil.which("pd")
    if pd is None:
        pytest.skip("pd cannot run: not installed (Debian puredata; scripts/setup.sh installs it)")
    before = len(engine.errors())
    reply_port = free_port()
    r = subprocess.run([pd, "-nogui", "-noaudio", "-nomidi", "-stderr", "-send",
                        f"distill-test {engine.port} {reply_port}", "-open", str(PD_DIR / "test-driver.pd")],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "watchdog" not in out, f"pd failed ({r.returncode}):\n{out[-3000:]}"
    problems = [line for line in out.splitlines() if line.startswith(("error", "distill-error"))
                or "couldn't create" in line]
    assert not problems, "\n".join(problems)
    # Pd received the engine's replies (printed by [print distill-...] in distill.pd)
    registry = ParamRegistry(WORLDS, levels=4, codebook_size=64, cues=3)
    assert f"distill-namespace-end: {len(registry.params)}" in out, out[-3000:]
    assert "distill-state: /distill/gain 0.625" in out and "distill-dump-end:" in out, out[-3000:]
    # the engine received the patch's messages, the world slots named from /distill/namespace included
    state = engine.state()
    assert_values(state, {"play": 1, "gain": 0.625, "temperature": 0.75, "topk": 9, "topp": 0.6875,
                          "guidance": 2.5, f"world/{WORLDS[0]}": 0.5, f"world/{WORLDS[1]}": 0.25,
                          "descriptor/brightness": 0.25, "descriptor/noisiness": None, "freeze": 0, "loop": 24,
                          "levels": 2, "lock": 1, "mutate": 0.125, "seed": 99})
    assert engine.errors()[before:] == [], engine.errors()[before:]


def test_pd_opens_the_abstractions_help_patch_headless_without_errors():
    pd = shutil.which("pd")
    if pd is None:
        pytest.skip("pd cannot run: not installed (Debian puredata; scripts/setup.sh installs it)")
    r = subprocess.run([pd, "-nogui", "-noaudio", "-nomidi", "-stderr", "-open", str(PD_DIR / "distill-help.pd"),
                        "-send", "pd quit"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    problems = [line for line in out.splitlines() if "error" in line.lower() or "couldn't" in line]
    assert r.returncode == 0 and not problems, f"pd ({r.returncode}):\n{out[-3000:]}"


# -- Max: patcher JSON structure -----------------------------------------------------------------------

# (inlets, outlets) of the Max 8/9 objects the patches use; a new object class must be added here
MAX_UI = {"message": (2, 1), "comment": (1, 0), "slider": (1, 1), "toggle": (1, 1), "button": (1, 1),
          "number": (1, 2), "flonum": (1, 2), "bpatcher": (0, 0)}  # (distill.maxpat has no inlets or outlets)


def max_newobj_iolets(text: str) -> tuple[int, int]:
    words = [w for w in text.split() if not w.startswith("@")]
    name, n = words[0], len(words) - 1
    table = {"loadbang": (1, 1), "udpsend": (1, 0), "udpreceive": (1, 1), "prepend": (1, 1), "print": (1, 0),
             "s": (1, 0), "r": (0, 1), "gate": (2, 1), "i": (2, 1), "f": (2, 1), "+": (2, 1), "%": (2, 1),
             "metro": (2, 1), "fromsymbol": (1, 1), "meter~": (1, 1), "*~": (2, 1), "ezdac~": (2, 0),
             "zl": (2, 2), "sprintf": (1, 1)}
    if name in table:
        return table[name]
    if name in ("route", "sel", "select"):
        return n + 1, n + 1  # Max 7+: a right inlet, one outlet per argument and one for the rest
    if name in ("t", "trigger"):
        return 1, n
    if name == "pack":
        return n, 1
    if name == "unpack":
        return 1, n
    if name == "adc~":
        return 1, max(n, 1)
    raise AssertionError(f"unknown Max object {name!r}: add its inlet/outlet counts to the test")


def maxpats():
    files = sorted(MAX_DIR.glob("patchers/*.maxpat")) + sorted(MAX_DIR.glob("help/*.maxhelp"))
    assert {f.name for f in files} >= {"distill.maxpat", "distill-audio-and-metro.maxpat", "distill.maxhelp"}
    return files


@pytest.mark.parametrize("path", maxpats(), ids=lambda p: p.name)
def test_maxpat_is_valid_patcher_json(path):
    doc = json.loads(path.read_text())
    patcher = doc["patcher"]
    assert patcher["fileversion"] == 1 and patcher["appversion"]["major"] in (8, 9)
    assert len(patcher["rect"]) == 4 and isinstance(patcher["boxes"], list) and isinstance(patcher["lines"], list)
    boxes = {}
    for item in patcher["boxes"]:
        box = item["box"]
        for key in ("id", "maxclass", "numinlets", "numoutlets", "patching_rect"):
            assert key in box, (path.name, key, box)
        assert box["id"] not in boxes, f"duplicate id {box['id']}"
        assert len(box["patching_rect"]) == 4 and all(isinstance(v, (int, float)) for v in box["patching_rect"])
        cls = box["maxclass"]
        if cls in ("newobj", "message", "comment"):
            assert isinstance(box.get("text"), str) and box["text"].strip(), box
        expected = max_newobj_iolets(box["text"]) if cls == "newobj" else MAX_UI.get(cls)
        assert expected is not None, f"unknown maxclass {cls}"
        assert (box["numinlets"], box["numoutlets"]) == expected, (box["id"], box.get("text", cls), expected)
        if box["numoutlets"]:
            assert len(box.get("outlettype", [])) == box["numoutlets"], box
        boxes[box["id"]] = box
    assert patcher["lines"], "a patch without connections"
    seen = set()
    for item in patcher["lines"]:
        line = item["patchline"]
        (src, outlet), (dst, inlet) = line["source"], line["destination"]
        assert src in boxes and dst in boxes, line
        assert 0 <= outlet < boxes[src]["numoutlets"], (line, boxes[src].get("text", boxes[src]["maxclass"]))
        assert 0 <= inlet < boxes[dst]["numinlets"], (line, boxes[dst].get("text", boxes[dst]["maxclass"]))
        assert (src, outlet, dst, inlet) not in seen, f"duplicate line {line}"
        seen.add((src, outlet, dst, inlet))


def test_the_max_package_has_what_max_reads_and_a_help_patch_for_the_abstraction():
    """Max finds a package by package-info.json in Packages/<name>/, its abstractions in patchers/, and
    the help of [distill] in help/distill.maxhelp, which shows the abstraction itself."""
    info = json.loads((MAX_DIR / "package-info.json").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert MAX_DIR.name == info["name"] == "distill" and info["version"] == project["version"]
    assert info["max_version_min"].startswith("8") and {"macintosh", "windows"} <= set(info["os"])
    abstractions = {f.stem for f in (MAX_DIR / "patchers").glob("*.maxpat")}
    helps = {f.stem for f in (MAX_DIR / "help").glob("*.maxhelp")}
    assert helps and helps <= abstractions, (helps, abstractions)
    boxes = [b["box"] for b in json.loads((MAX_DIR / "help" / "distill.maxhelp").read_text())["patcher"]["boxes"]]
    assert any(b["maxclass"] == "bpatcher" and b["name"] == "distill.maxpat" for b in boxes)


# -- every OSC address a patch sends exists, with the right argument types ---------------------------------

WORLD = "<world>"  # worlds are model-specific: any world name in a patch is checked as this one
REGISTRY = ParamRegistry([WORLD], levels=8, codebook_size=1024, cues=8)
LAYER_TYPES = {f"{P}/dump": "", f"{P}/namespace": "", f"{P}/reply": "i?", f"{P}/subscribe": "i?",
               f"{P}/unsubscribe": "i?", f"{P}/midi/learn": "s", f"{P}/midi/save": "s"}
assert set(LAYER_TYPES) == {row[0] for row in namespace.LAYER_ROWS}
REPLIES = {row[0] for row in namespace.REPLY_ROWS} | {f"{P}/dump/end", f"{P}/namespace", f"{P}/namespace/end"}


def canonical(address: str) -> str:
    """Map a patch's world name (or a placeholder for one) to the test registry's world."""
    m = re.fullmatch(rf"{P}/world/([^/\s]+)", address)
    return f"{P}/world/{WORLD}" if m else address


def types_of(address: str) -> str | None:
    address = canonical(address)
    if address in REGISTRY.params:
        return REGISTRY.params[address].types
    return LAYER_TYPES.get(address)


def check_message(where: str, address: str, args: list[str]) -> None:
    """args: one letter per argument: n (a number, any numeric placeholder), i / f (known int / float),
    s (a string), * (any number of numbers)."""
    types = types_of(address)
    assert types is not None, f"{where}: {address} is not in the parameter registry (renamed?)"
    numeric = all(a in "nif*" for a in args)
    variadic = "*" in args
    n = len(args)
    if types == "":  # a trigger: nothing, or a button's 1 (its 0 does nothing)
        ok = n == 0 or (n == 1 and numeric)
    elif types in ("f", "b"):
        ok = n == 1 and numeric
    elif types == "i":
        ok = n == 1 and numeric and args[0] != "f"
    elif types == "s":
        ok = n == 1 and args[0] == "s"
    elif types == "f*":
        ok = numeric and n >= 1
    elif types == "i,f?":
        ok = numeric and (variadic or 1 <= n <= 2) and args[0] != "f"
    elif types == "i?":
        ok = numeric and n <= 1
    else:
        raise AssertionError(f"the test does not know type signature {types!r} of {address}")
    assert ok, f"{where}: {address} takes {types or 'no arguments'!r}, the patch sends {args or 'none'}"


def literal_kind(token: str) -> str:
    if re.fullmatch(r"\$[if]?\d+", token):
        return "n"
    if re.fullmatch(r"-?\d+", token):
        return "i"
    if re.fullmatch(r"-?\d*\.\d*(e-?\d+)?", token):
        return "f"
    return "s"


def max_messages(path: Path):
    """(where, address, args) for everything a Max patch sends, and every /distill address it routes."""
    doc = json.loads(path.read_text())["patcher"]
    boxes = {b["box"]["id"]: b["box"] for b in doc["boxes"]}
    into: dict[str, list[str]] = {}
    for line in doc["lines"]:
        into.setdefault(line["patchline"]["destination"][0], []).append(line["patchline"]["source"][0])
    sent, routed = [], []

    def source_args(box_id: str) -> list[str]:
        """Arguments a prepend box receives: what its sources send."""
        kinds = set()
        for src in into.get(box_id, []):
            b = boxes[src]
            text = b.get("text", "")
            if text.startswith("sprintf set "):
                continue  # renames the prepend (a world slot), sends nothing
            if b["maxclass"] in ("slider", "flonum", "number", "toggle"):
                kinds.add("n")
            elif text.startswith("pack "):
                kinds.add(" ".join("n" for _ in text.split()[1:]))
            elif text.split()[0] in ("f", "i", "gate", "t"):
                kinds.add("n")
            else:
                raise AssertionError(f"{path.name}: cannot tell what {text or b['maxclass']} sends into {box_id}")
        assert len(kinds) == 1, (box_id, kinds)
        return kinds.pop().split()

    for box in boxes.values():
        text = box.get("text", "")
        where = f"{path.name} {box['id']} [{text}]"
        if box["maxclass"] == "message":
            for part in text.split(","):
                words = part.split()
                if words and words[0].startswith(f"{P}/"):
                    sent.append((where, words[0], [literal_kind(w) for w in words[1:]]))
        elif box["maxclass"] == "newobj":
            words = text.split()
            if words[0] == "prepend" and len(words) > 1 and words[1].startswith(P):
                sent.append((where, words[1], source_args(box["id"])))
            elif words[0] == "sprintf" and any(w.startswith(P) for w in words):
                address = next(w for w in words if w.startswith(P)).replace("%s", "name")
                routed.append((where, address))
            elif words[0] == "route":
                routed += [(where, w) for w in words[1:] if w.startswith(P)]
    return sent, routed


def pd_objects(path: Path) -> list[tuple[int, str, str]]:
    """(index, kind, text) of every object of a .pd file's top-level canvas."""
    out = []
    text = path.read_text()
    for chunk in re.split(r"(?<!\\);\s*\n", text):
        m = re.match(r"#X (obj|msg|floatatom|text|symbolatom) \d+ \d+ ?(.*)", chunk, re.S)
        if m:
            body = m.group(2).replace("\n", " ").replace("\\$", "$").replace("\\;", ";").replace("\\,", ",")
            out.append((len(out), m.group(1), body))
    return out


def pd_messages(path: Path):
    objects = pd_objects(path)
    into: dict[int, list[tuple[int, int]]] = {}
    for m in re.finditer(r"#X connect (\d+) (\d+) (\d+) (\d+);", path.read_text()):
        src, outlet, dst, _ = map(int, m.groups())
        into.setdefault(dst, []).append((src, outlet))
    sent, routed = [], []
    for i, kind, text in objects:
        words = text.split()
        where = f"{path.name} #{i} [{text}]"
        if kind == "obj" and words[0] == "oscformat":
            fmt = None
            if words[1:2] == ["-f"]:
                fmt, words = words[2], words[2:]
            address = "/" + "/".join(words[1:])
            if fmt is not None:
                args = ["n" if c in "if" else "s" for c in fmt]
            else:
                args = sorted({pd_source_args(objects, into, src, outlet) for src, outlet in into.get(i, [])} - {None})
                assert len(args) == 1, (where, args)
                args = args[0].split()
            sent.append((where, address, args))
        elif kind == "msg" and words[:3] == ["set", "distill", "world"]:
            sent.append((where, "/distill/world/name", ["n"]))  # renames a world slot's [oscformat]
        elif kind == "obj" and words[0] in ("route", "makefilename"):
            routed += [(where, w.replace("%s", "name")) for w in words[1:] if w.startswith(P)]
    return sent, routed


def pd_source_args(objects, into, src: int, outlet: int) -> str | None:
    kind, text = objects[src][1], objects[src][2]
    words = text.split()
    if kind == "floatatom" or words[0] in ("hsl", "vsl", "tgl", "nbx", "f", "spigot"):
        return "n"
    if kind == "msg" and words[0] == "set":
        return None  # renames the [oscformat] (a world slot), sends nothing
    if words[0] == "t":
        return {"b": "", "f": "n"}[words[1 + outlet]]
    if words[0] == "bng":
        return ""
    if words[0] == "sel" and outlet == 0:
        return ""
    if words[0] == "pack":
        return " ".join("n" for _ in words[1:])
    raise AssertionError(f"cannot tell what [{text}] sends")


def sc_messages(path: Path):
    """Every OSC message the SuperCollider code builds: d.send(ADDRESS, args...) calls and [ADDRESS, args...]
    arrays (bundles), the address resolved from string literals (`"/distill/world/" ++ name` -> a world)."""
    source = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group().count("\n"), path.read_text(), flags=re.S)
    source = re.sub(r"//[^\n]*", "", source)
    sent, prefixes = [], []

    def split_args(s: str) -> list[str]:
        depth, cur, out = 0, "", []
        for ch in s:
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
            if ch == "," and depth == 0:
                out.append(cur.strip())
                cur = ""
            else:
                cur += ch
        if cur.strip():
            out.append(cur.strip())
        return out

    def resolve(expr: str) -> str | None:
        parts = [p.strip() for p in expr.split("++")]
        if not parts[0].startswith(f'"{P}/'):
            return None
        out = ""
        for part in parts:
            out += part.strip('"') if part.startswith('"') else ("loudness" if out.endswith("/descriptor/") else "name")
        return out

    def kind(expr: str) -> str:
        if expr.startswith("*"):
            return "*"
        if expr.endswith(".asString") or expr.startswith('"'):
            return "s"
        if expr.endswith(".asInteger") or re.fullmatch(r"-?\d+", expr):
            return "i"
        if expr.endswith(".asFloat") or re.fullmatch(r"-?\d+\.\d+", expr) or expr.startswith("if("):
            return "f"
        raise AssertionError(f"{path.name}: cannot tell the OSC type of {expr!r}: use .asFloat / .asInteger")

    def calls(opening: str, closing: str):
        for m in re.finditer(re.escape(opening), source):
            depth, j = 1, m.end()
            while depth:
                depth += {opening[-1]: 1, closing: -1}.get(source[j], 0)
                j += 1
            yield m.start(), source[m.end(): j - 1]

    for start, inner in list(calls("self.send(", ")")) + list(calls("[", "]")):
        args = split_args(inner)
        if not args:
            continue
        address = resolve(args[0])
        if address is None:
            continue
        line = source.count("\n", 0, start) + 1
        sent.append((f"{path.name}:{line}", address, [kind(a) for a in args[1:]]))
    for m in re.finditer(rf'"({P}/[^"]*)"', source):
        if m.group(1).endswith("/"):
            prefixes.append((path.name, m.group(1)))
    return sent, prefixes


def all_patch_messages():
    sent, routed = [], []
    for path in maxpats():
        s, r = max_messages(path)
        sent += s
        routed += r
    for path in sorted(PD_DIR.glob("*.pd")):
        s, r = pd_messages(path)
        sent += s
        routed += r
    for path in sorted(SC_DIR.glob("*.scd")):
        s, _ = sc_messages(path)
        sent += s
    return sent, routed


def test_every_address_a_patch_sends_is_in_the_registry_with_the_right_types():
    sent, routed = all_patch_messages()
    for where, address, args in sent:
        check_message(where, address, args)
    for where, address in routed:
        assert canonical(address) in REGISTRY.params or address in REPLIES or \
            address.removesuffix("/free") in REGISTRY.params, f"{where}: {address} is neither a control nor a reply"
    # every patch covers the whole control surface (worlds through a slot, descriptors each)
    generic = lambda a: re.sub(r"/descriptor/[^/]+", "/descriptor/D", canonical(a))  # noqa: E731 (SC: any name)
    wanted = {generic(a) for a in REGISTRY.params} - {f"{P}/model", f"{P}/mix"}
    for name, glob in (("Max", "max/distill/patchers/*.maxpat"), ("Pd", "puredata/distill/distill.pd"),
                       ("SuperCollider", "supercollider/Distill/Distill.scd")):
        files = [str(p.relative_to(PATCHES)) for p in PATCHES.glob(glob)]
        covered = {generic(a) for w, a, _ in sent if any(w.startswith(Path(f).name) for f in files)}
        assert not wanted - covered, f"{name} patches do not send {sorted(wanted - covered)}"
    sc = {canonical(a) for w, a, _ in sent if w.startswith("Distill.scd")}
    assert {f"{P}/model", f"{P}/mix"} <= sc


def test_a_renamed_parameter_breaks_the_address_check(monkeypatch):
    renamed = ParamRegistry([WORLD], levels=8, codebook_size=1024, cues=8)
    renamed.params[f"{P}/heat"] = renamed.params.pop(f"{P}/temperature")
    monkeypatch.setattr(sys.modules[__name__], "REGISTRY", renamed)
    sent, _ = all_patch_messages()
    failures = []
    for where, address, args in sent:
        try:
            check_message(where, address, args)
        except AssertionError as e:
            failures.append(str(e))
    assert any("temperature" in f and f.startswith(("distill.maxpat", "distill.pd", "Distill.scd")) for f in failures)
    assert {f.split()[0].split(":")[0] for f in failures} >= {"distill.maxpat", "distill.pd", "Distill.scd"}
    with pytest.raises(AssertionError, match="takes"):
        check_message("x", f"{P}/gain", ["s"])


def test_patch_readmes_explain_the_three_steps_how_to_install_each_package_and_point_to_the_midi_maps():
    text = (PATCHES / "README.md").read_text()
    for needed in ("distill-live serve", "/distill/reply", "midi-maps", "midi.md", "sclang", "pd -nogui", "udpreceive",
                   "Max 9/Packages", "Quarks.install(", "Recompile", "Pd's path", "distill-help.pd", "distill.tosc",
                   "distill-open-stage-control.json", "--model"):
        assert needed in text, needed
    shipped_maps = sorted((ROOT / "distill_live" / "control" / "midi" / "maps").glob("*.toml"))
    assert shipped_maps, "no shipped MIDI maps found"
    for shipped in shipped_maps:
        assert shipped.stem in text, f"distill_live/patches/README.md does not mention the {shipped.stem} MIDI map"
    assert DESCRIPTORS  # the descriptor sliders are named after these


def test_the_generators_write_the_committed_patches_from_the_registry(monkeypatch):
    """patches/tools/*.py take the controls' names and ranges from the registry: run now, they write
    exactly the committed files of distill_live/patches/."""
    monkeypatch.syspath_prepend(str(TOOLS))  # their `from registry import ...`
    for tool in sorted(TOOLS.glob("make_*.py")):
        files = runpy.run_path(str(tool))["files"]()
        assert files, f"{tool.name} writes nothing"
        for rel, content in files.items():
            committed = PATCHES / rel
            data = content if isinstance(content, bytes) else content.encode("utf-8")
            assert committed.is_file() and committed.read_bytes() == data, \
                f"distill_live/patches/{rel} differs from what {tool.name} writes now: rerun it and commit"

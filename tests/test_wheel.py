"""The player's way in: the wheel, built from the tracked files and installed into a fresh virtualenv
without the dev extra and without the repository on the path, plays the bundled demo, writes the
patches and describes the demo (the README's quick start, as a musician runs it), on each Python
distill supports that this machine has (pythonX.Y on the PATH, or pyenv's).

torch must be a CPU build, never PyPI's CUDA one (several GB): for the developer's own Python, the
.venv's torch, pinned (pip's cache or its find-links have it); for another Python, a CPU wheel pip has
at hand (find-links, no index), else PyTorch's CPU index when it can be reached, else that Python is
skipped, saying why. On the project's machines only 3.11 has a CPU wheel at hand.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf
import torch

pytestmark = pytest.mark.slow  # builds a wheel and a virtualenv per Python (about a minute each, pip's cache reused)

ROOT = Path(__file__).resolve().parent.parent
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PYTHONS = ["3.11", "3.12", "3.13"]  # pyproject's classifiers


def run(cmd: list, cwd: Path, env: dict, timeout: float = 600) -> str:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, \
        f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


def interpreter(version: str) -> str | None:
    """A Python `version` (e.g. "3.12") that can make a virtualenv: this one, pythonX.Y, or pyenv's."""
    if version == "%d.%d" % sys.version_info[:2]:
        return getattr(sys, "_base_executable", sys.executable)
    candidates = [shutil.which(f"python{version}"),
                  *sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")))]
    for python in filter(None, candidates):
        r = subprocess.run([python, "-c", "import sys, ensurepip; print('%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if r.returncode == 0 and r.stdout.strip() == version:
            return python
    return None


def cpu_index_reachable() -> bool:
    try:
        urllib.request.urlopen(f"{CPU_INDEX}/torch/", timeout=5)
        return True
    except OSError:
        return False


def install_cpu_torch(pip: list, version: str, work: Path, env: dict) -> str | None:
    """Install a CPU build of torch with `pip`; None when done, else why it cannot be done here."""
    if version == "%d.%d" % sys.version_info[:2]:
        spec = ["torch==" + torch.__version__]  # the .venv's: a CPU build on a machine set up by setup.sh
        if torch.__version__.endswith("+cpu") and cpu_index_reachable():
            spec += ["--extra-index-url", CPU_INDEX]
        run(pip + spec, work, env)
        return None
    local = subprocess.run(pip + ["--no-index", "torch"], cwd=work, env=env, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL)
    if local.returncode == 0:
        return None
    if cpu_index_reachable():
        run(pip + ["torch", "--index-url", CPU_INDEX], work, env)
        return None
    return (f"no CPU build of torch for Python {version} at hand (pip's find-links has none and PyTorch's CPU "
            "index cannot be reached); PyPI's is the CUDA build, several GB")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[Path, dict]:
    """(the wheel built from the tracked files, an environment without the repository or the dev venv on it)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"  # the tracked files only, as a fresh clone has them
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(ROOT)))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", work / "dist", src], work, env)
    return next((work / "dist").glob("distill-*.whl")), env


@pytest.fixture(scope="module", params=PYTHONS, ids=lambda v: f"python{v}")
def installed(request, wheel, tmp_path_factory) -> tuple[Path, dict]:
    """(the bin folder of a fresh venv of one Python with the wheel installed, the environment to run it in)."""
    version = request.param
    python = interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version} on this machine (neither python{version} nor pyenv's)")
    wheel_file, env = wheel
    env = dict(env)
    work = tmp_path_factory.mktemp(f"venv{version}")
    run([python, "-m", "venv", work / "venv"], work, env)
    bin_dir = work / "venv" / ("Scripts" if os.name == "nt" else "bin")
    pip = [bin_dir / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    why_not = install_cpu_torch(pip, version, work, env)
    if why_not:
        pytest.skip(why_not)
    run(pip + [wheel_file], work, env)
    env["VIRTUAL_ENV"] = str(work / "venv")
    env["PATH"] = str(bin_dir) + os.pathsep + env["PATH"]
    return bin_dir, env


def test_the_wheel_installs_without_the_dev_extra_or_the_repository(installed, tmp_path):
    bin_dir, env = installed
    where = run([bin_dir / "python", "-c", "import distill_live, importlib.util as u; print(distill_live.__file__); "
                 "print(u.find_spec('pytest') is None and u.find_spec('jack') is None)"], tmp_path, env).split()
    assert Path(where[0]).is_relative_to(bin_dir.parent) and not Path(where[0]).is_relative_to(ROOT), where
    assert where[1] == "True", "the dev extra (pytest, JACK-Client) came along"


def test_serve_with_no_model_plays_the_bundled_demo_and_every_path_it_prints_exists(installed, tmp_path):
    bin_dir, env = installed
    out = run([bin_dir / "distill-live", "serve", "--output", "x.wav", "--seconds", 3, "--osc-port", 0,
               "--oscquery-port", 0], tmp_path, env, timeout=180)
    assert re.search(r"playing \S+demo\.distill recording to x\.wav", out), out
    audio, rate = sf.read(tmp_path / "x.wav")
    assert 2.5 < len(audio) / rate < 4.0 and abs(audio).max() > 1e-3, (len(audio) / rate, abs(audio).max())
    # every absolute path it prints, but OSC addresses and devices it says are missing (/dev/snd/seq)
    paths = [Path(p.rstrip(".,;:)")) for p in re.findall(r"(?:^|(?<=[\s'(]))(/[^\s'\"`]+)", out, re.M)
             if not p.startswith(("/distill", "/dev/"))]
    assert any(p.name == "patches" for p in paths), out
    missing = [str(p) for p in paths if not p.exists()]
    assert not missing, f"serve printed paths a pip user does not have: {missing}\n{out}"


def test_patches_writes_every_shipped_patch_into_a_folder(installed, tmp_path):
    bin_dir, env = installed
    out = run([bin_dir / "distill-live", "patches", tmp_path / "mine"], tmp_path, env)
    written = {p.relative_to(tmp_path / "mine").as_posix() for p in (tmp_path / "mine").rglob("*") if p.is_file()}
    shipped = {p.relative_to(ROOT / "distill_live" / "patches").as_posix()
               for p in (ROOT / "distill_live" / "patches").rglob("*") if p.is_file()}
    maps = {f"midi-maps/{p.name}" for p in (ROOT / "distill_live" / "control" / "midi" / "maps").glob("*.toml")}
    assert written == shipped | maps, (written ^ (shipped | maps))
    for rel in ("max/distill/package-info.json", "supercollider/Distill/Distill.quark",
                "puredata/distill/distill-help.pd", "layouts/distill.tosc"):
        assert rel in written, rel
    assert "Quarks.install(" in out and str(tmp_path / "mine") in out, out


def test_info_with_no_model_describes_the_bundled_demo(installed, tmp_path):
    bin_dir, env = installed
    out = run([bin_dir / "distill-live", "info"], tmp_path, env)
    assert re.search(r"worlds\s+bells, breath, drones, strings", out), out


def test_without_python_rtmidi_serve_plays_and_says_in_one_line_why_midi_is_off(installed, tmp_path):
    """What a Python 3.13 user gets (python-rtmidi has no wheel there, so pyproject leaves it out): the
    rest installs and plays. Last in this file: it uninstalls python-rtmidi from the module's venv."""
    bin_dir, env = installed
    run([bin_dir / "python", "-m", "pip", "uninstall", "-y", "-q", "python-rtmidi"], tmp_path, env)
    out = run([bin_dir / "distill-live", "serve", "--output", "x.wav", "--seconds", 1, "--osc-port", 0,
               "--oscquery-port", 0], tmp_path, env, timeout=180)
    midi = [line for line in out.splitlines() if "MIDI" in line]
    assert len(midi) == 1 and "MIDI is off: python-rtmidi is not installed" in midi[0] \
        and "pip install python-rtmidi" in midi[0], out
    assert abs(sf.read(tmp_path / "x.wav")[0]).max() > 1e-3

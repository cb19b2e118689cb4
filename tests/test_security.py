"""No pickle anywhere: a model file or checkpoint is shared between people and must never run code.

The scan reads every .py file of both packages as code (tokens and syntax tree, so the docstrings that
say "never pickle" do not count) and fails naming file:line for: torch.load without weights_only=True,
numpy.load with allow_pickle=True, and any use of pickle, dill, joblib, cloudpickle, shelve or marshal.
The checkpoint and model writers are then run and their files checked to be plain safetensors.
"""
from __future__ import annotations

import ast
import io
import json
import struct
import tokenize
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["distill_live", "distill_train"]
FORBIDDEN = {"pickle", "cPickle", "_pickle", "dill", "joblib", "cloudpickle", "shelve", "marshal"}


def _is_true(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def problems(source: str, name: str) -> list[str]:
    """'file:line: what' for every way `source` could unpickle."""
    found = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.string in FORBIDDEN:
            found.append(f"{name}:{tok.start[0]}: uses {tok.string}")
    for node in ast.walk(ast.parse(source, name)):
        if not isinstance(node, ast.Call):
            continue
        callee = ast.unparse(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        if callee in ("torch.load", "load"):  # `load` alone: from torch import load
            if not _is_true(keywords.get("weights_only")):
                found.append(f"{name}:{node.lineno}: {callee}( without weights_only=True")
        if callee in ("np.load", "numpy.load") and _is_true(keywords.get("allow_pickle")):
            found.append(f"{name}:{node.lineno}: {callee}(allow_pickle=True)")
    return found


def sources() -> list[Path]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(files) > 10, files  # the packages are where this test thinks they are
    return files


def test_no_pickle_in_either_package():
    found = []
    for path in sources():
        found += problems(path.read_text(), str(path.relative_to(ROOT)))
    assert not found, "pickle could run code here:\n" + "\n".join(found)


@pytest.mark.parametrize("code, hit", [
    ("import pickle\n", "uses pickle"),
    ("from pickle import loads\n", "uses pickle"),
    ("x = pickle.loads(b'')\n", "uses pickle"),
    ("import dill as d\n", "uses dill"),
    ("from joblib import load\n", "uses joblib"),
    ("import torch\nm = torch.load('m.pt')\n", "torch.load( without weights_only=True"),
    ("import torch\nm = torch.load(\n    'm.pt',\n    weights_only=False)\n", "torch.load("),
    ("from torch import load\nm = load('m.pt')\n", "load( without weights_only=True"),
    ("import numpy as np\nx = np.load('a.npy', allow_pickle=True)\n", "allow_pickle=True"),
])
def test_the_scan_finds_each_kind_and_names_the_line(code, hit):
    found = problems(code, "x.py")
    assert found and hit in found[0] and found[0].startswith("x.py:"), found
    line = int(found[0].split(":")[1])
    assert line == next(i for i, text in enumerate(code.splitlines(), 1) if any(
        w in text for w in ("pickle", "dill", "joblib", "load(", "load(\n"))), found


@pytest.mark.parametrize("code", [
    '"""Never pickle: a model file must not run code."""\n',
    "# no pickle here\nx = 1\n",
    "import torch\nm = torch.load('m.pt', weights_only=True)\n",
    "from safetensors.torch import load_file\nt = load_file('m.safetensors')\n",
    "import json\nd = json.load(open('a.json'))\n",
])
def test_the_scan_passes_safe_code(code):
    assert problems(code, "x.py") == []


def is_plain_safetensors(path: Path) -> dict:
    """The header of a safetensors file, after checking that is all the file is (no zip, no pickle)."""
    raw = path.read_bytes()
    assert not raw.startswith(b"PK") and not raw.startswith(b"\x80"), f"{path} is a zip or a pickle"
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    end = max(e["data_offsets"][1] for k, e in header.items() if k != "__metadata__")
    assert 8 + n + end == len(raw), f"{path} holds more than its tensors"
    return header


def test_checkpoints_are_written_and_read_as_safetensors(tmp_path, monkeypatch):
    """A real checkpoint through the training loop: plain safetensors, and read back without torch.load."""
    from distill_train import loop

    class Tiny(loop.Stage):
        name = "tiny"

        def __init__(self):
            self.net = nn.Linear(3, 2)

        def modules(self):
            return {"net": self.net}

        def train_step(self, step):
            return self.net(torch.ones(4, 3)).pow(2).mean(), {}

    path = tmp_path / "checkpoint-tiny.safetensors"
    settings = loop.Settings(steps=4, batch_size=4, lr=1e-2, checkpoint_every=2, eval_every=10, quiet=True)
    loop.run(Tiny(), settings, path, resume=False, log=lambda _: None)
    header = is_plain_safetensors(path)
    assert "distill_checkpoint" in header["__metadata__"]
    assert any(k.startswith("optim.") for k in header) and any(k.startswith("model.net.") for k in header)

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called on a checkpoint")

    monkeypatch.setattr(torch, "load", refuse)
    loop.run(Tiny(), loop.Settings(steps=6, batch_size=4, lr=1e-2, quiet=True), path, resume=True,
             log=lambda _: None)
    assert loop.read_checkpoint(path)[0]["step"] == 6


def test_model_files_are_plain_safetensors(tmp_path):
    from distill_live.model.modelfile import save_model
    from test_modelfile import make_model

    path = tmp_path / "m.distill"
    save_model(path, make_model())
    assert "distill" in is_plain_safetensors(path)["__metadata__"]

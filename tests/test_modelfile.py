"""The .distill file: round trip, and every kind of damage refused with one sentence naming the file."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from distill_live.live.player import render
from distill_live.model.modelfile import FORMAT_VERSION, DistillModel, ModelFileError, load_model, save_model
from models import random_model

ROOT = Path(__file__).resolve().parents[1]
META = {
    "manifest": {"worlds": ["bells", "noise"], "seconds": 12.5,
                 "files": [{"path": "bells/a.wav", "world": "bells"}, {"path": "noise/b.wav", "world": "noise"}]},
    "descriptor_stats": {"loudness": [-60.0, 0.0], "brightness": [100.0, 4000.0], "noisiness": [0.0, 1.0]},
    "health": [{"level": i, "utilization": 0.5, "perplexity": 9.0, "dead": 16} for i in range(4)],
    "history": {"codec": {"steps": 10}, "prior": {"steps": 5, "memorisation": {"longest_copy_frames": 3}}},
}


def make_model(with_prior: bool = True) -> DistillModel:
    model = random_model(cues=(30, 41, 7))
    model.meta = json.loads(json.dumps(META))
    if not with_prior:
        model.prior = None
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, DistillModel]:
    path = tmp_path_factory.mktemp("model") / "good.distill"
    model = make_model()
    save_model(path, model)
    return path, model


def refused(path: Path) -> str:
    with pytest.raises(ModelFileError) as e:
        load_model(path)
    message = str(e.value)
    assert str(path) in message, message
    assert "\n" not in message, message
    return message


def header_of(path: Path) -> tuple[dict, int]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), n


# -- round trip ------------------------------------------------------------------------------------

def test_round_trip_keeps_weights_cues_and_meta(saved):
    path, model = saved
    loaded = load_model(path)
    assert loaded.config.to_dict() == model.config.to_dict()
    for name, a, b in (("codec", model.codec, loaded.codec), ("prior", model.prior, loaded.prior)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys(), name
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"{name}.{k}"
    assert len(loaded.cues) == len(model.cues)
    for a, b in zip(model.cues, loaded.cues):
        assert torch.equal(a, b)
    for key, value in META.items():
        assert loaded.meta[key] == value
    assert loaded.worlds == ["bells", "noise"]
    assert not loaded.codec.training and not loaded.prior.training


def test_a_model_from_before_the_heads_were_conditioned_loads_as_it_was_trained(saved):
    """Model files written before `condition_heads` and `descriptor_bins` existed lack the fields: their
    prior was trained with the conditioning on the temporal model's input only, reading each descriptor
    as its raw value, and must play that way. tests/data holds one: the demo shipped until 2026-12-05."""
    prior = load_model(saved[0]).config.prior
    assert prior.condition_heads and prior.descriptor_bins == 8  # what training writes now
    old = load_model(ROOT / "tests" / "data" / "demo-before-conditioned-heads.distill")
    assert old.config.prior.condition_heads is False and old.config.prior.descriptor_bins == 1
    audio = render(old, 1.0, seed=0, messages=[(0.0, "/distill/descriptor/brightness", [0.8])])
    assert np.isfinite(audio).all() and np.sqrt(np.mean(audio ** 2)) > 1e-3


def test_codec_only_model_round_trips(tmp_path):
    path = tmp_path / "codec.distill"
    save_model(path, make_model(with_prior=False))
    loaded = load_model(path)
    assert loaded.prior is None
    assert loaded.info()["prior"] is None


def test_info_has_the_documented_keys(saved):
    info = load_model(saved[0]).info()
    for key in ("format_version", "sample_rate", "hop", "levels", "codebook_size", "worlds", "cues", "health"):
        assert key in info
    assert info["format_version"] == 1  # without recordings, written as older distill can read it
    assert info["corpus"] is None
    assert info["worlds"] == ["bells", "noise"]
    assert info["cues"] == 3
    for h in info["health"]:
        assert {"utilization", "perplexity", "dead"} <= set(h)
    json.dumps(info)  # JSON-able


def test_distill_live_info_json(saved):
    if not (ROOT / "distill_live" / "commands" / "info.py").exists():
        pytest.skip("distill-live info is not there yet")
    r = subprocess.run([sys.executable, "-m", "distill_live", "info", str(saved[0]), "--json"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["levels"] == 4 and info["cues"] == 3 and info["worlds"] == ["bells", "noise"]
    assert len(info["health"]) == 4


def test_distill_live_info_refuses_a_damaged_file_in_one_line(tmp_path):
    if not (ROOT / "distill_live" / "commands" / "info.py").exists():
        pytest.skip("distill-live info is not there yet")
    bad = tmp_path / "bad.distill"
    bad.write_bytes(os.urandom(300))
    r = subprocess.run([sys.executable, "-m", "distill_live", "info", str(bad)], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


# -- damage ----------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    refused(tmp_path / "nothing.distill")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.distill"
    path.write_bytes(b"")
    refused(path)


@pytest.mark.parametrize("keep", [0.5, 0.999, 0.01])
def test_truncated_file(saved, tmp_path, keep):
    raw = saved[0].read_bytes()
    path = tmp_path / "truncated.distill"
    path.write_bytes(raw[: int(len(raw) * keep)])
    refused(path)


def test_random_bytes(tmp_path):
    gen = torch.Generator().manual_seed(5)
    path = tmp_path / "noise.distill"
    path.write_bytes(bytes(torch.randint(256, (5000,), generator=gen, dtype=torch.uint8).tolist()))
    refused(path)


def test_header_length_absurd(tmp_path):
    path = tmp_path / "huge-header.distill"
    path.write_bytes(struct.pack("<Q", 2 ** 62) + b"{}")
    refused(path)


@pytest.mark.parametrize("where", ["length", "json-start", "dtype", "shape-digit"])
def test_bit_flipped_in_header(saved, tmp_path, where):
    raw = bytearray(saved[0].read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    header = bytes(raw[8:8 + n])
    if where == "length":
        pos, bit = 3, 0x01  # header length grows by 2**24: larger than the file
    elif where == "json-start":
        pos, bit = 8, 0x01  # '{' -> 'z'
    elif where == "dtype":
        pos, bit = 8 + header.index(b'"F32"') + 3, 0x01  # "F32" -> "F33"
    else:
        anchor = header.index(b'"shape":[') + len(b'"shape":[')
        pos, bit = 8 + anchor, 0x04  # first digit of a shape changes
    raw[pos] ^= bit
    path = tmp_path / f"flipped-{where}.distill"
    path.write_bytes(bytes(raw))
    refused(path)


def rewrite(src: Path, dst: Path, edit_tensors=None, edit_meta=None, metadata=None) -> Path:
    tensors = load_file(src)
    header, _ = header_of(src)
    meta = json.loads(header["__metadata__"]["distill"])
    if edit_tensors:
        edit_tensors(tensors)
    if edit_meta:
        edit_meta(meta)
    save_file(tensors, dst, metadata=metadata if metadata is not None else {"distill": json.dumps(meta)})
    return dst


def test_foreign_safetensors_without_metadata(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, path)
    assert "distill" in refused(path)


def test_foreign_safetensors_with_other_metadata(saved, tmp_path):
    path = rewrite(saved[0], tmp_path / "other.safetensors", metadata={"format": "pt"})
    refused(path)


def test_foreign_model_type(saved, tmp_path):
    path = rewrite(saved[0], tmp_path / "rave.distill", edit_meta=lambda m: m.update(model_type="rave"))
    refused(path)


def test_newer_format_version(saved, tmp_path):
    path = rewrite(saved[0], tmp_path / "future.distill",
                   edit_meta=lambda m: m.update(format_version=FORMAT_VERSION + 1))
    assert "newer" in refused(path)


def test_missing_tensor(saved, tmp_path):
    def drop(t):
        del t[next(k for k in t if k.startswith("prior."))]
    assert "missing" in refused(rewrite(saved[0], tmp_path / "missing.distill", edit_tensors=drop))


def test_missing_cue(saved, tmp_path):
    assert "missing" in refused(rewrite(saved[0], tmp_path / "cue.distill", edit_tensors=lambda t: t.pop("cues.2")))


def test_wrong_shape(saved, tmp_path):
    def reshape(t):
        key = next(k for k in t if k.startswith("codec.") and t[k].dim() == 2)
        t[key] = torch.zeros(t[key].shape[0] + 1, t[key].shape[1])
    assert "shape" in refused(rewrite(saved[0], tmp_path / "shape.distill", edit_tensors=reshape))


def test_cue_with_codes_outside_the_codebook(saved, tmp_path):
    def spoil(t):
        t["cues.0"] = t["cues.0"].clone()
        t["cues.0"][3, 1] = 999
    refused(rewrite(saved[0], tmp_path / "cue-range.distill", edit_tensors=spoil))


def test_nan_weights(saved, tmp_path):
    def spoil(t):
        key = next(k for k in t if k.startswith("codec.") and t[k].is_floating_point())
        t[key] = t[key].clone()
        t[key].view(-1)[0] = float("nan")
    refused(rewrite(saved[0], tmp_path / "nan.distill", edit_tensors=spoil))


def test_huge_declared_shape_is_refused_without_allocating(saved, tmp_path):
    raw = saved[0].read_bytes()
    header, n = header_of(saved[0])
    name = next(k for k in header if k.startswith("codec."))
    header[name]["shape"] = [2 ** 40, 2 ** 30]  # 4 EiB of floats if anyone believed it
    blob = json.dumps(header).encode()
    path = tmp_path / "huge.distill"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n:])
    assert "does not fit" in refused(path)  # refused by the header check, before any tensor is read


def test_invalid_config(saved, tmp_path):
    def spoil(m):
        m["config"]["codec"]["wobble"] = 3
    refused(rewrite(saved[0], tmp_path / "config.distill", edit_meta=spoil))


def test_loading_and_playing_a_model_leaves_torchs_compiler_unimported():
    """torch._dynamo takes over a second to import (1.3 s of CPU here): every distill-live command would
    pay it at start. It came in through einx (vector_quantize_pytorch's) and through tables and
    initialisers run on the meta device, where a model file's shapes are checked."""
    script = ("import sys; from distill_live.model.modelfile import load_model; "
              "from distill_live.live.player import render; import torch\n"
              "model = load_model(sys.argv[1]); render(model, 0.2, seed=1)\n"
              "with torch.no_grad(): model.codec.encode(torch.zeros(1, model.config.codec.hop * 4))\n"
              "print('torch._dynamo' in sys.modules)")
    demo = Path(__file__).resolve().parent.parent / "distill_live" / "demo" / "demo.distill"
    r = subprocess.run([sys.executable, "-c", script, str(demo)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "False", "loading a model imported torch._dynamo"

"""Fuzzing the .distill loader: whatever the bytes, load_model returns a model or raises ModelFileError with
one line naming the file, and a hostile file is refused before it can make the loader allocate memory.

tests/test_modelfile.py has one hand-made example of each kind of damage; this file throws many at it:
every truncation length near the start and a spread of them after, seeded bit flips all over the file
(the checksum makes every one of them detectable), metadata keys dropped or given values of the wrong
type, tensors of the wrong dtype, configurations that declare enormous models, files that are not
safetensors at all (a pickle among them, which must never be unpickled), folders and empty files.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from distill_live.model.modelfile import ModelFileError, load_model, save_model
from test_modelfile import make_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "good.distill"
    save_model(path, make_model())
    load_model(path)  # the original is fine
    return path


def refused(path: Path) -> str:
    """load_model(path) must raise ModelFileError: one line that names the file."""
    try:
        load_model(path)
    except ModelFileError as e:
        message = str(e)
    else:
        raise AssertionError(f"{path.name} was loaded")
    assert str(path) in message, message
    assert "\n" not in message and len(message) < 300 + len(str(path)), message
    return message


def loads_or_refused(path: Path) -> None:
    """Either outcome is fine; anything but ModelFileError is a bug."""
    try:
        load_model(path)
    except ModelFileError as e:
        assert str(path) in str(e) and "\n" not in str(e), str(e)


def parts(path: Path) -> tuple[dict, dict, bytes]:
    """(safetensors header, distill metadata, data section) of a model file."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    return header, json.loads(header["__metadata__"]["distill"]), raw[8 + n:]


def assemble(path: Path, header: dict, data: bytes) -> Path:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def with_meta(good: Path, path: Path, meta: dict) -> Path:
    """The good file with other metadata, tensors untouched (no checksum unless `meta` brings one)."""
    header, _, data = parts(good)
    header["__metadata__"] = {"distill": json.dumps(meta)}
    return assemble(path, header, data)


def plain_meta(good: Path) -> dict:
    """The good file's metadata without its checksum, as a file from before checksums would have it, so
    that the checks behind the checksum are the ones that must catch what a test changes."""
    meta = parts(good)[1]
    meta.pop("checksum", None)
    return meta


# -- truncation and bit flips ------------------------------------------------------------------------

def test_the_fixture_loads_without_a_checksum_too(good, tmp_path):
    load_model(with_meta(good, tmp_path / "plain.distill", plain_meta(good)))


def test_truncated_at_every_offset_of_the_start_and_a_spread_after(good, tmp_path):
    raw = good.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    gen = torch.Generator().manual_seed(1)
    offsets = set(range(0, 80)) | set(range(8 + n - 40, 8 + n + 40))  # the length, the JSON's edges
    offsets |= set(torch.randint(0, len(raw), (120,), generator=gen).tolist()) | {len(raw) - 1}
    path = tmp_path / "cut.distill"
    for offset in sorted(offsets):
        path.write_bytes(raw[:offset])
        refused(path)


def test_every_sampled_bit_flip_is_refused(good, tmp_path):
    raw = good.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    gen = torch.Generator().manual_seed(2)
    header_positions = torch.randint(0, 8 + n, (150,), generator=gen).tolist()  # length, JSON, metadata
    data_positions = torch.randint(8 + n, len(raw), (80,), generator=gen).tolist()  # weights and cues
    bits = torch.randint(0, 8, (230,), generator=gen).tolist()
    path = tmp_path / "flipped.distill"
    for pos, bit in zip(header_positions + data_positions, bits):
        flipped = bytearray(raw)
        flipped[pos] ^= 1 << bit
        path.write_bytes(bytes(flipped))
        refused(path)


def test_a_changed_weight_is_caught_by_the_checksum(good, tmp_path):
    header, meta, data = parts(good)
    name = next(k for k in header if k.startswith("codec.") and header[k]["dtype"] == "F32")
    start = header[name]["data_offsets"][0]
    data = bytearray(data)
    data[start:start + 4] = struct.pack("<f", 0.123)  # a plausible value: only the checksum can tell
    assert "checksum" in refused(assemble(tmp_path / "changed.distill", header, bytes(data)))


# -- metadata ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["format_version", "model_type", "config", "has_prior", "cues"])
def test_each_required_metadata_key_missing(good, tmp_path, key):
    meta = plain_meta(good)
    del meta[key]
    refused(with_meta(good, tmp_path / f"no-{key}.distill", meta))


WRONG = [None, "3", 3.5, -1, True, [], {}, [1, 2], 10 ** 30, "x" * 10000, {"a": [[[[[[[[]]]]]]]]}]


@pytest.mark.parametrize("key", ["format_version", "model_type", "config", "has_prior", "cues"])
def test_each_metadata_key_with_values_of_the_wrong_type(good, tmp_path, key):
    for i, value in enumerate(WRONG):
        meta = plain_meta(good)
        if meta[key] == value and type(meta[key]) is type(value):
            continue
        meta[key] = value
        refused(with_meta(good, tmp_path / f"{key}-{i}.distill", meta))


def test_metadata_that_is_not_a_table_or_not_json(good, tmp_path):
    header, _, data = parts(good)
    for i, text in enumerate(["[1, 2]", "null", "\"distill\"", "{", "[" * 100000, "1" * 5000, "NaN"]):
        header["__metadata__"] = {"distill": text}
        refused(assemble(tmp_path / f"meta-{i}.distill", header, data))
    for i, metadata in enumerate([{"distill": 3}, {"distill": None}, {"other": "{}"}, [], "distill"]):
        header["__metadata__"] = metadata
        refused(assemble(tmp_path / f"metadata-{i}.distill", header, data))


def test_a_header_nested_too_deeply_for_the_json_parser(tmp_path):
    blob = b"[" * 200000 + b"]" * 200000
    path = tmp_path / "deep.distill"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)
    refused(path)


CONFIG_FIELDS = [("codec", k) for k in make_model().config.to_dict()["codec"]] + \
                [("prior", k) for k in make_model().config.to_dict()["prior"]]
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=10)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(CONFIG_FIELDS), value=JSON)
def test_any_value_in_any_config_field_loads_or_is_refused_in_one_line(good, tmp_path, field, value):
    meta = plain_meta(good)
    meta["config"][field[0]][field[1]] = value
    loads_or_refused(with_meta(good, tmp_path / "config.distill", meta))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["dtype", "shape", "data_offsets", None]), value=JSON)
def test_any_value_in_a_tensor_entry_is_refused(good, tmp_path, name, value):
    header, _, data = parts(good)
    key = sorted(k for k in header if k != "__metadata__")[3]
    if name is None:
        header[key] = value
    else:
        header[key][name] = value
    if header[key] == parts(good)[0][key]:
        return
    refused(assemble(tmp_path / "entry.distill", header, data))


# -- dtypes -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.int64, torch.bool])
def test_a_weight_of_the_wrong_dtype(good, tmp_path, dtype):
    tensors = load_file(good)
    name = next(k for k in tensors if k.startswith("codec.") and tensors[k].dtype == torch.float32)
    tensors[name] = tensors[name].to(dtype)
    path = tmp_path / "dtype.distill"
    save_file(tensors, path, metadata={"distill": json.dumps(plain_meta(good))})
    assert "expected F32" in refused(path)


def test_a_cue_of_floats(good, tmp_path):
    tensors = load_file(good)
    tensors["cues.0"] = tensors["cues.0"].float()
    path = tmp_path / "cue.distill"
    save_file(tensors, path, metadata={"distill": json.dumps(plain_meta(good))})
    assert "cue 0" in refused(path)


def test_a_tensor_the_model_does_not_know(good, tmp_path):
    tensors = load_file(good)
    tensors["codec.extra"] = torch.zeros(3)
    path = tmp_path / "extra.distill"
    save_file(tensors, path, metadata={"distill": json.dumps(plain_meta(good))})
    assert "codec.extra" in refused(path)


# -- not a model at all -----------------------------------------------------------------------------

def not_models(folder: Path, good: Path) -> list[Path]:
    """Files (and things that are not files) that are not distill models."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {
        "empty.distill": b"",
        "seven.distill": b"\x01" * 7,
        "text.distill": b"hello, this is not a model\n" * 20,
        "json.distill": json.dumps({"model_type": "distill"}).encode(),
        "wav.distill": b"RIFF$\x00\x00\x00WAVEfmt " + bytes(200),
        "png.distill": b"\x89PNG\r\n\x1a\n" + bytes(100),
        "zeros.distill": bytes(4096),
        "ones.distill": b"\xff" * 4096,
        "huge-header.distill": struct.pack("<Q", 2 ** 63 + 5) + b"{}",
        "header-just-too-long.distill": struct.pack("<Q", 100) + b"{" + b" " * 98,
    }
    paths = []
    for name, blob in made.items():
        (folder / name).write_bytes(blob)
        paths.append(folder / name)
    save_file({"weight": torch.zeros(4)}, folder / "foreign.safetensors", metadata={"format": "pt"})
    torch.save({"weight": torch.zeros(4)}, folder / "torch-save.distill")  # a zip holding a pickle
    (folder / "folder.distill").mkdir(exist_ok=True)
    paths += [folder / "foreign.safetensors", folder / "torch-save.distill", folder / "folder.distill"]
    return paths


def test_files_that_are_not_models(good, tmp_path):
    for path in not_models(tmp_path / "junk", good):
        refused(path)


class Boom:
    """Unpickling this writes a marker file: it shows whether anything ever unpickles a model file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).write_text, ("unpickled",))


def test_a_pickle_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.distill"
    torch.save({"weight": torch.zeros(2), "payload": Boom(str(marker))}, path)
    refused(path)
    assert not marker.exists()


def test_a_fifo_is_refused_without_blocking(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    path = tmp_path / "pipe.distill"
    os.mkfifo(path)
    assert "not a regular file" in refused(path)


def test_a_folder_is_named_as_a_folder(tmp_path):
    assert "folder" in refused(tmp_path)


# -- nothing large is allocated ---------------------------------------------------------------------

def hostile(folder: Path, good: Path) -> list[Path]:
    """Files that declare huge things: the loader must see through them without trying."""
    folder.mkdir(parents=True, exist_ok=True)
    header, meta, data = parts(good)
    plain = plain_meta(good)
    out = []

    def config(name, part, key, value):
        m = json.loads(json.dumps(plain))
        m["config"][part][key] = value
        out.append(with_meta(good, folder / name, m))

    config("enc-dim.distill", "codec", "enc_dim", 2 ** 24)  # ~ 2**48 weights if built
    config("codebook.distill", "codec", "codebook_size", 2 ** 24)
    config("prior-dim.distill", "prior", "dim", 2 ** 24)
    config("worlds.distill", "prior", "worlds", 2 ** 24)
    config("hop.distill", "codec", "hop", 2 ** 24)  # windows of 2**25 samples, rebuilt, never stored
    config("blocks.distill", "codec", "enc_blocks", 10 ** 9)  # a billion modules
    config("levels.distill", "codec", "levels", 10 ** 9)
    config("layers.distill", "prior", "layers", 10 ** 9)
    m = json.loads(json.dumps(plain))
    m["cues"] = 10 ** 9
    out.append(with_meta(good, folder / "cues.distill", m))
    # declared shapes and offsets far beyond the file
    name = next(k for k in header if k.startswith("codec."))
    for i, (shape, offsets) in enumerate([([2 ** 40, 2 ** 30], None), ([2 ** 31, 4], [0, 2 ** 35]),
                                          ([1] * 5000, None), ([2 ** 64, 0], None)]):
        h = json.loads(json.dumps(header))
        h[name]["shape"] = shape
        if offsets:
            h[name]["data_offsets"] = offsets
        out.append(assemble(folder / f"shape-{i}.distill", h, data))
    # the header length: huge, and just past the end of the file
    (folder / "length.distill").write_bytes(struct.pack("<Q", 2 ** 62) + b"{}")
    raw = good.read_bytes()
    (folder / "length-2.distill").write_bytes(struct.pack("<Q", len(raw)) + raw[8:])
    (folder / "length-3.distill").write_bytes(struct.pack("<Q", 60 * 2 ** 20) + b"{" * 1000)
    out += [folder / "length.distill", folder / "length-2.distill", folder / "length-3.distill"]
    return out


CHILD = textwrap.dedent("""
    import json, resource, sys, tracemalloc
    from pathlib import Path
    from distill_live.model.modelfile import ModelFileError, load_model
    load_model(sys.argv[1])  # warm up: imports, thread pools, allocator arenas
    vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:"))
    limit = vm + 512 * 2 ** 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    results = {}
    for path in sys.argv[2:]:
        tracemalloc.start()
        try:
            load_model(path)
            outcome = "loaded"
        except ModelFileError as e:
            outcome = "refused: " + str(e)
        except BaseException as e:  # MemoryError, RuntimeError from the allocator...
            outcome = f"CRASH {type(e).__name__}: {str(e)[:200]}"
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        results[path] = [outcome, peak]
    print(json.dumps(results))
""")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to measure the address space")
def test_huge_declarations_are_refused_before_allocating(good, tmp_path):
    """Under an address-space limit of 512 MiB above a warmed-up loader, so any attempt to build what
    these files declare would fail with MemoryError, each must be refused; tracemalloc shows Python
    itself allocated little while refusing."""
    paths = hostile(tmp_path / "hostile", good)
    r = subprocess.run([sys.executable, "-c", CHILD, str(good), *map(str, paths)], capture_output=True,
                       text=True, cwd=ROOT, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(r.stdout.strip().splitlines()[-1])
    for path in paths:
        outcome, peak = results[str(path)]
        assert outcome.startswith("refused: "), f"{path.name}: {outcome}"
        assert str(path) in outcome and "\n" not in outcome
        assert peak < 32 * 2 ** 20, f"{path.name}: Python allocated {peak / 2 ** 20:.0f} MiB while refusing it"


# -- through the command line ----------------------------------------------------------------------

def bad_files(folder: Path, good: Path) -> list[Path]:
    raw = good.read_bytes()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cut.distill").write_bytes(raw[: len(raw) // 3])
    flipped = bytearray(raw)
    flipped[len(raw) - 100] ^= 0x10
    (folder / "flipped.distill").write_bytes(bytes(flipped))
    return [folder / "cut.distill", folder / "flipped.distill", folder / "missing.distill",
            *not_models(folder / "junk", good), *hostile(folder / "hostile", good)[::3]]


def test_distill_live_info_refuses_each_in_one_line_with_exit_2(good, tmp_path, capsys):
    from distill_live.cli import main

    for path in bad_files(tmp_path, good):
        assert main(["info", str(path)]) == 2, path.name
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("distill-live: ") and str(path) in lines[0], captured.err
        assert captured.out == ""


@pytest.mark.parametrize("which", ["folder.distill", "torch-save.distill"])
def test_distill_live_info_as_a_process(good, tmp_path, which):
    path = next(p for p in not_models(tmp_path, good) if p.name == which)
    r = subprocess.run([sys.executable, "-m", "distill_live", "info", str(path)], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and str(path) in r.stderr and "Traceback" not in r.stderr

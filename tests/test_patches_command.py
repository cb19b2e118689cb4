"""`distill-live patches [DIR]`: it says where the patches are, copies them, and never replaces a file
a performer changed without --force (one sentence, nothing written). The installed-wheel run is in
test_wheel.py; these run the command in-process, on the repository's package."""
from __future__ import annotations

from pathlib import Path

from distill_live.cli import main
from distill_live.commands.bundled import PATCHES


def test_with_no_folder_it_says_where_each_package_is_and_every_path_exists(capsys):
    assert main(["patches"]) == 0
    out = capsys.readouterr().out
    paths = [Path(line.split()[-1]) for line in out.splitlines()[1:-1]]
    assert len(paths) >= 6 and all(p.exists() for p in paths), out
    assert str(PATCHES / "supercollider" / "Distill") in out


def test_a_changed_file_is_kept_unless_forced_and_nothing_is_written(tmp_path, capsys):
    out = tmp_path / "mine"
    assert main(["patches", str(out)]) == 0
    mine = out / "puredata" / "distill" / "distill-help.pd"
    mine.write_text("my own notes")
    (out / "README.md").unlink()
    assert main(["patches", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"'{mine}' already exists" in err and "--force" in err, err
    assert mine.read_text() == "my own notes" and not (out / "README.md").exists()  # nothing written
    assert main(["patches", str(out), "--force"]) == 0
    assert mine.read_bytes() == (PATCHES / "puredata" / "distill" / "distill-help.pd").read_bytes()


def test_a_file_where_the_folder_should_be_and_a_missing_model_are_refused_in_one_sentence(tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    assert main(["patches", str(tmp_path / "taken")]) == 2
    assert "it is a file, not a folder" in capsys.readouterr().err
    assert main(["patches", str(tmp_path / "mine"), "--model", str(tmp_path / "no.distill")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and not (tmp_path / "mine").exists(), err

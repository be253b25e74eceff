"""`transfer-studio data check|import|list` on synthetic folders (through a parser built here with `register`)."""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path

import pytest
from data_fixtures import image_bytes, make_tree

from core import cli_data
from core.data import store


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="transfer-studio")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_data.register(sub)
    args = parser.parse_args(argv)
    rc = args.func(args)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture()
def messy(tmp_path: Path) -> Path:
    """train/val class folders with a duplicate, a broken file, a text file and OS junk."""
    root = tmp_path / "messy"
    make_tree(root, {"ants": 6, "bees": 6}, split="train")
    make_tree(root, {"ants": 2, "bees": 2}, split="val", seed=1)
    (root / "train" / "ants" / "again.jpg").write_bytes((root / "train" / "ants" / "img_000.jpg").read_bytes())
    (root / "train" / "bees" / "broken.jpg").write_bytes(image_bytes(3, size=(128, 128))[:300])
    (root / "train" / "bees" / "notes.txt").write_text("not an image")
    (root / "train" / "bees" / ".DS_Store").write_bytes(b"junk")
    return root


def test_check_json_names_the_files(messy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(["data", "check", str(messy), "--json"], capsys)
    assert rc == 0
    report = json.loads(out.strip().splitlines()[-1])
    assert report["classes"] == ["ants", "bees"] and report["layout"] == "split_folders"
    assert report["counts"] == {"train": {"ants": 7, "bees": 6}, "val": {"ants": 2, "bees": 2}}
    assert report["blocking"] is False
    by_kind = {p["kind"]: p for p in report["problems"]}
    assert set(by_kind["exact_duplicate"]["files"]) == {"train/ants/img_000.jpg", "train/ants/again.jpg"}
    assert by_kind["unreadable"]["files"] == ["train/bees/broken.jpg"]
    assert by_kind["not_image_file"]["files"] == ["train/bees/notes.txt"]
    assert ".DS_Store" not in out
    assert "checking images" in err  # progress goes to stderr


def test_check_text_report(messy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(["data", "check", str(messy), "--quiet"], capsys)
    assert rc == 0
    assert "2 classes, 17 usable of 18 files" in out
    lines = out.splitlines()
    assert any(line.split() == ["ants", "7", "2", "9"] for line in lines)
    assert "train/bees/broken.jpg" in out and "Ready to train" in out


def test_check_blocking_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_tree(tmp_path / "one", {"only": 3})
    rc, out, _ = _run(["data", "check", str(tmp_path / "one"), "--quiet"], capsys)
    assert rc == 1 and "Training is blocked" in out and "at least 2 classes" in out


def test_check_missing_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(["data", "check", str(tmp_path / "nope")], capsys)
    assert rc == 2 and out == "" and "is not a folder" in err


def test_import_folder_prints_the_id(home: Path, messy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(["data", "import", str(messy), "--name", "My ants", "--quiet"], capsys)
    assert rc == 0
    dataset_id = out.strip().splitlines()[-1]
    ds = store.load_dataset(dataset_id)
    assert ds.name == "My ants" and ds.classes == ("ants", "bees") and len(ds.items) == 17
    assert ds.split_mode == "folders"
    assert "imported 'My ants': 17 images" in err and "train/bees/broken.jpg" in err

    rc, out, _ = _run(["data", "list", "--json"], capsys)
    rows = json.loads(out.strip().splitlines()[-1])["datasets"]
    assert [(r["id"], r["name"], r["images"]) for r in rows] == [(dataset_id, "My ants", 17)]
    rc, out, _ = _run(["data", "list"], capsys)
    assert rc == 0 and dataset_id in out and "My ants" in out


def test_import_zip_json(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zpath = tmp_path / "colours.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for n, label in enumerate(("red", "blue")):
            for i in range(4):
                zf.writestr(f"colours/{label}/{i}.png", image_bytes(40 * n + i, "PNG"))
        zf.writestr("../outside.png", image_bytes(99, "PNG"))
    rc, out, _ = _run(["data", "import", str(zpath), "--json", "--val-fraction", "0.25"], capsys)
    assert rc == 0
    obj = json.loads(out.strip().splitlines()[-1])
    assert obj["name"] == "colours" and obj["classes"] == ["blue", "red"] and obj["images"] == 8
    assert obj["counts"]["val"] == {"blue": 1, "red": 1}
    assert any(p["kind"] == "unsafe_path" and p["files"] == ["../outside.png"] for p in obj["problems"])
    assert store.load_dataset(obj["id"]).source["kind"] == "zip"
    assert not (tmp_path / "outside.png").exists()


def test_import_errors_exit_2(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / "fake.zip"
    fake.write_text("not a zip")
    rc, out, err = _run(["data", "import", str(fake)], capsys)
    assert rc == 2 and out == "" and "error: " in err and "fake.zip: this file is not a zip archive" in err
    rc, out, err = _run(["data", "import", str(tmp_path / "missing")], capsys)
    assert rc == 2 and "neither a folder nor a .zip" in err
    rc, _, err = _run(["data", "import", str(tmp_path), "--val-fraction", "1.5"], capsys)
    assert rc == 2 and "--val-fraction" in err
    assert store.list_datasets() == []


def test_list_empty(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(["data", "list"], capsys)
    assert rc == 0 and "no datasets yet" in out

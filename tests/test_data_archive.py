"""Crafted archives: nothing is ever written outside the target; bombs are refused fast; refusals have reasons."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import pytest
from data_fixtures import (
    bomb_zip,
    image_bytes,
    link_entry,
    overlapping_zip,
    snapshot,
    special_entry,
    zip_bytes,
)

from core.data.archive import ArchiveError, ArchiveLimits, extract_archive, extract_zip, safe_relative_path

JPG = image_bytes(1)


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """tmp/outer/{upload.zip, target/}: we snapshot 'outer' (the target's parent) around each extraction."""
    outer = tmp_path / "outer"
    (outer / "sibling").mkdir(parents=True)
    (outer / "sibling" / "keep.txt").write_text("x")
    return outer


def _extract(sandbox: Path, data: bytes, **kw: object):
    archive = sandbox / "upload.zip"
    archive.write_bytes(data)
    before = snapshot(sandbox.parent)
    try:
        return extract_archive(archive, sandbox / "target", **kw)  # type: ignore[arg-type]
    finally:
        after = snapshot(sandbox.parent)
        outside = {p for p in after - before if not p.startswith("outer/target")}
        assert outside == set(), f"written outside the target: {outside}"


def _rejected(result, name: str) -> str:
    reasons = {r.name: r.reason for r in result.rejected}
    assert name in reasons, f"{name} not rejected; rejected={reasons}"
    return reasons[name]


def test_good_zip_extracts(sandbox: Path) -> None:
    res = _extract(sandbox, zip_bytes([("ants/a.jpg", JPG), ("bees/b.jpg", JPG), ("bees/", b"")]))
    assert sorted(f.path for f in res.files) == ["ants/a.jpg", "bees/b.jpg"]
    assert (sandbox / "target" / "ants" / "a.jpg").read_bytes() == JPG
    assert res.rejected == ()


@pytest.mark.parametrize("name", [
    "../evil.jpg", "ants/../../evil.jpg", "/etc/evil.jpg", "C:/evil.jpg", "c:evil.jpg", "C:\\Windows\\evil.jpg",
    "..\\..\\evil.jpg", "\\\\server\\share\\evil.jpg", "//server/evil.jpg",
])
def test_path_traversal_entries_are_refused(sandbox: Path, name: str) -> None:
    res = _extract(sandbox, zip_bytes([(name, JPG), ("ants/ok.jpg", JPG)]))
    reason = _rejected(res, name)
    assert "outside" in reason or "absolute" in reason
    assert [f.path for f in res.files] == ["ants/ok.jpg"]


def test_symlink_entry_is_refused(sandbox: Path) -> None:
    res = _extract(sandbox, zip_bytes([link_entry("ants/link.jpg", "/etc/passwd"), ("ants/ok.jpg", JPG)]))
    assert "link" in _rejected(res, "ants/link.jpg")
    assert not (sandbox / "target" / "ants" / "link.jpg").exists()
    assert not any(p.is_symlink() for p in (sandbox / "target").rglob("*"))


def test_symlink_then_file_through_it(sandbox: Path) -> None:
    """Classic two-step attack: a link named 'ants' then 'ants/x.jpg' written through it."""
    res = _extract(sandbox, zip_bytes([link_entry("ants", str(sandbox / "sibling")), ("ants/x.jpg", JPG)]))
    assert "link" in _rejected(res, "ants")
    assert not (sandbox / "sibling" / "x.jpg").exists()


def test_special_file_is_refused(sandbox: Path) -> None:
    res = _extract(sandbox, zip_bytes([special_entry("ants/dev"), ("ants/ok.jpg", JPG)]))
    assert "special" in _rejected(res, "ants/dev")


def test_duplicate_and_case_colliding_names(sandbox: Path) -> None:
    other = image_bytes(2)
    res = _extract(sandbox, zip_bytes([("ants/a.jpg", JPG), ("ants/a.jpg", other), ("ants/A.JPG", other),
                                       ("Ants/b.jpg", other)]))
    assert len(res.files) == 1 and res.files[0].path == "ants/a.jpg"
    assert (sandbox / "target" / "ants" / "a.jpg").read_bytes() == JPG  # the first one wins, never overwritten
    kinds = sorted(r.kind for r in res.rejected)
    assert kinds == ["duplicate_name"] * 3
    assert "letter case" in _rejected(res, "Ants/b.jpg")


def test_junk_is_skipped(sandbox: Path) -> None:
    junk = ["__MACOSX/ants/._a.jpg", "ants/._a.jpg", "ants/.DS_Store", "ants/Thumbs.db", "Desktop.ini",
            ".ipynb_checkpoints/x.jpg", "ants/.hidden.jpg"]
    res = _extract(sandbox, zip_bytes([(n, JPG) for n in junk] + [("ants/a.jpg", JPG)]))
    assert sorted(res.skipped_junk) == sorted(junk)
    assert [f.path for f in res.files] == ["ants/a.jpg"]
    assert snapshot(sandbox / "target") == {"ants", "ants/a.jpg"}


def test_nested_archives_are_reported_not_opened(sandbox: Path) -> None:
    inner = zip_bytes([("x.jpg", JPG)])
    res = _extract(sandbox, zip_bytes([("ants/more.zip", inner), ("ants/more.tar.gz", b"x"), ("ants/a.jpg", JPG)]))
    assert "not opened" in _rejected(res, "ants/more.zip")
    assert {r.kind for r in res.rejected} == {"nested_archive"}
    assert not (sandbox / "target" / "ants" / "more.zip").exists()


def test_encrypted_entry_is_refused(sandbox: Path) -> None:
    data = bytearray(zip_bytes([("ants/secret.jpg", JPG), ("ants/a.jpg", JPG)]))
    data[6] |= 0x1  # general purpose flag "encrypted" in the first local header...
    cd = data.find(b"PK\x01\x02")
    data[cd + 8] |= 0x1  # ...and in its central directory record
    res = _extract(sandbox, bytes(data))
    assert "encrypted" in _rejected(res, "ants/secret.jpg")
    assert [f.path for f in res.files] == ["ants/a.jpg"]


def test_bomb_is_refused_fast_and_leaves_nothing(sandbox: Path) -> None:
    data = bomb_zip(64)
    assert len(data) < 200_000
    t0 = time.monotonic()
    with pytest.raises(ArchiveError, match="zip bomb"):
        _extract(sandbox, data)
    assert time.monotonic() - t0 < 5
    assert snapshot(sandbox / "target") == set()


def test_total_size_cap_counts_real_bytes(sandbox: Path) -> None:
    entries = [(f"ants/{i}.bmp", image_bytes(i, "BMP", (64, 64))) for i in range(5)]
    with pytest.raises(ArchiveError, match="cap"):
        _extract(sandbox, zip_bytes(entries), limits=ArchiveLimits(max_total_bytes=30_000))
    assert snapshot(sandbox / "target") == set()


def test_lying_header_size_does_not_bypass_the_cap(sandbox: Path) -> None:
    """Central directory claims 10 bytes; the stream holds ~50 KB. Real bytes are counted (or the entry fails CRC)."""
    real = image_bytes(3, "BMP", (128, 128))
    data = bytearray(zip_bytes([("ants/a.bmp", real)]))
    cd = data.find(b"PK\x01\x02")
    data[cd + 24: cd + 28] = (10).to_bytes(4, "little")  # uncompressed size in the central directory
    res = _extract(sandbox, bytes(data), limits=ArchiveLimits(max_total_bytes=20_000))
    written = sum(p.stat().st_size for p in (sandbox / "target").rglob("*") if p.is_file())
    assert written <= 20_000
    assert res.files == () and res.rejected and res.rejected[0].kind == "corrupt"


def test_too_many_entries(sandbox: Path) -> None:
    entries = [(f"ants/{i}.jpg", b"x") for i in range(30)]
    with pytest.raises(ArchiveError, match="too many entries"):
        _extract(sandbox, zip_bytes(entries), limits=ArchiveLimits(max_entries=20))
    assert snapshot(sandbox / "target") == set()


def test_overlapping_entries_are_refused(sandbox: Path) -> None:
    data = overlapping_zip([("ants/a.jpg", JPG), ("ants/b.jpg", image_bytes(4))])
    with pytest.raises(ArchiveError, match="overlap"):
        _extract(sandbox, data)
    assert snapshot(sandbox / "target") == set()


def test_tar_is_refused_even_when_malicious(sandbox: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("../evil.jpg")
        info.size = len(JPG)
        tf.addfile(info, io.BytesIO(JPG))
    with pytest.raises(ArchiveError, match="please upload a .zip"):
        _extract(sandbox, buf.getvalue())


def test_not_an_archive(sandbox: Path) -> None:
    with pytest.raises(ArchiveError, match="not a zip"):
        _extract(sandbox, b"hello world, definitely not a zip")


def test_truncated_zip(sandbox: Path) -> None:
    data = zip_bytes([("ants/a.jpg", JPG), ("ants/b.jpg", JPG)])
    with pytest.raises(ArchiveError):
        _extract(sandbox, data[: len(data) // 2])


def test_hostile_names_are_mapped_to_safe_components(sandbox: Path) -> None:
    names = ["ants/<script>alert(1)<.jpg", "ants/con.jpg", "ants/a|b?.jpg", "bees \x01/x.jpg"]
    res = _extract(sandbox, zip_bytes([(n, JPG) for n in names]))
    paths = sorted(f.path for f in res.files)
    assert paths == sorted(["ants/_script_alert(1)_.jpg", "ants/_con.jpg", "ants/a_b_.jpg", "bees _/x.jpg"])
    assert {f.name for f in res.files} == set(names)


def test_safe_relative_path_rules() -> None:
    assert safe_relative_path("a/./b//c.jpg") == ("a", "b", "c.jpg")
    with pytest.raises(Exception, match="NUL"):
        safe_relative_path("a\x00b")
    with pytest.raises(Exception, match="deeper"):
        safe_relative_path("/".join(["d"] * 20) + "/x.jpg")


def test_target_must_be_empty(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "x").write_text("x")
    (tmp_path / "a.zip").write_bytes(zip_bytes([("a/b.jpg", JPG)]))
    with pytest.raises(ArchiveError):
        extract_zip(tmp_path / "a.zip", tmp_path / "t")


# --- importing a zip into the store: a zip with no usable photo is refused, named as the user knows it -------------

EMPTY_ZIP = zip_bytes([])


@pytest.mark.parametrize(("entries", "reason"), [
    ([], "empty.zip has no photos in it."),
    ([("ants/", b""), ("bees/", b"")], "empty.zip has no photos in it."),  # class folders, nothing in them
    ([("a.jpg", JPG), ("b.jpg", image_bytes(2))], "empty.zip has no photos inside class folders: put the photos in "
                                                  "one folder per class"),
    ([("ants/notes.txt", b"x"), ("bees/b.psd", b"x")], "empty.zip has no photos that can be used; for example "),
    ([("ants/a.jpg", b"broken"), ("bees/b.jpg", JPG[:40])], "None of the 2 files in empty.zip can be used as "
                                                             "photos (e.g. "),
])
def test_a_zip_without_usable_photos_is_refused_and_nothing_is_stored(home: Path, tmp_path: Path, entries: list,
                                                                       reason: str) -> None:
    from core.data import store
    from core.data.validate import ValidationConfig

    spooled = tmp_path / "upload-2df70f82a06aa8ce.zip"  # the app's own name for the upload
    spooled.write_bytes(zip_bytes(entries) if entries else EMPTY_ZIP)
    with pytest.raises(store.DatasetError) as refused:
        store.import_zip(spooled, "empty", config=ValidationConfig(workers=0), display_name="empty.zip")
    assert refused.value.reason.startswith(reason) and "upload-" not in refused.value.reason
    assert store.list_datasets() == [] and snapshot(home / "datasets") == set()


def test_an_empty_folder_is_refused_by_its_name(home: Path, tmp_path: Path) -> None:
    from core.data import store

    (tmp_path / "holiday" / "ants").mkdir(parents=True)
    with pytest.raises(store.DatasetError, match="^the folder 'holiday' has no photos in it.$"):
        store.import_folder(tmp_path / "holiday", "holiday")
    assert store.list_datasets() == []


def test_an_imported_zip_is_named_by_the_users_file_name(home: Path, tmp_path: Path) -> None:
    from core.data import store
    from core.data.validate import ValidationConfig

    spooled = tmp_path / "upload-96060848993cc62b.zip"
    spooled.write_bytes(zip_bytes([(f"{c}/{i}.jpg", image_bytes(10 * n + i)) for n, c in enumerate(("ants", "bees"))
                                   for i in range(2)]))
    ds = store.import_zip(spooled, "bugs", config=ValidationConfig(workers=0), display_name="my bugs.zip").dataset
    assert ds.source == {"kind": "zip", "name": "my bugs.zip"}


def test_uploaded_files_are_written_under_checked_names_and_junk_is_skipped(tmp_path: Path) -> None:
    from core.data.archive import write_uploaded_files

    target = tmp_path / "out"
    target.mkdir()
    refused = write_uploaded_files([("set/a/x.jpg", b"1"), ("../evil.jpg", b"2"), ("/abs.jpg", b"3"),
                                    ("set/__MACOSX/._x.jpg", b"4"), ("set/.DS_Store", b"5")], target)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == ["set/a/x.jpg"]
    assert [name for name, _ in refused] == ["../evil.jpg", "/abs.jpg"]
    assert not (tmp_path / "evil.jpg").exists()

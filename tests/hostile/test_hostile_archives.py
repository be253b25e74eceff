"""Hostile archives, generated at test time: entries that must be refused one by one (with their name and reason)
and archives that must be refused whole, fast and with bounded memory. Around every extraction the target's parent
tree is snapshotted: not one file may appear outside the target. Complements tests/test_data_archive.py."""

from __future__ import annotations

import io
import time
import tracemalloc
import unicodedata
import zipfile
from pathlib import Path

import pytest

from core.data import store
from core.data.archive import ArchiveError, ArchiveLimits, extract_archive
from tests.data_fixtures import image_bytes, link_entry, overlapping_zip, snapshot, special_entry, zip_bytes
from tests.hostile.corpus import (
    RAR_BYTES,
    SEVEN_Z_BYTES,
    GiB,
    many_entries_zip,
    raw_zip,
    tar_with_links,
    zeros_entry,
)

JPG = image_bytes(1)
NFC = unicodedata.normalize("NFC", "ants/café.jpg")
NFD = unicodedata.normalize("NFD", "ants/café.jpg")


def _encrypted(name: str) -> bytes:
    data = bytearray(zip_bytes([(name, JPG)]))
    data[6] |= 0x1
    data[data.find(b"PK\x01\x02") + 8] |= 0x1
    return bytes(data)


def _lying_small(name: str) -> bytes:
    data = bytearray(zip_bytes([(name, image_bytes(3, "BMP", (128, 128)))]))
    cd = data.find(b"PK\x01\x02")
    data[cd + 24:cd + 28] = (10).to_bytes(4, "little")
    return bytes(data)


#: (kind, entries for one zip, the entry name that must be refused, words in its reason). Each zip also holds a
#: good image, which must come out.
ENTRY_ATTACKS = [
    ("dot-dot traversal", [("../evil.jpg", JPG)], "../evil.jpg", "outside"),
    ("nested dot-dot", [("ants/../../evil.jpg", JPG)], "ants/../../evil.jpg", "outside"),
    ("absolute path", [("/tmp/ts_evil_abs.jpg", JPG)], "/tmp/ts_evil_abs.jpg", "absolute"),
    ("drive letter", [("C:/evil.jpg", JPG)], "C:/evil.jpg", "absolute"),
    ("drive letter, backslashes", [("C:\\Windows\\evil.jpg", JPG)], "C:\\Windows\\evil.jpg", "absolute"),
    ("UNC path", [("\\\\server\\share\\evil.jpg", JPG)], "\\\\server\\share\\evil.jpg", "absolute"),
    ("symlink to /etc/passwd", [link_entry("ants/link.jpg", "/etc/passwd")], "ants/link.jpg", "link"),
    ("symlink folder, then a file through it", [link_entry("bees", "../../sibling"), ("bees/x.jpg", JPG)], "bees",
     "link"),
    ("device file", [special_entry("ants/dev")], "ants/dev", "special"),
    ("duplicate name", [("ants/a.jpg", image_bytes(2))], "ants/a.jpg", "duplicate"),
    ("letter-case collision", [("ants/A.JPG", image_bytes(2))], "ants/A.JPG", "letter case"),
    ("unicode-normalisation collision", [(NFC, JPG), (NFD, image_bytes(2))], NFD, "duplicate"),
    ("file and folder of one name", [("cats", JPG), ("cats/x.jpg", JPG)], "cats/x.jpg", "duplicate"),
    ("nested zip", [("ants/more.zip", zip_bytes([("x.jpg", JPG)]))], "ants/more.zip", "not opened"),
    ("nested tar.gz", [("ants/more.tar.gz", tar_with_links(JPG, gz=True))], "ants/more.tar.gz", "not opened"),
    ("folders 20 deep", [("/".join(["d"] * 20) + "/x.jpg", JPG)], "/".join(["d"] * 20) + "/x.jpg", "deeper"),
]


@pytest.fixture
def outer(tmp_path: Path) -> Path:
    """tmp/outer/{sibling/keep.txt, archives/, targets/}; every snapshot covers tmp (the targets' grandparent)."""
    root = tmp_path / "outer"
    (root / "sibling").mkdir(parents=True)
    (root / "sibling" / "keep.txt").write_text("x")
    (root / "archives").mkdir()
    return root


def _slug(name: str) -> str:
    return name.replace(" ", "_").replace("/", "_")


def _extract(outer: Path, name: str, data: bytes, **kw):
    """Extract `data` into outer/targets/<slug>; asserts that nothing was written anywhere else under tmp."""
    archive = outer / "archives" / f"{_slug(name)}.zip"
    archive.write_bytes(data)
    target = outer / "targets" / _slug(name)
    before = snapshot(outer.parent)
    try:
        return extract_archive(archive, target, **kw)
    finally:
        prefix = f"outer/targets/{_slug(name)}"
        outside = {p for p in snapshot(outer.parent) - before
                   if not (p.startswith(prefix + "/") or p in (prefix, "outer/targets"))}
        assert outside == set(), f"{name}: written outside the target: {outside}"


def test_every_hostile_entry_is_refused_by_name_with_a_reason(outer: Path) -> None:
    for kind, entries, refused, words in ENTRY_ATTACKS:
        res = _extract(outer, kind, zip_bytes([("ants/a.jpg", JPG), *entries]))
        reasons = {r.name: r.reason for r in res.rejected}
        assert refused in reasons, (kind, reasons)
        assert words in reasons[refused], (kind, reasons[refused])
        assert "ants/a.jpg" in [f.path for f in res.files], (kind, res.files)
        target = res.target
        assert not any(p.is_symlink() for p in target.rglob("*")), kind
        assert all(p.resolve().is_relative_to(target.resolve()) for p in target.rglob("*")), kind
    assert not (outer / "sibling" / "x.jpg").exists() and not Path("/tmp/ts_evil_abs.jpg").exists()
    assert not (outer.parent / "evil.jpg").exists() and not (outer / "evil.jpg").exists()


def test_encrypted_and_lying_entries_are_refused(outer: Path) -> None:
    res = _extract(outer, "encrypted", _encrypted("ants/secret.jpg"))
    assert [r.kind for r in res.rejected] == ["encrypted"] and res.files == ()
    res = _extract(outer, "lying size", _lying_small("ants/a.bmp"), limits=ArchiveLimits(max_total_bytes=20_000))
    assert [r.kind for r in res.rejected] == ["corrupt"] and res.files == ()
    assert sum(p.stat().st_size for p in res.target.rglob("*") if p.is_file()) == 0


def _refused_fast(outer: Path, name: str, data: bytes, match: str, **kw) -> tuple[float, float]:
    """Extraction raises ArchiveError matching `match`; returns (seconds, peak traced MB) and checks the target."""
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(ArchiveError, match=match):
            _extract(outer, name, data, **kw)
        seconds = time.monotonic() - t0
        peak = tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()
    target = outer / "targets" / _slug(name)
    assert not target.exists() or snapshot(target) == set(), f"{name}: files left in the target"
    return seconds, peak


def test_one_gigabyte_of_zeros_is_refused_fast_with_bounded_memory(outer: Path) -> None:
    honest = raw_zip([zeros_entry("ants/zeros.bmp", GiB), {"name": "ants/a.jpg", "data": JPG}])
    assert len(honest) < 2_000_000
    # The header tells the truth: the entry is over the per-file cap and is never inflated.
    t0 = time.monotonic()
    res = _extract(outer, "1 GB honest", honest)
    assert time.monotonic() - t0 < 5
    assert [(r.name, r.kind) for r in res.rejected] == [("ants/zeros.bmp", "too_large")]
    assert [f.path for f in res.files] == ["ants/a.jpg"]
    # With a per-file cap above 1 GB, the compression ratio stops it after the first megabytes.
    seconds, peak = _refused_fast(outer, "1 GB ratio", honest, "zip bomb",
                                  limits=ArchiveLimits(max_entry_bytes=2 * GiB))
    assert seconds < 5 and peak < 32, (seconds, peak)
    # The header lies (claims 1 KB): at most the claimed bytes are produced, then the checksum fails.
    lying = raw_zip([zeros_entry("ants/zeros.bmp", GiB, claimed=1024), {"name": "ants/a.jpg", "data": JPG}])
    t0 = time.monotonic()
    res = _extract(outer, "1 GB lying", lying)
    assert time.monotonic() - t0 < 5
    assert [(r.name, r.kind) for r in res.rejected] == [("ants/zeros.bmp", "corrupt")]
    written = sum(p.stat().st_size for p in res.target.rglob("*") if p.is_file())
    assert written == len(JPG)
    print(f"\n[hostile] 1 GB-of-zeros entry (1 MB zip): refused in {seconds:.2f} s, peak traced memory {peak:.1f} MB")


def test_200k_entries_are_refused_before_the_directory_is_read(outer: Path) -> None:
    data = many_entries_zip(200_000)
    seconds, peak = _refused_fast(outer, "200k entries", data, "too many entries: 200,000")
    assert seconds < 5 and peak < 32, (seconds, peak)
    print(f"\n[hostile] 200,000-entry zip ({len(data) / 1e6:.0f} MB): refused in {seconds:.2f} s, "
          f"peak traced memory {peak:.1f} MB")


WHOLE_ATTACKS = [
    ("overlapping entries (CVE-2024-0450)",
     lambda: overlapping_zip([("ants/a.jpg", JPG), ("ants/b.jpg", image_bytes(4))]), "overlap"),
    ("central directory claims 12.9 GB", lambda: raw_zip([{"name": f"ants/{i}.jpg", "data": JPG,
                                                           "central_size": 0xFFFFFFFE} for i in range(3)]), "cap"),
    ("tar with symlink, hard link and ../, named .zip", lambda: tar_with_links(JPG), "please upload a .zip"),
    ("tar.gz named .zip", lambda: tar_with_links(JPG, gz=True), "please upload a .zip"),
    ("RAR named .zip", lambda: RAR_BYTES, "RAR archives are not supported"),
    ("7z named .zip", lambda: SEVEN_Z_BYTES, "7Z archives are not supported"),
    ("JPEG named .zip", lambda: JPG, "not a zip"),
    ("empty file named .zip", lambda: b"", "not a zip"),
    ("truncated zip", lambda: zip_bytes([("ants/a.jpg", JPG), ("ants/b.jpg", JPG)])[:900], "zip"),
]


@pytest.mark.parametrize("kind, make, match", WHOLE_ATTACKS, ids=[k for k, _, _ in WHOLE_ATTACKS])
def test_hostile_archives_are_refused_whole_and_leave_nothing(outer: Path, kind: str, make, match: str) -> None:
    seconds, _ = _refused_fast(outer, kind, make(), match)
    assert seconds < 5


def test_through_the_store_nothing_lands_outside_the_new_dataset(outer: Path, home: Path) -> None:
    """Every entry attack in one upload, imported by the store as the Data page does."""
    entries: list = [("ants/a.jpg", JPG), ("ants/b.jpg", image_bytes(5)), ("bees/c.jpg", image_bytes(6)),
                     ("bees/d.jpg", image_bytes(7))]
    refused = []
    for kind, items, name, _ in ENTRY_ATTACKS:
        if kind in ("duplicate name", "letter-case collision", "file and folder of one name"):
            continue  # these collide with each other's good entries; covered above one by one
        entries += items
        refused.append(name)
    upload = outer / "archives" / "everything.zip"
    upload.write_bytes(zip_bytes(entries))
    store.datasets_root()
    before = snapshot(outer.parent)
    result = store.import_zip(upload, "everything hostile")
    written = snapshot(outer.parent) - before
    target = f"home/datasets/{result.dataset.id}"
    outside = sorted(p for p in written if not (p == target or p.startswith(target + "/")))
    assert outside == [], outside
    named = " ".join(p.message for p in result.report.problems)
    missing = [n for n in refused if n not in named]
    assert missing == [], missing
    # the 4 good images, the first of the two "café" spellings, and bees/x.jpg (a plain file once its link was refused)
    assert result.imported == 6
    print(f"\n[hostile] {len(ENTRY_ATTACKS) + len(WHOLE_ATTACKS) + 6} kinds of crafted archive; one upload with "
          f"{len(refused)} hostile entries: all named in the report, 0 files outside {target}")


def test_zip_bytes_helper_writes_names_verbatim() -> None:
    data = zip_bytes([("../x.jpg", b"1")])
    assert zipfile.ZipFile(io.BytesIO(data)).namelist() == ["../x.jpg"]

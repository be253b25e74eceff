"""Phone photos: HEIC (an iPhone's default, decoded by pi-heif) and AVIF (Pillow) import, train and predict like
JPEGs, upright; a broken one is named with its reason; without a HEIC decoder the reason names the package."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import IPHONE_PHOTO, IPHONE_ROTATED, make_tree, noise_image
from PIL import Image

from core.data import store
from core.data.images import ImageError, check_image, load_rgb
from core.data.names import PHOTO_UPLOAD_TYPES
from core.data.validate import ValidationConfig
from core.pipeline import Prep, load_square

FAST = ValidationConfig(workers=0)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TRANSFER_STUDIO_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _avif(seed: int) -> bytes:
    buf = io.BytesIO()
    noise_image(seed, (80, 60)).save(buf, "AVIF", quality=90)
    return buf.getvalue()


def _red_on_top(rgb: np.ndarray) -> bool:
    top, bottom = rgb[: rgb.shape[0] // 3], rgb[-rgb.shape[0] // 3:]
    return top[..., 0].mean() > 120 > top[..., 2].mean() and bottom[..., 2].mean() > 120 > bottom[..., 0].mean()


def test_an_iphone_photo_is_decoded_upright() -> None:
    """The sideways-stored photo comes out 64×96 with red on top (its HEIF rotation applied), the other 96×64."""
    upright = load_rgb(IPHONE_ROTATED)
    assert upright.size == (64, 96) and _red_on_top(np.asarray(upright))
    plain = np.asarray(load_rgb(IPHONE_PHOTO))
    assert plain.shape == (64, 96, 3) and plain[:, :40, 0].mean() > 120 > plain[:, :40, 2].mean()
    info = check_image(IPHONE_ROTATED)  # in a worker process, as imports check photos
    assert (info.format, info.width, info.height, info.extension) == ("HEIF", 64, 96, ".heic")


def test_phone_photos_import_and_square_like_any_photo(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"ants": 3, "bees": 3})
    (src / "ants" / "IMG_0001.HEIC").write_bytes(IPHONE_ROTATED.read_bytes())
    (src / "bees" / "IMG_0002.heic").write_bytes(IPHONE_PHOTO.read_bytes())
    (src / "bees" / "pixel.avif").write_bytes(_avif(5))
    (src / "ants" / "IMG_0003.HEIC").write_bytes(IPHONE_PHOTO.read_bytes()[:600])  # cut off while copying
    result = store.import_folder(src, "phones", config=FAST)
    assert result.imported == 9
    assert [(s.original_name, s.reason) for s in result.skipped] == [("ants/IMG_0003.HEIC", "corrupt HEIC file")]
    stored = {it.original_name: result.dataset.path(it) for it in result.dataset.items}
    assert stored["ants/IMG_0001.HEIC"].suffix == ".heic" and stored["bees/pixel.avif"].suffix == ".avif"
    prep = Prep(48, 48, "bilinear", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "pad")
    square = load_square(stored["ants/IMG_0001.HEIC"], prep)  # what training and prediction see
    assert square.shape == (48, 48, 3) and _red_on_top(square[:, 12:36])
    assert load_square(stored["bees/pixel.avif"], prep).shape == (48, 48, 3)


def test_every_photo_uploader_lets_phone_photos_through() -> None:
    assert {"heic", "heif", "avif", "jpg", "png"} <= set(PHOTO_UPLOAD_TYPES)
    views = sorted((ROOT / "views").glob("*.py"))
    lists = [line for v in views for line in v.read_text().splitlines()
             if "file_uploader(" in line and "type=[" in line]
    assert [line for line in lists if '"jpg"' in line] == []  # no page keeps its own shorter list of photo types


def test_without_a_heic_decoder_the_reason_names_the_package(tmp_path: Path) -> None:
    """A fresh interpreter where neither HEIC decoder can be imported (``None`` in sys.modules blocks an import)."""
    code = (
        "import sys; sys.modules['pi_heif'] = None; sys.modules['pillow_heif'] = None\n"
        "from core.data.images import ImageError, load_rgb\n"
        f"try:\n    load_rgb({str(IPHONE_PHOTO)!r})\nexcept ImageError as e:\n    print(e.kind, '|', e.reason)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == (
        "unsupported_format | format HEIC cannot be opened here (the pi-heif package is not installed)"), out.stderr


def test_a_broken_avif_is_named_as_one() -> None:
    with pytest.raises(ImageError, match="corrupt AVIF file"):
        load_rgb(_avif(1)[:120])
    assert Image.open(io.BytesIO(_avif(2))).format == "AVIF"

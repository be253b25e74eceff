"""Safe decoding: malformed files are refused with a reason, odd modes become the right RGB pixels."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import (
    EPS_BYTES,
    HTML_BYTES,
    image_bytes,
    malformed_corpus,
    noise_image,
    png_claiming,
    truncated,
    write_image,
)
from PIL import Image

from core.data.images import (
    CheckOptions,
    ImageError,
    ImageInfo,
    Rejected,
    check_image,
    check_images,
    inspect_bytes,
    load_rgb,
)


def _reason(data: bytes, **kw: int) -> ImageError:
    with pytest.raises(ImageError) as info:
        load_rgb(data, **kw)
    return info.value


def test_good_jpeg_loads_as_rgb() -> None:
    im = load_rgb(image_bytes(1, "JPEG", (80, 60)))
    assert im.mode == "RGB" and im.size == (80, 60)


def test_truncated_jpeg_passes_verify_but_is_refused() -> None:
    data = truncated(image_bytes(2, "JPEG", (256, 256)))
    Image.open(io.BytesIO(data)).verify()  # the trap: verify() says nothing
    err = _reason(data)
    assert err.reason == "truncated file" and err.kind == "unreadable"


def test_truncated_png_is_refused() -> None:
    assert "truncated" in _reason(truncated(image_bytes(3, "PNG", (128, 128)), 0.6)).reason


def test_zero_bytes() -> None:
    assert _reason(b"").reason == "empty file (0 bytes)"


def test_html_renamed_jpg(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(HTML_BYTES)
    with pytest.raises(ImageError, match=r"not an image \(looks like HTML\)"):
        load_rgb(path)


def test_eps_is_not_allowed_and_ghostscript_never_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import EpsImagePlugin

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("Ghostscript would have run")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", boom)
    err = _reason(EPS_BYTES)
    assert err.reason == "format EPS not allowed" and err.kind == "unsupported_format"


@pytest.mark.parametrize("size", [(20000, 10000), (14000, 10000)])  # above and below Pillow's own error threshold
def test_png_claiming_huge_size_is_refused_before_decoding(size: tuple[int, int]) -> None:
    t0 = time.monotonic()
    err = _reason(png_claiming(*size))
    mp = size[0] * size[1] // 1_000_000
    assert err.kind == "too_large" and f"{mp} megapixels" in err.reason and "cap" in err.reason
    assert time.monotonic() - t0 < 1


def test_pixel_cap_is_configurable() -> None:
    data = image_bytes(4, "PNG", (100, 100))
    assert load_rgb(data, max_pixels=10_000).size == (100, 100)
    assert _reason(data, max_pixels=9_999).kind == "too_large"


def test_too_small() -> None:
    err = _reason(image_bytes(5, "PNG", (8, 8)), min_side=32)
    assert err.reason.startswith("too small: 8×8 px") and err.kind == "too_small"


def test_ppm_not_in_allowlist() -> None:
    buf = io.BytesIO()
    noise_image(6, (16, 16)).save(buf, "PPM")
    assert _reason(buf.getvalue()).reason == "format PPM not allowed"


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP", "GIF", "TIFF"])
def test_allowed_formats(fmt: str) -> None:
    assert load_rgb(image_bytes(7, fmt, (40, 30))).size == (40, 30)


def test_cmyk_jpeg_becomes_rgb() -> None:
    im = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    rgb = np.asarray(load_rgb(buf.getvalue()), dtype=int)
    assert rgb.shape == (32, 32, 3)
    r, g, b = rgb.reshape(-1, 3).mean(axis=0)
    assert r > 230 and g < 30 and b < 30


def test_16bit_png_is_scaled_not_white() -> None:
    arr = np.full((20, 30), 30000, dtype=np.uint16)
    arr[:, :10] = 65535
    arr[:, 10:20] = 0
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I")
    rgb = np.asarray(load_rgb(buf.getvalue()))
    assert tuple(rgb[0, 0]) == (255, 255, 255)
    assert tuple(rgb[0, 15]) == (0, 0, 0)
    assert tuple(rgb[0, 25]) == (117, 117, 117)  # 30000 / 257 = 116.7, not clipped to 255


def test_float_tiff_is_scaled() -> None:
    arr = np.linspace(0.0, 1.0, 100, dtype=np.float32).reshape(10, 10)
    buf = io.BytesIO()
    Image.fromarray(arr, "F").save(buf, "TIFF")
    rgb = np.asarray(load_rgb(buf.getvalue()))
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255 and 120 < rgb[5, 0, 0] < 135


def test_palette_with_transparency_goes_on_white() -> None:
    im = Image.new("P", (10, 10), 0)
    im.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    im.paste(1, (0, 0, 5, 10))
    buf = io.BytesIO()
    im.save(buf, "PNG", transparency=0)
    rgb = np.asarray(load_rgb(buf.getvalue()))
    assert tuple(rgb[0, 0]) == (200, 30, 40)
    assert tuple(rgb[0, 9]) == (255, 255, 255)  # transparent black becomes the white background


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composited_on_white(mode: str) -> None:
    im = Image.new(mode, (4, 4), (0, 0) if mode == "LA" else (0, 0, 0, 0))
    im.putpixel((0, 0), (0, 255) if mode == "LA" else (10, 20, 30, 255))
    im.putpixel((1, 0), (0, 128) if mode == "LA" else (0, 0, 0, 128))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    rgb = np.asarray(load_rgb(buf.getvalue()), dtype=int)
    assert tuple(rgb[0, 0]) == ((0, 0, 0) if mode == "LA" else (10, 20, 30))
    assert tuple(rgb[3, 3]) == (255, 255, 255)
    assert all(120 <= v <= 135 for v in rgb[0, 1])  # half alpha: half-way to white


def test_animated_gif_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    rgb = np.asarray(load_rgb(buf.getvalue()), dtype=int)
    assert rgb[..., 0].min() > 200 and rgb[..., 1].max() < 50
    info = inspect_bytes(buf.getvalue())
    assert info.frames == 3 and info.format == "GIF"


_INVERSE = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
            7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_all_eight_exif_orientations_give_the_same_pixels(fmt: str) -> None:
    base = noise_image(8, (48, 32))
    expected = np.asarray(base, dtype=int)
    for orientation, inverse in _INVERSE.items():
        stored = base if inverse is None else base.transpose(inverse)
        exif = Image.Exif()
        exif[0x0112] = orientation
        buf = io.BytesIO()
        stored.save(buf, fmt, exif=exif.tobytes(), **({"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}))
        got = np.asarray(load_rgb(buf.getvalue()), dtype=int)
        assert got.shape == expected.shape, orientation
        tolerance = 0 if fmt == "PNG" else 12
        assert np.abs(got - expected).mean() <= tolerance / 4 and np.abs(got - expected).max() <= 4 * tolerance + 1


def test_inspect_reports_hashes() -> None:
    data = image_bytes(9, "PNG", (64, 64))
    info = inspect_bytes(data)
    import hashlib

    import imagehash

    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.phash == str(imagehash.phash(load_rgb(data))) and len(info.phash) == 16
    assert (info.width, info.height, info.format, info.extension) == (64, 64, "PNG", ".png")
    assert info.colors > 64


def test_check_image_in_worker(tmp_path: Path) -> None:
    good = write_image(tmp_path / "good.jpg", 10)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(HTML_BYTES)
    assert isinstance(check_image(good, timeout_s=30), ImageInfo)
    res = check_image(bad)
    assert isinstance(res, Rejected) and "HTML" in res.reason


def test_batch_rejects_every_malformed_file_and_keeps_every_good_one(tmp_path: Path) -> None:
    bad = {}
    for round_ in range(3):
        for name, data in malformed_corpus(round_).items():
            path = tmp_path / f"{round_}_{name}"
            path.write_bytes(data)
            bad[str(path)] = name
    good = {str(write_image(tmp_path / f"good_{i}.jpg", 100 + i)) for i in range(60)}
    results = dict(check_images(sorted(bad) + sorted(good), options=CheckOptions(min_side=32), workers=2))
    assert len(results) == len(bad) + len(good)
    for path, res in results.items():
        if str(path) in good:
            assert isinstance(res, ImageInfo), (path, res)
        else:
            assert isinstance(res, Rejected) and res.reason, (path, res)
    first = str(tmp_path / "0_")
    reasons = {bad[str(p)]: r.reason for p, r in results.items() if str(p) in bad and str(p).startswith(first)}
    assert reasons["truncated.jpg"] == "truncated file"
    assert reasons["zero.jpg"] == "empty file (0 bytes)"
    assert reasons["page.jpg"] == "not an image (looks like HTML)"
    assert reasons["figure.jpg"] == "format EPS not allowed"
    assert reasons["huge_ihdr.png"].startswith("image too large: 200 megapixels")
    assert reasons["tiny.png"].startswith("too small: 8×8 px")


def test_timeout_and_crash_are_contained(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / f"ok_{i}.jpg", 200 + i) for i in range(4)]
    paths += [write_image(tmp_path / "slow.jpg", 300), write_image(tmp_path / "crash.jpg", 301)]
    t0 = time.monotonic()
    results = {p.name: r for p, r in check_images(paths, options=CheckOptions(timeout_s=1.5), workers=2,
                                                  _task="tests.data_fixtures:sleepy_task")}
    assert time.monotonic() - t0 < 15
    assert isinstance(results["slow.jpg"], Rejected) and "longer than 1.5 s" in results["slow.jpg"].reason
    assert isinstance(results["crash.jpg"], Rejected) and "crashed" in results["crash.jpg"].reason
    assert all(isinstance(results[f"ok_{i}.jpg"], ImageInfo) for i in range(4))


def test_results_stream_before_the_input_is_exhausted(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / f"s_{i}.png", 400 + i, "PNG") for i in range(6)]
    pulled: list[int] = []

    def feed():
        for i, p in enumerate(paths):
            pulled.append(i)
            yield p

    gen = check_images(feed(), workers=1)
    next(gen)
    assert len(pulled) < len(paths)  # bounded: one worker holds one file at a time
    gen.close()

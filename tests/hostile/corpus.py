"""Hostile inputs, generated at test time: crafted archives, malformed images and decompression bombs, pickles.

Nothing here is stored in the repository; every file is built from a few bytes of Python in well under a second
(the 1 GB-of-zeros entry is one compressed megabyte repeated: deflate blocks ended by a full flush are independent).
"""

from __future__ import annotations

import functools
import io
import pickle
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from tests.data_fixtures import (
    EPS_BYTES,
    HTML_BYTES,
    image_bytes,
    noise_image,
    png_chunk,
    png_claiming,
)

MiB = 1 << 20
GiB = 1 << 30


# ------------------------------------------------------------------------------------------------- deflate / zip

@functools.cache
def zeros_deflate(n_bytes: int, wrap: bool = False) -> bytes:
    """A deflate stream of `n_bytes` zero bytes (a multiple of 1 MiB), built from one compressed MiB repeated.

    wrap=True gives a zlib stream (header + adler32), as in PNG's IDAT; else a raw stream, as in zip."""
    assert n_bytes % MiB == 0
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(bytes(MiB)) + comp.flush(zlib.Z_FULL_FLUSH)
    body = block * (n_bytes // MiB) + comp.flush(zlib.Z_FINISH)
    if not wrap:
        return body
    adler = ((n_bytes % 65521) << 16) | 1  # adler32 of n zero bytes: a = 1, b = n mod 65521
    return b"\x78\xda" + body + struct.pack(">I", adler)


@functools.cache
def zeros_crc(n_bytes: int) -> int:
    crc, chunk = 0, bytes(MiB)
    for _ in range(n_bytes // MiB):
        crc = zlib.crc32(chunk, crc)
    return crc


def raw_zip(entries: list[dict]) -> bytes:
    """A zip written by hand, so headers can say anything. Each entry: name, data (as stored), method (0 stored,
    8 deflated), crc, size (uncompressed size written in both headers unless local_size/central_size say else)."""
    out, central = bytearray(), bytearray()
    for e in entries:
        name = e["name"].encode()
        method, crc, data = e.get("method", 0), e.get("crc", zlib.crc32(e["data"])), e["data"]
        size = e.get("size", len(data))
        offset = len(out)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(data),
                           e.get("local_size", size), len(name), 0) + name + data
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, len(data),
                               e.get("central_size", size), len(name), 0, 0, 0, 0, e.get("external_attr", 0),
                               offset) + name
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(out), 0)
    return bytes(out + central + end)


def zeros_entry(name: str, n_bytes: int, claimed: int | None = None) -> dict:
    """A deflated entry of n_bytes zeros whose headers claim `claimed` bytes (default: the truth)."""
    return {"name": name, "data": zeros_deflate(n_bytes), "method": 8, "crc": zeros_crc(n_bytes),
            "size": n_bytes if claimed is None else claimed}


def zip_of(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def many_entries_zip(n: int) -> bytes:
    """A real zip with n (empty, stored) entries; zipfile adds the ZIP64 end records above 65,535."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            zf.writestr(f"ants/{i}.jpg", b"")
    return buf.getvalue()


def tar_with_links(jpg: bytes, gz: bool = False) -> bytes:
    """A tar holding a traversal entry, a symlink to /etc/passwd and a hard link to it (what tar, unlike zip, can
    express): refused as a whole whatever its name."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tf:
        for name, kind, target in (("ants/a.jpg", tarfile.REGTYPE, ""), ("../evil.jpg", tarfile.REGTYPE, ""),
                                   ("ants/sym.jpg", tarfile.SYMTYPE, "/etc/passwd"),
                                   ("ants/hard.jpg", tarfile.LNKTYPE, "/etc/passwd")):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            info.size = len(jpg) if kind == tarfile.REGTYPE else 0
            tf.addfile(info, io.BytesIO(jpg) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


RAR_BYTES = b"Rar!\x1a\x07\x01\x00" + bytes(64)  # RAR 5 signature + padding
SEVEN_Z_BYTES = b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(64)


# ------------------------------------------------------------------------------------------------- images

def _encoded(fmt: str, size: tuple[int, int] = (256, 256), seed: int = 0, **save: object) -> bytes:
    buf = io.BytesIO()
    im = noise_image(seed, size)
    if fmt == "GIF":
        im = im.convert("P")
    im.save(buf, fmt, **save)
    return buf.getvalue()


def png_bomb_real(side: int = 32_768) -> bytes:
    """A real 1-gigapixel grey PNG: every scanline (filter byte + pixels) is zeros, ~1 MB compressed."""
    raw_bytes = (side + 1) * side
    n = -(-raw_bytes // MiB) * MiB  # a whole number of MiB of zeros (a little trailing data is ignored)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zeros_deflate(n, wrap=True))
            + png_chunk(b"IEND", b""))


def _png_with_chunk(kind: bytes, data: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", 40, 40, 8, 2, 0, 0, 0)
    raw = b"".join(b"\x00" + bytes(40 * 3) for _ in range(40))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(kind, data)
            + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


def _patched(data: bytes, at: int, new: bytes) -> bytes:
    out = bytearray(data)
    out[at:at + len(new)] = new
    return bytes(out)


def _tiff_claiming(width: int, height: int) -> bytes:
    data = bytearray(_encoded("TIFF", (8, 8)))
    ifd = struct.unpack("<I", data[4:8])[0]
    for k in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
        p = ifd + 2 + 12 * k
        tag = struct.unpack("<H", data[p:p + 2])[0]
        if tag in (256, 257):
            data[p + 2:p + 4] = struct.pack("<H", 4)  # LONG
            data[p + 8:p + 12] = struct.pack("<I", width if tag == 256 else height)
    return bytes(data)


def _webp_claiming(side: int) -> bytes:
    """A lossless WEBP whose VP8L header says side×side (14 bits each: at most 16384)."""
    data = bytearray(_encoded("WEBP", (16, 16), lossless=True))
    assert data[12:16] == b"VP8L" and data[20] == 0x2F
    bits = struct.unpack("<I", data[21:25])[0]
    bits = (bits & ~0x0FFFFFFF) | (side - 1) | ((side - 1) << 14)
    data[21:25] = struct.pack("<I", bits)
    return bytes(data)


def _jpeg_claiming(width: int, height: int) -> bytes:
    data = image_bytes(2, "JPEG", (64, 64))
    sof = data.find(b"\xff\xc0")
    return _patched(data, sof + 5, struct.pack(">HH", height, width))


def _gif_claiming(width: int, height: int) -> bytes:
    return _patched(_encoded("GIF", (4, 4)), 6, struct.pack("<HH", width, height))


def _bmp_claiming(width: int, height: int) -> bytes:
    return _patched(_encoded("BMP", (8, 8)), 18, struct.pack("<ii", width, height))


@functools.cache
def image_bombs() -> dict[str, bytes]:
    """Decompression bombs: tiny files that claim (or really hold) far more pixels than the cap, and PNG text /
    colour-profile chunks that inflate to 200 MB."""
    return {
        "bomb_png_header_200mp.png": png_claiming(20_000, 10_000),
        "bomb_png_real_1gp.png": png_bomb_real(),
        "bomb_png_ztxt_200mb.png": _png_with_chunk(b"zTXt", b"Comment\x00\x00" + zeros_deflate(200 * MiB, wrap=True)),
        "bomb_png_iccp_200mb.png": _png_with_chunk(b"iCCP", b"icc\x00\x00" + zeros_deflate(200 * MiB, wrap=True)),
        "bomb_jpeg_sof_4gp.jpg": _jpeg_claiming(65_500, 65_500),
        "bomb_gif_screen_4gp.gif": _gif_claiming(65_535, 65_535),
        "bomb_bmp_2500mp.bmp": _bmp_claiming(50_000, 50_000),
        "bomb_tiff_10gp.tif": _tiff_claiming(100_000, 100_000),
        "bomb_webp_268mp.webp": _webp_claiming(16_384),
    }


def _psd() -> bytes:
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 32, 32, 8, 3)
    return header + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + bytes(32 * 32 * 3)


def _pillow_bytes(fmt: str, size: tuple[int, int] = (32, 32)) -> bytes:
    buf = io.BytesIO()
    noise_image(5, size).save(buf, fmt)
    return buf.getvalue()


def malformed_images() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, expected words in the reason) for files that must all be rejected (min side 32 px)."""
    out: dict[str, tuple[bytes, str]] = {}
    sources = {"JPEG": ("jpg", _encoded("JPEG", quality=90)), "PNG": ("png", _encoded("PNG")),
               "GIF": ("gif", _encoded("GIF")), "WEBP": ("webp", _encoded("WEBP", quality=90)),
               "BMP": ("bmp", _encoded("BMP")), "TIFF": ("tif", _encoded("TIFF"))}
    for fmt, (ext, data) in sources.items():
        for keep in (0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.97):  # 48 truncated files
            out[f"truncated_{int(keep * 100):02d}pc_{fmt.lower()}.{ext}"] = (data[: int(len(data) * keep)], "")
        for n in (1, 16, 64):  # 18 header-only files
            out[f"first_{n}_bytes_{fmt.lower()}.{ext}"] = (data[:n], "")
    out["empty.jpg"] = (b"", "empty file (0 bytes)")
    not_images = {  # 33 files that are not images at all, under image names
        "page.jpg": (HTML_BYTES, "looks like HTML"),
        "feed.png": (b'<?xml version="1.0"?><rss><channel/></rss>', "looks like XML"),
        "drawing.png": (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>', "SVG"),
        "notes.jpg": (b"just some text, not an image at all\n" * 8, "text file"),
        "data.png": (b'{"not": "an image", "values": [1, 2, 3]}' * 4, "text file"),
        "program.jpg": (b"MZ\x90\x00\x03" + bytes(300), "unknown format"),
        "program.png": (b"\x7fELF\x02\x01\x01" + bytes(300), "unknown format"),
        "archive.jpg": (zip_of([("a.txt", b"x")]), "ZIP"),
        "archive.png": (b"\x1f\x8b\x08\x00" + bytes(40), "GZIP"),
        "figure.jpg": (EPS_BYTES, "format EPS not allowed"),
        "figure_pillow.png": (_pillow_bytes("EPS"), "format EPS not allowed"),
        "document.jpg": (_pillow_bytes("PDF"), "format PDF not allowed"),
        "layers.png": (_psd(), "format PSD not allowed"),
        "icon.png": (_pillow_bytes("ICO"), "format ICO not allowed"),
        "portable.jpg": (_pillow_bytes("PPM"), "format PPM not allowed"),
        "scan.png": (_pillow_bytes("PCX"), "format PCX not allowed"),
        "photo_heic.jpg": (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), "HEIC"),
        "photo_avif.jpg": (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1" + bytes(64), "AVIF"),
        "clip.jpg": (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(64), "not allowed"),
        "j2k.jpg": (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(64), "JPEG 2000"),
        "jxl.jpg": (b"\xff\x0a" + bytes(64), "JPEG XL"),
        "qoi.png": (b"qoif" + struct.pack(">II", 32, 32) + b"\x03\x00" + bytes(64), "QOI"),
        "dds.png": (b"DDS " + bytes(124), "DDS"),
        "hdr.png": (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 32 +X 32\n" + bytes(64), "HDR"),
        "exr.png": (b"\x76\x2f\x31\x01" + bytes(64), "OpenEXR"),
        "fits.png": (b"SIMPLE  =                    T" + bytes(64), "FITS"),
        "gimp.png": (b"gimp xcf v011" + bytes(64), "XCF"),
        "rar.jpg": (RAR_BYTES, "RAR"),
        "7z.png": (SEVEN_Z_BYTES, "7Z"),
    }
    out.update(not_images)
    for seed in range(4):
        rng = np.random.default_rng(seed)
        out[f"noise_{seed}.jpg"] = (rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), "")
    for name, data in image_bombs().items():  # 9 bombs
        out[name] = (data, "too large" if "ztxt" not in name and "iccp" not in name else "")
    png = _encoded("PNG", (64, 64))
    idat = png.find(b"IDAT")
    broken = {  # 8 files with damaged insides
        "png_flipped_idat_byte.png": _patched(png, idat + 12, bytes([png[idat + 12] ^ 0xFF])),
        "png_bad_ihdr_crc.png": _patched(png, 29, b"\x00\x00\x00\x00"),
        "png_zero_width.png": png_claiming(0, 64),
        "jpeg_zero_size.jpg": _jpeg_claiming(0, 0),
        "bmp_zero_size.bmp": _bmp_claiming(0, 0),
        "gif_zero_size.gif": _gif_claiming(0, 0),
        "tiff_bad_ifd_offset.tif": _patched(_encoded("TIFF", (64, 64)), 4, struct.pack("<I", 0x7FFFFFF0)),
        "jpeg_no_scan_data.jpg": image_bytes(6, "JPEG", (64, 64))[:-2].split(b"\xff\xda")[0] + b"\xff\xd9",
    }
    out.update({k: (v, "") for k, v in broken.items()})
    for name, size in (("tiny_8px.png", (8, 8)), ("tiny_1px.png", (1, 1)), ("thin_31px.png", (31, 200))):
        out[name] = (image_bytes(7, "PNG", size), "too small")
    return out


# ------------------------------------------------------------------------------------------------- pickles

class Payload:
    """Unpickling this creates `sentinel`: proof that a loader ran it."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def pickle_payloads(sentinel: Path) -> dict[str, bytes]:
    """Three ways to carry the payload: a plain pickle, the torch.save zip format, and a pickle that starts with a
    FRAME opcode, whose first 8 bytes read as a small safetensors header length (it gets past that first check)."""
    import torch

    plain = pickle.dumps({"state_dict": Payload(sentinel)}, protocol=4)
    buf = io.BytesIO()
    torch.save({"state_dict": Payload(sentinel)}, buf)
    framed = plain[2:]  # drop PROTO: the stream now opens with FRAME + an 8-byte little-endian length
    assert plain[2] == 0x95 and int.from_bytes(framed[:8], "little") < 100_000_000
    return {"pickle": plain, "torch-zip": buf.getvalue(), "frame-first": framed}


SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".onnx")

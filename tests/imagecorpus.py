"""Image files built in memory for decoder tests: each format, awkward modes, hostile bytes.

Most images are `quadrants`: four solid colours, so a test can tell where each corner ended up
after EXIF orientation. Colours are pure, so lossy formats stay within a small tolerance.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pillow_heif
from PIL import Image

pillow_heif.register_heif_opener()

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
# Corner colours of `quadrants`, clockwise from the top left.
TOP_LEFT, TOP_RIGHT, BOTTOM_RIGHT, BOTTOM_LEFT = RED, GREEN, WHITE, BLUE


def quadrants(width: int = 64, height: int = 48) -> Image.Image:
    image = Image.new("RGB", (width, height), BOTTOM_RIGHT)
    half_w, half_h = width // 2, height // 2
    image.paste(TOP_LEFT, (0, 0, half_w, half_h))
    image.paste(TOP_RIGHT, (half_w, 0, width, half_h))
    image.paste(BOTTOM_LEFT, (0, half_h, half_w, height))
    return image


def encode(image: Image.Image, image_format: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **params)
    return buffer.getvalue()


def jpeg(image: Image.Image | None = None, *, orientation: int | None = None) -> bytes:
    """A JPEG of `image` (default `quadrants()`), with an EXIF Orientation tag when given."""
    image = quadrants() if image is None else image
    params: dict[str, object] = {"quality": 95}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        params["exif"] = exif.tobytes()
    return encode(image, "JPEG", **params)


def mpo() -> bytes:
    """A multi-picture JPEG, as many cameras write: `quadrants()`, then a black second view."""
    first = quadrants()
    return encode(first, "MPO", save_all=True, append_images=[Image.new("RGB", first.size)])


def png(image: Image.Image | None = None) -> bytes:
    return encode(quadrants() if image is None else image, "PNG")


def webp() -> bytes:
    return encode(quadrants(), "WEBP", lossless=True)


def bmp() -> bytes:
    return encode(quadrants(), "BMP")


def tiff() -> bytes:
    return encode(quadrants(), "TIFF", compression="tiff_lzw")


def heic() -> bytes:
    return encode(quadrants(), "HEIF", quality=95)


def animated_gif() -> bytes:
    """Two frames: `quadrants()` first, then solid black."""
    first = quadrants().convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    second = Image.new("RGB", first.size, BLACK).convert("P")
    return encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)


def cmyk_jpeg() -> bytes:
    """Solid red written as CMYK (0% cyan, 100% magenta, 100% yellow, 0% black)."""
    return encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95)


def gray16_png(levels: np.ndarray) -> bytes:
    """A 16-bit grayscale PNG holding `levels` (uint16, H x W)."""
    return encode(Image.fromarray(levels.astype(np.uint16)), "PNG")


def int32_tiff(levels: np.ndarray) -> bytes:
    """A 32-bit integer (mode I) TIFF holding `levels`, as 16-bit scans are sometimes stored."""
    return encode(Image.fromarray(levels.astype(np.int32)), "TIFF")


def palette_png_with_transparency() -> bytes:
    """Palette PNG: left half index 0 (transparent), right half index 1 (blue)."""
    image = Image.new("P", (40, 20), 0)
    image.putpalette([*RED, *BLUE])
    image.paste(1, (20, 0, 40, 20))
    return encode(image, "PNG", transparency=0)


def rgba_png() -> bytes:
    """Three vertical bands: transparent red, half-transparent black, opaque green."""
    image = Image.new("RGBA", (30, 10), (*RED, 0))
    image.paste((*BLACK, 128), (10, 0, 20, 10))
    image.paste((*GREEN, 255), (20, 0, 30, 10))
    return encode(image, "PNG")


def gray_alpha_png() -> bytes:
    """Mode LA: left half transparent black, right half opaque mid-gray (100)."""
    image = Image.new("LA", (20, 10), (0, 0))
    image.paste((100, 255), (10, 0, 20, 10))
    return encode(image, "PNG")


def grayscale_png() -> bytes:
    return encode(Image.new("L", (16, 8), 77), "PNG")


def bilevel_png() -> bytes:
    """Mode 1: left half black, right half white."""
    image = Image.new("1", (16, 8), 0)
    image.paste(1, (8, 0, 16, 8))
    return encode(image, "PNG")


def one_pixel(image_format: str) -> bytes:
    return encode(Image.new("RGB", (1, 1), RED), image_format)


def noisy_jpeg(width: int = 256, height: int = 256) -> bytes:
    """Random pixels, so the entropy-coded data fills most of the file."""
    pixels = np.random.default_rng(7).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "JPEG", quality=90)


def truncated_jpeg() -> bytes:
    data = noisy_jpeg()
    return data[: len(data) // 2]


def png_with_bad_checksum() -> bytes:
    data = bytearray(png())
    data[29] ^= 0xFF  # first byte of the IHDR chunk's CRC
    return bytes(data)


def jpeg_header_then_garbage() -> bytes:
    return b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` 8-bit gray pixels: a decompression bomb.

    The pixel data is a few bytes, so decoding it would fail; only a check made from the header
    alone, before decoding, answers "too large".
    """

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def eps() -> bytes:
    """PostScript: a format Pillow could open (via Ghostscript) but the service must not."""
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"

"""decode_image and decode_base64 on real files of every supported kind, and on hostile ones."""

from __future__ import annotations

import base64
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from festora.errors import ImageDecodeError, ImageTooLarge
from festora.images import DecodedImage, decode_base64, decode_image
from tests import imagecorpus as corpus

MAX_PIXELS = 50_000_000
Colour = tuple[int, int, int]


def decode(data: bytes, **options: int) -> DecodedImage:
    return decode_image(data, max_pixels=options.pop("max_pixels", MAX_PIXELS), **options)


def colour_at(image: DecodedImage, y: float, x: float) -> Colour:
    """The pixel at fractions (y, x) of the decoded array."""
    rows, columns, _ = image.rgb.shape
    pixel = image.rgb[min(int(y * rows), rows - 1), min(int(x * columns), columns - 1)]
    return (int(pixel[0]), int(pixel[1]), int(pixel[2]))


def assert_colour(actual: Colour, expected: Colour, tolerance: int = 0) -> None:
    assert all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True)), (
        f"{actual} is not within {tolerance} of {expected}"
    )


# Quadrant centres as (y, x) fractions, clockwise from the top left.
QUADRANT_CENTRES = ((0.25, 0.25), (0.25, 0.75), (0.75, 0.75), (0.75, 0.25))


def corners(image: DecodedImage) -> list[Colour]:
    return [colour_at(image, y, x) for y, x in QUADRANT_CENTRES]


def assert_corners(image: DecodedImage, expected: list[Colour], tolerance: int) -> None:
    for actual, wanted in zip(corners(image), expected, strict=True):
        assert_colour(actual, wanted, tolerance)


QUADRANT_CORNERS = [corpus.TOP_LEFT, corpus.TOP_RIGHT, corpus.BOTTOM_RIGHT, corpus.BOTTOM_LEFT]


@pytest.mark.parametrize(
    ("build", "tolerance"),
    [
        (corpus.jpeg, 12),
        (corpus.mpo, 12),
        (corpus.png, 0),
        (corpus.webp, 0),
        (corpus.animated_gif, 0),
        (corpus.bmp, 0),
        (corpus.tiff, 0),
        (corpus.heic, 12),
    ],
    ids=["jpeg", "mpo-first-view", "png", "webp", "gif-first-frame", "bmp", "tiff", "heic"],
)
def test_each_format_decodes_to_rgb_uint8(build: Callable[[], bytes], tolerance: int) -> None:
    image = decode(build())

    assert (image.width, image.height) == (64, 48)
    assert image.rgb.shape == (48, 64, 3)
    assert image.rgb.dtype == np.uint8
    assert image.rgb.flags.c_contiguous
    assert_corners(image, QUADRANT_CORNERS, tolerance)


def test_decoded_pixels_are_read_only_so_analyses_cannot_corrupt_each_other() -> None:
    image = decode(corpus.png())

    with pytest.raises(ValueError, match="read-only"):
        image.rgb[0, 0, 0] = 1


R, G, B, W = corpus.RED, corpus.GREEN, corpus.BLUE, corpus.WHITE


# Where each stored corner must appear once the EXIF orientation is applied (EXIF 2.3, tag 274).
@pytest.mark.parametrize(
    ("orientation", "expected_corners", "turned"),
    [
        (1, [R, G, W, B], False),
        (2, [G, R, B, W], False),  # mirrored left-right
        (3, [W, B, R, G], False),  # rotated 180
        (4, [B, W, G, R], False),  # mirrored top-bottom
        (5, [R, B, W, G], True),  # transposed (mirrored about the main diagonal)
        (6, [B, R, G, W], True),  # rotate 90 degrees clockwise to view
        (7, [W, G, R, B], True),  # transversed (mirrored about the other diagonal)
        (8, [G, W, B, R], True),  # rotate 90 degrees counter-clockwise to view
    ],
)
@pytest.mark.parametrize("reduced", [False, True], ids=["full-size", "reduced"])
def test_exif_orientation_is_applied_and_reported_in_width_and_height(
    orientation: int, expected_corners: list[Colour], turned: bool, reduced: bool
) -> None:
    """Full size decodes through Pillow, reduced through libjpeg-turbo's scaling: both turn."""
    data = corpus.jpeg(corpus.quadrants(64, 48), orientation=orientation)
    image = decode(data, min_long_side=24) if reduced else decode(data)

    expected_size = (48, 64) if turned else (64, 48)
    rows, columns = (18, 24) if reduced else (48, 64)  # reduced: 3/8
    if turned:
        rows, columns = columns, rows
    assert (image.width, image.height) == expected_size
    assert image.rgb.shape == (rows, columns, 3)
    assert image.rgb.flags.c_contiguous and not image.rgb.flags.writeable
    assert_corners(image, expected_corners, tolerance=12)


def test_cmyk_jpeg_becomes_rgb() -> None:
    image = decode(corpus.cmyk_jpeg())

    assert image.rgb.shape == (32, 32, 3)
    assert_colour(colour_at(image, 0.5, 0.5), corpus.RED, tolerance=8)


@pytest.mark.parametrize(
    "build", [corpus.gray16_png, corpus.int32_tiff], ids=["png-I;16", "tiff-I"]
)
def test_sixteen_bit_grayscale_is_scaled_not_clipped(build: Callable[[np.ndarray], bytes]) -> None:
    levels = np.array([[0, 1000, 128 * 257, 65535]])

    image = decode(build(levels))

    assert image.rgb.shape == (1, 4, 3)
    assert image.rgb[0, :, 0].tolist() == [0, 3, 128, 255]
    assert (image.rgb == image.rgb[:, :, :1]).all()


def test_palette_transparency_is_composited_onto_white() -> None:
    image = decode(corpus.palette_png_with_transparency())

    assert_colour(colour_at(image, 0.5, 0.25), corpus.WHITE)
    assert_colour(colour_at(image, 0.5, 0.75), corpus.BLUE)


def test_rgba_is_composited_onto_white() -> None:
    image = decode(corpus.rgba_png())

    assert_colour(colour_at(image, 0.5, 0.1), corpus.WHITE)
    assert_colour(colour_at(image, 0.5, 0.5), (127, 127, 127), tolerance=1)
    assert_colour(colour_at(image, 0.5, 0.9), corpus.GREEN)


def test_gray_with_alpha_is_composited_onto_white() -> None:
    image = decode(corpus.gray_alpha_png())

    assert_colour(colour_at(image, 0.5, 0.25), corpus.WHITE)
    assert_colour(colour_at(image, 0.5, 0.75), (100, 100, 100))


def test_grayscale_and_bilevel_become_rgb() -> None:
    gray = decode(corpus.grayscale_png())
    bilevel = decode(corpus.bilevel_png())

    assert gray.rgb.shape == (8, 16, 3)
    assert_colour(colour_at(gray, 0.5, 0.5), (77, 77, 77))
    assert_colour(colour_at(bilevel, 0.5, 0.25), corpus.BLACK)
    assert_colour(colour_at(bilevel, 0.5, 0.75), corpus.WHITE)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF"])
def test_one_pixel_images_decode(image_format: str) -> None:
    image = decode(corpus.one_pixel(image_format))

    assert (image.width, image.height) == (1, 1)
    assert image.rgb.shape == (1, 1, 3)
    assert colour_at(image, 0, 0)[0] > 200


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, this is not an image", "supported format"),
        (bytes(range(256)) * 16, "supported format"),
        (corpus.eps(), "supported format"),
        (corpus.truncated_jpeg(), "corrupt or truncated"),
        (corpus.png_with_bad_checksum(), "corrupt"),
        (corpus.jpeg_header_then_garbage(), "corrupt"),
    ],
    ids=["empty", "text", "random", "eps", "truncated-jpeg", "bad-png-crc", "jpeg-garbage"],
)
def test_broken_or_unsupported_bytes_are_decode_errors(data: bytes, message: str) -> None:
    with pytest.raises(ImageDecodeError, match=message) as caught:
        decode(data)

    assert caught.value.status_code == 422


def test_decompression_bomb_is_refused_from_its_header() -> None:
    with pytest.raises(ImageTooLarge) as caught:
        decode(corpus.png_header_claiming(100_000, 100_000))

    assert caught.value.status_code == 413


def test_pixel_limit_is_checked_before_decoding() -> None:
    # The file holds almost no pixel data: decoding it would be a decode error, not 413.
    with pytest.raises(ImageTooLarge, match=r"2000x1000 = 2,000,000 pixels.*limit is 1,000,000"):
        decode(corpus.png_header_claiming(2000, 1000), max_pixels=1_000_000)
    with pytest.raises(ImageDecodeError):
        decode(corpus.png_header_claiming(1000, 1000), max_pixels=1_000_000)


def test_pillows_bomb_warning_counts_as_too_large_even_under_a_higher_limit() -> None:
    claimed = Image.MAX_IMAGE_PIXELS + 1

    with pytest.raises(ImageTooLarge), pytest.warns(Image.DecompressionBombWarning):
        decode(corpus.png_header_claiming(claimed, 1), max_pixels=2 * claimed)


@pytest.fixture(scope="module")
def large_jpeg() -> bytes:
    return corpus.jpeg(corpus.quadrants(3000, 2000))


@pytest.mark.parametrize(
    ("min_long_side", "decoded_long_side"),
    [(300, 375), (375, 375), (500, 750), (1100, 1125), (1500, 1500), (1600, 1875), (5000, 3000)],
)
def test_jpeg_decodes_at_the_smallest_eighth_scale_keeping_min_long_side(
    large_jpeg: bytes, min_long_side: int, decoded_long_side: int
) -> None:
    image = decode(large_jpeg, min_long_side=min_long_side)

    assert (image.width, image.height) == (3000, 2000)
    assert image.rgb.shape == (decoded_long_side * 2 // 3, decoded_long_side, 3)
    assert decoded_long_side >= min(min_long_side, 3000)
    assert_corners(image, QUADRANT_CORNERS, tolerance=12)


@pytest.mark.parametrize("cmyk", [False, True], ids=["simplejpeg", "pillow-draft"])
@pytest.mark.parametrize("size", [(3000, 1000), (1000, 3000)], ids=["wide", "tall"])
def test_reduced_jpeg_decode_keeps_min_short_side(size: tuple[int, int], cmyk: bool) -> None:
    picture = corpus.quadrants(*size)
    data = corpus.encode(picture.convert("CMYK"), "JPEG") if cmyk else corpus.jpeg(picture)

    # 1/8 would keep the long side (375 >= 224) but cut the short one to 125
    image = decode(data, min_long_side=224, min_short_side=224)
    short, long = sorted(image.rgb.shape[:2])

    assert (short, long) == (250, 750)  # 1/4: 224 <= 250
    assert image.rgb.shape[1] == (750 if size[0] > size[1] else 250)
    assert sorted(decode(data, min_long_side=224).rgb.shape[:2]) == [125, 375]


def test_jpeg_draft_with_exif_rotation_reports_the_full_turned_size() -> None:
    image = decode(corpus.jpeg(corpus.quadrants(3000, 2000), orientation=6), min_long_side=500)

    assert (image.width, image.height) == (2000, 3000)
    assert image.rgb.shape == (750, 500, 3)
    assert_corners(image, [B, R, G, W], tolerance=12)


def test_other_formats_decode_at_full_size_whatever_min_long_side() -> None:
    image = decode(corpus.png(corpus.quadrants(800, 600)), min_long_side=100)

    assert image.rgb.shape == (600, 800, 3)


def test_min_long_side_must_be_positive() -> None:
    with pytest.raises(ValueError, match="min_long_side"):
        decode(corpus.png(), min_long_side=0)


def test_concurrent_decodes_in_threads_match_serial_decodes() -> None:
    files = [
        corpus.jpeg(orientation=6),
        corpus.png(),
        corpus.heic(),
        corpus.rgba_png(),
        corpus.cmyk_jpeg(),
        corpus.animated_gif(),
        corpus.gray16_png(np.arange(256, dtype=np.uint16).reshape(16, 16) * 256),
        corpus.noisy_jpeg(),
    ] * 6
    serial = [decode(data).rgb for data in files]

    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda data: decode(data).rgb, files))

    for one, other in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(one, other)


def test_base64_round_trip_ignores_whitespace_and_newlines() -> None:
    data = corpus.png()

    assert decode_base64(base64.b64encode(data).decode(), max_bytes=len(data)) == data
    wrapped = "\n  " + base64.encodebytes(data).decode().replace("\n", "\r\n\t")
    assert decode_base64(wrapped, max_bytes=len(data)) == data


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data:image/png;base64,iVBORw0KGgo=", "without a 'data:"),
        ("  DATA:image/png;base64,iVBORw0KGgo=", "without a 'data:"),
        ("iVBORw0KGgo", "not valid"),  # missing padding
        ("iVBO*w0KGgo=", "not valid"),
        ("iVBORw0K-_o=", "not valid"),  # URL-safe alphabet
        ("iVBORw0KGgé=", "not valid"),
        ("", "empty"),
        (" \n ", "empty"),
    ],
)
def test_bad_base64_is_a_decode_error(text: str, message: str) -> None:
    with pytest.raises(ImageDecodeError, match=message):
        decode_base64(text, max_bytes=1000)


def test_base64_over_the_byte_limit_is_too_large() -> None:
    data = bytes(range(256)) * 4

    assert decode_base64(base64.b64encode(data).decode(), max_bytes=1024) == data
    with pytest.raises(ImageTooLarge, match="1023-byte limit"):
        decode_base64(base64.b64encode(data).decode(), max_bytes=1023)


def test_oversized_base64_is_refused_from_its_length_before_decoding() -> None:
    # Not base64 at all: if it were decoded first, this would be a decode error.
    with pytest.raises(ImageTooLarge):
        decode_base64("!" * 10_000_000, max_bytes=1_000_000)

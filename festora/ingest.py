"""Get the raw bytes of one `ImageInput`, whichever way the client sent it."""

from __future__ import annotations

from festora.config import Settings
from festora.errors import ImageDecodeError
from festora.fetch import fetch_url
from festora.images import decode_base64
from festora.schemas import ImageInput


async def read_image_bytes(image: ImageInput, settings: Settings) -> bytes:
    """Fetch `url` (SSRF-checked, streamed) or decode base64 `data`, capped at the same size.

    Raises ImageFetchError / ImageDecodeError (422) or ImageTooLarge (413).
    """
    if image.url is not None:
        return await fetch_url(image.url, settings)
    if image.data is not None:
        return decode_base64(image.data, max_bytes=settings.max_image_size_bytes)
    raise ImageDecodeError("the image has neither 'url' nor 'data'")

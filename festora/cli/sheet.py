"""The contact sheet: `index.html` beside a `thumbs/` folder of small JPEGs, viewable offline.

The page carries its own CSS and script (no network, no external files besides the
thumbnails), one row per group with the best frame first. Thumbnails are named by the photo's
content hash, so a re-run reuses them and a renamed photo keeps its thumbnail.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import jinja2
from PIL import Image

from festora.cli.outputs import CulledGroup, CulledPhoto
from festora.errors import ApiError
from festora.images import decode_image

THUMB_LONG_SIDE = 320
THUMB_QUALITY = 82
# Thumbnails are made from the photographer's own files; only a decompression bomb is refused.
_MAX_PIXELS = 250_000_000
VERDICTS = ("keep", "maybe", "reject")

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("festora.cli", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def thumbnail_name(sha256: str) -> str:
    return f"{sha256[:32]}.jpg"


def ensure_thumbnail(data: bytes, sha256: str, thumbs: Path) -> Path | None:
    """The photo's thumbnail in `thumbs`, made now unless it exists; None when the bytes do not
    decode (the sheet then shows the file name instead)."""
    path = thumbs / thumbnail_name(sha256)
    if path.exists():
        return path
    try:
        decoded = decode_image(data, max_pixels=_MAX_PIXELS, min_long_side=THUMB_LONG_SIDE)
    except ApiError:
        return None
    image = Image.fromarray(decoded.rgb)
    image.thumbnail((THUMB_LONG_SIDE, THUMB_LONG_SIDE), Image.Resampling.LANCZOS)
    thumbs.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.part")
    try:
        image.save(partial, "JPEG", quality=THUMB_QUALITY, optimize=True)
        partial.replace(path)  # atomic: a killed run never leaves half a thumbnail
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return path


def write_contact_sheet(
    groups: list[CulledGroup], out: Path, *, title: str, tags_note: str | None = None
) -> Path:
    """`index.html` for the cull's groups; `tags_note` says, in the header, why the photos
    carry no tags (off, or the service could not tag them)."""
    thumbs = out / "thumbs"
    photos = [photo for group in groups for photo in group.photos]
    counts = Counter(photo.verdict for photo in photos)
    page = _templates.get_template("contact_sheet.html").render(
        title=title,
        total=len(photos),
        counts={verdict: counts.get(verdict, 0) for verdict in VERDICTS},
        failed=sum(photo.analysis.get("error") is not None for photo in photos),
        tags_note=tags_note,
        groups=[
            {
                "group_id": group.group_id,
                "kind": group.kind,
                "photos": [_photo_view(photo, thumbs) for photo in group.photos],
            }
            for group in groups
        ],
    )
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def _photo_view(photo: CulledPhoto, thumbs: Path) -> dict[str, Any]:
    thumb = thumbnail_name(photo.sha256) if photo.sha256 else None
    return {
        "image_id": photo.image_id,
        "path": photo.path,
        "name": Path(photo.path).name,
        "verdict": photo.verdict,
        "best": photo.best,
        "rank": photo.rank,
        "reasons": photo.reasons,
        "thumb": f"thumbs/{thumb}" if thumb and (thumbs / thumb).exists() else None,
        "scores": scores_of(photo),
        "tags": [
            {"label": tag["label"], "percent": f"{100 * tag['probability']:.0f}%"}
            for tag in photo.tags
        ],
    }


def scores_of(photo: CulledPhoto) -> list[tuple[str, str]]:
    """The numbers behind a verdict, as label/value pairs for the hover card."""
    analysis = photo.analysis
    rows = [("score", f"{photo.score:.3f}"), ("rank in group", str(photo.rank))]
    if photo.duplicate_of:
        rows.append(("duplicate of", photo.duplicate_of))
    if blur := analysis.get("blur"):
        rows.append(("blur (Laplacian var.)", f"{blur['laplacian_variance']:.1f}"))
    if quality := analysis.get("quality"):
        rows.append(("BRISQUE", f"{quality['brisque_score']:.1f}"))
        rows.append(("NIMA technical", f"{quality['nima_technical_score']:.2f}"))
    if aesthetic := analysis.get("aesthetic"):
        rows.append(("NIMA aesthetic", f"{aesthetic['nima_aesthetic_score']:.2f}"))
    if emotion := analysis.get("emotion"):
        rows.append(("faces", str(emotion.get("faces_detected", 0))))
    if exposure := analysis.get("exposure"):
        rows.append(("exposure", str(exposure.get("verdict"))))
    if error := analysis.get("error"):
        rows.append(("error", str(error)))
    return rows

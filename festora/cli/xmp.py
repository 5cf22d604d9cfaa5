"""XMP sidecars with the cull's verdicts, for Lightroom Classic, darktable and digiKam.

Written by exiftool (through PyExifTool, one long-lived exiftool process): the photo itself is
never opened for writing. A sidecar this tool created says so in `xmp:CreatorTool`; any other
sidecar (the photographer's, or one an editor has rewritten since) is left alone unless
`force`, and then only our tags are changed in it, keeping everything else.

Mapping (documented in the README):
- `xmp:Rating`: best of its group and keep = 5, keep = 4, maybe = 2, reject = -1 (Lightroom's
  "rejected" flag, darktable's "rejected").
- `xmp:Label`: keep = Green, maybe = Yellow, reject = Red (Lightroom's default label names).
- `dc:subject`: `festora:<verdict>` and `festora:<reason code>` for each reason; the same as
  `lr:hierarchicalSubject` `festora|<...>`, so Lightroom files them under one "festora" keyword.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import exiftool
from exiftool.exceptions import ExifToolException

from festora import __version__
from festora.cli.outputs import CulledPhoto

CREATOR_TOOL = f"Festora {__version__}"
_OURS = "Festora "
LABELS = {"keep": "Green", "maybe": "Yellow", "reject": "Red"}
KEYWORD_PREFIX = "festora"


class ExiftoolMissing(RuntimeError):
    pass


@dataclass
class SidecarReport:
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)  # someone else's sidecar, left untouched
    failed: dict[str, str] = field(default_factory=dict)  # photo path -> why


def rating(photo: CulledPhoto) -> int:
    if photo.verdict == "reject":
        return -1
    if photo.verdict == "maybe":
        return 2
    return 5 if photo.best else 4


def keywords(photo: CulledPhoto) -> list[str]:
    return [photo.verdict, *(code for code in photo.reason_codes if code != photo.verdict)]


def sidecar_path(photo_path: Path) -> Path:
    """`IMG_0001.jpg` -> `IMG_0001.xmp`, the name Lightroom and Capture One look for."""
    return photo_path.with_suffix(".xmp")


def write_sidecars(photos: list[CulledPhoto], root: Path, *, force: bool) -> SidecarReport:
    if shutil.which("exiftool") is None:
        raise ExiftoolMissing(
            "--xmp needs exiftool (Debian/Ubuntu: apt-get install libimage-exiftool-perl; "
            "macOS: brew install exiftool)"
        )
    report = SidecarReport()
    # IMG_1.jpg and IMG_1.png would share IMG_1.xmp: neither gets one rather than a wrong one.
    names = Counter(sidecar_path(root / photo.path) for photo in photos)
    with exiftool.ExifToolHelper() as tool:
        for photo in photos:
            sidecar = sidecar_path(root / photo.path)
            if names[sidecar] > 1:
                report.failed[photo.path] = f"{sidecar.name} would be shared by two photos"
                continue
            try:
                if _write_one(tool, photo, sidecar, force=force):
                    report.written.append(sidecar)
                else:
                    report.kept.append(sidecar)
            except (ExifToolException, OSError) as exc:
                report.failed[photo.path] = str(exc).strip()[:300]
    return report


def _write_one(
    tool: exiftool.ExifToolHelper, photo: CulledPhoto, sidecar: Path, *, force: bool
) -> bool:
    """Write or refresh `sidecar`; False when it belongs to someone else and not `force`."""
    ours_keywords = keywords(photo)
    tags: dict[str, object] = {
        "XMP-xmp:Rating": rating(photo),
        "XMP-xmp:Label": LABELS[photo.verdict],
    }
    if not sidecar.exists():
        tags["XMP-xmp:CreatorTool"] = CREATOR_TOOL
        tags["XMP-dc:Subject"] = [f"{KEYWORD_PREFIX}:{k}" for k in ours_keywords]
        tags["XMP-lr:HierarchicalSubject"] = [f"{KEYWORD_PREFIX}|{k}" for k in ours_keywords]
        partial = sidecar.with_name(f".{sidecar.name}.festora-part.xmp")
        partial.unlink(missing_ok=True)
        tool.execute(*_assignments(tags), "-o", str(partial))
        partial.replace(sidecar)
        return True
    existing = tool.get_tags(
        [str(sidecar)], ["XMP-xmp:CreatorTool", "XMP-dc:Subject", "XMP-lr:HierarchicalSubject"]
    )[0]
    if not str(existing.get("XMP:CreatorTool", "")).startswith(_OURS) and not force:
        return False
    # Replace our keywords, keep everyone else's.
    tags["XMP-dc:Subject"] = [
        *_others(existing.get("XMP:Subject"), f"{KEYWORD_PREFIX}:"),
        *(f"{KEYWORD_PREFIX}:{k}" for k in ours_keywords),
    ]
    tags["XMP-lr:HierarchicalSubject"] = [
        *_others(existing.get("XMP:HierarchicalSubject"), f"{KEYWORD_PREFIX}|"),
        *(f"{KEYWORD_PREFIX}|{k}" for k in ours_keywords),
    ]
    tool.execute(*_assignments(tags), "-overwrite_original", str(sidecar))
    return True


def _others(values: object, prefix: str) -> list[str]:
    if values is None:
        return []
    items = values if isinstance(values, list) else [values]
    return [str(item) for item in items if not str(item).startswith(prefix)]


def _assignments(tags: dict[str, object]) -> list[str]:
    """exiftool arguments; a list tag's first value replaces it, the others add to it."""
    args = []
    for name, value in tags.items():
        for item in value if isinstance(value, list) else [value]:
            args.append(f"-{name}={item}")
    return args

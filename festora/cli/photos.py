"""The photo folder: which files are photos, their ids and content hashes, and what is done.

`results.jsonl` is both the output and the resume state: one line per photo, appended and
flushed as each photo finishes, so an interrupted run loses nothing it finished. A photo is
done when a line for its content hash exists; a photo whose bytes were already analysed under
another path (a copy, a rename) reuses that analysis instead of being sent again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".heic", ".heif", ".tif", ".tiff"})
# The contract's limit on `image_id`; longer relative paths keep their tail plus a path hash.
MAX_IMAGE_ID = 128


@dataclass(frozen=True)
class Photo:
    path: Path
    relpath: str  # POSIX path relative to the photo folder: the id shown everywhere

    @property
    def image_id(self) -> str:
        if len(self.relpath) <= MAX_IMAGE_ID:
            return self.relpath
        digest = hashlib.sha256(self.relpath.encode()).hexdigest()[:16]
        return f"{digest}~{self.relpath[-(MAX_IMAGE_ID - len(digest) - 1) :]}"


def find_photos(root: Path, *, exclude: Path | None = None) -> list[Photo]:
    """Photos under `root` by suffix, recursively, sorted; hidden entries and `exclude` (the
    output folder, whose thumbnails are JPEGs too) are skipped."""
    root = root.resolve()
    excluded = exclude.resolve() if exclude is not None else None
    photos = []
    for path in _walk(root, excluded):
        if path.suffix.lower() in PHOTO_SUFFIXES:
            photos.append(Photo(path=path, relpath=path.relative_to(root).as_posix()))
    return sorted(photos, key=lambda photo: photo.relpath)


def _walk(directory: Path, excluded: Path | None) -> Iterator[Path]:
    for entry in directory.iterdir():
        if entry.name.startswith(".") or entry == excluded:
            continue
        if entry.is_dir():
            yield from _walk(entry, excluded)
        elif entry.is_file():
            yield entry


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Record:
    """One line of results.jsonl: where the photo is, what its bytes hash to, its analysis."""

    path: str
    sha256: str
    size_bytes: int
    result: dict[str, Any]
    analysed_at: str

    @property
    def failed(self) -> bool:
        return self.result.get("error") is not None

    def to_json(self) -> str:
        return json.dumps(
            {
                "path": self.path,
                "sha256": self.sha256,
                "size_bytes": self.size_bytes,
                "analysed_at": self.analysed_at,
                "result": self.result,
            },
            separators=(",", ":"),
        )


def new_record(photo: Photo, sha256: str, size_bytes: int, result: dict[str, Any]) -> Record:
    return Record(
        path=photo.relpath,
        sha256=sha256,
        size_bytes=size_bytes,
        result={**result, "image_id": photo.image_id},
        analysed_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


class ResultsLog:
    """results.jsonl, read once for what is done and appended to as photos finish."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.by_path: dict[str, Record] = {}
        self.by_sha256: dict[str, Record] = {}
        if path.exists():
            for record in _read(path):
                self._remember(record)
        self._file: TextIO | None = None

    def _remember(self, record: Record) -> None:
        self.by_path[record.path] = record
        self.by_sha256.setdefault(record.sha256, record)

    def done(self, photo: Photo, sha256: str) -> Record | None:
        """This photo's record when its current bytes are already in the log."""
        record = self.by_path.get(photo.relpath)
        return record if record is not None and record.sha256 == sha256 else None

    def analysed(self, sha256: str) -> Record | None:
        """Any record of these bytes, under whichever path they were analysed."""
        return self.by_sha256.get(sha256)

    def append(self, record: Record) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
            if _ends_mid_line(self.path):
                self._file.write("\n")  # end the line a killed run cut short
        self._file.write(record.to_json() + "\n")
        self._file.flush()
        self._remember(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _ends_mid_line(path: Path) -> bool:
    with path.open("rb") as file:
        if file.seek(0, 2) == 0:
            return False
        file.seek(-1, 2)
        return file.read(1) != b"\n"


def _read(path: Path) -> Iterator[Record]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                fields = json.loads(line)
                yield Record(**fields)
            except (ValueError, TypeError):
                # A line cut short by a crash or kill: that photo is simply analysed again.
                continue

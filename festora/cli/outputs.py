"""What a cull leaves in the output folder besides results.jsonl: cull.json and cull.csv.

`culled_photos` joins the service's /v1/cull answer with the local records (path, hash,
analysis), once, for every writer: the CSV, the contact sheet and the XMP sidecars.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from festora.cli.photos import Record

CSV_COLUMNS = (
    "path",
    "image_id",
    "sha256",
    "group_id",
    "group_kind",
    "rank",
    "best_in_group",
    "verdict",
    "score",
    "reasons",
    "duplicate_of",
    "error",
    "tags",
)


@dataclass(frozen=True)
class CulledPhoto:
    image_id: str
    path: str
    sha256: str | None
    group_id: int
    group_kind: str
    rank: int
    best: bool
    score: float
    verdict: str  # keep | maybe | reject
    reasons: list[dict[str, str]]  # [{"code", "message"}]
    duplicate_of: str | None
    analysis: dict[str, Any]
    tags: list[dict[str, Any]] = field(default_factory=list)  # [{"label", "probability"}]

    @property
    def reason_codes(self) -> list[str]:
        return [reason["code"] for reason in self.reasons]


@dataclass(frozen=True)
class CulledGroup:
    group_id: int
    kind: str
    photos: list[CulledPhoto]  # best first


def culled_groups(
    cull: dict[str, Any],
    records: dict[str, Record],
    tags: dict[str, list[dict[str, Any]]] | None = None,
) -> list[CulledGroup]:
    """The cull's groups in its order, each photo joined with its record and its zero-shot
    tags (none when `tags` lacks it) by `image_id`."""
    tags = tags or {}
    verdicts = {image["image_id"]: image for image in cull["images"]}
    groups = []
    for group in cull["groups"]:
        photos = []
        for image_id in group["image_ids"]:
            image = verdicts[image_id]
            record = records.get(image_id)
            photos.append(
                CulledPhoto(
                    image_id=image_id,
                    path=record.path if record else image_id,
                    sha256=record.sha256 if record else None,
                    group_id=group["group_id"],
                    group_kind=group["kind"],
                    rank=image["rank"],
                    best=image_id == group["best_image_id"],
                    score=image["score"],
                    verdict=image["verdict"],
                    reasons=image.get("reasons") or [],
                    duplicate_of=image.get("duplicate_of"),
                    analysis=record.result if record else {},
                    tags=tags.get(image_id, []),
                )
            )
        groups.append(CulledGroup(group_id=group["group_id"], kind=group["kind"], photos=photos))
    return groups


def write_cull_json(cull: dict[str, Any], out: Path) -> Path:
    path = out / "cull.json"
    path.write_text(json.dumps(cull, indent=2) + "\n", encoding="utf-8")
    return path


def write_cull_csv(groups: list[CulledGroup], out: Path) -> Path:
    """One row per photo, in group order, best first: what a spreadsheet user sorts and filters."""
    path = out / "cull.csv"
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for group in groups:
            for photo in group.photos:
                writer.writerow(
                    {
                        "path": photo.path,
                        "image_id": photo.image_id,
                        "sha256": photo.sha256 or "",
                        "group_id": photo.group_id,
                        "group_kind": photo.group_kind,
                        "rank": photo.rank,
                        "best_in_group": str(photo.best).lower(),
                        "verdict": photo.verdict,
                        "score": f"{photo.score:.4f}",
                        "reasons": ";".join(photo.reason_codes),
                        "duplicate_of": photo.duplicate_of or "",
                        "error": photo.analysis.get("error") or "",
                        "tags": ";".join(
                            f"{tag['label']}:{tag['probability']:.3f}" for tag in photo.tags
                        ),
                    }
                )
    return path

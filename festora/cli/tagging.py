"""Each culled photo's top zero-shot tags, from the service's /v1/tags over the CLIP embeddings
already in results.jsonl (no photo is sent again), for the contact sheet and cull.csv.

Tags are a nicety: the caller treats a failed request as "no tags this run", never as a failed
cull.
"""

from __future__ import annotations

from typing import Any

from festora.cli.client import FestoraClient
from festora.cli.photos import Record
from festora.schemas import MAX_LABELS

# What an event or everyday shoot holds, as short CLIP-friendly nouns ("a photo of {label}").
DEFAULT_TAG_LABELS = (
    "people",
    "portrait",
    "group photo",
    "couple",
    "child",
    "bride",
    "wedding cake",
    "dancing",
    "speech",
    "food",
    "drinks",
    "flowers",
    "dog",
    "cat",
    "landscape",
    "beach",
    "city street",
    "building",
    "interior",
    "car",
    "night",
    "sunset",
    "sports",
    "document",
)
DEFAULT_TOP_TAGS = 3
# Embeddings per /v1/tags request: 2,000 x 512 float32 is a 5.5 MB body, far under any cap.
CHUNK = 2_000


def parse_labels(text: str) -> list[str]:
    """`--tags "cake, dance, dog"` as labels: trimmed, blanks and repeats dropped, in order;
    ValueError unless 2 to MAX_LABELS remain (what /v1/tags accepts)."""
    labels = list(dict.fromkeys(label.strip() for label in text.split(",") if label.strip()))
    if not 2 <= len(labels) <= MAX_LABELS:
        raise ValueError(f"--tags needs 2 to {MAX_LABELS} labels, got {len(labels)}")
    return labels


def photo_tags(
    client: FestoraClient, records: dict[str, Record], labels: list[str], top_k: int
) -> dict[str, list[dict[str, Any]]]:
    """image_id -> its `top_k` tags (`{"label", "probability"}`, most probable first), for every
    record with an embedding; a ServiceError when the service cannot tag them."""
    embedded = {
        image_id: record.result["embedding"]["vector"]
        for image_id, record in records.items()
        if not record.failed and (record.result.get("embedding") or {}).get("vector")
    }
    ids = list(embedded)
    tags: dict[str, list[dict[str, Any]]] = {}
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        tags.update(client.tags([embedded[i] for i in chunk], chunk, labels, top_k))
    return tags

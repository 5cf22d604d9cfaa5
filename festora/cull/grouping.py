"""Group a shoot: exact duplicates, bursts, and similar frames without usable EXIF.

Three kinds of link between two frames, each decided on the pair alone (so the groups do not
depend on the input order), then joined into connected components:
- duplicate: the same file bytes (sha256); or the same pixels as far as the analyses can tell
  (a re-encoded or metadata-stripped copy): the same dimensions, a pHash distance of 0, the
  same capture moment (or none on either), mean luminance within 0.01, Laplacian variance
  within 25% (re-encoding a JPEG at quality 80-95 moves it by up to 15% on the packages'
  photos), and a CLIP cosine of at least `duplicate_similarity` when both have embeddings.
  pHash alone is too coarse for this (a blurred or darkened copy keeps its pHash), and two
  frames of a burst taken at different moments are never duplicates.
- burst: the same camera (make, model and body serial), capture moments at most
  `burst_gap_seconds` apart, and visually close: a pHash distance of at most
  `max_phash_distance` or a CLIP cosine of at least `burst_similarity`. Camera and time are the
  main evidence here, so either visual test may confirm them.
- similar: at least one of the two frames lacks usable EXIF, and both visual tests agree
  (pHash within `max_phash_distance`, and CLIP cosine >= `burst_similarity` when both have
  embeddings): CLIP alone never groups photos.
Chaining is intended: frames 1 s apart over 5 s form one burst.

Cost: pHash distances are computed with numpy in blocks (every frame without usable EXIF
against every frame), bursts with a sorted sweep per camera, components with scipy; CLIP
vectors are converted only for the pairs that need a cosine.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from festora.cull.schemas import CullOptions, GroupKind
from festora.cull.signals import Frame

# A burst sweep compares a frame with at most this many later frames of the same camera inside
# the gap (30 fps for 2 s): it bounds the cost of thousands of frames with one timestamp.
MAX_BURST_NEIGHBOURS = 64
_BLOCK_ROWS = 512
SAME_LUMINANCE = 0.01
SAME_DETAIL = 0.25


@dataclass
class Group:
    kind: GroupKind
    members: list[int]  # frame positions
    duplicate_sets: list[list[int]] = field(default_factory=list)  # each of 2 or more


def group_frames(frames: list[Frame], options: CullOptions) -> list[Group]:
    """Partition the successfully analysed `frames` (positions into the list) into groups."""
    n = len(frames)
    clip = Clip(frames)
    duplicate = _duplicate_links(frames, clip, options)
    burst = _burst_links(frames, clip, options)
    similar = _similar_links(frames, clip, options)

    duplicate_of = _components(n, duplicate)
    component = _components(n, duplicate + burst + similar)
    with_burst = {component[i] for i, _ in burst}
    members: dict[int, list[int]] = defaultdict(list)
    for position, label in enumerate(component):
        members[label].append(position)

    groups = []
    for label, positions in members.items():
        sets: dict[int, list[int]] = defaultdict(list)
        for position in positions:
            sets[duplicate_of[position]].append(position)
        duplicate_sets = [s for s in sets.values() if len(s) > 1]
        if len(positions) == 1:
            kind: GroupKind = "single"
        elif len(sets) == 1:
            kind = "duplicate"
        elif label in with_burst:
            kind = "burst"
        else:
            kind = "similar"
        groups.append(Group(kind, positions, duplicate_sets))
    return groups


class Clip:
    """Cosines between frames' CLIP embeddings, each converted to a unit vector once, when
    first needed. Without embeddings of one length on every frame that has one, CLIP plays no
    part (`cosine` is None)."""

    def __init__(self, frames: list[Frame]) -> None:
        self.frames = frames
        dims = {len(f.embedding) for f in frames if f.embedding is not None}
        self.usable = len(dims) == 1
        self._vectors: dict[int, np.ndarray | None] = {}

    def cosine(self, a: int, b: int) -> float | None:
        va, vb = self._vector(a), self._vector(b)
        return None if va is None or vb is None else float(va @ vb)

    def at_least(self, a: int, b: int, threshold: float, *, absent: bool) -> bool:
        """cosine >= threshold; `absent` is the answer without a cosine."""
        cosine = self.cosine(a, b)
        return absent if cosine is None else cosine >= threshold

    def keep_at_least(self, a: np.ndarray, b: np.ndarray, threshold: float) -> np.ndarray:
        """For many pairs at once: cosine >= threshold, or no cosine (a mask over the pairs)."""
        if not self.usable or not a.size:
            return np.ones(a.size, dtype=bool)
        unique = np.unique(np.concatenate([a, b]))
        vectors = [self._vector(p) for p in unique.tolist()]
        dim = next((v.size for v in vectors if v is not None), 1)
        matrix = np.stack([np.full(dim, np.nan, np.float32) if v is None else v for v in vectors])
        cosines = np.einsum(
            "ij,ij->i", matrix[np.searchsorted(unique, a)], matrix[np.searchsorted(unique, b)]
        )
        return np.isnan(cosines) | (cosines >= threshold)

    def _vector(self, position: int) -> np.ndarray | None:
        if position not in self._vectors:
            embedding = self.frames[position].embedding
            vector = None
            if self.usable and embedding is not None:
                vector = np.asarray(embedding, dtype=np.float32)
                norm = float(np.linalg.norm(vector))
                vector = vector / norm if norm > 0 else None
            self._vectors[position] = vector
        return self._vectors[position]


Links = list[tuple[int, int]]


def _duplicate_links(frames: list[Frame], clip: Clip, options: CullOptions) -> Links:
    links: Links = []
    by_bytes: dict[str, list[int]] = defaultdict(list)
    by_pixels: dict[tuple[int, tuple[int, int] | None], list[int]] = defaultdict(list)
    for position, frame in enumerate(frames):
        if frame.sha256 is not None:
            by_bytes[frame.sha256].append(position)
        if frame.phash is not None:
            by_pixels[(frame.phash, frame.size)].append(position)
    for same in by_bytes.values():
        links += [(same[0], other) for other in same[1:]]
    for same in by_pixels.values():
        for i, a in enumerate(same):
            for b in same[i + 1 :]:
                if _same_pixels(frames[a], frames[b]) and clip.at_least(
                    a, b, options.duplicate_similarity, absent=True
                ):
                    links.append((a, b))
    return links


def _burst_links(frames: list[Frame], clip: Clip, options: CullOptions) -> Links:
    by_camera: dict[tuple[str | None, ...], list[int]] = defaultdict(list)
    for position, frame in enumerate(frames):
        if frame.has_burst_exif:
            by_camera[frame.camera].append(position)  # type: ignore[index]
    links: Links = []
    for positions in by_camera.values():
        positions.sort(key=lambda p: (frames[p].captured, frames[p].image_id))
        for i, a in enumerate(positions):
            for b in positions[i + 1 : i + 1 + MAX_BURST_NEIGHBOURS]:
                if frames[b].captured - frames[a].captured > options.burst_gap_seconds:  # type: ignore[operator]
                    break
                if _phash_close(frames[a], frames[b], options) or clip.at_least(
                    a, b, options.burst_similarity, absent=False
                ):
                    links.append((a, b))
    return links


def _similar_links(frames: list[Frame], clip: Clip, options: CullOptions) -> Links:
    hashed = [p for p, f in enumerate(frames) if f.phash is not None]
    rows = np.array([p for p in hashed if not frames[p].has_burst_exif], dtype=np.int64)
    if not rows.size:
        return []
    columns = np.array(hashed, dtype=np.int64)
    hashes = np.array([frames[p].phash for p in hashed], dtype=np.uint64)
    row_hashes = np.array([frames[p].phash for p in rows.tolist()], dtype=np.uint64)
    exif = np.array([frames[p].has_burst_exif for p in hashed])
    xor = np.empty((_BLOCK_ROWS, hashes.size), dtype=np.uint64)
    bits = np.empty((_BLOCK_ROWS, hashes.size), dtype=np.uint8)
    links: Links = []
    for start in range(0, rows.size, _BLOCK_ROWS):
        block = rows[start : start + _BLOCK_ROWS]
        count = block.size
        np.bitwise_xor(row_hashes[start : start + count, None], hashes[None, :], out=xor[:count])
        np.bitwise_count(xor[:count], out=bits[:count])
        row_idx, col_idx = np.nonzero(bits[:count] <= options.max_phash_distance)
        a, b = block[row_idx], columns[col_idx]
        # each unordered pair once: when both lack EXIF, only from the lower position
        keep = (a != b) & (exif[col_idx] | (a < b))
        a, b = a[keep], b[keep]
        close = clip.keep_at_least(a, b, options.burst_similarity)
        links += zip(a[close].tolist(), b[close].tolist(), strict=True)
    return links


def _same_pixels(a: Frame, b: Frame) -> bool:
    """Beyond an equal pHash and size: the same moment, brightness and detail."""
    if a.captured != b.captured:
        return False
    luminance = (a.mean_luminance, b.mean_luminance)
    if None not in luminance and abs(luminance[0] - luminance[1]) > SAME_LUMINANCE:  # type: ignore[operator]
        return False
    if a.sharpness is None or b.sharpness is None:
        return True
    low, high = sorted((a.sharpness, b.sharpness))
    return low >= high * (1 - SAME_DETAIL)


def _phash_close(a: Frame, b: Frame, options: CullOptions) -> bool:
    if a.phash is None or b.phash is None:
        return False
    return (a.phash ^ b.phash).bit_count() <= options.max_phash_distance


def _components(n: int, links: Links) -> list[int]:
    # scipy here, not at the top: every serving process imports the routes (runners too),
    # and scipy.sparse costs each of them ~30 MB and 0.4 s of start-up.
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not links:
        return list(range(n))
    a, b = np.array(links, dtype=np.int64).T
    graph = coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1].tolist()

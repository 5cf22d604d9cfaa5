"""DBSCAN over caller-supplied embeddings, on cosine distance (1 - cosine similarity)."""

from __future__ import annotations

import time

import numpy as np

from festora.errors import ApiError
from festora.schemas import Cluster, ClusterAssignment, ClusterRequest, ClusterResponse


class ClusteringError(ApiError):
    status_code = 422
    code = "clustering_error"


def as_matrix(embeddings: list[list[float]], image_ids: list[str]) -> np.ndarray:
    """The embeddings as an (n, d) float32 matrix of unit vectors, or a ClusteringError."""
    if len(embeddings) < 2:
        raise ClusteringError("at least 2 embeddings are needed to cluster")
    if len(image_ids) != len(embeddings):
        raise ClusteringError(
            f"{len(embeddings)} embeddings but {len(image_ids)} image_ids: they must match"
        )
    dimensions = {len(vector) for vector in embeddings}
    if len(dimensions) != 1:
        raise ClusteringError(
            f"embeddings must all have the same length, got lengths {sorted(dimensions)[:10]}"
        )
    if dimensions == {0}:
        raise ClusteringError("embeddings must not be empty vectors")
    matrix = np.asarray(embeddings, dtype=np.float32)
    bad_rows = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad_rows.size:
        raise ClusteringError(
            "embeddings contain NaN or infinite values",
            detail={"indices": bad_rows[:20].tolist()},
        )
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    zero_rows = np.flatnonzero(norms[:, 0] == 0)
    if zero_rows.size:
        raise ClusteringError(
            "zero vectors have no direction, so no cosine distance",
            detail={"indices": zero_rows[:20].tolist()},
        )
    return matrix / norms


def cluster_embeddings(req: ClusterRequest, *, eps: float, min_samples: int) -> ClusterResponse:
    from sklearn.cluster import DBSCAN  # every serving process imports this module; few cluster

    started = time.perf_counter()
    matrix = as_matrix(req.embeddings, req.image_ids)
    labels = (
        DBSCAN(eps=eps, min_samples=min_samples, metric="cosine", algorithm="brute")
        .fit(matrix)
        .labels_
    )

    members: dict[int, list[str]] = {}
    for image_id, label in zip(req.image_ids, labels.tolist(), strict=True):
        if label >= 0:
            members.setdefault(label, []).append(image_id)
    num_noise = int((labels < 0).sum())
    return ClusterResponse(
        eps_used=eps,
        min_samples_used=min_samples,
        total_images=len(req.image_ids),
        num_clusters=len(members),
        num_noise=num_noise,
        assignments=[
            ClusterAssignment(image_id=image_id, cluster_id=label, is_noise=label < 0)
            for image_id, label in zip(req.image_ids, labels.tolist(), strict=True)
        ],
        clusters=[
            Cluster(cluster_id=label, size=len(ids), image_ids=ids)
            for label, ids in sorted(members.items())
        ],
        processing_time_ms=round((time.perf_counter() - started) * 1000, 3),
    )

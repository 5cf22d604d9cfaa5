"""DBSCAN over caller-supplied embeddings, on cosine distance (1 - cosine similarity)."""

from __future__ import annotations

import time

import numpy as np

from festora.embeddings import check_ids, unit_rows
from festora.errors import ApiError
from festora.schemas import Cluster, ClusterAssignment, ClusterRequest, ClusterResponse


class ClusteringError(ApiError):
    status_code = 422
    code = "clustering_error"


def as_matrix(embeddings: list[list[float]], image_ids: list[str]) -> np.ndarray:
    """The embeddings as an (n, d) float32 matrix of unit vectors, or a ClusteringError."""
    if len(embeddings) < 2:
        raise ClusteringError("at least 2 embeddings are needed to cluster")
    check_ids(len(embeddings), image_ids, ClusteringError)
    return unit_rows(embeddings, ClusteringError)


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

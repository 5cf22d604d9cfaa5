"""DBSCAN on cosine distance, and the 422s for embeddings it cannot cluster."""

from __future__ import annotations

import math

import numpy as np
import pytest

from festora.clustering import ClusteringError, cluster_embeddings
from festora.schemas import ClusterRequest


def request(embeddings: list[list[float]], ids: list[str] | None = None) -> ClusterRequest:
    ids = ids if ids is not None else [f"img{i}" for i in range(len(embeddings))]
    return ClusterRequest(embeddings=embeddings, image_ids=ids)


def test_groups_by_direction_not_length() -> None:
    # Same direction at very different lengths: cosine distance 0, euclidean distance huge.
    vectors = [[1, 0, 0], [100, 1, 0], [0, 1, 0], [0, 50, 1], [0, 0, 1]]
    response = cluster_embeddings(request(vectors), eps=0.05, min_samples=2)
    assert response.algorithm == "DBSCAN"
    assert [a.cluster_id for a in response.assignments] == [0, 0, 1, 1, -1]
    assert [a.is_noise for a in response.assignments] == [False, False, False, False, True]
    assert response.num_clusters == 2 and response.num_noise == 1
    assert [(c.cluster_id, c.size, c.image_ids) for c in response.clusters] == [
        (0, 2, ["img0", "img1"]),
        (1, 2, ["img2", "img3"]),
    ]
    assert (response.eps_used, response.min_samples_used, response.total_images) == (0.05, 2, 5)


def test_eps_is_a_cosine_distance() -> None:
    angle = math.radians(60)  # cosine distance 0.5
    vectors = [[1.0, 0.0], [math.cos(angle), math.sin(angle)]]
    together = cluster_embeddings(request(vectors), eps=0.51, min_samples=2)
    apart = cluster_embeddings(request(vectors), eps=0.49, min_samples=2)
    assert together.num_clusters == 1 and apart.num_clusters == 0


def test_min_samples_one_makes_every_point_a_cluster() -> None:
    vectors = np.eye(4).tolist()
    response = cluster_embeddings(request(vectors), eps=0.1, min_samples=1)
    assert response.num_clusters == 4 and response.num_noise == 0


@pytest.mark.parametrize(
    ("embeddings", "ids", "message"),
    [
        ([[1, 0], [1, 0, 0]], None, "same length"),
        ([[1, 0], [float("nan"), 1]], None, "NaN or infinite"),
        ([[1, 0], [float("inf"), 1]], None, "NaN or infinite"),
        ([[1, 0], [0, 0]], None, "zero vectors"),
        ([[], []], None, "empty vectors"),
        ([[1, 0], [0, 1]], ["only-one"], "must match"),
    ],
)
def test_unclusterable_input_is_a_clustering_error(
    embeddings: list[list[float]], ids: list[str] | None, message: str
) -> None:
    with pytest.raises(ClusteringError, match=message) as caught:
        cluster_embeddings(request(embeddings, ids), eps=0.3, min_samples=2)
    assert caught.value.status_code == 422 and caught.value.code == "clustering_error"

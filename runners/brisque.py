"""BRISQUE no-reference quality (lower is better) with the `brisque` package's trained SVM."""

from __future__ import annotations

import math
import warnings

import bentoml
import numpy as np

from festora.models import BRISQUE, Provenance, runner_config
from runners.serving.base import (
    ModelRunner,
    Uint8Array,
    check_image_list,
    service_options,
    set_threads,
)
from runners.serving.memory import trim_after_batch

_CONFIG = runner_config(BRISQUE)
# BRISQUE filters with a 7 x 7 window at full and at half scale; below this it is undefined.
MIN_SIDE = 16


@bentoml.service(**service_options(_CONFIG))
class Brisque(ModelRunner):
    """The `brisque` package's BRISQUE (its SVM, copied into the model store, and its 36 NSS
    features, computed by `runners.brisque_features` to the package's numbers but faster).

    Inputs vary in size, so they travel as a list; `festora.preprocess.brisque_input` brings
    each to the stated analysis size (long side 768 px), since BRISQUE depends on scale.
    """

    spec = BRISQUE

    def _load(self, provenance: Provenance) -> None:
        self.engine = "opencv+libsvm"
        from brisque import BRISQUE as BrisqueModel

        from runners.brisque_features import brisque_features

        self._features = brisque_features

        set_threads(self.config.num_threads, torch=False)  # scipy + libsvm, no torch here
        self._model = BrisqueModel(
            url=False,
            model_path={
                "svm": str(provenance.path / "svm.txt"),
                "normalize": str(provenance.path / "normalize.pickle"),
            },
        )
        self._score_one(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))

    def _score_one(self, image: np.ndarray) -> float | None:
        if min(image.shape[:2]) < MIN_SIDE:
            return None
        # The package warns on every call (NumPy scalar conversion; 0/0 on flat images).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            # = self._model.score(image), with the features computed faster
            features = self._features(image)
            value = float(self._model.calculate_image_quality_score(features))
        return value if math.isfinite(value) else None

    @bentoml.api(
        batchable=True,
        max_batch_size=_CONFIG.max_batch_size,
        max_latency_ms=_CONFIG.max_latency_ms,
    )
    def score(self, images: list[Uint8Array]) -> list[float | None]:
        """H x W x 3 uint8 RGB images (from `brisque_input`) -> BRISQUE scores, about 0-100
        and not clipped; None where BRISQUE is undefined (a flat image has no local contrast
        to measure; a side under MIN_SIDE pixels leaves no second scale)."""
        self._require_loaded()
        check_image_list(images)
        scores = [self._score_one(image) for image in images]
        trim_after_batch()
        return scores

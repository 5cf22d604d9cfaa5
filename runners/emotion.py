"""Facial emotion: DeepFace's face detection + emotion CNN, on DeepFace's pytorch backend."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import bentoml
import numpy as np

from festora.config import get_settings
from festora.models import EMOTION, Provenance, runner_config, sha256_file
from runners.base import (
    ModelRunner,
    Uint8Array,
    check_image_list,
    service_options,
    set_threads,
)
from runners.memory import trim_after_batch

_CONFIG = runner_config(EMOTION)

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def deepface_home() -> Path:
    """The DEEPFACE_HOME this runner controls: EMOTION_DEEPFACE_HOME, else DEEPFACE_HOME,
    else a fixed folder under the system temp dir."""
    home = os.environ.get("EMOTION_DEEPFACE_HOME") or os.environ.get("DEEPFACE_HOME")
    if not home:
        home = os.path.join(tempfile.gettempdir(), f"festora-deepface-{os.getuid()}")
    return Path(home)


def install_weights(source: Path, home: Path) -> Path:
    """Put the stored weights where DeepFace reads them, replacing any other file there
    (DeepFace would otherwise download its own, or run whatever it finds)."""
    target = home / ".deepface" / "weights" / source.name
    if target.is_file() and sha256_file(target) == sha256_file(source):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{source.name}.")
    os.close(fd)
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)  # atomic: concurrent workers never see half a file
    return target


def _face(found: dict[str, Any]) -> dict[str, Any]:
    region = found["region"]
    return {
        "dominant_emotion": str(found["dominant_emotion"]),
        "scores": {name: float(found["emotion"][name]) for name in EMOTIONS},
        "face_confidence": min(1.0, max(0.0, float(found["face_confidence"]))),
        "region": {k: int(region[k]) for k in ("x", "y", "w", "h")},
    }


@bentoml.service(**service_options(_CONFIG))
class EmotionDetector(ModelRunner):
    """`DeepFace.analyze(actions=["emotion"])` per image, with DeepFace's defaults (alignment
    on) and the detector from DEEPFACE_DETECTOR. Send images from `emotion_input`: DeepFace
    pads each by 50% per side before detecting, so the analysis size sets the cost."""

    spec = EMOTION

    def _load(self, provenance: Provenance) -> None:
        os.environ["DEEPFACE_BACKEND_ENGINE"] = "pytorch"  # the stored file is a torch state dict
        home = deepface_home()
        install_weights(provenance.path / self.spec.weights_file, home)
        os.environ["DEEPFACE_HOME"] = str(home)
        set_threads(self.config.num_threads)

        from deepface import DeepFace
        from deepface.modules.exceptions import FaceNotDetected, ImgNotFound

        self._deepface = DeepFace
        self._no_face = (FaceNotDetected, ImgNotFound)
        self.detector = get_settings().deepface_detector
        DeepFace.build_model(task="facial_attribute", model_name="Emotion")
        DeepFace.build_model(task="face_detector", model_name=self.detector)
        self._faces(np.full((64, 64, 3), 128, np.uint8))  # warm-up

    def _faces(self, rgb: np.ndarray) -> list[dict[str, Any]]:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # DeepFace takes OpenCV's BGR
        try:
            found = self._deepface.analyze(
                bgr,
                actions=["emotion"],
                detector_backend=self.detector,
                enforce_detection=True,  # no face raises instead of analysing the whole image
                align=True,
                silent=True,
            )
        except self._no_face:
            return []
        return [_face(f) for f in found]

    @bentoml.api(
        batchable=True,
        max_batch_size=_CONFIG.max_batch_size,
        max_latency_ms=_CONFIG.max_latency_ms,
    )
    def detect(self, images: list[Uint8Array]) -> list[list[dict[str, Any]]]:
        """H x W x 3 uint8 RGB images (from `emotion_input`) -> per image, its faces:
        {dominant_emotion, scores{angry..neutral: 0-100}, face_confidence: 0-1,
        region{x, y, w, h}} with regions in the coordinates of the array sent (map them back
        with `festora.preprocess.scale_faces`). No face -> []."""
        self._require_loaded()
        check_image_list(images)
        faces = [self._faces(image) for image in images]
        trim_after_batch()
        return faces

"""Facial emotion: DeepFace's face detection + emotion CNN, on DeepFace's pytorch backend."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import bentoml
import numpy as np

from festora.config import env_value, get_settings
from festora.models import EMOTION, Provenance, runner_config, sha256_file
from runners.serving.base import (
    ModelRunner,
    Uint8Array,
    check_image_list,
    service_options,
    set_threads,
)
from runners.serving.memory import trim_after_batch

_CONFIG = runner_config(EMOTION)

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def deepface_home() -> Path:
    """The DEEPFACE_HOME this runner controls: EMOTION_DEEPFACE_HOME, else DEEPFACE_HOME,
    else a fixed folder under the system temp dir."""
    home = env_value("EMOTION_DEEPFACE_HOME") or os.environ.get("DEEPFACE_HOME")
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
    on) and the detector from DEEPFACE_DETECTOR, built from DeepFace's own steps so that one
    of them can be left out: before detecting, `DeepFace.analyze` pads the whole image with
    black by 50% per side (4x the pixels to scan; 30-40% of the detection time at 640 px),
    a leftover from when it rotated the whole image to align a face. Alignment now rotates a
    margin around each face (`extract_face`), which pads where the face meets the border, so
    the faces found on the image itself are aligned and scored as `analyze` would."""

    spec = EMOTION

    def _load(self, provenance: Provenance) -> None:
        os.environ["DEEPFACE_BACKEND_ENGINE"] = "pytorch"  # the stored file is a torch state dict
        home = deepface_home()
        install_weights(provenance.path / self.spec.weights_file, home)
        os.environ["DEEPFACE_HOME"] = str(home)
        set_threads(self.config.num_threads)

        from deepface import DeepFace
        from deepface.modules.detection import extract_face

        self._deepface = DeepFace
        self._extract_face = extract_face
        self.detector = get_settings().deepface_detector
        self.engine = f"deepface-pytorch ({self.detector} detector)"
        DeepFace.build_model(task="facial_attribute", model_name="Emotion")
        self._face_detector = DeepFace.build_model(task="face_detector", model_name=self.detector)
        self._faces(np.full((64, 64, 3), 128, np.uint8))  # warm-up

    def _faces(self, rgb: np.ndarray) -> list[dict[str, Any]]:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # DeepFace takes OpenCV's BGR
        height, width = bgr.shape[:2]
        faces = []
        for area in self._face_detector.detect_faces(bgr):
            face = self._extract_face(
                facial_area=area,
                img=bgr,
                align=True,
                expand_percentage=0,
                width_border=0,
                height_border=0,
                detector_backend=self.detector,
            )
            if face.img.shape[0] == 0 or face.img.shape[1] == 0:
                continue  # as DeepFace.extract_faces does
            # The aligned face alone: "skip" scores it as DeepFace scores a detected face.
            (found,) = self._deepface.analyze(
                face.img,
                actions=["emotion"],
                detector_backend="skip",
                enforce_detection=False,
                align=False,
                silent=True,
            )
            # Region and confidence as DeepFace.extract_faces reports them.
            x, y = max(0, int(face.facial_area.x)), max(0, int(face.facial_area.y))
            found["region"] = {
                "x": x,
                "y": y,
                "w": min(width - x - 1, int(face.facial_area.w)),
                "h": min(height - y - 1, int(face.facial_area.h)),
            }
            found["face_confidence"] = round(float(face.facial_area.confidence or 0), 2)
            faces.append(_face(found))
        return faces

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

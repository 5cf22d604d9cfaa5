"""Faces: detection, key points, head pose, eyes, face sharpness and emotion, in one runner.

FACE_DETECTOR=blazeface (default): MediaPipe's BlazeFace full-range over the photo in tiles
(`runners.blazeface`), then the face mesh and the iris model on each face (`runners.face_mesh`),
all computed by OpenVINO from the .tflite files in `festora-faces`. A detection the mesh does
not recognise as a face (its own face score < 0.98; real faces score 0.999+) is dropped.
FACE_DETECTOR=deepface: the seed's path, DeepFace's detector named by DEEPFACE_DETECTOR on the
photo at `DEEPFACE_LONG_SIDE`, each face aligned and scored by `DeepFace.analyze` as before; the
mesh, eyes, pose and sharpness are computed from its boxes the same way.

Emotion is DeepFace's CNN (`festora-emotion`) on each aligned face crop, prepared exactly as
`DeepFace.analyze(crop, detector_backend="skip")` prepares a face, computed by OpenVINO from
the IR the import stores (`runners.emotion`), or by DeepFace with torch where there is none
(FESTORA_ENGINE=torch, a GPU in FESTORA_DEVICE, a store imported before). Torch is loaded only
then, or with FACE_DETECTOR=deepface.

Face sharpness is the variance of the Laplacian inside the face oval (from the mesh, shrunk by
`SHARPNESS_ERODE_PX` so the face's outline against the background does not count), measured on
the level face resampled so its box is `SHARPNESS_FACE_PX` pixels: the same number for a 100 px
and a 1000 px face, and neither a sharp background nor a soft one changes it. A face smaller
than that at the analysis size has no sharpness (null): upscaling it would make it look blurred.
`SHARPNESS_THRESHOLD` comes from `scripts/calibrate_face_blur.py`.

Work per image is bounded: at most 64 candidates per detector view, and the `MAX_FACES` most
confident faces are analysed and returned.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import bentoml
import cv2
import numpy as np

from festora.config import Settings, env_value, get_settings
from festora.models import (
    EMOTION,
    FACE_DETECTOR_FILE,
    FACE_MESH_FILE,
    FACES,
    IRIS_FILE,
    Provenance,
    resolve,
    runner_config,
    sha256_file,
)
from festora.preprocess import FACE_LONG_SIDE
from festora.schemas import ModelStatus
from runners import blazeface, emotion, face_mesh
from runners.serving.base import (
    ModelRunner,
    Uint8Array,
    check_image_list,
    service_options,
    set_threads,
)
from runners.serving.memory import trim_after_batch
from runners.serving.openvino_ir import compile_ir
from runners.serving.precision import compute_precision
from runners.serving.tflite import PerBatchSize, compile_tflite, read_tflite

_CONFIG = runner_config(FACES)

MAX_FACES = 50
DEEPFACE_LONG_SIDE = 640  # the seed's analysis size for DeepFace's detectors
SHARPNESS_FACE_PX = 48
SHARPNESS_ERODE_PX = 3
SHARPNESS_THRESHOLD = 250.0  # scripts/calibrate_face_blur.py: blurred <= 212, sharp >= 291
EMOTION_CROP_SCALE = 1.0  # the aligned crop scored for emotion: the detection box, level
MIN_FACE_PX = 8  # smaller boxes (at the analysis size) hold no analysable face
DETECTOR_NAMES = {"opencv": "opencv-haar"}
# The analysis sizes of 3:2, 4:3, 16:9 and square photos, landscape and portrait.
COMMON_SIZES = tuple(
    size
    for short in (round(FACE_LONG_SIDE * r) for r in (2 / 3, 3 / 4, 9 / 16, 1))
    for size in ((FACE_LONG_SIDE, short), (short, FACE_LONG_SIDE))
)


def deepface_home() -> Path:
    """The DEEPFACE_HOME this runner controls: EMOTION_DEEPFACE_HOME, else DEEPFACE_HOME,
    else a fixed folder under the system temp dir."""
    home = env_value("EMOTION_DEEPFACE_HOME") or os.environ.get("DEEPFACE_HOME")
    if not home:
        home = os.path.join(tempfile.gettempdir(), f"festora-deepface-{os.getuid()}")
    return Path(home)


def install_weights(source: Path, home: Path) -> Path:
    """Put the stored emotion weights where DeepFace reads them, replacing any other file
    there (DeepFace would otherwise download its own, or run whatever it finds)."""
    target = home / ".deepface" / "weights" / source.name
    if target.is_file() and sha256_file(target) == sha256_file(source):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{source.name}.")
    os.close(fd)
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)  # atomic: concurrent workers never see half a file
    return target


def sharpness(image: np.ndarray, box: np.ndarray, angle: float, oval: np.ndarray) -> float | None:
    """Laplacian variance of the level face at SHARPNESS_FACE_PX (see the module docstring)."""
    side = float(max(box[2], box[3]))
    if side < SHARPNESS_FACE_PX:
        return None
    span = side * 1.4  # the oval reaches past the detection box
    native = max(1, round(span))
    out = round(SHARPNESS_FACE_PX * 1.4)
    centre = (box[0] + box[2] / 2, box[1] + box[3] / 2)
    matrix = face_mesh.roi_matrix(centre, span, angle, native)
    level = face_mesh.crop(image, matrix, native)
    # An area filter, so the face at the measuring size does not alias.
    gray = cv2.cvtColor(
        cv2.resize(level, (out, out), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY
    )
    inverse = cv2.invertAffineTransform(matrix)
    polygon = (oval @ inverse[:, :2].T + inverse[:, 2]) * (out / native)
    mask = np.zeros(gray.shape, np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    mask = cv2.erode(mask, np.ones((2 * SHARPNESS_ERODE_PX + 1,) * 2, np.uint8))
    if mask.sum() < 16:
        return None
    laplacian = cv2.Laplacian(gray, cv2.CV_64F)
    return round(float(laplacian[mask.astype(bool)].var()), 3)


@bentoml.service(**service_options(_CONFIG))
class FaceAnalyzer(ModelRunner):
    """Every face of an image and what culling needs to know about it (see the module doc)."""

    spec = FACES

    def _load(self, provenance: Provenance) -> None:
        settings = get_settings()
        threads = self.config.num_threads
        precision = compute_precision()
        path = provenance.path
        self._detector = PerBatchSize(
            path / FACE_DETECTOR_FILE,
            precision,
            threads,
            pixels=(-1.0, 1.0),
            common=[len(blazeface.plan_views(*size)) for size in COMMON_SIZES],
        )
        unit = (0.0, 1.0)  # the mesh's and the iris model's input range
        self._mesh = compile_tflite(read_tflite(path / FACE_MESH_FILE), precision, threads, unit)
        self._iris = compile_tflite(read_tflite(path / IRIS_FILE), precision, threads, unit)

        _, self.emotion_provenance = resolve(EMOTION)
        self._emotion_ir = compile_ir(self.emotion_provenance.path, "fp32", threads)
        self.detector_kind = settings.face_detector
        self.detector = "blazeface-full"
        uses_deepface = self._emotion_ir is None or self.detector_kind == "deepface"
        set_threads(threads, torch=uses_deepface)
        if uses_deepface:
            self._load_deepface(settings)
        models = f"{self.detector}, face mesh, iris"
        if self._emotion_ir is not None:
            self.engine = f"openvino-{precision} ({models}, emotion)"
        else:
            self.engine = f"openvino-{precision} ({models}) + deepface-pytorch"
        self._analyze(np.full((64, 64, 3), 128, np.uint8))  # warm-up

    def _load_deepface(self, settings: Settings) -> None:
        """DeepFace with torch: its emotion model where there is no IR, its detector with
        FACE_DETECTOR=deepface."""
        os.environ["DEEPFACE_BACKEND_ENGINE"] = "pytorch"  # the stored file is a torch state dict
        home = deepface_home()
        install_weights(self.emotion_provenance.path / EMOTION.weights_file, home)
        os.environ["DEEPFACE_HOME"] = str(home)
        from deepface import DeepFace

        self._deepface = DeepFace
        self._emotion_torch = DeepFace.build_model(task="facial_attribute", model_name="Emotion")
        if self.detector_kind == "deepface":
            from deepface.modules.detection import extract_face

            self._extract_face = extract_face
            self.deepface_detector = settings.deepface_detector
            self._face_detector = DeepFace.build_model(
                task="face_detector", model_name=self.deepface_detector
            )
            self.detector = DETECTOR_NAMES.get(self.deepface_detector, self.deepface_detector)

    def model_status(self) -> ModelStatus:
        """The face models' status, with the emotion weights' kind and caveat folded in: the
        face models are real in every mode, the emotion CNN follows WEIGHTS."""
        status = super().model_status()
        store = getattr(self, "emotion_provenance", None)
        if store is None:
            return status
        warnings = [w for w in (status.warning, store.warning) if w]
        return status.model_copy(
            update={
                "tag": f"{status.tag}, {store.tag}",
                "weights": "random-init"
                if "random-init" in (status.weights, store.weights)
                else status.weights,
                "warning": "; ".join(warnings) or None,
            }
        )

    # ---- detection ---------------------------------------------------------------------

    def _blazeface(self, image: np.ndarray) -> list[dict[str, Any]]:
        found = []
        for d in blazeface.detect(image, self._detector):
            eyes = (d.keypoints[0], d.keypoints[1])  # image-left eye, image-right eye
            found.append({"box": d.box, "score": d.score, "eyes": eyes})
        return found

    def _deepface_faces(self, image: np.ndarray) -> list[dict[str, Any]]:
        """DeepFace's detector on the photo at DEEPFACE_LONG_SIDE, its faces aligned and scored
        as `DeepFace.analyze` does (the seed's path); boxes in `image` pixels."""
        long_side = max(image.shape[:2])
        factor = min(1.0, DEEPFACE_LONG_SIDE / long_side)
        small = image
        if factor < 1.0:
            size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            factor = max(size) / long_side
        bgr = np.ascontiguousarray(small[:, :, ::-1])
        height, width = bgr.shape[:2]
        found = []
        for area in self._face_detector.detect_faces(bgr):
            face = self._extract_face(
                facial_area=area,
                img=bgr,
                align=True,
                expand_percentage=0,
                width_border=0,
                height_border=0,
                detector_backend=self.deepface_detector,
            )
            if face.img.shape[0] == 0 or face.img.shape[1] == 0:
                continue  # as DeepFace.extract_faces does
            (scored,) = self._deepface.analyze(
                face.img,
                actions=["emotion"],
                detector_backend="skip",
                enforce_detection=False,
                align=False,
                silent=True,
            )
            x, y = max(0, int(face.facial_area.x)), max(0, int(face.facial_area.y))
            w = min(width - x - 1, int(face.facial_area.w))
            h = min(height - y - 1, int(face.facial_area.h))
            eyes = None
            if area.left_eye is not None and area.right_eye is not None:
                # DeepFace names eyes by the subject: its right eye is on the image's left.
                eyes = (np.asarray(area.right_eye) / factor, np.asarray(area.left_eye) / factor)
            found.append(
                {
                    "box": np.array([x, y, w, h], dtype=np.float64) / factor,
                    "score": round(float(face.facial_area.confidence or 0), 2),
                    "eyes": eyes,
                    "scores": {name: float(scored["emotion"][name]) for name in emotion.EMOTIONS},
                }
            )
        return found

    # ---- per face ----------------------------------------------------------------------

    def emotion_crop(self, image: np.ndarray, box: np.ndarray, angle: float) -> np.ndarray:
        """The level face (the detection box, rotated so the eyes lie level), BGR uint8, as
        DeepFace hands a detected face to its emotion model."""
        side = max(box[2], box[3]) * EMOTION_CROP_SCALE
        out = max(1, round(side))
        centre = (box[0] + box[2] / 2, box[1] + box[3] / 2)
        face = face_mesh.crop(image, face_mesh.roi_matrix(centre, side, angle, out), out)
        return np.ascontiguousarray(face[:, :, ::-1])

    def emotion_scores(self, crops_bgr: list[np.ndarray]) -> list[dict[str, float]]:
        """DeepFace's emotion CNN on each BGR face crop, prepared as `DeepFace.analyze` with
        detector_backend="skip" prepares it (224 px letterbox in [0, 1], then its 48 px gray)."""
        if not crops_bgr:
            return []
        boxed = emotion.letterboxed(crops_bgr)
        if self._emotion_ir is not None:
            predictions = np.asarray(self._emotion_ir(emotion.cnn_input(boxed))[0])
        else:
            predictions = np.asarray(self._emotion_torch.predict(boxed))
        return [emotion.scores(p) for p in predictions.reshape(len(boxed), -1)]

    def _analyze(self, image: np.ndarray) -> dict[str, Any]:
        height, width = image.shape[:2]
        if self.detector_kind == "deepface":
            candidates = self._deepface_faces(image)
        else:
            candidates = self._blazeface(image)
        candidates = [c for c in candidates if min(c["box"][2:]) >= MIN_FACE_PX][:MAX_FACES]
        if not candidates:
            return {"detector": self.detector, "faces": []}

        rois = [face_mesh.face_roi(c["box"], c["eyes"]) for c in candidates]
        crops = np.stack([face_mesh.crop(image, m, face_mesh.MESH_SIZE) for m in rois])
        mesh_out = self._mesh(crops)
        raw_points = mesh_out[0].reshape(len(rois), -1)
        presence = 1.0 / (1.0 + np.exp(-np.clip(mesh_out[1].reshape(-1), -100, 100)))

        kept = []
        for c, m, raw, p in zip(candidates, rois, raw_points, presence, strict=True):
            if self.detector_kind == "blazeface" and p < face_mesh.MIN_PRESENCE:
                continue  # not a face: the detector's false positive
            c["points"], c["presence"] = face_mesh.mesh_points(raw, m), float(p)
            c["angle"] = math.atan2(m[1, 0], m[0, 0])
            kept.append(c)
        if not kept:
            return {"detector": self.detector, "faces": []}

        eye_inputs = []
        for c in kept:
            eye_inputs += face_mesh.eye_crops(image, face_mesh.eye_rois(c["points"]))
        contours = self._iris(np.stack(eye_inputs))[0]
        contours = contours.reshape(len(eye_inputs), -1)

        if self.detector_kind == "blazeface":
            crops_bgr = [self.emotion_crop(image, c["box"], c["angle"]) for c in kept]
            for c, scores in zip(kept, self.emotion_scores(crops_bgr), strict=True):
                c["scores"] = scores

        faces = []
        for i, c in enumerate(kept):
            pose = face_mesh.head_pose(c["points"])
            ears = None
            if c["presence"] >= face_mesh.MIN_PRESENCE:
                ears = (
                    face_mesh.eye_aspect_ratio(contours[2 * i]),
                    face_mesh.eye_aspect_ratio(contours[2 * i + 1]),
                )
            focus = sharpness(image, c["box"], c["angle"], face_mesh.face_oval(c["points"]))
            x, y, w, h = (float(v) for v in c["box"])
            x0, y0 = max(0.0, x), max(0.0, y)
            x1, y1 = min(float(width), x + w), min(float(height), y + h)
            scores = c["scores"]
            faces.append(
                {
                    "dominant_emotion": max(scores, key=scores.get),
                    "scores": scores,
                    "face_confidence": round(min(1.0, max(0.0, c["score"])), 4),
                    "region": {
                        "x": round(x0),
                        "y": round(y0),
                        "w": max(1, round(x1 - x0)),
                        "h": max(1, round(y1 - y0)),
                    },
                    "landmarks": face_mesh.five_points(c["points"]),
                    "eyes": face_mesh.eyes_state(ears, c["points"], pose),
                    "sharpness": focus,
                    "is_blurry": None if focus is None else focus < SHARPNESS_THRESHOLD,
                    "pose": {"yaw": pose.yaw, "pitch": pose.pitch, "roll": pose.roll},
                    "size_fraction": round((y1 - y0) / height, 4),
                }
            )
        return {"detector": self.detector, "faces": faces}

    @bentoml.api(
        batchable=True,
        max_batch_size=_CONFIG.max_batch_size,
        max_latency_ms=_CONFIG.max_latency_ms,
    )
    def analyze(self, images: list[Uint8Array]) -> list[dict[str, Any]]:
        """H x W x 3 uint8 RGB images (from `festora.preprocess.face_input`) -> per image
        {"detector": str, "faces": [face]} with each face's region and landmarks in the
        pixels of the array sent (`festora.preprocess.scale_faces` maps them back):
        dominant_emotion, scores (0-100), face_confidence, region, landmarks, eyes,
        sharpness, is_blurry, pose, size_fraction. No face -> "faces": []."""
        self._require_loaded()
        check_image_list(images)
        results = [self._analyze(image) for image in images]
        trim_after_batch()
        return results

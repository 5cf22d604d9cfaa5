"""The face runner in-process, on real photos: detection, key points, eyes, sharpness, pose,
emotion, and what bad input does to it.

The face models (MediaPipe's .tflite files) are real in every mode; the emotion CNN is the
session store's random-init one, so emotion is checked for parity with DeepFace, never for
its verdicts.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from benchmarks import face_photos
from benchmarks.face_photos import iou
from festora import preprocess
from festora.config import get_settings

ASTRONAUT = face_photos.astronaut()
ASTRONAUT_FACE = face_photos.ASTRONAUT_FACE


@pytest.fixture(scope="module")
def faces(model_store: Path) -> Any:
    from runners.faces import FaceAnalyzer

    runner = FaceAnalyzer()
    assert runner.loaded, runner.error
    return runner


@pytest.fixture(scope="module")
def deepface_faces(model_store: Path) -> Iterator[Any]:
    """The runner with FACE_DETECTOR=deepface (the seed's Haar path)."""
    from runners.faces import FaceAnalyzer

    os.environ["FACE_DETECTOR"] = "deepface"
    get_settings.cache_clear()
    try:
        runner = FaceAnalyzer()
    finally:
        del os.environ["FACE_DETECTOR"]
        get_settings.cache_clear()
    assert runner.loaded, runner.error
    yield runner


@pytest.fixture(scope="module")
def torch_emotion_faces(model_store: Path) -> Iterator[Any]:
    """The runner with FESTORA_ENGINE=torch: DeepFace's own emotion model, no IR."""
    from runners.faces import FaceAnalyzer

    os.environ["FESTORA_ENGINE"] = "torch"
    try:
        runner = FaceAnalyzer()
    finally:
        del os.environ["FESTORA_ENGINE"]
    assert runner.loaded, runner.error
    yield runner


@pytest.fixture(scope="session")
def insightface() -> dict[str, np.ndarray]:
    try:
        return face_photos.insightface_photos()
    except face_photos.Unavailable as exc:
        pytest.skip(f"the insightface sdist is not cached and PyPI is unreachable: {exc}")


def analyze(runner: Any, photo: np.ndarray) -> dict[str, Any]:
    """As the API does: the photo at the face analysis size, faces mapped back to it."""
    image, scale = preprocess.face_input(photo)
    (out,) = runner.analyze([image])
    height, width = photo.shape[:2]
    return {**out, "faces": preprocess.scale_faces(out["faces"], scale, width, height)}


def face_crop(margin: float = 0.5) -> tuple[np.ndarray, tuple[float, float]]:
    """The astronaut's face with a margin, and the face box's offset inside it."""
    x, y, w, h = ASTRONAUT_FACE
    x0, y0 = int(max(0, x - margin * w)), int(max(0, y - margin * h))
    x1, y1 = int(x + w * (1 + margin)), int(y + h * (1 + margin))
    return ASTRONAUT[y0:y1, x0:x1], (x - x0, y - y0)


# ------------------------------------------------------------------------ real photos


def test_astronaut_has_one_face_with_open_eyes(faces: Any) -> None:
    out = analyze(faces, ASTRONAUT)
    assert out["detector"] == "blazeface-full"
    (face,) = out["faces"]
    assert iou(face["region"], ASTRONAUT_FACE) >= 0.8
    assert face["eyes"]["open"] is True
    assert face["eyes"]["left_openness"] >= 0.6 and face["eyes"]["right_openness"] >= 0.6
    marks = face["landmarks"]
    r = face["region"]
    for name, (x, y) in marks.items():  # every key point inside the face
        assert r["x"] <= x <= r["x"] + r["w"] and r["y"] <= y <= r["y"] + r["h"], name
    # named by the subject, as DeepFace does: her left eye is on the image's right
    assert marks["left_eye"][0] > marks["nose"][0] > marks["right_eye"][0]
    assert marks["mouth_left"][0] > marks["mouth_right"][0]
    assert max(marks["left_eye"][1], marks["right_eye"][1]) < marks["nose"][1]
    assert marks["nose"][1] < min(marks["mouth_left"][1], marks["mouth_right"][1])
    assert face["sharpness"] is not None and face["is_blurry"] is False
    assert face["size_fraction"] == pytest.approx(r["h"] / 512, abs=1e-3)
    assert abs(face["pose"]["yaw"]) < 15 and abs(face["pose"]["roll"]) < 15
    assert 0.0 <= face["face_confidence"] <= 1.0
    assert sum(face["scores"].values()) == pytest.approx(100.0, abs=1e-3)
    assert face["dominant_emotion"] == max(face["scores"], key=face["scores"].get)


def test_group_photo_has_six_faces_and_their_eye_states(
    faces: Any, insightface: dict[str, np.ndarray]
) -> None:
    found = analyze(faces, insightface[face_photos.GROUP])["faces"]
    assert len(found) == 6
    for box, eyes_open in face_photos.GROUP_FACES:
        match = max(found, key=lambda f: iou(f["region"], box))
        assert iou(match["region"], box) >= 0.5, box
        assert match["eyes"]["open"] is eyes_open, (box, match["eyes"])


def test_photos_without_people_have_no_face(
    faces: Any, deepface_faces: Any, insightface: dict[str, np.ndarray]
) -> None:
    photos = face_photos.photos_without_people()
    photos |= {name: insightface[name] for name in face_photos.MASKS}
    for name, photo in photos.items():
        assert analyze(faces, photo)["faces"] == [], name


def test_pasted_faces_are_found_at_2_to_50_percent_of_the_long_side(faces: Any) -> None:
    """A 4000 x 3000 photo (coffee, enlarged) with the astronaut's face pasted at 2, 5, 20 and
    50 % of its long side, at several places: found within IoU 0.5 of where it was put."""
    crop, (fx, fy) = face_crop()
    background = cv2.resize(face_photos.photos_without_people()["coffee"], (4000, 3000))
    rng = np.random.default_rng(7)
    for fraction in (0.02, 0.05, 0.2, 0.5):
        k = fraction * 4000 / ASTRONAUT_FACE[2]
        pasted = cv2.resize(crop, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        h, w = min(pasted.shape[0], 3000), min(pasted.shape[1], 4000)
        for _ in range(3):
            x = int(rng.integers(0, 4000 - w + 1))
            y = int(rng.integers(0, 3000 - h + 1))
            photo = background.copy()
            photo[y : y + h, x : x + w] = pasted[:h, :w]
            box = (x + fx * k, y + fy * k, ASTRONAUT_FACE[2] * k, ASTRONAUT_FACE[3] * k)
            found = analyze(faces, photo)["faces"]
            best = max((iou(f["region"], box) for f in found), default=0.0)
            assert best >= 0.5, (fraction, x, y, [f["region"] for f in found])


def test_regions_and_landmarks_map_back_to_the_full_image(faces: Any) -> None:
    large = cv2.resize(ASTRONAUT, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    (big,) = analyze(faces, large)["faces"]
    (ref,) = analyze(faces, ASTRONAUT)["faces"]
    for k in ("x", "y", "w", "h"):
        assert big["region"][k] == pytest.approx(4 * ref["region"][k], rel=0.1, abs=12), k
    for name, (x, y) in big["landmarks"].items():
        rx, ry = ref["landmarks"][name]
        assert math.hypot(x - 4 * rx, y - 4 * ry) < 0.05 * big["region"]["w"], name
    assert big["size_fraction"] == pytest.approx(ref["size_fraction"], abs=0.02)


# ---------------------------------------------------------------------- pose and eyes


def test_pose_follows_a_mirrored_and_a_rotated_face(faces: Any) -> None:
    (ref,) = analyze(faces, ASTRONAUT)["faces"]
    (mirrored,) = analyze(faces, np.ascontiguousarray(ASTRONAUT[:, ::-1]))["faces"]
    assert mirrored["pose"]["yaw"] == pytest.approx(-ref["pose"]["yaw"], abs=3)
    assert mirrored["pose"]["roll"] == pytest.approx(-ref["pose"]["roll"], abs=3)
    turn = cv2.getRotationMatrix2D((225, 119), -25, 1.0)  # clockwise by 25 degrees
    (rotated,) = analyze(faces, cv2.warpAffine(ASTRONAUT, turn, (512, 512)))["faces"]
    assert rotated["pose"]["roll"] - ref["pose"]["roll"] == pytest.approx(25, abs=5)
    assert rotated["eyes"]["open"] is True


def test_a_face_turned_towards_the_image_right_has_positive_yaw(
    faces: Any, insightface: dict[str, np.ndarray]
) -> None:
    """In t1.jpg the man at the top right looks at the people on the image's left."""
    found = analyze(faces, insightface[face_photos.GROUP])["faces"]
    man = max(found, key=lambda f: iou(f["region"], face_photos.GROUP_FACES[4][0]))
    assert man["pose"]["yaw"] < -15
    nose_x = man["landmarks"]["nose"][0]
    eyes_x = (man["landmarks"]["left_eye"][0] + man["landmarks"]["right_eye"][0]) / 2
    assert nose_x < eyes_x  # the nose points the way the face turns


# ------------------------------------------------------------------------ sharpness


def test_face_sharpness_ignores_the_background(faces: Any) -> None:
    """A blurred face on a sharp background is blurry; a sharp face on a blurred background is
    not; and the measure does not depend on the face's size in pixels."""
    x, y, w, h = ASTRONAUT_FACE
    mask = np.zeros(ASTRONAUT.shape[:2], np.float32)
    cv2.ellipse(mask, (x + w // 2, y + h // 2), (int(w * 0.62), int(h * 0.75)), 0, 0, 360, 1, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 3)[:, :, None]
    soft = cv2.GaussianBlur(ASTRONAUT, (0, 0), 3.0)
    blurred_face = (soft * mask + ASTRONAUT * (1 - mask)).astype(np.uint8)
    sharp_face = (ASTRONAUT * mask + soft * (1 - mask)).astype(np.uint8)
    (sharp,) = analyze(faces, ASTRONAUT)["faces"]
    (bf,) = analyze(faces, blurred_face)["faces"]
    (sf,) = analyze(faces, sharp_face)["faces"]
    assert bf["is_blurry"] is True and sf["is_blurry"] is False and sharp["is_blurry"] is False
    assert sf["sharpness"] == pytest.approx(sharp["sharpness"], rel=0.25)
    large = cv2.resize(ASTRONAUT, (1280, 1280), interpolation=cv2.INTER_LANCZOS4)
    (big,) = analyze(faces, large)["faces"]  # a 265 px face: measured at the same 48 px
    assert big["is_blurry"] is False
    assert big["sharpness"] == pytest.approx(sharp["sharpness"], rel=0.35)


# -------------------------------------------------------------------------- emotion


def test_emotion_scores_are_deepface_on_the_aligned_crop(faces: Any) -> None:
    from deepface import DeepFace

    from festora.models import EMOTION
    from runners import blazeface, face_mesh
    from runners.faces import deepface_home, install_weights

    assert faces.engine.endswith(", emotion)")  # the stored IR, not DeepFace's torch model
    # DeepFace itself, reading the same stored weights, is the reference
    home = deepface_home()
    install_weights(faces.emotion_provenance.path / EMOTION.weights_file, home)
    os.environ["DEEPFACE_HOME"] = str(home)
    os.environ["DEEPFACE_BACKEND_ENGINE"] = "pytorch"

    detection = blazeface.detect(ASTRONAUT, faces._detector)[0]
    angle = math.atan2(*(detection.keypoints[1] - detection.keypoints[0])[::-1])
    crop = faces.emotion_crop(ASTRONAUT, detection.box, angle)
    (ours,) = faces.emotion_scores([crop])
    (theirs,) = DeepFace.analyze(
        crop, actions=["emotion"], detector_backend="skip", enforce_detection=False, silent=True
    )
    for name, value in ours.items():
        assert value == pytest.approx(float(theirs["emotion"][name]), abs=1e-3), name
    # and these are the scores the runner reports for the face
    roi = face_mesh.face_roi(detection.box, (detection.keypoints[0], detection.keypoints[1]))
    assert math.atan2(roi[1, 0], roi[0, 0]) == pytest.approx(angle)
    (face,) = faces.analyze([ASTRONAUT])[0]["faces"]
    for name, value in ours.items():
        assert face["scores"][name] == pytest.approx(value, abs=1e-3), name


def test_without_the_ir_deepface_scores_emotion_alike(faces: Any, torch_emotion_faces: Any) -> None:
    assert torch_emotion_faces.engine.endswith("+ deepface-pytorch")
    (ours,) = faces.analyze([ASTRONAUT])[0]["faces"]
    (theirs,) = torch_emotion_faces.analyze([ASTRONAUT])[0]["faces"]
    for name, value in ours["scores"].items():
        assert theirs["scores"][name] == pytest.approx(value, abs=1e-3), name


def test_deepface_detector_keeps_the_seed_path_with_the_new_fields(deepface_faces: Any) -> None:
    from deepface import DeepFace

    image, _ = preprocess.face_input(ASTRONAUT)
    (out,) = deepface_faces.analyze([image])
    assert out["detector"] == "opencv-haar"
    theirs = DeepFace.analyze(
        np.ascontiguousarray(image[:, :, ::-1]),
        actions=["emotion"],
        detector_backend="opencv",
        enforce_detection=False,
        silent=True,
    )
    theirs = [t for t in theirs if t["face_confidence"] > 0]
    assert len(out["faces"]) == len(theirs) >= 1
    for face, ref in zip(out["faces"], theirs, strict=True):
        assert iou(face["region"], ref["region"]) >= 0.9
        for name, value in face["scores"].items():
            assert value == pytest.approx(float(ref["emotion"][name]), abs=1.0), name
    face = max(out["faces"], key=lambda f: f["region"]["w"])
    assert set(face) >= {"landmarks", "eyes", "sharpness", "is_blurry", "pose", "size_fraction"}
    assert face["eyes"]["open"] is True


# ------------------------------------------------------------------------ bad input


def test_bad_input_never_reaches_a_model(faces: Any) -> None:
    strips = [np.zeros((1, 5000, 3), np.uint8), np.full((3000, 1, 3), 200, np.uint8)]
    tiny = [np.zeros((1, 1, 3), np.uint8), np.full((5, 7, 3), 90, np.uint8)]
    for image in strips + tiny:
        assert analyze(faces, image)["faces"] == []
    with pytest.raises(ValueError, match="image 0"):
        faces.analyze([np.zeros((10, 10), np.uint8)])


def test_a_face_cut_by_the_border_stays_inside_the_image(faces: Any) -> None:
    x, y, w, h = ASTRONAUT_FACE
    cut = np.ascontiguousarray(ASTRONAUT[y + h // 3 :, x + w // 3 :])  # face cut top and left
    for face in analyze(faces, cut)["faces"]:
        r = face["region"]
        assert r["x"] >= 0 and r["y"] >= 0
        assert r["x"] + r["w"] <= cut.shape[1] and r["y"] + r["h"] <= cut.shape[0]
        for px, py in face["landmarks"].values():
            assert 0 <= px < cut.shape[1] and 0 <= py < cut.shape[0]


def test_fifty_faces_bound_the_work_and_the_response(faces: Any) -> None:
    from runners.faces import MAX_FACES

    crop, _ = face_crop(margin=0.3)
    tile = cv2.resize(crop, (200, 200), interpolation=cv2.INTER_AREA)
    crowd = np.tile(tile, (6, 10, 1))  # 60 faces, 1200 x 2000
    out = analyze(faces, crowd)
    assert len(out["faces"]) == MAX_FACES == 50
    assert len(json.dumps(out)) < 50 * 1200  # about 1 KB per face

"""Calibrate the face runner's SHARPNESS_THRESHOLD on real faces, as calibrate_blur.py does for
whole photos.

The faces are the astronaut's and the six of insightface's t1.jpg. Each photo is resized to
several sizes (faces of about 50-450 px), then analysed as it is and after a Gaussian blur
whose sigma is BLUR_SIGMA_AT_FACE_SIZE px at the measuring size (SHARPNESS_FACE_PX): a softness
a viewer sees on the face at any size. The suggested threshold is the geometric mean of the
sharpest blurred and the softest sharp face.

    python -m scripts.calibrate_face_blur      # needs festora-faces and festora-emotion stored
"""

from __future__ import annotations

import math
import statistics

import cv2

from benchmarks import face_photos
from festora import preprocess
from runners.faces import SHARPNESS_FACE_PX, FaceAnalyzer

SCALES = (0.5, 0.75, 1.0, 1.5, 2.5)
BLUR_SIGMA_AT_FACE_SIZE = 1.0


def main() -> None:
    runner = FaceAnalyzer()
    if not runner.loaded:
        raise SystemExit(f"face runner not loaded: {runner.error}")
    photos = {
        "astronaut": face_photos.astronaut(),
        "t1": face_photos.insightface_photos()[face_photos.GROUP],
    }
    sharp_scores: list[float] = []
    blurred_scores: list[float] = []
    print(f"{'photo':<10} {'scale':>5} {'face px':>8} {'sharp':>9} {'blurred':>9}")
    for name, photo in photos.items():
        for scale in SCALES:
            size = (round(photo.shape[1] * scale), round(photo.shape[0] * scale))
            resample = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
            image, _ = preprocess.face_input(cv2.resize(photo, size, interpolation=resample))
            faces = runner.analyze([image])[0]["faces"]
            if not faces:
                continue
            face_px = statistics.median(f["region"]["w"] for f in faces)
            sigma = BLUR_SIGMA_AT_FACE_SIZE * face_px / SHARPNESS_FACE_PX
            soft = runner.analyze([cv2.GaussianBlur(image, (0, 0), sigma)])[0]["faces"]
            for face in faces:
                if face["sharpness"] is None:
                    continue
                match = [
                    s for s in soft
                    if abs(s["region"]["x"] - face["region"]["x"]) < face["region"]["w"] / 4
                    and abs(s["region"]["y"] - face["region"]["y"]) < face["region"]["h"] / 4
                ]  # fmt: skip
                if not match or match[0]["sharpness"] is None:
                    continue
                sharp_scores.append(face["sharpness"])
                blurred_scores.append(match[0]["sharpness"])
                print(
                    f"{name:<10} {scale:>5} {face['region']['w']:>8} "
                    f"{face['sharpness']:>9.1f} {match[0]['sharpness']:>9.1f}"
                )
    low, high = max(blurred_scores), min(sharp_scores)
    print(f"\n{len(sharp_scores)} faces: blurred max {low:.1f}, sharp min {high:.1f}")
    print(f"suggested SHARPNESS_THRESHOLD: {math.sqrt(low * high):.0f}")


if __name__ == "__main__":
    main()

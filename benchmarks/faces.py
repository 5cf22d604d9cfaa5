"""The face evaluation recorded in benchmarks/FACES.md: recall and false faces of both detectors
on real photos, recall of pasted faces by size, eye openness per face, and the face runner's
CPU time per 12 MP photo, measured in-process (one thread, as the runner is served).

    python -m benchmarks.faces            # uses the active BENTOML_HOME model store

Needs festora-faces and festora-emotion in the store (`python -m scripts.import_models --only
faces,emotion`, add --random-init offline: the face models are real in every mode). CPU time is
`time.process_time()` of `FaceAnalyzer.analyze` on the array the API sends for a 12 MP photo,
the median of REPEATS runs, after a warm-up.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from typing import Any

import cv2
import numpy as np

from benchmarks import face_photos
from benchmarks.face_photos import iou
from benchmarks.machine import ceiling_dtypes, describe, matmul_gflops
from festora import preprocess
from festora.config import get_settings

REPEATS = 5
MEGAPIXELS = 12
ASTRONAUT_FACE = face_photos.ASTRONAUT_FACE
PASTE_FRACTIONS = (0.02, 0.025, 0.03, 0.05)
PASTE_TRIALS = 20


def runner(detector: str) -> Any:
    from runners.faces import FaceAnalyzer

    os.environ["FACE_DETECTOR"] = detector
    get_settings.cache_clear()
    made = FaceAnalyzer()
    if not made.loaded:
        raise SystemExit(f"face runner not loaded: {made.error}")
    return made


def faces_in(r: Any, photo: np.ndarray) -> list[dict[str, Any]]:
    image, scale = preprocess.face_input(photo)
    found = r.analyze([image])[0]["faces"]
    return preprocess.scale_faces(found, scale, photo.shape[1], photo.shape[0])


def at_megapixels(rgb: np.ndarray, megapixels: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    k = math.sqrt(megapixels * 1e6 / (h * w))
    return cv2.resize(rgb, (round(w * k), round(h * k)), interpolation=cv2.INTER_CUBIC)


def cpu_ms(r: Any, photo: np.ndarray) -> float:
    image, _ = preprocess.face_input(at_megapixels(photo, MEGAPIXELS))
    r.analyze([image])
    times = []
    for _ in range(REPEATS):
        start = time.process_time()
        r.analyze([image])
        times.append((time.process_time() - start) * 1000)
    return statistics.median(times)


def detection_table(runners: dict[str, Any], photos: dict[str, np.ndarray]) -> list[str]:
    truth: dict[str, list[tuple[int, ...]]] = {name: [] for name in photos}
    truth["astronaut"] = [ASTRONAUT_FACE]
    truth[face_photos.GROUP] = [box for box, _ in face_photos.GROUP_FACES]
    lines = ["| photo | faces | " + " | ".join(f"{d}: found / false" for d in runners) + " |"]
    lines.append("|---|---|" + "---|" * len(runners))
    totals = {d: [0, 0] for d in runners}
    for name, photo in photos.items():
        cells = []
        for detector, r in runners.items():
            found = faces_in(r, photo)
            hits = sum(any(iou(f["region"], t) >= 0.5 for f in found) for t in truth[name])
            false = sum(all(iou(f["region"], t) < 0.5 for t in truth[name]) for f in found)
            totals[detector][0] += hits
            totals[detector][1] += false
            cells.append(f"{hits} / {false}")
        lines.append(f"| {name} | {len(truth[name])} | " + " | ".join(cells) + " |")
    expected = sum(len(t) for t in truth.values())
    cells = [f"**{h}/{expected} / {f}**" for h, f in totals.values()]
    lines.append(f"| all | {expected} | " + " | ".join(cells) + " |")
    return lines


def paste_recall(r: Any) -> list[str]:
    """The astronaut's face pasted at random places into a 4000 x 3000 photo (coffee)."""
    x, y, w, h = ASTRONAUT_FACE
    astronaut = face_photos.astronaut()
    crop = astronaut[int(y - h / 2) : int(y + 1.5 * h), int(x - w / 2) : int(x + 1.5 * w)]
    fx, fy = w / 2, h / 2
    background = cv2.resize(face_photos.photos_without_people()["coffee"], (4000, 3000))
    rng = np.random.default_rng(11)
    lines = ["| face size (of the long side) | found (IoU >= 0.5) |", "|---|---|"]
    for fraction in PASTE_FRACTIONS:
        k = fraction * 4000 / w
        pasted = cv2.resize(crop, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        hits = 0
        for _ in range(PASTE_TRIALS):
            px = int(rng.integers(0, 4000 - pasted.shape[1]))
            py = int(rng.integers(0, 3000 - pasted.shape[0]))
            photo = background.copy()
            photo[py : py + pasted.shape[0], px : px + pasted.shape[1]] = pasted
            box = (px + fx * k, py + fy * k, w * k, h * k)
            hits += any(iou(f["region"], box) >= 0.5 for f in faces_in(r, photo))
        lines.append(
            f"| {fraction:.1%} ({fraction * 4000:.0f} px of 4000) | {hits}/{PASTE_TRIALS} |"
        )
    return lines


def eyes_table(r: Any, group: np.ndarray) -> list[str]:
    from runners import face_mesh

    lines = ["| face | eyes look | left EAR | right EAR | open |", "|---|---|---|---|---|"]
    rows = [("astronaut", face_photos.astronaut(), ASTRONAUT_FACE, True)]
    rows += [(f"t1 x={b[0]}", group, b, o) for b, o in face_photos.GROUP_FACES]
    for label, photo, box, looks_open in rows:
        face = max(faces_in(r, photo), key=lambda f: iou(f["region"], box))
        eyes = face["eyes"]
        ear = [
            "-" if eyes[k] is None else f"{eyes[k] * face_mesh.EAR_WIDE_OPEN:.3f}"
            for k in ("left_openness", "right_openness")
        ]
        seen = "open" if looks_open else "lowered / shut"
        lines.append(f"| {label} | {seen} | {ear[0]} | {ear[1]} | {eyes['open']} |")
    return lines


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    os.environ.setdefault("FESTORA_PRECISION", "auto")
    insight = face_photos.insightface_photos()
    photos = {"astronaut": face_photos.astronaut(), face_photos.GROUP: insight[face_photos.GROUP]}
    photos |= {name: insight[name] for name in face_photos.MASKS}
    photos |= face_photos.photos_without_people()
    runners = {"blazeface": runner("blazeface"), "deepface (opencv)": runner("deepface")}
    blaze = runners["blazeface"]
    machine = describe()
    print(
        f"machine: {machine['cpu_model']}, {machine['logical_cores']} cores, load {os.getloadavg()}"
    )
    ceilings = ", ".join(f"{d} {matmul_gflops(d, 1)}" for d in ceiling_dtypes())
    print(f"matmul 2048 on 1 thread, GFLOP/s: {ceilings}")
    print("\n## Detection\n")
    print("\n".join(detection_table(runners, photos)))
    print("\n## Pasted faces (blazeface)\n")
    print("\n".join(paste_recall(blaze)))
    print("\n## Eyes (blazeface)\n")
    print("\n".join(eyes_table(blaze, insight[face_photos.GROUP])))
    print(f"\n## CPU ms per {MEGAPIXELS} MP photo (median of {REPEATS}, one thread)\n")
    workload = {"astronaut": photos["astronaut"], **face_photos.photos_without_people()}
    print("| photo | " + " | ".join(runners) + " |")
    print("|---|" + "---|" * len(runners))
    means = {d: [] for d in runners}
    for name, photo in {**workload, face_photos.GROUP: photos[face_photos.GROUP]}.items():
        cells = []
        for detector, r in runners.items():
            ms = cpu_ms(r, photo)
            if name in workload:
                means[detector].append(ms)
            cells.append(f"{ms:.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    cells = [f"**{statistics.mean(v):.1f}**" for v in means.values()]
    print("| benchmark workload (mean of the 5 photos) | " + " | ".join(cells) + " |")
    print(f"\nengine: {blaze.engine}")


if __name__ == "__main__":
    main()

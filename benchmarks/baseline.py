"""The naive pipeline of the original service, timed on the same weights as the service.

Per image, sequentially, no batching, every model fed the full-resolution photo:
base64 -> Pillow full decode -> Laplacian variance at full size, pyiqa's BRISQUE on the
full-size tensor, pyiqa's NIMA (KonIQ and AVA variants, each resizing the full-size tensor
itself), transformers' CLIPImageProcessor + CLIPModel.get_image_features, and
DeepFace.analyze(actions=['emotion']) on the full image. Torch uses every core, as it does by
default. The weights are the files in the harness's model store (the pyiqa BRISQUE SVM is the
store's libsvm model rewritten in pyiqa's format), so the comparison is about the pipeline,
not the weights.

Run as a child process: `python -m benchmarks.baseline OUT.json IMAGE.jpg [IMAGE.jpg ...]`.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

STAGES = ("decode", "blur", "brisque", "nima_technical", "nima_aesthetic", "clip", "emotion")
EMBEDDING_STAGES = ("decode", "clip")
# The embedding-only pipeline takes ~0.3 s a photo: timed once, it moved by 30% between two
# passes of one run, so each photo's figure is the mean of this many timings.
EMBEDDING_ROUNDS = 5


def read_libsvm(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(sv_coef [n], sv [n x 36]) from a libsvm model file, the layout pyiqa's BRISQUE loads."""
    coefs: list[float] = []
    vectors: list[list[float]] = []
    lines = iter(path.read_text().splitlines())
    for line in lines:
        if line.strip() == "SV":
            break
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        coefs.append(float(parts[0]))
        row = [0.0] * 36
        for item in parts[1:]:
            index, value = item.split(":")
            row[int(index) - 1] = float(value)
        vectors.append(row)
    return np.asarray(coefs, np.float64), np.asarray(vectors, np.float64)


class NaivePipeline:
    """Every model of the original service, loaded once from the harness's model store."""

    def __init__(self, work: Path) -> None:
        import torch

        from festora.models import BRISQUE, CLIP, EMOTION, NIMA_AESTHETIC, NIMA_TECHNICAL, resolve
        from runners.nima import build_nima, load_nima_weights

        self.torch = torch
        home = work / "deepface-baseline"
        weights = home / ".deepface" / "weights"
        weights.mkdir(parents=True, exist_ok=True)
        _, prov = resolve(EMOTION)
        shutil.copyfile(prov.path / EMOTION.weights_file, weights / EMOTION.weights_file)
        os.environ["DEEPFACE_HOME"] = str(home)
        os.environ["DEEPFACE_BACKEND_ENGINE"] = "pytorch"
        from deepface import DeepFace
        from pyiqa.archs.brisque_arch import BRISQUE as PyiqaBrisque
        from transformers import CLIPImageProcessor, CLIPModel
        from transformers.utils import logging as hf_logging

        self.deepface = DeepFace
        _, prov = resolve(BRISQUE)
        sv_coef, sv = read_libsvm(prov.path / "svm.txt")
        svm_file = work / "pyiqa_brisque_svm.pth"
        torch.save((torch.from_numpy(sv_coef), torch.from_numpy(sv)), svm_file)
        self.brisque = PyiqaBrisque(pretrained_model_path=str(svm_file)).eval()
        self.nima: dict[str, Any] = {}
        for spec in (NIMA_TECHNICAL, NIMA_AESTHETIC):
            _, prov = resolve(spec)
            net = build_nima(spec)
            load_nima_weights(net, prov.path / spec.weights_file)
            self.nima[spec.key] = net.eval()
        hf_logging.set_verbosity_error()
        _, prov = resolve(CLIP)
        self.clip_processor = CLIPImageProcessor.from_pretrained(prov.path)
        self.clip = CLIPModel.from_pretrained(prov.path).eval()

    def run(self, data_b64: str, stages: tuple[str, ...] = STAGES) -> dict[str, float]:
        """Seconds spent in each stage for one image, as the original service spent them."""
        import cv2
        from PIL import Image

        torch = self.torch
        times: dict[str, float] = {}

        def timed(name: str, fn: Callable[[], Any]) -> Any:
            start = time.perf_counter()
            value = fn()
            times[name] = time.perf_counter() - start
            return value

        def decode() -> tuple[Image.Image, np.ndarray, Any]:
            image = Image.open(io.BytesIO(base64.b64decode(data_b64))).convert("RGB")
            rgb = np.asarray(image)
            tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div(255.0)
            return image, rgb, tensor

        image, rgb, tensor = timed("decode", decode)
        with torch.inference_mode():
            if "blur" in stages:
                timed(
                    "blur",
                    lambda: cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var(),
                )
            if "brisque" in stages:
                timed("brisque", lambda: float(self.brisque(tensor)))
            for key, net in self.nima.items():
                if key in stages:
                    timed(key, lambda net=net: float(net(tensor).reshape(-1)[0]))
            if "clip" in stages:
                timed("clip", lambda: self._clip(image))
        if "emotion" in stages:
            bgr = np.ascontiguousarray(rgb[:, :, ::-1])
            timed(
                "emotion",
                lambda: self.deepface.analyze(
                    bgr,
                    actions=["emotion"],
                    detector_backend="opencv",
                    enforce_detection=False,
                    silent=True,
                ),
            )
        return times

    def _clip(self, image: Any) -> Any:
        pixels = self.clip_processor(images=image, return_tensors="pt")["pixel_values"]
        features = self.clip.get_image_features(pixel_values=pixels)
        return getattr(features, "pooler_output", features)


def measure(paths: list[Path], work: Path) -> dict[str, Any]:
    """Warm every model with one untimed pass over the first photo (a warm service has
    seen full-size inputs before), then time the full pipeline on each of `paths`, and the
    embedding-only one EMBEDDING_ROUNDS times on each."""
    import torch

    start = time.perf_counter()
    pipeline = NaivePipeline(work)
    load_s = time.perf_counter() - start
    pipeline.run(base64.b64encode(paths[0].read_bytes()).decode())

    images = []
    for path in paths:
        b64 = base64.b64encode(path.read_bytes()).decode()
        full = pipeline.run(b64)
        rounds = [pipeline.run(b64, EMBEDDING_STAGES) for _ in range(EMBEDDING_ROUNDS)]
        embedding = {s: float(np.mean([r[s] for r in rounds])) for s in EMBEDDING_STAGES}
        images.append({"image": path.name, "full": full, "embedding_only": embedding})
    full_total = sum(sum(i["full"].values()) for i in images)
    emb_total = sum(sum(i["embedding_only"].values()) for i in images)
    return {
        "torch_threads": torch.get_num_threads(),
        "load_seconds": round(load_s, 2),
        "images": images,
        "stage_mean_seconds": {
            s: round(float(np.mean([i["full"][s] for i in images])), 4) for s in STAGES
        },
        "full_seconds_per_image": full_total / len(images),
        "full_images_per_s": len(images) / full_total,
        "embedding_rounds": EMBEDDING_ROUNDS,
        "embedding_seconds_per_image": emb_total / len(images),
        "embedding_images_per_s": len(images) / emb_total,
    }


def main() -> None:
    out = Path(sys.argv[1])
    paths = [Path(p) for p in sys.argv[2:]]
    result = measure(paths, out.parent)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

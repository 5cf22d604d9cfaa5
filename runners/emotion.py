"""DeepFace's emotion CNN (`festora-emotion`) on OpenVINO, and the face crop it takes.

The face runner scores each level face crop with it. DeepFace computes it with torch, which
cost the face runner about 360 MB (torch, and the CUDA runtime that DeepFace's device check
loads) and 3 s of start-up for a 0.06 GFLOP network. So the import stores the network's
OpenVINO IR beside its weights (`channels_last_forward`), and `cnn_input` prepares a crop
exactly as `DeepFace.analyze(crop, detector_backend="skip")` does: a 224 px letterbox in
[0, 1], then DeepFace's 48 px gray. The IR is always computed in fp32: bf16 would move the
scores for no gain on a network this small.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
LETTERBOX_SIZE = (224, 224)  # what DeepFace resizes a face to before any attribute model
INPUT_SIZE = 48  # the emotion model's gray input side (DeepFace's `_preprocess_image`)


def letterboxed(crops_bgr: list[np.ndarray]) -> list[np.ndarray]:
    """Each BGR uint8 crop as DeepFace hands a face to its attribute models."""
    # cv2 and numpy only: importing it loads none of DeepFace's model code
    from deepface.modules.preprocessing import resize_image

    return [resize_image(c.astype(np.float32) / 255.0, LETTERBOX_SIZE)[0] for c in crops_bgr]


def cnn_input(boxed: list[np.ndarray]) -> np.ndarray:
    """N x 48 x 48 x 1 float32: DeepFace's `EmotionClient.predict` preprocessing."""
    gray = [
        cv2.resize(cv2.cvtColor(b, cv2.COLOR_BGR2GRAY), (INPUT_SIZE, INPUT_SIZE)) for b in boxed
    ]
    return np.asarray(gray, dtype=np.float32)[..., None]


def channels_last_forward(net: torch.nn.Module) -> torch.nn.Module:
    """DeepFace's `EmotionModel` on `cnn_input`'s layout: the graph exported to OpenVINO."""
    import torch

    class ChannelsLast(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x.permute(0, 3, 1, 2))

    return ChannelsLast()


def scores(prediction: np.ndarray) -> dict[str, float]:
    """One face's probabilities as DeepFace reports them: percent, by emotion name."""
    total = float(prediction.sum())
    return {name: 100.0 * float(p) / total for name, p in zip(EMOTIONS, prediction, strict=True)}

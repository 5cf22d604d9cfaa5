"""The model store: names, files and provenance of every model a runner loads.

`scripts/import_models.py` writes these BentoML models and `runners/` reads them, so both sides
agree here on the store name, the file layout inside the model folder and the labels. Each
runner's batching and thread settings are read from the environment here as well, because
`@bentoml.api(...)` needs them when the runner module is imported.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from festora.config import env_value

if TYPE_CHECKING:
    import bentoml

Weights = Literal["real", "random-init"]
WEIGHTS_MODES: tuple[Weights, ...] = ("real", "random-init")

# Labels every stored model carries (BentoML labels are str -> str).
LABEL_WEIGHTS = "weights"  # "real" | "random-init"
LABEL_SOURCE = "source"  # where the weights came from; the import's idempotency key
LABEL_LICENSE = "license"
LABEL_SHA256 = "sha256"  # of the model's main weights file
LABEL_KEY = "festora-model"  # ModelSpec.key, so `bentoml models list` groups them

RANDOM_INIT_WARNING = (
    "random-init weights: real architecture and cost, meaningless scores (test/benchmark only)"
)


@dataclass(frozen=True)
class ModelSpec:
    """One model in the store, as the import script writes it and its runner reads it."""

    key: str  # short name, also the name the runner reports in /health
    store_name: str  # BentoML model name
    env_prefix: str  # prefix of this runner's environment variables
    weights_file: str  # main weights file inside the model folder (its sha256 is a label)
    license: str
    description: str
    # Runner defaults; each is overridable as <env_prefix>_<NAME> (see RunnerConfig). One
    # thread each: five runners share the cores, and under load every one of them is busy.
    max_batch_size: int
    max_latency_ms: int
    num_threads: int

    @property
    def tag(self) -> str:
        return f"{self.store_name}:latest"


CLIP = ModelSpec(
    key="clip",
    store_name="festora-clip",
    env_prefix="CLIP",
    weights_file="model.safetensors",
    license="MIT (OpenAI CLIP)",
    description=(
        "CLIP, both towers (transformers save_pretrained folder + CLIPImageProcessor + the "
        "checkpoint's tokenizer), with an OpenVINO IR per tower"
    ),
    max_batch_size=32,
    max_latency_ms=30_000,
    num_threads=1,
)
# The text tower reads the same stored checkpoint as the image tower (one store entry, so the
# two can never come from different checkpoints); it is a runner of its own, not a stored model.
CLIP_TEXT = ModelSpec(
    key="clip_text",
    store_name=CLIP.store_name,
    env_prefix="CLIP_TEXT",
    weights_file=CLIP.weights_file,
    license=CLIP.license,
    description="CLIP text tower and projection of the festora-clip checkpoint",
    max_batch_size=64,
    max_latency_ms=30_000,
    num_threads=1,
)
# Files the text tower needs inside the festora-clip folder, besides the weights.
CLIP_TOKENIZER_FILE = "tokenizer.json"  # the checkpoint's own tokenizer (tokenizers format)
CLIP_TEXT_IR_FILE = "openvino_text_model.xml"  # and openvino_text_model.bin beside it
NIMA_TECHNICAL = ModelSpec(
    key="nima_technical",
    store_name="festora-nima-technical",
    env_prefix="NIMA_TECHNICAL",
    weights_file="NIMA_koniq-250367ae.pth",
    license="PolyForm-Noncommercial-1.0.0 (pyiqa release weights)",
    description="NIMA, InceptionResNetV2, trained on KonIQ-10k (technical; pyiqa nima-koniq)",
    max_batch_size=16,
    max_latency_ms=60_000,
    num_threads=1,
)
NIMA_AESTHETIC = ModelSpec(
    key="nima_aesthetic",
    store_name="festora-nima-aesthetic",
    env_prefix="NIMA_AESTHETIC",
    weights_file="NIMA_InceptionV2_ava-b0c77c00.pth",
    license="PolyForm-Noncommercial-1.0.0 (pyiqa release weights)",
    description="NIMA, InceptionResNetV2, trained on AVA (aesthetics; pyiqa nima)",
    max_batch_size=16,
    max_latency_ms=60_000,
    num_threads=1,
)
BRISQUE = ModelSpec(
    key="brisque",
    store_name="festora-brisque",
    env_prefix="BRISQUE",
    weights_file="svm.txt",
    license="Apache-2.0 (brisque package)",
    description="BRISQUE SVM shipped in the brisque package (svm.txt + normalize.pickle)",
    max_batch_size=16,
    max_latency_ms=60_000,
    num_threads=1,
)
EMOTION = ModelSpec(
    key="emotion",
    store_name="festora-emotion",
    env_prefix="EMOTION",
    weights_file="facial_expression_model_weights.pth",
    license="MIT (deepface)",
    description="DeepFace facial expression CNN (pytorch state dict), scored by the face runner",
    max_batch_size=16,
    max_latency_ms=60_000,
    num_threads=1,
)
FACES = ModelSpec(
    key="faces",
    store_name="festora-faces",
    env_prefix="FACES",
    weights_file="face_detection_full_range_sparse.tflite",
    license="Apache-2.0 (Google MediaPipe face models)",
    description="MediaPipe BlazeFace full-range, face mesh and iris models (.tflite, OpenVINO)",
    max_batch_size=16,
    max_latency_ms=60_000,
    num_threads=1,
)
# The face runner's files inside festora-faces, as the mediapipe wheel ships them.
FACE_DETECTOR_FILE = FACES.weights_file
FACE_MESH_FILE = "face_landmark.tflite"
IRIS_FILE = "iris_landmark.tflite"
FACE_MODEL_FILES = (FACE_DETECTOR_FILE, FACE_MESH_FILE, IRIS_FILE)

# The stored models, by key (what scripts/import_models.py imports).
SPECS: dict[str, ModelSpec] = {
    s.key: s for s in (CLIP, NIMA_TECHNICAL, NIMA_AESTHETIC, BRISQUE, EMOTION, FACES)
}
# Every runner, by key (what /health lists): the stored models and the CLIP text tower.
# Every runner (its /health name): the emotion CNN has none, the face runner scores it.
RUNNER_SPECS: dict[str, ModelSpec] = {
    **{key: spec for key, spec in SPECS.items() if spec is not EMOTION},
    CLIP_TEXT.key: CLIP_TEXT,
}


@dataclass(frozen=True)
class RunnerConfig:
    """A runner's adaptive-batching and threading settings, from the environment."""

    max_batch_size: int  # <PREFIX>_MAX_BATCH_SIZE: items per batch (>= 2, BentoML's minimum)
    max_latency_ms: int  # <PREFIX>_MAX_LATENCY_MS: queue + compute budget before a 503
    num_threads: int  # <PREFIX>_NUM_THREADS: torch / OpenCV threads in this runner's process
    timeout_s: int  # <PREFIX>_TIMEOUT_S: BentoML traffic timeout of the runner service


def _env_int(name: str, default: int, minimum: int) -> int:
    raw = env_value(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def runner_config(spec: ModelSpec) -> RunnerConfig:
    p = spec.env_prefix
    return RunnerConfig(
        max_batch_size=_env_int(f"{p}_MAX_BATCH_SIZE", spec.max_batch_size, 2),
        max_latency_ms=_env_int(f"{p}_MAX_LATENCY_MS", spec.max_latency_ms, 1),
        num_threads=_env_int(f"{p}_NUM_THREADS", spec.num_threads, 1),
        timeout_s=_env_int(f"{p}_TIMEOUT_S", 120, 1),
    )


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def model_labels(spec: ModelSpec, weights: Weights, source: str, sha256: str) -> dict[str, str]:
    return {
        LABEL_KEY: spec.key,
        LABEL_WEIGHTS: weights,
        LABEL_SOURCE: source,
        LABEL_LICENSE: spec.license,
        LABEL_SHA256: sha256,
    }


@dataclass(frozen=True)
class Provenance:
    """What a runner reports about the stored model it loaded."""

    tag: str
    weights: Weights | None
    source: str | None
    path: Path
    metadata: dict[str, Any]

    @property
    def warning(self) -> str | None:
        return RANDOM_INIT_WARNING if self.weights == "random-init" else None


class ModelMissing(LookupError):
    """The model is not in the active BentoML model store."""


IMPORT_HINT = "run `python scripts/import_models.py` (add --random-init when offline)"


def resolve(spec: ModelSpec) -> tuple[bentoml.Model, Provenance]:
    """Look the model up in the active store; ModelMissing says how to import it."""
    import bentoml

    try:
        model = bentoml.models.get(spec.tag)
    except bentoml.exceptions.NotFound as exc:
        raise ModelMissing(f"{spec.tag} is not in the model store; {IMPORT_HINT}") from exc
    labels = model.info.labels
    weights = labels.get(LABEL_WEIGHTS)
    return model, Provenance(
        tag=str(model.tag),
        weights=weights if weights in WEIGHTS_MODES else None,
        source=labels.get(LABEL_SOURCE),
        path=Path(model.path),
        metadata=dict(model.info.metadata),
    )

"""What the cull reads of one image's analysis: its fingerprint, capture moment, camera, and the
ranking signals, each named, with the analysis it comes from and its default weight.

Face signals (`face_sharpness`, `eyes_open`) come from the per-face fields of `emotion.faces[]`
(API.md "Faces": `sharpness`, `is_blurry`, `eyes.open`, `size_fraction`) when present; a photo
without them simply has no face signal. Only faces of at least `MIN_FACE_FRACTION` of the image
height count, so a blinking bystander in the background does not decide a burst.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from festora.schemas import ImageAnalysisResult

# Named ranking signals, their default weights, and the analysis each one is read from.
DEFAULT_WEIGHTS: dict[str, float] = {
    "sharpness": 0.30,
    "face_sharpness": 0.20,
    "eyes_open": 0.20,
    "exposure": 0.15,
    "technical": 0.10,
    "aesthetic": 0.05,
}
# Signals a weight can demand of every analysis; face signals are absent from any photo
# without faces, so they are never demanded.
SIGNAL_SOURCES: dict[str, str] = {
    "sharpness": "blur",
    "exposure": "exposure",
    "technical": "quality",
    "aesthetic": "aesthetic",
}
MIN_FACE_FRACTION = 0.05
MIN_MEAN_LUMINANCE = 0.05


@dataclass(slots=True)
class Frame:
    """One image of the shoot as the cull sees it; `index` is its position in the input."""

    index: int
    image_id: str
    error: str | None = None
    sha256: str | None = None
    phash: int | None = None
    size: tuple[int, int] | None = None
    captured: float | None = None  # POSIX seconds (UTC when the camera wrote an offset)
    camera: tuple[str | None, str | None, str | None] | None = None  # make, model, serial
    embedding: list[float] | None = None
    sharpness: float | None = None  # Laplacian variance at the blur analysis size
    is_blurry: bool = False
    mean_luminance: float | None = None
    exposure: float | None = None  # 0-1, 1 = nothing clipped and a mid-grey mean
    exposure_verdict: str | None = None
    technical: float | None = None  # NIMA technical, 0-1
    aesthetic: float | None = None  # NIMA aesthetic, 0-1
    low_quality: bool = False
    low_aesthetic: bool = False
    face_sharpness: float | None = None  # mean over the faces that count
    face_blurry: bool = False
    eyes_open: float | None = None  # fraction of judged faces with open eyes
    eyes_closed: bool = False

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def focus(self) -> float | None:
        """The Laplacian variance per squared mean luminance: the variance falls with the
        square of brightness, so a darker frame of a burst is not taken for a softer one."""
        if self.sharpness is None:
            return None
        if self.mean_luminance is None:
            return self.sharpness
        return self.sharpness / max(self.mean_luminance, MIN_MEAN_LUMINANCE) ** 2

    @property
    def has_burst_exif(self) -> bool:
        """Enough EXIF to find bursts: a capture moment and a camera to tell bodies apart."""
        return self.captured is not None and self.camera is not None


def frame_of(index: int, result: ImageAnalysisResult) -> Frame:
    frame = Frame(index=index, image_id=result.image_id or "", error=result.error)
    if frame.failed:
        return frame
    if result.width_px and result.height_px:
        frame.size = (result.width_px, result.height_px)
    if result.fingerprint is not None:
        frame.sha256 = result.fingerprint.sha256.lower()
        frame.phash = int(result.fingerprint.phash, 16)
    if (metadata := result.metadata) is not None:
        frame.captured = _seconds(metadata.captured_at)
        camera = (metadata.camera_make, metadata.camera_model, metadata.camera_serial)
        frame.camera = camera if camera[1] or camera[2] else None
    if result.embedding is not None and result.embedding.vector:
        frame.embedding = result.embedding.vector
    if result.blur is not None:
        frame.sharpness = max(0.0, result.blur.laplacian_variance)
        frame.is_blurry = result.blur.is_blurry
    if (exposure := result.exposure) is not None:
        frame.exposure = exposure_quality(
            exposure.mean_luminance, exposure.highlights_clipped, exposure.shadows_clipped
        )
        frame.exposure_verdict = exposure.verdict
        frame.mean_luminance = exposure.mean_luminance
    if result.quality is not None:
        frame.technical = _unit(result.quality.nima_technical_score)
        frame.low_quality = result.quality.overall_quality == "low"
    if result.aesthetic is not None:
        frame.aesthetic = _unit(result.aesthetic.nima_aesthetic_score)
        frame.low_aesthetic = result.aesthetic.aesthetic_label == "low"
    if result.emotion is not None:
        _read_faces(frame, result.emotion.faces)
    return frame


def exposure_quality(mean: float, highlights: float, shadows: float) -> float:
    """1 for a well exposed frame, falling with clipped pixels and a mean far from mid-grey.

    Clipped highlights cost most (lost for good); a few clipped shadows are normal (a black
    sky, a dark suit), so shadows only cost beyond 5%.
    """
    penalty = 4 * highlights + 2 * max(0.0, shadows - 0.05) + 2 * max(0.0, abs(mean - 0.46) - 0.12)
    return max(0.0, 1.0 - penalty)


def missing_sources(result: ImageAnalysisResult, signals: list[str]) -> list[str]:
    """The analyses (by field name) this successful result lacks for the given signals."""
    return [SIGNAL_SOURCES[s] for s in signals if getattr(result, SIGNAL_SOURCES[s]) is None]


def _read_faces(frame: Frame, faces: list[Any]) -> None:
    counted = [f for f in faces if (_get(f, "size_fraction") or 1.0) >= MIN_FACE_FRACTION]
    sharpness = [s for f in counted if isinstance(s := _get(f, "sharpness"), int | float)]
    if sharpness:
        frame.face_sharpness = sum(sharpness) / len(sharpness)
    frame.face_blurry = any(_get(f, "is_blurry") is True for f in counted)
    judged = [opened for f in counted if (opened := _get(_get(f, "eyes"), "open")) is not None]
    if judged:
        frame.eyes_open = sum(bool(o) for o in judged) / len(judged)
        frame.eyes_closed = not all(judged)


def _get(obj: Any, name: str) -> Any:
    """A face field whether the face is a model (once API.md "Faces" is in the schema) or the
    extra keys of a client's JSON."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    value = getattr(obj, name, None)
    if value is None and (extra := getattr(obj, "model_extra", None)):
        value = extra.get(name)
    return value


def _unit(score: float) -> float:
    """A 1-10 NIMA score as 0-1."""
    return min(1.0, max(0.0, (score - 1.0) / 9.0))


def _seconds(captured_at: str | None) -> float | None:
    if not captured_at:
        return None
    try:
        moment = datetime.fromisoformat(captured_at)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()

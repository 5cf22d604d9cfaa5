"""The cull as a plain function: grouping, relative ranking, verdicts, and bad input.

Most tests cull real photos made into a shoot (tests/photos.py), analysed in this process
with the analyses that need no model (blur, exposure, fingerprint, metadata): the same code
the service runs. The end-to-end tests over `bentoml serve` are in test_api_cull.py.
"""

from __future__ import annotations

import io
import random
from datetime import timedelta
from functools import cache

import anyio
import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from festora.analysis import ImageAnalyzer
from festora.config import get_settings
from festora.cull import CullError, CullOptions, CullResponse, cull
from festora.cull.signals import DEFAULT_WEIGHTS
from festora.health import RunnerHealth
from festora.schemas import (
    AnalysisFlags,
    EmbeddingResult,
    FaceEmotion,
    ImageAnalysisResult,
    QualityResult,
)
from tests.photos import BURST_START, Shot, blurred, jpeg, real_photos, shifted, shoot

LOCAL = AnalysisFlags(run_quality=False, run_emotion=False, run_embedding=False)


def analyse(shot: Shot) -> ImageAnalysisResult:
    """The model-free analyses of one photo, as the service computes them."""
    settings = get_settings()
    analyzer = ImageAnalyzer(None, settings, RunnerHealth(dict, settings))  # type: ignore[arg-type]
    result = anyio.run(analyzer.analyze_bytes, shot.data, LOCAL)
    result.image_id = shot.image_id
    return result


@cache
def shoot_analyses() -> tuple[ImageAnalysisResult, ...]:
    return tuple(analyse(shot) for shot in shoot())


def analyses() -> list[ImageAnalysisResult]:
    return [a.model_copy(deep=True) for a in shoot_analyses()]


def by_id(response: CullResponse) -> dict[str, dict]:
    return {image.image_id: image.model_dump() for image in response.images}


def codes(image: dict) -> set[str]:
    return {reason["code"] for reason in image["reasons"]}


def test_shoot_is_grouped_ranked_and_judged() -> None:
    response = cull(analyses())
    groups = [(g.kind, g.image_ids) for g in response.groups]
    images = by_id(response)

    assert [kind for kind, _ in groups] == ["burst", "burst", "single", "similar", "single"]
    for prefix, (_, ids) in zip("ab", groups, strict=False):
        assert sorted(ids) == [
            f"{prefix}{n}" for n in ("1-sharp", "2-blurred", "3-shifted", "4-darker", "5-copy")
        ]
        assert ids[0] == f"{prefix}1-sharp"
        assert images[f"{prefix}1-sharp"]["verdict"] == "keep"
        assert images[f"{prefix}2-blurred"]["verdict"] == "reject"
        assert "blurry" in codes(images[f"{prefix}2-blurred"])
        copy = images[f"{prefix}5-copy"]
        assert (copy["verdict"], copy["duplicate_of"]) == ("reject", f"{prefix}1-sharp")
        assert "duplicate" in codes(copy)
        assert images[f"{prefix}4-darker"]["verdict"] != "keep"
    assert groups[2] == ("single", ["c-coffee"])
    assert sorted(groups[3][1]) == ["d1-flower", "d2-flower-shifted"]
    assert groups[4] == ("single", ["e-china"])
    assert images["c-coffee"]["verdict"] == images["e-china"]["verdict"] == "keep"
    assert [i.image_id for i in response.images] == [s.image_id for s in shoot()]
    assert [g.group_id for g in response.groups] == [1, 2, 3, 4, 5]
    assert all(0 <= i.score <= 1 for i in response.images)


def test_the_cull_does_not_depend_on_the_input_order() -> None:
    expected = cull(analyses())
    shuffled = analyses()
    random.Random(7).shuffle(shuffled)
    again = cull(shuffled)

    assert again.groups == expected.groups
    assert by_id(again) == by_id(expected)


def test_a_darker_frame_is_not_taken_for_a_softer_one() -> None:
    images = by_id(cull(analyses()))
    for prefix in "ab":
        darker = images[f"{prefix}4-darker"]
        assert "blurry" not in codes(darker)
        assert "not_best_in_group" in codes(darker)


def test_weight_zero_removes_a_signal() -> None:
    def blurred_score(variance: float, weights: dict[str, float] | None) -> float:
        sent = analyses()
        sent[1].blur.laplacian_variance = variance  # a2-blurred
        return cull(sent, CullOptions(weights=weights)).images[1].score

    as_blurred, as_sharp = (
        analyses()[1].blur.laplacian_variance,
        analyses()[0].blur.laplacian_variance,
    )
    assert blurred_score(as_blurred, None) < blurred_score(as_sharp, None)
    assert blurred_score(as_blurred, {"sharpness": 0}) == blurred_score(as_sharp, {"sharpness": 0})
    without = cull(analyses(), CullOptions(weights={"sharpness": 0}))
    assert without.weights_used["sharpness"] == 0
    assert by_id(without)["a2-blurred"]["verdict"] == "reject"  # still blurred: a hard fault


def test_unknown_and_negative_weights_are_refused() -> None:
    with pytest.raises(ValidationError, match="unknown weight name"):
        CullOptions(weights={"sharpnes": 1.0})
    with pytest.raises(ValidationError):
        CullOptions(weights={"sharpness": -1.0})
    with pytest.raises(CullError, match="every weight is zero"):
        cull(
            analyses(),
            CullOptions(weights=dict.fromkeys(DEFAULT_WEIGHTS, 0.0)),
        )


def test_a_requested_weight_needs_its_analysis_and_a_default_one_is_left_out() -> None:
    with pytest.raises(CullError, match="'technical' needs 'quality'") as error:
        cull(analyses(), CullOptions(weights={"technical": 0.5}))
    assert error.value.status_code == 422 and error.value.code == "cull_error"

    response = cull(analyses())
    assert response.weights_used["technical"] == 0
    assert any("technical" in w for w in response.warnings)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: setattr(a[3], "image_id", None), "no image_id"),
        (lambda a: setattr(a[3], "image_id", a[0].image_id), "image_id repeated"),
        (lambda a: setattr(a[3], "fingerprint", None), "no 'fingerprint'"),
    ],
)
def test_bad_analyses_are_cull_errors_naming_the_problem(change, message: str) -> None:
    sent = analyses()
    change(sent)
    with pytest.raises(CullError, match=message):
        cull(sent)


def test_a_failed_analysis_is_rejected_in_a_group_of_its_own() -> None:
    sent = analyses()
    sent.insert(2, ImageAnalysisResult(image_id="broken", error="the image is corrupt"))
    response = cull(sent)
    broken = response.images[2]

    assert broken.image_id == "broken" and broken.verdict == "reject"
    assert [r.code for r in broken.reasons] == ["analysis_failed"]
    group = next(g for g in response.groups if g.group_id == broken.group_id)
    assert (group.kind, group.image_ids) == ("single", ["broken"])
    assert response.total_images == len(sent) == len(response.images)


def test_when_every_frame_is_blurred_the_best_is_rejected_too() -> None:
    photo = real_photos()["coffee"]
    shots = [
        Shot(
            f"f{k}",
            jpeg(
                blurred(photo, 3 + k),
                captured_at=BURST_START + k * timedelta(seconds=0.5),
                serial="X",
            ),
        )
        for k in range(3)
    ]
    response = cull([analyse(s) for s in shots])
    assert [g.kind for g in response.groups] == ["burst"]
    assert all(
        i.verdict == "reject" and "blurry" in {r.code for r in i.reasons} for i in response.images
    )


def test_frames_further_apart_than_the_gap_are_no_burst_unless_the_gap_allows() -> None:
    photo = real_photos()["astronaut"]
    shots = [
        Shot(
            f"g{k}",
            jpeg(
                shifted(photo, 0.01 * k),
                captured_at=BURST_START + k * timedelta(seconds=1.5),
                serial="X",
            ),
        )
        for k in range(3)
    ]
    frames = [analyse(s) for s in shots]
    assert [g.kind for g in cull(frames).groups] == ["burst"]  # chained: 0-1.5-3.0 s
    assert [g.kind for g in cull(frames, CullOptions(burst_gap_seconds=1.0)).groups] == [
        "single"
    ] * 3
    other_body = [frames[0], frames[1].model_copy(deep=True)]
    other_body[1].metadata.camera_serial = "Y"
    assert [g.kind for g in cull(other_body).groups] == ["single", "single"]


def test_exact_and_pixel_duplicates_without_exif() -> None:
    photo = real_photos()["chelsea"]
    png = io.BytesIO()
    Image.fromarray(photo).save(png, "PNG")
    shots = [Shot("x1", jpeg(photo)), Shot("x2", jpeg(photo)), Shot("x3", png.getvalue())]
    response = cull([analyse(s) for s in shots])

    assert [(g.kind, sorted(g.image_ids)) for g in response.groups] == [
        ("duplicate", ["x1", "x2", "x3"])
    ]
    best = response.groups[0].best_image_id
    assert [i.duplicate_of for i in response.images if i.image_id != best] == [best, best]


def test_a_blurred_copy_keeps_its_phash_but_is_no_duplicate() -> None:
    photo = real_photos()["chelsea"]
    response = cull([analyse(Shot("y1", jpeg(photo))), analyse(Shot("y2", jpeg(blurred(photo))))])
    assert [g.kind for g in response.groups] == ["similar"]
    images = by_id(response)
    assert images["y2"]["duplicate_of"] is None and "blurry" in codes(images["y2"])


def _with_embedding(result: ImageAnalysisResult, vector: np.ndarray) -> ImageAnalysisResult:
    result = result.model_copy(deep=True)
    unit = vector / np.linalg.norm(vector)
    result.embedding = EmbeddingResult(model="clip", dimensions=unit.size, vector=unit.tolist())
    return result


def test_clip_confirms_similar_frames_but_never_groups_alone() -> None:
    photos = real_photos()
    flower, moved = (
        analyse(Shot("f1", jpeg(photos["flower"]))),
        analyse(Shot("f2", jpeg(shifted(photos["flower"])))),
    )
    china = analyse(Shot("c1", jpeg(photos["china"])))
    rng = np.random.default_rng(0)
    same, other = rng.normal(size=512), rng.normal(size=512)

    close = cull([_with_embedding(flower, same), _with_embedding(moved, same + 0.01 * other)])
    assert [g.kind for g in close.groups] == ["similar"]
    vetoed = cull([_with_embedding(flower, same), _with_embedding(moved, other)])
    assert [g.kind for g in vetoed.groups] == ["single", "single"]
    clip_only = cull([_with_embedding(flower, same), _with_embedding(china, same)])
    assert [g.kind for g in clip_only.groups] == ["single", "single"]


def test_nima_ranks_frames_that_the_pixels_cannot_tell_apart() -> None:
    sent = analyses()[:5]  # burst a
    for result, score in zip(sent, (4.0, 9.0, 5.0, 3.0, 4.0), strict=True):
        result.quality = QualityResult(
            brisque_score=20, nima_technical_score=score, overall_quality="high"
        )
    sent[2].quality.nima_technical_score = 9.5  # the shifted frame, as sharp as the first
    response = cull(sent, CullOptions(weights={"technical": 1.0, "sharpness": 0.3}))
    assert response.groups[0].image_ids[0] == "a3-shifted"


@pytest.mark.skipif("eyes" not in FaceEmotion.model_fields, reason="faces fields not on main yet")
def test_closed_eyes_and_a_blurred_face_lose_to_their_sibling() -> None:
    sent = analyses()[:2]  # a1-sharp and a2-blurred: make the second sharp too
    sent[1] = sent[0].model_copy(deep=True)
    sent[1].image_id = "a1-twin"
    sent[1].fingerprint.sha256 = "0" * 64
    sent[1].metadata.captured_at = "2024-06-01T15:00:00.500000+02:00"

    def face(open_eyes: bool, sharpness: float, is_blurry: bool) -> FaceEmotion:
        return FaceEmotion.model_validate(
            {
                "dominant_emotion": "happy",
                "scores": dict.fromkeys(
                    ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"), 1.0
                ),
                "face_confidence": 0.9,
                "region": {"x": 10, "y": 10, "w": 100, "h": 100},
                "eyes": {
                    "left_openness": 0.8 if open_eyes else 0.05,
                    "right_openness": 0.8 if open_eyes else 0.05,
                    "open": open_eyes,
                },
                "sharpness": sharpness,
                "is_blurry": is_blurry,
                "size_fraction": 0.3,
            }
        )

    from festora.schemas import EmotionResult

    for closed_first in (True, False):
        sent[0].emotion = EmotionResult(
            faces_detected=1,
            faces=[face(not closed_first, 50.0 if closed_first else 2.0, not closed_first)],
        )
        sent[1].emotion = EmotionResult(faces_detected=1, faces=[face(True, 50.0, False)])
        response = by_id(cull(sent))
        assert response["a1-twin"]["rank"] == 1
        assert ("eyes_closed" if closed_first else "face_blurry") in codes(response["a1-sharp"])

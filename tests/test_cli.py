"""The CLI's local half: the folder scan and resume log, the outputs, XMP sidecars read back by
exiftool and exiv2, and the contact sheet rendered by headless Chromium.

The cull answers here are written out in the /v1/cull shape of API.md; tests/test_cli_e2e.py
runs the same code against a real service.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from festora.cli.outputs import CulledPhoto, culled_groups, write_cull_csv
from festora.cli.photos import MAX_IMAGE_ID, Photo, ResultsLog, find_photos, new_record, sha256_of
from festora.cli.sheet import ensure_thumbnail, thumbnail_name, write_contact_sheet
from festora.cli.tagging import DEFAULT_TAG_LABELS, parse_labels
from festora.cli.xmp import CREATOR_TOOL, sidecar_path, write_sidecars
from tests.browser import offline_page, screenshot
from tests.photofolder import EventFolder, make_event_folder


@pytest.fixture
def event(tmp_path: Path) -> EventFolder:
    return make_event_folder(tmp_path / "wedding")


def analysis(image_id: str, *, blur: float = 120.0, error: str | None = None) -> dict[str, Any]:
    if error:
        return {"image_id": image_id, "error": error, "error_code": "image_decode_error"}
    return {
        "image_id": image_id,
        "width_px": 480,
        "height_px": 480,
        "blur": {
            "laplacian_variance": blur,
            "is_blurry": blur < 10,
            "blur_threshold": 10.0,
            "analysis_size_px": 480,
        },
        "quality": {
            "brisque_score": 21.5,
            "nima_technical_score": 6.1,
            "overall_quality": "high",
        },
        "aesthetic": {"nima_aesthetic_score": 5.4, "aesthetic_label": "medium"},
        "emotion": None,
        "error": None,
    }


def record_all(event: EventFolder, log: ResultsLog) -> dict[str, Any]:
    """Log an analysis for every photo and return a /v1/cull answer for them: the burst
    IMG_0001-3 as one group (the sharp one best, the blurred one rejected), the flower and its
    copy as duplicates, everything else single; bad files rejected with analysis_failed."""
    for photo in find_photos(event.root):
        data = photo.path.read_bytes()
        bad = event.bad.get(photo.relpath)
        blur = 2.0 if photo.relpath == "IMG_0003.jpg" else 150.0
        result = analysis(photo.image_id, blur=blur, error=bad and f"corrupt: {bad}")
        log.append(new_record(photo, sha256_of(data), len(data), result))
        ensure_thumbnail(data, sha256_of(data), event.root.parent / "out" / "thumbs")
    reason = {
        "blurry": {"code": "blurry", "message": "the photo is blurred"},
        "dup": {"code": "duplicate", "message": "same as flower.jpeg"},
        "failed": {"code": "analysis_failed", "message": "could not be analysed"},
        "not_best": {"code": "not_best_in_group", "message": "a better frame exists"},
    }
    groups = [
        (["IMG_0001.jpg", "IMG_0002.jpg", "IMG_0003.jpg"], "burst"),
        (["flower.jpeg", "flower-copy.jpeg"], "duplicate"),
        (["day2/coffee.png"], "single"),
        (["day2/chelsea.heic"], "single"),
        (["day2/nested/china.tiff"], "single"),
        *(([path], "single") for path in sorted(event.bad)),
    ]
    verdicts = {
        "IMG_0002.jpg": ("maybe", [reason["not_best"]], None),
        "IMG_0003.jpg": ("reject", [reason["blurry"], reason["not_best"]], None),
        "flower-copy.jpeg": ("reject", [reason["dup"]], "flower.jpeg"),
        **{path: ("reject", [reason["failed"]], None) for path in event.bad},
    }
    images = []
    for group_id, (ids, _) in enumerate(groups):
        for rank, image_id in enumerate(ids, start=1):
            verdict, reasons, duplicate_of = verdicts.get(image_id, ("keep", [], None))
            images.append(
                {
                    "image_id": image_id,
                    "group_id": group_id,
                    "rank": rank,
                    "score": round(0.9 - 0.2 * rank, 3),
                    "verdict": verdict,
                    "reasons": reasons,
                    "duplicate_of": duplicate_of,
                }
            )
    return {
        "api_version": "1.0",
        "total_images": len(images),
        "groups": [
            {"group_id": gid, "kind": kind, "image_ids": ids, "best_image_id": ids[0]}
            for gid, (ids, kind) in enumerate(groups)
        ],
        "images": images,
        "weights_used": {},
        "processing_time_ms": 1.0,
    }


def culled(
    event: EventFolder, out: Path, tags: dict[str, list[dict[str, Any]]] | None = None
) -> tuple[list[Any], dict[str, Any]]:
    log = ResultsLog(out / "results.jsonl")
    cull = record_all(event, log)
    log.close()
    records = {record.result["image_id"]: record for record in log.by_path.values()}
    return culled_groups(cull, records, tags), cull


def tags_of(event: EventFolder) -> dict[str, list[dict[str, Any]]]:
    """/v1/tags-shaped tags for every photo that was analysed: its own name's stem first."""
    return {
        path: [
            {"label": Path(path).stem, "probability": 0.7},
            {"label": "flowers", "probability": 0.2},
        ]
        for path in event.good
    }


# ---- the folder and the resume log --------------------------------------------------------


def test_scan_finds_photos_by_suffix_recursively_and_skips_hidden_and_output(
    event: EventFolder,
) -> None:
    out = event.root / "festora-cull"
    (out / "thumbs").mkdir(parents=True)
    shutil.copy(event.root / "IMG_0001.jpg", out / "thumbs" / "thumb.jpg")
    found = [photo.relpath for photo in find_photos(event.root, exclude=out)]
    assert found == event.photos
    assert not set(found) & set(event.ignored)


def test_long_paths_get_unique_ids_within_the_contract_limit(tmp_path: Path) -> None:
    deep = "/".join(["a-rather-long-folder-name"] * 8)
    photos = [Photo(path=tmp_path / name, relpath=f"{deep}/{name}") for name in ("1.jpg", "2.jpg")]
    ids = [photo.image_id for photo in photos]
    assert all(len(image_id) <= MAX_IMAGE_ID for image_id in ids)
    assert len(set(ids)) == 2 and all(image_id.endswith(".jpg") for image_id in ids)
    assert Photo(path=tmp_path, relpath="short.jpg").image_id == "short.jpg"


def test_results_log_resumes_and_survives_a_line_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    log = ResultsLog(path)
    photo = Photo(path=tmp_path / "a.jpg", relpath="a.jpg")
    log.append(new_record(photo, "ab" * 32, 10, analysis("ignored")))
    log.close()
    with path.open("a") as file:  # a run killed in the middle of writing its next line
        file.write('{"path": "b.jpg", "sha256": "cd')

    log = ResultsLog(path)
    done = log.done(photo, "ab" * 32)
    assert done is not None and done.result["image_id"] == "a.jpg"
    assert log.done(photo, "ef" * 32) is None  # the same path with new bytes is not done
    assert log.analysed("ab" * 32) is done
    other = Photo(path=tmp_path / "c.jpg", relpath="c.jpg")
    log.append(new_record(other, "cd" * 32, 5, analysis("c.jpg")))
    log.close()

    reread = ResultsLog(path)
    assert sorted(reread.by_path) == ["a.jpg", "c.jpg"]
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["path"] == "c.jpg"


def test_cull_csv_has_one_row_per_photo_in_group_order(event: EventFolder, tmp_path: Path) -> None:
    out = tmp_path / "out"
    groups, _ = culled(event, out, tags_of(event))
    with write_cull_csv(groups, out).open() as file:
        rows = list(csv.DictReader(file))
    assert [row["path"] for row in rows][:3] == ["IMG_0001.jpg", "IMG_0002.jpg", "IMG_0003.jpg"]
    assert sorted(row["path"] for row in rows) == event.photos
    by_path = {row["path"]: row for row in rows}
    assert by_path["IMG_0001.jpg"]["best_in_group"] == "true"
    assert by_path["IMG_0003.jpg"]["reasons"] == "blurry;not_best_in_group"
    assert by_path["flower-copy.jpeg"]["duplicate_of"] == "flower.jpeg"
    assert by_path["empty.jpg"]["error"] == "corrupt: 0 bytes"
    assert len(by_path["IMG_0001.jpg"]["sha256"]) == 64
    assert by_path["IMG_0001.jpg"]["tags"] == "IMG_0001:0.700;flowers:0.200"
    assert by_path["empty.jpg"]["tags"] == ""


def test_tag_labels_from_the_command_line() -> None:
    assert parse_labels(" cake, dog ,,cake, a red car ") == ["cake", "dog", "a red car"]
    for bad in ("cake", " , ", ",".join(str(i) for i in range(201))):
        with pytest.raises(ValueError, match="2 to 200 labels"):
            parse_labels(bad)
    assert len(set(DEFAULT_TAG_LABELS)) == len(DEFAULT_TAG_LABELS) >= 2


# ---- XMP sidecars ----------------------------------------------------------------------------


def exiftool_read(path: Path) -> dict[str, Any]:
    completed = subprocess.run(
        ["exiftool", "-j", "-struct", "-XMP:all", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(completed.stdout)[0]


def exiv2_read(path: Path) -> dict[str, str]:
    completed = subprocess.run(
        ["exiv2", "-PXkv", str(path)], check=True, capture_output=True, text=True
    )
    return dict(line.split(None, 1) for line in completed.stdout.splitlines() if line.strip())


def photos_of(groups: list[Any]) -> list[CulledPhoto]:
    return [photo for group in groups for photo in group.photos]


def test_xmp_sidecars_are_read_back_by_exiftool_and_exiv2(
    event: EventFolder, tmp_path: Path
) -> None:
    groups, _ = culled(event, tmp_path / "out")
    before = {path: (event.root / path).read_bytes() for path in event.photos}

    report = write_sidecars(photos_of(groups), event.root, force=False)

    assert not report.failed and not report.kept
    assert sorted(report.written) == sorted(sidecar_path(event.root / p) for p in event.photos)
    assert {path: (event.root / path).read_bytes() for path in event.photos} == before
    best = exiftool_read(event.root / "IMG_0001.xmp")
    assert (best["Rating"], best["Label"]) == (5, "Green")
    assert best["Subject"] == ["festora:keep"]
    assert best["CreatorTool"] == CREATOR_TOOL
    maybe = exiftool_read(event.root / "IMG_0002.xmp")
    assert (maybe["Rating"], maybe["Label"]) == (2, "Yellow")
    blurred = exiftool_read(event.root / "IMG_0003.xmp")
    assert (blurred["Rating"], blurred["Label"]) == (-1, "Red")
    assert blurred["Subject"] == ["festora:reject", "festora:blurry", "festora:not_best_in_group"]
    assert blurred["HierarchicalSubject"] == [
        "festora|reject",
        "festora|blurry",
        "festora|not_best_in_group",
    ]
    assert exiftool_read(event.root / "day2" / "nested" / "china.xmp")["Rating"] == 5

    exiv2 = exiv2_read(event.root / "IMG_0003.xmp")
    assert exiv2["Xmp.xmp.Rating"] == "-1"
    assert exiv2["Xmp.xmp.Label"] == "Red"
    assert exiv2["Xmp.dc.subject"] == "festora:reject, festora:blurry, festora:not_best_in_group"
    assert exiv2_read(event.root / "empty.xmp")["Xmp.dc.subject"] == (
        "festora:reject, festora:analysis_failed"
    )


def test_xmp_refreshes_its_own_sidecars_and_leaves_others_unless_forced(
    event: EventFolder, tmp_path: Path
) -> None:
    groups, _ = culled(event, tmp_path / "out")
    photos = {photo.path: photo for photo in photos_of(groups)}
    foreign = event.root / "IMG_0002.xmp"
    subprocess.run(
        [
            "exiftool",
            "-q",
            "-o",
            str(foreign),
            "-XMP-xmp:CreatorTool=Adobe Photoshop Lightroom Classic 13.0",
            "-XMP-xmp:Rating=3",
            "-XMP-dc:Subject=bride",
            "-XMP-crs:Exposure2012=+0.35",
        ],
        check=True,
    )
    foreign_bytes = foreign.read_bytes()
    write_sidecars([photos["IMG_0001.jpg"]], event.root, force=False)

    # A later cull changes its mind about IMG_0001: the tool's own sidecar follows.
    demoted = CulledPhoto(
        **{**photos["IMG_0001.jpg"].__dict__, "verdict": "reject", "best": False,
           "reasons": [{"code": "eyes_closed", "message": "eyes closed"}]}
    )  # fmt: skip
    report = write_sidecars([demoted, photos["IMG_0002.jpg"]], event.root, force=False)
    assert report.written == [event.root / "IMG_0001.xmp"]
    assert report.kept == [foreign]
    assert foreign.read_bytes() == foreign_bytes
    mine = exiftool_read(event.root / "IMG_0001.xmp")
    assert (mine["Rating"], mine["Subject"]) == (-1, ["festora:reject", "festora:eyes_closed"])

    report = write_sidecars([photos["IMG_0002.jpg"]], event.root, force=True)
    assert report.written == [foreign]
    merged = exiftool_read(foreign)
    assert (merged["Rating"], merged["Label"]) == (2, "Yellow")
    assert merged["Subject"] == ["bride", "festora:maybe", "festora:not_best_in_group"]
    assert merged["CreatorTool"] == "Adobe Photoshop Lightroom Classic 13.0"
    assert merged["Exposure2012"] == "+0.35"


# ---- the contact sheet in a real browser ------------------------------------------------------


def test_contact_sheet_in_headless_chromium(event: EventFolder, tmp_path: Path) -> None:
    out = tmp_path / "out"
    groups, cull = culled(event, out, tags_of(event))
    page_path = write_contact_sheet(groups, out, title="wedding")
    html = page_path.read_text()
    assert "http://" not in html and "https://" not in html  # nothing to fetch: works offline
    assert "base64" not in html  # thumbnails beside the page, not inlined
    thumbs = sorted((out / "thumbs").iterdir())
    assert len(thumbs) == len(event.good) - 1  # the flower's copy shares its thumbnail
    assert all(p.stat().st_size < 60_000 for p in thumbs)

    blocked: list[str] = []
    with offline_page(page_path, blocked) as page:
        sections = page.locator("section.group")
        assert sections.count() == len(cull["groups"])
        first = sections.nth(0)
        assert first.locator("figure").evaluate_all("fs => fs.map(f => f.dataset.imageId)") == [
            "IMG_0001.jpg",
            "IMG_0002.jpg",
            "IMG_0003.jpg",
        ]
        assert first.locator("figure").nth(0).locator(".best-mark").is_visible()
        # The best frame is marked unless the whole group failed (a lone bad file).
        assert page.locator(".best-mark").count() == len(cull["groups"]) - len(event.bad)
        assert page.locator("figure.best").evaluate_all(
            "fs => fs.every(f => f.parentElement.firstElementChild === f)"
        )
        loaded = page.locator("figure img").evaluate_all(
            "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)"
        )
        assert len(loaded) == len(event.good) and all(loaded)
        assert page.locator("figure .no-thumb").count() == len(event.bad)

        blurred = page.locator('figure[data-image-id="IMG_0003.jpg"]')
        assert float(blurred.locator("img").evaluate("i => getComputedStyle(i).opacity")) < 0.5
        sharp = page.locator('figure[data-image-id="IMG_0001.jpg"]')
        assert float(sharp.locator("img").evaluate("i => getComputedStyle(i).opacity")) == 1
        assert blurred.locator(".reason").all_inner_texts() == ["blurry", "not_best_in_group"]
        assert page.locator('figure[data-image-id="notes.jpg"] .reason').inner_text() == (
            "analysis_failed"
        )

        scores = blurred.locator(".scores")
        assert not scores.is_visible()
        blurred.hover()
        assert scores.is_visible()
        assert "blur (Laplacian var.)" in scores.inner_text()
        assert "2.0" in scores.inner_text()

        for path in event.photos:  # each analysed photo shows its tags, most probable first
            shown = page.locator(f'figure[data-image-id="{path}"] .tag').all_inner_texts()
            assert shown == ([Path(path).stem, "flowers"] if path in event.good else []), path
        tag = sharp.locator(".tag").first
        assert tag.is_visible() and tag.get_attribute("title") == "IMG_0001: 70% (CLIP zero-shot)"
        assert page.locator("#tags-note").count() == 0

        summary = page.locator("#summary").inner_text()
        assert "11 photos" in summary and "8 groups" in summary
        assert "5 keep" in summary and "1 maybe" in summary and "5 reject" in summary
        screenshot(page, "contact_sheet.png")

        page.get_by_label("keep").uncheck()
        page.get_by_label("maybe").uncheck()
        visible = page.locator("figure.photo:visible")
        assert (
            sorted(visible.evaluate_all("fs => fs.map(f => f.dataset.verdict)")) == ["reject"] * 5
        )
        assert page.locator("section.group:visible").count() == 5  # burst, dup, 3 bad
        assert "(5 shown)" in page.locator("#summary").inner_text()
        screenshot(page, "contact_sheet_rejects.png")

        page.get_by_label("reject").uncheck()
        page.get_by_label("maybe").check()
        assert visible.evaluate_all("fs => fs.map(f => f.dataset.imageId)") == ["IMG_0002.jpg"]
    assert blocked == []


def test_a_sheet_without_tags_says_why(event: EventFolder, tmp_path: Path) -> None:
    out = tmp_path / "out"
    groups, _ = culled(event, out)
    note = "No tags: the service could not tag the photos (/v1/tags answered 503)."
    page_path = write_contact_sheet(groups, out, title="wedding", tags_note=note)
    with offline_page(page_path, []) as page:
        assert page.locator(".tag").count() == 0
        assert page.locator("#tags-note").inner_text() == note


def test_thumbnail_names_follow_content(event: EventFolder, tmp_path: Path) -> None:
    data = (event.root / "day2" / "chelsea.heic").read_bytes()
    path = ensure_thumbnail(data, sha256_of(data), tmp_path)
    assert path is not None and path.name == thumbnail_name(sha256_of(data))
    assert ensure_thumbnail(b"not an image", sha256_of(b"not an image"), tmp_path) is None

"""The `festora` command end to end: a real `bentoml serve`, the CLI as its own process, a
folder of real photos with a truncated JPEG, a 0-byte file and a text file named like a photo."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from skimage import data as skdata

from festora.cli.tagging import DEFAULT_TAG_LABELS
from tests.browser import offline_page, screenshot
from tests.photofolder import make_event_folder
from tests.serving import ROOT, Server, serve

pytestmark = pytest.mark.slow

API_KEY = "festora-cli-test-key-51c0"


@pytest.fixture(scope="module")
def server(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"API_KEY": API_KEY, "RATE_LIMIT_ENABLED": "false", "ENVIRONMENT": "test"}
    with serve(env, tmp_path_factory.mktemp("logs") / "cli.log") as running:
        yield running


def festora(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "festora.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", "FESTORA_API_KEY": API_KEY},
    )


def analyze_requests(server: Server) -> int:
    return server.log().count("path=/v1/analyze,")


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cull_reports_bad_files_finishes_and_resumes(server: Server, tmp_path: Path) -> None:
    event = make_event_folder(tmp_path / "wedding")
    out = tmp_path / "out"
    before = analyze_requests(server)

    first = festora("cull", str(event.root), "--url", server.url, "--out", str(out), "--xmp")

    assert first.returncode == 1, first.stdout + first.stderr  # finished, some photos failed
    total = len(event.photos)
    assert f"{total} photos: {total} analysed now, 0 already done, 3 failed" in first.stdout
    for path in event.bad:
        assert path in first.stdout
    assert "the file is empty (0 bytes)" in first.stdout
    assert "corrupt or truncated" in first.stdout
    assert "not an image" in first.stdout
    # Every photo but the empty file (refused locally) and the flower's copy (same bytes) was sent.
    assert analyze_requests(server) - before == total - 2

    records = {record["path"]: record for record in lines(out / "results.jsonl")}
    assert sorted(records) == event.photos
    for path, record in records.items():
        assert record["sha256"] == hashlib.sha256((event.root / path).read_bytes()).hexdigest()
        assert record["result"]["image_id"] == path
    for path in event.good:
        result = records[path]["result"]
        assert result["error"] is None
        assert result["blur"] and result["quality"] and result["embedding"]["dimensions"] == 512
    assert records["empty.jpg"]["result"]["error_code"] == "empty_file"
    assert records["broken.jpg"]["result"]["error_code"] == "image_decode_error"
    assert records["notes.jpg"]["result"]["error_code"] == "image_decode_error"

    cull = json.loads((out / "cull.json").read_text())
    verdicts = {image["image_id"]: image for image in cull["images"]}
    assert sorted(verdicts) == event.photos  # each photo exactly once
    for path in event.bad:
        assert verdicts[path]["verdict"] == "reject"
        assert "analysis_failed" in [reason["code"] for reason in verdicts[path]["reasons"]]
    csv_rows = (out / "cull.csv").read_text().splitlines()
    assert len(csv_rows) == total + 1
    assert len(list((out / "thumbs").iterdir())) == len(event.good) - 1
    blocked: list[str] = []
    with offline_page(out / "index.html", blocked) as page:
        assert page.locator("section.group").count() == len(cull["groups"])
        best_first = page.locator("section.group").evaluate_all(
            "gs => gs.map(g => g.querySelector('figure').dataset.imageId)"
        )
        assert best_first == [group["best_image_id"] for group in cull["groups"]]
        loaded = page.locator("figure img").evaluate_all(
            "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)"
        )
        assert len(loaded) == len(event.good) and all(loaded)
        page.get_by_label("keep").uncheck()
        page.get_by_label("maybe").uncheck()
        shown = page.locator("figure.photo:visible").evaluate_all(
            "fs => fs.map(f => f.dataset.imageId)"
        )
        assert sorted(shown) == sorted(i for i, v in verdicts.items() if v["verdict"] == "reject")
        assert set(event.bad) <= set(shown)
        page.get_by_label("keep").check()
        page.get_by_label("maybe").check()
        # Each analysed photo shows its top 3 zero-shot tags from the default labels.
        for path in event.photos:
            shown = page.locator(f'figure[data-image-id="{path}"] .tag').all_inner_texts()
            if path in event.bad:
                assert shown == [], path
            else:
                assert len(shown) == 3 and set(shown) <= set(DEFAULT_TAG_LABELS), (path, shown)
        screenshot(page, "contact_sheet_e2e.png")
    assert blocked == []
    assert f"Tagged {len(event.good)} photos with their top 3 of" in first.stdout
    rows = {row["path"]: row for row in csv.DictReader((out / "cull.csv").open())}
    for path in event.good:
        assert len(rows[path]["tags"].split(";")) == 3, rows[path]
    assert "XMP sidecars: 11 written, 0 left untouched" in first.stdout
    for path in event.photos:
        assert (event.root / path).with_suffix(".xmp").exists()

    results_before = (out / "results.jsonl").read_text()
    sent_before = analyze_requests(server)

    second = festora("cull", str(event.root), "--url", server.url, "--out", str(out), "--xmp")

    assert second.returncode == 1, second.stdout + second.stderr
    assert f"{total} photos: 0 analysed now, {total} already done, 3 failed" in second.stdout
    for path in event.bad:
        assert path in second.stdout  # still reported and listed
    assert analyze_requests(server) == sent_before
    assert (out / "results.jsonl").read_text() == results_before
    assert json.loads((out / "cull.json").read_text())["total_images"] == total


def sheet_tags(out: Path) -> dict[str, list[str]]:
    with offline_page(out / "index.html", []) as page:
        figures = page.locator("figure.photo")
        return dict(
            figures.evaluate_all(
                "fs => fs.map(f => [f.dataset.imageId,"
                " [...f.querySelectorAll('.tag')].map(t => t.textContent)])"
            )
        )


def tags_requests(server: Server) -> int:
    return server.log().count("path=/v1/tags,")


def test_cull_tags_with_chosen_labels_or_none_and_survives_a_failing_tags_call(
    server: Server, tmp_path: Path
) -> None:
    event = make_event_folder(tmp_path / "party")
    out = tmp_path / "out"
    cull = ["cull", str(event.root), "--url", server.url, "--out", str(out)]

    chosen = festora(*cull, "--tags", "cake, dog ,car,cake", "--top-tags", "2")
    assert chosen.returncode == 1, chosen.stdout + chosen.stderr  # the 3 bad files
    tags = sheet_tags(out)
    for path in event.photos:
        if path in event.bad:
            assert tags[path] == []
        else:
            assert len(tags[path]) == 2 and set(tags[path]) <= {"cake", "dog", "car"}, tags

    before = tags_requests(server)
    off = festora(*cull, "--no-tags")
    assert off.returncode == 1 and tags_requests(server) == before
    assert all(shown == [] for shown in sheet_tags(out).values())
    assert "Tags are off" in (out / "index.html").read_text()

    # A label over the service's 200 characters: /v1/tags answers 422, the cull goes on.
    failing = festora(*cull, "--tags", f"cake,{'x' * 201}")
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert "Tags unavailable" in failing.stderr and "/v1/tags answered 422" in failing.stderr
    assert tags_requests(server) == before + 1
    assert all(shown == [] for shown in sheet_tags(out).values())
    assert "No tags: the service could not tag the photos" in (out / "index.html").read_text()
    assert len(json.loads((out / "cull.json").read_text())["images"]) == len(event.photos)

    bad = festora(*cull, "--tags", "cake")
    assert bad.returncode == 2 and "2 to 200 labels" in bad.stderr


def test_ctrl_c_keeps_what_is_done_and_the_next_run_resumes(server: Server, tmp_path: Path) -> None:
    folder = tmp_path / "burst"
    folder.mkdir()
    astronaut = Image.fromarray(skdata.astronaut()).resize((256, 256))
    count = 16
    for i in range(count):
        astronaut.rotate(i * 7).save(folder / f"IMG_{i:04d}.jpg", quality=90)
    out = tmp_path / "out"
    log = out / "results.jsonl"
    command = [sys.executable, "-m", "festora.cli", "cull", str(folder), "--url", server.url]
    process = subprocess.Popen(
        [*command, "--out", str(out), "--concurrency", "2"],
        cwd=ROOT,
        env={**os.environ, "FESTORA_API_KEY": API_KEY},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (log.exists() and log.read_text().count("\n") >= 2):
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=300)

    assert process.returncode == 130, output
    assert "Interrupted. Run the same command again to resume." in output
    done = lines(log)  # every line complete
    assert 2 <= len(done) < count
    assert not (out / "cull.json").exists()

    resumed = festora("cull", str(folder), "--url", server.url, "--out", str(out))

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (
        f"{count} photos: {count - len(done)} analysed now, {len(done)} already done, 0 failed"
    ) in resumed.stdout
    assert sorted(record["path"] for record in lines(log)) == sorted(
        f"IMG_{i:04d}.jpg" for i in range(count)
    )
    assert json.loads((out / "cull.json").read_text())["total_images"] == count


def test_analyze_prints_a_table_or_json_and_needs_the_key(server: Server, tmp_path: Path) -> None:
    event = make_event_folder(tmp_path / "shoot")
    files = [str(event.root / "IMG_0001.jpg"), str(event.root / "notes.jpg")]

    table = festora("analyze", *files, "--url", server.url)
    assert table.returncode == 1  # notes.jpg is not an image
    assert "IMG_0001.jpg" in table.stdout and "480x480" in table.stdout
    assert "notes.jpg" in table.stderr and "not an image" in table.stderr

    as_json = festora("analyze", files[0], "--url", server.url, "--json")
    assert as_json.returncode == 0, as_json.stderr
    (record,) = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert record["path"] == files[0] and record["result"]["width_px"] == 480
    assert record["sha256"] == hashlib.sha256(Path(files[0]).read_bytes()).hexdigest()

    wrong_key = subprocess.run(
        [sys.executable, "-m", "festora.cli", "analyze", files[0], "--url", server.url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "FESTORA_API_KEY": "not-the-key-7f3a"},
        timeout=120,
    )
    assert wrong_key.returncode == 3
    assert "--api-key" in wrong_key.stderr and "not-the-key-7f3a" not in wrong_key.stderr
    unreachable = festora("analyze", files[0], "--url", "http://127.0.0.1:9")
    assert unreachable.returncode == 3 and "cannot reach the service" in unreachable.stderr

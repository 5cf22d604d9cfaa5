"""The `festora` command line: cull a whole event folder, analyse a few files, or search a
culled folder's photos by text.

Exit codes (also in `festora --help` and the README):
  0  everything done
  1  finished, but some photos could not be analysed (they are listed; cull.csv marks them)
  2  bad command line, no photos in the folder, exiftool missing for --xmp, or no stored
     embeddings to search
  3  the service is unreachable, refused the key, or failed (what is done is kept)
  130  interrupted with Ctrl-C (what is done is kept; run the same command again to resume)
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from festora import __version__
from festora.cli.client import FestoraClient, PhotoRejected, ServiceError
from festora.cli.outputs import culled_groups, write_cull_csv, write_cull_json
from festora.cli.photos import Photo, Record, ResultsLog, find_photos, new_record, sha256_of
from festora.cli.run import RunSummary, analyse_folder
from festora.cli.sheet import write_contact_sheet
from festora.cli.tagging import DEFAULT_TAG_LABELS, DEFAULT_TOP_TAGS, parse_labels, photo_tags
from festora.cli.xmp import ExiftoolMissing, write_sidecars


class ExitCode(IntEnum):
    OK = 0
    PHOTOS_FAILED = 1
    USAGE = 2
    SERVICE = 3
    INTERRUPTED = 130


EXIT_CODES = (
    "Exit codes: 0 everything done; 1 finished, but some photos could not be analysed; "
    "2 bad command line, no photos, exiftool missing for --xmp, or nothing to search; 3 the "
    "service is unreachable, refused the key or failed; 130 interrupted (Ctrl-C), re-run to "
    "resume."
)

app = typer.Typer(
    help=f"Cull and analyse photos with a running Festora Vision service.\n\n{EXIT_CODES}",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # a traceback's locals could show the API key
)
console = Console()
errors = Console(stderr=True)

Url = Annotated[
    str,
    typer.Option("--url", envvar="FESTORA_URL", help="The service, e.g. http://localhost:3000."),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="FESTORA_API_KEY", help="The service's API_KEY, when it has one."
    ),
]
Concurrency = Annotated[
    int, typer.Option("--concurrency", "-c", min=1, max=64, help="Photos in flight at once.")
]


def _version(value: bool) -> None:
    if value:
        console.print(f"festora {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
) -> None:
    pass


@app.command(epilog=EXIT_CODES)
def cull(
    photo_dir: Annotated[
        Path,
        typer.Argument(
            exists=True, file_okay=False, resolve_path=True, help="Folder of photos (recursive)."
        ),
    ],
    url: Url,
    api_key: ApiKey = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output folder; never scanned for photos.", show_default="PHOTO_DIR/festora-cull"
        ),
    ] = None,
    xmp: Annotated[
        bool, typer.Option("--xmp", help="Write an XMP sidecar (IMG_0001.xmp) beside each photo.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="With --xmp: also update sidecars this tool did not write."),
    ] = False,
    concurrency: Concurrency = 4,
    tags: Annotated[
        str | None,
        typer.Option(
            "--tags",
            metavar="LABELS",
            help="Comma-separated labels to tag each photo with (CLIP zero-shot, /v1/tags).",
            show_default=f"{len(DEFAULT_TAG_LABELS)} event subjects, see README",
        ),
    ] = None,
    no_tags: Annotated[bool, typer.Option("--no-tags", help="Do not tag the photos.")] = False,
    top_tags: Annotated[
        int, typer.Option("--top-tags", min=1, max=10, help="Tags kept per photo.")
    ] = DEFAULT_TOP_TAGS,
) -> None:
    """Analyse and cull every JPEG/PNG/HEIC/TIFF under PHOTO_DIR.

    Writes results.jsonl, cull.json, cull.csv and a contact sheet (index.html, thumbs/) into
    the output folder, each photo with its top zero-shot tags. Re-running resumes: photos
    already analysed (same bytes) are not sent again. Ctrl-C stops cleanly and keeps what is
    done.
    """
    try:
        labels = None if no_tags else parse_labels(tags) if tags else list(DEFAULT_TAG_LABELS)
    except ValueError as exc:
        errors.print(f"[red]{exc}")
        raise typer.Exit(ExitCode.USAGE) from exc
    out = (out or photo_dir / "festora-cull").resolve()
    photos = find_photos(photo_dir, exclude=out)
    if not photos:
        errors.print(f"[red]No JPEG, PNG, HEIC or TIFF files under {photo_dir}")
        raise typer.Exit(ExitCode.USAGE)
    out.mkdir(parents=True, exist_ok=True)
    log = ResultsLog(out / "results.jsonl")
    with FestoraClient(url, api_key=api_key) as client:
        try:
            client.check_ready()
            summary = analyse_folder(
                photos, log, client, thumbs=out / "thumbs", concurrency=concurrency, console=console
            )
        except ServiceError as exc:
            log.close()
            errors.print(f"[red]Service error:[/red] {exc}")
            raise typer.Exit(ExitCode.SERVICE) from exc
        except KeyboardInterrupt:
            # A second Ctrl-C: results.jsonl is flushed line by line; leave without waiting
            # for the requests still in flight.
            log.close()
            errors.print("[yellow]Interrupted; results.jsonl keeps every finished photo.")
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(ExitCode.INTERRUPTED)
        log.close()
        _print_run(summary, photos, log)
        if summary.interrupted:
            errors.print("[yellow]Interrupted. Run the same command again to resume.")
            raise typer.Exit(ExitCode.INTERRUPTED)

        analyses = [_analysis_of(photo, log, summary) for photo in photos]
        console.print(f"Culling {len(analyses)} photos ...")
        try:
            result = client.cull(analyses)
        except ServiceError as exc:
            errors.print(f"[red]Cull failed:[/red] {exc}\nresults.jsonl is complete; re-run.")
            raise typer.Exit(ExitCode.SERVICE) from exc
        records = {
            photo.image_id: log.by_path[photo.relpath]
            for photo in photos
            if photo.relpath in log.by_path and photo.relpath not in summary.not_analysed
        }
        tagged, tags_note = _tag(client, records, labels, top_tags)

    groups = culled_groups(result, records, tagged)
    written = [
        write_cull_json(result, out),
        write_cull_csv(groups, out),
        write_contact_sheet(groups, out, title=photo_dir.name, tags_note=tags_note),
    ]
    _print_cull(groups)
    for warning in result.get("warnings") or []:
        errors.print(f"[yellow]Cull warning:[/yellow] {warning}")
    if xmp:
        try:
            report = write_sidecars(
                [photo for group in groups for photo in group.photos], photo_dir, force=force
            )
        except ExiftoolMissing as exc:
            errors.print(f"[red]{exc}")
            raise typer.Exit(ExitCode.USAGE) from exc
        console.print(
            f"XMP sidecars: {len(report.written)} written, {len(report.kept)} left untouched "
            "(not written by festora; --force updates them)"
        )
        for path, why in report.failed.items():
            errors.print(f"[red]  no sidecar for {path}: {why}")
    for path in written:
        console.print(f"Wrote {path}")
    failed = _failed(photos, log, summary)
    raise typer.Exit(ExitCode.PHOTOS_FAILED if failed else ExitCode.OK)


def _tag(
    client: FestoraClient, records: dict[str, Record], labels: list[str] | None, top_k: int
) -> tuple[dict[str, list[dict[str, Any]]], str | None]:
    """Each photo's tags, and why there are none when there are none; a service that cannot
    tag them leaves the cull as it is (reported here and on the sheet)."""
    if labels is None:
        return {}, "Tags are off (--no-tags)."
    try:
        tagged = photo_tags(client, records, labels, top_k)
    except ServiceError as exc:
        errors.print(f"[yellow]Tags unavailable:[/yellow] {exc} (the cull is complete without)")
        return {}, f"No tags: the service could not tag the photos ({exc})."
    console.print(f"Tagged {len(tagged)} photos with their top {top_k} of {len(labels)} labels")
    return tagged, None


def _analysis_of(photo: Photo, log: ResultsLog, summary: RunSummary) -> dict[str, Any]:
    """The photo's recorded analysis; a photo not analysed this time goes to the cull as
    failed (a reject with `analysis_failed`), so every photo is in the answer."""
    record = log.by_path.get(photo.relpath)
    if photo.relpath in summary.not_analysed or record is None:
        why = summary.not_analysed.get(photo.relpath, "not analysed")
        return {"image_id": photo.image_id, "error": why, "error_code": "not_analysed"}
    return record.result


def _failed(photos: list[Photo], log: ResultsLog, summary: RunSummary) -> dict[str, str]:
    failed = dict(summary.not_analysed)
    for photo in photos:
        record = log.by_path.get(photo.relpath)
        if photo.relpath not in failed and record is not None and record.failed:
            failed[photo.relpath] = str(record.result["error"])
    return failed


def _print_run(summary: RunSummary, photos: list[Photo], log: ResultsLog) -> None:
    failed = _failed(photos, log, summary)
    console.print(
        f"{summary.total} photos: {summary.analysed} analysed now, "
        f"{summary.skipped} already done, {len(failed)} failed"
    )
    if failed:
        table = Table("Failed photo", "Why", title="Photos that could not be analysed")
        for path, why in sorted(failed.items()):
            table.add_row(path, why)
        console.print(table)


def _print_cull(groups: list[Any]) -> None:
    verdicts = [photo.verdict for group in groups for photo in group.photos]
    console.print(
        f"{len(groups)} groups: {verdicts.count('keep')} keep, {verdicts.count('maybe')} maybe, "
        f"{verdicts.count('reject')} reject"
    )


@app.command(epilog=EXIT_CODES)
def analyze(
    files: Annotated[
        list[Path],
        typer.Argument(exists=True, dir_okay=False, resolve_path=True, help="Photos to analyse."),
    ],
    url: Url,
    api_key: ApiKey = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="One JSON record a line (as in results.jsonl) instead."),
    ] = False,
    concurrency: Concurrency = 4,
) -> None:
    """Analyse a few photos and print their scores as a table (or JSON with --json)."""
    with FestoraClient(url, api_key=api_key) as client:

        def analyse(path: Path) -> dict[str, Any]:
            data = path.read_bytes()
            photo = Photo(path=path, relpath=path.name)
            try:
                result = client.analyze(data, photo.image_id)
            except PhotoRejected as exc:
                result = {"error": exc.message, "error_code": exc.code}
            record = new_record(photo, sha256_of(data), len(data), result)
            return {**json.loads(record.to_json()), "path": str(path)}

        try:
            client.check_ready()
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                records = list(pool.map(analyse, files))
        except ServiceError as exc:
            errors.print(f"[red]Service error:[/red] {exc}")
            raise typer.Exit(ExitCode.SERVICE) from exc
    if as_json:
        for record in records:
            sys.stdout.write(json.dumps(record) + "\n")
    else:
        console.print(_analysis_table(records))
        for record in records:
            if error := record["result"].get("error"):
                errors.print(f"[red]{record['path']}:[/red] {error}")
    failed = any(record["result"].get("error") for record in records)
    raise typer.Exit(ExitCode.PHOTOS_FAILED if failed else ExitCode.OK)


def _analysis_table(records: list[dict[str, Any]]) -> Table:
    failed = any(record["result"].get("error") for record in records)
    table = Table(title="Festora analysis", caption="Failures: see below." if failed else None)
    table.add_column("File", no_wrap=True, overflow="fold")
    for header in ("Size", "Blur", "BRISQUE", "NIMA tech.", "Quality", "Aesthetic", "Faces"):
        table.add_column(header, justify="right")
    for record in records:
        result = record["result"]
        name = Path(record["path"]).name
        if result.get("error"):
            table.add_row(name, "[red]failed", *[""] * 6)
            continue
        blur, quality = result.get("blur"), result.get("quality")
        aesthetic, emotion = result.get("aesthetic"), result.get("emotion")
        table.add_row(
            name,
            f"{result.get('width_px')}x{result.get('height_px')}",
            (f"{blur['laplacian_variance']:.1f}" + (" blurry" if blur["is_blurry"] else ""))
            if blur
            else "-",
            f"{quality['brisque_score']:.1f}" if quality else "-",
            f"{quality['nima_technical_score']:.2f}" if quality else "-",
            quality["overall_quality"] if quality else "-",
            f"{aesthetic['nima_aesthetic_score']:.2f} {aesthetic['aesthetic_label']}"
            if aesthetic
            else "-",
            str(emotion["faces_detected"]) if emotion else "0",
        )
    return table


@app.command(epilog=EXIT_CODES)
def search(
    results_dir: Annotated[
        Path,
        typer.Argument(
            exists=True,
            file_okay=False,
            resolve_path=True,
            help="A `festora cull` output folder (holding results.jsonl).",
        ),
    ],
    query: Annotated[str, typer.Argument(help='What to look for, e.g. "bride cutting the cake".')],
    url: Url,
    api_key: ApiKey = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Photos to list.")] = 10,
    as_json: Annotated[
        bool, typer.Option("--json", help='One {"path", "score"} JSON object a line instead.')
    ] = False,
) -> None:
    """List the photos of a culled folder that best match QUERY (CLIP text-to-photo search
    over the embeddings stored in results.jsonl; no photo is sent again)."""
    log = ResultsLog(results_dir / "results.jsonl")
    embedded = {
        path: record.result["embedding"]["vector"]
        for path, record in sorted(log.by_path.items())
        if not record.failed and (record.result.get("embedding") or {}).get("vector")
    }
    if not embedded:
        errors.print(
            f"[red]No photo embeddings in {log.path}[/red] (run `festora cull` on the photo "
            "folder first; its output folder is what search reads)"
        )
        raise typer.Exit(ExitCode.USAGE)
    with FestoraClient(url, api_key=api_key) as client:
        try:
            hits = client.search(query, list(embedded.values()), list(embedded), top_k)
        except ServiceError as exc:
            errors.print(f"[red]Search failed:[/red] {exc}")
            raise typer.Exit(ExitCode.SERVICE) from exc
    if as_json:
        for hit in hits:
            sys.stdout.write(json.dumps({"path": hit["image_id"], "score": hit["score"]}) + "\n")
        return
    table = Table("#", "Score", "Photo", title=f"Best matches for {query!r} of {len(embedded)}")
    for rank, hit in enumerate(hits, start=1):
        table.add_row(str(rank), f"{hit['score']:.3f}", hit["image_id"])
    console.print(table)


def main() -> None:
    app()

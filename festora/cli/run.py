"""Analyse a photo folder through the service: bounded concurrency, live progress, resumable.

Two passes. The first reads and hashes every photo and settles what is already done (by content
hash, from results.jsonl); the second sends only the rest, `concurrency` at a time, and appends
each result as it arrives. Ctrl-C cancels what has not started, lets the photos in flight finish
and be recorded, and returns; a second Ctrl-C leaves at once. Either way every line already in
results.jsonl is complete, and the next run resumes from it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from festora.cli.client import (
    FestoraClient,
    PhotoRejected,
    ServiceError,
    Unauthorized,
    Unreachable,
)
from festora.cli.photos import Photo, Record, ResultsLog, new_record, sha256_of
from festora.cli.sheet import ensure_thumbnail

T = TypeVar("T")


@dataclass
class Pending:
    photo: Photo
    sha256: str


@dataclass
class RunSummary:
    total: int = 0
    skipped: int = 0  # already in results.jsonl
    analysed: int = 0  # sent to the service in this run
    not_analysed: dict[str, str] = field(default_factory=dict)  # relpath -> why; retried next run
    interrupted: bool = False


class ImagesPerSecond(ProgressColumn):
    """Analysis throughput; blank for the hashing pass, whose files/s says nothing useful."""

    def render(self, task: Task) -> Text:
        if not task.fields.get("analysing"):
            return Text("")
        speed = task.finished_speed or task.speed
        return Text("-- images/s" if speed is None else f"{speed:.2f} images/s", style="cyan")


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        ImagesPerSecond(),
        TextColumn("[red]{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )


def analyse_folder(
    photos: list[Photo],
    log: ResultsLog,
    client: FestoraClient,
    *,
    thumbs: Path,
    concurrency: int,
    console: Console,
) -> RunSummary:
    summary = RunSummary(total=len(photos))
    with progress_bar(console) as progress:
        checking = progress.add_task("Checking", total=len(photos), failed=0)
        pending: list[Pending] = []
        check = lambda photo: _check(photo, log, thumbs)  # noqa: E731
        for photo, outcome in _run_all(photos, check, concurrency, summary):
            if isinstance(outcome, Pending):
                pending.append(outcome)
            elif isinstance(outcome, Record):
                if log.done(photo, outcome.sha256) is None:
                    log.append(outcome)  # the same bytes under a new path: no request needed
                summary.skipped += 1
            elif isinstance(outcome, Exception):
                summary.not_analysed[photo.relpath] = f"cannot read the file: {outcome}"
            progress.update(checking, advance=1, failed=len(summary.not_analysed))
        if summary.interrupted:
            return summary

        # Copies in one folder are sent once; the others take the first one's analysis.
        first: dict[str, Pending] = {}
        copies: defaultdict[str, list[Pending]] = defaultdict(list)
        for item in pending:
            if item.sha256 in first:
                copies[item.sha256].append(item)
            else:
                first[item.sha256] = item
        analysing = progress.add_task("Analysing", total=len(pending), failed=0, analysing=True)
        failed = 0
        by_photo = {item.photo: item for item in first.values()}
        for photo, outcome in _run_all(
            list(by_photo), lambda p: _analyse(by_photo[p], client, thumbs), concurrency, summary
        ):
            if isinstance(outcome, Unauthorized | Unreachable):
                raise outcome  # every other photo would fail the same way
            item = by_photo[photo]
            same = [item, *copies[item.sha256]]
            for each in same:
                if isinstance(outcome, Record):
                    record = (
                        outcome
                        if each is item
                        else new_record(each.photo, each.sha256, outcome.size_bytes, outcome.result)
                    )
                    log.append(record)
                    summary.analysed += 1
                    failed += record.failed
                else:
                    summary.not_analysed[each.photo.relpath] = str(outcome)
                    failed += 1
            progress.update(analysing, advance=len(same), failed=failed)
    return summary


def _check(photo: Photo, log: ResultsLog, thumbs: Path) -> Pending | Record:
    data = photo.path.read_bytes()
    sha256 = sha256_of(data)
    known = log.done(photo, sha256)
    if known is None and (earlier := log.analysed(sha256)) is not None:
        known = new_record(photo, sha256, len(data), earlier.result)
    if known is None:
        return Pending(photo, sha256)  # its thumbnail is made while the service works
    ensure_thumbnail(data, sha256, thumbs)
    return known


def _analyse(item: Pending, client: FestoraClient, thumbs: Path) -> Record:
    data = item.photo.path.read_bytes()
    ensure_thumbnail(data, item.sha256, thumbs)
    if not data:
        result: dict[str, Any] = {
            "error": "the file is empty (0 bytes)",
            "error_code": "empty_file",
        }
    else:
        try:
            result = client.analyze(data, item.photo.image_id)
        except PhotoRejected as exc:
            result = {"error": exc.message, "error_code": exc.code}
    return new_record(item.photo, item.sha256, len(data), result)


def _run_all(
    photos: list[Photo],
    work: Callable[[Photo], T],
    concurrency: int,
    summary: RunSummary,
) -> Iterable[tuple[Photo, T | Exception]]:
    """`(photo, work(photo) or the error it raised)` as each finishes, `concurrency` at a time.

    On Ctrl-C: cancel what has not started, yield what is in flight as it finishes, mark the
    summary interrupted. Only OSError (unreadable file) and ServiceError are per-photo
    outcomes; anything else is a bug and propagates.
    """
    executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="festora-photo")
    futures: dict[Future[T], Photo] = {executor.submit(work, photo): photo for photo in photos}
    yielded: set[Future[T]] = set()
    try:
        for future in as_completed(futures):
            yielded.add(future)
            yield futures[future], _outcome(future)
    except KeyboardInterrupt:
        summary.interrupted = True
        for future in futures:
            future.cancel()
        started = [f for f in futures if not f.cancelled() and f not in yielded]
        in_flight = sum(not f.done() for f in started)
        if in_flight:
            Console(stderr=True).print(
                f"[yellow]Stopping: finishing {in_flight} photo(s) in flight "
                "(Ctrl-C again to stop at once)"
            )
        wait(started)
        for future in started:
            yield futures[future], _outcome(future)
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def _outcome(future: Future[T]) -> T | Exception:
    try:
        return future.result()
    except (OSError, ServiceError) as exc:
        return exc
